import test from 'ava';
import { parseMediaPlaylist } from '../../codecs/m3u8.ts';
import type { Stream } from '../../sessions/stream.ts';
import { launchChromium, newPage } from '../helpers/browser.ts';
import { countPackets, probeCodecs } from '../helpers/ffmpeg.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { run } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';
import { outbound, publish } from '../helpers/whip-page.ts';

const CONFIG = {
  webrtc: { ice: { additionalHostAddresses: ['127.0.0.1'] } },
  hls: { format: 'fmp4' as const, apps: { tsapp: { format: 'ts' as const } }, windowSegments: 40, targetDurationMs: 1000 },
};

interface ApiStream {
  app: string;
  name: string;
  protocol: string;
  notes: Record<string, string>;
  tracks: Array<{ kind: string; codec: string; width?: number; height?: number; sampleRate?: number }>;
}

async function apiStream(gw: TestGateway, app: string, name: string): Promise<ApiStream | undefined> {
  const r = await fetch(gw.httpUrl(`/api/v1/streams/${app}/${name}`));
  return r.status === 200 ? ((await r.json()) as ApiStream) : undefined;
}

async function startTimes(url: string): Promise<Map<string, number>> {
  const r = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,start_time', '-of', 'csv=p=0', url], { timeoutMs: 30_000 });
  const out = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const [codec, start] = line.trim().split(',');
    if (codec && start) out.set(codec, Number(start));
  }
  return out;
}

test.serial('Chromium publishes 20 s over WHIP: H.264 and Opus at its resolution, fMP4 HLS decodes, frames match framesEncoded, A/V aligned, DELETE ends with ENDLIST', async (t) => {
  const gw = await startTestGateway(CONFIG);
  t.teardown(() => gw.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await newPage(browser);
  await page.goto(gw.httpUrl('/healthz'));
  let ended: { frames: number; reason: string } | undefined;
  gw.registry.on('unpublish', (s: Stream, reason: string) => {
    ended = { frames: s.trackStats.get([...s.tracks.values()].find((x) => x.kind === 'video')!.id)?.frames ?? 0, reason };
  });

  const res = await publish(page, gw.httpUrl('/whip/live/browser'), 'token');
  t.is(res.status, 201, res.error);
  t.truthy(res.location);
  const listed = await waitFor(async () => {
    const s = await apiStream(gw, 'live', 'browser');
    return s && s.tracks.length === 2 ? s : undefined;
  }, { timeoutMs: 15_000, what: 'both tracks in the API' });
  t.is(listed.protocol, 'webrtc');
  t.like(listed.tracks.find((x) => x.kind === 'audio'), { codec: 'opus', sampleRate: 48000 });

  // Publish for 20 s of the browser's own encoding, then compare what it says it sent.
  await waitFor(async () => (await outbound(page)).framesEncoded >= 20 * 25, { timeoutMs: 40_000, intervalMs: 250, what: '20 s of encoded video' });
  const stats = await outbound(page);
  const video = (await apiStream(gw, 'live', 'browser'))!.tracks.find((x) => x.kind === 'video')!;
  t.like(video, { codec: 'h264', width: stats.frameWidth, height: stats.frameHeight });

  // Stop sending, let the last packets land, then end the session the WHIP way.
  await page.evaluate(() => (globalThis as unknown as { ms: MediaStream }).ms.getTracks().forEach((tr) => (tr.enabled = false)));
  const final = await outbound(page);
  const del = await fetch(gw.httpUrl(res.location!), { method: 'DELETE' });
  t.is(del.status, 200);
  await waitFor(() => ended, { timeoutMs: 5000, what: 'the stream to end' });
  t.true(Math.abs(ended!.frames - final.framesEncoded) <= final.framesEncoded * 0.02, `gateway ${ended!.frames} vs browser ${final.framesEncoded}`);

  const url = gw.httpUrl('/hls/live/browser/index.m3u8');
  const text = await waitFor(async () => {
    const r = await fetch(url);
    const body = r.status === 200 ? await r.text() : '';
    return body.includes('#EXT-X-ENDLIST') ? body : undefined;
  }, { timeoutMs: 5000, what: 'ENDLIST' });
  t.true(parseMediaPlaylist(text).endList);
  // A browser's frame rate varies: keep the input's 90 kHz time base in the null output, whose guessed
  // 1/fps base would put two close frames on one tick and report it as an error of the output.
  const decode = await run('ffmpeg', ['-v', 'error', '-i', url, '-enc_time_base', '-1', '-f', 'null', '-'], { timeoutMs: 60_000 });
  t.is(decode.code, 0);
  t.is(decode.stderr.trim(), '');
  const counts = await countPackets(url);
  const hlsVideo = counts.find((c) => c.codec === 'h264')!.packets;
  t.true(Math.abs(hlsVideo - final.framesEncoded) <= final.framesEncoded * 0.02, `HLS ${hlsVideo} vs browser ${final.framesEncoded}`);
  t.true(counts.some((c) => c.codec === 'opus' && c.packets > 500));
  const starts = await startTimes(url);
  t.true(Math.abs(starts.get('h264')! - starts.get('opus')!) < 0.04, `start times ${JSON.stringify([...starts])}`);
  await waitFor(() => gw.registry.size === 0, { timeoutMs: 2000, what: 'no streams' });
});

test.serial('five browser publishers at once, each its own stream; TS HLS carries their video only and says so', async (t) => {
  const gw = await startTestGateway(CONFIG);
  t.teardown(() => gw.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const names = ['b1', 'b2', 'b3', 'b4', 'b5'];
  const pages = await Promise.all(names.map(() => newPage(browser)));
  await Promise.all(pages.map((p) => p.goto(gw.httpUrl('/healthz'))));
  const results = await Promise.all(pages.map((p, i) => publish(p, gw.httpUrl(`/whip/tsapp/${names[i]}`), 'token')));
  t.deepEqual(results.map((r) => r.status), [201, 201, 201, 201, 201]);
  for (const name of names) {
    const s = await waitFor(async () => {
      const v = await apiStream(gw, 'tsapp', name);
      return v && v.tracks.length === 2 ? v : undefined;
    }, { timeoutMs: 20_000, what: `${name} with two tracks` });
    t.deepEqual(s.tracks.map((x) => x.codec).sort(), ['h264', 'opus']);
    t.regex(s.notes.hls ?? '', /opus cannot be carried in ts HLS/);
  }
  await waitFor(() => names.every((n) => (gw.registry.get('tsapp', n)?.framesIn ?? 0) > 150), { timeoutMs: 30_000, what: 'frames from all five' });
  // Browsers send keyframes only when asked: the gateway's periodic requests let HLS cut segments.
  await waitFor(async () => (await fetch(gw.httpUrl('/hls/tsapp/b3/index.m3u8'))).status === 200, { timeoutMs: 20_000, what: 'a TS playlist' });
  t.deepEqual(await probeCodecs(gw.httpUrl('/hls/tsapp/b3/index.m3u8')), ['h264']);
  t.true(gw.logs.some((l) => l.level === 40 && String(l.msg).includes('opus cannot be carried in ts HLS')));
});
