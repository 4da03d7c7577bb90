/**
 * The transcode of one source stream into its renditions, driven synchronously (it runs in a worker
 * thread): source tracks and frames in; rendition tracks and frames out, through `emit`.
 *
 *   H.264 ──decode (NVDEC | libavcodec)──► frame pool ──scale_cuda | scale──► h264_nvenc | libx264 ──► rendition i
 *   Opus  ──decode──► FIFO ──► AAC ──► every rendition            AAC ──────────────────────────────► every rendition
 *
 * A rendition without a height copies the source video (its audio still becomes AAC). The source is
 * decoded once; each rendition has its own scaler and encoder. Timestamps stay on the source's 90 kHz
 * clock. Rendition audio is held back until every rendition has its video track, so that no output
 * sees audio frames before the video track it belongs with.
 */
import type { AudioTrack, Track, VideoTrack } from '../track.ts';
import { TranscodeError } from './errors.ts';
import { FramePool, type FramePoolStats, type PoolBackend } from './frame-pool.ts';
import { renditionSize } from './ladder.ts';
import { loadNodeAv, type NodeAv } from './native.ts';
import { OpusToAac } from './opus-aac.ts';
import { VideoScaler } from './scaler.ts';
import { VideoDecoder, type DecodedPicture } from './video-decoder.ts';
import { VideoEncoder, type EncodedVideoTrack } from './video-encoder.ts';

export interface RenditionSpec {
  readonly name: string;
  /** Output height in lines; without one the rendition copies the source video. */
  readonly height?: number;
  /** Video bitrate, bits per second (scaled renditions). */
  readonly bitrate: number;
}

export interface PipelineOptions {
  readonly backend: PoolBackend;
  readonly poolSize: number;
  /** CUDA device for the GPU backend. */
  readonly device?: string;
  readonly renditions: readonly RenditionSpec[];
  /** AAC bitrate for Opus sources, bits per second. */
  readonly audioBitrate: number;
  /** libx264 preset (CPU backend). */
  readonly preset: string;
  /** Decoder and encoder threads (CPU backend). */
  readonly threads: number;
  /** Longest rendition GOP, seconds. */
  readonly gopSeconds: number;
}

export interface InputFrame {
  readonly track: number;
  readonly kind: 'video' | 'audio';
  readonly dts: number;
  readonly pts: number;
  readonly keyframe: boolean;
  readonly data: Uint8Array;
}

export interface OutputFrame {
  readonly track: number;
  readonly kind: 'video' | 'audio';
  readonly codec: 'h264' | 'aac';
  readonly dts: number;
  readonly pts: number;
  readonly keyframe: boolean;
  readonly data: Uint8Array;
}

/** What comes out, addressed to renditions by index. */
export type PipelineOutput =
  | { readonly type: 'track'; readonly renditions: readonly number[]; readonly track: Track }
  | { readonly type: 'frame'; readonly renditions: readonly number[]; readonly frame: OutputFrame };

export interface RenditionStats {
  readonly name: string;
  readonly width: number | undefined;
  readonly height: number | undefined;
  readonly framesOut: number;
  readonly framesDropped: number;
}

export interface PipelineStats {
  readonly pool: FramePoolStats;
  readonly videoIn: number;
  readonly audioIn: number;
  readonly decoded: number;
  readonly renditions: readonly RenditionStats[];
  readonly audioOut: number;
}

interface Rendition {
  readonly index: number;
  readonly spec: RenditionSpec;
  scaler: VideoScaler | undefined;
  encoder: VideoEncoder | undefined;
  /** The scaler graph the encoder was opened on (GPU: its CUDA frames pool). */
  encoderGeneration: number;
  track: VideoTrack | undefined;
  framesOut: number;
  dropped: number;
}

const DEFAULT_FPS = 30;
/** Audio held for the gate beyond this many frames drops its oldest. */
const MAX_HELD_AUDIO = 256;
/** With no source video track after this much audio, the renditions are audio only. */
const AUDIO_ONLY_AFTER_TICKS = 90_000;

export class TranscodePipeline {
  readonly pool: FramePool;
  readonly #av: NodeAv;
  readonly #opts: PipelineOptions;
  readonly #emit: (out: PipelineOutput) => void;
  readonly #renditions: Rendition[];
  readonly #all: number[];
  readonly #copies: number[];
  #sourceVideo: VideoTrack | undefined;
  #sourceAudio: AudioTrack | undefined;
  #decoder: VideoDecoder | undefined;
  #audioStage: OpusToAac | undefined;
  #audioTrack: AudioTrack | undefined;
  #gateOpen = false;
  #held: OutputFrame[] = [];
  #fps = DEFAULT_FPS;
  #lastVideoDts: number | undefined;
  #videoIn = 0;
  #audioIn = 0;
  #audioOut = 0;
  #decoded = 0;
  #closed = false;

  private constructor(av: NodeAv, pool: FramePool, opts: PipelineOptions, emit: (out: PipelineOutput) => void) {
    this.#av = av;
    this.pool = pool;
    this.#opts = opts;
    this.#emit = emit;
    this.#renditions = opts.renditions.map((spec, index) => ({ index, spec, scaler: undefined, encoder: undefined, encoderGeneration: 0, track: undefined, framesOut: 0, dropped: 0 }));
    this.#all = this.#renditions.map((r) => r.index);
    this.#copies = this.#renditions.filter((r) => r.spec.height === undefined).map((r) => r.index);
  }

  /** Loads node-av and opens the frame pool (and on the GPU backend, the CUDA device). */
  static async open(opts: PipelineOptions, emit: (out: PipelineOutput) => void): Promise<TranscodePipeline> {
    if (opts.renditions.length === 0) throw new TranscodeError('config', 'a transcode needs at least one rendition');
    let av: NodeAv;
    try {
      av = await loadNodeAv();
    } catch (err) {
      throw new TranscodeError('load', `node-av cannot be loaded: ${(err as Error).message}`);
    }
    const pool = FramePool.open(av, { backend: opts.backend, size: opts.poolSize, ...(opts.device !== undefined ? { device: opts.device } : {}) });
    return new TranscodePipeline(av, pool, opts, emit);
  }

  get stats(): PipelineStats {
    return {
      pool: this.pool.stats,
      videoIn: this.#videoIn,
      audioIn: this.#audioIn,
      decoded: this.#decoded + (this.#decoder?.framesDecoded ?? 0),
      renditions: this.#renditions.map((r) => ({
        name: r.spec.name,
        width: r.track?.width,
        height: r.track?.height,
        framesOut: r.framesOut,
        framesDropped: r.dropped + (r.encoder?.framesDropped ?? 0),
      })),
      audioOut: this.#audioOut,
    };
  }

  /** A source track (new or changed). */
  track(t: Track): void {
    this.#checkOpen();
    if (t.kind === 'video') this.#videoTrack(t);
    else this.#audioTrackIn(t);
  }

  /** A source frame. */
  frame(f: InputFrame): void {
    this.#checkOpen();
    if (f.kind === 'video') this.#videoFrame(f);
    else this.#audioFrame(f);
  }

  /** The source ended: everything still inside the decoders and encoders comes out. */
  flush(): void {
    this.#checkOpen();
    this.#flushVideo(true);
    if (this.#audioStage) this.#audioStage.flush((p) => this.#audioOutput(p.data, p.pts));
    this.#openGate(true);
  }

  /** Frees every native object: codecs, filter graphs, the frame pool and the device. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#decoder?.close();
    this.#decoder = undefined;
    for (const r of this.#renditions) {
      r.scaler?.close();
      r.encoder?.close();
      r.scaler = r.encoder = undefined;
    }
    this.#audioStage?.close();
    this.#audioStage = undefined;
    this.#held = [];
    this.pool.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new TranscodeError('config', 'the pipeline is closed');
  }

  // --- video -----------------------------------------------------------------------------------

  #videoTrack(t: VideoTrack): void {
    if (t.codec !== 'h264') throw new TranscodeError('decode', `video codec ${t.codec} is not supported (H.264 only)`);
    const old = this.#sourceVideo;
    if (old && old.config.equals(t.config)) return;
    this.#sourceVideo = t;
    if (this.#copies.length) {
      for (const i of this.#copies) this.#renditions[i]!.track = t;
      this.#emit({ type: 'track', renditions: this.#copies, track: t });
    }
    if (this.#copies.length === this.#renditions.length) {
      this.#openGate(false);
      return;
    }
    // A new decoder configuration: what the old decoder still holds goes out first.
    this.#flushVideo(false);
    this.#decoder = new VideoDecoder(this.#av, this.pool, t.config, { threads: this.#opts.threads });
  }

  #videoFrame(f: InputFrame): void {
    const src = this.#sourceVideo;
    if (!src) return;
    this.#videoIn++;
    this.#estimateFps(f.dts);
    if (this.#copies.length) {
      this.#emitFrame(this.#copies, { track: f.track, kind: 'video', codec: 'h264', dts: f.dts, pts: f.pts, keyframe: f.keyframe, data: f.data });
      for (const i of this.#copies) this.#renditions[i]!.framesOut++;
    }
    this.#decoder?.decode(f, (pic) => this.#picture(pic));
  }

  #estimateFps(dts: number): void {
    const last = this.#lastVideoDts;
    this.#lastVideoDts = dts;
    if (last === undefined) return;
    const step = dts - last;
    if (step < 90_000 / 120 || step > 90_000) return;
    this.#fps += (90_000 / step - this.#fps) * 0.1;
  }

  /** One decoded picture: scaled and encoded for every scaled rendition. */
  #picture(pic: DecodedPicture): void {
    const src = this.#sourceVideo!;
    const gpu = this.pool.backend === 'gpu';
    for (const r of this.#renditions) {
      if (r.spec.height === undefined) continue;
      const size = renditionSize({ width: pic.slot.frame.width, height: pic.slot.frame.height }, r.spec.height);
      if (!r.scaler || r.scaler.width !== size.width || r.scaler.height !== size.height) {
        r.scaler?.close();
        r.scaler = new VideoScaler(this.#av, this.pool, size, r.spec.name);
      }
      const scaler = r.scaler;
      scaler.scale(pic.slot, (scaled) => {
        const enc = r.encoder;
        if (!enc || enc.opts.width !== size.width || enc.opts.height !== size.height || (gpu && r.encoderGeneration !== scaler.generation)) {
          // First picture, the source changed size, or (GPU) the surfaces now come from another pool:
          // a new encoder, and with it a new track for this rendition.
          this.#closeEncoder(r, true);
          const fps = Math.min(120, Math.max(1, this.#fps));
          r.encoder = new VideoEncoder(this.#av, this.pool, {
            width: size.width,
            height: size.height,
            bitrate: r.spec.bitrate,
            fps,
            gopFrames: Math.max(1, Math.round(fps * this.#opts.gopSeconds)),
            preset: this.#opts.preset,
            threads: this.#opts.threads,
          });
          r.encoderGeneration = scaler.generation;
        }
        r.encoder!.encode(
          scaled,
          pic.pts,
          pic.keyframe,
          (p) => {
            r.framesOut++;
            this.#emitFrame([r.index], { track: src.id, kind: 'video', codec: 'h264', dts: p.dts, pts: p.pts, keyframe: p.keyframe, data: p.data });
          },
          (t) => this.#renditionTrack(r, src, t),
        );
      });
    }
  }

  #renditionTrack(r: Rendition, src: VideoTrack, t: EncodedVideoTrack): void {
    const track: VideoTrack = { kind: 'video', id: src.id, codec: 'h264', config: t.config, width: t.width, height: t.height, codecString: t.codecString };
    r.track = track;
    this.#emit({ type: 'track', renditions: [r.index], track });
    if (this.#renditions.every((x) => x.track)) this.#openGate(false);
  }

  /** Drains the decoder into the encoders; at the end, drains the encoders too. */
  #flushVideo(end: boolean): void {
    const dec = this.#decoder;
    if (dec) {
      dec.flush((pic) => this.#picture(pic));
      this.#decoded += dec.framesDecoded;
      dec.close();
      this.#decoder = undefined;
    }
    // The next decoder has its own surface pool: the scalers are rebuilt on its first picture.
    for (const r of this.#renditions) {
      r.scaler?.close();
      r.scaler = undefined;
      if (end) this.#closeEncoder(r, true);
    }
  }

  #closeEncoder(r: Rendition, drain: boolean): void {
    const enc = r.encoder;
    if (!enc) return;
    if (drain) {
      const src = this.#sourceVideo!;
      enc.flush((p) => {
        r.framesOut++;
        this.#emitFrame([r.index], { track: src.id, kind: 'video', codec: 'h264', dts: p.dts, pts: p.pts, keyframe: p.keyframe, data: p.data });
      });
    }
    r.dropped += enc.framesDropped;
    enc.close();
    r.encoder = undefined;
  }

  // --- audio -----------------------------------------------------------------------------------

  #audioTrackIn(t: AudioTrack): void {
    const old = this.#sourceAudio;
    if (old && old.codec === t.codec && old.config.equals(t.config)) return;
    this.#sourceAudio = t;
    if (this.#audioStage) {
      this.#audioStage.flush((p) => this.#audioOutput(p.data, p.pts));
      this.#audioStage.close();
      this.#audioStage = undefined;
    }
    let out: AudioTrack;
    if (t.codec === 'aac') out = t;
    else if (t.codec === 'opus') {
      const stage = (this.#audioStage = new OpusToAac(this.#av, t.config, { bitrate: this.#opts.audioBitrate }));
      out = { kind: 'audio', id: t.id, codec: 'aac', config: stage.track.config, sampleRate: stage.track.sampleRate, channels: stage.track.channels, codecString: stage.track.codecString };
    } else throw new TranscodeError('audio', `audio codec ${String((t as AudioTrack).codec)} is not supported`);
    this.#audioTrack = out;
    this.#emit({ type: 'track', renditions: this.#all, track: out });
  }

  #audioFrame(f: InputFrame): void {
    const src = this.#sourceAudio;
    if (!src) return;
    this.#audioIn++;
    if (this.#audioStage) this.#audioStage.push(f, (p) => this.#audioOutput(p.data, p.pts));
    else this.#audioOutput(f.data, f.pts);
  }

  #audioOutput(data: Uint8Array, pts: number): void {
    const t = this.#audioTrack!;
    this.#audioOut++;
    const frame: OutputFrame = { track: t.id, kind: 'audio', codec: 'aac', dts: pts, pts, keyframe: true, data };
    if (this.#gateOpen) {
      this.#emitFrame(this.#all, frame);
      return;
    }
    this.#held.push(frame);
    if (this.#held.length > MAX_HELD_AUDIO) this.#held.shift();
    // No source video at all after a second of audio: the renditions carry audio only.
    if (!this.#sourceVideo && pts - this.#held[0]!.pts >= AUDIO_ONLY_AFTER_TICKS) this.#openGate(false);
  }

  #openGate(end: boolean): void {
    if (this.#gateOpen) return;
    const held = this.#held;
    this.#held = [];
    if (end && !this.#renditions.every((r) => r.track) && this.#sourceVideo) return;
    this.#gateOpen = true;
    for (const f of held) this.#emitFrame(this.#all, f);
  }

  #emitFrame(renditions: readonly number[], frame: OutputFrame): void {
    this.#emit({ type: 'frame', renditions, frame });
  }
}
