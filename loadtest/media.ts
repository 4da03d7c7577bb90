/**
 * The media the publishers replay, made once with ffmpeg and cached: an FLV for RTMP (H.264 High, AAC)
 * and, for WHIP, a raw Annex B H.264 (constrained baseline, as browsers send) plus an Ogg Opus file.
 * The content is a test pattern with light temporal noise so the encoder really spends its bitrate.
 * The clip length is a whole number of keyframe intervals, so looping keeps the keyframe cadence.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { run } from './proc.ts';

export interface MediaSpec {
  width: number;
  height: number;
  fps: number;
  /** Seconds between keyframes. */
  keyframeSeconds: number;
  /** Clip length; rounded up to whole keyframe intervals. */
  seconds: number;
  videoKbps: number;
  audioKbps: number;
}

export const RTMP_MEDIA: MediaSpec = { width: 1280, height: 720, fps: 30, keyframeSeconds: 2, seconds: 16, videoKbps: 2500, audioKbps: 128 };
export const WHIP_MEDIA: MediaSpec = { width: 1280, height: 720, fps: 30, keyframeSeconds: 2, seconds: 16, videoKbps: 900, audioKbps: 64 };

export function defaultCacheDir(): string {
  return process.env.TRIBUTARY_LOADTEST_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'tributary-loadtest');
}

function clipSeconds(s: MediaSpec): number {
  return Math.max(1, Math.ceil(s.seconds / s.keyframeSeconds)) * s.keyframeSeconds;
}

function tag(s: MediaSpec): string {
  return `${s.width}x${s.height}-${s.fps}fps-k${s.keyframeSeconds}-${s.videoKbps}k-${s.audioKbps}k-${clipSeconds(s)}s`;
}

function videoArgs(s: MediaSpec): string[] {
  const gop = String(Math.round(s.fps * s.keyframeSeconds));
  return [
    '-vf', 'noise=alls=8:allf=t',
    '-c:v', 'libx264', '-preset', 'veryfast', '-g', gop, '-keyint_min', gop, '-sc_threshold', '0',
    '-b:v', `${s.videoKbps}k`, '-maxrate', `${s.videoKbps}k`, '-bufsize', `${s.videoKbps * 2}k`, '-pix_fmt', 'yuv420p',
  ];
}

const pattern = (s: MediaSpec): string[] => ['-f', 'lavfi', '-i', `testsrc2=size=${s.width}x${s.height}:rate=${s.fps}`];
const tone = ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'];

const making = new Map<string, Promise<void>>();

/** Runs ffmpeg into a temporary name and renames it into place, so a cache file is always complete. */
function make(out: string, args: string[], timeoutMs: number): Promise<void> {
  let p = making.get(out);
  if (!p) {
    p = makeOnce(out, args, timeoutMs).finally(() => making.delete(out));
    making.set(out, p);
  }
  return p;
}

async function makeOnce(out: string, args: string[], timeoutMs: number): Promise<void> {
  if (existsSync(out)) return;
  const tmp = `${out}.part-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const r = await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...args, tmp], { timeoutMs, nice: 10 });
    if (r.code !== 0) throw new Error(`ffmpeg could not make ${out} (exit ${r.code ?? r.signal}): ${r.stderr.trim().slice(-500)}`);
    renameSync(tmp, out);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** The FLV that RTMP publishers replay; made on first use. */
export async function ensureRtmpMedia(cacheDir = defaultCacheDir(), spec: MediaSpec = RTMP_MEDIA): Promise<string> {
  mkdirSync(cacheDir, { recursive: true });
  const out = join(cacheDir, `rtmp-${tag(spec)}.flv`);
  if (existsSync(out)) return out;
  await make(
    out,
    [...pattern(spec), ...tone, '-t', String(clipSeconds(spec)), ...videoArgs(spec), '-c:a', 'aac', '-b:a', `${spec.audioKbps}k`, '-ac', '2', '-f', 'flv'],
    300_000,
  );
  return out;
}

export interface WhipMedia {
  /** Annex B H.264, constrained baseline, SPS/PPS before every IDR. */
  h264: string;
  /** Ogg Opus, 20 ms frames, 48 kHz stereo. */
  opus: string;
  fps: number;
}

/** The H.264 and Opus that WHIP publishers packetize into RTP; made on first use. */
export async function ensureWhipMedia(cacheDir = defaultCacheDir(), spec: MediaSpec = WHIP_MEDIA): Promise<WhipMedia> {
  mkdirSync(cacheDir, { recursive: true });
  const h264 = join(cacheDir, `whip-${tag(spec)}.h264`);
  const opus = join(cacheDir, `whip-${tag(spec)}.ogg`);
  const t = String(clipSeconds(spec));
  if (!existsSync(h264)) await make(h264, [...pattern(spec), '-t', t, ...videoArgs(spec), '-profile:v', 'baseline', '-f', 'h264'], 300_000);
  if (!existsSync(opus)) await make(opus, [...tone, '-t', t, '-c:a', 'libopus', '-b:a', `${spec.audioKbps}k`, '-ac', '2', '-frame_duration', '20', '-f', 'ogg'], 120_000);
  return { h264, opus, fps: spec.fps };
}
