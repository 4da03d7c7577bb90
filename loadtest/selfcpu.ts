/** The load generator's own cost: this process plus anything it spawned, from /proc where there is one. */
import { usage } from './procstat.ts';

export interface CpuSample {
  at: number;
  cpuSeconds: number;
}

export function sampleSelf(): CpuSample {
  let cpuSeconds: number;
  try {
    cpuSeconds = usage(process.pid).cpuSeconds;
    if (cpuSeconds === 0) throw new Error('no /proc');
  } catch {
    const u = process.cpuUsage();
    cpuSeconds = (u.user + u.system) / 1e6;
  }
  return { at: performance.now(), cpuSeconds };
}

/** CPU used between two samples as a fraction of one core. */
export function coreFraction(a: CpuSample, b: CpuSample): number {
  const wall = (b.at - a.at) / 1000;
  return wall > 0 ? (b.cpuSeconds - a.cpuSeconds) / wall : 0;
}
