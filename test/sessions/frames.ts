/** Test frames and tracks for the session tests (not a test file itself). */
import type { AudioTrack, Frame, VideoTrack } from '../../sessions/frame.ts';
import type { BufferPool } from '../../sessions/pool.ts';

export const VIDEO: VideoTrack = {
  kind: 'video',
  id: 1,
  codec: 'h264',
  config: Buffer.from([1, 0x64, 0, 0x1f]),
  width: 1280,
  height: 720,
  codecString: 'avc1.64001f',
};

export const AUDIO: AudioTrack = {
  kind: 'audio',
  id: 2,
  codec: 'aac',
  config: Buffer.from([0x11, 0x90]),
  sampleRate: 48000,
  channels: 2,
  codecString: 'mp4a.40.2',
};

/** A video frame; `dts` also goes into the first payload bytes so tests can identify it. */
export function video(pool: BufferPool, dts: number, keyframe: boolean, size = 100): Frame {
  const data = pool.alloc(size);
  data.bytes.fill(0);
  if (size >= 4) data.bytes.writeUInt32BE(dts, 0);
  return { track: VIDEO.id, kind: 'video', codec: 'h264', dts, pts: dts, keyframe, data };
}

export function audio(pool: BufferPool, dts: number, size = 50): Frame {
  const data = pool.alloc(size);
  data.bytes.fill(0);
  if (size >= 4) data.bytes.writeUInt32BE(dts, 0);
  return { track: AUDIO.id, kind: 'audio', codec: 'aac', dts, pts: dts, keyframe: true, data };
}
