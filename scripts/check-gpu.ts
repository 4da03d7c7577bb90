/**
 * npm run check:gpu: runs the GPU transcode path end to end on this machine and prints frames per
 * second, the frame pool's size and the device memory it holds. Exits non-zero, saying why, when there
 * is no usable GPU or when the run goes wrong.
 *
 *   npm run check:gpu                          one 720p -> 480p transcode on the GPU (NVDEC, scale_cuda, NVENC)
 *   npm run check:gpu -- --parallel 8          eight at once, each in its own worker thread, as the gateway runs them
 *   npm run check:gpu -- --cpu                 the same run on the CPU backend (libavcodec, swscale, libx264), to compare
 *   options: --seconds N (source length, default 10)  --height H (rendition, default 480)  --source WxH (default 1280x720)
 *
 * The source is made here with node-av (testsrc2 encoded by libx264), so the machine needs no ffmpeg CLI.
 * Each transcode runs in the gateway's own worker (gateway/transcode/worker.ts) with the same pipeline.
 */
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { VideoTrack } from '../codecs/track.ts';
import { FramePool } from '../codecs/transcode/frame-pool.ts';
import { loadNodeAv } from '../codecs/transcode/native.ts';
import type { PipelineStats } from '../codecs/transcode/pipeline.ts';
import { VideoEncoder } from '../codecs/transcode/video-encoder.ts';
import { probeCuda } from '../gateway/transcode/probe.ts';
import { WorkerHost } from '../gateway/transcode/worker-host.ts';

const { values: args } = parseArgs({
  options: {
    cpu: { type: 'boolean', default: false },
    parallel: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '10' },
    height: { type: 'string', default: '480' },
    source: { type: 'string', default: '1280x720' },
    device: { type: 'string' },
  },
});

function fail(message: string, code = 1): never {
  process.stderr.write(`check:gpu: ${message}\n`);
  process.exit(code);
}

const FPS = 30;
const parallel = Number(args.parallel);
const seconds = Number(args.seconds);
const height = Number(args.height);
const sourceSize = /^(\d+)x(\d+)$/.exec(args.source ?? '');
if (!Number.isInteger(parallel) || parallel < 1 || parallel > 256) fail('--parallel takes 1 to 256');
if (!(seconds > 0 && seconds <= 120)) fail('--seconds takes a number up to 120');
if (!Number.isInteger(height) || height < 16) fail('--height takes an integer of at least 16');
if (!sourceSize) fail('--source takes WIDTHxHEIGHT');
const [srcW, srcH] = [Number(sourceSize[1]), Number(sourceSize[2])];
const backend = args.cpu ? 'cpu' : 'gpu';

interface Encoded {
  track: VideoTrack;
  frames: Array<{ dts: number; pts: number; keyframe: boolean; data: Buffer }>;
}

/** `seconds` of testsrc2 at the source size, encoded by libx264 with a keyframe every 2 s. */
async function makeSource(): Promise<Encoded> {
  const av = await loadNodeAv();
  const { lib } = av;
  const pool = FramePool.open(av, { backend: 'cpu', size: 4 });
  const graph = new lib.FilterGraph();
  graph.alloc();
  const encoder = new VideoEncoder(av, pool, { width: srcW, height: srcH, bitrate: 4_000_000, fps: FPS, gopFrames: FPS * 2, preset: 'veryfast', threads: 0 });
  try {
    const src = graph.createFilter(lib.Filter.getByName('testsrc2')!, 'src', `size=${srcW}x${srcH}:rate=${FPS}`);
    const fmt = graph.createFilter(lib.Filter.getByName('format')!, 'fmt', 'pix_fmts=yuv420p');
    const sink = graph.createFilter(lib.Filter.getByName('buffersink')!, 'out', null);
    if (!src || !fmt || !sink) throw new Error('cannot build the testsrc2 graph');
    if (src.link(0, fmt, 0) < 0 || fmt.link(0, sink, 0) < 0 || graph.configSync() < 0) throw new Error('cannot configure the testsrc2 graph');
    const frames: Encoded['frames'] = [];
    let track: VideoTrack | undefined;
    const total = Math.round(seconds * FPS);
    const out = (p: { data: Buffer; dts: number; pts: number; keyframe: boolean }): void => void frames.push(p);
    for (let i = 0; i < total; i++) {
      const slot = pool.acquire();
      try {
        if (sink.buffersinkGetFrameSync(slot.frame) < 0) throw new Error('testsrc2 gave no frame');
        const pts = Math.round((i * 90_000) / FPS);
        encoder.encode(slot, pts, i % (FPS * 2) === 0, out, (t) => {
          track = { kind: 'video', id: 1, codec: 'h264', config: t.config, width: t.width, height: t.height, codecString: t.codecString };
        });
      } finally {
        slot.release();
      }
    }
    encoder.flush(out);
    if (!track) throw new Error('the source encoder never opened');
    return { track, frames };
  } finally {
    encoder.close();
    graph.free();
    pool.close();
  }
}

interface RunResult {
  framesOut: number;
  startedAt: number;
  endedAt: number;
  wallMs: number;
  stats: PipelineStats | undefined;
  error?: string;
}

/** One transcode in a gateway worker thread: every source frame in, until it reports done. */
function transcode(source: Encoded): Promise<RunResult> {
  return new Promise((resolve) => {
    let framesOut = 0;
    let stats: PipelineStats | undefined;
    let error: string | undefined;
    let started = 0;
    const host: WorkerHost = new WorkerHost(
      {
        mode: 'transcode',
        options: {
          backend,
          poolSize: 16,
          ...(args.device !== undefined ? { device: args.device } : {}),
          renditions: [{ name: `${height}p`, height, bitrate: 1_500_000 }],
          audioBitrate: 128_000,
          preset: 'veryfast',
          threads: 1,
          gopSeconds: 2,
        },
      },
      {
        onMessage: (m) => {
          if (m.type === 'ready') {
            started = performance.now();
            host.post({ type: 'track', track: source.track });
            for (const f of source.frames) {
              const data = new Uint8Array(f.data).slice().buffer;
              host.post({ type: 'frame', frame: { track: 1, kind: 'video', dts: f.dts, pts: f.pts, keyframe: f.keyframe, data } }, [data]);
            }
            host.post({ type: 'end' });
          } else if (m.type === 'frame') framesOut++;
          else if (m.type === 'done') stats = m.stats;
          else if (m.type === 'error') error = `${m.stage}: ${m.message}`;
        },
        onExit: (code, err) => {
          const endedAt = performance.now();
          if (err && !error) error = err.message;
          if (code !== 0 && !error) error = `worker exited with code ${code}`;
          resolve({ framesOut, startedAt: started, endedAt, wallMs: endedAt - started, stats, ...(error !== undefined ? { error } : {}) });
        },
      },
    );
    const timer = setTimeout(() => void host.terminate(), 300_000);
    void host.exited.finally(() => clearTimeout(timer));
  });
}

function nvidiaSmi(): string | undefined {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.used,memory.total', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

const mib = (b: number): string => `${(b / 1024 / 1024).toFixed(1)} MiB`;

async function main(): Promise<void> {
  if (backend === 'gpu') {
    const probed = await probeCuda(args.device);
    if (!probed.ok) fail(`no usable GPU: ${probed.reason}. Run with --cpu to measure the CPU path instead.`, 2);
    console.log(`GPU: ${probed.reason}`);
    const smi = nvidiaSmi();
    if (smi) console.log(`nvidia-smi: ${smi}`);
  }
  console.log(`source: ${seconds} s of ${srcW}x${srcH} at ${FPS} fps, H.264 (made with libx264)...`);
  const source = await makeSource();
  const frames = source.frames.length;
  console.log(`transcoding ${parallel} x ${srcW}x${srcH} -> ${height}p on the ${backend.toUpperCase()} backend (${backend === 'gpu' ? 'NVDEC, scale_cuda, h264_nvenc' : 'libavcodec, swscale, libx264 veryfast, one thread each'}), ${cpus().length} CPU cores here`);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const smiDuring: string[] = [];
  const sampler = backend === 'gpu' ? setInterval(() => {
    const s = nvidiaSmi();
    if (s) smiDuring.push(s);
  }, 1000) : undefined;
  const results = await Promise.all(Array.from({ length: parallel }, () => transcode(source)));
  clearInterval(sampler);
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const failed = results.filter((r) => r.error !== undefined || r.framesOut !== frames || r.stats?.pool.inUse !== 0);
  for (const [i, r] of results.entries()) {
    const p = r.stats?.pool;
    console.log(
      `  #${i + 1}: ${r.framesOut}/${frames} frames in ${r.wallMs.toFixed(0)} ms = ${((r.framesOut * 1000) / r.wallMs).toFixed(1)} fps; pool ${p ? `${p.size} frames, peak ${p.peakInUse} in use, ${p.inUse} in use at the end, device memory ${mib(p.deviceMemoryBytes)}` : 'no stats'}${r.error ? `; ERROR ${r.error}` : ''}`,
    );
  }
  const total = results.reduce((n, r) => n + r.framesOut, 0);
  // From the first worker ready to the last one done: thread start-up and node-av loading excluded.
  const span = Math.max(...results.map((r) => r.endedAt)) - Math.min(...results.map((r) => r.startedAt));
  const aggregate = (total * 1000) / span;
  const deviceBytes = results.reduce((n, r) => n + (r.stats?.pool.deviceMemoryBytes ?? 0), 0);
  console.log(`frames per second: ${aggregate.toFixed(1)} in all, ${(aggregate / parallel).toFixed(1)} per transcode (${(aggregate / parallel / FPS).toFixed(1)}x real time at ${FPS} fps)`);
  console.log(`pool size: ${results[0]?.stats?.pool.size ?? '?'} frames per transcode; device memory held by the frame pools: ${mib(deviceBytes)} (${backend === 'gpu' ? 'surface pools, from their sizes' : 'none on the CPU backend'})`);
  console.log(`host CPU: ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms over ${wallMs.toFixed(0)} ms wall (${((cpu.user + cpu.system) / 10 / wallMs).toFixed(0)}% of one core)`);
  if (smiDuring.length) {
    const used = (s: string): number => Number(/,\s*(\d+) MiB,/.exec(s)?.[1] ?? 0);
    const peak = smiDuring.reduce((a, b) => (used(b) > used(a) ? b : a));
    console.log(`nvidia-smi while running, the sample with the most memory used: ${peak}`);
  }
  if (failed.length) fail(`${failed.length} of ${parallel} transcodes did not deliver every frame with the pool back to 0`);
}

await main();
