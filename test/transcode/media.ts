/** Media for the transcode tests: source frames out of files ffmpeg makes, and files out of transcoded frames for ffprobe. */
import { readFileSync, writeFileSync } from 'node:fs';
import { adtsHeader, aacCodecString, parseAudioSpecificConfig } from '../../codecs/aac.ts';
import { audioTagHeader, flvFileHeader, flvTag, parseAudioTag, parseVideoTag, readFlvFile, videoTagHeader } from '../../codecs/flv.ts';
import { avcCodecString, parseAvcC, parseSps } from '../../codecs/h264.ts';
import { parseOpusPacket } from '../../codecs/opus.ts';
import type { AudioTrack, Track, VideoTrack } from '../../codecs/track.ts';
import type { InputFrame, OutputFrame } from '../../codecs/transcode/pipeline.ts';
import { run } from '../helpers/process.ts';
import { readOggPackets } from './ogg.ts';

export interface SourceMedia {
  video?: VideoTrack;
  audio?: AudioTrack;
  frames: InputFrame[];
}

/** The tracks and frames of an FLV file (H.264 + AAC), on the 90 kHz clock, as RTMP ingest would make them. */
export function flvMedia(path: string): SourceMedia {
  const out: SourceMedia = { frames: [] };
  for (const tag of readFlvFile(readFileSync(path))) {
    if (tag.type === 9) {
      const h = parseVideoTag(tag.body);
      const payload = Buffer.from(tag.body.subarray(h.payloadOffset));
      if (h.packetType === 'config') {
        const sps = parseSps(parseAvcC(payload).sps[0]!);
        out.video = { kind: 'video', id: 1, codec: 'h264', config: payload, width: sps.width, height: sps.height, codecString: avcCodecString(sps) };
      } else if (h.packetType === 'nalu' && payload.length > 0) {
        out.frames.push({ track: 1, kind: 'video', dts: tag.timestamp * 90, pts: (tag.timestamp + h.compositionTime) * 90, keyframe: h.frameType === 1, data: payload });
      }
    } else if (tag.type === 8) {
      const h = parseAudioTag(tag.body);
      const payload = Buffer.from(tag.body.subarray(h.payloadOffset));
      if (h.packetType === 'config') {
        const asc = parseAudioSpecificConfig(payload);
        out.audio = { kind: 'audio', id: 2, codec: 'aac', config: payload, sampleRate: asc.sampleRate, channels: asc.channels, codecString: aacCodecString(asc) };
      } else if (payload.length > 0) out.frames.push({ track: 2, kind: 'audio', dts: tag.timestamp * 90, pts: tag.timestamp * 90, keyframe: true, data: payload });
    }
  }
  return out;
}

export interface OpusMedia {
  head: Buffer;
  /** Each packet with the 90 kHz time of its first sample (pre-skip included: the first is at 0). */
  packets: Array<{ data: Buffer; pts: number; samples: number }>;
}

/** The OpusHead and audio packets of an Ogg Opus file. */
export function oggOpus(path: string): OpusMedia {
  const packets = readOggPackets(readFileSync(path));
  const head = packets[0]!.data;
  if (head.toString('latin1', 0, 8) !== 'OpusHead') throw new Error(`${path} is not Ogg Opus`);
  let samples = 0;
  const out: OpusMedia['packets'] = [];
  for (const p of packets.slice(2)) {
    const n = parseOpusPacket(p.data).samples;
    out.push({ data: p.data, pts: Math.round(samples * 1.875), samples: n });
    samples += n;
  }
  return { head, packets: out };
}

/** An ADTS file of raw AAC frames. */
export function writeAdts(path: string, asc: Buffer, frames: readonly Uint8Array[]): void {
  const c = parseAudioSpecificConfig(asc);
  writeFileSync(path, Buffer.concat(frames.flatMap((f) => [adtsHeader(c, f.length), Buffer.from(f)])));
}

/** An FLV file of one rendition's tracks and frames (what RTMP would carry). */
export function writeFlv(path: string, tracks: readonly Track[], frames: readonly OutputFrame[]): void {
  const video = tracks.find((t): t is VideoTrack => t.kind === 'video');
  const audio = tracks.find((t): t is AudioTrack => t.kind === 'audio');
  const parts = [flvFileHeader({ audio: audio !== undefined, video: video !== undefined })];
  if (video) parts.push(flvTag(9, 0, Buffer.concat([videoTagHeader({ keyframe: true, codecId: 7, packetType: 'config', compositionTime: 0 }), video.config])));
  if (audio) parts.push(flvTag(8, 0, Buffer.concat([audioTagHeader({ packetType: 'config' }), audio.config])));
  for (const f of frames) {
    const ms = Math.round(f.dts / 90);
    if (f.kind === 'video') {
      parts.push(flvTag(9, ms, Buffer.concat([videoTagHeader({ keyframe: f.keyframe, codecId: 7, packetType: 'nalu', compositionTime: Math.round((f.pts - f.dts) / 90) }), f.data])));
    } else parts.push(flvTag(8, ms, Buffer.concat([audioTagHeader({ packetType: 'raw' }), f.data])));
  }
  writeFileSync(path, Buffer.concat(parts));
}

export interface ProbedStream {
  codec: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
  frames: number;
  startTime: number;
}

/** Decodes every frame of a file or URL with ffprobe (-count_frames): codec, size, frames decoded, start time. */
export async function probeFrames(input: string): Promise<ProbedStream[]> {
  const r = await run(
    'ffprobe',
    ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_name,width,height,sample_rate,channels,nb_read_frames,start_time', '-of', 'json', input],
    { timeoutMs: 60_000 },
  );
  if (r.code !== 0) throw new Error(`ffprobe ${input} failed: ${r.stderr}`);
  const json = JSON.parse(r.stdout) as {
    streams: Array<{ codec_name: string; width?: number; height?: number; sample_rate?: string; channels?: number; nb_read_frames?: string; start_time?: string }>;
  };
  return json.streams.map((s) => ({
    codec: s.codec_name,
    ...(s.width !== undefined ? { width: s.width, height: s.height } : {}),
    ...(s.sample_rate !== undefined ? { sampleRate: Number(s.sample_rate), channels: s.channels } : {}),
    frames: Number(s.nb_read_frames ?? 0),
    startTime: Number(s.start_time ?? 'NaN'),
  }));
}

/**
 * ffmpeg decodes `input` completely; returns its error output (empty when clean). Frames keep their own
 * times (-fps_mode passthrough): the null muxer's default constant-rate conversion would otherwise call
 * two WebRTC frames that round to the same 1/30 s tick non-monotonic.
 */
export async function decodeErrors(input: string): Promise<string> {
  const r = await run('ffmpeg', ['-v', 'error', '-i', input, '-fps_mode', 'passthrough', '-f', 'null', '-'], { timeoutMs: 60_000 });
  return r.code === 0 ? r.stderr.trim() : `exit ${r.code}: ${r.stderr.trim()}`;
}
