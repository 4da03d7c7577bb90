import test from 'ava';
import { createServer, type Server } from 'node:http';
import { writeMediaPlaylist, type Segment } from '../../codecs/m3u8.ts';
import { HlsViewer, summarizeViewers } from '../../loadtest/hls-viewer.ts';

interface Script {
  /** Produce a segment every `everyMs` until `stopAfter` segments (then the playlist freezes). */
  stopAfter: number;
  /** After this many segments, the next sequence number jumps by `jump` (those segments are never listed). */
  jumpAfter?: number;
  jump?: number;
  /** Sequence numbers answered with 404. */
  missing?: number[];
  everyMs: number;
}

/** A live HLS origin whose playlist is made from the clock: one segment per `everyMs`, window of 3. */
async function liveOrigin(script: Script): Promise<{ url: string; close(): Promise<void> }> {
  const t0 = Date.now();
  const produced = (): Array<Segment & { at: number }> => {
    const n = Math.min(script.stopAfter, Math.floor((Date.now() - t0) / script.everyMs));
    const out: Array<Segment & { at: number }> = [];
    let seq = 0;
    for (let i = 0; i < n; i++) {
      if (script.jumpAfter !== undefined && i === script.jumpAfter) seq += script.jump ?? 0;
      out.push({ uri: `seg-${seq}.ts`, duration: script.everyMs / 1000, sequence: seq, programDateTime: new Date(t0 + i * script.everyMs), at: i });
      seq++;
    }
    return out;
  };
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '';
    if (path === '/live/index.m3u8') {
      const all = produced();
      if (all.length === 0) return void res.writeHead(404).end();
      // After a jump the window holds only what came after it, as when a window slides past unseen segments.
      let window = all.slice(-3);
      const jumpIdx = script.jumpAfter;
      if (jumpIdx !== undefined && all.length > jumpIdx) window = window.filter((s) => s.at >= jumpIdx || all.length - 1 < jumpIdx);
      const text = writeMediaPlaylist({
        version: 3,
        targetDuration: Math.ceil(script.everyMs / 1000),
        mediaSequence: window[0]!.sequence,
        discontinuitySequence: 0,
        segments: window.map(({ at: _at, ...s }) => s),
        endList: false,
      });
      return void res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl' }).end(text);
    }
    const m = /^\/live\/seg-(\d+)\.ts$/.exec(path);
    if (m && !script.missing?.includes(Number(m[1]))) return void res.writeHead(200, { 'content-type': 'video/mp2t' }).end(Buffer.alloc(188 * 10, 0x47));
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/live/index.m3u8`,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

test('a viewer of a healthy live playlist gets every segment on time, fresh, without stalls', async (t) => {
  const origin = await liveOrigin({ stopAfter: 100, everyMs: 1000 });
  t.teardown(() => origin.close());
  const s = await new HlsViewer({ url: origin.url }).run(8000);
  t.is(s.state, 'stopped');
  t.true(s.segments >= 6, `${s.segments} segments`);
  t.is(s.late, 0);
  t.true(s.onTime >= 5);
  t.is(s.stalls, 0);
  t.is(s.playlistStalls, 0);
  t.is(s.sequenceGaps, 0);
  t.is(s.playlistErrors + s.segmentErrors + s.parseErrors, 0);
  t.is(s.bytes, s.segments * 1880);
  // PROGRAM-DATE-TIME ages: a segment is at most a poll interval plus a download old when it is ready.
  t.true(s.ageMs.every((a) => a < 1500), JSON.stringify(s.ageMs));
  t.is(summarizeViewers([s]).onTimeRate, 1);
});

test('a viewer detects a playlist that stops updating: a playlist stall and a playback stall', async (t) => {
  const origin = await liveOrigin({ stopAfter: 5, everyMs: 1000 });
  t.teardown(() => origin.close());
  const s = await new HlsViewer({ url: origin.url }).run(10_000);
  t.true(s.segments >= 3);
  t.is(s.playlistStalls, 1);
  t.true(s.stalls >= 1, `stalls ${s.stalls}`);
  t.true(s.stalledMs > 500, `stalled ${s.stalledMs} ms`);
  const sum = summarizeViewers([s]);
  t.is(sum.playlistStalls, 1);
});

test('a viewer counts a sequence gap and a failed segment, and they count against the on-time rate', async (t) => {
  const origin = await liveOrigin({ stopAfter: 100, everyMs: 1000, jumpAfter: 4, jump: 3, missing: [9] });
  t.teardown(() => origin.close());
  const s = await new HlsViewer({ url: origin.url }).run(9000);
  t.is(s.sequenceGaps, 3);
  t.is(s.segmentErrors, 1);
  t.regex(s.lastError ?? '', /segment: HTTP 404/);
  const sum = summarizeViewers([s]);
  t.true(sum.onTimeRate! < 1 && sum.onTimeRate! > 0.3, `on time ${sum.onTimeRate}`);
  t.is(sum.sequenceGaps, 3);
});

test('a viewer of a stream that never appears fails after its startup deadline', async (t) => {
  const origin = await liveOrigin({ stopAfter: 0, everyMs: 1000 });
  t.teardown(() => origin.close());
  const s = await new HlsViewer({ url: origin.url, startupTimeoutMs: 1500 }).run(5000);
  t.is(s.state, 'failed');
  t.is(s.segments, 0);
  t.is(s.playlistErrors, 0);
});
