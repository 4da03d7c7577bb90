/**
 * The RTMP handshake, both sides: the plain one (S2 echoes C1) and the digest one that Flash,
 * OBS and ffmpeg use (HMAC-SHA256 digests keyed with the well-known Adobe keys). Pure functions
 * over bytes; the caller supplies randomness.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { CodecError } from '../errors.ts';

export const RTMP_VERSION = 3;
export const HANDSHAKE_SIZE = 1536;
const DIGEST_SIZE = 32;

const KEY_TAIL = Buffer.from([
  0xf0, 0xee, 0xc2, 0x4a, 0x80, 0x68, 0xbe, 0xe8, 0x2e, 0x00, 0xd0, 0xd1, 0x02, 0x9e, 0x7e, 0x57, 0x6e, 0xec, 0x5d,
  0x2d, 0x29, 0x80, 0x6f, 0xab, 0x93, 0xb8, 0xe6, 0x36, 0xcf, 0xeb, 0x31, 0xae,
]);
const FP_KEY = Buffer.concat([Buffer.from('Genuine Adobe Flash Player 001'), KEY_TAIL]);
const FMS_KEY = Buffer.concat([Buffer.from('Genuine Adobe Flash Media Server 001'), KEY_TAIL]);
const FP_KEY_PUBLIC = FP_KEY.subarray(0, 30);
const FMS_KEY_PUBLIC = FMS_KEY.subarray(0, 36);

/** Where the digest sits: scheme 0 after the time/version, scheme 1 in the second half. */
type Scheme = 0 | 1;

function digestOffset(block: Uint8Array, scheme: Scheme): number {
  const base = scheme === 0 ? 8 : 772;
  const sum = block[base]! + block[base + 1]! + block[base + 2]! + block[base + 3]!;
  return (sum % 728) + base + 4;
}

function hmac(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('sha256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

function digestAt(block: Uint8Array, offset: number, key: Uint8Array): Buffer {
  return hmac(key, block.subarray(0, offset), block.subarray(offset + DIGEST_SIZE));
}

function findDigest(block: Uint8Array, key: Uint8Array): { scheme: Scheme; digest: Buffer } | undefined {
  for (const scheme of [1, 0] as const) {
    const off = digestOffset(block, scheme);
    const expected = digestAt(block, off, key);
    const actual = block.subarray(off, off + DIGEST_SIZE);
    if (timingSafeEqual(expected, actual)) return { scheme, digest: Buffer.from(actual) };
  }
  return undefined;
}

function signBlock(block: Buffer, scheme: Scheme, key: Uint8Array): Buffer {
  const off = digestOffset(block, scheme);
  const digest = digestAt(block, off, key);
  digest.copy(block, off);
  return digest;
}

function check(c0c1: Uint8Array): void {
  if (c0c1.length < 1 + HANDSHAKE_SIZE) throw new CodecError('rtmp', `handshake needs ${1 + HANDSHAKE_SIZE} bytes, got ${c0c1.length}`);
  const version = c0c1[0]!;
  if (version !== RTMP_VERSION) {
    throw new CodecError('rtmp', version === 6 ? 'encrypted RTMP (RTMPE) is not supported' : `unsupported RTMP version ${version}`);
  }
}

/**
 * The server's answer (S0+S1+S2) to C0+C1. A client that signed C1 gets a signed S1 and S2 so
 * that it can verify the server (ffmpeg does); a plain client gets the plain echo.
 */
export function serverHandshake(c0c1: Uint8Array, random: (n: number) => Buffer, nowMs: number): { s0s1s2: Buffer; digest: boolean } {
  check(c0c1);
  const c1 = c0c1.subarray(1, 1 + HANDSHAKE_SIZE);
  const clientVersion = new DataView(c1.buffer, c1.byteOffset, c1.byteLength).getUint32(4);
  const out = Buffer.alloc(1 + 2 * HANDSHAKE_SIZE);
  out[0] = RTMP_VERSION;
  const s1 = out.subarray(1, 1 + HANDSHAKE_SIZE);
  const s2 = out.subarray(1 + HANDSHAKE_SIZE);
  random(HANDSHAKE_SIZE).copy(s1);
  s1.writeUInt32BE(nowMs >>> 0, 0);
  const found = clientVersion !== 0 ? findDigest(c1, FP_KEY_PUBLIC) : undefined;
  if (!found) {
    s1.writeUInt32BE(0, 4);
    Buffer.from(c1).copy(s2);
    return { s0s1s2: out, digest: false };
  }
  s1.writeUInt32BE(0x04050001, 4);
  signBlock(s1, found.scheme, FMS_KEY_PUBLIC);
  random(HANDSHAKE_SIZE).copy(s2);
  const key = hmac(FMS_KEY, found.digest);
  hmac(key, s2.subarray(0, HANDSHAKE_SIZE - DIGEST_SIZE)).copy(s2, HANDSHAKE_SIZE - DIGEST_SIZE);
  return { s0s1s2: out, digest: true };
}

/** A client's C0+C1, signed with the Flash Player key (scheme 1) as Flash and ffmpeg send it. */
export function clientHello(random: (n: number) => Buffer, nowMs: number): { c0c1: Buffer; digest: Buffer } {
  const out = Buffer.alloc(1 + HANDSHAKE_SIZE);
  out[0] = RTMP_VERSION;
  const c1 = out.subarray(1);
  random(HANDSHAKE_SIZE).copy(c1);
  c1.writeUInt32BE(nowMs >>> 0, 0);
  c1.writeUInt32BE(0x80000702, 4);
  const digest = signBlock(c1, 1, FP_KEY_PUBLIC);
  return { c0c1: out, digest };
}

/**
 * Checks S0+S1+S2 and returns C2. A server that signed S1 must also have signed S2 over our
 * digest; a plain server (S1 version 0) is answered with the plain echo of S1.
 */
export function clientReply(s0s1s2: Uint8Array, clientDigest: Uint8Array, random: (n: number) => Buffer): Buffer {
  check(s0s1s2);
  if (s0s1s2.length < 1 + 2 * HANDSHAKE_SIZE) throw new CodecError('rtmp', 'short S0+S1+S2');
  const s1 = Buffer.from(s0s1s2.subarray(1, 1 + HANDSHAKE_SIZE));
  const s2 = s0s1s2.subarray(1 + HANDSHAKE_SIZE, 1 + 2 * HANDSHAKE_SIZE);
  if (s1.readUInt32BE(4) === 0) return s1;
  const found = findDigest(s1, FMS_KEY_PUBLIC);
  if (!found) throw new CodecError('rtmp', 'server S1 digest does not verify');
  const expected = hmac(hmac(FMS_KEY, clientDigest), s2.subarray(0, HANDSHAKE_SIZE - DIGEST_SIZE));
  if (!timingSafeEqual(expected, s2.subarray(HANDSHAKE_SIZE - DIGEST_SIZE))) throw new CodecError('rtmp', 'server S2 signature does not verify');
  const c2 = random(HANDSHAKE_SIZE);
  const key = hmac(FP_KEY, found.digest);
  hmac(key, c2.subarray(0, HANDSHAKE_SIZE - DIGEST_SIZE)).copy(c2, HANDSHAKE_SIZE - DIGEST_SIZE);
  return c2;
}
