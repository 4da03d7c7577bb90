import test from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import { parseRtpPacket, ReorderBuffer, seqDelta, type RtpPacket } from '../../codecs/rtp.ts';
import { prng } from '../helpers/prng.ts';
import { randomBytes, serializeRtp } from '../webrtc/rtp-fixtures.ts';

const pkt = (seq: number, extra: Partial<RtpPacket> = {}): RtpPacket => ({
  payloadType: 96,
  sequenceNumber: seq & 0xffff,
  timestamp: 1000,
  ssrc: 42,
  marker: false,
  payload: new Uint8Array([seq & 0xff]),
  ...extra,
});

// --- header parser ---------------------------------------------------------------------------

test('parses the fixed header and payload', (t) => {
  const bytes = serializeRtp(pkt(65535, { payloadType: 111, marker: true, timestamp: 0xfffffff0, ssrc: 0xdeadbeef, payload: Uint8Array.of(1, 2, 3) }));
  const p = parseRtpPacket(bytes);
  t.is(p.payloadType, 111);
  t.true(p.marker);
  t.is(p.sequenceNumber, 65535);
  t.is(p.timestamp, 0xfffffff0);
  t.is(p.ssrc, 0xdeadbeef);
  t.deepEqual([...p.payload], [1, 2, 3]);
  t.deepEqual(p.csrcs, []);
  t.is(p.extension, undefined);
  t.is(p.paddingBytes, 0);
});

test('parses CSRCs, a header extension and padding', (t) => {
  const ext = { profile: 0xbede, data: Uint8Array.of(0x10, 0xaa, 0, 0, 0x22, 1, 2, 0) };
  const bytes = serializeRtp(pkt(7, { payload: Uint8Array.of(9, 8, 7, 6) }), { csrcs: [1, 2], extension: ext, padding: 3 });
  const p = parseRtpPacket(bytes);
  t.deepEqual(p.csrcs, [1, 2]);
  t.is(p.extension?.profile, 0xbede);
  t.deepEqual([...p.extension!.data], [...ext.data]);
  t.is(p.paddingBytes, 3);
  t.deepEqual([...p.payload], [9, 8, 7, 6]);
});

test('rejects malformed headers with a reason', (t) => {
  const good = serializeRtp(pkt(1, { payload: Uint8Array.of(1, 2, 3, 4) }));
  const cases: [string, Uint8Array, RegExp][] = [
    ['short', good.subarray(0, 11), /shorter than the 12-byte header/],
    ['version', Uint8Array.from(good, (v, i) => (i === 0 ? (v & 0x3f) | 0x40 : v)), /version 1/],
    ['csrc overflow', Uint8Array.from(good, (v, i) => (i === 0 ? v | 0x0f : v)), /CSRC count 15/],
    ['extension overflow', Uint8Array.from(good, (v, i) => (i === 0 ? v | 0x10 : v)), /extension/],
    ['padding 0', (() => { const b = Uint8Array.from(good); b[0]! |= 0x20; b[b.length - 1] = 0; return b; })(), /padding count of 0/],
    ['padding too long', (() => { const b = Uint8Array.from(good); b[0]! |= 0x20; b[b.length - 1] = 200; return b; })(), /padding of 200/],
    ['RTCP', Uint8Array.from(good, (v, i) => (i === 1 ? 200 : v)), /collides with RTCP/],
  ];
  for (const [name, bytes, re] of cases) {
    const err = t.throws(() => parseRtpPacket(bytes), { instanceOf: CodecError }, name);
    t.is(err?.format, 'rtp');
    t.regex(err?.reason ?? '', re, name);
  }
});

test('fuzz: random bytes and mutated packets only ever throw CodecError', (t) => {
  const rand = prng(0xc0ffee);
  const base = serializeRtp(pkt(100, { payload: randomBytes(rand, 40) }), { csrcs: [5], extension: { profile: 1, data: new Uint8Array(8) } });
  let ok = 0;
  for (let i = 0; i < 20000; i++) {
    let b: Uint8Array;
    if (i % 2 === 0) {
      b = randomBytes(rand, Math.floor(rand() * 64));
      if (b.length > 0) b[0] = (b[0]! & 0x3f) | 0x80;
    } else {
      b = Uint8Array.from(base.subarray(0, Math.floor(rand() * (base.length + 1))));
      for (let k = 0; k < 3 && b.length > 0; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    }
    try {
      const p = parseRtpPacket(b);
      ok++;
      t.true(p.payload.byteOffset >= b.byteOffset + 12 && p.payload.byteOffset + p.payload.length <= b.byteOffset + b.length);
    } catch (err) {
      if (!(err instanceof CodecError)) t.fail(`non-CodecError: ${String(err)}`);
    }
  }
  t.true(ok > 1000, `${ok} parsed`);
});

test('seqDelta handles wrap', (t) => {
  t.is(seqDelta(65535, 0), 1);
  t.is(seqDelta(0, 65535), -1);
  t.is(seqDelta(100, 200), 100);
  t.is(seqDelta(65000, 500), 1036);
  t.is(seqDelta(0, 32768), -32768);
});

// --- reorder buffer --------------------------------------------------------------------------

function buffer(capacity = 8, maxWaitMs = 100) {
  const out: number[] = [];
  const lost: number[] = [];
  const resets: [number, number][] = [];
  const rb = new ReorderBuffer<RtpPacket>({
    capacity,
    maxWaitMs,
    emit: (p) => out.push(p.sequenceNumber),
    lost: (n) => lost.push(n),
    reset: (a, b) => resets.push([a, b]),
  });
  return { rb, out, lost, resets };
}

test('reorder: in-order packets pass straight through', (t) => {
  const { rb, out } = buffer();
  for (let s = 10; s < 20; s++) rb.push(pkt(s), 0);
  t.deepEqual(out, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  t.is(rb.held, 0);
  t.is(rb.deadline, undefined);
});

test('reorder: a swapped pair is put back in order', (t) => {
  const { rb, out, lost } = buffer();
  for (const s of [1, 3, 2, 4, 6, 5]) rb.push(pkt(s), 0);
  t.deepEqual(out, [1, 2, 3, 4, 5, 6]);
  t.deepEqual(lost, []);
});

test('reorder: a gap waits maxWaitMs, then is given up and counted lost', (t) => {
  const { rb, out, lost } = buffer(8, 100);
  rb.push(pkt(1), 0);
  rb.push(pkt(3), 10);
  rb.push(pkt(4), 20);
  t.deepEqual(out, [1]);
  t.is(rb.deadline, 110);
  rb.poll(109);
  t.deepEqual(out, [1]);
  rb.poll(110);
  t.deepEqual(out, [1, 3, 4]);
  t.deepEqual(lost, [1]);
  rb.push(pkt(2), 120); // too late now
  t.is(rb.stats.late, 1);
  t.deepEqual(out, [1, 3, 4]);
});

test('reorder: a retransmission inside the wait fills the gap', (t) => {
  const { rb, out, lost } = buffer(8, 100);
  for (const s of [1, 2, 4, 5]) rb.push(pkt(s), 0);
  rb.push(pkt(3), 50);
  t.deepEqual(out, [1, 2, 3, 4, 5]);
  t.deepEqual(lost, []);
});

test('reorder: duplicates are dropped', (t) => {
  const { rb, out } = buffer();
  for (const s of [1, 1, 3, 3, 2, 2]) rb.push(pkt(s), 0);
  t.deepEqual(out, [1, 2, 3]);
  t.is(rb.stats.late, 3);
});

test('reorder: a packet capacity ahead forces the oldest gap to be skipped', (t) => {
  const { rb, out, lost } = buffer(4, 1000);
  rb.push(pkt(1), 0);
  rb.push(pkt(3), 0);
  rb.push(pkt(4), 0);
  rb.push(pkt(6), 0); // d = 4 from head 2: skip 2, emit 3, 4; 5 missing still fits
  t.deepEqual(out, [1, 3, 4]);
  t.deepEqual(lost, [1]);
  rb.push(pkt(5), 0);
  t.deepEqual(out, [1, 3, 4, 5, 6]);
});

test('reorder: wraps from 65535 to 0, in order and reordered', (t) => {
  const { rb, out, lost } = buffer(16, 100);
  for (const s of [65533, 65534, 0, 65535, 1, 3, 2]) rb.push(pkt(s), 0);
  t.deepEqual(out, [65533, 65534, 65535, 0, 1, 2, 3]);
  t.deepEqual(lost, []);
});

test('reorder: a huge jump either way restarts the sequence instead of counting loss', (t) => {
  const { rb, out, lost, resets } = buffer(16, 100);
  rb.push(pkt(100), 0);
  rb.push(pkt(102), 0);
  rb.push(pkt(20000), 0);
  t.deepEqual(out, [100, 102, 20000]);
  t.deepEqual(lost, [1]); // the held gap is flushed; the jump itself is not loss
  t.is(resets.length, 1);
  rb.push(pkt(20001), 0);
  rb.push(pkt(5), 0); // far behind: a restarted sender, not a late packet
  rb.push(pkt(6), 0);
  t.deepEqual(out, [100, 102, 20000, 20001, 5, 6]);
  t.is(resets.length, 2);
});

test('reorder: flush emits everything held in order', (t) => {
  const { rb, out, lost } = buffer(16, 1000);
  for (const s of [1, 4, 3, 7]) rb.push(pkt(s), 0);
  rb.flush();
  t.deepEqual(out, [1, 3, 4, 7]);
  t.deepEqual(lost, [1, 2]);
  t.is(rb.held, 0);
});

test('fuzz: reordered, duplicated and dropped packets come out strictly in order, each once', (t) => {
  for (let round = 0; round < 50; round++) {
    const rand = prng(round + 1);
    const cap = 4 + Math.floor(rand() * 60);
    const out: number[] = [];
    let lostCount = 0;
    const rb = new ReorderBuffer<RtpPacket>({ capacity: cap, maxWaitMs: 50, emit: (p) => out.push(p.sequenceNumber), lost: (n) => (lostCount += n) });
    const start = Math.floor(rand() * 65536);
    const n = 2000;
    // Jitter each packet's send position by up to cap/2, drop 5%, duplicate 3%.
    const sent: { seq: number; key: number }[] = [];
    for (let i = 0; i < n; i++) {
      if (rand() < 0.05) continue;
      sent.push({ seq: (start + i) & 0xffff, key: i + rand() * (cap / 2) });
      if (rand() < 0.03) sent.push({ seq: (start + i) & 0xffff, key: i + rand() * (cap / 2) });
    }
    sent.sort((a, b) => a.key - b.key);
    let now = 0;
    for (const s of sent) {
      now += 1;
      rb.push(pkt(s.seq), now);
    }
    rb.flush();
    // Strictly increasing in unwrapped order, no duplicates.
    for (let i = 1; i < out.length; i++) {
      const d = seqDelta(out[i - 1]!, out[i]!);
      if (d <= 0) {
        t.fail(`round ${round}: ${out[i - 1]} then ${out[i]}`);
        return;
      }
    }
    t.is(new Set(out).size, out.length);
    // Every packet pushed was either emitted or refused as late/duplicate...
    t.is(out.length + rb.stats.late, sent.length, `round ${round}`);
    // ...and every sequence number between the first and last emitted was emitted or counted lost.
    let span = 0;
    for (let i = 1; i < out.length; i++) span += seqDelta(out[i - 1]!, out[i]!);
    t.is(out.length + lostCount, span + 1, `round ${round}`);
    t.is(rb.stats.resets, 0);
  }
});
