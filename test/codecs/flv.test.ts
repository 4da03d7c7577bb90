import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeAmf0 } from '../../codecs/amf0.ts';
import { CodecError } from '../../codecs/errors.ts';
import {
  FlvTagType,
  audioTagHeader,
  flvFileHeader,
  flvTag,
  parseAudioTag,
  parseVideoTag,
  readFlvFile,
  videoTagHeader,
  type FlvTag,
} from '../../codecs/flv.ts';
import { prng } from '../helpers/prng.ts';

/** The first 409 bytes of a 1 s 320x240 H.264 + mono 48 kHz AAC .flv made by ffmpeg 5.1: the file header,
 *  then the onMetaData, AVC sequence header and AAC sequence header tags, each with its PreviousTagSize. */
const FFMPEG_FLV_HEAD = Buffer.from(
  '464c5601050000000900000000120001250000000000000002000a6f6e4d65746144617461080000000d00086475726174696f6e003ff147' +
    'ae147ae14800057769647468004074000000000000000668656967687400406e000000000000000d766964656f6461746172617465000000' +
    '00000000000000096672616d6572617465004039000000000000000c766964656f636f646563696400401c000000000000000d617564696f' +
    '6461746172617465004050d88000000000000f617564696f73616d706c65726174650040e7700000000000000f617564696f73616d706c65' +
    '73697a65004030000000000000000673746572656f0100000c617564696f636f64656369640040240000000000000007656e636f64657202' +
    '000d4c61766635392e32372e313030000866696c6573697a650040e6cc200000000000000900000130090000330000000000000017000000' +
    '000164000dffe100196764000dacd94141fb011000000300100000030320f142996001000668ebe3cb22c0fdf8f8000000003e0800000700' +
    '000000000000af00118856e50000000012',
  'hex',
);

const hex = (s: string) => Buffer.from(s.replace(/ /g, ''), 'hex');
const ascii = (s: string) => Buffer.from(s, 'latin1').toString('hex');

function rejects(t: ExecutionContext, fn: () => unknown, reason: RegExp) {
  const err = t.throws(fn, { instanceOf: CodecError });
  t.is(err?.format, 'flv');
  t.regex(err?.reason ?? '', reason);
}

test('legacy AVC and HEVC video headers', (t) => {
  t.deepEqual(parseVideoTag(hex('17 00 000000 01640028')), {
    frameType: 1,
    codecId: 7,
    packetType: 'config',
    compositionTime: 0,
    payloadOffset: 5,
  });
  t.deepEqual(parseVideoTag(hex('27 01 000050 00000002 0910')), {
    frameType: 2,
    codecId: 7,
    packetType: 'nalu',
    compositionTime: 80,
    payloadOffset: 5,
  });
  t.is(parseVideoTag(hex('27 01 fffffe')).compositionTime, -2);
  t.is(parseVideoTag(hex('27 01 800000')).compositionTime, -0x800000);
  t.is(parseVideoTag(hex('27 01 7fffff')).compositionTime, 0x7fffff);
  t.deepEqual(parseVideoTag(hex('17 02 000000')), {
    frameType: 1,
    codecId: 7,
    packetType: 'eos',
    compositionTime: 0,
    payloadOffset: 5,
  });
  t.like(parseVideoTag(hex('1c 01 000000')), { frameType: 1, codecId: 12, packetType: 'nalu' });
  // An info frame (seek command) carries no media and is two bytes long.
  t.deepEqual(parseVideoTag(hex('57 00')), {
    frameType: 5,
    codecId: 7,
    packetType: 'nalu',
    compositionTime: 0,
    payloadOffset: 2,
  });
});

test('Enhanced RTMP video headers map onto the legacy shape', (t) => {
  const hvc1 = ascii('hvc1');
  t.deepEqual(parseVideoTag(hex('90' + hvc1 + '01')), {
    frameType: 1,
    codecId: 12,
    packetType: 'config',
    compositionTime: 0,
    payloadOffset: 5,
  });
  t.deepEqual(parseVideoTag(hex('91' + hvc1 + 'ffffd8' + '00000001')), {
    frameType: 1,
    codecId: 12,
    packetType: 'nalu',
    compositionTime: -40,
    payloadOffset: 8,
  });
  t.deepEqual(parseVideoTag(hex('a3' + hvc1 + '00000001')), {
    frameType: 2,
    codecId: 12,
    packetType: 'nalu',
    compositionTime: 0,
    payloadOffset: 5,
  });
  t.like(parseVideoTag(hex('92' + hvc1)), { packetType: 'eos', codecId: 12, payloadOffset: 5 });
  t.like(parseVideoTag(hex('91' + ascii('avc1') + '000021')), { codecId: 7, compositionTime: 33 });
  // OBS sends HDR colour metadata as 0x84 (frame type 0, PacketTypeMetadata): skipped as an info frame.
  const meta = hex('84' + hvc1 + '02000963' + '6f6c6f72496e666f');
  t.deepEqual(parseVideoTag(meta), {
    frameType: 5,
    codecId: 12,
    packetType: 'nalu',
    compositionTime: 0,
    payloadOffset: meta.length,
  });
  // A v2 command frame has a command byte instead of a FourCC.
  t.like(parseVideoTag(hex('d0 01')), { frameType: 5, codecId: 0, payloadOffset: 2 });
});

test('unsupported or short video tags are rejected', (t) => {
  rejects(t, () => parseVideoTag(new Uint8Array(0)), /empty video tag/);
  rejects(t, () => parseVideoTag(hex('17 01 00')), /shorter than the 5-byte/);
  rejects(t, () => parseVideoTag(hex('12 00 000000')), /unsupported video codec id 2/);
  rejects(t, () => parseVideoTag(hex('07 01 000000')), /invalid video frame type 0/);
  rejects(t, () => parseVideoTag(hex('67 01 000000')), /invalid video frame type 6/);
  rejects(t, () => parseVideoTag(hex('17 03 000000')), /invalid AVC packet type 3/);
  rejects(t, () => parseVideoTag(hex('90' + ascii('av01'))), /unsupported enhanced video FourCC "av01"/);
  rejects(t, () => parseVideoTag(hex('90 6876')), /shorter than its 5-byte header/);
  rejects(t, () => parseVideoTag(hex('91' + ascii('hvc1') + '00')), /lacks its composition time/);
  rejects(t, () => parseVideoTag(hex('96' + ascii('hvc1'))), /multitrack/);
  rejects(t, () => parseVideoTag(hex('97' + ascii('hvc1'))), /ModEx/);
  rejects(t, () => parseVideoTag(hex('95' + ascii('hvc1'))), /packet type 5/);
  rejects(t, () => parseVideoTag(hex('80' + ascii('hvc1'))), /invalid video frame type 0/);
});

test('videoTagHeader writes the 5-byte legacy header and round-trips', (t) => {
  t.is(videoTagHeader({ keyframe: true, codecId: 7, packetType: 'config', compositionTime: 0 }).toString('hex'), '1700000000');
  t.is(videoTagHeader({ keyframe: false, codecId: 7, packetType: 'nalu', compositionTime: 80 }).toString('hex'), '2701000050');
  t.is(videoTagHeader({ keyframe: false, codecId: 12, packetType: 'nalu', compositionTime: -1 }).toString('hex'), '2c01ffffff');
  t.is(videoTagHeader({ keyframe: true, codecId: 7, packetType: 'eos', compositionTime: 0 }).toString('hex'), '1702000000');
  for (const keyframe of [true, false])
    for (const codecId of [7, 12] as const)
      for (const packetType of ['config', 'nalu', 'eos'] as const)
        for (const compositionTime of [0, 1, -1, 0x7fffff, -0x800000]) {
          t.deepEqual(parseVideoTag(videoTagHeader({ keyframe, codecId, packetType, compositionTime })), {
            frameType: keyframe ? 1 : 2,
            codecId,
            packetType,
            compositionTime,
            payloadOffset: 5,
          });
        }
  for (const compositionTime of [0x800000, -0x800001, 1.5, NaN]) {
    rejects(t, () => videoTagHeader({ keyframe: true, codecId: 7, packetType: 'nalu', compositionTime }), /signed 24-bit/);
  }
});

test('AAC audio headers', (t) => {
  t.deepEqual(parseAudioTag(hex('af 00 1190')), {
    soundFormat: 10,
    packetType: 'config',
    payloadOffset: 2,
    soundRate: 44100,
    soundSize: 16,
    stereo: true,
  });
  t.deepEqual(parseAudioTag(hex('a6 01 21')), {
    soundFormat: 10,
    packetType: 'raw',
    payloadOffset: 2,
    soundRate: 11025,
    soundSize: 16,
    stereo: false,
  });
  t.like(parseAudioTag(hex('a1 01')), { soundRate: 5512, soundSize: 8, stereo: true });
  t.is(audioTagHeader({ packetType: 'config' }).toString('hex'), 'af00');
  t.is(audioTagHeader({ packetType: 'raw' }).toString('hex'), 'af01');
  t.deepEqual(parseAudioTag(audioTagHeader({ packetType: 'raw' })), parseAudioTag(hex('af 01')));

  rejects(t, () => parseAudioTag(new Uint8Array(0)), /empty audio tag/);
  rejects(t, () => parseAudioTag(hex('af')), /lacks its packet type/);
  rejects(t, () => parseAudioTag(hex('af 02')), /invalid AAC packet type 2/);
  rejects(t, () => parseAudioTag(hex('2f ff')), /unsupported sound format 2/);
  rejects(t, () => parseAudioTag(hex('90' + ascii('Opus'))), /enhanced audio/);
});

test('flvFileHeader and flvTag bytes', (t) => {
  t.is(flvFileHeader({ audio: true, video: true }).toString('hex'), hex('464c5601 05 00000009 00000000').toString('hex'));
  t.is(flvFileHeader({ audio: false, video: true })[4], 0x01);
  t.is(flvFileHeader({ audio: true, video: false })[4], 0x04);
  // Timestamp 0x12345678: low 24 bits, then the extension byte; stream id 0; PreviousTagSize 11 + 2.
  t.is(flvTag(FlvTagType.Audio, 0x12345678, hex('af01')).toString('hex'), hex('08 000002 345678 12 000000 af01 0000000d').toString('hex'));
  t.is(flvTag(FlvTagType.Video, 0, new Uint8Array(0)).toString('hex'), hex('09 000000 000000 00 000000 0000000b').toString('hex'));
  // The 32-bit field wraps like RTMP's timestamp.
  t.is(flvTag(FlvTagType.Script, 2 ** 32 + 5, hex('05')).subarray(4, 8).toString('hex'), '00000500');
  rejects(t, () => flvTag(32, 0, hex('00')), /does not fit 5 bits/);
  rejects(t, () => flvTag(9, -1, hex('00')), /non-negative integer/);
  rejects(t, () => flvTag(9, 1.5, hex('00')), /non-negative integer/);
});

test("reads the head of an ffmpeg-made .flv", (t) => {
  const tags = [...readFlvFile(FFMPEG_FLV_HEAD)];
  t.deepEqual(
    tags.map((x) => [x.type, x.timestamp, x.body.length]),
    [
      [FlvTagType.Script, 0, 293],
      [FlvTagType.Video, 0, 51],
      [FlvTagType.Audio, 0, 7],
    ],
  );
  const [script, video, audio] = tags as [FlvTag, FlvTag, FlvTag];
  t.is(script.body.buffer, FFMPEG_FLV_HEAD.buffer, 'bodies are views, not copies');
  t.like(decodeAmf0(script.body)[1], { width: 320, height: 240, videocodecid: 7, audiocodecid: 10 });
  const vh = parseVideoTag(video.body);
  t.deepEqual(vh, { frameType: 1, codecId: 7, packetType: 'config', compositionTime: 0, payloadOffset: 5 });
  t.is(video.body.subarray(vh.payloadOffset, vh.payloadOffset + 4).toString('hex'), '0164000d'); // avcC: High, level 1.3
  const ah = parseAudioTag(audio.body);
  t.like(ah, { soundFormat: 10, packetType: 'config', payloadOffset: 2 });
  t.is(audio.body.subarray(ah.payloadOffset, ah.payloadOffset + 2).toString('hex'), '1188'); // ASC: AAC LC, 48 kHz, mono

  // Rewriting the tags reproduces the bytes exactly.
  const again = Buffer.concat([flvFileHeader({ audio: true, video: true }), ...tags.map((x) => flvTag(x.type, x.timestamp, x.body))]);
  t.true(again.equals(FFMPEG_FLV_HEAD));
});

test('readFlvFile validates the header and every size', (t) => {
  const all = (b: Buffer) => [...readFlvFile(b)];
  const file = Buffer.concat([flvFileHeader({ audio: true, video: false }), flvTag(8, 0x01020304, hex('af0111'))]);
  t.deepEqual(all(file).map((x) => [x.type, x.timestamp, x.body.toString('hex')]), [[8, 0x01020304, 'af0111']]);
  t.deepEqual(all(flvFileHeader({ audio: true, video: true })), []);

  rejects(t, () => all(hex('464c5601')), /shorter than the 9-byte FLV header/);
  rejects(t, () => all(hex('464c5801 05 00000009 00000000')), /missing FLV signature/);
  rejects(t, () => all(hex('464c5602 05 00000009 00000000')), /unsupported FLV version 2/);
  rejects(t, () => all(hex('464c5601 05 00000008 00000000')), /inside the 9-byte header/);
  rejects(t, () => all(hex('464c5601 05 ffffffff 00000000')), /leaves no room/);
  rejects(t, () => all(hex('464c5601 05 00000009 00000001')), /PreviousTagSize0 is 1/);
  rejects(t, () => all(Buffer.concat([file, hex('0800')])), /truncated tag header at offset \d+: 2 of 11/);
  const bigSize = Buffer.from(file);
  bigSize.writeUIntBE(0xffffff, 14, 3);
  rejects(t, () => all(bigSize), /declares 16777215 body bytes, only \d+ remain/);
  const badPrev = Buffer.from(file);
  badPrev.writeUInt32BE(99, file.length - 4);
  rejects(t, () => all(badPrev), /PreviousTagSize 99 at offset \d+ does not match tag size 14/);
  const encrypted = Buffer.from(file);
  encrypted[13] = 0x28;
  rejects(t, () => all(encrypted), /encrypted/);

  // Tags before the damage are still delivered.
  const seen: number[] = [];
  t.throws(() => {
    for (const tag of readFlvFile(Buffer.concat([FFMPEG_FLV_HEAD, hex('09 000010')]))) seen.push(tag.type);
  }, { instanceOf: CodecError });
  t.deepEqual(seen, [18, 9, 8]);
});

test('reads a whole .flv that ffmpeg writes and rewrites it byte for byte', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-flv-'));
  try {
    const path = join(dir, 'out.flv');
    // Synchronous with a timeout: the child is always killed and reaped (LESSONS.md, rule 2).
    execFileSync(
      'ffmpeg',
      ['-v', 'error', '-nostdin', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=25', '-f', 'lavfi', '-i',
        'sine=frequency=440:sample_rate=44100', '-t', '1', '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '10',
        '-bf', '2', '-c:a', 'aac', '-ac', '2', '-f', 'flv', path],
      { timeout: 30_000, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const buf = readFileSync(path);
    const tags = [...readFlvFile(buf)];
    const video = tags.filter((x) => x.type === FlvTagType.Video).map((x) => parseVideoTag(x.body));
    const audio = tags.filter((x) => x.type === FlvTagType.Audio).map((x) => parseAudioTag(x.body));
    t.is(tags[0]?.type, FlvTagType.Script);
    t.like(decodeAmf0(tags[0]?.body ?? Buffer.alloc(0))[1], { width: 320, height: 240, stereo: true, audiosamplerate: 44100 });
    t.is(video.filter((v) => v.packetType === 'config').length, 1);
    t.is(video.filter((v) => v.packetType === 'nalu').length, 25);
    t.is(video.filter((v) => v.frameType === 1 && v.packetType === 'nalu').length, 3); // -g 10 over 25 frames
    t.true(video.some((v) => v.compositionTime > 0), 'B-frames give composition times');
    t.is(audio[0]?.packetType, 'config');
    t.true(audio.length > 40 && audio.slice(1).every((a) => a.packetType === 'raw' && a.stereo && a.soundFormat === 10));
    const rewritten = Buffer.concat([flvFileHeader({ audio: true, video: true }), ...tags.map((x) => flvTag(x.type, x.timestamp, x.body))]);
    t.true(rewritten.equals(buf));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function fuzz(t: ExecutionContext, seed: number, seeds: Buffer[], run: (b: Buffer) => void) {
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const start = Date.now();
  let accepted = 0;
  for (let i = 0; i < 5000; i++) {
    let input: Buffer;
    if (i % 4 === 0) {
      input = Buffer.alloc(int(24));
      for (let j = 0; j < input.length; j++) input[j] = int(256);
    } else {
      input = Buffer.from(seeds[int(seeds.length)] ?? Buffer.alloc(0));
      for (let m = 1 + int(3); m > 0 && input.length > 0; m--) input[int(input.length)] = int(256);
      if (rand() < 0.3) input = input.subarray(0, int(input.length + 1));
    }
    try {
      run(input);
      accepted++;
    } catch (err) {
      if (!(err instanceof CodecError)) t.fail(`input ${input.toString('hex').slice(0, 200)} threw ${String(err)}`);
    }
  }
  t.true(accepted > 0);
  t.true(Date.now() - start < 1000, `took ${Date.now() - start} ms`);
}

test('fuzz parseVideoTag', (t) => {
  const hvc1 = ascii('hvc1');
  const seeds = ['1700000000', '2701000050aa', '1c01fffffe', '5700', '90' + hvc1 + '01', '91' + hvc1 + '000028ff', '84' + hvc1, 'd001'];
  fuzz(t, 1, seeds.map(hex), (b) => {
    const h = parseVideoTag(b);
    if (h.payloadOffset > b.length) throw new Error(`payloadOffset ${h.payloadOffset} beyond ${b.length}`);
  });
});

test('fuzz parseAudioTag', (t) => {
  fuzz(t, 2, ['af00', 'af01ff', 'a601', '2fff'].map(hex), (b) => {
    const h = parseAudioTag(b);
    if (h.payloadOffset > b.length) throw new Error(`payloadOffset ${h.payloadOffset} beyond ${b.length}`);
  });
});

test('fuzz readFlvFile', (t) => {
  const synthetic = Buffer.concat([flvFileHeader({ audio: true, video: true }), flvTag(9, 1, hex('1701000000')), flvTag(8, 2, hex('af01'))]);
  fuzz(t, 3, [FFMPEG_FLV_HEAD, synthetic], (b) => {
    for (const tag of readFlvFile(b)) {
      if (tag.body.byteOffset + tag.body.length > b.byteOffset + b.length) throw new Error('body beyond the input');
    }
  });
});
