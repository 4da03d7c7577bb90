/**
 * RTP (RFC 3550): the fixed header parser, 16-bit sequence arithmetic, and a bounded reorder
 * buffer that turns packets arriving out of order into an in-order sequence with counted gaps.
 * Pure code over bytes: no I/O, no timers (time is passed in by the caller).
 */
import { CodecError } from './errors.ts';

/** The fields every depacketizer needs. Engines that parse RTP themselves map onto this shape. */
export interface RtpPacket {
  readonly payloadType: number;
  /** 16-bit sequence number. */
  readonly sequenceNumber: number;
  /** 32-bit media timestamp in the payload format's clock. */
  readonly timestamp: number;
  readonly ssrc: number;
  readonly marker: boolean;
  /** The payload without header, CSRCs, extension and padding. A view, not a copy. */
  readonly payload: Uint8Array;
}

export interface ParsedRtpPacket extends RtpPacket {
  readonly csrcs: readonly number[];
  /** The header extension block (RFC 3550 5.3.1), undecoded: `profile` and the data words. */
  readonly extension: { readonly profile: number; readonly data: Uint8Array } | undefined;
  readonly paddingBytes: number;
}

const fail = (reason: string): never => {
  throw new CodecError('rtp', reason);
};

/**
 * Parses one RTP packet. Every length (CSRC list, extension, padding) is checked against the bytes
 * present before it is used; anything malformed is rejected with a CodecError naming the field.
 */
export function parseRtpPacket(b: Uint8Array): ParsedRtpPacket {
  if (b.length < 12) fail(`packet of ${b.length} bytes is shorter than the 12-byte header`);
  const b0 = b[0]!;
  const b1 = b[1]!;
  const version = b0 >> 6;
  if (version !== 2) fail(`version ${version}, expected 2`);
  const hasPadding = (b0 & 0x20) !== 0;
  const hasExtension = (b0 & 0x10) !== 0;
  const csrcCount = b0 & 0x0f;
  const payloadType = b1 & 0x7f;
  // RFC 5761 4: RTCP packet types 200-204 would show up as RTP payload types 72-76 with the marker set.
  if (payloadType >= 72 && payloadType <= 76) fail(`payload type ${payloadType} collides with RTCP (RFC 5761)`);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let off = 12;
  if (off + 4 * csrcCount > b.length) fail(`CSRC count ${csrcCount} runs past the ${b.length}-byte packet`);
  const csrcs: number[] = [];
  for (let i = 0; i < csrcCount; i++, off += 4) csrcs.push(view.getUint32(off));
  let extension: ParsedRtpPacket['extension'];
  if (hasExtension) {
    if (off + 4 > b.length) fail('header extension header runs past the packet');
    const profile = view.getUint16(off);
    const words = view.getUint16(off + 2);
    off += 4;
    if (off + 4 * words > b.length) fail(`header extension of ${words} words runs past the packet`);
    extension = { profile, data: b.subarray(off, off + 4 * words) };
    off += 4 * words;
  }
  let end = b.length;
  let paddingBytes = 0;
  if (hasPadding) {
    paddingBytes = b[b.length - 1]!;
    if (paddingBytes === 0) fail('padding bit set with a padding count of 0');
    if (off + paddingBytes > b.length) fail(`padding of ${paddingBytes} bytes runs into the header`);
    end -= paddingBytes;
  }
  return {
    payloadType,
    marker: (b1 & 0x80) !== 0,
    sequenceNumber: view.getUint16(2),
    timestamp: view.getUint32(4),
    ssrc: view.getUint32(8),
    csrcs,
    extension,
    paddingBytes,
    payload: b.subarray(off, end),
  };
}

/** `b - a` for 16-bit sequence numbers, in [-32768, 32767]. */
export function seqDelta(a: number, b: number): number {
  return ((((b - a) & 0xffff) + 0x8000) & 0xffff) - 0x8000;
}

export interface ReorderBufferOptions<T> {
  /** Packets held at most while waiting for a missing one; a packet further ahead forces the gap to be skipped. */
  readonly capacity: number;
  /** How long the oldest held packet waits for a gap before it to be filled (by NACK/RTX or late arrival). */
  readonly maxWaitMs: number;
  /** Receives packets in sequence order. Must not throw. */
  readonly emit: (packet: T) => void;
  /** Sequence numbers given up on (never received in time). */
  readonly lost?: (count: number) => void;
  /** The sequence jumped too far (either way) to be a gap: held packets were flushed and the order restarted. */
  readonly reset?: (fromSeq: number, toSeq: number) => void;
}

export interface ReorderBufferStats {
  received: number;
  emitted: number;
  /** Sequence numbers skipped after waiting or after overflow. */
  lost: number;
  /** Duplicates and packets that arrived after their place was passed. */
  late: number;
  resets: number;
}

/** A jump at least this large (forward) is a new sequence, not loss. */
const RESET_JUMP = 3000;

/**
 * A bounded reorder buffer over 16-bit sequence numbers. Packets in order pass straight through;
 * a gap holds later packets until it fills, until the oldest held packet has waited `maxWaitMs`
 * (see `poll`), or until a packet arrives `capacity` or more ahead. Wraps at 65535 are handled.
 */
export class ReorderBuffer<T extends { readonly sequenceNumber: number }> {
  readonly #cap: number;
  readonly #maxWait: number;
  readonly #slots: (T | undefined)[];
  readonly #arrivals: Float64Array;
  readonly #emit: (p: T) => void;
  readonly #onLost: ((n: number) => void) | undefined;
  readonly #onReset: ((from: number, to: number) => void) | undefined;
  /** The next sequence number to emit (16-bit) and the ring slot it maps to. */
  #head = -1;
  #headSlot = 0;
  #held = 0;
  /** Arrival time of the earliest-arrived held packet. */
  #oldest = 0;
  readonly stats: ReorderBufferStats = { received: 0, emitted: 0, lost: 0, late: 0, resets: 0 };

  constructor(opts: ReorderBufferOptions<T>) {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1 || opts.capacity > 16384) {
      throw new RangeError(`reorder capacity ${opts.capacity} outside 1..16384`);
    }
    if (!(opts.maxWaitMs >= 0)) throw new RangeError('maxWaitMs must be >= 0');
    this.#cap = opts.capacity;
    this.#maxWait = opts.maxWaitMs;
    this.#slots = new Array<T | undefined>(opts.capacity).fill(undefined);
    this.#arrivals = new Float64Array(opts.capacity);
    this.#emit = opts.emit;
    this.#onLost = opts.lost;
    this.#onReset = opts.reset;
  }

  /** Packets waiting for a gap to fill. */
  get held(): number {
    return this.#held;
  }

  /** When `poll` should next run to give up on a gap; undefined while nothing is held. */
  get deadline(): number | undefined {
    return this.#held > 0 ? this.#oldest + this.#maxWait : undefined;
  }

  push(packet: T, nowMs: number): void {
    const seq = packet.sequenceNumber & 0xffff;
    this.stats.received++;
    if (this.#head < 0) {
      this.#head = seq;
    }
    const d = seqDelta(this.#head, seq);
    if (d < 0) {
      if (d >= -this.#cap) {
        this.stats.late++;
        return;
      }
      this.#restart(seq);
    } else if (d >= this.#cap) {
      if (d >= RESET_JUMP) this.#restart(seq);
      else this.#skipUntilFits(d);
    }
    const off = seqDelta(this.#head, seq);
    if (off === 0) {
      this.#advance(1);
      this.#out(packet);
      this.#drain();
    } else {
      const slot = (this.#headSlot + off) % this.#cap;
      if (this.#slots[slot] !== undefined) {
        this.stats.late++;
        return;
      }
      this.#slots[slot] = packet;
      this.#arrivals[slot] = nowMs;
      if (this.#held === 0 || nowMs < this.#oldest) this.#oldest = nowMs;
      this.#held++;
    }
    this.poll(nowMs);
  }

  /** Gives up on gaps whose oldest waiting packet has waited `maxWaitMs`, emitting what follows them. */
  poll(nowMs: number): void {
    while (this.#held > 0 && nowMs - this.#oldest >= this.#maxWait) {
      let skipped = 0;
      while (this.#slots[this.#headSlot] === undefined) {
        this.#advance(1);
        skipped++;
      }
      this.#lost(skipped);
      this.#drain();
      this.#recomputeOldest();
    }
  }

  /** Emits everything held, in order, counting the gaps as lost. */
  flush(): void {
    while (this.#held > 0) {
      let skipped = 0;
      while (this.#slots[this.#headSlot] === undefined) {
        this.#advance(1);
        skipped++;
      }
      this.#lost(skipped);
      this.#drain();
    }
  }

  /** Drops everything held without emitting it and forgets the sequence. */
  clear(): void {
    this.#slots.fill(undefined);
    this.#held = 0;
    this.#head = -1;
    this.#headSlot = 0;
  }

  #out(p: T): void {
    this.stats.emitted++;
    this.#emit(p);
  }

  #lost(n: number): void {
    if (n <= 0) return;
    this.stats.lost += n;
    this.#onLost?.(n);
  }

  #advance(n: number): void {
    this.#head = (this.#head + n) & 0xffff;
    this.#headSlot = (this.#headSlot + n) % this.#cap;
  }

  #drain(): void {
    for (;;) {
      const p = this.#slots[this.#headSlot];
      if (p === undefined) return;
      this.#slots[this.#headSlot] = undefined;
      this.#held--;
      this.#advance(1);
      this.#out(p);
    }
  }

  /** A packet `d` (>= capacity) ahead: give up on the head gaps until it fits in the ring. */
  #skipUntilFits(d: number): void {
    let skipped = 0;
    while (d >= this.#cap) {
      const p = this.#slots[this.#headSlot];
      if (p === undefined) {
        skipped++;
        this.#advance(1);
      } else {
        this.#lost(skipped);
        skipped = 0;
        this.#slots[this.#headSlot] = undefined;
        this.#held--;
        this.#advance(1);
        this.#out(p);
      }
      d--;
    }
    this.#lost(skipped);
    this.#drain();
    this.#recomputeOldest();
  }

  #restart(seq: number): void {
    const from = this.#head;
    this.flush();
    this.clear();
    this.#head = seq;
    this.stats.resets++;
    this.#onReset?.(from, seq);
  }

  #recomputeOldest(): void {
    if (this.#held === 0) return;
    let oldest = Infinity;
    for (let i = 0; i < this.#cap; i++) {
      if (this.#slots[i] !== undefined && this.#arrivals[i]! < oldest) oldest = this.#arrivals[i]!;
    }
    this.#oldest = oldest;
  }
}
