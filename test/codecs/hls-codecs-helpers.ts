/**
 * Shared by the h264/aac/mpegts/fmp4/m3u8 tests: ffmpeg/ffprobe runs with deadlines, fixture
 * extraction from ffprobe's packet dumps, a seeded PRNG and a mutation fuzzer.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import { prng } from '../helpers/prng.ts';

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a command with a deadline; the child is killed on expiry and always reaped before this resolves. */
export async function run(cmd: string, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  const signal = AbortSignal.timeout(timeoutMs);
  const child = spawn(cmd, args, { signal, stdio: ['ignore', 'pipe', 'pipe'], killSignal: 'SIGKILL' });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  const code = await new Promise<number | null>((resolve) => {
    child.on('error', () => {
      /* reported through 'close' (an abort still closes) */
    });
    child.on('close', (c) => resolve(c));
  });
  if (signal.aborted) throw new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms`);
  return { code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() };
}

/** ffmpeg that must succeed. */
export async function ffmpeg(...args: string[]): Promise<void> {
  const r = await run('ffmpeg', ['-nostdin', '-hide_banner', '-v', 'error', '-y', ...args]);
  if (r.code !== 0) throw new Error(`ffmpeg ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
}

async function ffprobeJson(...args: string[]): Promise<unknown> {
  const r = await run('ffprobe', ['-v', 'error', '-of', 'json', ...args]);
  if (r.code !== 0) throw new Error(`ffprobe ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout.toString());
}

/** A temporary folder (on tmpfs when there is one) removed when the test ends. */
export async function tempDir(t: ExecutionContext): Promise<string> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = await mkdtemp(join(base, 'tributary-codecs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface ProbedStream {
  codec_name: string;
  width?: number;
  height?: number;
  nb_read_frames?: string;
  extradata?: string;
}

/** Streams with decoded frame counts. */
export async function probeStreams(file: string): Promise<ProbedStream[]> {
  const j = (await ffprobeJson('-count_frames', '-show_entries', 'stream=codec_name,width,height,nb_read_frames', file)) as { streams: ProbedStream[] };
  return j.streams;
}

/** What `ffmpeg -v error -i file -f null -` prints: empty when the file decodes cleanly. */
export async function decodeErrors(file: string): Promise<string> {
  const r = await run('ffmpeg', ['-nostdin', '-hide_banner', '-v', 'error', '-i', file, '-f', 'null', '-']);
  return `${r.code === 0 ? '' : `exit ${r.code}\n`}${r.stderr}`;
}

/** Bytes from ffprobe's hexdump format ("00000000: 0164 000d ...  ascii"). */
export function fromHexdump(dump: string): Buffer {
  const parts: string[] = [];
  for (const line of dump.split('\n')) {
    if (line.length < 10) continue;
    parts.push(line.slice(10).split('  ')[0]!.replaceAll(' ', ''));
  }
  return Buffer.from(parts.join(''), 'hex');
}

export interface Packet {
  stream: number;
  pts: number;
  dts: number;
  keyframe: boolean;
  data: Buffer;
}

/** Every packet of a file, in file order, with its bytes (ffprobe -show_packets -show_data). */
export async function readPackets(file: string): Promise<Packet[]> {
  const j = (await ffprobeJson('-show_packets', '-show_data', file)) as {
    packets: { stream_index: number; pts: number; dts: number; flags: string; data: string }[];
  };
  return j.packets.map((p) => ({ stream: p.stream_index, pts: p.pts, dts: p.dts, keyframe: p.flags.startsWith('K'), data: fromHexdump(p.data) }));
}

/** Each stream's extradata and time base. */
export async function readStreams(file: string): Promise<{ codec: string; extradata: Buffer; timeBase: [number, number]; width?: number; height?: number }[]> {
  const j = (await ffprobeJson('-show_streams', '-show_data', file)) as {
    streams: { codec_name: string; extradata?: string; time_base: string; width?: number; height?: number }[];
  };
  return j.streams.map((s) => {
    const [num, den] = s.time_base.split('/').map(Number) as [number, number];
    const out: { codec: string; extradata: Buffer; timeBase: [number, number]; width?: number; height?: number } = {
      codec: s.codec_name,
      extradata: fromHexdump(s.extradata ?? ''),
      timeBase: [num, den],
    };
    if (s.width !== undefined) out.width = s.width;
    if (s.height !== undefined) out.height = s.height;
    return out;
  });
}

/** A mutated copy of `seed`: bit flips, byte sets, truncation, insertion, deletion, duplication. */
export function mutate(seed: Uint8Array, rnd: () => number): Uint8Array {
  const int = (n: number) => Math.floor(rnd() * n);
  let b = Uint8Array.from(seed);
  const edits = 1 + int(4);
  for (let e = 0; e < edits; e++) {
    const at = int(b.length + 1);
    switch (int(7)) {
      case 0:
        if (b.length) b[at % b.length]! ^= 1 << int(8);
        break;
      case 1:
        if (b.length) b[at % b.length] = [0, 0xff, 0x7f, 0x80, 1, 3][int(6)]!;
        break;
      case 2:
        b = b.slice(0, at);
        break;
      case 3: {
        const ins = Uint8Array.from({ length: 1 + int(8) }, () => int(256));
        b = Uint8Array.from([...b.subarray(0, at), ...ins, ...b.subarray(at)]);
        break;
      }
      case 4:
        b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + 1 + int(8))]);
        break;
      case 5:
        if (b.length) b[at % b.length] = int(256);
        break;
      default: {
        const from = int(b.length + 1);
        b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(from, from + int(16)), ...b.subarray(at)]);
      }
    }
  }
  return b;
}

/**
 * Runs `fn` on `count` inputs (mostly mutations of the seeds, some purely random) and fails the test on
 * any exception other than CodecError. Returns how many were accepted and how long it took.
 */
export function fuzz(
  t: ExecutionContext,
  seeds: readonly Uint8Array[],
  fn: (input: Uint8Array) => void,
  opts: { count: number; seed: number; format: string },
): { accepted: number; rejected: number; ms: number } {
  const rnd = prng(opts.seed);
  let accepted = 0;
  let rejected = 0;
  const start = performance.now();
  for (let i = 0; i < opts.count; i++) {
    const input = i % 10 === 9 ? Uint8Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)) : mutate(seeds[i % seeds.length]!, rnd);
    try {
      fn(input);
      accepted++;
    } catch (e) {
      if (!(e instanceof CodecError)) {
        t.fail(`input ${i} (${Buffer.from(input).toString('hex').slice(0, 200)}) threw ${String(e)}`);
        throw e;
      }
      if (e.format !== opts.format) t.fail(`input ${i} threw a CodecError for ${e.format}, expected ${opts.format}`);
      rejected++;
    }
  }
  return { accepted, rejected, ms: performance.now() - start };
}
