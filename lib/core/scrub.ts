/**
 * Value scrubbing: finds secrets inside free text, whatever key it is stored under (an error message, a stack,
 * a path, a string body, a user agent, a meta string), and replaces them with `[REDACTED]`:
 *
 * | rule     | finds                                                                                      |
 * |----------|--------------------------------------------------------------------------------------------|
 * | `url`    | the userinfo of a URL: `https://user:pass@host` → `https://[REDACTED]@host`                 |
 * | `bearer` | `Bearer <token>` (8+ characters with a digit or punctuation, or 16+)                       |
 * | `basic`  | `Basic <base64>` when it decodes to `user:password`                                        |
 * | `jwt`    | three-part `eyJ…` tokens                                                                   |
 * | `pairs`  | `name=value`, `"name": "value"`, `name: 'value'`, `name: value` whose name is secret (lib/core/secret-names.ts) |
 * | `card`   | 13 to 19 digits (spaces or dashes between them allowed) with a card prefix (2, 3, 4, 5, 6) that pass the Luhn check |
 *
 * The request path pays for it on every stored string, so a string is first read once, character by character,
 * for what each rule needs (a run of 13 digits, `=`, `:`, `eyJ`, `bearer `/`basic `), and only the rules that
 * could match run; most strings (titles, names, ids, paths, user agents) need none and cost no regular expression
 * at all. The expressions are compiled once.
 * Scrubbing is idempotent: scrubbed text scrubbed again is the same text.
 */
import { REDACTED } from './secret-names.js';

export const SCRUB_RULES = ['url', 'bearer', 'basic', 'jwt', 'pairs', 'card'] as const;
export type ScrubRule = (typeof SCRUB_RULES)[number];

export interface ScrubOptions {
  /** More patterns: each match is replaced (only its `secret` named group, when it has one). */
  patterns?: RegExp[];
  /** `true`: no built-in rule; or the built-in rules to leave out. */
  disable?: true | ScrubRule[];
}

export interface Scrubber {
  /** `text` with every secret the rules find replaced by `[REDACTED]`. */
  text(text: string): string;
}

const URL_USERINFO = /\b([a-z][a-z0-9+.-]{0,31}:\/\/)([^\s/?#@"'<>]+)@/gi;
const BEARER = /\b(bearer)(\s+)([A-Za-z0-9\-._~+/]+=*)/gi;
const BASIC = /\b(basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})/gi;
const JWT = /\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;
const PAIR_EQ = /(?<![A-Za-z0-9_.\-[\]%])([A-Za-z0-9_.\-[\]%]{1,64})=(\[REDACTED\]|"[^"\n]*"|'[^'\n]*'|[^\s&;,"'<>)}\]]*)/g;
const PAIR_QUOTED_KEY = /(["'])([^"'\\\n]{1,64})\1(\s*:\s*)("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|-?\d[\d.]*|true|false)/g;
const PAIR_BARE_KEY = /(^|[\s{,(])([A-Za-z_$][\w$.\-[\]]{0,63})(\s*:[ \t]*)((?:[Bb]earer|[Bb]asic)\s+\[REDACTED\]|\[REDACTED\]|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s,;{}[\]'")][^\s,;}'")\]]*)/g;
const CARD = /(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)/g;

const TOKEN_PUNCT = /[0-9\-._~+/]/;

// What a string may hold, from one pass over it: only the rules that could match are run.
const HAS_DIGITS = 1;
const HAS_EQ = 2;
const HAS_COLON = 4;
const HAS_EYJ = 8;
const HAS_SCHEME = 16;

/** The rules `s` may need (a bit set of HAS_*): one pass, no allocation for most strings; 0 for most strings. */
function sniff(s: string): number {
  let found = 0;
  let run = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++run >= 13) found |= HAS_DIGITS;
      continue;
    }
    if ((c === 32 || c === 45) && run > 0) continue;
    run = 0;
    if (c === 61) found |= HAS_EQ;
    else if (c === 58) found |= HAS_COLON;
    else if (c === 101) {
      if (s.charCodeAt(i + 1) === 121 && s.charCodeAt(i + 2) === 74) found |= HAS_EYJ;
    } else if ((c | 32) === 98) {
      const n = s.charCodeAt(i + 1) | 32;
      if ((n === 101 || n === 97) && /^b(earer|asic)\s/i.test(s.slice(i, i + 7))) found |= HAS_SCHEME;
    }
  }
  return found;
}

/** The Luhn check of a string of digits. */
export function luhn(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/** 13 to 19 digits, a payment card's first digit (2221-2720, 3, 4, 5, 6), and a valid Luhn check digit. */
export function isCardNumber(digits: string): boolean {
  if (digits.length < 13 || digits.length > 19) return false;
  const first = digits.charCodeAt(0) - 48;
  if (first === 2) {
    const iin = Number(digits.slice(0, 4));
    if (iin < 2221 || iin > 2720) return false;
  } else if (first < 3 || first > 6) return false;
  return luhn(digits);
}

/**
 * A run of digit groups: the whole run, or else the first sequence of whole groups that is a card number (a card
 * followed by a short number, `4111 1111 1111 1111 12`), is replaced.
 */
function scrubCardRun(run: string): string {
  const plain = run.replace(/[ -]/g, '');
  if (isCardNumber(plain)) return REDACTED;
  const parts = run.split(/([ -])/);
  const groups: string[] = [];
  for (let i = 0; i < parts.length; i += 2) groups.push(parts[i]);
  if (groups.length < 2) return run;
  for (let i = 0; i < groups.length; i++) {
    let digits = '';
    for (let j = i; j < groups.length; j++) {
      digits += groups[j];
      if (digits.length > 19) break;
      if (j > i && isCardNumber(digits)) {
        const before = parts.slice(0, i * 2).join('');
        const after = parts.slice(j * 2 + 1).join('');
        return `${before}${REDACTED}${after}`;
      }
    }
  }
  return run;
}

function base64Credentials(b64: string): boolean {
  const text = Buffer.from(b64, 'base64').toString('latin1');
  if (!text.includes(':')) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 32 || (c > 126 && c < 160)) return false;
  }
  return true;
}

function decodeName(name: string): string {
  if (!name.includes('%')) return name;
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

/** A stateless global copy of a caller's pattern (a `g` flag is needed by `replace`, `y` would anchor it). */
function globalCopy(p: RegExp): RegExp {
  const flags = p.flags.replace('y', '');
  return new RegExp(p.source, flags.includes('g') ? flags : `${flags}g`);
}

export function createScrubber(isSecret: (name: string) => boolean, options: ScrubOptions = {}): Scrubber {
  const off = new Set<ScrubRule>(options.disable === true ? SCRUB_RULES : options.disable ?? []);
  const on = (rule: ScrubRule): boolean => !off.has(rule);
  const custom = (options.patterns ?? []).map(globalCopy);
  const builtIn = SCRUB_RULES.some(on);

  const pairValue = (v: string): string => (v.startsWith("'") ? `'${REDACTED}'` : `"${REDACTED}"`);

  function builtInRules(input: string, found: number): string {
    let s = input;
    if (found & HAS_COLON && on('url') && s.includes('://')) s = s.replace(URL_USERINFO, `$1${REDACTED}@`);
    if (found & HAS_SCHEME) {
      if (on('bearer')) {
        s = s.replace(BEARER, (m, word: string, space: string, token: string) =>
          token.length >= 16 || (token.length >= 8 && TOKEN_PUNCT.test(token)) ? `${word}${space}${REDACTED}` : m);
      }
      if (on('basic')) s = s.replace(BASIC, (m, word: string, space: string, b64: string) => (base64Credentials(b64) ? `${word}${space}${REDACTED}` : m));
    }
    if (found & HAS_EYJ && on('jwt')) s = s.replace(JWT, REDACTED);
    if (on('pairs')) {
      if (found & HAS_EQ) s = s.replace(PAIR_EQ, (m, name: string, value: string) => (value !== '' && value !== REDACTED && isSecret(decodeName(name)) ? `${name}=${REDACTED}` : m));
      if (found & HAS_COLON) {
        s = s.replace(PAIR_QUOTED_KEY, (m, q: string, name: string, sep: string, value: string) => (isSecret(name) ? `${q}${name}${q}${sep}${pairValue(value)}` : m));
        s = s.replace(PAIR_BARE_KEY, (m, lead: string, name: string, sep: string, value: string) =>
          !value.includes('[REDACTED') && isSecret(name) ? `${lead}${name}${sep}${value.startsWith('"') || value.startsWith("'") ? pairValue(value) : REDACTED}` : m);
      }
    }
    if (found & HAS_DIGITS && on('card')) s = s.replace(CARD, scrubCardRun);
    return s;
  }

  function text(input: string): string {
    let s = input;
    if (builtIn) {
      const found = sniff(input);
      if (found !== 0) s = builtInRules(input, found);
    }
    for (let i = 0; i < custom.length; i++) {
      const p = custom[i];
      p.lastIndex = 0;
      if (!p.test(s)) continue;
      p.lastIndex = 0;
      s = s.replace(p, (...args: unknown[]) => {
        const match = args[0] as string;
        const groups = args[args.length - 1];
        const secret = groups !== null && typeof groups === 'object' ? (groups as Record<string, string | undefined>).secret : undefined;
        return secret === undefined || secret === '' ? REDACTED : match.replace(secret, REDACTED);
      });
    }
    return s;
  }

  return { text };
}
