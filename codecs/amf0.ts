/**
 * AMF0 (Action Message Format 0): the encoding of RTMP commands (`connect`, `publish`, ...) and of FLV/RTMP
 * data messages (`@setDataFrame`, `onMetaData`).
 *
 * The decoder reads untrusted bytes from the network: every length is checked against the bytes that remain,
 * nesting depth and item counts are bounded, and anything else is a CodecError('amf0', reason).
 */
import { CodecError } from './errors.ts';

export interface AmfObject {
  [key: string]: AmfValue;
}
export type AmfValue = number | boolean | string | null | undefined | Date | AmfObject | AmfValue[];

export interface AmfLimits {
  /** Deepest nesting of objects and arrays; a top-level object is depth 1. Default 16, capped at 1000 so
   *  the recursive decoder can never overflow the stack. */
  maxDepth?: number;
  /** Most properties or elements in one object or array. Default 4096. */
  maxItems?: number;
}

const enum Marker {
  Number = 0x00,
  Boolean = 0x01,
  String = 0x02,
  Object = 0x03,
  MovieClip = 0x04,
  Null = 0x05,
  Undefined = 0x06,
  Reference = 0x07,
  EcmaArray = 0x08,
  ObjectEnd = 0x09,
  StrictArray = 0x0a,
  Date = 0x0b,
  LongString = 0x0c,
  Unsupported = 0x0d,
  RecordSet = 0x0e,
  XmlDocument = 0x0f,
  TypedObject = 0x10,
  Amf3Switch = 0x11,
}

const fail = (reason: string): never => {
  throw new CodecError('amf0', reason);
};

/**
 * Lenient UTF-8: publishers put free text (titles, encoder names) in metadata, sometimes in Latin-1; a bad
 * byte becomes U+FFFD rather than failing the whole command.
 */
const utf8 = new TextDecoder('utf-8', { fatal: false });

/** Sets a property as an own data property, so a key such as `__proto__` cannot reach the prototype. */
function defineProp(obj: AmfObject, key: string, value: AmfValue): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

class Reader {
  pos = 0;
  private readonly view: DataView;

  constructor(
    private readonly buf: Uint8Array,
    private readonly maxDepth: number,
    private readonly maxItems: number,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, what: string): void {
    if (n > this.remaining) fail(`truncated ${what}: need ${n} bytes at offset ${this.pos}, have ${this.remaining}`);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }

  private u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  private u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  private f64(what: string): number {
    this.need(8, what);
    const v = this.view.getFloat64(this.pos);
    this.pos += 8;
    return v;
  }

  private utf8(len: number, what: string): string {
    this.need(len, `${what} (declared length ${len})`);
    const s = utf8.decode(this.buf.subarray(this.pos, this.pos + len));
    this.pos += len;
    return s;
  }

  value(depth: number): AmfValue {
    const at = this.pos;
    const marker = this.u8('value marker');
    switch (marker) {
      case Marker.Number:
        return this.f64('number');
      case Marker.Boolean:
        return this.u8('boolean') !== 0;
      case Marker.String:
        return this.utf8(this.u16('string length'), 'string');
      case Marker.LongString:
        return this.utf8(this.u32('long string length'), 'long string');
      case Marker.Null:
        return null;
      case Marker.Undefined:
        return undefined;
      case Marker.Date: {
        const ms = this.f64('date');
        this.u16('date time zone'); // reserved, always 0; the time is UTC
        return new Date(ms);
      }
      case Marker.Object:
        return this.properties(this.enter(depth, 'object'), 'object');
      case Marker.EcmaArray: {
        // The count is only a hint (some encoders write 0); the end marker decides, and maxItems bounds it.
        this.u32('ECMA array count');
        return this.properties(this.enter(depth, 'ECMA array'), 'ECMA array');
      }
      case Marker.TypedObject: {
        // The class name has no meaning here; the properties are what callers read.
        this.utf8(this.u16('typed object class name length'), 'typed object class name');
        return this.properties(this.enter(depth, 'typed object'), 'typed object');
      }
      case Marker.StrictArray:
        return this.strictArray(this.enter(depth, 'strict array'));
      case Marker.Reference:
        return fail(`reference marker (0x07) at offset ${at} is not supported`);
      case Marker.Amf3Switch:
        return fail(`AMF3 switch marker (0x11) at offset ${at} is not supported`);
      case Marker.ObjectEnd:
        return fail(`object end marker (0x09) at offset ${at} where a value was expected`);
      default:
        return fail(`unknown or unsupported marker 0x${marker.toString(16).padStart(2, '0')} at offset ${at}`);
    }
  }

  private enter(depth: number, what: string): number {
    const d = depth + 1;
    if (d > this.maxDepth) fail(`${what} nested deeper than ${this.maxDepth}`);
    return d;
  }

  /** Key/value pairs up to the empty key followed by the object end marker. */
  private properties(depth: number, what: string): AmfObject {
    const obj: AmfObject = {};
    for (let items = 0; ; items++) {
      const key = this.utf8(this.u16(`${what} key length`), `${what} key`);
      if (key === '') {
        // A strict decoder: an empty key must be the end of the object, not a property.
        const at = this.pos;
        const end = this.u8(`${what} end marker`);
        if (end !== Marker.ObjectEnd) fail(`${what} empty key at offset ${at - 2} not followed by end marker`);
        return obj;
      }
      if (items >= this.maxItems) fail(`${what} has more than ${this.maxItems} properties`);
      defineProp(obj, key, this.value(depth));
    }
  }

  private strictArray(depth: number): AmfValue[] {
    const count = this.u32('strict array count');
    if (count > this.maxItems) fail(`strict array count ${count} exceeds ${this.maxItems}`);
    // Every element is at least one byte (its marker): a count larger than what remains is a lie.
    if (count > this.remaining) fail(`strict array count ${count} exceeds the ${this.remaining} bytes that remain`);
    const out: AmfValue[] = [];
    for (let i = 0; i < count; i++) out.push(this.value(depth));
    return out;
  }
}

const MAX_DEPTH_CAP = 1000;

/** Decodes every AMF0 value in `buf`, in order (an RTMP command is a sequence of values). */
export function decodeAmf0(buf: Uint8Array, limits: AmfLimits = {}): AmfValue[] {
  const r = new Reader(buf, Math.min(limits.maxDepth ?? 16, MAX_DEPTH_CAP), limits.maxItems ?? 4096);
  const values: AmfValue[] = [];
  while (r.remaining > 0) values.push(r.value(0));
  return values;
}

/** A growable byte buffer, so encoding needs no size pre-pass. */
class Writer {
  private buf = Buffer.alloc(256);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.len++] = v;
  }

  u16(v: number): void {
    this.reserve(2);
    this.buf.writeUInt16BE(v, this.len);
    this.len += 2;
  }

  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32BE(v, this.len);
    this.len += 4;
  }

  f64(v: number): void {
    this.reserve(8);
    this.buf.writeDoubleBE(v, this.len);
    this.len += 8;
  }

  bytes(b: Buffer): void {
    this.reserve(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }

  /** A short UTF-8 string: 16-bit length, no marker (object keys and the body of a 0x02 string). */
  shortString(s: string, what: string): void {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff) fail(`${what} is ${b.length} bytes, longer than 65535`);
    this.u16(b.length);
    this.bytes(b);
  }

  result(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

function encodeValue(w: Writer, v: AmfValue, ancestors: Set<object>): void {
  if (v === null) return w.u8(Marker.Null);
  if (v === undefined) return w.u8(Marker.Undefined);
  switch (typeof v) {
    case 'number':
      w.u8(Marker.Number);
      return w.f64(v);
    case 'boolean':
      w.u8(Marker.Boolean);
      return w.u8(v ? 1 : 0);
    case 'string': {
      const b = Buffer.from(v, 'utf8');
      if (b.length > 0xffff) {
        w.u8(Marker.LongString);
        w.u32(b.length);
      } else {
        w.u8(Marker.String);
        w.u16(b.length);
      }
      return w.bytes(b);
    }
    case 'object':
      break;
    default:
      return fail(`cannot encode a value of type ${typeof v}`);
  }
  if (v instanceof Date) {
    w.u8(Marker.Date);
    w.f64(v.getTime());
    return w.u16(0);
  }
  // Our own values, but a cycle would otherwise recurse until the stack overflows.
  if (ancestors.has(v)) fail('cannot encode a cyclic value');
  ancestors.add(v);
  if (Array.isArray(v)) {
    w.u8(Marker.StrictArray);
    w.u32(v.length);
    for (let i = 0; i < v.length; i++) encodeValue(w, v[i], ancestors); // holes encode as undefined
  } else {
    w.u8(Marker.Object);
    for (const [key, value] of Object.entries(v)) {
      if (key === '') fail('cannot encode an object property with an empty key (it reads as the end marker)');
      w.shortString(key, `object key "${key.slice(0, 32)}"`);
      encodeValue(w, value, ancestors);
    }
    w.u16(0);
    w.u8(Marker.ObjectEnd);
  }
  ancestors.delete(v);
}

/**
 * Encodes values back to back. Objects become anonymous objects (0x03), arrays strict arrays, Dates dates,
 * and strings longer than 65535 UTF-8 bytes long strings.
 */
export function encodeAmf0(...values: AmfValue[]): Buffer {
  const w = new Writer();
  const ancestors = new Set<object>();
  for (const v of values) encodeValue(w, v, ancestors);
  return w.result();
}
