/** Shared pieces for the WHIP tests: a registry, a pool, a capturing logger, an HTTP server on a free port, waiting with deadlines. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { Router, type Route } from '../../gateway/http/router.ts';
import { allowAll, type PublishAuthorizer } from '../../sessions/auth.ts';
import { BufferPool } from '../../sessions/pool.ts';
import { Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import type { Track } from '../../sessions/frame.ts';

export function testRegistry(authorizer: PublishAuthorizer = allowAll): Registry {
  return new Registry({
    maxStreams: 10,
    onConflict: 'takeover',
    limits: { gopCacheBytes: 8 << 20, output: { maxBytes: 8 << 20, maxFrames: 2000 } },
    authorizer,
  });
}

export function testPool(): BufferPool {
  return new BufferPool({ maxBytes: 256 << 20 });
}

export interface CapturedLog {
  readonly log: Logger;
  readonly lines: Record<string, unknown>[];
}

/** A pino logger whose lines are kept (parsed) for assertions. */
export function captureLog(level: pino.LevelWithSilent = 'info'): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level },
    {
      write(s: string) {
        for (const l of s.split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      },
    },
  );
  return { log, lines };
}

export interface TestServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** A node:http server on 127.0.0.1 and a free port, serving `routes`. */
export async function startServer(routes: Route[]): Promise<TestServer> {
  const router = new Router();
  router.add(...routes);
  const server = http.createServer((req, res) => {
    router.dispatch(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Polls `cond` until it is truthy or `timeoutMs` passes; rejects with `what` on timeout. */
export async function waitFor<T>(what: string, timeoutMs: number, cond: () => T | Promise<T>, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface TrackRecord {
  frames: number;
  keyframes: number;
  bytes: number;
  firstDts: number | undefined;
  lastDts: number;
  /** Frames whose DTS did not increase, or was negative, or whose PTS < DTS. */
  badTimestamps: number;
  /** Video frames whose AVCC lengths did not add up. */
  badAvcc: number;
  discontinuities: number;
}

export interface StreamRecord {
  readonly tracks: Track[];
  readonly byKind: { video: TrackRecord; audio: TrackRecord };
  ended: string | undefined;
}

const emptyRecord = (): TrackRecord => ({
  frames: 0,
  keyframes: 0,
  bytes: 0,
  firstDts: undefined,
  lastDts: -1,
  badTimestamps: 0,
  badAvcc: 0,
  discontinuities: 0,
});

function avccOk(b: Uint8Array): boolean {
  let off = 0;
  while (off < b.length) {
    if (off + 4 > b.length) return false;
    const n = ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
    if (n === 0 || off + 4 + n > b.length) return false;
    off += 4 + n;
  }
  return off === b.length && b.length > 0;
}

/** An output that drains `stream` as it goes, checking timestamps and AVCC, releasing every frame. */
export function recordStream(stream: Stream): StreamRecord {
  const rec: StreamRecord = { tracks: [], byKind: { video: emptyRecord(), audio: emptyRecord() }, ended: undefined };
  const q = stream.attach();
  const drain = (): void => {
    for (let ev = q.shift(); ev; ev = q.shift()) {
      if (ev.type === 'track') rec.tracks.push(ev.track);
      if (ev.type !== 'frame') continue;
      const f = ev.frame;
      const r = rec.byKind[f.kind];
      r.frames++;
      r.bytes += f.data.length;
      if (f.keyframe) r.keyframes++;
      if (f.discontinuity) r.discontinuities++;
      r.firstDts ??= f.dts;
      if (f.dts <= r.lastDts || f.dts < 0 || f.pts < f.dts || !Number.isInteger(f.dts)) r.badTimestamps++;
      r.lastDts = f.dts;
      if (f.kind === 'video' && !avccOk(f.data.bytes)) r.badAvcc++;
      f.data.release();
    }
    if (q.ended !== undefined) {
      rec.ended = q.ended;
      stream.detach(q);
    }
  };
  q.onReadable = () => queueMicrotask(drain);
  return rec;
}
