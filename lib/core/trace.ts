/**
 * Trace correlation: a W3C `traceparent` header, or the active OpenTelemetry span when `@opentelemetry/api`
 * is installed (an optional dependency, loaded at most once, on first use; its absence or any fault of
 * it only means no span ids).
 *
 * traceparent (https://www.w3.org/TR/trace-context/#traceparent-header), version 00 only:
 * `00-<32 lowercase hex, not all zero>-<16 lowercase hex, not all zero>-<2 lowercase hex>`, exactly 55
 * characters. Anything else (another version, upper case, extra fields, all-zero ids) is ignored. Parsed with
 * one pass over fixed positions: no regular expression, no backtracking, constant work for any input.
 */
export interface TraceIds {
  traceId: string;
  spanId: string;
}

function isLowerHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
}

/** True when `s[from, to)` is lowercase hex and not all zeros. */
function hexId(s: string, from: number, to: number): boolean {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!isLowerHex(c)) return false;
    if (c !== 48) nonZero = true;
  }
  return nonZero;
}

export function parseTraceparent(header: string | undefined | null): TraceIds | null {
  if (typeof header !== 'string' || header.length !== 55) return null;
  if (header.charCodeAt(0) !== 48 || header.charCodeAt(1) !== 48) return null; // version 00
  if (header.charCodeAt(2) !== 45 || header.charCodeAt(35) !== 45 || header.charCodeAt(52) !== 45) return null;
  if (!hexId(header, 3, 35) || !hexId(header, 36, 52)) return null;
  if (!isLowerHex(header.charCodeAt(53)) || !isLowerHex(header.charCodeAt(54))) return null;
  return { traceId: header.slice(3, 35), spanId: header.slice(36, 52) };
}

interface OtelApi {
  trace: { getActiveSpan(): { spanContext(): { traceId: string; spanId: string } } | undefined };
}

let otel: OtelApi | null | undefined;

function loadOtel(): OtelApi | null {
  if (otel !== undefined) return otel;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const api = require('@opentelemetry/api') as OtelApi;
    otel = typeof api?.trace?.getActiveSpan === 'function' ? api : null;
  } catch {
    otel = null;
  }
  return otel;
}

const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_SPAN = '0000000000000000';

/** The ids of the active OpenTelemetry span, or null (no API installed, no active span, invalid ids). */
export function activeSpanIds(): TraceIds | null {
  const api = loadOtel();
  if (api === null) return null;
  try {
    const sc = api.trace.getActiveSpan()?.spanContext();
    if (sc === undefined) return null;
    const { traceId, spanId } = sc;
    if (typeof traceId !== 'string' || traceId.length !== 32 || traceId === ZERO_TRACE || !hexId(traceId, 0, 32)) return null;
    if (typeof spanId !== 'string' || spanId.length !== 16 || spanId === ZERO_SPAN || !hexId(spanId, 0, 16)) return null;
    return { traceId, spanId };
  } catch {
    return null;
  }
}

/** Trace ids of a request: the active span's when there is one, else the `traceparent` header's. */
export function traceOf(traceparent: string): TraceIds | null {
  return activeSpanIds() ?? (traceparent === '' ? null : parseTraceparent(traceparent));
}
