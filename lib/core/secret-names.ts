/**
 * Which names hold secrets, judged by their words.
 *
 * A name (an object key, a query or form parameter, a header, a route parameter, a document path) is split into
 * words: at `_`, `-`, `.`, spaces, brackets, `/`, `:` and camelCase boundaries (`creditCardNumber` → credit card
 * number, `APIKey` → api key, `user[pwd]` → user pwd). Each word is lower-cased, loses trailing digits
 * (`pin2`) and a plural `s` (`recoveryCodes`). The name is secret when
 *
 * - one of its words is a secret word (`password`, `token`, `pin`, `otp`...), or ends in one of the few words
 *   that also hide inside compounds (`accesstoken`, `mypassword`); or
 * - its words contain a secret phrase in a row (`api key`, `credit card`, `session id`, `recovery code`), or its
 *   words written together are one (`apikey`, `sessionid`); or
 * - the whole name is a word that is secret only on its own (`key`, `auth`, `sig`, `session`, `pan`, `pass`):
 *   `key` is a credential, `sortKey` is not.
 *
 * Matching words instead of substrings keeps `keyboard`, `monkey` and `tokenizer` visible while `user[pwd]`,
 * `api.key` and `creditCardNumber` are hidden. In an audit log a false positive costs one value, a false
 * negative leaks a credential: the list leans towards hiding.
 */

export const REDACTED = '[REDACTED]';

/** A word that makes any name containing it secret. */
const SECRET_WORDS: readonly string[] = [
  'password', 'passwd', 'pwd', 'passphrase', 'passcode', 'secret', 'token', 'credential', 'creds', 'authorization',
  'cookie', 'jwt', 'bearer', 'otp', 'totp', 'hotp', 'pin', 'cvv', 'cvc', 'cvn', 'csc', 'ssn', 'signature', 'sid',
  'apikey', 'privatekey', 'iban', 'saml', 'sessid', 'jsessionid', 'phpsessid',
];

/** Words that also make a name secret at the end of a compound word (`accesstoken`, `mypassword`, `setcookie`). */
const SUFFIX_WORDS: readonly string[] = ['password', 'passwd', 'passphrase', 'passcode', 'secret', 'token', 'cookie', 'credential', 'apikey'];

/** Words that make a name secret anywhere inside a word: long enough never to be an accident (`oldpassword2fa`). */
const STEM_WORDS: readonly string[] = ['password', 'passwd', 'passphrase', 'credential', 'privatekey', 'apikey'];

/** Word sequences that make a name secret when its words contain them in a row. */
const SECRET_PHRASES: readonly string[] = [
  'api key', 'access key', 'private key', 'secret key', 'signing key', 'encryption key', 'master key', 'session key',
  'license key', 'client key', 'session id', 'session token', 'credit card', 'card number', 'card no', 'card num', 'cc number',
  'security code', 'recovery code', 'backup code', 'reset code', 'verification code', 'auth code', 'one time code',
  'social security', 'account number', 'bank account', 'routing number', 'tax id', 'auth key',
];

/** Names secret only when they are the whole name. */
const WHOLE_NAMES: readonly string[] = ['key', 'auth', 'sig', 'session', 'pan', 'pass', 'pw', 'code'];

/**
 * Of the whole names, those secret only in URLs (query strings and route parameters), where they carry
 * credentials (`?key=` an API key, `?code=` the OAuth authorization code of a callback, `?session=` a session
 * id); in a document or a meta object they are an SKU, a map key or a conference session, which the trail keeps.
 */
const URL_ONLY_NAMES: readonly string[] = ['key', 'session', 'code'];

/** The built-in list, as documented: every entry above in its written form. */
export const BUILT_IN_REDACT_KEYS: readonly string[] = [
  ...SECRET_WORDS, ...SECRET_PHRASES.map((p) => p.replaceAll(' ', '_')), ...WHOLE_NAMES,
];

/** Lower-case, no trailing digits, no plural `s` (but `pass`, `address`, `ssn` stay as they are). */
function normalizeWord(word: string): string {
  let w = word.toLowerCase();
  let end = w.length;
  while (end > 1 && w.charCodeAt(end - 1) >= 48 && w.charCodeAt(end - 1) <= 57) end--;
  if (end < w.length) w = w.slice(0, end);
  if (w.length > 3 && w.endsWith('s') && !w.endsWith('ss')) w = w.slice(0, -1);
  return w;
}

const isUpper = (c: number): boolean => c >= 65 && c <= 90;
const isLower = (c: number): boolean => c >= 97 && c <= 122;
const isDigit = (c: number): boolean => c >= 48 && c <= 57;

/** The words of a name (see the module comment), normalized. */
export function wordsOf(name: string): string[] {
  const out: string[] = [];
  let start = -1;
  const push = (end: number): void => {
    if (start !== -1 && end > start) {
      const w = normalizeWord(name.slice(start, end));
      if (w !== '') out.push(w);
    }
    start = -1;
  };
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (!(isUpper(c) || isLower(c) || isDigit(c) || c > 127)) {
      push(i);
      continue;
    }
    if (start === -1) {
      start = i;
      continue;
    }
    const prev = name.charCodeAt(i - 1);
    // fooBar → foo|Bar; APIKey → API|Key (an upper-case letter followed by a lower-case one starts a word).
    if (isUpper(c) && (isLower(prev) || isDigit(prev) || (isUpper(prev) && i + 1 < name.length && isLower(name.charCodeAt(i + 1))))) {
      push(i);
      start = i;
    }
  }
  push(name.length);
  return out;
}

export interface NameMatcher {
  /** True when the value stored under this name must be hidden. */
  isSecret(name: string): boolean;
  /** `isSecret`, plus the names secret only in URLs (`code`): for query strings and route parameters. */
  isSecretParam(name: string): boolean;
  /** A matcher knowing these extra names too (a plugin's own `redact`). */
  with(extra: readonly string[]): NameMatcher;
}

/**
 * A matcher for the built-in list plus `extra` names: each is split into words like any name, so
 * `bankAccount` hides `bank_account`, `BankAccount` and `user.bankAccountNumber`.
 */
export function createNameMatcher(extra: readonly string[] = []): NameMatcher {
  const words = new Set(SECRET_WORDS.map(normalizeWord));
  // A phrase of one word is a secret word; longer ones are matched in a row, and written together as one word.
  const phrases: string[][] = [];
  const addPhrase = (ws: string[]): void => {
    if (ws.length === 0) return;
    if (ws.length === 1) words.add(ws[0]);
    else {
      phrases.push(ws);
      words.add(ws.join(''));
    }
  };
  for (const p of SECRET_PHRASES) addPhrase(p.split(' ').map(normalizeWord));
  for (const e of extra) addPhrase(wordsOf(e));
  const whole = new Set(WHOLE_NAMES.filter((n) => !URL_ONLY_NAMES.includes(n)));
  const urlOnly = new Set(URL_ONLY_NAMES);

  function judge(ws: string[]): boolean {
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i];
      if (words.has(w)) return true;
      for (let j = 0; j < SUFFIX_WORDS.length; j++) if (w.length > SUFFIX_WORDS[j].length && w.endsWith(SUFFIX_WORDS[j])) return true;
      for (let j = 0; j < STEM_WORDS.length; j++) if (w.includes(STEM_WORDS[j])) return true;
    }
    for (let p = 0; p < phrases.length; p++) {
      const phrase = phrases[p];
      for (let i = 0; i + phrase.length <= ws.length; i++) {
        let k = 0;
        while (k < phrase.length && ws[i + k] === phrase[k]) k++;
        if (k === phrase.length) return true;
      }
    }
    return ws.length === 1 && whole.has(ws[0]);
  }

  // Names repeat a lot (the same schema fields, the same parameters): verdicts are remembered, within a bound.
  const seen = new Map<string, boolean>();
  function isSecret(name: string): boolean {
    const known = seen.get(name);
    if (known !== undefined) return known;
    const secret = judge(wordsOf(name));
    if (seen.size < 10_000) seen.set(name, secret);
    return secret;
  }

  function isSecretParam(name: string): boolean {
    if (isSecret(name)) return true;
    const ws = wordsOf(name);
    return ws.length === 1 && urlOnly.has(ws[0]);
  }

  return { isSecret, isSecretParam, with: (more) => createNameMatcher([...extra, ...more]) };
}
