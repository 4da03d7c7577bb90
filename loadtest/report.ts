/** The load run's report: one JSON shape and its markdown rendering. */
import type { HlsSummary } from './hls-viewer.ts';
import type { Machine } from './procstat.ts';
import type { Summary } from './stats.ts';

export interface PublisherSummary {
  protocol: 'rtmp' | 'whip';
  requested: number;
  /** Live at the end of the measured window. */
  live: number;
  /** Never got to publish. */
  refused: number;
  /** Were live, then the connection went away. */
  dropped: number;
  connectMs: Summary | undefined;
  /** Ticks skipped because a socket backed up (the server did not read in time). */
  skippedTicks: number;
  resyncs: number;
  /** Aggregate bitrate sent during the measured window. */
  mbps: number;
  mbpsPerStream: number;
  errors: Array<{ error: string; count: number }>;
}

export interface PlayersSummary {
  players: number;
  playing: number;
  failed: number;
  videoFrames: number;
  /** Mean over players of video frames per second received (the clip is 30 fps). */
  fps: number;
  stalls: number;
  stalledMs: number;
  timestampRegressions: number;
  firstVideoMs: Summary | undefined;
  errors: Array<{ error: string; count: number }>;
}

export interface GeneratorCost {
  /** CPU seconds (user + system) of the load tool, its children included, during the window. */
  cpuSeconds: number;
  /** The same as a fraction of one core. */
  coreFraction: number;
  /** The tool's CPU milliseconds per published stream per second. */
  msPerStreamSecond: number;
  rssBytes: number;
  nice: number;
  ticks: number;
  lateTicks: number;
}

export interface LoadReport {
  tool: 'tributary-loadtest';
  version: 1;
  startedAt: string;
  machine: Machine;
  target: { rtmp?: string; hls?: string; whip?: string };
  media: { description: string; videoFrames: number; audioFrames: number; loopMs: number; mbps: number };
  durationS: number;
  interrupted: boolean;
  publishers: PublisherSummary;
  hls: HlsSummary | undefined;
  rtmpPlayers: PlayersSummary | undefined;
  generator: GeneratorCost;
}

const f = (v: number | undefined, d = 1): string => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : `${(v * 100).toFixed(1)}%`);
const ms = (s: Summary | undefined): string => (s ? `${f(s.p50, 0)} / ${f(s.p95, 0)} / ${f(s.max, 0)}` : '–');

export function errorCounts(errors: ReadonlyArray<string | undefined>, max = 8): Array<{ error: string; count: number }> {
  const m = new Map<string, number>();
  for (const e of errors) if (e) m.set(e, (m.get(e) ?? 0) + 1);
  return [...m.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, max)
    .map(([error, count]) => ({ error, count }));
}

export function renderMarkdown(r: LoadReport): string {
  const p = r.publishers;
  const lines: string[] = [];
  lines.push(`# Load test ${r.startedAt}${r.interrupted ? ' (interrupted)' : ''}`, '');
  lines.push(`Machine: ${r.machine.cores} cores, ${r.machine.cpuModel}, Node ${r.machine.node}. Measured window: ${r.durationS} s.`);
  lines.push(`Media: ${r.media.description}, ${f(r.media.mbps, 2)} Mbps, loop ${f(r.media.loopMs / 1000, 1)} s (${r.media.videoFrames} video, ${r.media.audioFrames} audio frames).`);
  const targets = Object.entries(r.target).map(([k, v]) => `${k} ${v}`);
  if (targets.length) lines.push(`Target: ${targets.join(', ')}.`);
  lines.push('', `## Publishers (${p.protocol.toUpperCase()})`, '');
  lines.push('| requested | live at end | refused | dropped | connect ms p50/p95/max | Mbps total | Mbps/stream | skipped ticks | resyncs |');
  lines.push('|---:|---:|---:|---:|---|---:|---:|---:|---:|');
  lines.push(`| ${p.requested} | ${p.live} | ${p.refused} | ${p.dropped} | ${ms(p.connectMs)} | ${f(p.mbps)} | ${f(p.mbpsPerStream, 2)} | ${p.skippedTicks} | ${p.resyncs} |`);
  if (p.errors.length) lines.push('', ...p.errors.map((e) => `- ${e.count} × ${e.error}`));
  if (r.hls) {
    const h = r.hls;
    lines.push('', `## HLS viewers`, '');
    lines.push('| viewers | failed | segments | on time | stalls (ms) | playlist stalls | sequence gaps | errors pl/seg/parse | lateness ms p50/p95/max | age ms p50/p95/max | download ms p50/p95/max |');
    lines.push('|---:|---:|---:|---:|---|---:|---:|---|---|---|---|');
    lines.push(
      `| ${h.viewers} | ${h.failed} | ${h.segments} | ${pct(h.onTimeRate)} | ${h.stalls} (${f(h.stalledMs, 0)}) | ${h.playlistStalls} | ${h.sequenceGaps} | ${h.playlistErrors}/${h.segmentErrors}/${h.parseErrors} | ${ms(h.latenessMs)} | ${ms(h.ageMs)} | ${ms(h.downloadMs)} |`,
    );
    if (h.errors.length) lines.push('', ...h.errors.map((e) => `- ${e}`));
  }
  if (r.rtmpPlayers) {
    const q = r.rtmpPlayers;
    lines.push('', '## RTMP players', '');
    lines.push('| players | playing at end | failed | video fps/player | stalls (ms) | ts regressions | first video ms p50/p95/max |');
    lines.push('|---:|---:|---:|---:|---|---:|---|');
    lines.push(`| ${q.players} | ${q.playing} | ${q.failed} | ${f(q.fps)} | ${q.stalls} (${f(q.stalledMs, 0)}) | ${q.timestampRegressions} | ${ms(q.firstVideoMs)} |`);
    if (q.errors.length) lines.push('', ...q.errors.map((e) => `- ${e.count} × ${e.error}`));
  }
  const g = r.generator;
  lines.push('', '## The load tool itself', '');
  lines.push(
    `${f(g.cpuSeconds, 2)} CPU-s in the window = ${pct(g.coreFraction)} of one core (${f(g.msPerStreamSecond, 3)} ms per stream-second), RSS ${f(g.rssBytes / 2 ** 20, 0)} MiB, nice ${g.nice}, ${g.ticks} ticks (${g.lateTicks} late).`,
  );
  return `${lines.join('\n')}\n`;
}
