import test from 'ava';
import { decodeAmf0, encodeAmf0, type AmfObject, type AmfValue } from '../../codecs/amf0.ts';
import { CodecError } from '../../codecs/errors.ts';
import { prng } from '../helpers/prng.ts';

/** The `connect` command payload ffmpeg 5.1 sent when publishing to rtmp://127.0.0.1:38825/live/cam
 *  (captured from the wire, chunk headers removed). */
const FFMPEG_CONNECT = Buffer.from(
  '020007636f6e6e656374003ff00000000000000300036170700200046c69766500047479706502000a6e6f6e707269766174650008666c617368' +
    '566572020024464d4c452f332e302028636f6d70617469626c653b204c61766635392e32372e313030290005746355726c02001b72746d70' +
    '3a2f2f3132372e302e302e313a33383832352f6c697665000009',
  'hex',
);

/** The onMetaData script tag body of a 1 s 320x240 H.264 + mono 48 kHz AAC .flv made by ffmpeg 5.1. */
const FFMPEG_ON_METADATA = Buffer.from(
  '02000a6f6e4d65746144617461080000000d00086475726174696f6e003ff147ae147ae14800057769647468004074000000000000000668' +
    '656967687400406e000000000000000d766964656f646174617261746500000000000000000000096672616d657261746500403900000000' +
    '0000000c766964656f636f646563696400401c000000000000000d617564696f6461746172617465004050d88000000000000f617564696f' +
    '73616d706c65726174650040e7700000000000000f617564696f73616d706c6573697a65004030000000000000000673746572656f010000' +
    '0c617564696f636f64656369640040240000000000000007656e636f64657202000d4c61766635392e32372e313030000866696c6573697a' +
    '650040e6cc2000000000000009',
  'hex',
);

function rejects(t: import('ava').ExecutionContext, buf: Uint8Array, reason: RegExp, limits?: Parameters<typeof decodeAmf0>[1]) {
  const err = t.throws(() => decodeAmf0(buf, limits), { instanceOf: CodecError });
  t.is(err?.format, 'amf0');
  t.regex(err?.reason ?? '', reason);
}

test('decodes the connect command ffmpeg sends', (t) => {
  t.deepEqual(decodeAmf0(FFMPEG_CONNECT), [
    'connect',
    1,
    {
      app: 'live',
      type: 'nonprivate',
      flashVer: 'FMLE/3.0 (compatible; Lavf59.27.100)',
      tcUrl: 'rtmp://127.0.0.1:38825/live',
    },
  ]);
});

test('encodes the connect command to the same bytes ffmpeg sends', (t) => {
  const [name, txn, obj] = decodeAmf0(FFMPEG_CONNECT);
  t.true(encodeAmf0(name, txn, obj).equals(FFMPEG_CONNECT));
});

test("decodes ffmpeg's onMetaData (ECMA array -> object)", (t) => {
  const [name, meta] = decodeAmf0(FFMPEG_ON_METADATA);
  t.is(name, 'onMetaData');
  t.deepEqual(meta, {
    duration: 1.08,
    width: 320,
    height: 240,
    videodatarate: 0,
    framerate: 25,
    videocodecid: 7,
    audiodatarate: 67.3828125,
    audiosamplerate: 48000,
    audiosamplesize: 16,
    stereo: false,
    audiocodecid: 10,
    encoder: 'Lavf59.27.100',
    filesize: 46689,
  });
});

test('known byte vectors for every encoded type', (t) => {
  const hex = (...v: AmfValue[]) => encodeAmf0(...v).toString('hex');
  t.is(hex(1), '003ff0000000000000');
  t.is(hex(-0.5), '00bfe0000000000000');
  t.is(hex(true, false), '01010100');
  t.is(hex('ab'), '0200026162');
  t.is(hex(''), '020000');
  t.is(hex('é'), '020002c3a9');
  t.is(hex(null, undefined), '0506');
  t.is(hex(new Date(0)), '0b00000000000000000000');
  t.is(hex({ a: 1 }), '03' + '000161' + '003ff0000000000000' + '000009');
  t.is(hex({}), '03000009');
  t.is(hex([1, 'x']), '0a00000002' + '003ff0000000000000' + '02000178');
  t.is(hex([]), '0a00000000');
});

test('decodes ECMA array, typed object, long string and date', (t) => {
  const ecma = Buffer.from('08000000ff' + '000178' + '0101' + '000009', 'hex'); // wrong count: only a hint
  t.deepEqual(decodeAmf0(ecma), [{ x: true }]);
  const typed = Buffer.from('100003466f6f' + '000162' + '0500' + '00' + '09', 'hex');
  t.deepEqual(decodeAmf0(typed), [{ b: null }]);
  t.deepEqual(decodeAmf0(Buffer.from('0c000000026869', 'hex')), ['hi']);
  const date = decodeAmf0(Buffer.from('0b' + '4276f5e66e800000' + '0000', 'hex'))[0];
  t.true(date instanceof Date);
  t.is((date as Date).getTime(), 1_577_836_800_000);
});

test('strings over 65535 bytes become long strings and round-trip', (t) => {
  const s = 'ü'.repeat(40_000); // 80000 UTF-8 bytes, 40000 UTF-16 units
  const enc = encodeAmf0(s);
  t.is(enc[0], 0x0c);
  t.is(enc.readUInt32BE(1), 80_000);
  t.deepEqual(decodeAmf0(enc), [s]);
  const exact = 'a'.repeat(65_535);
  t.is(encodeAmf0(exact)[0], 0x02);
  t.is(encodeAmf0(exact + 'a')[0], 0x0c);
});

test('nested values round-trip', (t) => {
  const values: AmfValue[] = [
    '_result',
    2,
    null,
    { level: 'status', code: 'NetStream.Publish.Start', nested: { list: [1, [true, null, 'x'], { d: new Date(1234) }] } },
    [undefined, -Infinity, 0, 1e300],
    'unicode 🎥 ✓',
  ];
  t.deepEqual(decodeAmf0(encodeAmf0(...values)), values);
});

test('a __proto__ key is an own property and does not touch the prototype', (t) => {
  const buf = Buffer.from('03' + '0009' + Buffer.from('__proto__').toString('hex') + '03' + '000178' + '0101' + '000009' + '000009', 'hex');
  const [obj] = decodeAmf0(buf) as [AmfObject];
  t.is(Object.getPrototypeOf(obj), Object.prototype);
  t.true(Object.hasOwn(obj, '__proto__'));
  t.deepEqual(obj['__proto__'], { x: true });
  t.is((obj as Record<string, unknown>)['x'], undefined);
});

test('every truncation of a valid encoding is rejected', (t) => {
  const full = encodeAmf0({ a: [1, 'two', { b: new Date(5) }], c: 'x'.repeat(70_000) });
  for (const cut of [1, 2, 3, 5, 9, 12, 20, 30, 40, 45, 50, full.length - 1000, full.length - 3, full.length - 1]) {
    t.throws(() => decodeAmf0(full.subarray(0, cut)), { instanceOf: CodecError }, `cut at ${cut}`);
  }
  rejects(t, Buffer.from('0200056162', 'hex'), /truncated string \(declared length 5\)/);
  rejects(t, Buffer.from('0c7fffffff', 'hex'), /truncated long string/);
  rejects(t, Buffer.from('00000000', 'hex'), /truncated number/);
});

test('unsupported markers are rejected clearly', (t) => {
  rejects(t, Buffer.from('070001', 'hex'), /reference marker \(0x07\)/);
  rejects(t, Buffer.from('1104', 'hex'), /AMF3 switch marker \(0x11\)/);
  rejects(t, Buffer.from('09', 'hex'), /object end marker \(0x09\) at offset 0 where a value was expected/);
  rejects(t, Buffer.from('0d', 'hex'), /unknown or unsupported marker 0x0d at offset 0/);
  rejects(t, Buffer.from('0506ff', 'hex'), /marker 0xff at offset 2/);
  rejects(t, Buffer.from('03000005', 'hex'), /empty key .* not followed by end marker/);
});

test('depth and item limits', (t) => {
  let deep: AmfValue = 1;
  for (let i = 0; i < 16; i++) deep = [deep];
  t.notThrows(() => decodeAmf0(encodeAmf0(deep)));
  rejects(t, encodeAmf0([deep]), /nested deeper than 16/);
  rejects(t, encodeAmf0({ a: { b: 1 } }), /nested deeper than 1/, { maxDepth: 1 });

  const many: AmfObject = {};
  for (let i = 0; i < 11; i++) many[`k${i}`] = i;
  t.notThrows(() => decodeAmf0(encodeAmf0(many), { maxItems: 11 }));
  rejects(t, encodeAmf0(many), /more than 10 properties/, { maxItems: 10 });
  rejects(t, encodeAmf0(new Array<AmfValue>(11).fill(null)), /strict array count 11 exceeds 10/, { maxItems: 10 });
  // A count that the remaining bytes cannot hold is refused before any element is read.
  rejects(t, Buffer.from('0a00000fff0505', 'hex'), /count 4095 exceeds the 2 bytes that remain/);
  // Unbounded nesting from tiny input stays a CodecError, not a stack overflow.
  rejects(t, Buffer.from('0a00000001'.repeat(20_000) + '05', 'hex'), /nested deeper than 16/);
  rejects(t, Buffer.from('0a00000001'.repeat(20_000) + '05', 'hex'), /nested deeper than 1000/, { maxDepth: 1e9 });
});

test('encoder refuses what AMF0 cannot carry', (t) => {
  const cyclic: AmfObject = {};
  cyclic['self'] = cyclic;
  t.throws(() => encodeAmf0(cyclic), { instanceOf: CodecError, message: /cyclic/ });
  t.throws(() => encodeAmf0({ ['k'.repeat(70_000)]: 1 }), { instanceOf: CodecError, message: /longer than 65535/ });
  t.throws(() => encodeAmf0({ '': 1 }), { instanceOf: CodecError, message: /empty key/ });
  // The same object twice (not a cycle) is fine.
  const shared = { a: 1 };
  t.deepEqual(decodeAmf0(encodeAmf0([shared, shared])), [[shared, shared]]);
});

test('fuzz: random and mutated inputs only ever throw CodecError', (t) => {
  const rand = prng(0xa3f0);
  const int = (n: number) => Math.floor(rand() * n);
  const seeds = [FFMPEG_CONNECT, FFMPEG_ON_METADATA, encodeAmf0('x', { a: [1, { b: 'c' }], d: new Date(3) }, [null, undefined])];
  const start = Date.now();
  let accepted = 0;
  for (let i = 0; i < 6000; i++) {
    let input: Buffer;
    if (i % 3 === 0) {
      input = Buffer.alloc(int(64));
      // Bias towards valid markers so the decoder gets past the first byte.
      for (let j = 0; j < input.length; j++) input[j] = rand() < 0.5 ? int(0x12) : int(256);
    } else {
      const seed = seeds[int(seeds.length)] ?? FFMPEG_CONNECT;
      input = Buffer.from(seed);
      for (let m = 1 + int(4); m > 0; m--) input[int(input.length)] = int(256);
      if (rand() < 0.3) input = input.subarray(0, int(input.length));
    }
    try {
      decodeAmf0(input, { maxDepth: 8, maxItems: 64 });
      accepted++;
    } catch (err) {
      if (!(err instanceof CodecError)) t.fail(`input ${input.toString('hex')} threw ${String(err)}`);
    }
  }
  t.true(accepted > 0);
  t.true(Date.now() - start < 1000, `took ${Date.now() - start} ms`);
});
