/**
 * Flood control of failed logins: within a window, at most `max` detailed events per identifier and per IP;
 * what is held back is counted and reported as one summary event per key and window, with the true count.
 *
 * All windows have the same length, so a Map in insertion order is also in order of window end: expiry,
 * the single timer and eviction only ever look at the front. A key whose window restarts is re-inserted.
 *
 * Identifiers and IPs are kept in two maps, each with its own bound: identifiers cost an attacker nothing,
 * so spraying them must never evict (and so restart) the window of the IP doing the spraying.
 */

export type FloodKeyKind = 'identifier' | 'ip';

/** One summary: failures of one key that were not recorded in detail. */
export interface FloodSummary {
  key: FloodKeyKind;
  /** The identifier or the IP address the count is for. */
  value: string;
  /** Failures held back since the previous summary of this window. */
  suppressed: number;
  /** Every failure of this key in the window so far, detailed or not. */
  total: number;
  windowStart: Date;
  windowEnd: Date;
  /** False when reported before the window ended (flush, or evicted to keep memory bounded). */
  complete: boolean;
  /** The provider of the held-back failures, or `'multiple'`. */
  provider: string;
  /** The reason of the held-back failures, or `'multiple'`. */
  reason: string;
}

interface Window {
  kind: FloodKeyKind;
  value: string;
  start: number;
  count: number;
  suppressed: number;
  provider: string;
  reason: string;
}

export interface FloodOptions {
  max: number;
  windowMs: number;
  /**
   * Most keys tracked at once, shared evenly by identifiers and IPs (at least one of each); beyond its share,
   * the oldest window of that kind is reported early and forgotten.
   */
  maxKeys?: number;
  /** Receives each summary; must not throw (the login module records it and reports its own errors). */
  onSummary: (summary: FloodSummary) => void;
  now?: () => number;
}

const DEFAULT_MAX_KEYS = 10_000;

export class FloodControl {
  private readonly max: number;
  private readonly windowMs: number;
  private readonly maxIdentifiers: number;
  private readonly maxIps: number;
  private readonly onSummary: (s: FloodSummary) => void;
  private readonly now: () => number;
  private readonly identifiers = new Map<string, Window>();
  private readonly ips = new Map<string, Window>();
  private readonly maps = [this.identifiers, this.ips] as const;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = 0;
  private readonly sweepBound = (): void => {
    this.timer = null;
    this.sweep(this.now());
    this.arm();
  };

  constructor(o: FloodOptions) {
    this.max = o.max;
    this.windowMs = o.windowMs;
    const maxKeys = o.maxKeys ?? DEFAULT_MAX_KEYS;
    this.maxIps = Math.max(1, Math.ceil(maxKeys / 2));
    this.maxIdentifiers = Math.max(1, maxKeys - this.maxIps);
    this.onSummary = o.onSummary;
    this.now = o.now ?? Date.now;
  }

  /** Keys tracked now (for tests and stats). */
  get size(): number {
    return this.identifiers.size + this.ips.size;
  }

  /**
   * Counts one failure; true when it is to be recorded in detail. It is held back when any of its keys has
   * already had `max` failures in its window; only the keys over the limit count it as suppressed, so one
   * IP spraying many identifiers yields one summary (the IP's), not one per identifier.
   */
  admit(identifier: string | null, ip: string | null, provider: string, reason: string): boolean {
    const now = this.now();
    this.sweep(now);
    const a = identifier === null ? null : this.touch(this.identifiers, this.maxIdentifiers, 'identifier', identifier, now, provider, reason);
    const b = ip === null ? null : this.touch(this.ips, this.maxIps, 'ip', ip, now, provider, reason);
    let detailed = true;
    if (a !== null && a.count > this.max) {
      a.suppressed++;
      detailed = false;
    }
    if (b !== null && b.count > this.max) {
      b.suppressed++;
      detailed = false;
    }
    this.arm();
    return detailed;
  }

  /** Reports what is held back so far; the windows stay open and keep holding back. */
  flush(): void {
    for (const map of this.maps) {
      for (const w of map.values()) {
        if (w.suppressed > 0) this.report(w, false);
      }
    }
  }

  /** Reports everything held back and forgets every window: nothing is lost when the auditor closes. */
  close(): void {
    this.flush();
    for (const map of this.maps) map.clear();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private touch(
    map: Map<string, Window>, maxKeys: number, kind: FloodKeyKind, value: string, now: number, provider: string, reason: string,
  ): Window {
    let w = map.get(value);
    if (w === undefined) {
      if (map.size >= maxKeys) this.evictOldest(map);
      w = { kind, value, start: now, count: 0, suppressed: 0, provider, reason };
      map.set(value, w);
    }
    w.count++;
    if (w.count > this.max) {
      // Only what is held back is summarized, so only that decides the summary's provider and reason.
      if (w.suppressed === 0) {
        w.provider = provider;
        w.reason = reason;
      } else {
        if (w.provider !== provider) w.provider = 'multiple';
        if (w.reason !== reason) w.reason = 'multiple';
      }
    }
    return w;
  }

  private evictOldest(map: Map<string, Window>): void {
    const first = map.entries().next();
    if (first.done === true) return;
    const [key, w] = first.value;
    map.delete(key);
    if (w.suppressed > 0) this.report(w, false);
  }

  /** Closes every window that has ended, front first, reporting its summary. */
  private sweep(now: number): void {
    for (const map of this.maps) {
      for (const [key, w] of map) {
        if (w.start + this.windowMs > now) break;
        map.delete(key);
        if (w.suppressed > 0) this.report(w, true);
      }
    }
  }

  private report(w: Window, complete: boolean): void {
    const summary: FloodSummary = {
      key: w.kind,
      value: w.value,
      suppressed: w.suppressed,
      total: w.count,
      windowStart: new Date(w.start),
      windowEnd: new Date(w.start + this.windowMs),
      complete,
      provider: w.provider,
      reason: w.reason,
    };
    w.suppressed = 0;
    this.onSummary(summary);
  }

  /** One unref'd timer, at the end of the oldest window: it reports summaries and frees memory alike. */
  private arm(): void {
    let oldest = Infinity;
    for (const map of this.maps) {
      const first = map.values().next();
      if (first.done !== true && first.value.start < oldest) oldest = first.value.start;
    }
    if (oldest === Infinity) return;
    const due = oldest + this.windowMs;
    if (this.timer !== null) {
      if (this.timerAt <= due) return;
      clearTimeout(this.timer);
    }
    this.timerAt = due;
    this.timer = setTimeout(this.sweepBound, Math.max(0, due - this.now()) + 1);
    this.timer.unref();
  }
}
