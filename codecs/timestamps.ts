/**
 * Timestamps onto the 90 kHz clock: unit conversion, unwrapping of fixed-width counters, and the per-stream
 * clock that makes whatever a publisher sends monotonic, non-negative and aligned across tracks
 * (LESSONS.md, rule 6: nothing downstream ever sees a negative or decreasing DTS).
 */
import { CodecError } from './errors.ts';

/** RTMP milliseconds to 90 kHz ticks. */
export function rtmpMsTo90k(ms: number): number {
  return ms * 90;
}

const fail = (reason: string): never => {
  throw new CodecError('timestamp', reason);
};

/**
 * Unwraps a fixed-width counter (RTMP ms and RTP: 32 bits; MPEG-TS: 33 bits) into a continuous count.
 * Each value is taken as the nearest one to the previous value (within half the range), so the wrap is
 * followed both ways: 2^32-1 then 0 is +1, and 0 then 2^32-1 is -1 (the count may go negative).
 */
export class Unwrapper {
  private readonly modulus: number;
  private last: number | undefined;

  constructor(bits: number) {
    // Beyond 52 bits the count would lose integer precision in a double.
    if (!Number.isInteger(bits) || bits < 1 || bits > 52) throw new RangeError(`Unwrapper bits must be 1..52, got ${bits}`);
    this.modulus = 2 ** bits;
  }

  unwrap(value: number): number {
    if (!Number.isFinite(value)) fail(`cannot unwrap ${value}`);
    const m = this.modulus;
    const raw = ((Math.trunc(value) % m) + m) % m;
    if (this.last === undefined) {
      this.last = raw;
      return raw;
    }
    let delta = raw - (((this.last % m) + m) % m);
    if (delta >= m / 2) delta -= m;
    else if (delta < -m / 2) delta += m;
    this.last += delta;
    return this.last;
  }
}

export interface ClockOptions {
  /** A DTS further than this from where the stream is (90 kHz ticks) is a jump of the publisher's clock. Default 10 s. */
  maxJump90k?: number;
}

export interface Stamped {
  dts: number;
  pts: number;
  /** This sample's time does not continue the track's previous sample (the clock was rebased here). */
  discontinuity: boolean;
}

/** Deltas longer than this are pauses, not frame durations, and never become a track's typical duration. */
const MAX_FRAME_DURATION = 90_000;

interface TrackState {
  lastIn: number;
  lastOut: number;
  /** The last plausible DTS step, used to continue the track across a jump; 0 while unknown. */
  duration: number;
  /** Offset on top of the stream's, 0 unless this track disagreed with the stream's clock (see stamp()). */
  skew: number;
  /** The stream's rebase count when this track was last stamped. */
  epoch: number;
}

/**
 * One per stream, shared by its tracks. Input: per-track unwrapped DTS and PTS (90 kHz, any origin, possibly
 * jumping). Output: DTS starting at 0 for the first sample of the stream, strictly increasing per track (a
 * repeated or decreasing DTS is nudged to last+1), never negative, and PTS >= DTS (raised if below).
 *
 * One offset maps input to output for every track, so audio and video stay aligned. When a track's DTS lands
 * more than maxJump away from where the stream is (the highest DTS output so far), the publisher's clock has
 * jumped: the offset is rebased so that track continues from its last DTS plus its typical frame duration,
 * with discontinuity=true, and the other tracks follow through the same new offset.
 *
 * Measuring jumps against the stream rather than the track's own last DTS keeps a track that was silent for
 * a while (audio dropping out) from rebasing everyone. A track still behind a rebase (old-clock samples in
 * flight) or whose clock disagrees with the others gets its own skew instead, so tracks never take turns
 * rebasing the stream; the skew is dropped as soon as the track agrees with the stream again.
 */
export class StreamClock {
  private readonly maxJump: number;
  private offset = 0;
  private started = false;
  private position = 0;
  private rebases = 0;
  private readonly tracks = new Map<number, TrackState>();

  constructor(opts: ClockOptions = {}) {
    const maxJump = opts.maxJump90k ?? 900_000;
    if (!(maxJump > 0) || !Number.isFinite(maxJump)) throw new RangeError(`maxJump90k must be positive, got ${maxJump}`);
    this.maxJump = maxJump;
  }

  stamp(track: number, dts: number, pts: number): Stamped {
    if (!Number.isFinite(dts) || !Number.isFinite(pts)) fail(`track ${track}: non-finite DTS ${dts} / PTS ${pts}`);
    dts = Math.round(dts);
    pts = Math.round(pts);
    if (!this.started) {
      this.started = true;
      this.offset = -dts;
    }
    const near = (mapped: number): boolean => Math.abs(mapped - this.position) <= this.maxJump;
    let t = this.tracks.get(track);
    let out: number;
    let discontinuity = false;

    if (t === undefined) {
      // A new track joins where the stream is; only a track whose clock is far off gets a skew to put it there.
      // Slightly early (negative) first samples are clamped to 0 rather than shifting the track for good.
      const mapped = dts + this.offset;
      const skew = near(mapped) ? 0 : this.position - mapped;
      out = Math.max(0, mapped + skew);
      t = { lastIn: dts, lastOut: out, duration: 0, skew, epoch: this.rebases };
      this.tracks.set(track, t);
    } else {
      const cont = t.lastOut + (t.duration || 1);
      if (near(dts + this.offset)) {
        t.skew = 0; // agrees with the stream's clock (again)
      } else if (t.skew !== 0 && near(dts + this.offset + t.skew)) {
        // still on its own clock, continuing smoothly under its skew
      } else if (t.epoch === this.rebases) {
        // The first track to see the publisher's clock jump: rebase the stream on it.
        this.offset = cont - dts;
        t.skew = 0;
        this.rebases++;
        discontinuity = true;
      } else {
        // The stream was rebased since this track's last sample and this sample has not followed: continue it
        // on its own, without moving the stream again.
        t.skew = cont - dts - this.offset;
        discontinuity = true;
      }
      const step = dts - t.lastIn;
      if (!discontinuity && step > 0 && step <= MAX_FRAME_DURATION) t.duration = step;
      out = Math.max(dts + this.offset + t.skew, t.lastOut + 1);
      t.lastIn = dts;
      t.lastOut = out;
      t.epoch = this.rebases;
    }

    if (out > this.position) this.position = out;
    return { dts: out, pts: Math.max(pts + this.offset + t.skew, out), discontinuity };
  }
}
