/**
 * npm run bench -- [--steps 50,100,200,400] [--whip-steps 50] [--duration 60] [--servers a,b,c] ...
 *
 * For every step and every server: start the server fresh, run the load generator against it as a
 * separate niced process, and measure the server from /proc over the generator's measured window:
 * CPU-seconds per stream-minute (utime + stime, children included), RSS and PSS per stream, the HLS
 * on-time rate seen by the viewers, and publisher failures. Then stop and reap it. Steps run
 * server-interleaved so slow drifts in the machine's load hit every server alike. Results go to
 * bench/results/<date>.md and .json with the machine's core count and CPU model.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultCacheDir, ensureRtmpMedia, ensureWhipMedia } from './media.ts';
import { installSignalHooks, interrupted, start } from './proc.ts';
import { machine, usage, type Machine, type Usage } from './procstat.ts';
import { mainThreadProfile, renderProfile, summarizeProfileFile, type ProfileSummary } from './profile.ts';
import type { LoadReport } from './report.ts';
import { launch, REPO_ROOT, type ServerName, type ServerUnderTest } from './servers.ts';

export interface BenchRow {
  protocol: 'rtmp' | 'whip';
  step: number;
  server: ServerName;
  /** Publishers live at the end of the window. */
  live: number;
  failures: number;
  windowS: number;
  serverCpuSeconds: number;
  cpuSecondsPerStreamMinute: number | undefined;
  serverCoreFraction: number;
  rssBytes: number;
  pssBytes: number;
  idleRssBytes: number;
  idlePssBytes: number;
  rssPerStreamBytes: number | undefined;
  pssPerStreamBytes: number | undefined;
  hlsOnTimeRate: number | undefined;
  hlsStalls: number | undefined;
  hlsViewers: number;
  publishMbps: number;
  generatorCoreFraction: number;
  generatorReportCoreFraction: number;
  note: string | undefined;
  /** The generator's report, for the details. */
  report: LoadReport | undefined;
}

export interface BenchResult {
  tool: 'tributary-bench';
  version: 1;
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  settings: { steps: number[]; whipSteps: number[]; durationS: number; warmupS: number; viewers: number; servers: ServerName[] };
  rows: BenchRow[];
  profiles: Array<{ step: number; protocol: string; summary: ProfileSummary }>;
  notes: string[];
}

const ALL: ServerName[] = ['tributary', 'nginx-rtmp', 'node-media-server'];

function list(v: string | undefined, def: number[]): number[] {
  if (v === undefined) return def;
  if (v.trim() === '' || v === '0' || v === 'none') return [];
  return v.split(',').map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1 || n > 5000) throw new Error(`bad step ${JSON.stringify(x)}`);
    return n;
  });
}

const HELP = `Usage: npm run bench -- [options]

  --steps LIST        RTMP publisher counts (default 50,100,200,400)
  --whip-steps LIST   WHIP publisher counts, tributary only (default 50; "none" to skip)
  --duration S        measured window per run (default 60)
  --warmup S          after the ramp, before measuring (default 8)
  --viewers N         HLS viewers per run, on servers with HLS (default 20, capped at the step)
  --servers LIST      any of ${ALL.join(',')} (default all)
  --cpu-prof          one more tributary run at the largest RTMP step under node --cpu-prof, summarized
  --out DIR           results folder (default bench/results)
  --no-write          print only, write no result files
`;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function whipAvailable(s: ServerUnderTest): Promise<boolean> {
  if (!s.whipUrl) return false;
  try {
    const r = await fetch(s.whipUrl.replace('{name}', 'bench-probe'), {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: 'v=0\r\n',
      signal: AbortSignal.timeout(5000),
    });
    await r.text();
    return r.status !== 404 && r.status !== 405;
  } catch {
    return false;
  }
}

interface RunSpec {
  protocol: 'rtmp' | 'whip';
  step: number;
  server: ServerName;
  durationS: number;
  warmupS: number;
  viewers: number;
  cacheDir: string;
  cpuProfDir: string | undefined;
  work: string;
}

async function runOne(spec: RunSpec, log: (s: string) => void): Promise<BenchRow> {
  const rampS = Math.max(2, spec.step / 50);
  const budgetMs = (rampS + spec.warmupS + spec.durationS + 150) * 1000;
  const row: BenchRow = { ...emptyRow(spec), failures: 0 };
  const server = await launch(spec.server, { timeoutMs: budgetMs + 60_000, ...(spec.cpuProfDir && spec.server === 'tributary' ? { cpuProfDir: spec.cpuProfDir } : {}) });
  try {
    if (spec.protocol === 'whip' && !(await whipAvailable(server))) {
      row.note = 'no WHIP endpoint on this server build';
      return row;
    }
    await sleep(1000);
    const idle = usage(server.pid);
    row.idleRssBytes = idle.rssBytes;
    row.idlePssBytes = idle.pssBytes;
    const viewers = server.hlsUrl ? Math.min(spec.viewers, spec.step) : 0;
    row.hlsViewers = viewers;
    const out = join(spec.work, `${spec.protocol}-${spec.step}-${spec.server}`);
    const args = [
      '--import', 'tsx', 'loadtest/cli.ts', '--events', '--quiet', '--nice', '0',
      '--protocol', spec.protocol, '--publishers', String(spec.step), '--viewers', String(viewers),
      '--duration', String(spec.durationS), '--warmup', String(spec.warmupS), '--ramp', String(rampS),
      '--rtmp-url', server.rtmpUrl, '--cache', spec.cacheDir, '--out', out,
      ...(server.hlsUrl ? ['--hls-url', server.hlsUrl] : []),
      ...(server.whipUrl ? ['--whip-url', server.whipUrl] : []),
    ];
    let a: { s: Usage; g: Usage; at: number } | undefined;
    let b: { s: Usage; g: Usage; at: number } | undefined;
    let lastLog = 0;
    // The generator runs niced (10) below the server (0); it must not renice itself back.
    const gen = start(process.execPath, args, {
      timeoutMs: budgetMs,
      cwd: REPO_ROOT,
      nice: 10,
      keep: 200_000,
      onLine: (line) => {
        let ev: { event?: string; phase?: string; elapsedS?: number; publishers?: { live: number; failed: number; requested: number }; mbps?: number; cpu?: number };
        try {
          ev = JSON.parse(line) as typeof ev;
        } catch {
          return;
        }
        if (ev.event === 'phase' && ev.phase === 'measuring') a = { s: usage(server.pid), g: usage(gen.pid), at: performance.now() };
        if (ev.event === 'phase' && ev.phase === 'measured') b = { s: usage(server.pid), g: usage(gen.pid), at: performance.now() };
        if (ev.event === 'progress' && ev.publishers && (ev.elapsedS ?? 0) - lastLog >= 10) {
          lastLog = ev.elapsedS ?? 0;
          log(`  ${ev.phase} ${Math.round(ev.elapsedS ?? 0)}s: ${ev.publishers.live}/${ev.publishers.requested} live, ${ev.publishers.failed} failed, ${(ev.mbps ?? 0).toFixed(0)} Mbps, generator ${((ev.cpu ?? 0) * 100).toFixed(0)}% of a core`);
        }
      },
    });
    const abort = (): void => void gen.stop(3000);
    interrupted.addEventListener('abort', abort, { once: true });
    const res = await gen.done;
    interrupted.removeEventListener('abort', abort);
    if (res.code !== 0 || !existsSync(`${out}.json`)) {
      row.note = `generator failed (exit ${res.code ?? res.signal}): ${res.stderr.trim().split('\n').slice(-3).join(' / ')}`;
      return row;
    }
    const report = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as LoadReport;
    row.report = report;
    if (!a || !b) {
      row.note = 'the generator did not report its window';
      return row;
    }
    const windowS = (b.at - a.at) / 1000;
    const p = report.publishers;
    row.windowS = Math.round(windowS * 10) / 10;
    row.live = p.live;
    row.failures = p.refused + p.dropped;
    row.publishMbps = p.mbps;
    row.serverCpuSeconds = b.s.cpuSeconds - a.s.cpuSeconds;
    row.serverCoreFraction = row.serverCpuSeconds / windowS;
    row.cpuSecondsPerStreamMinute = p.live > 0 ? row.serverCpuSeconds / p.live / (windowS / 60) : undefined;
    row.rssBytes = b.s.rssBytes;
    row.pssBytes = b.s.pssBytes;
    row.rssPerStreamBytes = p.live > 0 ? Math.max(0, b.s.rssBytes - idle.rssBytes) / p.live : undefined;
    row.pssPerStreamBytes = p.live > 0 ? Math.max(0, b.s.pssBytes - idle.pssBytes) / p.live : undefined;
    row.hlsOnTimeRate = report.hls?.onTimeRate;
    row.hlsStalls = report.hls ? report.hls.stalls + report.hls.playlistStalls : undefined;
    row.generatorCoreFraction = (b.g.cpuSeconds - a.g.cpuSeconds) / windowS;
    row.generatorReportCoreFraction = report.generator.coreFraction;
    if (interrupted.aborted) row.note = 'interrupted';
    return row;
  } finally {
    const r = await server.stop();
    if (r.code !== 0 && r.signal !== 'SIGTERM' && !row.note) row.note = `server exited ${r.code ?? r.signal}`;
  }
}

const mib = (b: number | undefined, d = 1): string => (b === undefined ? '–' : (b / 2 ** 20).toFixed(d));
const fx = (v: number | undefined, d = 2): string => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
const pc = (v: number | undefined): string => (v === undefined ? '–' : `${(v * 100).toFixed(1)}%`);

export function renderBench(r: BenchResult): string {
  const m = r.machine;
  const L: string[] = [];
  L.push(`# Bench ${r.startedAt}`, '');
  L.push(`Machine: ${m.cores} cores, ${m.cpuModel}, ${mib(m.memoryBytes, 0)} MiB, kernel ${m.kernel}, Node ${m.node}.`);
  L.push(
    `Settings: RTMP steps ${r.settings.steps.join(', ') || 'none'}, WHIP steps ${r.settings.whipSteps.join(', ') || 'none'}; ${r.settings.durationS} s measured per run after a ${r.settings.warmupS} s warm-up; up to ${r.settings.viewers} HLS viewers per run; servers ${r.settings.servers.join(', ')}.`,
  );
  L.push(
    'Server CPU is utime+stime of the server and its children from /proc over the window; memory is RSS/PSS at the end of the window, per stream after subtracting the idle server. The generator runs niced (10); its CPU is shown beside.',
    '',
  );
  L.push('| protocol | streams | server | live | failures | CPU-s / stream-min | server % of a core | RSS MiB (per stream) | PSS MiB (per stream) | HLS on-time | HLS stalls | publish Mbps | generator % of a core | note |');
  L.push('|---|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|');
  for (const x of r.rows) {
    L.push(
      `| ${x.protocol} | ${x.step} | ${x.server} | ${x.live} | ${x.failures} | ${fx(x.cpuSecondsPerStreamMinute, 3)} | ${fx(x.serverCoreFraction * 100, 1)} | ${mib(x.rssBytes, 0)} (${mib(x.rssPerStreamBytes, 2)}) | ${mib(x.pssBytes, 0)} (${mib(x.pssPerStreamBytes, 2)}) | ${pc(x.hlsOnTimeRate)} | ${x.hlsStalls ?? '–'} | ${fx(x.publishMbps, 0)} | ${fx(x.generatorCoreFraction * 100, 1)} | ${x.note ?? ''} |`,
    );
  }
  const steps = [...new Set(r.rows.filter((x) => x.protocol === 'rtmp').map((x) => x.step))];
  const ratioRows: string[] = [];
  for (const step of steps) {
    const g = r.rows.find((x) => x.protocol === 'rtmp' && x.step === step && x.server === 'tributary');
    const n = r.rows.find((x) => x.protocol === 'rtmp' && x.step === step && x.server === 'nginx-rtmp');
    if (!g || !n) continue;
    const ratio = (a: number | undefined, b: number | undefined): string => (a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : '–');
    ratioRows.push(
      `| ${step} | ${fx(g.cpuSecondsPerStreamMinute, 3)} | ${fx(n.cpuSecondsPerStreamMinute, 3)} | ${ratio(g.cpuSecondsPerStreamMinute, n.cpuSecondsPerStreamMinute)} | ${ratio(g.rssPerStreamBytes, n.rssPerStreamBytes)} | ${ratio(g.pssPerStreamBytes, n.pssPerStreamBytes)} | ${pc(g.hlsOnTimeRate)} / ${pc(n.hlsOnTimeRate)} |`,
    );
  }
  if (ratioRows.length) {
    L.push('', '## tributary against nginx-rtmp (RTMP in, HLS out)', '');
    L.push('| streams | tributary CPU-s/stream-min | nginx-rtmp CPU-s/stream-min | CPU ratio | RSS/stream ratio | PSS/stream ratio | HLS on-time (tributary / nginx) |');
    L.push('|---:|---:|---:|---:|---:|---:|---|');
    L.push(...ratioRows);
  }
  if (r.notes.length) L.push('', '## Notes', '', ...r.notes.map((n) => `- ${n}`));
  for (const p of r.profiles) L.push('', renderProfile(p.summary, `Where tributary spends its CPU at ${p.step} ${p.protocol.toUpperCase()} streams (--cpu-prof)`));
  return `${L.join('\n')}\n`;
}

async function main(): Promise<void> {
  installSignalHooks();
  const { values: v } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      steps: { type: 'string' },
      'whip-steps': { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      viewers: { type: 'string' },
      servers: { type: 'string' },
      'cpu-prof': { type: 'boolean' },
      out: { type: 'string' },
      'no-write': { type: 'boolean' },
      cache: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) return void process.stdout.write(HELP);
  const steps = list(v.steps, [50, 100, 200, 400]);
  const whipSteps = list(v['whip-steps'], [50]);
  const durationS = Number(v.duration ?? 60);
  const warmupS = Number(v.warmup ?? 8);
  const viewers = Number(v.viewers ?? 20);
  if (![durationS, warmupS, viewers].every((n) => Number.isFinite(n) && n >= 0) || durationS < 5) throw new Error('--duration (>= 5), --warmup and --viewers take numbers');
  const servers = (v.servers ?? ALL.join(',')).split(',').map((s) => s.trim()) as ServerName[];
  for (const s of servers) if (!ALL.includes(s)) throw new Error(`unknown server ${s}; choose from ${ALL.join(', ')}`);
  const cacheDir = v.cache ?? defaultCacheDir();
  const work = mkdtempSync(join(tmpdir(), 'tributary-bench-run-'));
  const profDir = v['cpu-prof'] ? join(work, 'profiles') : undefined;
  const log = (s: string): void => void process.stderr.write(`${s}\n`);

  const runs: RunSpec[] = [];
  for (const step of steps) for (const server of servers) runs.push({ protocol: 'rtmp', step, server, durationS, warmupS, viewers, cacheDir, cpuProfDir: undefined, work });
  if (servers.includes('tributary')) for (const step of whipSteps) runs.push({ protocol: 'whip', step, server: 'tributary', durationS, warmupS, viewers, cacheDir, cpuProfDir: undefined, work });
  const biggest = Math.max(0, ...steps);
  // The profiler costs CPU itself, so the profile comes from an extra run that is not in the table.
  if (profDir && servers.includes('tributary') && biggest > 0) {
    runs.push({ protocol: 'rtmp', step: biggest, server: 'tributary', durationS, warmupS, viewers, cacheDir, cpuProfDir: join(profDir, `rtmp-${biggest}`), work });
  }
  const estimate = runs.reduce((a, r) => a + Math.max(2, r.step / 50) + warmupS + durationS + 8, 0);
  log(`bench: ${runs.length} runs, about ${Math.ceil(estimate / 60)} min; media cache ${cacheDir}`);

  const startedAt = new Date().toISOString();
  if (steps.length) await ensureRtmpMedia(cacheDir);
  if (whipSteps.length && servers.includes('tributary')) await ensureWhipMedia(cacheDir);
  const rows: BenchRow[] = [];
  const profiles: BenchResult['profiles'] = [];
  const notes: string[] = [];
  if (!servers.includes('nginx-rtmp')) notes.push('nginx-rtmp was not run: no ratios.');
  if (servers.includes('node-media-server')) notes.push('node-media-server 4 has no HLS: its rows have no viewers and no on-time rate.');
  try {
    for (const spec of runs) {
      if (interrupted.aborted) break;
      log(`bench: ${spec.protocol} ${spec.step} publishers -> ${spec.server}${spec.cpuProfDir ? ' (profiled with --cpu-prof; not in the table)' : ''}`);
      let row: BenchRow;
      try {
        row = await runOne(spec, log);
      } catch (err) {
        row = { ...emptyRow(spec), note: `could not run: ${(err as Error).message.slice(0, 300)}` };
      }
      if (!spec.cpuProfDir) rows.push(row);
      log(
        `bench:   live ${row.live}/${spec.step}, failures ${row.failures}, ${fx(row.cpuSecondsPerStreamMinute, 3)} CPU-s/stream-min, server ${fx(row.serverCoreFraction * 100, 1)}% of a core, RSS ${mib(row.rssBytes, 0)} MiB, HLS on-time ${pc(row.hlsOnTimeRate)}, generator ${fx(row.generatorCoreFraction * 100, 1)}%${row.note ? ` (${row.note})` : ''}`,
      );
      if (spec.cpuProfDir && existsSync(spec.cpuProfDir)) {
        const file = mainThreadProfile(readdirSync(spec.cpuProfDir));
        if (file) profiles.push({ step: spec.step, protocol: spec.protocol, summary: summarizeProfileFile(join(spec.cpuProfDir, file), 20) });
        else notes.push(`no CPU profile was written for ${spec.step} streams`);
      }
      await sleep(2000);
    }
    if (whipSteps.length && !servers.includes('tributary')) notes.push('WHIP steps run against tributary only, which was not selected.');
    if (rows.some((r) => r.protocol === 'whip' && r.note?.startsWith('no WHIP endpoint'))) notes.push('This gateway build answers no WHIP endpoint: WHIP rows are empty.');
    if (interrupted.aborted) notes.push('Interrupted before all runs finished.');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const result: BenchResult = {
    tool: 'tributary-bench',
    version: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: machine(),
    settings: { steps, whipSteps, durationS, warmupS, viewers, servers },
    rows,
    profiles,
    notes,
  };
  const md = renderBench(result);
  process.stdout.write(md);
  if (!v['no-write']) {
    const dir = resolve(v.out ?? join(REPO_ROOT, 'bench', 'results'));
    mkdirSync(dir, { recursive: true });
    const date = startedAt.slice(0, 10);
    let base = join(dir, date);
    if (existsSync(`${base}.json`)) base = join(dir, `${date}-${startedAt.slice(11, 16).replace(':', '')}`);
    writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(`${base}.md`, md);
    log(`bench: results in ${base}.md and ${base}.json`);
  }
}

function emptyRow(spec: RunSpec): BenchRow {
  return {
    protocol: spec.protocol,
    step: spec.step,
    server: spec.server,
    live: 0,
    failures: spec.step,
    windowS: 0,
    serverCpuSeconds: 0,
    cpuSecondsPerStreamMinute: undefined,
    serverCoreFraction: 0,
    rssBytes: 0,
    pssBytes: 0,
    idleRssBytes: 0,
    idlePssBytes: 0,
    rssPerStreamBytes: undefined,
    pssPerStreamBytes: undefined,
    hlsOnTimeRate: undefined,
    hlsStalls: undefined,
    hlsViewers: 0,
    publishMbps: 0,
    generatorCoreFraction: 0,
    generatorReportCoreFraction: 0,
    note: undefined,
    report: undefined,
  };
}

if (process.argv[1]?.endsWith('bench.ts')) {
  try {
    await main();
    process.exit(0);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${HELP}`);
    process.exit(2);
  }
}
