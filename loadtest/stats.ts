/** Small statistics helpers for the reports. */

export interface Summary {
  count: number;
  min: number;
  p50: number;
  p95: number;
  max: number;
  mean: number;
}

export function summarize(values: readonly number[]): Summary | undefined {
  if (values.length === 0) return undefined;
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number): number => v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))]!;
  return { count: v.length, min: v[0]!, p50: at(0.5), p95: at(0.95), max: v[v.length - 1]!, mean: v.reduce((a, b) => a + b, 0) / v.length };
}

/** Keeps at most `cap` values: every value until full, then a uniform reservoir sample. */
export class Reservoir {
  readonly values: number[] = [];
  #seen = 0;
  constructor(readonly cap = 10_000) {}

  add(v: number): void {
    this.#seen++;
    if (this.values.length < this.cap) this.values.push(v);
    else {
      const j = Math.floor(Math.random() * this.#seen);
      if (j < this.cap) this.values[j] = v;
    }
  }
}

export const round = (v: number, digits = 2): number => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};
