import test from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import { type MediaPlaylist, parseMasterPlaylist, parseMediaPlaylist, type Variant, writeMasterPlaylist, writeMediaPlaylist } from '../../codecs/m3u8.ts';
import { prng } from '../helpers/prng.ts';
import { fuzz } from './hls-codecs-helpers.ts';

const full: MediaPlaylist = {
  version: 7,
  targetDuration: 4,
  mediaSequence: 120,
  discontinuitySequence: 3,
  independentSegments: true,
  map: { uri: 'init-1.mp4' },
  endList: true,
  segments: [
    { uri: 'seg120.m4s', duration: 4.004, sequence: 120, programDateTime: new Date('2024-05-01T12:00:00.123Z') },
    { uri: 'seg121.m4s', duration: 3.5, sequence: 121 },
    { uri: 'seg122.m4s', duration: 4.4, sequence: 122, discontinuity: true, map: { uri: 'init-2.mp4' }, programDateTime: new Date('2024-05-01T12:10:00Z') },
    { uri: 'all.m4s', duration: 2, sequence: 123, byteRange: { length: 1000, offset: 0 } },
    { uri: 'all.m4s', duration: 2.002, sequence: 124, byteRange: { length: 2000 } },
    { uri: 'all.m4s', duration: 0.5, sequence: 125, byteRange: { length: 300, offset: 5000 } },
  ],
};

test('media playlist: write -> parse round trip', (t) => {
  const text = writeMediaPlaylist(full);
  t.deepEqual(parseMediaPlaylist(text), full);
  t.true(text.startsWith('#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:120\n#EXT-X-DISCONTINUITY-SEQUENCE:3\n'));
  t.regex(text, /#EXT-X-BYTERANGE:2000\n#EXTINF:2.002,\nall.m4s\n/);
  t.true(text.endsWith('#EXT-X-ENDLIST\n'));
  const live: MediaPlaylist = { version: 3, targetDuration: 2, mediaSequence: 0, discontinuitySequence: 0, endList: false, segments: [{ uri: 'a.ts', duration: 2, sequence: 0 }] };
  t.deepEqual(parseMediaPlaylist(writeMediaPlaylist(live)), live);
  // CRLF, comments, blank lines, titles and unknown tags are fine
  const crlf = '#EXTM3U\r\n#EXT-X-TARGETDURATION:6\r\n# a comment\r\n\r\n#EXT-X-SOMETHING-NEW:1\r\n#EXTINF:5.5,title\r\nhttp://x/a.ts\r\n';
  t.like(parseMediaPlaylist(crlf), { version: 1, targetDuration: 6, segments: [{ uri: 'http://x/a.ts', duration: 5.5, sequence: 0 }] });
});

test('master playlist: write -> parse round trip', (t) => {
  const variants: Variant[] = [
    { uri: 'hi/index.m3u8', bandwidth: 5_000_000, resolution: { width: 1920, height: 1080 }, codecs: 'avc1.640028,mp4a.40.2', frameRate: 29.97 },
    { uri: 'lo/index.m3u8', bandwidth: 800_000, resolution: { width: 640, height: 360 }, codecs: 'avc1.42c01e,mp4a.40.2', frameRate: 30 },
    { uri: 'audio.m3u8', bandwidth: 128_000, codecs: 'mp4a.40.2' },
  ];
  const text = writeMasterPlaylist(variants);
  t.regex(text, /^#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2",FRAME-RATE=29.970\nhi\/index.m3u8\n/);
  t.deepEqual(parseMasterPlaylist(text), variants);
  t.throws(() => parseMasterPlaylist('#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n'), { instanceOf: CodecError, message: /line 2: .*no BANDWIDTH/ });
  t.throws(() => parseMasterPlaylist('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n'), { instanceOf: CodecError, message: /line 2: .*no URI after it/ });
  t.throws(() => parseMasterPlaylist('#EXTM3U\n#EXTINF:1,\na.ts\n'), { instanceOf: CodecError, message: /line 2: EXTINF is a media playlist tag/ });
  t.throws(() => parseMasterPlaylist('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1\na.m3u8\n'), { instanceOf: CodecError, message: /unterminated/ });
  t.throws(() => writeMasterPlaylist([{ uri: 'a', bandwidth: 1, codecs: 'x"y' }]), { instanceOf: CodecError });
});

const base = '#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:10\n';

function rejects(t: import('ava').ExecutionContext, text: string, re: RegExp, opts?: Parameters<typeof parseMediaPlaylist>[1]) {
  const e = t.throws(() => parseMediaPlaylist(text, opts), { instanceOf: CodecError });
  t.is(e?.format, 'm3u8');
  t.regex(e?.reason ?? '', re);
}

test('parser rejects: missing #EXTM3U, bad EXTINF, duration over target, byte range past the resource', (t) => {
  rejects(t, '#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na.ts\n', /^line 1: missing #EXTM3U/);
  rejects(t, '\uFEFF#EXTM3U\n#EXT-X-TARGETDURATION:4\n', /^line 1: missing #EXTM3U/);
  rejects(t, `${base}#EXTINF:abc,\na.ts\n`, /^line 5: EXTINF "abc," is not <duration>,\[title\]/);
  rejects(t, `${base}#EXTINF:4\na.ts\n`, /^line 5: EXTINF "4" is not/);
  rejects(t, `${base}#EXTINF:-1,\na.ts\n`, /^line 5: EXTINF/);
  rejects(t, `${base}#EXTINF:4,\na.ts\n#EXTINF:4.5,\nb.ts\n`, /^line 7: segment duration 4.5 rounds above EXT-X-TARGETDURATION 4/);
  t.is(parseMediaPlaylist(`${base}#EXTINF:4.49,\nb.ts\n`).segments[0]!.duration, 4.49);
  const sizes = new Map([['all.ts', 1500]]);
  rejects(t, `${base}#EXT-X-BYTERANGE:1000@600\n#EXTINF:4,\nall.ts\n`, /^line 5: EXT-X-BYTERANGE 1000@600 reaches past the end of all.ts \(1500 bytes\)/, { resourceSizes: sizes });
  rejects(t, `${base}#EXT-X-BYTERANGE:1000@0\n#EXTINF:4,\nall.ts\n#EXT-X-BYTERANGE:501\n#EXTINF:4,\nall.ts\n`, /^line 8: EXT-X-BYTERANGE 501@1000 reaches past/, { resourceSizes: sizes });
  t.is(parseMediaPlaylist(`${base}#EXT-X-BYTERANGE:1000@0\n#EXTINF:4,\nall.ts\n#EXT-X-BYTERANGE:500\n#EXTINF:4,\nall.ts\n`, { resourceSizes: sizes }).segments.length, 2);
});

test('parser rejects other malformed playlists with the line', (t) => {
  rejects(t, '#EXTM3U\n#EXTINF:4,\na.ts\n', /^line 4: missing EXT-X-TARGETDURATION/);
  rejects(t, '#EXTM3U\n#EXT-X-TARGETDURATION:4.5\n', /^line 2: EXT-X-TARGETDURATION value "4.5" is not a decimal integer/);
  rejects(t, `${base}#EXT-X-TARGETDURATION:4\n`, /^line 5: EXT-X-TARGETDURATION appears more than once/);
  rejects(t, `${base}a.ts\n`, /^line 5: URI "a.ts" has no EXTINF before it/);
  rejects(t, `${base}#EXTINF:4,\n#EXTINF:4,\na.ts\n`, /^line 6: EXTINF follows the EXTINF on line 5/);
  rejects(t, `${base}#EXTINF:4,\n`, /^line 5: EXTINF has no URI after it/);
  rejects(t, `${base}#EXTINF:4,\na.ts\n#EXT-X-MEDIA-SEQUENCE:3\n`, /^line 7: EXT-X-MEDIA-SEQUENCE appears more than once/);
  rejects(t, '#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na.ts\n#EXT-X-MEDIA-SEQUENCE:3\n', /^line 5: EXT-X-MEDIA-SEQUENCE must come before the first segment/);
  rejects(t, `${base}#EXT-X-BYTERANGE:10\n#EXTINF:4,\na.ts\n`, /^line 5: EXT-X-BYTERANGE without an offset must follow a range of the same URI/);
  rejects(t, `${base}#EXT-X-BYTERANGE:10@0\n#EXTINF:4,\na.ts\n#EXT-X-BYTERANGE:10\n#EXTINF:4,\nb.ts\n`, /^line 8: .*same URI/);
  rejects(t, `${base}#EXT-X-BYTERANGE:0@0\n#EXTINF:4,\na.ts\n`, /^line 5: EXT-X-BYTERANGE length 0/);
  rejects(t, `${base}#EXT-X-BYTERANGE:99999999999999999999\n#EXTINF:4,\na.ts\n`, /^line 5: EXT-X-BYTERANGE length .* out of range/);
  rejects(t, `${base}#EXT-X-BYTERANGE:10@x\n#EXTINF:4,\na.ts\n`, /^line 5: EXT-X-BYTERANGE "10@x"/);
  rejects(t, `${base}#EXT-X-BYTERANGE:10@0\n`, /^line 5: EXT-X-BYTERANGE has no segment after it/);
  rejects(t, `${base}#EXT-X-PROGRAM-DATE-TIME:yesterday\n#EXTINF:4,\na.ts\n`, /^line 5: EXT-X-PROGRAM-DATE-TIME/);
  rejects(t, `${base}#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:00\n#EXTINF:4,\na.ts\n`, /^line 5: .*time zone/);
  rejects(t, `${base}#EXT-X-MAP:URI=init.mp4\n`, /^line 5: EXT-X-MAP attribute URI must be a quoted string/);
  rejects(t, `${base}#EXT-X-MAP:URI="init.mp4",BYTERANGE="100@0"\n`, /^line 5: EXT-X-MAP BYTERANGE is not supported/);
  rejects(t, `${base}#EXT-X-KEY:METHOD=AES-128,URI="k"\n`, /^line 5: encrypted segments/);
  rejects(t, `${base}#EXT-X-STREAM-INF:BANDWIDTH=1\n`, /^line 5: EXT-X-STREAM-INF is a master playlist tag/);
  rejects(t, `${base}#EXT-X-ENDLIST\n#EXTINF:4,\na.ts\n`, /^line 7: segment after EXT-X-ENDLIST/);
  rejects(t, `${base}#EXT-X-ENDLIST:YES\n`, /^line 5: EXT-X-ENDLIST takes no value/);
  rejects(t, `${base}#EXTM3U\n`, /^line 5: #EXTM3U appears again/);
  t.is(parseMediaPlaylist(`${base}#EXT-X-KEY:METHOD=NONE\n#EXTINF:4,\na.ts\n`).segments.length, 1);
});

test('writer refuses what the parser would reject', (t) => {
  const seg = { uri: 'a.ts', duration: 2, sequence: 0 };
  const p: MediaPlaylist = { version: 6, targetDuration: 2, mediaSequence: 0, discontinuitySequence: 0, endList: false, segments: [seg] };
  const refuse = (q: MediaPlaylist, re: RegExp) => t.throws(() => writeMediaPlaylist(q), { instanceOf: CodecError, message: re });
  refuse({ ...p, segments: [{ ...seg, duration: 2.6 }] }, /rounds above the target duration/);
  refuse({ ...p, segments: [{ ...seg, sequence: 4 }] }, /sequence 4 is not media sequence 0 \+ 0/);
  refuse({ ...p, segments: [{ ...seg, uri: 'a\nb' }] }, /cannot be written/);
  refuse({ ...p, segments: [{ ...seg, byteRange: { length: 5 } }] }, /without an offset/);
  refuse({ ...p, version: 3, map: { uri: 'i.mp4' } }, /version 3 is below 6/);
  refuse({ ...p, version: 2, segments: [{ ...seg, duration: 1.5 }] }, /version 2 is below 3/);
  refuse({ ...p, targetDuration: 2.5 }, /target duration/);
  refuse({ ...p, map: { uri: 'a"b' } }, /quoted string/);
});

test('fuzz: parseMediaPlaylist throws only CodecError', (t) => {
  const seeds = [writeMediaPlaylist(full), `${base}#EXT-X-BYTERANGE:1000@0\n#EXTINF:4,\nall.ts\n#EXT-X-BYTERANGE:500\n#EXTINF:4,\nall.ts\n#EXT-X-KEY:METHOD=NONE\n`].map((s) => Buffer.from(s));
  const sizes = new Map([['all.ts', 1400], ['all.m4s', 4000]]); // prettier-ignore
  const decoder = new TextDecoder();
  const r1 = fuzz(t, seeds, (b) => void parseMediaPlaylist(decoder.decode(b), { resourceSizes: sizes }), { count: 4000, seed: 21, format: 'm3u8' });
  // line-level mutations: drop, duplicate, swap and corrupt whole lines
  const rnd = prng(22);
  const lines = writeMediaPlaylist(full).split('\n');
  const pieces = ['#EXTINF:', '#EXT-X-BYTERANGE:', '@', ',', '"', '=', '#EXT-X-MAP:URI=', '99999999999999999999', '-1', '.', '\r', ':'];
  const r2 = fuzz(
    t,
    [Buffer.alloc(0)],
    () => {
      const ls = [...lines];
      for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) {
        const i = Math.floor(rnd() * ls.length);
        const j = Math.floor(rnd() * ls.length);
        const op = Math.floor(rnd() * 4);
        if (op === 0) ls.splice(i, 1);
        else if (op === 1) ls.splice(i, 0, ls[j]!);
        else if (op === 2) [ls[i], ls[j]] = [ls[j]!, ls[i]!];
        else ls[i] = ls[i]!.slice(0, Math.floor(rnd() * ls[i]!.length)) + pieces[Math.floor(rnd() * pieces.length)]!;
      }
      parseMediaPlaylist(ls.join('\n'), { resourceSizes: sizes });
    },
    { count: 4000, seed: 23, format: 'm3u8' },
  );
  for (const r of [r1, r2]) t.true(r.accepted > 0 && r.rejected > 0, JSON.stringify(r));
  t.log(`8000 inputs in ${(r1.ms + r2.ms).toFixed(0)} ms`);
});
