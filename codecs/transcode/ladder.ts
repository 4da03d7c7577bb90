/** The pure arithmetic of a rendition ladder: output sizes from the source's. */

/**
 * The output size of a rendition `height` lines high for a source of `width`x`height`: the source's
 * aspect ratio, both sides even (4:2:0), never larger than the source.
 */
export function renditionSize(source: { width: number; height: number }, height: number): { width: number; height: number } {
  if (!(source.width > 0 && source.height > 0)) throw new RangeError(`source size ${source.width}x${source.height} is invalid`);
  const h = Math.max(2, Math.floor(Math.min(height, source.height) / 2) * 2);
  const w = Math.max(2, Math.round((source.width * h) / source.height / 2) * 2);
  return { width: w, height: h };
}
