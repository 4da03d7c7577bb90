/**
 * WHIP (RFC 9725) ingest over HTTP:
 *   POST    /whip/{app}/{name}        application/sdp offer -> 201, the answer, Location, ETag
 *   DELETE  /whip/{app}/{name}/{id}   ends the session -> 200
 *   PATCH   /whip/{app}/{name}/{id}   trickle ICE (application/trickle-ice-sdpfrag) -> 204;
 *                                     an ICE restart -> 422 (not supported), a stale If-Match -> 412
 *   OPTIONS on both                   CORS preflight, Accept-Post / Accept-Patch -> 204
 * A Bearer token is the `key` handed to the registry's publish authorisation, like RTMP's ?key=.
 * The session URL carries 144 random bits; a request to it that presents a different token is refused.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { PublishRefusedError, validStreamPart, type Registry } from '../../sessions/registry.ts';
import type { BufferPool } from '../../sessions/pool.ts';
import type { Stream } from '../../sessions/stream.ts';
import { HttpError, readBody, sendText, type Route } from '../http/router.ts';
import { EngineRejectedError, type RemoteCandidate, type WebRtcEngine } from './engine.ts';
import { CANDIDATE_RE, checkOffer, OfferRejectedError, SDP_LIMITS, type CheckedOffer } from './sdp.ts';
import { newSessionId, SessionClosedError, WhipSession, type WhipDeadlines } from './session.ts';
import { WeriftEngine, type IceOptions } from './werift-engine.ts';

export interface WhipDeps {
  registry: Registry;
  pool: BufferPool;
  log: Logger;
  deadlines: WhipDeadlines;
  /** Sessions at once, negotiating ones included; past it a POST gets 503. */
  maxSessions: number;
  onDeadline?: (kind: 'handshake' | 'idle') => void;
  /**
   * A POST refused, with a short label: sdp, codec, media-type, too-large, invalid, unauthorized,
   * busy, limit, shutdown, engine.
   */
  onRejected?: (reason: string) => void;
  /** The WebRTC engine. Default: werift. */
  engine?: WebRtcEngine;
  /** ICE settings for the default engine. */
  ice?: IceOptions;
  /** Longest time without a video keyframe before one is requested, for the default engine. */
  gopMs?: number;
}

const ENDPOINT = /^\/whip\/([^/]+)\/([^/]+)\/?$/;
const RESOURCE = /^\/whip\/([^/]+)\/([^/]+)\/([A-Za-z0-9_-]{16,64})$/;
const PATCH_TYPE = 'application/trickle-ice-sdpfrag';
const PATCH_LIMIT = 16 * 1024;
const MAX_TRICKLE_CANDIDATES = 64;

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'Location, ETag, Accept-Patch, Accept-Post, Link',
};

function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : undefined;
}

function reply(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  sendText(res, status, text.endsWith('\n') ? text : `${text}\n`, { ...CORS, ...headers });
}

/** A WHIP POST refused: the HTTP status, the metric label, the reason sent back. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly label: string,
    reason: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(reason);
  }
}

function refusalFromPublish(err: PublishRefusedError, presentedKey: boolean): Refusal {
  switch (err.code) {
    case 'unauthorized':
      return presentedKey
        ? new Refusal(403, 'unauthorized', err.message)
        : new Refusal(401, 'unauthorized', err.message, { 'www-authenticate': 'Bearer' });
    case 'busy':
      return new Refusal(409, 'busy', err.message);
    case 'limit':
      return new Refusal(503, 'limit', err.message, { 'retry-after': '10' });
    case 'invalid':
      return new Refusal(400, 'invalid', err.message);
    case 'shutdown':
      return new Refusal(503, 'shutdown', err.message);
  }
}

/** Parses a trickle-ice-sdpfrag body (RFC 8840): its ICE credentials and its candidates per mid. */
function parseSdpFrag(text: string): { ufrag?: string; pwd?: string; candidates: RemoteCandidate[] } {
  const out: { ufrag?: string; pwd?: string; candidates: RemoteCandidate[] } = { candidates: [] };
  let mid: string | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.length > 1024 || !/^[a-z]=/.test(line)) throw new HttpError(400, 'malformed sdpfrag line');
    if (line.startsWith('a=ice-ufrag:')) out.ufrag = line.slice(12);
    else if (line.startsWith('a=ice-pwd:')) out.pwd = line.slice(10);
    else if (line.startsWith('m=')) mid = undefined;
    else if (line.startsWith('a=mid:')) mid = line.slice(6);
    else if (line.startsWith('a=candidate:')) {
      const cand = line.slice(2);
      if (!CANDIDATE_RE.test(cand)) throw new HttpError(400, 'malformed candidate');
      out.candidates.push({ candidate: cand, mid });
      if (out.candidates.length > MAX_TRICKLE_CANDIDATES) throw new HttpError(400, `more than ${MAX_TRICKLE_CANDIDATES} candidates`);
    }
  }
  return out;
}

export function whipRoutes(deps: WhipDeps): { routes: Route[]; sessions(): number; close(): Promise<void> } {
  const log = deps.log.child({ component: 'whip' });
  const engine = deps.engine ?? new WeriftEngine({ pool: deps.pool, ice: deps.ice, gopMs: deps.gopMs });
  const sessions = new Map<string, WhipSession>();
  const negotiating = new Set<Promise<unknown>>();
  let closed = false;

  const rejected = (label: string): void => deps.onRejected?.(label);

  async function post(req: IncomingMessage, res: ServerResponse, app: string, name: string): Promise<void> {
    const remoteAddress = req.socket.remoteAddress ?? '';
    let offer: CheckedOffer;
    try {
      if (closed) throw new Refusal(503, 'shutdown', 'server is shutting down');
      if (!validStreamPart(app) || !validStreamPart(name)) throw new Refusal(400, 'invalid', `invalid stream name ${app}/${name}`);
      if (mediaType(req) !== 'application/sdp') {
        throw new Refusal(415, 'media-type', 'a WHIP offer must be sent as application/sdp', { 'accept-post': 'application/sdp' });
      }
      let body: Buffer;
      try {
        body = await readBody(req, SDP_LIMITS.maxBytes);
      } catch (err) {
        if (err instanceof HttpError) throw new Refusal(err.status, 'too-large', err.message);
        throw err;
      }
      try {
        offer = checkOffer(body.toString('utf8'));
      } catch (err) {
        if (err instanceof OfferRejectedError) throw new Refusal(err.status, err.code, err.message);
        throw err;
      }
      if (sessions.size + negotiating.size >= deps.maxSessions) {
        throw new Refusal(503, 'limit', `WHIP session limit of ${deps.maxSessions} reached`, { 'retry-after': '10' });
      }
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      rejected(err.label);
      log.info({ app, name, remoteAddress, status: err.status, reason: err.message }, 'whip offer refused');
      reply(res, err.status, err.message, err.headers);
      return;
    }
    const work = establish(req, res, app, name, remoteAddress, offer);
    negotiating.add(work);
    try {
      await work;
    } finally {
      negotiating.delete(work);
    }
  }

  async function establish(req: IncomingMessage, res: ServerResponse, app: string, name: string, remoteAddress: string, offer: CheckedOffer): Promise<void> {
    const key = bearer(req);
    const id = newSessionId();
    const slog = log.child({ session: id, stream: `${app}/${name}`, remote: remoteAddress });
    let session: WhipSession | undefined;
    let pendingClose: string | undefined;
    let stream: Stream;
    try {
      try {
        stream = await deps.registry.publish(
          { app, name, protocol: 'webrtc', remoteAddress, ...(key === undefined ? {} : { key }) },
          {
            protocol: 'webrtc',
            remoteAddress,
            close: (reason) => {
              if (session) void session.close(reason);
              else pendingClose ??= reason;
            },
          },
        );
      } catch (err) {
        if (err instanceof PublishRefusedError) throw refusalFromPublish(err, key !== undefined);
        throw err;
      }
      try {
        session = await WhipSession.open({
          id,
          stream,
          offer,
          key,
          remoteAddress,
          engine,
          log: slog,
          deadlines: deps.deadlines,
          onDeadline: deps.onDeadline,
          onEnd: (s) => {
            if (sessions.get(s.id) === s) sessions.delete(s.id);
          },
        });
      } catch (err) {
        stream.end(err instanceof SessionClosedError ? err.message : 'negotiation failed');
        if (err instanceof EngineRejectedError) throw new Refusal(400, 'engine', err.message);
        if (err instanceof SessionClosedError) throw new Refusal(409, 'busy', `session ended during negotiation: ${err.message}`);
        throw err;
      }
      if (pendingClose !== undefined) {
        await session.close(pendingClose);
        throw new Refusal(409, 'busy', `session ended during negotiation: ${pendingClose}`);
      }
      if (closed) {
        await session.close('server shutting down');
        throw new Refusal(503, 'shutdown', 'server is shutting down');
      }
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      rejected(err.label);
      slog.info({ status: err.status, reason: err.message }, 'whip offer refused');
      reply(res, err.status, err.message, err.headers);
      return;
    }
    sessions.set(id, session);
    slog.info(
      {
        media: offer.media.map((m) => `${m.kind}:${m.codec}/${m.payloadType}${m.rtxPayloadType === undefined ? '' : `+rtx/${m.rtxPayloadType}`}`),
        authenticated: key !== undefined,
        engine: engine.name,
      },
      'whip session started',
    );
    const location = `/whip/${app}/${name}/${id}`;
    res.writeHead(201, {
      ...CORS,
      'content-type': 'application/sdp',
      'content-length': Buffer.byteLength(session.answer),
      location,
      etag: session.etag,
      'accept-patch': PATCH_TYPE,
    });
    res.end(session.answer);
  }

  function findSession(res: ServerResponse, req: IncomingMessage, app: string, name: string, id: string): WhipSession | undefined {
    const s = sessions.get(id);
    if (!s || s.stream.app !== app || s.stream.name !== name) {
      reply(res, 404, 'no such WHIP session');
      return undefined;
    }
    const token = bearer(req);
    if (token !== undefined && s.key !== undefined && token !== s.key) {
      reply(res, 403, 'token does not match the session');
      return undefined;
    }
    return s;
  }

  async function patch(req: IncomingMessage, res: ServerResponse, s: WhipSession): Promise<void> {
    const ifMatch = req.headers['if-match'];
    if (ifMatch !== undefined && ifMatch.trim() !== '*' && ifMatch.trim() !== s.etag) {
      reply(res, 412, 'If-Match does not match the session ETag', { etag: s.etag });
      return;
    }
    if (mediaType(req) !== PATCH_TYPE) {
      reply(res, 415, `PATCH takes ${PATCH_TYPE}`, { 'accept-patch': PATCH_TYPE });
      return;
    }
    let frag: ReturnType<typeof parseSdpFrag>;
    try {
      frag = parseSdpFrag((await readBody(req, PATCH_LIMIT)).toString('utf8'));
    } catch (err) {
      if (err instanceof HttpError) return reply(res, err.status, err.message);
      throw err;
    }
    if ((frag.ufrag !== undefined && frag.ufrag !== s.offer.iceUfrag) || (frag.pwd !== undefined && frag.pwd !== s.offer.icePwd)) {
      reply(res, 422, 'ICE restart is not supported; start a new session');
      return;
    }
    try {
      await s.addRemoteCandidates(frag.candidates);
    } catch (err) {
      reply(res, 400, `candidate refused: ${(err as Error).message}`);
      return;
    }
    res.writeHead(204, { ...CORS, etag: s.etag });
    res.end();
  }

  const preflight = (res: ServerResponse, methods: string, extra: Record<string, string>): void => {
    res.writeHead(204, {
      ...CORS,
      'access-control-allow-methods': methods,
      'access-control-allow-headers': 'Authorization, Content-Type, If-Match',
      'access-control-max-age': '600',
      allow: methods,
      ...extra,
    });
    res.end();
  };

  const routes: Route[] = [
    {
      method: ['POST', 'OPTIONS'],
      path: ENDPOINT,
      handle: async (req, res, m) => {
        if (req.method === 'OPTIONS') return preflight(res, 'POST, OPTIONS', { 'accept-post': 'application/sdp' });
        await post(req, res, m[1]!, m[2]!);
      },
    },
    {
      method: ['DELETE', 'PATCH', 'OPTIONS'],
      path: RESOURCE,
      handle: async (req, res, m) => {
        if (req.method === 'OPTIONS') return preflight(res, 'PATCH, DELETE, OPTIONS', { 'accept-patch': PATCH_TYPE });
        const s = findSession(res, req, m[1]!, m[2]!, m[3]!);
        if (!s) return;
        if (req.method === 'DELETE') {
          await s.close('deleted by the client (WHIP DELETE)');
          reply(res, 200, 'session ended');
          return;
        }
        await patch(req, res, s);
      },
    },
  ];

  return {
    routes,
    sessions: () => sessions.size,
    close: async () => {
      closed = true;
      await Promise.allSettled([...negotiating]);
      await Promise.all([...sessions.values()].map((s) => s.close('server shutting down')));
    },
  };
}
