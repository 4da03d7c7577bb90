import test from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import {
  avccLength,
  H264Depacketizer,
  splitStapA,
  writeAvcc,
  type H264AccessUnit,
  type H264RtpPacket,
} from '../../codecs/rtp-h264.ts';
import { prng } from '../helpers/prng.ts';
import { nal, packetizeH264, PARAMS, randomBytes } from '../webrtc/rtp-fixtures.ts';

const { sps, pps } = PARAMS.baseline640x360;

function depack() {
  const drops: string[] = [];
  const d = new H264Depacketizer({ onDrop: (reason) => drops.push(reason) });
  const units: H264AccessUnit[] = [];
  const push = (ps: readonly H264RtpPacket[]): void => {
    for (const p of ps) units.push(...d.push(p));
  };
  return { d, drops, units, push };
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

test('single NAL unit packets make an access unit closed by the marker', (t) => {
  const { units, push, drops } = depack();
  const slice = nal(1, 300);
  push(packetizeH264([slice], { seq: 10, ts: 3000, stap: false }));
  t.is(units.length, 1);
  t.is(units[0]!.timestamp, 3000);
  t.false(units[0]!.keyframe);
  t.is(units[0]!.nalus.length, 1);
  t.true(same(units[0]!.nalus[0]!, slice));
  t.deepEqual(drops, []);
});

test('STAP-A with SPS, PPS and an IDR: parameter sets come out separately, keyframe set', (t) => {
  const { units, push } = depack();
  const sei = nal(6, 20);
  const idr = nal(5, 500);
  const aud = Uint8Array.of(0x09, 0xf0);
  push(packetizeH264([aud, sps, pps, sei, idr], { seq: 1, ts: 90000 }));
  t.is(units.length, 1);
  const au = units[0]!;
  t.true(au.keyframe);
  t.true(same(au.sps!, sps));
  t.true(same(au.pps!, pps));
  t.is(au.nalus.length, 2, 'AUD, SPS and PPS are taken out; SEI and IDR stay');
  t.true(same(au.nalus[0]!, sei));
  t.true(same(au.nalus[1]!, idr));
});

test('FU-A fragments are reassembled byte for byte', (t) => {
  const { units, push } = depack();
  const idr = nal(5, 10_000);
  const packets = packetizeH264([sps, pps, idr], { seq: 500, ts: 1, mtu: 1000 });
  t.true(packets.length > 10);
  push(packets);
  t.is(units.length, 1);
  t.true(same(units[0]!.nalus[0]!, idr));
  t.true(units[0]!.keyframe);
});

test('several slices in one access unit, mixing single, STAP-A and FU-A', (t) => {
  const { units, push } = depack();
  const slices = [nal(5, 3000), nal(5, 100), nal(5, 90), nal(5, 2500)];
  push(packetizeH264(slices, { seq: 7, ts: 3003, mtu: 1200 }));
  t.is(units.length, 1);
  t.is(units[0]!.nalus.length, 4);
  slices.forEach((s, i) => t.true(same(units[0]!.nalus[i]!, s)));
});

test('an access unit without a marker ends when the timestamp changes', (t) => {
  const { units, push } = depack();
  push(packetizeH264([nal(1, 50)], { seq: 1, ts: 1000, marker: false }));
  t.is(units.length, 0);
  push(packetizeH264([nal(1, 60)], { seq: 2, ts: 4000 }));
  t.deepEqual(units.map((u) => u.timestamp), [1000, 4000]);
});

test('SPS and PPS on their own packets (with their own marker) join the next access unit', (t) => {
  const { units, push } = depack();
  push(packetizeH264([sps], { seq: 1, ts: 9000, stap: false }));
  push(packetizeH264([pps], { seq: 2, ts: 9000, stap: false }));
  t.is(units.length, 0);
  push(packetizeH264([nal(5, 400)], { seq: 3, ts: 9000 }));
  t.is(units.length, 1);
  t.true(same(units[0]!.sps!, sps));
  t.true(same(units[0]!.pps!, pps));
  t.true(units[0]!.keyframe);
  // Consumed: the next unit does not carry them again.
  push(packetizeH264([nal(1, 40)], { seq: 4, ts: 12000 }));
  t.is(units[1]!.sps, undefined);
});

test('loss in the middle of a FU-A drops that access unit and reports it; the next one is whole', (t) => {
  const { units, push, drops, d } = depack();
  const big = packetizeH264([nal(5, 6000)], { seq: 100, ts: 1000, mtu: 1000 });
  const next = packetizeH264([nal(1, 800)], { seq: 100 + big.length, ts: 4000 });
  push([...big.slice(0, 3), ...big.slice(4)]);
  push(next);
  t.is(units.length, 1);
  t.is(units[0]!.timestamp, 4000);
  t.deepEqual(drops, ['packet loss inside the access unit']);
  t.is(d.stats.dropped, 1);
  t.is(d.stats.gaps, 1);
});

test('loss between access units drops the unit after the gap (its start may be what was lost)', (t) => {
  const { units, push, drops } = depack();
  push(packetizeH264([nal(1, 100)], { seq: 1, ts: 1000 }));
  push(packetizeH264([nal(1, 100)], { seq: 3, ts: 4000 })); // seq 2 lost
  push(packetizeH264([nal(1, 100)], { seq: 4, ts: 7000 }));
  t.deepEqual(units.map((u) => u.timestamp), [1000, 7000]);
  t.deepEqual(drops, ['packet loss before the access unit']);
});

test('a lost marker packet: the unit is dropped when the next timestamp shows up', (t) => {
  const { units, push, drops } = depack();
  const a = packetizeH264([nal(5, 3000)], { seq: 1, ts: 1000, mtu: 1000 });
  push(a.slice(0, -1));
  push(packetizeH264([nal(1, 100)], { seq: a.length + 1, ts: 4000 }));
  push(packetizeH264([nal(1, 100)], { seq: a.length + 2, ts: 7000 }));
  t.deepEqual(units.map((u) => u.timestamp), [7000]);
  t.is(drops.length, 2);
});

test('sequence numbers wrapping 65535 -> 0 inside and between access units', (t) => {
  const { units, push, drops } = depack();
  const a = packetizeH264([nal(5, 5000)], { seq: 65533, ts: 0xfffffff0, mtu: 1000 });
  t.is(a[a.length - 1]!.sequenceNumber, (65533 + a.length - 1) & 0xffff);
  push(a);
  push(packetizeH264([nal(1, 100)], { seq: (65533 + a.length) & 0xffff, ts: 2000 }));
  t.is(units.length, 2);
  t.deepEqual(drops, []);
});

test('malformed payloads drop their unit with a reason instead of throwing', (t) => {
  const cases: [string, Uint8Array[], RegExp][] = [
    ['STAP-B', [Uint8Array.of(25, 0, 0, 0, 2, 0x65, 1)], /STAP-B/],
    ['MTAP16', [Uint8Array.of(26, 1, 2, 3)], /MTAP16/],
    ['FU-B', [Uint8Array.of(29, 0x85, 1)], /FU-B/],
    ['truncated STAP-A', [Uint8Array.of(24, 0, 10, 0x65, 1)], /runs past/],
    ['STAP-A size 0', [Uint8Array.of(24, 0, 0)], /size 0/],
    ['FU-A without start', [Uint8Array.of(28, 0x05, 1, 2)], /without its start/],
    ['FU-A too short', [Uint8Array.of(28, 0x85)], /no fragment/],
    ['FU-A of STAP', [Uint8Array.of(28, 0x98, 1)], /fragments NAL type 24/],
    ['forbidden bit', [Uint8Array.of(0xe5, 1, 2)], /forbidden_zero_bit/],
    ['FU-A restart', [Uint8Array.of(0x7c, 0x85, 1), Uint8Array.of(0x7c, 0x85, 2)], /start inside an unfinished/],
  ];
  for (const [name, payloads, re] of cases) {
    const { units, push, drops } = depack();
    push(payloads.map((payload, i) => ({ sequenceNumber: i, timestamp: 5, marker: i === payloads.length - 1, payload })));
    t.is(units.length, 0, name);
    t.is(drops.length, 1, name);
    t.regex(drops[0] ?? '', re, name);
    // And it recovers on the next unit.
    push([{ sequenceNumber: payloads.length, timestamp: 9, marker: true, payload: nal(1, 30) }]);
    t.is(units.length, 1, `${name} recovers`);
  }
});

test('padding-only packets (empty payload) keep the sequence and change nothing, even with another timestamp', (t) => {
  const { units, push, drops } = depack();
  const a = packetizeH264([nal(5, 3000)], { seq: 10, ts: 1000, mtu: 1000 });
  push(a.slice(0, 1));
  push([{ sequenceNumber: 11, timestamp: 999, marker: false, payload: new Uint8Array(0) }]);
  push(a.slice(1).map((p) => ({ ...p, sequenceNumber: p.sequenceNumber + 1 })));
  push([{ sequenceNumber: 10 + a.length + 1, timestamp: 1000, marker: false, payload: new Uint8Array(0) }]);
  push(packetizeH264([nal(1, 100)], { seq: 10 + a.length + 2, ts: 4000 }));
  t.deepEqual(units.map((u) => u.timestamp), [1000, 4000]);
  t.deepEqual(drops, []);
  // A gap before padding still marks the next unit.
  push([{ sequenceNumber: 10 + a.length + 5, timestamp: 4000, marker: false, payload: new Uint8Array(0) }]);
  push(packetizeH264([nal(1, 100)], { seq: 10 + a.length + 6, ts: 7000 }));
  t.deepEqual(drops, ['packet loss before the access unit']);
});

test('reserved NAL types 0, 30, 31 are ignored; a unit of only those emits nothing', (t) => {
  const { units, push, drops } = depack();
  push([{ sequenceNumber: 1, timestamp: 1, marker: true, payload: Uint8Array.of(30, 1, 2) }]);
  t.is(units.length, 0);
  t.deepEqual(drops, []);
});

test('access units over the byte or NAL limit are dropped', (t) => {
  const drops: string[] = [];
  const d = new H264Depacketizer({ maxAccessUnitBytes: 1000, maxNalUnits: 3, onDrop: (r) => drops.push(r) });
  for (const p of packetizeH264([nal(5, 2000)], { seq: 1, ts: 1, mtu: 500 })) t.deepEqual(d.push(p), []);
  for (const p of packetizeH264([nal(1, 10), nal(1, 10), nal(1, 10), nal(1, 10)], { seq: 6, ts: 2, stap: false })) d.push(p);
  t.is(drops.length, 2);
  t.regex(drops[0]!, /over 1000 bytes/);
  t.regex(drops[1]!, /more than 3 NAL units/);
});

test('fuzz: random and mutated packet streams never throw and only emit well-formed units', (t) => {
  for (let round = 0; round < 40; round++) {
    const rand = prng(1000 + round);
    const d = new H264Depacketizer({ maxAccessUnitBytes: 1 << 20 });
    let seq = Math.floor(rand() * 65536);
    let ts = Math.floor(rand() * 2 ** 32);
    let units = 0;
    for (let i = 0; i < 300; i++) {
      let packets: H264RtpPacket[];
      if (rand() < 0.5) {
        const nalus = [nal(rand() < 0.2 ? 5 : 1, 1 + Math.floor(rand() * 4000), rand)];
        if (rand() < 0.2) nalus.unshift(sps, pps);
        packets = packetizeH264(nalus, { seq, ts, mtu: 200 + Math.floor(rand() * 1200) });
      } else {
        packets = [{ sequenceNumber: seq, timestamp: ts, marker: rand() < 0.5, payload: randomBytes(rand, Math.floor(rand() * 60)) }];
      }
      // Mutate: drop, swap, corrupt bytes.
      packets = packets.filter(() => rand() > 0.05).map((p) => {
        if (rand() < 0.1 && p.payload.length > 0) {
          const b = Uint8Array.from(p.payload);
          b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
          return { ...p, payload: b };
        }
        return p;
      });
      if (packets.length > 1 && rand() < 0.1) packets.reverse();
      for (const p of packets) {
        let out: readonly H264AccessUnit[] = [];
        try {
          out = d.push(p);
        } catch (err) {
          t.fail(`${err instanceof CodecError ? 'CodecError' : 'error'} thrown: ${String(err)}`);
          return;
        }
        for (const au of out) {
          units++;
          t.true(au.nalus.length > 0);
          for (const n of au.nalus) {
            t.true(n.length > 0 && (n[0]! & 0x80) === 0);
            const type = n[0]! & 0x1f;
            t.true(type >= 1 && type <= 23 && type !== 7 && type !== 8 && type !== 9 && type !== 12);
          }
        }
      }
      seq = (seq + packets.length + (rand() < 0.05 ? 5 : 0)) & 0xffff;
      ts = (ts + 3000) >>> 0;
    }
    t.true(units > 0, `round ${round} produced units`);
  }
});

test('splitStapA checks every size against the bytes left', (t) => {
  t.deepEqual(splitStapA(Uint8Array.of(24, 0, 2, 0x67, 1, 0, 1, 0x68)).map((n) => [...n]), [[0x67, 1], [0x68]]);
  t.throws(() => splitStapA(Uint8Array.of(24, 0)), { instanceOf: CodecError, message: /ends inside a NAL unit size/ });
  t.throws(() => splitStapA(Uint8Array.of(24)), { instanceOf: CodecError, message: /no NAL units/ });
});

test('AVCC: 4-byte big-endian lengths before each NAL unit', (t) => {
  const nalus = [Uint8Array.of(0x65, 1, 2), nal(1, 300)];
  const n = avccLength(nalus);
  t.is(n, 4 + 3 + 4 + 300);
  const out = new Uint8Array(n);
  t.is(writeAvcc(nalus, out), n);
  t.deepEqual([...out.subarray(0, 7)], [0, 0, 0, 3, 0x65, 1, 2]);
  t.deepEqual([...out.subarray(7, 11)], [0, 0, 1, 44]);
  t.throws(() => writeAvcc(nalus, new Uint8Array(n - 1)), { instanceOf: RangeError });
});
