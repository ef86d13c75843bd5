/**
 * Redaction: decides which keys hold secrets, and rewrites query strings.
 *
 * Keys are compared after lower-casing and removing `-` and `_`, so `access_token`, `accessToken` and
 * `Access-Token` are one name; a dotted key is secret when one of its segments is. Besides exact names, a key that merely contains one of a few strong words
 * (`newPassword`, `x-api-key`, `client_secret_v2`) is redacted too: in an audit log a false positive costs a
 * value, a false negative leaks a credential.
 */

export const REDACTED = '[REDACTED]';

export const BUILT_IN_REDACT_KEYS: readonly string[] = [
  'password', 'passwd', 'pwd', 'secret', 'token', 'access_token', 'refresh_token', 'id_token', 'authorization',
  'cookie', 'set-cookie', 'api_key', 'apikey', 'client_secret', 'credit_card', 'card_number', 'cvv', 'ssn',
];

const STRONG_WORDS: readonly string[] = ['password', 'passwd', 'secret', 'token', 'apikey', 'credential', 'privatekey'];

export function normalizeKey(key: string): string {
  let out = '';
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c === 45 /* - */ || c === 95 /* _ */) continue;
    out += c >= 65 && c <= 90 ? String.fromCharCode(c + 32) : key[i];
  }
  return out;
}

export interface Redactor {
  /** True when the value stored under `key` must be replaced by `[REDACTED]`. */
  isSecret(key: string): boolean;
  /**
   * A raw query string (no leading `?`) with the values of secret parameters replaced; `also` names parameters
   * secret for this one request (an OAuth callback's `code`).
   */
  query(raw: string, maxLength: number, also?: readonly string[]): string;
}

export function createRedactor(extra: readonly string[] = []): Redactor {
  const exact = new Set<string>();
  for (const k of BUILT_IN_REDACT_KEYS) exact.add(normalizeKey(k));
  for (const k of extra) exact.add(normalizeKey(k));
  // Keys repeat a lot (the same schema fields, the same parameters): remember verdicts, within a bound.
  const seen = new Map<string, boolean>();

  function isSecret(key: string): boolean {
    const known = seen.get(key);
    if (known !== undefined) return known;
    const n = normalizeKey(key);
    // A dotted key (`user.ssn`, a form's `creds.pin`, a mongo path) is secret when any of its segments is.
    let secret = exact.has(n) || (n.includes('.') && n.split('.').some((segment) => exact.has(segment)));
    for (let i = 0; !secret && i < STRONG_WORDS.length; i++) secret = n.includes(STRONG_WORDS[i]);
    if (seen.size < 10_000) seen.set(key, secret);
    return secret;
  }

  function query(raw: string, maxLength: number, also?: readonly string[]): string {
    if (raw === '') return raw;
    const input = raw.length > maxLength ? raw.slice(0, maxLength) : raw;
    let out = '';
    let start = 0;
    while (start <= input.length) {
      let end = input.indexOf('&', start);
      if (end === -1) end = input.length;
      const part = input.slice(start, end);
      const eq = part.indexOf('=');
      const rawKey = eq === -1 ? part : part.slice(0, eq);
      if (out !== '' || start > 0) out += '&';
      const key = eq === -1 ? '' : decodeQueryKey(rawKey);
      out += eq !== -1 && (isSecret(key) || (also !== undefined && also.includes(key))) ? `${rawKey}=${REDACTED}` : part;
      start = end + 1;
    }
    return raw.length > maxLength ? `${out}…[truncated]` : out;
  }

  return { isSecret, query };
}

function decodeQueryKey(key: string): string {
  const plain = key.includes('+') ? key.replaceAll('+', ' ') : key;
  if (!plain.includes('%')) return plain;
  try {
    return decodeURIComponent(plain);
  } catch {
    return plain;
  }
}
