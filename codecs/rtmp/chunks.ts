/**
 * The RTMP chunk stream: a reader that reassembles messages from chunks and a writer that splits
 * messages into chunks. Every length is bounded before a byte is buffered.
 */
import { CodecError } from '../errors.ts';

export const enum MessageType {
  SetChunkSize = 1,
  Abort = 2,
  Acknowledgement = 3,
  UserControl = 4,
  WindowAckSize = 5,
  SetPeerBandwidth = 6,
  Audio = 8,
  Video = 9,
  DataAmf3 = 15,
  CommandAmf3 = 17,
  DataAmf0 = 18,
  CommandAmf0 = 20,
  Aggregate = 22,
}

export interface RtmpMessage {
  readonly type: number;
  readonly streamId: number;
  /** Milliseconds, 32-bit as carried (wraps). */
  readonly timestamp: number;
  readonly payload: Buffer;
}

export interface ChunkReaderLimits {
  /** Largest chunk size the peer may set. */
  maxChunkSize: number;
  /** Largest message the peer may send. */
  maxMessageSize: number;
  /** Most chunk streams with partial state at once. */
  maxChunkStreams?: number;
}

interface ChunkStreamState {
  timestamp: number;
  delta: number;
  length: number;
  type: number;
  streamId: number;
  extended: boolean;
  payload: Buffer | undefined;
  received: number;
  started: boolean;
}

export class ChunkReader {
  #chunkSize = 128;
  /** Bytes not yet parsed, kept as pieces until there are enough for the next chunk. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** Bytes the next chunk needs before parsing can progress: joining fewer would only be re-copied. */
  #need = 1;
  readonly #streams = new Map<number, ChunkStreamState>();
  readonly #limits: ChunkReaderLimits;
  /** Bytes consumed, for acknowledgements. */
  bytesRead = 0;

  constructor(limits: ChunkReaderLimits) {
    this.#limits = limits;
  }

  get chunkSize(): number {
    return this.#chunkSize;
  }

  /**
   * Feeds bytes; returns the messages completed by them. Set Chunk Size and Abort are applied here
   * and also returned. Throws CodecError on a protocol violation; the reader is then unusable.
   */
  push(data: Buffer): RtmpMessage[] {
    this.bytesRead += data.length;
    this.#pending.push(data);
    this.#pendingBytes += data.length;
    if (this.#pendingBytes < this.#need) return [];
    let buf = this.#pending.length === 1 ? data : Buffer.concat(this.#pending, this.#pendingBytes);
    const out: RtmpMessage[] = [];
    let off = 0;
    for (;;) {
      const used = this.#readChunk(buf, off, out);
      if (used === 0) break;
      off += used;
    }
    buf = buf.subarray(off);
    // Keep a copy so the caller's buffer can be reused or collected.
    this.#pending = buf.length ? [Buffer.from(buf)] : [];
    this.#pendingBytes = buf.length;
    return out;
  }

  /** Reads one chunk at `off`; returns the bytes it took, or 0 if it is not complete yet. */
  #readChunk(buf: Buffer, off: number, out: RtmpMessage[]): number {
    this.#need = 1;
    const avail = buf.length - off;
    if (avail < 1) return 0;
    const b0 = buf[off]!;
    const fmt = b0 >> 6;
    let csid = b0 & 0x3f;
    let p = off + 1;
    if (csid === 0) {
      if (avail < 2) return 0;
      csid = buf[p]! + 64;
      p += 1;
    } else if (csid === 1) {
      if (avail < 3) return 0;
      csid = buf[p]! + buf[p + 1]! * 256 + 64;
      p += 2;
    }
    const headerLen = fmt === 0 ? 11 : fmt === 1 ? 7 : fmt === 2 ? 3 : 0;
    if (buf.length - p < headerLen) {
      this.#need = p - off + headerLen;
      return 0;
    }

    let st = this.#streams.get(csid);
    if (!st) {
      if (fmt !== 0) throw new CodecError('rtmp', `chunk stream ${csid} starts with a type ${fmt} header`);
      if (this.#streams.size >= (this.#limits.maxChunkStreams ?? 64)) throw new CodecError('rtmp', 'too many chunk streams');
      st = { timestamp: 0, delta: 0, length: 0, type: 0, streamId: 0, extended: false, payload: undefined, received: 0, started: false };
    }
    const midMessage = st.payload !== undefined;
    if (midMessage && fmt !== 3) {
      throw new CodecError('rtmp', `chunk stream ${csid}: new type ${fmt} header before the message of ${st.length} bytes was complete`);
    }

    let tsField = 0;
    let length = st.length;
    let type = st.type;
    let streamId = st.streamId;
    if (fmt <= 2) tsField = buf.readUIntBE(p, 3);
    if (fmt <= 1) {
      length = buf.readUIntBE(p + 3, 3);
      type = buf[p + 6]!;
    }
    if (fmt === 0) streamId = buf.readUInt32LE(p + 7);
    p += headerLen;

    const extended = fmt <= 2 ? tsField === 0xffffff : st.extended;
    if (extended) {
      if (buf.length - p < 4) return 0;
      if (fmt <= 2) tsField = buf.readUInt32BE(p);
      else if (!midMessage) tsField = buf.readUInt32BE(p);
      p += 4;
    }

    if (!midMessage) {
      if (length > this.#limits.maxMessageSize) {
        throw new CodecError('rtmp', `message of ${length} bytes exceeds the limit of ${this.#limits.maxMessageSize}`);
      }
      if (type === 0) throw new CodecError('rtmp', 'message type 0');
    }
    const remaining = midMessage ? st.length - st.received : length;
    const take = Math.min(remaining, this.#chunkSize);
    if (buf.length - p < take) {
      this.#need = p - off + take;
      return 0;
    }

    // The chunk is complete: commit header state.
    if (!midMessage) {
      if (fmt === 0) {
        st.timestamp = tsField;
        st.delta = 0;
      } else if (fmt === 1 || fmt === 2) {
        st.delta = tsField;
        st.timestamp = (st.timestamp + tsField) >>> 0;
      } else if (st.started) {
        st.timestamp = (st.timestamp + st.delta) >>> 0;
      }
      st.length = length;
      st.type = type;
      st.streamId = streamId;
      st.extended = extended;
      st.started = true;
      st.payload = Buffer.allocUnsafe(length);
      st.received = 0;
      this.#streams.set(csid, st);
    }
    const payload = st.payload!;
    buf.copy(payload, st.received, p, p + take);
    st.received += take;
    p += take;
    if (st.received === st.length) {
      st.payload = undefined;
      const msg: RtmpMessage = { type: st.type, streamId: st.streamId, timestamp: st.timestamp, payload };
      this.#control(msg);
      out.push(msg);
    }
    return p - off;
  }

  #control(msg: RtmpMessage): void {
    if (msg.type === MessageType.SetChunkSize) {
      if (msg.payload.length < 4) throw new CodecError('rtmp', 'short Set Chunk Size');
      const size = msg.payload.readUInt32BE(0) & 0x7fffffff;
      if (size < 1 || size > this.#limits.maxChunkSize) {
        throw new CodecError('rtmp', `chunk size ${size} outside 1..${this.#limits.maxChunkSize}`);
      }
      this.#chunkSize = size;
    } else if (msg.type === MessageType.Abort) {
      if (msg.payload.length < 4) throw new CodecError('rtmp', 'short Abort');
      const st = this.#streams.get(msg.payload.readUInt32BE(0));
      if (st) st.payload = undefined;
    }
  }
}

function basicHeader(fmt: number, csid: number): Buffer {
  if (csid < 2 || csid > 65599) throw new RangeError(`chunk stream id ${csid}`);
  if (csid < 64) return Buffer.from([(fmt << 6) | csid]);
  if (csid < 320) return Buffer.from([fmt << 6, csid - 64]);
  return Buffer.from([(fmt << 6) | 1, (csid - 64) & 0xff, (csid - 64) >> 8]);
}

/**
 * Splits one message into chunks: a type 0 header, then type 3 continuations. Every message
 * stands alone (no header compression), so the same bytes can be sent to many connections.
 */
export function encodeMessage(csid: number, msg: RtmpMessage, chunkSize: number): Buffer {
  const len = msg.payload.length;
  if (len > 0xffffff) throw new RangeError(`message of ${len} bytes is too long for RTMP`);
  const ts = msg.timestamp >>> 0;
  const extended = ts >= 0xffffff;
  const b0 = basicHeader(0, csid);
  const b3 = basicHeader(3, csid);
  const ext = extended ? 4 : 0;
  const chunks = Math.max(1, Math.ceil(len / chunkSize));
  const out = Buffer.allocUnsafe(b0.length + 11 + ext + len + (chunks - 1) * (b3.length + ext));
  let p = b0.copy(out, 0);
  out.writeUIntBE(extended ? 0xffffff : ts, p, 3);
  out.writeUIntBE(len, p + 3, 3);
  out[p + 6] = msg.type;
  out.writeUInt32LE(msg.streamId, p + 7);
  p += 11;
  if (extended) p = out.writeUInt32BE(ts, p);
  for (let i = 0; i < len; i += chunkSize) {
    if (i > 0) {
      p += b3.copy(out, p);
      if (extended) p = out.writeUInt32BE(ts, p);
    }
    p += msg.payload.copy(out, p, i, Math.min(len, i + chunkSize));
  }
  return out;
}
