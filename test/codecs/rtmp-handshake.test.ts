import test from 'ava';
import { createHmac } from 'node:crypto';
import { CodecError } from '../../codecs/errors.ts';
import { HANDSHAKE_SIZE, clientHello, clientReply, serverHandshake } from '../../codecs/rtmp/handshake.ts';

/** Deterministic "randomness" so that failures reproduce. */
function seeded(seed: number): (n: number) => Buffer {
  let a = seed >>> 0;
  return (n) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) {
      a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
      b[i] = a >>> 24;
    }
    return b;
  };
}

const FP_KEY = Buffer.concat([
  Buffer.from('Genuine Adobe Flash Player 001'),
  Buffer.from('f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae', 'hex'),
]);

test('digest handshake: clientHello -> serverHandshake -> clientReply verifies', (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const rnd = seeded(seed);
    const { c0c1, digest } = clientHello(rnd, 123456);
    t.is(c0c1.length, 1 + HANDSHAKE_SIZE);
    t.is(c0c1[0], 3);
    t.is(c0c1.readUInt32BE(1), 123456, 'C1 time');
    t.not(c0c1.readUInt32BE(5), 0, 'C1 carries a version, so it is signed');
    t.is(digest.length, 32);

    const s = serverHandshake(c0c1, rnd, 0xdeadbeef);
    t.true(s.digest, `seed ${seed}: the client's digest was found`);
    t.is(s.s0s1s2.length, 1 + 2 * HANDSHAKE_SIZE);
    t.is(s.s0s1s2[0], 3);
    t.is(s.s0s1s2.readUInt32BE(1), 0xdeadbeef, 'S1 time');
    t.not(s.s0s1s2.readUInt32BE(5), 0, 'S1 version is set in the digest handshake');

    const c2 = clientReply(s.s0s1s2, digest, rnd);
    t.is(c2.length, HANDSHAKE_SIZE);
    // C2 is signed over its first 1504 bytes with a key derived from the server's S1 digest: check
    // that its tail is an HMAC of its head under some key (here: recompute with every candidate
    // offset of the S1 digest, schemes 1 and 0).
    const s1 = s.s0s1s2.subarray(1, 1 + HANDSHAKE_SIZE);
    const offsets = [772, 8].map((base) => ((s1[base]! + s1[base + 1]! + s1[base + 2]! + s1[base + 3]!) % 728) + base + 4);
    const signed = offsets.some((off) => {
      const key = createHmac('sha256', FP_KEY).update(s1.subarray(off, off + 32)).digest();
      const mac = createHmac('sha256', key).update(c2.subarray(0, HANDSHAKE_SIZE - 32)).digest();
      return mac.equals(c2.subarray(HANDSHAKE_SIZE - 32));
    });
    t.true(signed, `seed ${seed}: C2 is signed with the server digest`);
  }
});

test('a plain client (C1 bytes 4..7 zero) gets S2 == C1, and the plain reply echoes S1', (t) => {
  const rnd = seeded(7);
  const c0c1 = Buffer.concat([Buffer.from([3]), rnd(HANDSHAKE_SIZE)]);
  c0c1.writeUInt32BE(0, 5);
  const s = serverHandshake(c0c1, rnd, 42);
  t.false(s.digest);
  const s1 = s.s0s1s2.subarray(1, 1 + HANDSHAKE_SIZE);
  const s2 = s.s0s1s2.subarray(1 + HANDSHAKE_SIZE);
  t.true(s2.equals(c0c1.subarray(1)), 'S2 echoes C1');
  t.is(s1.readUInt32BE(0), 42);
  t.is(s1.readUInt32BE(4), 0, 'a plain S1 has a zero version');
  const c2 = clientReply(s.s0s1s2, Buffer.alloc(32), rnd);
  t.true(c2.equals(s1), 'C2 echoes S1 to a plain server');
});

test('a signed-looking C1 whose digest does not verify gets the plain echo', (t) => {
  const rnd = seeded(9);
  const { c0c1 } = clientHello(rnd, 1);
  // Flipping a byte outside the digest (here: in the version field, which is hashed too)
  // breaks the HMAC; the version stays non-zero, so C1 still looks signed.
  c0c1[1 + 4]! ^= 0x01;
  t.not(c0c1.readUInt32BE(5), 0);
  const s = serverHandshake(c0c1, rnd, 2);
  t.false(s.digest);
  t.true(s.s0s1s2.subarray(1 + HANDSHAKE_SIZE).equals(c0c1.subarray(1)));
});

test('a tampered S2 or S1 fails clientReply with CodecError', (t) => {
  const rnd = seeded(3);
  const { c0c1, digest } = clientHello(rnd, 1000);
  const { s0s1s2 } = serverHandshake(c0c1, rnd, 2000);
  for (const at of [1 + HANDSHAKE_SIZE, 1 + HANDSHAKE_SIZE + 700, s0s1s2.length - 1]) {
    const bad = Buffer.from(s0s1s2);
    bad[at]! ^= 0x01;
    const err = t.throws(() => clientReply(bad, digest, rnd), { instanceOf: CodecError });
    t.regex(err!.message, /S2 signature does not verify/);
  }
  const badS1 = Buffer.from(s0s1s2);
  badS1[1 + 100]! ^= 0x01;
  t.throws(() => clientReply(badS1, digest, rnd), { instanceOf: CodecError, message: /S1 digest does not verify/ });
  // S2 made for another client's digest does not verify either.
  const other = clientHello(seeded(4), 1000);
  t.throws(() => clientReply(s0s1s2, other.digest, rnd), { instanceOf: CodecError, message: /S2 signature/ });
  t.notThrows(() => clientReply(s0s1s2, digest, rnd));
});

test('version 6 is rejected as RTMPE; other versions and short input are rejected', (t) => {
  const rnd = seeded(5);
  const c = Buffer.concat([Buffer.from([6]), rnd(HANDSHAKE_SIZE)]);
  const e6 = t.throws(() => serverHandshake(c, rnd, 0), { instanceOf: CodecError });
  t.is(e6?.format, 'rtmp');
  t.regex(e6!.reason, /RTMPE/);
  c[0] = 4;
  t.throws(() => serverHandshake(c, rnd, 0), { instanceOf: CodecError, message: /unsupported RTMP version 4/ });
  t.throws(() => serverHandshake(Buffer.from([3]), rnd, 0), { instanceOf: CodecError, message: /needs 1537 bytes, got 1/ });
  t.throws(() => serverHandshake(Buffer.alloc(0), rnd, 0), { instanceOf: CodecError });
  t.throws(() => serverHandshake(Buffer.concat([Buffer.from([3]), rnd(HANDSHAKE_SIZE - 1)]), rnd, 0), { instanceOf: CodecError });

  const { c0c1, digest } = clientHello(rnd, 0);
  const { s0s1s2 } = serverHandshake(c0c1, rnd, 0);
  t.throws(() => clientReply(s0s1s2.subarray(0, s0s1s2.length - 1), digest, rnd), { instanceOf: CodecError, message: /short S0\+S1\+S2/ });
  t.throws(() => clientReply(s0s1s2.subarray(0, 100), digest, rnd), { instanceOf: CodecError });
  const s6 = Buffer.from(s0s1s2);
  s6[0] = 6;
  t.throws(() => clientReply(s6, digest, rnd), { instanceOf: CodecError, message: /RTMPE/ });
  // Longer input (C2 or chunks already appended) is fine: only the handshake bytes are read.
  t.true(serverHandshake(Buffer.concat([c0c1, Buffer.alloc(50)]), seeded(5), 0).digest);
});
