/**
 * The load generator's own cost. getrusage of this process: the tool spawns nothing while it measures
 * (ffmpeg makes the media before), and walking /proc every second would itself cost ~4 ms.
 */

export interface CpuSample {
  at: number;
  cpuSeconds: number;
}

export function sampleSelf(): CpuSample {
  const u = process.cpuUsage();
  return { at: performance.now(), cpuSeconds: (u.user + u.system) / 1e6 };
}

/** CPU used between two samples as a fraction of one core; NaN over less than half a second (noise). */
export function coreFraction(a: CpuSample, b: CpuSample): number {
  const wall = (b.at - a.at) / 1000;
  return wall >= 0.5 ? (b.cpuSeconds - a.cpuSeconds) / wall : Number.NaN;
}
