/**
 * Cutting frames into HLS segments, for one container. A SegmentWriter takes frames of the
 * current segment and yields the segment's bytes when it is closed.
 */
import { initSegment, mediaSegment } from '../../codecs/fmp4.ts';
import { NalType, parseAvcC } from '../../codecs/h264.ts';
import { TsMuxer } from '../../codecs/mpegts.ts';
import type { Sample, Track } from '../../codecs/track.ts';
import type { Frame } from '../../sessions/frame.ts';

export type HlsFormat = 'ts' | 'fmp4';

export interface SegmentWriter {
  readonly extension: 'ts' | 'm4s';
  /** The init segment (fMP4 only). */
  readonly init: Buffer | undefined;
  add(frame: Frame): void;
  /**
   * The bytes of the segment so far, as pieces laid end to end (the caller copies them once into
   * the pool), and a fresh start for the next one. `nextDts` ends the last sample.
   */
  finish(sequence: number, nextDts: number | undefined): Buffer[];
  /** Releases anything held (frames not yet written). */
  dispose(): void;
}

function sampleOf(frame: Frame): Sample {
  return { track: frame.track, dts: frame.dts, pts: frame.pts, keyframe: frame.keyframe, data: frame.data.bytes };
}

class TsWriter implements SegmentWriter {
  readonly extension = 'ts';
  readonly init = undefined;
  readonly #mux: TsMuxer;
  #chunks: Buffer[] = [];

  constructor(tracks: readonly Track[]) {
    this.#mux = new TsMuxer(tracks);
  }

  add(frame: Frame): void {
    // The muxer copies what it needs into its own packets, so the frame is not kept.
    this.#chunks.push(this.#mux.mux(sampleOf(frame)));
  }

  finish(): Buffer[] {
    const out = this.#chunks;
    this.#chunks = [];
    return out;
  }

  dispose(): void {
    this.#chunks = [];
  }
}

/** SPS and PPS of an avcC as length-prefixed NAL units, to put in front of each IDR. */
function parameterSets(avcC: Buffer): Buffer {
  const { sps, pps } = parseAvcC(avcC);
  const parts: Buffer[] = [];
  for (const nal of [...sps, ...pps]) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(nal.length);
    parts.push(len, nal);
  }
  return Buffer.concat(parts);
}

function hasSps(avcc: Uint8Array): boolean {
  return avcc.length > 4 && (avcc[4]! & 0x1f) === NalType.SPS;
}

class Fmp4Writer implements SegmentWriter {
  readonly extension = 'm4s';
  readonly init: Buffer;
  readonly #tracks: readonly Track[];
  /** In-band parameter sets per H.264 track (the init segment's avc3 entry allows them). */
  readonly #paramSets = new Map<number, Buffer>();
  #frames = new Map<number, Frame[]>();

  constructor(tracks: readonly Track[]) {
    this.#tracks = tracks;
    this.init = initSegment(tracks);
    for (const t of tracks) if (t.kind === 'video' && t.codec === 'h264') this.#paramSets.set(t.id, parameterSets(t.config));
  }

  #sample(frame: Frame): Sample {
    const ps = frame.keyframe ? this.#paramSets.get(frame.track) : undefined;
    if (!ps || hasSps(frame.data.bytes)) return sampleOf(frame);
    return { ...sampleOf(frame), data: Buffer.concat([ps, frame.data.bytes]) };
  }

  add(frame: Frame): void {
    frame.data.retain();
    let list = this.#frames.get(frame.track);
    if (!list) this.#frames.set(frame.track, (list = []));
    list.push(frame);
  }

  finish(sequence: number, nextDts: number | undefined): Buffer[] {
    const parts = [];
    for (const track of this.#tracks) {
      const frames = this.#frames.get(track.id);
      if (!frames?.length) continue;
      // The next segment starts on a video keyframe, which ends the video track's last sample.
      const part = { track, samples: frames.map((f) => this.#sample(f)), ...(track.kind === 'video' && nextDts !== undefined ? { nextDts } : {}) };
      parts.push(part);
    }
    try {
      return parts.length ? [mediaSegment(sequence, parts)] : [];
    } finally {
      this.dispose();
    }
  }

  dispose(): void {
    for (const list of this.#frames.values()) for (const f of list) f.data.release();
    this.#frames = new Map();
  }
}

export function createSegmentWriter(format: HlsFormat, tracks: readonly Track[]): SegmentWriter {
  return format === 'ts' ? new TsWriter(tracks) : new Fmp4Writer(tracks);
}
