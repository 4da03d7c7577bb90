/** ffmpeg and ffprobe as publisher, player and validator. */
import { run, start, type Proc } from './process.ts';

export interface PublishOptions {
  seconds: number;
  width?: number;
  height?: number;
  fps?: number;
  /** Also write exactly what was sent to this FLV file, to count the frames sent. */
  copyTo?: string;
  /** Extra seconds allowed beyond real time before the process is killed. */
  slackMs?: number;
  audio?: boolean;
  gop?: number;
}

export function publishArgs(url: string, o: PublishOptions): string[] {
  const w = o.width ?? 640;
  const h = o.height ?? 360;
  const fps = o.fps ?? 30;
  const args = ['-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', `testsrc2=size=${w}x${h}:rate=${fps}`];
  if (o.audio !== false) args.push('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000');
  args.push('-t', String(o.seconds), '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', String(o.gop ?? fps * 2), '-pix_fmt', 'yuv420p');
  if (o.audio !== false) args.push('-c:a', 'aac', '-b:a', '128k');
  if (o.copyTo) args.push('-map', '0:v', ...(o.audio !== false ? ['-map', '1:a'] : []), '-f', 'tee', `[f=flv:onfail=abort]${url}|[f=flv]${o.copyTo}`);
  else args.push('-f', 'flv', url);
  return args;
}

export function publish(url: string, o: PublishOptions): Proc {
  return start('ffmpeg', publishArgs(url, o), { timeoutMs: o.seconds * 1000 + (o.slackMs ?? 20_000) });
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
