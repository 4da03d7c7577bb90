import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CodecError } from '../../codecs/errors.ts';
import {
  annexBToAvcc,
  avcCodecString,
  avccToAnnexB,
  buildAvcC,
  isIdr,
  NalType,
  nalUnits,
  parseAvcC,
  parseSps,
  splitAnnexB,
  toLengthSize4,
} from '../../codecs/h264.ts';
import { ffmpeg, fuzz, readStreams, tempDir } from './hls-codecs-helpers.ts';

const type = (nal: Uint8Array) => nal[0]! & 0x1f;

/** Encodes one frame with libx264 and returns its Annex B NAL units. */
async function encode(dir: string, name: string, size: string, ...x264: string[]): Promise<Buffer[]> {
  const file = join(dir, `${name}.h264`);
  await ffmpeg('-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=30`, '-frames:v', '2', '-c:v', 'libx264', '-preset', 'veryfast', ...x264, '-f', 'h264', file);
  return splitAnnexB(await readFile(file));
}

function spsOf(nals: Buffer[]): Buffer {
  const sps = nals.find((n) => type(n) === NalType.SPS);
  if (!sps) throw new Error('no SPS');
  return sps;
}

test('parseSps reads ffmpeg-made SPS: 720p high, 240p baseline, cropped 1080p, 4:2:2, 4:4:4, 10-bit, interlaced', async (t) => {
  const dir = await tempDir(t);
  const cases: { name: string; size: string; args: string[]; want: Partial<ReturnType<typeof parseSps>> }[] = [
    { name: 'high720', size: '1280x720', args: ['-profile:v', 'high', '-pix_fmt', 'yuv420p'], want: { profileIdc: 100, width: 1280, height: 720, chromaFormatIdc: 1, bitDepth: 8 } },
    { name: 'base240', size: '320x240', args: ['-profile:v', 'baseline', '-pix_fmt', 'yuv420p'], want: { profileIdc: 66, width: 320, height: 240, chromaFormatIdc: 1, bitDepth: 8 } },
    { name: 'crop1080', size: '1920x1080', args: ['-pix_fmt', 'yuv420p'], want: { width: 1920, height: 1080 } },
    { name: 'yuv444', size: '1918x1078', args: ['-pix_fmt', 'yuv444p'], want: { profileIdc: 244, width: 1918, height: 1078, chromaFormatIdc: 3 } },
    { name: 'yuv422', size: '642x362', args: ['-pix_fmt', 'yuv422p'], want: { profileIdc: 122, width: 642, height: 362, chromaFormatIdc: 2 } },
    { name: 'ten', size: '640x360', args: ['-pix_fmt', 'yuv420p10le'], want: { profileIdc: 110, width: 640, height: 360, bitDepth: 10 } },
    { name: 'interlaced', size: '1920x1080', args: ['-pix_fmt', 'yuv420p', '-x264-params', 'interlaced=1'], want: { width: 1920, height: 1080 } },
  ];
  for (const c of cases) {
    const sps = spsOf(await encode(dir, c.name, c.size, ...c.args));
    t.like(parseSps(sps), c.want, c.name);
  }
  const high = parseSps(spsOf(await encode(dir, 'str', '1280x720', '-profile:v', 'high', '-level', '3.1')));
  t.is(avcCodecString(high), 'avc1.64001f');
  // (x264 puts custom quantisation matrices in the PPS, so SPS scaling lists are covered by the synthetic SPS below;
  // the interlaced case has frame_mbs_only_flag 0: 1080 = 2 * 34 map units * 16 - 2 * 4 crop, as trace_headers shows)
});

/** A bit writer with Exp-Golomb codes, and emulation prevention, to make SPS the encoders above do not. */
class BitWriter {
  bits: number[] = [];
  u(n: number, v: number) {
    for (let i = n - 1; i >= 0; i--) this.bits.push(Math.floor(v / 2 ** i) % 2);
    return this;
  }
  ue(v: number) {
    const len = Math.floor(Math.log2(v + 1));
    return this.u(len, 0).u(len + 1, v + 1);
  }
  se(v: number) {
    return this.ue(v > 0 ? 2 * v - 1 : -2 * v);
  }
  nal(header: number): Buffer {
    const bits = [...this.bits, 1];
    while (bits.length % 8) bits.push(0);
    const rbsp: number[] = [];
    for (let i = 0; i < bits.length; i += 8) rbsp.push(parseInt(bits.slice(i, i + 8).join(''), 2));
    const out = [header];
    let zeros = 0;
    for (const b of rbsp) {
      if (zeros >= 2 && b <= 3) {
        out.push(3);
        zeros = 0;
      }
      out.push(b);
      zeros = b === 0 ? zeros + 1 : 0;
    }
    return Buffer.from(out);
  }
}

interface SpsFields {
  profile: number;
  chroma?: number;
  separate?: number;
  bitDepth?: number;
  scaling?: boolean;
  poc?: 0 | 1 | 2;
  pocOffset?: number;
  widthMbs: number;
  heightUnits: number;
  frameMbsOnly: number;
  crop?: [number, number, number, number];
}

function makeSps(f: SpsFields): Buffer {
  const w = new BitWriter().u(8, f.profile).u(8, 0).u(8, 40).ue(0);
  if ([100, 110, 122, 244].includes(f.profile)) {
    w.ue(f.chroma ?? 1);
    if ((f.chroma ?? 1) === 3) w.u(1, f.separate ?? 0);
    w.ue((f.bitDepth ?? 8) - 8).ue((f.bitDepth ?? 8) - 8).u(1, 0);
    if (f.scaling) {
      w.u(1, 1);
      const lists = (f.chroma ?? 1) === 3 ? 12 : 8;
      for (let i = 0; i < lists; i++) {
        w.u(1, 1);
        const size = i < 6 ? 16 : 64;
        for (let j = 0; j < size; j++) w.se(j === 0 ? 5 : j % 3 === 0 ? -2 : 1);
      }
    } else {
      w.u(1, 0);
    }
  }
  w.ue(0); // log2_max_frame_num_minus4
  const poc = f.poc ?? 0;
  w.ue(poc);
  if (poc === 0) w.ue(2);
  if (poc === 1) {
    w.u(1, 0).se(f.pocOffset ?? -3).se(7).ue(3).se(1).se(-1).se(100);
  }
  w.ue(4).u(1, 0).ue(f.widthMbs - 1).ue(f.heightUnits - 1).u(1, f.frameMbsOnly);
  if (!f.frameMbsOnly) w.u(1, 1);
  w.u(1, 1);
  if (f.crop) {
    w.u(1, 1);
    for (const c of f.crop) w.ue(c);
  } else {
    w.u(1, 0);
  }
  w.u(1, 0); // vui_parameters_present_flag
  return w.nal(0x67);
}

test('parseSps handles POC type 1, scaling lists, crop units for every chroma format and field coding', (t) => {
  t.like(parseSps(makeSps({ profile: 66, poc: 1, widthMbs: 40, heightUnits: 30, frameMbsOnly: 1 })), { width: 640, height: 480, profileIdc: 66, levelIdc: 40 });
  t.like(parseSps(makeSps({ profile: 100, scaling: true, widthMbs: 120, heightUnits: 68, frameMbsOnly: 1, crop: [0, 0, 0, 4] })), { width: 1920, height: 1080 });
  // 4:2:0 field coding: crop unit 2 x 4
  t.like(parseSps(makeSps({ profile: 100, widthMbs: 120, heightUnits: 34, frameMbsOnly: 0, crop: [1, 2, 1, 1] })), { width: 1920 - 6, height: 1088 - 8 });
  // 4:2:2: crop unit 2 x 1
  t.like(parseSps(makeSps({ profile: 122, chroma: 2, widthMbs: 10, heightUnits: 10, frameMbsOnly: 1, crop: [1, 1, 1, 1] })), { width: 156, height: 158, chromaFormatIdc: 2 });
  // 4:4:4 with 12 scaling lists: crop unit 1 x 1; separate colour planes: also 1 x 1
  t.like(parseSps(makeSps({ profile: 244, chroma: 3, scaling: true, widthMbs: 10, heightUnits: 10, frameMbsOnly: 1, crop: [1, 1, 1, 1] })), { width: 158, height: 158 });
  t.like(parseSps(makeSps({ profile: 244, chroma: 3, separate: 1, widthMbs: 10, heightUnits: 10, frameMbsOnly: 1, crop: [2, 0, 0, 3] })), { width: 158, height: 157 });
  // monochrome (chroma_format_idc 0): crop unit 1 x (2 - frame_mbs_only)
  t.like(parseSps(makeSps({ profile: 100, chroma: 0, widthMbs: 10, heightUnits: 5, frameMbsOnly: 0, crop: [0, 3, 0, 1] })), { width: 157, height: 158, chromaFormatIdc: 0 });
  t.like(parseSps(makeSps({ profile: 110, bitDepth: 10, widthMbs: 4, heightUnits: 4, frameMbsOnly: 1 })), { bitDepth: 10 });
});

test('parseSps removes emulation prevention bytes', (t) => {
  // offset_for_non_ref_pic = -2^30 is coded with 31 zero bits: the writer must escape a 00 00 0x
  const escaped = makeSps({ profile: 66, poc: 1, pocOffset: -(2 ** 30), widthMbs: 20, heightUnits: 15, frameMbsOnly: 1, crop: [0, 0, 0, 1] });
  t.true(escaped.includes(Buffer.from([0, 0, 3])), escaped.toString('hex'));
  t.like(parseSps(escaped), { profileIdc: 66, width: 320, height: 238 });
});

test('parseSps rejects malformed SPS with reasons', (t) => {
  const good = makeSps({ profile: 100, widthMbs: 80, heightUnits: 45, frameMbsOnly: 1 });
  const reason = (b: Uint8Array) => t.throws(() => parseSps(b), { instanceOf: CodecError })?.message ?? '';
  t.regex(reason(Buffer.alloc(0)), /empty/);
  t.regex(reason(Buffer.from([0x68, 1, 2, 3])), /NAL type 8/);
  t.regex(reason(Buffer.from([0xe7, 1, 2, 3])), /forbidden/);
  t.regex(reason(good.subarray(0, 6)), /truncated/);
  t.regex(reason(makeSps({ profile: 66, widthMbs: 2000, heightUnits: 4, frameMbsOnly: 1 })), /pic_width_in_mbs_minus1 1999 exceeds/);
  t.regex(reason(makeSps({ profile: 66, widthMbs: 4, heightUnits: 4, frameMbsOnly: 1, crop: [40, 0, 0, 0] })), /horizontal cropping/);
  t.regex(reason(Buffer.from([0x67, 66, 0, 30, 0, 0, 0, 0, 0, 1])), /longer than 32 bits/);
});

test('avcC: ffmpeg-made record parses, and buildAvcC rebuilds it byte for byte', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'a.mp4');
  await ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-frames:v', '3', '-c:v', 'libx264', '-profile:v', 'high', '-pix_fmt', 'yuv420p', file);
  const [stream] = await readStreams(file);
  const record = stream!.extradata;
  const cfg = parseAvcC(record);
  t.is(cfg.profile, 100);
  t.is(cfg.nalLengthSize, 4);
  t.is(cfg.sps.length, 1);
  t.is(cfg.pps.length, 1);
  t.like(parseSps(cfg.sps[0]!), { width: 640, height: 360, profileIdc: 100 });
  t.deepEqual(buildAvcC(cfg.sps, cfg.pps), record);
  // a baseline record has no extension; 2-byte lengths survive a parse
  const base = makeSps({ profile: 66, widthMbs: 20, heightUnits: 15, frameMbsOnly: 1 });
  const built = buildAvcC([base], [Buffer.from([0x68, 0xce, 0x38, 0x80])]);
  t.is(built.length, 7 + 2 + base.length + 2 + 4);
  const two = Buffer.from(built);
  two[4] = 0xfd;
  t.like(parseAvcC(two), { profile: 66, level: 40, nalLengthSize: 2 });
});

test('parseAvcC and buildAvcC reject bad records', (t) => {
  const sps = makeSps({ profile: 66, widthMbs: 20, heightUnits: 15, frameMbsOnly: 1 });
  const pps = Buffer.from([0x68, 0xce, 0x38, 0x80]);
  const good = buildAvcC([sps], [pps]);
  const reason = (b: Uint8Array) => t.throws(() => parseAvcC(b), { instanceOf: CodecError })?.message ?? '';
  t.regex(reason(good.subarray(0, 5)), /too short/);
  t.regex(reason(Buffer.concat([Buffer.from([2]), good.subarray(1)])), /configurationVersion 2/);
  t.regex(reason(good.subarray(0, good.length - 2)), /PPS 0 length 4 exceeds the 2 bytes left/);
  t.regex(reason(good.subarray(0, 6 + 2 + sps.length)), /before the PPS count/);
  const noSps = Buffer.from(good);
  noSps[5] = 0xe0;
  t.regex(reason(noSps), /no SPS|NAL type/);
  t.throws(() => buildAvcC([], [pps]), { instanceOf: CodecError });
  t.throws(() => buildAvcC([pps], [pps]), { instanceOf: CodecError, message: /NAL type 8, expected 7/ });
});

test('NAL framing: Annex B with 3- and 4-byte start codes, AVCC round trips, length sizes, IDR detection', (t) => {
  const a = Buffer.from([0x67, 1, 2]);
  const b = Buffer.from([0x68, 3]);
  const c = Buffer.from([0x65, 4, 5, 0, 6]);
  const annexB = Buffer.from([0, 0, 0, 0, 1, ...a, 0, 0, 1, ...b, 0, 0, 0, 1, ...c, 0, 0]);
  t.deepEqual(splitAnnexB(annexB), [a, b, c]);
  t.deepEqual(splitAnnexB(Buffer.alloc(0)), []);
  t.deepEqual(splitAnnexB(Buffer.from([0, 0, 1, 0, 0, 1, 0x09, 0xf0])), [Buffer.from([0x09, 0xf0])]);
  t.throws(() => splitAnnexB(Buffer.from([1, 0, 0, 1, 0x67])), { instanceOf: CodecError, message: /does not begin with a start code/ });
  t.throws(() => splitAnnexB(Buffer.from([0x67, 1])), { instanceOf: CodecError, message: /no start code/ });

  const avcc = annexBToAvcc(annexB);
  t.deepEqual([...nalUnits(avcc)], [a, b, c]);
  t.deepEqual(avccToAnnexB(avcc), Buffer.from([0, 0, 0, 1, ...a, 0, 0, 0, 1, ...b, 0, 0, 0, 1, ...c]));
  t.true(isIdr(avcc));
  t.false(isIdr(annexBToAvcc(Buffer.from([0, 0, 1, ...a, 0, 0, 1, 0x41, 9]))));

  for (const size of [1, 2, 3]) {
    const parts: number[] = [];
    for (const n of [a, b, c]) {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(n.length);
      parts.push(...len.subarray(4 - size), ...n);
    }
    const short = Buffer.from(parts);
    t.deepEqual([...nalUnits(short, size)], [a, b, c]);
    t.deepEqual(Buffer.from(toLengthSize4(short, size)), avcc);
    t.deepEqual(avccToAnnexB(short, size), avccToAnnexB(avcc));
    t.true(isIdr(short, size));
  }
  t.is(toLengthSize4(avcc, 4), avcc);
});

test('NAL lengths are checked before use', (t) => {
  const bad = [
    { b: Buffer.from([0, 0, 0, 5, 1, 2]), re: /NAL length 5 at offset 0 exceeds the 2 bytes left/ },
    { b: Buffer.from([0, 0, 0, 1, 0x65, 0, 0]), re: /truncated NAL length prefix at offset 5/ },
    { b: Buffer.from([0, 0, 0, 0]), re: /zero-length/ },
  ];
  for (const { b, re } of bad) {
    t.throws(() => [...nalUnits(b)], { instanceOf: CodecError, message: re });
    t.throws(() => avccToAnnexB(b), { instanceOf: CodecError, message: re });
    t.throws(() => isIdr(b), { instanceOf: CodecError, message: re });
  }
  t.throws(() => toLengthSize4(Buffer.from([0, 9, 1]), 2), { instanceOf: CodecError });
  t.throws(() => [...nalUnits(Buffer.from([1, 1]), 5)], { instanceOf: CodecError, message: /length size 5/ });
});

test('fuzz: parseSps, parseAvcC and nalUnits throw only CodecError', (t) => {
  const spsSeeds = [
    makeSps({ profile: 66, poc: 1, widthMbs: 40, heightUnits: 30, frameMbsOnly: 1 }),
    makeSps({ profile: 100, scaling: true, widthMbs: 120, heightUnits: 68, frameMbsOnly: 1, crop: [0, 0, 0, 4] }),
    makeSps({ profile: 244, chroma: 3, widthMbs: 10, heightUnits: 10, frameMbsOnly: 0, crop: [1, 1, 1, 1] }),
  ];
  const pps = Buffer.from([0x68, 0xce, 0x38, 0x80]);
  const avcSeeds = spsSeeds.map((s) => buildAvcC([s], [pps]));
  const nalSeeds = [annexBToAvcc(Buffer.from([0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4, 5, 6, 7, 8]))];
  const r1 = fuzz(t, spsSeeds, (b) => void parseSps(b), { count: 4000, seed: 1, format: 'h264' });
  const r2 = fuzz(t, avcSeeds, (b) => void parseAvcC(b), { count: 4000, seed: 2, format: 'h264' });
  const r3 = fuzz(
    t,
    nalSeeds,
    (b) => {
      for (const size of [1, 2, 4]) for (const n of nalUnits(b, size)) void n;
      splitAnnexB(b);
    },
    { count: 4000, seed: 3, format: 'h264' },
  );
  for (const r of [r1, r2, r3]) t.true(r.accepted > 0 && r.rejected > 0, JSON.stringify(r));
  const ms = r1.ms + r2.ms + r3.ms;
  t.log(`12000 inputs in ${ms.toFixed(0)} ms`);
});
