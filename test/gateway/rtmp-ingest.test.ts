import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlvTagType, readFlvFile, videoTagHeader } from '../../codecs/flv.ts';
import { parseAvcC } from '../../codecs/h264.ts';
import type { VideoTrack } from '../../codecs/track.ts';
import { RtmpIngest } from '../../gateway/rtmp/ingest.ts';
import { allowAll } from '../../sessions/auth.ts';
import { BufferPool } from '../../sessions/pool.ts';
import { Registry } from '../../sessions/registry.ts';
import { encodeFlv } from '../helpers/ffmpeg.ts';

function avcc(nals: readonly Buffer[]): Buffer {
  return Buffer.concat(nals.flatMap((n) => [Buffer.from([n.length >>> 24, (n.length >>> 16) & 0xff, (n.length >>> 8) & 0xff, n.length & 0xff]), n]));
}

/**
 * The video tags of an ffmpeg FLV as an encoder without a global header sends them: an empty
 * sequence header, then keyframes that carry SPS and PPS in front of the IDR.
 */
function inBand(file: string, offsetMs: number): Array<{ body: Buffer; ts: number; keyframe: boolean }> {
  const out: Array<{ body: Buffer; ts: number; keyframe: boolean }> = [];
  let sets: Buffer | undefined;
  for (const tag of readFlvFile(readFileSync(file))) {
    if (tag.type !== FlvTagType.Video) continue;
    const keyframe = tag.body[0]! >> 4 === 1;
    if (tag.body[1] === 0) {
      const c = parseAvcC(tag.body.subarray(5));
      sets = avcc([...c.sps, ...c.pps]);
      out.push({ body: videoTagHeader({ keyframe: true, codecId: 7, packetType: 'config', compositionTime: 0 }), ts: offsetMs, keyframe: false });
      continue;
    }
    const payload = keyframe ? Buffer.concat([sets!, tag.body.subarray(5)]) : tag.body.subarray(5);
    out.push({ body: Buffer.concat([tag.body.subarray(0, 5), payload]), ts: tag.timestamp + offsetMs, keyframe });
  }
  return out;
}

test('H.264 config from in-band SPS/PPS after an empty sequence header, and a new size when the in-band SPS changes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-inband-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await encodeFlv(join(dir, 'a.flv'), { seconds: 2, width: 160, height: 120, audio: false, gop: 30 });
  await encodeFlv(join(dir, 'b.flv'), { seconds: 2, width: 320, height: 240, audio: false, gop: 30 });
  const pool = new BufferPool({ maxBytes: 64 << 20 });
  const registry = new Registry({ maxStreams: 1, onConflict: 'takeover', authorizer: allowAll, limits: { gopCacheBytes: 8 << 20, output: { maxBytes: 8 << 20, maxFrames: 1000 } } });
  const stream = await registry.publish({ app: 'live', name: 'inband', protocol: 'test', remoteAddress: 'here' }, { protocol: 'test', remoteAddress: 'here', close: () => {} });
  const sizes: string[] = [];
  stream.on('track', (tr) => sizes.push(`${(tr as VideoTrack).width}x${(tr as VideoTrack).height}`));
  const ingest = new RtmpIngest(stream, pool);
  const tags = [...inBand(join(dir, 'a.flv'), 0), ...inBand(join(dir, 'b.flv'), 2100)];
  for (const tag of tags) ingest.video(tag.body, tag.ts);
  t.deepEqual(sizes, ['160x120', '320x240']);
  t.is(stream.trackStats.get(1)?.frames, 120, 'every frame of both sources counted');
  stream.end('unpublished');
  t.is(pool.bytesInUse, 0);
});
