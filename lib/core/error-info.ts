/**
 * The stored form of a thrown value: an Error as structure (lib/core/error-shape.ts), anything else (a string,
 * a plain object such as `throw { token }`) through the same redactor as every other value, as `NonError` with
 * the JSON of its redacted stored form as the message.
 */
import { shapeError, statusOf } from './error-shape.js';
import { REDACTED, type Redactor } from './redact.js';
import { capString, toStored, type SafeLimits } from './safe.js';
import type { ErrorInfo } from './types.js';

const MAX_STACK = 8 * 1024;

/** Room scrubbing may need before capping (a secret cut in half would no longer be recognized). */
const SCRUB_ROOM = 512;

function head(s: string, max: number): string {
  return s.length > max + SCRUB_ROOM ? s.slice(0, max + SCRUB_ROOM) : s;
}

/** Reads one part of a thrown value: a getter or Proxy trap that throws gives `fallback`, never an exception. */
function attempt<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

const UNREADABLE_MESSAGE = '[Unreadable: message]';

/**
 * What can be stored of a thrown value. Never throws: the middleware rethrows the app's own throwable untouched, so
 * a hostile one (a throwing `message` getter, a null-prototype cyclic object) must not be replaced by ours.
 */
export function errorInfo(err: unknown, redactor: Redactor, limits: SafeLimits, known: readonly string[] = []): ErrorInfo {
  const status = attempt(() => statusOf(err), 500);
  if (attempt(() => err instanceof Error, false)) {
    const e = err as Error;
    const shaped = attempt<ReturnType<typeof shapeError> | null>(() => shapeError(e, redactor, known), null);
    if (shaped === null) {
      // Some part could not be read (a throwing getter): keep what can be, scrubbed like any text.
      const name = attempt(() => e.name as unknown, 'Error');
      const stack = attempt(() => e.stack as unknown, undefined);
      const scrub = (t: string, max: number): string => capString(attempt(() => redactor.text(head(t, max)), UNREADABLE_MESSAGE), max);
      return {
        name: scrub(typeof name === 'string' && name !== '' ? name : 'Error', 256),
        message: UNREADABLE_MESSAGE,
        status,
        stack: typeof stack === 'string' ? scrub(stack, MAX_STACK) : null,
      };
    }
    const info: ErrorInfo = {
      name: capString(shaped.name || 'Error', 256),
      message: capString(head(shaped.message, limits.maxString), limits.maxString),
      status,
      stack: shaped.stack === null ? null : capString(head(shaped.stack, MAX_STACK), MAX_STACK),
    };
    if (shaped.code !== undefined) info.code = typeof shaped.code === 'string' ? capString(shaped.code, 64) : shaped.code;
    if (shaped.errors !== undefined) {
      info.errors = shaped.errors.map((d) => ({ path: capString(d.path, 256), kind: d.kind === null ? null : capString(d.kind, 64), name: capString(d.name, 64) }));
    }
    return info;
  }
  // The stored form copes with cycles, null prototypes and throwing getters, and redacts like any value.
  let text = err === undefined ? 'undefined' : attempt(() => JSON.stringify(toStored(err, redactor, limits)), '[Unreadable]');
  for (const s of known) if (s.length >= 3 && text.includes(s)) text = text.replaceAll(s, REDACTED);
  return { name: 'NonError', message: capString(text, limits.maxString), status, stack: null };
}
