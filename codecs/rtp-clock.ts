/**
 * RTP time: 32-bit timestamps unwrapped into a continuous count, NTP times from RTCP sender
 * reports, and the mapping of each track's RTP clock onto one shared 90 kHz timeline.
 * Pure code: no timers, no I/O.
 */
import { CLOCK_RATE } from './track.ts';

/** `b - a` for 32-bit RTP timestamps, in [-2^31, 2^31). */
export function rtpTimestampDelta(a: number, b: number): number {
  return ((b - a) | 0);
}

/** Extends 32-bit RTP timestamps into a continuous integer (wraps forward and back are followed). */
export class RtpTimestampUnwrapper {
  #last: number | undefined;

  /** The unwrapped value of `ts`, and it becomes the reference for the next call. */
  unwrap(ts: number): number {
    const ext = this.peek(ts);
    this.#last = ext;
    return ext;
  }

  /** The unwrapped value of `ts` without moving the reference (for sender report timestamps). */
  peek(ts: number): number {
    const t = ts >>> 0;
    if (this.#last === undefined) return t;
    return this.#last + rtpTimestampDelta(this.#last >>> 0, t);
  }

  reset(): void {
    this.#last = undefined;
  }
}

const NTP_FRAC = 2 ** 32;

/** An NTP 64-bit timestamp (seconds since 1900 in 32.32 fixed point) as float seconds. */
export function ntpToSeconds(ntp: bigint): number {
  const secs = Number(ntp >> 32n);
  const frac = Number(ntp & 0xffffffffn);
  return secs + frac / NTP_FRAC;
}

/** A point tying a track's unwrapped RTP time to a wall clock (sender NTP, or receiver arrival time), in seconds. */
export interface ClockAnchor {
  readonly rtp: number;
  readonly seconds: number;
}

/** The wall-clock time of unwrapped RTP time `ext`, given an anchor. */
export function anchorSeconds(anchor: ClockAnchor, ext: number, clockRate: number): number {
  return anchor.seconds + (ext - anchor.rtp) / clockRate;
}

export interface TimelinePoint {
  readonly dts: number;
  /** The track's timeline was rebased before this point; outputs should mark a discontinuity. */
  readonly discontinuity: boolean;
}

export interface TrackTimelineOptions {
  readonly clockRate: number;
  /** A forward step larger than this (seconds) is a jump, rebased; default 30. */
  readonly maxForwardJump?: number;
  /** A backward step larger than this (seconds) is a jump, rebased; default 1. Smaller ones are clamped. */
  readonly maxBackwardJump?: number;
}

/**
 * One track's RTP time on the shared 90 kHz timeline: dts = (ext - anchor.rtp) * 90000 / rate +
 * (anchor.seconds - origin) * 90000, made strictly increasing, never negative, and rebased (with
 * a discontinuity) when the source jumps.
 */
export class TrackTimeline {
  readonly clockRate: number;
  readonly #maxFwd: number;
  readonly #maxBack: number;
  /** dts = ext * scale + offset */
  readonly #scale: number;
  #offset: number | undefined;
  #lastDts = -1;
  #lastExt = 0;
  /** A typical step between successive points, used to place the first point after a rebase. */
  #step = 0;
  #pendingDiscontinuity = false;

  constructor(opts: TrackTimelineOptions) {
    if (!(opts.clockRate > 0)) throw new RangeError('clockRate must be positive');
    this.clockRate = opts.clockRate;
    this.#scale = CLOCK_RATE / opts.clockRate;
    this.#maxFwd = (opts.maxForwardJump ?? 30) * CLOCK_RATE;
    this.#maxBack = (opts.maxBackwardJump ?? 1) * CLOCK_RATE;
  }

  get anchored(): boolean {
    return this.#offset !== undefined;
  }

  get lastDts(): number {
    return this.#lastDts;
  }

  /** Fixes the mapping: `anchor` is this track's clock, `originSeconds` the shared timeline's zero on the same wall clock. */
  anchor(anchor: ClockAnchor, originSeconds: number): void {
    this.#offset = (anchor.seconds - originSeconds) * CLOCK_RATE - anchor.rtp * this.#scale;
  }

  /** The 90 kHz DTS of unwrapped RTP time `ext`. Requires `anchor` first. */
  map(ext: number): TimelinePoint {
    if (this.#offset === undefined) throw new Error('timeline is not anchored');
    let dts = Math.round(ext * this.#scale + this.#offset);
    let discontinuity = this.#pendingDiscontinuity;
    this.#pendingDiscontinuity = false;
    if (this.#lastDts >= 0) {
      const step = dts - this.#lastDts;
      if (step > this.#maxFwd || step < -this.#maxBack) {
        // The source jumped (restart, new SSRC, clock step): continue one typical step after the last point.
        const next = this.#lastDts + Math.max(1, this.#step);
        this.#offset = next - ext * this.#scale;
        dts = next;
        discontinuity = true;
      } else if (step <= 0) {
        dts = this.#lastDts + 1;
      } else if (ext !== this.#lastExt) {
        this.#step = step;
      }
    }
    if (dts < 0) dts = 0;
    if (dts <= this.#lastDts) dts = this.#lastDts + 1;
    this.#lastDts = dts;
    this.#lastExt = ext;
    return { dts, discontinuity };
  }

  /** Forces the next point to follow the last one by one typical step (a new SSRC on the same track). */
  rebaseAt(ext: number): void {
    if (this.#lastDts < 0 || this.#offset === undefined) return;
    this.#offset = this.#lastDts + Math.max(1, this.#step) - ext * this.#scale;
    this.#pendingDiscontinuity = true;
  }
}
