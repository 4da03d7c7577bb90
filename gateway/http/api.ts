/** The HTTP API: list streams and kick a publisher. */
import type { Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import { HttpError, sendJson, type Route } from './router.ts';

export interface TrackView {
  id: number;
  kind: 'video' | 'audio';
  codec: string;
  codecString: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
  frames: number;
  bytes: number;
}

export interface StreamView {
  app: string;
  name: string;
  protocol: string;
  remoteAddress: string;
  startedAt: string;
  bytesIn: number;
  framesIn: number;
  framesDropped: number;
  outputs: number;
  /** Output remarks, e.g. a track an output cannot carry. */
  notes: Record<string, string>;
  tracks: TrackView[];
  /** Transcoding: a source's renditions and their state (refusals included), or the source of a rendition. */
  transcode?: unknown;
}

/** Extra parts of a stream's view contributed by other features. */
export interface StreamViewExtras {
  transcode?(s: Stream): unknown;
}

export function streamView(s: Stream): StreamView {
  return streamViewWith(s, {});
}

export function streamViewWith(s: Stream, extras: StreamViewExtras): StreamView {
  const tracks: TrackView[] = [];
  for (const t of s.tracks.values()) {
    const stats = s.trackStats.get(t.id) ?? { frames: 0, bytes: 0 };
    const base = { id: t.id, kind: t.kind, codec: t.codec, codecString: t.codecString, frames: stats.frames, bytes: stats.bytes };
    tracks.push(t.kind === 'video' ? { ...base, width: t.width, height: t.height } : { ...base, sampleRate: t.sampleRate, channels: t.channels });
  }
  return {
    app: s.app,
    name: s.name,
    protocol: s.publisher.protocol,
    remoteAddress: s.publisher.remoteAddress,
    startedAt: s.startedAt.toISOString(),
    bytesIn: s.bytesIn,
    framesIn: s.framesIn,
    framesDropped: s.framesDropped,
    outputs: s.outputCount,
    notes: Object.fromEntries(s.notes),
    tracks,
    ...withDefined('transcode', extras.transcode?.(s)),
  };
}

function withDefined<K extends string>(key: K, value: unknown): Partial<Record<K, unknown>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, unknown>);
}

export function apiRoutes(registry: Registry, extras: StreamViewExtras = {}): Route[] {
  return [
    {
      method: 'GET',
      path: /^\/api\/v1\/streams\/?$/,
      handle: (_req, res) => sendJson(res, 200, { streams: registry.list().map((s) => streamViewWith(s, extras)) }),
    },
    {
      method: 'GET',
      path: /^\/api\/v1\/streams\/([^/]+)\/([^/]+)$/,
      handle: (_req, res, m) => {
        const s = registry.get(decodeURIComponent(m[1]!), decodeURIComponent(m[2]!));
        if (!s) throw new HttpError(404, 'no such stream');
        sendJson(res, 200, streamViewWith(s, extras));
      },
    },
    {
      method: 'DELETE',
      path: /^\/api\/v1\/streams\/([^/]+)\/([^/]+)$/,
      handle: (_req, res, m) => {
        const s = registry.get(decodeURIComponent(m[1]!), decodeURIComponent(m[2]!));
        if (!s) throw new HttpError(404, 'no such stream');
        // End the stream first so that it ends as 'kicked', not with the session's own close reason.
        s.end('kicked');
        s.publisher.close('kicked through the API');
        res.writeHead(204).end();
      },
    },
  ];
}
