/**
 * The redactor: the one place that decides what of a value may be stored. It judges names by their words
 * (lib/core/secret-names.ts) and free text by its content (lib/core/scrub.ts), and every producer uses it:
 * query strings, bodies, headers, cookies, documents, diffs, summaries, login meta, error structures, paths
 * and user agents (through `toStored`, lib/core/safe.ts, and the request middleware).
 */
import { createNameMatcher, REDACTED, type NameMatcher } from './secret-names.js';
import { createScrubber, type ScrubOptions } from './scrub.js';

export { BUILT_IN_REDACT_KEYS, REDACTED } from './secret-names.js';

export interface Redactor {
  /** True when the value stored under `key` must be replaced by `[REDACTED]`. */
  isSecret(key: string): boolean;
  /** True when a URL parameter (query string, route parameter) of this name must be hidden. */
  isSecretParam(name: string): boolean;
  /**
   * A raw query string (no leading `?`) with the values of secret parameters replaced; `also` names parameters
   * secret for this one request (an OAuth callback's `code`).
   */
  query(raw: string, maxLength: number, also?: readonly string[]): string;
  /** Free text with the secrets found in it (tokens, credentials, card numbers, secret pairs) replaced. */
  text(text: string): string;
  /** A redactor that also hides these names (a plugin's own `redact`), scrubbing alike. */
  with(extra: readonly string[]): Redactor;
}

export function createRedactor(extra: readonly string[] = [], scrub: ScrubOptions = {}): Redactor {
  return fromMatcher(createNameMatcher(extra), scrub);
}

function fromMatcher(names: NameMatcher, scrubOptions: ScrubOptions): Redactor {
  const scrubber = createScrubber(names.isSecret, scrubOptions);

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
      if (eq === -1) out += part;
      else {
        const key = decodeQueryKey(rawKey);
        if (names.isSecretParam(key) || (also !== undefined && also.includes(key))) out += `${rawKey}=${REDACTED}`;
        else out += `${rawKey}=${encodedValue(part.slice(eq + 1), scrubber.text)}`;
      }
      start = end + 1;
    }
    return raw.length > maxLength ? `${out}…[truncated]` : out;
  }

  const redactor: Redactor = {
    isSecret: names.isSecret,
    isSecretParam: names.isSecretParam,
    query,
    text: scrubber.text,
    with: (more) => (more.length === 0 ? redactor : fromMatcher(names.with(more), scrubOptions)),
  };
  return redactor;
}

/**
 * A parameter value as it is written, unless its decoded text holds a secret: the raw string is scrubbed when
 * stored, but `https%3A%2F%2Fbob%3Apass%40host` only shows its userinfo once decoded.
 */
function encodedValue(raw: string, scrub: (text: string) => string): string {
  if (!raw.includes('%')) return raw;
  const text = decodeQueryKey(raw);
  const scrubbed = scrub(text);
  return scrubbed === text ? raw : encodeURIComponent(scrubbed).replaceAll('%5BREDACTED%5D', REDACTED);
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
