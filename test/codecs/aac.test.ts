import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { aacCodecString, adtsHeader, buildAudioSpecificConfig, parseAudioSpecificConfig, readAdts } from '../../codecs/aac.ts';
import { CodecError } from '../../codecs/errors.ts';
import { ffmpeg, fuzz, readPackets, readStreams, tempDir } from './hls-codecs-helpers.ts';

test('ADTS round trip on an ffmpeg-made .aac: every frame read, headers rebuilt byte for byte', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'a.aac');
  await ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100', '-ac', '2', '-t', '1', '-c:a', 'aac', '-b:a', '96k', '-f', 'adts', file);
  const bytes = await readFile(file);
  const frames = [...readAdts(bytes)];
  const packets = await readPackets(file);
  t.is(frames.length, packets.length);
  t.true(frames.length >= 43);
  // ffprobe gives whole ADTS frames as packets: our payload is what follows the 7-byte header
  frames.forEach((f, i) => t.deepEqual(f.payload, packets[i]!.data.subarray(7)));
  t.deepEqual(frames[0]!.config, { objectType: 2, samplingIndex: 4, sampleRate: 44100, channels: 2 });
  t.is(aacCodecString(frames[0]!.config), 'mp4a.40.2');
  const rebuilt = Buffer.concat(frames.flatMap((f) => [adtsHeader(f.config, f.payload.length), f.payload]));
  t.deepEqual(rebuilt, bytes);
  // the ASC for that config, and the one ffmpeg writes in MP4, describe the same stream
  const asc = buildAudioSpecificConfig(frames[0]!.config);
  t.deepEqual(asc, Buffer.from([0x12, 0x10]));
  const mp4 = join(dir, 'a.mp4');
  await ffmpeg('-i', file, '-c', 'copy', mp4);
  const [stream] = await readStreams(mp4);
  t.deepEqual(parseAudioSpecificConfig(stream!.extradata), frames[0]!.config);
});

test('readAdts reads CRC-protected headers', (t) => {
  const config = { objectType: 2, samplingIndex: 3, sampleRate: 48000, channels: 1 };
  const payloads = [Buffer.from([1, 2, 3, 4]), Buffer.from([5, 6])];
  const withCrc = payloads.map((p) => {
    const h = adtsHeader(config, p.length + 2);
    h[1] = h[1]! & 0xfe; // protection_absent = 0: a 2-byte CRC follows the header
    return Buffer.concat([h, Buffer.from([0xab, 0xcd]), p]);
  });
  const frames = [...readAdts(Buffer.concat([...withCrc, adtsHeader(config, 1), Buffer.from([9])]))];
  t.deepEqual(
    frames.map((f) => f.payload),
    [...payloads, Buffer.from([9])],
  );
  t.deepEqual(frames[2]!.config, config);
});

test('readAdts rejects bad streams with the offset', (t) => {
  const config = { objectType: 2, samplingIndex: 4, sampleRate: 44100, channels: 2 };
  const frame = Buffer.concat([adtsHeader(config, 3), Buffer.from([1, 2, 3])]);
  const reason = (b: Uint8Array) => t.throws(() => [...readAdts(b)], { instanceOf: CodecError })?.message ?? '';
  t.regex(reason(Buffer.concat([frame, frame.subarray(0, 5)])), /truncated ADTS header at offset 10/);
  t.regex(reason(Buffer.concat([frame, Buffer.alloc(7)])), /no ADTS syncword at offset 10/);
  t.regex(reason(frame.subarray(0, 9)), /frame length 10 at offset 0 exceeds the 9 bytes left/);
  const short = Buffer.from(frame);
  short[4] = 0; // frame_length = 0
  short[5] = short[5]! & 0x1f;
  t.regex(reason(short), /shorter than its 7-byte header/);
  const reserved = Buffer.from(frame);
  reserved[2] = (reserved[2]! & ~0x3c) | (13 << 2);
  t.regex(reason(reserved), /sampling index 13 at offset 0 is reserved/);
  const blocks = Buffer.from(frame);
  blocks[6] = blocks[6]! | 1;
  t.regex(reason(blocks), /2 raw data blocks/);
  t.throws(() => adtsHeader(config, 8200), { instanceOf: CodecError, message: /13 bits/ });
  t.throws(() => adtsHeader({ ...config, objectType: 42 }, 1), { instanceOf: CodecError });
});

test('AudioSpecificConfig: build/parse round trips, explicit rates, object type escape, SBR', (t) => {
  for (const c of [
    { objectType: 2, sampleRate: 48000, channels: 2 },
    { objectType: 2, sampleRate: 8000, channels: 1 },
    { objectType: 1, sampleRate: 96000, channels: 6 },
    { objectType: 2, sampleRate: 44100, channels: 8 },
    { objectType: 2, sampleRate: 50000, channels: 2 }, // not in the table: index 15 + 24-bit rate
  ]) {
    const asc = buildAudioSpecificConfig(c);
    t.like(parseAudioSpecificConfig(asc), c);
  }
  t.is(buildAudioSpecificConfig({ objectType: 2, sampleRate: 50000, channels: 2 }).length, 5);
  t.is(parseAudioSpecificConfig(buildAudioSpecificConfig({ objectType: 2, sampleRate: 50000, channels: 2 })).samplingIndex, 15);
  // object type 42 (USAC) through the 31 escape: 11111 001010, index 3 (48k), channels 2
  t.deepEqual(parseAudioSpecificConfig(Buffer.from([0b11111001, 0b01000110, 0b01000000])), { objectType: 42, samplingIndex: 3, sampleRate: 48000, channels: 2 });
  // HE-AAC explicit: SBR (5), 24 kHz core, stereo, extension 48 kHz, core object LC
  const he = parseAudioSpecificConfig(Buffer.from([0x2b, 0x11, 0x8a, 0x00]));
  t.deepEqual(he, { objectType: 5, samplingIndex: 6, sampleRate: 24000, channels: 2 });
  t.is(aacCodecString(he), 'mp4a.40.5');
  t.is(adtsHeader(he, 0)[2]! >>> 6, 1, 'SBR goes out as LC in ADTS (implicit signalling)');
});

test('parseAudioSpecificConfig rejects malformed configs', (t) => {
  const reason = (b: Uint8Array) => t.throws(() => parseAudioSpecificConfig(b), { instanceOf: CodecError })?.message ?? '';
  t.regex(reason(Buffer.from([0x12])), /too short/);
  t.regex(reason(Buffer.from([0x16, 0x90])), /samplingFrequencyIndex 13 is reserved/);
  t.regex(reason(Buffer.from([0x12, 0x00])), /channelConfiguration 0/);
  t.regex(reason(Buffer.from([0x12, 0x48])), /channelConfiguration 9 is reserved/);
  t.regex(reason(Buffer.from([0x17, 0x80, 0x00])), /truncated/);
  t.regex(reason(Buffer.from([0x00, 0x10])), /audioObjectType 0/);
  t.throws(() => buildAudioSpecificConfig({ objectType: 5, sampleRate: 48000, channels: 2 }), { instanceOf: CodecError });
  t.throws(() => buildAudioSpecificConfig({ objectType: 2, sampleRate: 48000, channels: 7 }), { instanceOf: CodecError });
});

test('fuzz: readAdts and parseAudioSpecificConfig throw only CodecError', (t) => {
  const config = { objectType: 2, samplingIndex: 4, sampleRate: 44100, channels: 2 };
  const adts = Buffer.concat([adtsHeader(config, 5), Buffer.from([1, 2, 3, 4, 5]), adtsHeader(config, 2), Buffer.from([6, 7])]);
  const crc = Buffer.from(adts);
  crc[1] = crc[1]! & 0xfe;
  const ascs = [
    Buffer.from([0x12, 0x10]),
    Buffer.from([0x2b, 0x11, 0x8a, 0x00]),
    Buffer.from([0b11111001, 0b01000110, 0b01000000]),
    buildAudioSpecificConfig({ objectType: 2, sampleRate: 50000, channels: 2 }),
  ];
  const r1 = fuzz(t, [adts, crc], (b) => void [...readAdts(b)], { count: 5000, seed: 11, format: 'aac' });
  const r2 = fuzz(t, ascs, (b) => void parseAudioSpecificConfig(b), { count: 5000, seed: 12, format: 'aac' });
  for (const r of [r1, r2]) t.true(r.accepted > 0 && r.rejected > 0, JSON.stringify(r));
  t.log(`10000 inputs in ${(r1.ms + r2.ms).toFixed(0)} ms`);
});
