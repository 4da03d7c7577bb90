/** HTTP Range (RFC 9110 §14) for one resource of known size: a single byte range or none. */

export type RangeResult = { start: number; end: number } | 'unsatisfiable' | undefined;

/**
 * Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against `size`. Undefined means "serve it whole"
 * (no header, or a form we ignore as the RFC allows, such as several ranges).
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || (b !== '' && Number(b) < start)) return 'unsatisfiable';
  return { start, end };
}
