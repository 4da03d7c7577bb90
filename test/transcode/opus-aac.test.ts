/**
 * node-av on Node 20, and the Opus -> AAC stage on Opus packets ffmpeg encodes (libopus into Ogg,
 * read back packet by packet): what comes out is AAC that ffprobe decodes, on the input's timeline.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNodeAv } from '../../codecs/transcode/native.ts';
import { AAC_FRAME_SAMPLES, OpusToAac, type AacPacket } from '../../codecs/transcode/opus-aac.ts';
import { TranscodeError } from '../../codecs/transcode/errors.ts';
import { run } from '../helpers/process.ts';
import { oggOpus, probeFrames, writeAdts, type OpusMedia } from './media.ts';

const dir = mkdtempSync(join(tmpdir(), 'trib-opus-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const SECONDS = 3;
let tone: string;
let media: OpusMedia;

test.before(async () => {
  tone = join(dir, 'tone.ogg');
  const r = await run(
    'ffmpeg',
    ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', String(SECONDS), '-ac', '2', '-c:a', 'libopus', '-b:a', '64k', '-frame_duration', '20', '-f', 'ogg', tone],
    { timeoutMs: 60_000 },
  );
  if (r.code !== 0) throw new Error(`ffmpeg: ${r.stderr}`);
  media = oggOpus(tone);
});

/** 1024 AAC samples on the 90 kHz clock. */
const AAC_FRAME_TICKS = (AAC_FRAME_SAMPLES * 90_000) / 48_000;

test('node-av loads on Node 20 with Promise.withResolvers polyfilled, and its demuxer really yields packets', async (t) => {
  const av = await loadNodeAv();
  t.is(typeof (Promise as unknown as { withResolvers?: unknown }).withResolvers, 'function');
  const { Demuxer } = await import('node-av/api');
  const demuxer = await Demuxer.open(tone);
  let packets = 0;
  try {
    for await (const p of demuxer.packets()) {
      if (!p) break;
      packets++;
      p.free();
    }
  } finally {
    await demuxer.close();
  }
  // ffprobe's count of the same file: without the polyfill node-av's demuxer yields none and says nothing.
  const probe = await run('ffprobe', ['-v', 'error', '-count_packets', '-show_entries', 'stream=nb_read_packets', '-of', 'csv=p=0', tone], { timeoutMs: 20_000 });
  t.is(packets, Number(probe.stdout.trim()));
  t.is(packets, media.packets.length);
  t.truthy(av.lib.Codec.findEncoderByName(av.c.FF_ENCODER_AAC));
});

test('Opus to AAC-LC: every packet decoded, timestamps kept on the 90 kHz clock, ffprobe decodes the AAC', async (t) => {
  const av = await loadNodeAv();
  const stage = new OpusToAac(av, media.head, { bitrate: 96_000 });
  t.teardown(() => stage.close());
  t.like(stage.track, { sampleRate: 48_000, channels: 2, codecString: 'mp4a.40.2' });
  const out: AacPacket[] = [];
  const base = 900_000; // a stream that started 10 s ago
  for (const p of media.packets) stage.push({ data: p.data, pts: base + p.pts }, (a) => out.push(a));
  stage.flush((a) => out.push(a));
  t.is(stage.packetsIn, media.packets.length, 'every Opus packet went in');
  t.is(stage.silenceSamples, 0);
  t.is(stage.restarts, 0);

  // The decoder drops the pre-skip: the first real sample is at base + preSkip; the AAC priming frame is 1024 samples before it.
  const preSkip = media.head.readUInt16LE(10);
  const firstSample = base + Math.round(preSkip * 1.875);
  t.is(out[0]!.pts, firstSample - AAC_FRAME_TICKS, 'the priming frame sits one AAC frame before the first sample');
  for (let i = 1; i < out.length; i++) t.is(out[i]!.pts - out[i - 1]!.pts, AAC_FRAME_TICKS, `frame ${i} follows on`);
  const inputSamples = media.packets.reduce((n, p) => n + p.samples, 0) - preSkip;
  // Every input sample is in some frame: the priming one, then ceil(samples / 1024), plus what the encoder's delay pushes out.
  t.true(out.length >= Math.ceil(inputSamples / AAC_FRAME_SAMPLES) + 1, `${out.length} AAC frames for ${inputSamples} samples`);
  t.true(out.length <= Math.ceil(inputSamples / AAC_FRAME_SAMPLES) + 2);

  const file = join(dir, 'out.aac');
  writeAdts(file, stage.track.config, out.map((a) => a.data));
  const probed = await probeFrames(file);
  t.like(probed[0], { codec: 'aac', sampleRate: 48_000, channels: 2 });
  t.is(probed[0]!.frames, out.length, 'ffprobe decodes every AAC frame');
  const decode = await run('ffmpeg', ['-v', 'error', '-i', file, '-f', 'null', '-'], { timeoutMs: 30_000 });
  t.is(decode.code, 0);
  t.is(decode.stderr.trim(), '');
});

test('gaps (DTX, loss) are filled with silence; a long pause or a jump back restarts the timeline, never going back in time', async (t) => {
  const av = await loadNodeAv();
  const stage = new OpusToAac(av, media.head, { bitrate: 64_000 });
  t.teardown(() => stage.close());
  const out: AacPacket[] = [];
  const push = (i: number, shift = 0): void => {
    const p = media.packets[i]!;
    stage.push({ data: p.data, pts: 90_000 + p.pts + shift }, (a) => out.push(a));
  };
  for (let i = 0; i < 50; i++) push(i);
  // 10 packets (200 ms) missing: silence takes their place and the frames stay 1024 samples apart.
  for (let i = 60; i < 90; i++) push(i);
  t.is(stage.silenceSamples, 10 * 960);
  for (let i = 1; i < out.length; i++) t.is(out[i]!.pts - out[i - 1]!.pts, AAC_FRAME_TICKS);
  // A 5 s pause: a new timeline where the audio resumes, not 5 s of silence.
  const beforePause = out.length;
  for (let i = 90; i < 110; i++) push(i, 450_000);
  t.is(stage.restarts, 1);
  t.is(stage.silenceSamples, 10 * 960);
  const resumed = out.slice(beforePause).find((a) => a.pts >= 90_000 + media.packets[90]!.pts + 450_000 - AAC_FRAME_TICKS);
  t.truthy(resumed, 'frames on the new timeline');
  // The clock goes back 1 s: a new timeline there, and nothing at or before what was out already.
  for (let i = 110; i < 150; i++) push(i, 450_000 - 90_000);
  stage.flush((a) => out.push(a));
  t.is(stage.restarts, 2);
  for (let i = 1; i < out.length; i++) t.true(out[i]!.pts > out[i - 1]!.pts, `pts ${out[i]!.pts} after ${out[i - 1]!.pts}`);
});

test('a bad OpusHead is refused with a clear error; corrupt packets are skipped', async (t) => {
  const av = await loadNodeAv();
  t.throws(() => new OpusToAac(av, Buffer.from('OpusTags-not-a-head'), { bitrate: 64_000 }), { instanceOf: TranscodeError, message: /audio: bad OpusHead/ });
  const stage = new OpusToAac(av, media.head, { bitrate: 64_000 });
  t.teardown(() => stage.close());
  const out: AacPacket[] = [];
  for (let i = 0; i < 20; i++) stage.push({ data: media.packets[i]!.data, pts: media.packets[i]!.pts }, (a) => out.push(a));
  t.notThrows(() => stage.push({ data: Buffer.from([0xff, 0xff, 0xff]), pts: media.packets[20]!.pts }, (a) => out.push(a)));
  for (let i = 21; i < 40; i++) stage.push({ data: media.packets[i]!.data, pts: media.packets[i]!.pts }, (a) => out.push(a));
  stage.flush((a) => out.push(a));
  t.true(out.length >= 25);
});
