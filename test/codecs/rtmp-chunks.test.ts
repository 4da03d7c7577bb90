import test from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import { ChunkReader, encodeMessage, type ChunkReaderLimits, type RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { prng } from '../helpers/prng.ts';

const LIMITS: ChunkReaderLimits = { maxChunkSize: 65536, maxMessageSize: 1 << 20 };

function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function setChunkSize(size: number): Buffer {
  return encodeMessage(2, { type: 1, streamId: 0, timestamp: 0, payload: u32(size) }, 128);
}

function msg(type: number, timestamp: number, payload: Buffer, streamId = 1): RtmpMessage {
  return { type, streamId, timestamp, payload };
}

/** Feeds in pieces: 'whole', 'bytes' (one at a time) or random cuts from a seed. */
function feed(reader: ChunkReader, data: Buffer, how: 'whole' | 'bytes' | number): RtmpMessage[] {
  const out: RtmpMessage[] = [];
  if (how === 'whole') return reader.push(data);
  if (how === 'bytes') {
    for (let i = 0; i < data.length; i++) out.push(...reader.push(data.subarray(i, i + 1)));
    return out;
  }
  const rand = prng(how);
  for (let i = 0; i < data.length; ) {
    const n = Math.min(data.length - i, 1 + ((rand() * 700) | 0));
    out.push(...reader.push(data.subarray(i, i + n)));
    i += n;
  }
  return out;
}

function plain(m: RtmpMessage) {
  return { type: m.type, streamId: m.streamId, timestamp: m.timestamp, payload: Buffer.from(m.payload).toString('hex') };
}

test('basic headers: 1, 2 and 3 bytes; type 0 header layout', (t) => {
  const payload = Buffer.from('abc');
  const m = msg(20, 0x123456, payload, 0x01020304);
  const a = encodeMessage(2, m, 128);
  t.deepEqual([...a], [0x02, 0x12, 0x34, 0x56, 0, 0, 3, 20, 0x04, 0x03, 0x02, 0x01, 0x61, 0x62, 0x63]);
  t.deepEqual([...encodeMessage(63, m, 128).subarray(0, 1)], [63]);
  t.deepEqual([...encodeMessage(64, m, 128).subarray(0, 2)], [0x00, 0]);
  t.deepEqual([...encodeMessage(100, m, 128).subarray(0, 2)], [0x00, 36]);
  t.deepEqual([...encodeMessage(319, m, 128).subarray(0, 2)], [0x00, 255]);
  t.deepEqual([...encodeMessage(320, m, 128).subarray(0, 3)], [0x01, 0, 1]);
  t.deepEqual([...encodeMessage(400, m, 128).subarray(0, 3)], [0x01, 80, 1]);
  t.deepEqual([...encodeMessage(65599, m, 128).subarray(0, 3)], [0x01, 255, 255]);
  t.throws(() => encodeMessage(1, m, 128), { instanceOf: RangeError });
  t.throws(() => encodeMessage(65600, m, 128), { instanceOf: RangeError });
  for (const csid of [2, 100, 400]) {
    const r = new ChunkReader(LIMITS);
    t.deepEqual(r.push(encodeMessage(csid, m, 128)).map(plain), [plain(m)], `csid ${csid}`);
  }
});

test('extended timestamps: 0xffffff marker, 4 more bytes in every chunk', (t) => {
  const payload = Buffer.alloc(300, 7);
  const enc = encodeMessage(3, msg(9, 0x01000000, payload), 128);
  t.is(enc.length, 1 + 11 + 4 + 128 + (1 + 4 + 128) + (1 + 4 + 44));
  t.deepEqual([...enc.subarray(1, 4)], [0xff, 0xff, 0xff]);
  t.deepEqual([...enc.subarray(12, 16)], [0x01, 0, 0, 0]);
  t.is(enc[16 + 128], 0xc3, 'a type 3 continuation');
  t.deepEqual([...enc.subarray(16 + 129, 16 + 133)], [0x01, 0, 0, 0]);
  // Just under the marker needs no extension; the marker value itself does.
  t.is(encodeMessage(3, msg(9, 0xfffffe, payload), 128).length, enc.length - 12);
  t.is(encodeMessage(3, msg(9, 0xffffff, payload), 128).length, enc.length);
});

test('round trip over sizes, chunk sizes, timestamps and chunk stream ids, fed whole, in random cuts and byte by byte', (t) => {
  const sizes = [0, 1, 127, 128, 129, 256, 1000, 4095, 4096, 4097, 70000];
  const chunkSizes = [1, 100, 128, 129, 4096, 65536];
  const stamps = [0, 1, 0xfffffe, 0xffffff, 0x1000000, 0xffffffff];
  const csids = [2, 3, 63, 64, 100, 319, 320, 400, 65599];
  const rand = prng(42);
  let checked = 0;
  for (const chunkSize of chunkSizes) {
    const msgs: RtmpMessage[] = [];
    const parts: Buffer[] = [setChunkSize(chunkSize)];
    let i = 0;
    for (const size of sizes) {
      for (const ts of stamps) {
        const csid = csids[i++ % csids.length]!;
        const m = msg(8 + (i % 13), ts, randomBytes(rand, size), i % 3 === 0 ? 0xfffffffe : i % 5);
        msgs.push(m);
        parts.push(encodeMessage(csid, m, chunkSize));
      }
    }
    const data = Buffer.concat(parts);
    const expected = [{ type: 1, streamId: 0, timestamp: 0, payload: u32(chunkSize).toString('hex') }, ...msgs.map(plain)];
    for (const how of ['whole', chunkSize * 7 + 1] as const) {
      const r = new ChunkReader(LIMITS);
      const got = feed(r, data, how).map(plain);
      t.deepEqual(got, expected, `chunk size ${chunkSize}, fed ${how}`);
      t.is(r.chunkSize, chunkSize);
      t.is(r.bytesRead, data.length);
      checked += got.length;
    }
    // Byte at a time: every message up to 4097 bytes (the larger ones are quadratic to feed this way).
    const small = Buffer.concat([setChunkSize(chunkSize), ...msgs.filter((m) => m.payload.length <= 4097).map((m, k) => encodeMessage(csids[k % csids.length]!, m, chunkSize))]);
    const r = new ChunkReader(LIMITS);
    const got = feed(r, small, 'bytes');
    t.is(got.length, 1 + msgs.filter((m) => m.payload.length <= 4097).length);
    t.deepEqual(got.slice(1).map(plain), msgs.filter((m) => m.payload.length <= 4097).map(plain), `chunk size ${chunkSize}, byte by byte`);
    checked += got.length;
  }
  t.true(checked > 1000);
});

test('interleaved chunk streams reassemble independently', (t) => {
  const a = msg(9, 100, Buffer.alloc(300, 0xaa));
  const b = msg(8, 200, Buffer.alloc(200, 0xbb));
  const ea = encodeMessage(6, a, 128); // 12+128, 1+128, 1+44
  const eb = encodeMessage(4, b, 128); // 12+128, 1+72
  const data = Buffer.concat([ea.subarray(0, 140), eb.subarray(0, 140), ea.subarray(140, 269), eb.subarray(140), ea.subarray(269)]);
  const r = new ChunkReader(LIMITS);
  t.deepEqual(feed(r, data, 'bytes').map(plain), [plain(b), plain(a)]);
});

test('Set Chunk Size is applied to the chunks that follow in the same push', (t) => {
  const r = new ChunkReader({ maxChunkSize: 4096, maxMessageSize: 1 << 20 });
  t.is(r.chunkSize, 128);
  const m = msg(9, 5, Buffer.alloc(1000, 1));
  const out = r.push(Buffer.concat([setChunkSize(1000), encodeMessage(5, m, 1000)]));
  t.is(out.length, 2);
  t.is(out[0]!.type, 1);
  t.is(r.chunkSize, 1000);
  t.deepEqual(plain(out[1]!), plain(m));
  // Read with the old size, the same bytes are not one message: the new size really was applied.
  let misread: RtmpMessage[] = [];
  try {
    misread = new ChunkReader(LIMITS).push(encodeMessage(5, m, 1000));
  } catch (err) {
    t.true(err instanceof CodecError);
  }
  t.false(misread.some((x) => x.payload.equals(m.payload)));
  // The top bit is ignored, as the spec says.
  r.push(setChunkSize(0x80000000 | 2048));
  t.is(r.chunkSize, 2048);
});

test('Abort discards the partial message on that chunk stream', (t) => {
  const r = new ChunkReader(LIMITS);
  const big = encodeMessage(5, msg(9, 0, Buffer.alloc(300, 0xee)), 128);
  t.deepEqual(r.push(big.subarray(0, 12 + 128)), []);
  // Without Abort, a new type 0 header here is a protocol violation...
  const probe = new ChunkReader(LIMITS);
  probe.push(big.subarray(0, 140));
  t.throws(() => probe.push(encodeMessage(5, msg(8, 0, Buffer.from('x')), 128)), { instanceOf: CodecError });
  // ...after Abort it starts a fresh message.
  const abort = r.push(encodeMessage(2, { type: 2, streamId: 0, timestamp: 0, payload: u32(5) }, 128));
  t.is(abort.length, 1);
  t.is(abort[0]!.type, 2);
  const next = msg(8, 77, Buffer.from('fresh'));
  t.deepEqual(r.push(encodeMessage(5, next, 128)).map(plain), [plain(next)]);
  // Aborting an idle or unknown chunk stream is harmless.
  t.is(r.push(encodeMessage(2, { type: 2, streamId: 0, timestamp: 0, payload: u32(33) }, 128)).length, 1);
});

test('over-limit message length and chunk size are rejected with CodecError before the payload is buffered', (t) => {
  const limits = { maxChunkSize: 4096, maxMessageSize: 1000 };
  t.is(new ChunkReader(limits).push(encodeMessage(4, msg(9, 0, Buffer.alloc(1000)), 128)).length, 1, 'exactly the limit is fine');
  const header = encodeMessage(4, msg(9, 0, Buffer.alloc(1001)), 128).subarray(0, 12);
  const err = t.throws(() => new ChunkReader(limits).push(header), { instanceOf: CodecError });
  t.is(err?.format, 'rtmp');
  t.regex(err!.reason, /1001 bytes exceeds the limit of 1000/);

  const ok = new ChunkReader(limits);
  ok.push(setChunkSize(4096));
  t.is(ok.chunkSize, 4096);
  t.throws(() => new ChunkReader(limits).push(setChunkSize(4097)), { instanceOf: CodecError, message: /chunk size 4097/ });
  t.throws(() => new ChunkReader(limits).push(setChunkSize(0)), { instanceOf: CodecError });
  t.throws(() => new ChunkReader(limits).push(encodeMessage(2, msg(1, 0, Buffer.from([0, 1])), 128)), {
    instanceOf: CodecError,
    message: /short Set Chunk Size/,
  });
  t.throws(() => new ChunkReader(limits).push(encodeMessage(2, msg(2, 0, Buffer.from([0])), 128)), { instanceOf: CodecError, message: /short Abort/ });
});

test('protocol violations are CodecErrors', (t) => {
  // A chunk stream cannot start with a type 1, 2 or 3 header.
  for (const b0 of [0x44, 0x84, 0xc4]) {
    t.throws(() => new ChunkReader(LIMITS).push(Buffer.from([b0, 0, 0, 0, 0, 0, 1, 8, 0, 0, 0, 0])), { instanceOf: CodecError });
  }
  // Message type 0.
  t.throws(() => new ChunkReader(LIMITS).push(encodeMessage(3, msg(0, 0, Buffer.from('x')), 128)), { instanceOf: CodecError, message: /type 0/ });
  // Too many chunk streams with state.
  const r = new ChunkReader({ ...LIMITS, maxChunkStreams: 3 });
  r.push(Buffer.concat([3, 4, 5].map((c) => encodeMessage(c, msg(8, 0, Buffer.from('x')), 128))));
  t.throws(() => r.push(encodeMessage(6, msg(8, 0, Buffer.from('x')), 128)), { instanceOf: CodecError, message: /too many chunk streams/ });
});

/** Builds one chunk by hand: basic header for csid < 64, then the header fields of its fmt. */
function chunk(fmt: 0 | 1 | 2 | 3, csid: number, h: { ts?: number; len?: number; type?: number; sid?: number; ext?: number }, payload: Buffer): Buffer {
  const parts: Buffer[] = [Buffer.from([(fmt << 6) | csid])];
  if (fmt <= 2) {
    const f = Buffer.alloc(fmt === 0 ? 11 : fmt === 1 ? 7 : 3);
    f.writeUIntBE(h.ts!, 0, 3);
    if (fmt <= 1) {
      f.writeUIntBE(h.len!, 3, 3);
      f[6] = h.type!;
    }
    if (fmt === 0) f.writeUInt32LE(h.sid!, 7);
    parts.push(f);
  }
  if (h.ext !== undefined) parts.push(u32(h.ext));
  parts.push(payload);
  return Buffer.concat(parts);
}

test('type 1, 2 and 3 header compression as librtmp sends it', (t) => {
  const p = (s: string) => Buffer.from(s);
  const big = Buffer.alloc(200, 0x5a);
  const data = Buffer.concat([
    chunk(0, 4, { ts: 1000, len: 4, type: 8, sid: 1 }, p('AAAA')), // absolute 1000
    chunk(2, 4, { ts: 23 }, p('BBBB')), // delta 23 -> 1023
    chunk(3, 4, {}, p('CCCC')), // same delta -> 1046
    chunk(3, 4, {}, p('DDDD')), // -> 1069
    chunk(1, 4, { ts: 21, len: 6, type: 9 }, p('EEEEEE')), // new length and type, delta 21 -> 1090
    chunk(3, 4, {}, p('FFFFFF')), // -> 1111
    chunk(1, 4, { ts: 10, len: 200, type: 9 }, big.subarray(0, 128)), // -> 1121, two chunks
    chunk(3, 4, {}, big.subarray(128)), // a continuation adds no delta
    chunk(3, 4, {}, big.subarray(0, 128)), // a new message: -> 1131
    chunk(3, 4, {}, big.subarray(128)),
    chunk(2, 4, { ts: 0xffffff, ext: 0x01000000 }, big.subarray(0, 128)), // extended delta -> 1131 + 2^24
    chunk(3, 4, { ext: 0x01000000 }, big.subarray(128)), // continuations repeat the extended field
    chunk(3, 4, { ext: 0x01000000 }, big.subarray(0, 128)), // new message, same extended delta -> 1131 + 2^25
    chunk(3, 4, { ext: 0x01000000 }, big.subarray(128)),
    chunk(0, 4, { ts: 0xffffff, len: 1, type: 8, sid: 1, ext: 0xfffffff0 }, p('G')), // absolute extended
    chunk(2, 4, { ts: 0x20 }, p('H')), // wraps at 32 bits -> 0x10
  ]);
  const expect = [
    [8, 1000, 'AAAA'],
    [8, 1023, 'BBBB'],
    [8, 1046, 'CCCC'],
    [8, 1069, 'DDDD'],
    [9, 1090, 'EEEEEE'],
    [9, 1111, 'FFFFFF'],
    [9, 1121, big.toString()],
    [9, 1131, big.toString()],
    [9, 1131 + 0x01000000, big.toString()],
    [9, 1131 + 0x02000000, big.toString()],
    [8, 0xfffffff0, 'G'],
    [8, 0x10, 'H'],
  ];
  for (const how of ['whole', 'bytes', 9] as const) {
    const got = feed(new ChunkReader(LIMITS), data, how).map((m) => [m.type, m.timestamp, m.payload.toString()]);
    t.deepEqual(got, expect, `fed ${how}`);
  }
  const all = new ChunkReader(LIMITS).push(data);
  t.true(all.every((m) => m.streamId === 1), 'the stream id carries over from the type 0 header');
  // A type 1 header in the middle of a message is a violation.
  const bad = Buffer.concat([chunk(0, 4, { ts: 0, len: 200, type: 9, sid: 1 }, big.subarray(0, 128)), chunk(1, 4, { ts: 0, len: 5, type: 8 }, p('xxxxx'))]);
  t.throws(() => new ChunkReader(LIMITS).push(bad), { instanceOf: CodecError, message: /before the message of 200 bytes was complete/ });
});

test('seeded fuzz: random and mutated inputs raise only CodecError, quickly', (t) => {
  const rand = prng(0x7ab5);
  const limits: ChunkReaderLimits = { maxChunkSize: 4096, maxMessageSize: 16384 };
  const int = (n: number) => (rand() * n) | 0;
  function validStream(): { data: Buffer; msgs: RtmpMessage[] } {
    const parts: Buffer[] = [];
    const msgs: RtmpMessage[] = [];
    let chunkSize = 128;
    const n = 1 + int(6);
    for (let i = 0; i < n; i++) {
      if (rand() < 0.2) {
        chunkSize = 1 + int(4096);
        parts.push(setChunkSize(chunkSize));
        msgs.push(msg(1, 0, u32(chunkSize), 0));
      }
      const size = rand() < 0.5 ? int(200) : int(16384);
      const ts = rand() < 0.2 ? 0xffff00 + int(0x200) : int(0x1000000);
      const m = msg([8, 9, 18, 20][int(4)]!, ts, randomBytes(rand, size), int(4));
      const csid = [2, 3, 4, 5, 8, 64, 100, 400][int(8)]!;
      parts.push(encodeMessage(csid, m, chunkSize));
      msgs.push(m);
    }
    return { data: Buffer.concat(parts), msgs };
  }
  function mutate(b: Buffer): Buffer {
    const kind = int(5);
    if (b.length === 0) return randomBytes(rand, 1 + int(64));
    if (kind === 0) {
      const c = Buffer.from(b);
      for (let k = 1 + int(8); k > 0; k--) c[int(c.length)] = int(256);
      return c;
    }
    if (kind === 1) {
      const at = int(b.length);
      return Buffer.concat([b.subarray(0, at), randomBytes(rand, 1 + int(32)), b.subarray(at)]);
    }
    if (kind === 2) {
      const at = int(b.length);
      return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(64)))]);
    }
    if (kind === 3) return b.subarray(0, int(b.length));
    const at = int(b.length);
    return Buffer.concat([b.subarray(0, at), b.subarray(int(b.length)), b.subarray(at)]);
  }

  const started = performance.now();
  const counts = { rejected: 0, accepted: 0, messages: 0, verified: 0 };
  const escaped: string[] = [];
  const runs = 5000;
  for (let i = 0; i < runs; i++) {
    let input: Buffer;
    let expected: RtmpMessage[] | undefined;
    const mode = i % 4;
    if (mode === 0) input = randomBytes(rand, int(600));
    else {
      const v = validStream();
      if (mode === 1) {
        input = v.data;
        expected = v.msgs;
      } else input = mode === 2 ? mutate(v.data) : mutate(mutate(v.data));
    }
    const r = new ChunkReader(limits);
    try {
      const got = feed(r, input, i);
      counts.accepted++;
      counts.messages += got.length;
      if (expected) {
        if (JSON.stringify(got.map(plain)) === JSON.stringify(expected.map(plain))) counts.verified++;
        else escaped.push(`run ${i}: a valid stream decoded differently`);
      }
    } catch (err) {
      if (err instanceof CodecError && err.format === 'rtmp') counts.rejected++;
      else escaped.push(`run ${i}: ${String(err)}`);
    }
  }
  const elapsed = performance.now() - started;
  t.deepEqual(escaped.slice(0, 5), []);
  t.is(counts.verified, runs / 4, 'every unmutated stream decodes exactly');
  t.true(counts.rejected > runs / 10, `many inputs were rejected (${counts.rejected})`);
  t.true(counts.accepted > runs / 4, `many were accepted (${counts.accepted})`);
  t.log(`fuzz: ${JSON.stringify(counts)} in ${Math.round(elapsed)} ms`);
});
