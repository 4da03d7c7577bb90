/** ffmpeg and ffprobe as publisher, player and validator. */
import { run, start, type Proc } from './process.ts';

export interface PublishOptions {
  seconds: number;
  width?: number;
  height?: number;
  fps?: number;
  /** Extra seconds allowed beyond real time before the process is killed. */
  slackMs?: number;
  audio?: boolean;
  gop?: number;
}

function sourceArgs(o: PublishOptions, realtime: boolean): string[] {
  const w = o.width ?? 640;
  const h = o.height ?? 360;
  const fps = o.fps ?? 30;
  const args = ['-hide_banner', '-loglevel', 'error', ...(realtime ? ['-re'] : []), '-f', 'lavfi', '-i', `testsrc2=size=${w}x${h}:rate=${fps}`];
  if (o.audio !== false) args.push('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000');
  args.push('-t', String(o.seconds), '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', String(o.gop ?? fps * 2), '-pix_fmt', 'yuv420p');
  if (o.audio !== false) args.push('-c:a', 'aac', '-b:a', '128k');
  return args;
}

/** ffmpeg encoding a test pattern (and a tone) live to an RTMP URL. */
export function publish(url: string, o: PublishOptions): Proc {
  return start('ffmpeg', [...sourceArgs(o, true), '-f', 'flv', url], { timeoutMs: o.seconds * 1000 + (o.slackMs ?? 20_000) });
}

/**
 * Encodes the same pattern into an FLV file as fast as it can: the file is then exactly what a
 * publishFile() sends, so its packets are the frames a server must have received.
 */
export async function encodeFlv(path: string, o: PublishOptions): Promise<void> {
  const r = await run('ffmpeg', ['-y', ...sourceArgs(o, false), '-f', 'flv', path], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`ffmpeg could not make ${path}: ${r.stderr}`);
}

/** ffmpeg sending an FLV file in real time, unchanged (-c copy). */
export function publishFile(url: string, path: string, seconds: number): Proc {
  return start('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-i', path, '-c', 'copy', '-f', 'flv', url], { timeoutMs: seconds * 1000 + 30_000 });
}

export interface StreamCount {
  codec: string;
  width?: number;
  height?: number;
  packets: number;
}

/** Packets per stream of a file or URL, by codec, as ffprobe counts them. */
export async function countPackets(input: string, timeoutMs = 30_000): Promise<StreamCount[]> {
  const r = await run(
    'ffprobe',
    ['-v', 'error', '-count_packets', '-show_entries', 'stream=codec_type,codec_name,width,height,nb_read_packets', '-of', 'json', input],
    { timeoutMs },
  );
  if (r.code !== 0) throw new Error(`ffprobe ${input} failed: ${r.stderr}`);
  const json = JSON.parse(r.stdout) as { streams: Array<{ codec_name: string; width?: number; height?: number; nb_read_packets?: string }> };
  return json.streams.map((s) => ({ codec: s.codec_name, width: s.width, height: s.height, packets: Number(s.nb_read_packets ?? 0) }));
}

/** The distinct codecs of a file or URL, without reading it through (a live playlist never ends). */
export async function probeCodecs(input: string, timeoutMs = 30_000): Promise<string[]> {
  const r = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', input], { timeoutMs });
  if (r.code !== 0) throw new Error(`ffprobe ${input} failed (${r.code ?? r.signal}): ${r.stderr}`);
  // ffprobe lists HLS streams twice: in their program and on their own.
  return [...new Set(r.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== ''))];
}
