/**
 * Errors as structure: what an error may tell the audit trail without repeating the values that caused it.
 *
 * Mongoose and the driver quote the offending value in their messages: a `minlength` failure on `password`
 * says ``Path `password` (`<the password>`, length 10) is shorter…``, a `CastError` quotes the value it could
 * not cast, a duplicate-key error quotes the key. For these errors the stored form keeps the name, the status,
 * the driver's code, and for each path involved its name and validator kind (`errors: [{ path, kind, name }]`);
 * the message is rebuilt from the parts, and the part of a secret path (judged by the redactor) is rebuilt
 * without its value. The values of secret paths (and any secret values the caller knows of, such as the
 * request's secret parameters) are then removed wherever else they appear, the stack included, and the text is
 * scrubbed (lib/core/scrub.ts). `value` itself is never stored.
 */
import type { Redactor } from './redact.js';
import { REDACTED } from './secret-names.js';

export interface ErrorDetail {
  path: string;
  /** The validator (`required`, `minlength`, `user defined`...), the cast target (`ObjectId`), or `unique`. */
  kind: string | null;
  /** `ValidatorError`, `CastError`, `DuplicateKey`... */
  name: string;
}

export interface ShapedError {
  name: string;
  message: string;
  stack: string | null;
  code?: number | string;
  errors?: ErrorDetail[];
}

type Loose = Record<string, unknown>;

/** Koa's own rule for the status an error will get, so the event says what the client receives. */
export function statusOf(err: unknown): number {
  const e = err as { status?: unknown; statusCode?: unknown; code?: unknown } | null;
  if (e === null || typeof e !== 'object') return 500;
  if (e.code === 'ENOENT') return 404;
  const s = e.status ?? e.statusCode;
  return typeof s === 'number' && s >= 400 && s < 600 ? s : 500;
}

/** Strings of a value worth removing from text: its primitive leaves (bounded). */
function leaves(value: unknown, out: string[], depth = 0): void {
  if (out.length > 64 || depth > 4) return;
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') {
    out.push(String(value));
    return;
  }
  if (value === null || typeof value !== 'object') return;
  if (typeof (value as { toHexString?: unknown }).toHexString === 'function') {
    out.push(String(value));
    return;
  }
  try {
    for (const v of Array.isArray(value) ? value : Object.values(value)) leaves(v, out, depth + 1);
  } catch {
    // an unreadable value has nothing to remove
  }
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

interface Parts {
  message: string;
  details: ErrorDetail[];
  secrets: string[];
}

function validatorMessage(e: Loose, redactor: Redactor, parts: Parts): string {
  const path = str(e.path);
  const name = str(e.name) || 'ValidatorError';
  const kind = typeof e.kind === 'string' ? e.kind : null;
  parts.details.push({ path, kind, name });
  const secret = path !== '' && redactor.isSecret(path);
  if (!secret) return str(e.message);
  leaves(e.value, parts.secrets);
  if (typeof e.stringValue === 'string') parts.secrets.push(e.stringValue);
  if (name === 'CastError') {
    const model = (e.model as { modelName?: unknown } | undefined)?.modelName;
    return `Cast to ${kind ?? 'type'} failed at path "${path}"${typeof model === 'string' ? ` for model "${model}"` : ''}`;
  }
  return `Path \`${path}\` is invalid (${kind ?? 'validator'})`;
}

function isValidation(e: Loose): boolean {
  return e.name === 'ValidationError' && e.errors !== null && typeof e.errors === 'object';
}

function isCast(e: Loose): boolean {
  return (e.name === 'CastError' || e.name === 'ValidatorError') && typeof e.path === 'string';
}

function duplicateKey(e: Loose): boolean {
  return e.code === 11000 || e.code === 11001 || (typeof e.message === 'string' && e.message.startsWith('E11000'));
}

/** The paths of a duplicate-key error: its key pattern, else its key value, else the index name. */
function duplicatePaths(e: Loose, parts: Parts): string[] {
  const values: unknown[] = [e.keyValue];
  const writeErrors = Array.isArray(e.writeErrors) ? (e.writeErrors as Loose[]) : [];
  for (const w of writeErrors.slice(0, 16)) {
    const inner = (w.err ?? w) as Loose;
    values.push(inner.keyValue ?? (w as { keyValue?: unknown }).keyValue);
  }
  for (const v of values) leaves(v, parts.secrets);
  const pattern = (e.keyPattern ?? e.keyValue) as Loose | undefined;
  if (pattern !== null && typeof pattern === 'object') return Object.keys(pattern);
  const index = /index: (\S+)/.exec(str(e.message))?.[1];
  if (index === undefined) return [];
  return index.split(/_-?1(?:_|$)/).filter((p) => p !== '');
}

function removeAll(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 3 && out.includes(s)) out = out.replaceAll(s, REDACTED);
  return out;
}

/**
 * The structure of an Error (see the module comment). `known` are secret values of the context (the request's
 * secret parameters) to remove from its texts.
 */
export function shapeError(err: Error, redactor: Redactor, known: readonly string[] = []): ShapedError {
  const e = err as unknown as Loose;
  const name = str(e.name) || 'Error';
  const original = String(err.message);
  const parts: Parts = { message: original, details: [], secrets: [] };
  let code: number | string | undefined;

  if (isValidation(e)) {
    const entries = Object.entries(e.errors as Record<string, unknown>).slice(0, 100);
    const texts = entries.map(([path, sub]) => {
      const s = (sub ?? {}) as Loose;
      return `${path}: ${validatorMessage({ ...s, path: str(s.path) || path, name: s.name, kind: s.kind, message: s.message, value: s.value, stringValue: s.stringValue, model: s.model }, redactor, parts)}`;
    });
    const head = str(e._message) || 'Validation failed';
    parts.message = texts.length === 0 ? original : `${head}: ${texts.join(', ')}`;
  } else if (isCast(e)) {
    parts.message = validatorMessage(e, redactor, parts);
  } else if (duplicateKey(e)) {
    code = typeof e.code === 'number' ? e.code : 11000;
    const paths = duplicatePaths(e, parts);
    for (const path of paths) parts.details.push({ path, kind: 'unique', name: 'DuplicateKey' });
    if (paths.length === 0 || paths.some((p) => redactor.isSecret(p))) {
      parts.message = original.replace(/\s*dup key:[\s\S]*$/, '');
    } else parts.secrets = [];
  }
  if (code === undefined && (typeof e.code === 'number' || (typeof e.code === 'string' && e.code.length <= 64))) code = e.code as number | string;

  const secrets = [...parts.secrets, ...known];
  const message = redactor.text(removeAll(parts.message, secrets));
  let stack: string | null = null;
  if (typeof err.stack === 'string') {
    let s = err.stack;
    if (parts.message !== original && original !== '' && s.includes(original)) s = s.replace(original, parts.message);
    stack = redactor.text(removeAll(s, secrets));
  }
  const out: ShapedError = { name: redactor.text(name), message, stack };
  if (code !== undefined) out.code = code;
  if (parts.details.length > 0) out.errors = parts.details;
  return out;
}
