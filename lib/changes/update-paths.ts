/**
 * Which fields an update can touch, read from the update document itself. It decides the projection of the
 * pre- and post-image reads (only those fields are read), and, with `fetchBefore: false`, which fields the
 * event lists. It never decides the values: those always come from reads of the real document.
 */
import { isPlainObject } from './diff.js';

/**
 * The dot-joined paths an operator update names, each cut before its first array position (`tags.0`,
 * `items.$.qty`, `items.$[i].qty` all touch `tags` / `items`: arrays are compared as a whole).
 * Null when it cannot be known from the update: a replacement or an aggregation pipeline.
 */
export function touchedPaths(update: unknown, replacement: boolean): string[] | null {
  if (replacement || Array.isArray(update) || !isPlainObject(update)) return null;
  const out = new Set<string>();
  for (const key of Object.keys(update)) {
    const arg = update[key];
    if (key.charCodeAt(0) !== 36 /* $ */) {
      out.add(cutAtArray(key)); // a bare field is an implicit $set
      continue;
    }
    if (!isPlainObject(arg)) continue;
    for (const path of Object.keys(arg)) {
      out.add(cutAtArray(path));
      if (key === '$rename' && typeof arg[path] === 'string') out.add(cutAtArray(arg[path]));
    }
  }
  return [...out];
}

const ARRAY_INDEX = /^\d+$/;

/** A dot-joined path cut before its first array position (`items.0.qty`, `items.$.qty`: `items`). */
export function cutAtArray(path: string): string {
  const segs = path.split('.');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    if (s.charCodeAt(0) === 36 /* $ */ || ARRAY_INDEX.test(s)) return segs.slice(0, i).join('.') || segs[0];
  }
  return path;
}

/** The top-level fields of `paths`: the projection that reads them (null: the whole document). */
export function topLevelProjection(paths: readonly string[] | null): Record<string, 1> | null {
  if (paths === null) return null;
  const proj: Record<string, 1> = {};
  for (const p of paths) {
    const dot = p.indexOf('.');
    proj[dot === -1 ? p : p.slice(0, dot)] = 1;
  }
  return proj;
}
