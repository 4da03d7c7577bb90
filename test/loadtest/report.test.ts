import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderBench, type BenchResult, type BenchRow } from '../../loadtest/bench.ts';
import { parseCli } from '../../loadtest/options.ts';
import { parseStat, usage } from '../../loadtest/procstat.ts';
import { summarizeProfile } from '../../loadtest/profile.ts';
import { renderMarkdown, type LoadReport } from '../../loadtest/report.ts';
import { launchNginxRtmp } from '../../loadtest/servers.ts';
import { run, start } from '../helpers/process.ts';

const MACHINE = { cores: 2, cpuModel: 'Test CPU', kernel: '6.1', node: 'v20', memoryBytes: 8 * 2 ** 30 };

function sampleReport(): LoadReport {
  return {
    tool: 'tributary-loadtest',
    version: 1,
    startedAt: '2026-01-01T00:00:00.000Z',
    machine: MACHINE,
    target: { rtmp: 'rtmp://127.0.0.1:1935/live', hls: 'http://127.0.0.1:8080/hls/live/{name}/index.m3u8' },
    media: { description: 'FLV H.264 1280x720', videoFrames: 480, audioFrames: 750, loopMs: 16000, mbps: 2.67 },
    durationS: 60,
    interrupted: false,
    publishers: { protocol: 'rtmp', requested: 300, live: 298, refused: 1, dropped: 1, connectMs: { count: 299, min: 3, p50: 8, p95: 20, max: 51, mean: 9 }, skippedTicks: 0, resyncs: 0, mbps: 796, mbpsPerStream: 2.67, errors: [{ error: 'connect: ECONNREFUSED', count: 1 }] },
    hls: {
      viewers: 100,
      failed: 0,
      segments: 2900,
      bytes: 1e9,
      onTimeRate: 0.987,
      stalls: 2,
      stalledMs: 900,
      playlistStalls: 0,
      sequenceGaps: 1,
      sequenceResets: 0,
      playlistErrors: 0,
      segmentErrors: 0,
      parseErrors: 0,
      firstSegmentMs: undefined,
      latenessMs: { count: 2900, min: 0, p50: 120, p95: 600, max: 2100, mean: 150 },
      ageMs: undefined,
      downloadMs: undefined,
      errors: [],
    },
    rtmpPlayers: undefined,
    generator: { cpuSeconds: 4.2, coreFraction: 0.07, msPerStreamSecond: 0.235, rssBytes: 200 * 2 ** 20, nice: 10, ticks: 1200, lateTicks: 3 },
  };
}

test('the load report renders publishers, viewers and the tool’s own CPU', (t) => {
  const md = renderMarkdown(sampleReport());
  t.regex(md, /\| 300 \| 298 \| 1 \| 1 \| 8 \/ 20 \/ 51 \| 796\.0 \| 2\.67 \|/);
  t.regex(md, /1 × connect: ECONNREFUSED/);
  t.regex(md, /\| 100 \| 0 \| 2900 \| 98\.7% \| 2 \(900\) \| 0 \| 1 \|/);
  t.regex(md, /4\.20 CPU-s in the window = 7\.0% of one core/);
  t.regex(md, /2 cores, Test CPU/);
});

function row(server: BenchRow['server'], cpu: number, rssPer: number): BenchRow {
  return {
    protocol: 'rtmp',
    step: 50,
    server,
    live: 50,
    failures: 0,
    windowS: 60,
    serverCpuSeconds: cpu * 50,
    cpuSecondsPerStreamMinute: cpu,
    serverCoreFraction: (cpu * 50) / 60,
    rssBytes: 100 * 2 ** 20,
    pssBytes: 90 * 2 ** 20,
    idleRssBytes: 0,
    idlePssBytes: 0,
    rssPerStreamBytes: rssPer,
    pssPerStreamBytes: rssPer,
    hlsOnTimeRate: server === 'node-media-server' ? undefined : 1,
    hlsStalls: 0,
    hlsViewers: 20,
    publishMbps: 133,
    generatorCoreFraction: 0.05,
    generatorReportCoreFraction: 0.05,
    note: undefined,
    report: undefined,
  };
}

test('the bench report has the table, the ratio to nginx-rtmp, the machine and the profile', (t) => {
  const result: BenchResult = {
    tool: 'tributary-bench',
    version: 1,
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:10:00.000Z',
    machine: MACHINE,
    settings: { steps: [50], whipSteps: [], durationS: 60, warmupS: 8, viewers: 20, servers: ['tributary', 'nginx-rtmp', 'node-media-server'] },
    rows: [row('tributary', 0.3, 2 * 2 ** 20), row('nginx-rtmp', 0.2, 2 ** 20), row('node-media-server', 0.5, 3 * 2 ** 20)],
    profiles: [
      {
        step: 50,
        protocol: 'rtmp',
        summary: summarizeProfile({
          nodes: [
            { id: 1, callFrame: { functionName: '(idle)', url: '', lineNumber: -1 } },
            { id: 2, callFrame: { functionName: 'mux', url: 'file:///x/codecs/mpegts.ts', lineNumber: 9 } },
          ],
          samples: [1, 2, 2, 2],
          timeDeltas: [1e6, 1e6, 1e6, 1e6],
        }),
      },
    ],
    notes: ['a note'],
  };
  const md = renderBench(result);
  t.regex(md, /Machine: 2 cores, Test CPU/);
  t.regex(md, /\| rtmp \| 50 \| tributary \| 50 \| 0 \| 0\.300 \|/);
  t.regex(md, /\| 50 \| 0\.300 \| 0\.200 \| 1\.50× \| 2\.00× \|/);
  t.regex(md, /- a note/);
  t.regex(md, /\| 100\.0% \| 3000 \| `mux .*mpegts\.ts:10` \|/);
  t.regex(md, /3\.0 s busy of 4\.0 s sampled/);
});

test('the CLI refuses targets off this machine and takes the issue’s example flags', (t) => {
  t.throws(() => parseCli(['--target', '10.1.2.3']), { message: /--allow-remote/ });
  t.throws(() => parseCli(['--publishers', 'many']), { message: /--publishers/ });
  const o = parseCli(['--protocol', 'rtmp', '--publishers', '300', '--viewers', '100', '--duration', '60', '--target', '127.0.0.1']);
  if (o === 'help') return t.fail();
  t.like(o, { protocol: 'rtmp', publishers: 300, viewers: 100, durationS: 60, rampS: 6, nice: 10, rtmpUrl: 'rtmp://127.0.0.1:1935/live', hlsUrl: 'http://127.0.0.1:8080/hls/live/{name}/index.m3u8' });
});

test('/proc accounting: stat lines with odd names, and a busy child’s CPU is seen', async (t) => {
  t.like(parseStat('42 (a (b) c) S 7 1 1 0 -1 0 0 0 0 0 150 50 3 2 20 0 1 0 100 0 0'), { pid: 42, ppid: 7, utime: 150, stime: 50, cutime: 3, cstime: 2 });
  const busy = start('sh', ['-c', 'i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done; sleep 5'], { timeoutMs: 30_000 });
  t.teardown(() => busy.kill());
  await new Promise((r) => setTimeout(r, 1500));
  const u = usage(busy.child.pid!);
  t.true(u.cpuSeconds > 0.3, `${u.cpuSeconds} CPU-s`);
  t.true(u.rssBytes > 0);
});

test('npm run loadtest end to end: publishers and a viewer on nginx-rtmp, JSON and markdown reports', async (t) => {
  const nginx = await launchNginxRtmp({ timeoutMs: 90_000 });
  t.teardown(() => nginx.stop());
  const dir = mkdtempSync(join(tmpdir(), 'lt-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'r');
  const r = await run(
    'node',
    ['--import', 'tsx', 'loadtest/cli.ts', '--publishers', '3', '--viewers', '2', '--duration', '8', '--warmup', '6', '--ramp', '1', '--rtmp-url', nginx.rtmpUrl, '--hls-url', nginx.hlsUrl!, '--out', out],
    { timeoutMs: 90_000 },
  );
  t.is(r.code, 0, r.stderr);
  t.true(existsSync(`${out}.md`));
  const report = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as LoadReport;
  t.like(report.publishers, { requested: 3, live: 3, refused: 0, dropped: 0 });
  t.true(report.publishers.mbpsPerStream > 2.3 && report.publishers.mbpsPerStream < 3.2, `${report.publishers.mbpsPerStream} Mbps per stream`);
  t.is(report.hls?.viewers, 2);
  t.true((report.hls?.segments ?? 0) >= 4);
  t.is(report.hls?.failed, 0);
  t.true(report.generator.cpuSeconds > 0);
  t.is(report.generator.nice, 10);
  t.regex(r.stdout, /## The load tool itself/);
  t.regex(r.stderr, /publishers 3\/3 live/);
});
