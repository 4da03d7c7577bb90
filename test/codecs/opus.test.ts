import test from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import { opusHead, parseOpusHead, parseOpusPacket } from '../../codecs/opus.ts';
import { prng } from '../helpers/prng.ts';
import { randomBytes } from '../webrtc/rtp-fixtures.ts';

test('OpusHead for mapping family 0 (RFC 7845 5.1)', (t) => {
  const h = opusHead({ channels: 2, preSkip: 312 });
  t.is(h.length, 19);
  t.is(h.subarray(0, 8).toString('latin1'), 'OpusHead');
  t.deepEqual(parseOpusHead(h), { version: 1, channels: 2, preSkip: 312, inputSampleRate: 48000, outputGain: 0, mappingFamily: 0 });
  t.is(parseOpusHead(opusHead({ channels: 1 })).preSkip, 0);
  t.throws(() => opusHead({ channels: 3 }), { instanceOf: RangeError });
  t.throws(() => parseOpusHead(h.subarray(0, 18)), { instanceOf: CodecError });
  t.throws(() => parseOpusHead(Buffer.from('OpusTagsxxxxxxxxxxxxxxx')), { instanceOf: CodecError, message: /magic/ });
});

test('packet durations from the TOC for each frame count code', (t) => {
  t.deepEqual(parseOpusPacket(Uint8Array.of((31 << 3) | 0, 1, 2)), { samples: 960, frames: 1, stereo: false }); // CELT FB 20 ms
  t.deepEqual(parseOpusPacket(Uint8Array.of((1 << 3) | 4 | 1, 1, 2)), { samples: 1920, frames: 2, stereo: true }); // SILK NB 20 ms x2
  t.deepEqual(parseOpusPacket(Uint8Array.of((15 << 3) | 2, 1, 9, 8)), { samples: 1920, frames: 2, stereo: false }); // Hybrid FB 20 ms, code 2
  t.deepEqual(parseOpusPacket(Uint8Array.of((16 << 3) | 3, 0x03, 1, 2, 3)), { samples: 360, frames: 3, stereo: false }); // CELT NB 2.5 ms x3 CBR
  t.deepEqual(parseOpusPacket(Uint8Array.of((3 << 3) | 3, 0x82, 1, 7, 7)).samples, 5760); // SILK 60 ms x2 VBR = 120 ms
  t.is(parseOpusPacket(Uint8Array.of((31 << 3) | 3, 0x41, 2, 5, 5, 0, 0)).frames, 1, 'padding');
});

test('malformed packets are rejected with CodecError', (t) => {
  const bad: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /empty/],
    [Uint8Array.of((31 << 3) | 1, 1), /odd payload/],
    [Uint8Array.of((31 << 3) | 2), /without a frame length/],
    [Uint8Array.of((31 << 3) | 2, 200, 1), /runs past/],
    [Uint8Array.of((31 << 3) | 3), /without a frame count/],
    [Uint8Array.of((31 << 3) | 3, 0), /0 frames/],
    [Uint8Array.of((3 << 3) | 3, 3), /exceeds 120 ms/],
    [Uint8Array.of((31 << 3) | 3, 0x02, 1, 2, 3), /equal frames/],
    [Uint8Array.of((31 << 3) | 3, 0x41, 255), /padding length/],
  ];
  for (const [b, re] of bad) t.throws(() => parseOpusPacket(b), { instanceOf: CodecError, message: re });
});

test('fuzz: random packets only throw CodecError, and durations stay within 120 ms', (t) => {
  const rand = prng(9);
  for (let i = 0; i < 20000; i++) {
    try {
      const info = parseOpusPacket(randomBytes(rand, Math.floor(rand() * 40)));
      t.true(info.samples >= 120 && info.samples <= 5760);
    } catch (err) {
      if (!(err instanceof CodecError)) {
        t.fail(String(err));
        return;
      }
    }
  }
  t.pass();
});
