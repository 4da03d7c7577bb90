/**
 * RTP to frames, independent of the WebRTC engine: per track a bounded reorder buffer, the H.264
 * depacketizer (or Opus packet checks), track configs from the SPS/PPS, pooled AVCC/Opus frames,
 * and one 90 kHz timeline for both tracks aligned with RTCP sender reports.
 *
 * Start: frames are held (bounded in time and bytes) until every negotiated track has a frame
 * and a sender report; then each track is anchored on the sender's NTP clock, audio older than
 * the first video keyframe is trimmed, and the timeline starts at the earliest remaining frame,
 * so audio and video start within one audio frame of each other. If a sender report does not
 * come in time, arrival times stand in for it. Later sender reports do not move the timeline.
 *
 * Video: frames before the first track config (SPS+PPS) and the first keyframe are dropped; a
 * changed SPS or PPS (Chrome ramps 360p -> 540p -> 720p) becomes a new track config before the
 * frame that carries it. A keyframe (PLI) is requested at start, while waiting for a keyframe,
 * and whenever packets or frames are lost; requests are spaced by keyframeIntervalMs.
 */
import type { Logger } from 'pino';
import { CodecError } from '../../codecs/errors.ts';
import { parseOpusPacket, opusHead, OPUS_SAMPLE_RATE } from '../../codecs/opus.ts';
import { ReorderBuffer, type RtpPacket } from '../../codecs/rtp.ts';
import { anchorSeconds, RtpTimestampUnwrapper, TrackTimeline, type ClockAnchor } from '../../codecs/rtp-clock.ts';
import { avcCodecString, buildAvcC, parseSps } from '../../codecs/h264.ts';
import { avccLength, H264Depacketizer, writeAvcc, type H264AccessUnit } from '../../codecs/rtp-h264.ts';
import { AUDIO_TRACK_ID, VIDEO_TRACK_ID, type AudioTrack, type Frame, type Track, type VideoTrack } from '../../sessions/frame.ts';
import type { BufferPool, PooledBuffer } from '../../sessions/pool.ts';
import type { OfferMedia } from './sdp.ts';

export interface SenderReport {
  readonly ssrc: number;
  /** The report's NTP time in seconds. */
  readonly ntpSeconds: number;
  readonly rtpTimestamp: number;
}

export interface RtpIngestOptions {
  readonly pool: BufferPool;
  readonly media: readonly Pick<OfferMedia, 'kind' | 'payloadType' | 'clockRate' | 'channels'>[];
  readonly out: { track(t: Track): void; frame(f: Frame): void };
  /** Sends a PLI for the video SSRC. */
  readonly requestKeyframe: (ssrc: number) => void;
  readonly log?: Logger;
  /** Monotonic milliseconds; default performance.now. */
  readonly now?: () => number;
  /** Longest wait for sender reports before arrival times stand in (default 4000 ms). */
  readonly startHoldMs?: number;
  /** Most bytes of frames held while waiting (default 8 MiB). */
  readonly startHoldBytes?: number;
  readonly videoReorder?: { capacity: number; maxWaitMs: number };
  readonly audioReorder?: { capacity: number; maxWaitMs: number };
  /** Least time between two keyframe requests (default 1000 ms). */
  readonly keyframeIntervalMs?: number;
  /**
   * Longest time without a keyframe before one is requested (default 0: only on loss). Browsers
   * send keyframes only when asked, and segmenting outputs (HLS) can cut only at keyframes.
   */
  readonly gopMs?: number;
}

export interface RtpIngestStats {
  readonly videoFrames: number;
  readonly audioFrames: number;
  /** RTP packets given up on by the reorder buffers. */
  readonly lostPackets: number;
  /** Frames dropped: damaged by loss, malformed, before the first config/keyframe, pool exhausted. */
  readonly droppedFrames: number;
  /** Audio frames trimmed at the start to align with the first video keyframe. */
  readonly trimmedFrames: number;
  readonly keyframeRequests: number;
  readonly configChanges: number;
  /** 'sender-reports' or 'arrival' once the timeline started. */
  readonly sync: 'pending' | 'sender-reports' | 'arrival';
}


type Held = { type: 'track'; track: Track } | { type: 'frame'; ext: number; keyframe: boolean; data: PooledBuffer };

interface TrackState {
  readonly kind: 'video' | 'audio';
  readonly id: number;
  readonly pt: number;
  readonly clockRate: number;
  readonly channels: number;
  readonly reorder: ReorderBuffer<RtpPacket>;
  readonly unwrap: RtpTimestampUnwrapper;
  readonly timeline: TrackTimeline;
  readonly depack: H264Depacketizer | undefined;
  ssrc: number | undefined;
  /** The latest sender report, on this track's unwrapped RTP time. */
  sr: ClockAnchor | undefined;
  /** The first frame's unwrapped time and arrival (receiver clock, seconds). */
  first: ClockAnchor | undefined;
  held: Held[];
  /** A new SSRC: the next frame is rebased onto the timeline with a discontinuity. */
  rebase: boolean;
  sps: Uint8Array | undefined;
  pps: Uint8Array | undefined;
  configured: boolean;
  sawKeyframe: boolean;
  frames: number;
}

const bytesEqual = (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && Buffer.compare(a, b) === 0);

export class RtpIngest {
  readonly #o: RtpIngestOptions;
  readonly #now: () => number;
  readonly #tracks: TrackState[] = [];
  readonly #video: TrackState | undefined;
  readonly #audio: TrackState | undefined;
  readonly #holdMs: number;
  readonly #holdBytes: number;
  readonly #kfInterval: number;
  readonly #gopMs: number;
  #lastKeyframeAt = 0;
  #aligned = false;
  #sync: RtpIngestStats['sync'] = 'pending';
  #origin = 0;
  /** Sender NTP minus receiver clock, seconds, learnt at alignment (for tracks that start late without a report). */
  #senderMinusReceiver: number | undefined;
  #holdStart: number | undefined;
  #heldBytes = 0;
  #lastKf = -Infinity;
  #kfPending = false;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  #closed = false;
  #lost = 0;
  #dropped = 0;
  #trimmed = 0;
  #kfRequests = 0;
  #configChanges = 0;

  constructor(opts: RtpIngestOptions) {
    this.#o = opts;
    this.#now = opts.now ?? (() => performance.now());
    this.#holdMs = opts.startHoldMs ?? 4000;
    this.#holdBytes = opts.startHoldBytes ?? 8 * 1024 * 1024;
    this.#kfInterval = opts.keyframeIntervalMs ?? 1000;
    this.#gopMs = opts.gopMs ?? 0;
    for (const m of opts.media) {
      const video = m.kind === 'video';
      const reorder = (video ? opts.videoReorder : opts.audioReorder) ?? (video ? { capacity: 512, maxWaitMs: 250 } : { capacity: 64, maxWaitMs: 80 });
      const t: TrackState = {
        kind: m.kind,
        id: video ? VIDEO_TRACK_ID : AUDIO_TRACK_ID,
        pt: m.payloadType,
        clockRate: m.clockRate,
        channels: m.channels,
        reorder: new ReorderBuffer<RtpPacket>({
          ...reorder,
          emit: (p) => this.#packet(t, p),
          lost: (n) => {
            this.#lost += n;
            if (video) this.#requestKeyframe();
          },
        }),
        unwrap: new RtpTimestampUnwrapper(),
        timeline: new TrackTimeline({ clockRate: m.clockRate }),
        depack: video ? new H264Depacketizer({ onDrop: (reason) => this.#videoDropped(reason) }) : undefined,
        ssrc: undefined,
        sr: undefined,
        first: undefined,
        held: [],
        rebase: false,
        sps: undefined,
        pps: undefined,
        configured: false,
        sawKeyframe: false,
        frames: 0,
      };
      this.#tracks.push(t);
    }
    this.#video = this.#tracks.find((t) => t.kind === 'video');
    this.#audio = this.#tracks.find((t) => t.kind === 'audio');
  }

  stats(): RtpIngestStats {
    return {
      videoFrames: this.#video?.frames ?? 0,
      audioFrames: this.#audio?.frames ?? 0,
      lostPackets: this.#lost,
      droppedFrames: this.#dropped,
      trimmedFrames: this.#trimmed,
      keyframeRequests: this.#kfRequests,
      configChanges: this.#configChanges,
      sync: this.#sync,
    };
  }

  /** The peer is connected: ask for a keyframe straight away. */
  start(): void {
    if (this.#video) this.#requestKeyframe();
  }

  /** One RTP packet of the given kind (RTX already unwrapped by the engine). */
  rtp(kind: 'video' | 'audio', p: RtpPacket): void {
    if (this.#closed) return;
    const t = kind === 'video' ? this.#video : this.#audio;
    if (!t) return;
    if (t.ssrc === undefined) {
      t.ssrc = p.ssrc;
    } else if (p.ssrc !== t.ssrc) {
      this.#o.log?.info({ kind, from: t.ssrc, to: p.ssrc }, 'webrtc: new SSRC, rebasing track');
      t.reorder.flush();
      t.reorder.clear();
      t.depack?.reset();
      t.unwrap.reset();
      t.ssrc = p.ssrc;
      t.sr = undefined;
      t.rebase = true;
      t.sawKeyframe = false;
      if (!this.#aligned) {
        // Frames held for alignment belong to the old source's clock: drop them.
        for (const h of t.held) {
          if (h.type !== 'frame') continue;
          this.#heldBytes -= h.data.length;
          h.data.release();
        }
        t.held = t.held.filter((h) => h.type === 'track');
        t.first = undefined;
        t.rebase = false;
      }
    }
    t.reorder.push(p, this.#now());
    this.#schedule();
  }

  senderReport(kind: 'video' | 'audio', sr: SenderReport): void {
    if (this.#closed) return;
    const t = kind === 'video' ? this.#video : this.#audio;
    if (!t || (t.ssrc !== undefined && sr.ssrc !== t.ssrc)) return;
    t.sr = { rtp: t.unwrap.unwrap(sr.rtpTimestamp), seconds: sr.ntpSeconds };
    if (!this.#aligned) this.#tryAlign();
  }

  /** Releases everything held. Later calls do nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const t of this.#tracks) {
      t.reorder.clear();
      t.depack?.reset();
      for (const h of t.held) if (h.type === 'frame') h.data.release();
      t.held = [];
    }
    this.#heldBytes = 0;
  }

  // --- packets to frames ---------------------------------------------------------------------

  #packet(t: TrackState, p: RtpPacket): void {
    // Another payload type on this SSRC keeps its place in the sequence (the depacketizer sees the gap) but is not media here.
    if (p.payloadType !== t.pt) return;
    if (t.depack) {
      for (const au of t.depack.push(p)) this.#videoUnit(t, au);
    } else {
      this.#audioPacket(t, p);
    }
  }

  #videoDropped(reason: string): void {
    this.#dropped++;
    this.#o.log?.debug({ reason }, 'webrtc: video frame dropped');
    this.#requestKeyframe();
  }

  #videoUnit(t: TrackState, au: H264AccessUnit): void {
    const sps = au.sps ?? t.sps;
    const pps = au.pps ?? t.pps;
    if (sps && pps && (!t.configured || !bytesEqual(sps, t.sps) || !bytesEqual(pps, t.pps))) {
      let track: VideoTrack;
      try {
        const d = parseSps(sps);
        track = {
          kind: 'video',
          id: t.id,
          codec: 'h264',
          config: buildAvcC([sps], [pps]),
          width: d.width,
          height: d.height,
          codecString: avcCodecString(d),
        };
      } catch (err) {
        if (!(err instanceof CodecError)) throw err;
        this.#videoDropped(`bad parameter sets: ${err.message}`);
        return;
      }
      t.sps = Uint8Array.from(sps);
      t.pps = Uint8Array.from(pps);
      t.configured = true;
      this.#configChanges++;
      this.#o.log?.debug({ width: track.width, height: track.height, codec: track.codecString }, 'webrtc: video config');
      this.#enqueue(t, track);
    }
    if (!t.configured) {
      this.#videoDropped('no SPS/PPS yet');
      return;
    }
    if (au.keyframe) {
      this.#kfPending = false;
      this.#lastKeyframeAt = this.#now();
      this.#schedule();
    }
    if (!t.sawKeyframe) {
      if (!au.keyframe) {
        this.#videoDropped('waiting for the first keyframe');
        return;
      }
      t.sawKeyframe = true;
    }
    let data: PooledBuffer;
    try {
      data = this.#o.pool.alloc(avccLength(au.nalus));
    } catch (err) {
      this.#videoDropped(`buffer pool: ${(err as Error).message}`);
      return;
    }
    writeAvcc(au.nalus, data.bytes);
    this.#frame(t, t.unwrap.unwrap(au.timestamp), au.keyframe, data);
  }

  #audioPacket(t: TrackState, p: RtpPacket): void {
    if (p.payload.length === 0) return;
    try {
      parseOpusPacket(p.payload);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      this.#dropped++;
      return;
    }
    if (!t.configured) {
      t.configured = true;
      const track: AudioTrack = {
        kind: 'audio',
        id: t.id,
        codec: 'opus',
        config: opusHead({ channels: t.channels }),
        sampleRate: OPUS_SAMPLE_RATE,
        channels: t.channels,
        codecString: 'opus',
      };
      this.#enqueue(t, track);
    }
    let data: PooledBuffer;
    try {
      data = this.#o.pool.copyOf(p.payload);
    } catch {
      this.#dropped++;
      return;
    }
    this.#frame(t, t.unwrap.unwrap(p.timestamp), true, data);
  }

  /** A track config: straight out once the timeline runs, else held in order with the frames. */
  #enqueue(t: TrackState, track: Track): void {
    if (this.#aligned) this.#o.out.track(track);
    else t.held.push({ type: 'track', track });
  }

  #frame(t: TrackState, ext: number, keyframe: boolean, data: PooledBuffer): void {
    if (this.#aligned) {
      if (!t.timeline.anchored) this.#anchorLate(t, ext);
      this.#emit(t, ext, keyframe, data);
      return;
    }
    const now = this.#now();
    t.first ??= { rtp: ext, seconds: now / 1000 };
    this.#holdStart ??= now;
    this.#heldBytes += data.length;
    t.held.push({ type: 'frame', ext, keyframe, data });
    this.#tryAlign();
  }

  #emit(t: TrackState, ext: number, keyframe: boolean, data: PooledBuffer): void {
    if (t.rebase) {
      t.timeline.rebaseAt(ext);
      t.rebase = false;
    }
    const { dts, discontinuity } = t.timeline.map(ext);
    t.frames++;
    const codec = t.kind === 'video' ? 'h264' : 'opus';
    const frame: Frame = discontinuity
      ? { track: t.id, kind: t.kind, codec, dts, pts: dts, keyframe, discontinuity, data }
      : { track: t.id, kind: t.kind, codec, dts, pts: dts, keyframe, data };
    this.#o.out.frame(frame);
  }

  // --- the shared timeline -------------------------------------------------------------------

  #tryAlign(): void {
    if (this.#aligned || this.#closed) return;
    const withFrames = this.#tracks.filter((t) => t.held.some((h) => h.type === 'frame'));
    if (withFrames.length === 0) return;
    const single = this.#tracks.length === 1;
    const allReported = this.#tracks.every((t) => t.first !== undefined && t.sr !== undefined);
    const timedOut =
      (this.#holdStart !== undefined && this.#now() - this.#holdStart >= this.#holdMs) || this.#heldBytes > this.#holdBytes;
    if (!single && !allReported && !timedOut) return;
    const bySenderReports = !single && withFrames.every((t) => t.sr !== undefined);
    this.#align(withFrames, bySenderReports);
  }

  #align(withFrames: TrackState[], bySenderReports: boolean): void {
    const anchorOf = (t: TrackState): ClockAnchor => (bySenderReports ? t.sr! : t.first!);
    const firstExt = (t: TrackState): number => (t.held.find((h) => h.type === 'frame') as { ext: number }).ext;
    const startOf = (t: TrackState): number => anchorSeconds(anchorOf(t), firstExt(t), t.clockRate);
    const v = this.#video && withFrames.includes(this.#video) ? this.#video : undefined;
    const a = this.#audio && withFrames.includes(this.#audio) ? this.#audio : undefined;
    if (v && a) {
      // Start both at the first video keyframe: audio from before it (within half an Opus frame) goes.
      const vStart = startOf(v);
      const kept: Held[] = [];
      for (const h of a.held) {
        if (h.type === 'frame' && anchorSeconds(anchorOf(a), h.ext, a.clockRate) < vStart - 0.01) {
          h.data.release();
          this.#trimmed++;
        } else {
          kept.push(h);
        }
      }
      a.held = kept;
    }
    const starts = withFrames.filter((t) => t.held.some((h) => h.type === 'frame')).map(startOf);
    this.#origin = Math.min(...starts);
    for (const t of withFrames) {
      if (t.held.some((h) => h.type === 'frame')) t.timeline.anchor(anchorOf(t), this.#origin);
    }
    if (bySenderReports) {
      const ref = withFrames[0]!;
      this.#senderMinusReceiver = anchorSeconds(ref.sr!, ref.first!.rtp, ref.clockRate) - ref.first!.seconds;
    }
    this.#aligned = true;
    this.#sync = bySenderReports ? 'sender-reports' : 'arrival';
    this.#heldBytes = 0;
    this.#o.log?.debug(
      { sync: this.#sync, trimmed: this.#trimmed, tracks: withFrames.map((t) => t.kind) },
      'webrtc: timeline started',
    );
    this.#release();
  }

  /** A track whose first frame comes after the timeline started. */
  #anchorLate(t: TrackState, ext: number): void {
    const now = this.#now() / 1000;
    let anchor: ClockAnchor;
    if (this.#sync === 'sender-reports') {
      anchor = t.sr ?? { rtp: ext, seconds: now + (this.#senderMinusReceiver ?? 0) };
    } else {
      anchor = { rtp: ext, seconds: now };
    }
    t.timeline.anchor(anchor, this.#origin);
  }

  /** Emits the held items: every track's first config, then the frames of all tracks interleaved by DTS (later configs in place). */
  #release(): void {
    type Out = { dts: number; run: () => void };
    const lists: Out[][] = [];
    for (const t of this.#tracks) {
      while (t.held[0]?.type === 'track') this.#o.out.track((t.held.shift() as { track: Track }).track);
    }
    for (const t of this.#tracks) {
      const list: Out[] = [];
      const pendingTracks: Track[] = [];
      for (const h of t.held) {
        if (h.type === 'track') {
          pendingTracks.push(h.track);
          continue;
        }
        if (t.rebase) {
          t.timeline.rebaseAt(h.ext);
          t.rebase = false;
        }
        const { dts, discontinuity } = t.timeline.map(h.ext);
        const tracks = pendingTracks.splice(0);
        const codec = t.kind === 'video' ? 'h264' : 'opus';
        const frame: Frame = discontinuity
          ? { track: t.id, kind: t.kind, codec, dts, pts: dts, keyframe: h.keyframe, discontinuity, data: h.data }
          : { track: t.id, kind: t.kind, codec, dts, pts: dts, keyframe: h.keyframe, data: h.data };
        list.push({
          dts,
          run: () => {
            for (const tr of tracks) this.#o.out.track(tr);
            t.frames++;
            this.#o.out.frame(frame);
          },
        });
      }
      if (pendingTracks.length > 0) list.push({ dts: Infinity, run: () => pendingTracks.forEach((tr) => this.#o.out.track(tr)) });
      t.held = [];
      lists.push(list);
    }
    const idx = lists.map(() => 0);
    for (;;) {
      let best = -1;
      for (let i = 0; i < lists.length; i++) {
        const item = lists[i]![idx[i]!];
        if (item && (best < 0 || item.dts < lists[best]![idx[best]!]!.dts)) best = i;
      }
      if (best < 0) break;
      lists[best]![idx[best]!++]!.run();
    }
  }

  // --- keyframe requests and timers ----------------------------------------------------------

  #requestKeyframe(): void {
    const v = this.#video;
    if (!v || this.#closed) return;
    const now = this.#now();
    if (v.ssrc === undefined) {
      // No video yet: ask as soon as the first packet names the SSRC.
      this.#kfPending = true;
      return;
    }
    if (now - this.#lastKf >= this.#kfInterval) {
      this.#lastKf = now;
      this.#kfPending = false;
      this.#kfRequests++;
      this.#o.requestKeyframe(v.ssrc);
    } else {
      this.#kfPending = true;
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed) return;
    let at = Infinity;
    for (const t of this.#tracks) at = Math.min(at, t.reorder.deadline ?? Infinity);
    if (!this.#aligned && this.#holdStart !== undefined) at = Math.min(at, this.#holdStart + this.#holdMs);
    if (this.#kfPending && this.#video?.ssrc !== undefined) at = Math.min(at, Math.max(this.#lastKf + this.#kfInterval, this.#now()));
    if (this.#gopMs > 0 && this.#lastKeyframeAt > 0) at = Math.min(at, Math.max(this.#lastKeyframeAt, this.#lastKf) + this.#gopMs);
    if (at === Infinity) return;
    if (this.#timer && at >= this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, at - this.#now()));
    this.#timer.unref();
  }

  #tick(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (this.#closed) return;
    const now = this.#now();
    for (const t of this.#tracks) t.reorder.poll(now);
    this.#tryAlign();
    const gopDue = this.#gopMs > 0 && this.#lastKeyframeAt > 0 && now - Math.max(this.#lastKeyframeAt, this.#lastKf) >= this.#gopMs;
    if (this.#kfPending || gopDue) this.#requestKeyframe();
    this.#schedule();
  }
}
