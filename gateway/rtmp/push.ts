/**
 * Re-push: every frame of a stream goes to each of its destinations (per app in config, per stream
 * through the API). Each destination of each stream is its own session: its own RTMP client, its own
 * bounded OutputQueue (stream.attach(), through an RtmpEgress) and its own Reconnector behind the
 * destination's breaker. A destination that fails or falls behind only loses its own frames (its queue
 * skips to the next keyframe); the stream and the other destinations never notice.
 */
import type { Logger } from 'pino';
import type { Stream } from '../../sessions/stream.ts';
import { Reconnector, type BreakerView, type ReconnectorState, type SessionHandle, type TargetBreaker } from '../net/breaker.ts';
import { RtmpClient, RtmpUrlError, parseRtmpUrl, type RtmpTarget } from './client.ts';
import { RtmpEgress } from './egress.ts';
import { OutboundRequestError, failureKind, type OutboundDeps } from './pull.ts';
import { validStreamPart } from '../../sessions/registry.ts';

export interface PushDestination {
  readonly id: string;
  readonly app: string;
  /** Only this stream of the app (API); every stream of the app when absent (config). */
  readonly name?: string;
  /** The URL template: `{app}` and `{name}` are substituted; a path with only an app gets `/{name}`. */
  readonly url: string;
  readonly source: 'config' | 'api';
}

export interface PushSessionView {
  stream: string;
  url: string;
  state: ReconnectorState;
  upSince: string | null;
  nextAttemptAt: string | null;
  framesOut: number;
  framesDropped: number;
  breaker: BreakerView;
}

export interface PushView {
  id: string;
  app: string;
  name: string | null;
  url: string;
  source: 'config' | 'api';
  sessions: PushSessionView[];
}

/** The destination URL of one stream. */
export function resolvePushUrl(template: string, app: string, name: string): string {
  const url = new URL(template.replaceAll('{app}', app).replaceAll('{name}', name));
  if (url.pathname.split('/').filter(Boolean).length === 1) url.pathname = `${url.pathname.replace(/\/+$/, '')}/${encodeURIComponent(name)}`;
  return url.toString();
}

function redactTemplate(template: string): string {
  const q = template.indexOf('?');
  return q < 0 ? template : template.slice(0, q);
}

/** Refuses a template that does not make an rtmp:// URL (checked with a stand-in name for per-app ones). */
function validateTemplate(template: string, app: string, name: string): void {
  try {
    parseRtmpUrl(resolvePushUrl(template, app, name));
  } catch (err) {
    if (err instanceof RtmpUrlError || err instanceof TypeError) throw new OutboundRequestError('invalid', `push URL: ${(err as Error).message}`);
    throw err;
  }
}

/** One destination of one stream. */
class PushSession {
  readonly stream: Stream;
  readonly target: RtmpTarget;
  readonly #deps: OutboundDeps;
  readonly #log: Logger;
  readonly #breaker: TargetBreaker;
  readonly #reconnector: Reconnector;
  #released = false;
  #egress: RtmpEgress | undefined;
  #live: SessionHandle | undefined;
  #framesOut = 0;
  #dropped = 0;

  constructor(dest: PushDestination, stream: Stream, target: RtmpTarget, deps: OutboundDeps) {
    this.stream = stream;
    this.target = target;
    this.#deps = deps;
    this.#log = deps.log.child({ push: dest.id, stream: stream.key, target: target.redacted });
    this.#breaker = deps.breakers.acquire(target.redacted);
    this.#reconnector = new Reconnector({
      breaker: this.#breaker,
      log: this.#log,
      connect: (signal) => this.#connect(signal),
      onAttempt: (ok, err) => deps.metrics.outboundAttempts.inc({ kind: 'push', result: ok ? 'ok' : failureKind(err) }),
      shouldReconnect: () => !stream.ended,
    });
  }

  get holding(): boolean {
    return this.#reconnector.holding || this.#egress !== undefined;
  }

  start(): void {
    this.#reconnector.start();
  }

  async close(reason: string): Promise<void> {
    await this.#reconnector.close(reason);
    if (this.#released) return;
    this.#released = true;
    this.#deps.breakers.release(this.#breaker);
  }

  /**
   * The stream has ended: a live session writes what its queue still holds and says goodbye (bounded by
   * the write-stall deadline), then everything is released; a session not yet up stops now.
   */
  async finish(reason: string): Promise<void> {
    if (this.#live) await this.#live.ended;
    await this.close(reason);
  }

  view(): PushSessionView {
    const r = this.#reconnector;
    return {
      stream: this.stream.key,
      url: this.target.redacted,
      state: r.state,
      upSince: r.upSince !== undefined ? new Date(r.upSince).toISOString() : null,
      nextAttemptAt: r.nextAttemptAt !== undefined ? new Date(r.nextAttemptAt).toISOString() : null,
      framesOut: this.#framesOut + (this.#egress?.framesOut ?? 0),
      framesDropped: this.#dropped + (this.#egress?.dropped ?? 0),
      breaker: this.#breaker.view(),
    };
  }

  async #connect(signal: AbortSignal): Promise<SessionHandle> {
    const { metrics, settings } = this.#deps;
    const client = new RtmpClient({
      target: this.target,
      mode: 'publish',
      ...settings,
      log: this.#log,
      onDeadline: (kind) => metrics.deadlineExpired.inc({ protocol: 'rtmp-push', kind }),
    });
    const onAbort = (): void => client.close('push stopped', 'aborted');
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await client.ready;
    } catch (err) {
      client.close('push attempt failed', 'aborted');
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    const frames = metrics.framesOut.labels('push');
    const egress = new RtmpEgress(
      this.stream,
      { streamId: client.streamId, send: (csid, msg) => client.send(csid, msg), onDrain: (fn) => client.onDrain(fn) },
      {
        log: this.#log,
        role: 'publish',
        onFrame: () => frames.inc(),
        onEnd: (reason, error) => {
          if (error) client.close(reason, 'protocol');
          else client.finish(`stream ended: ${reason}`);
        },
      },
    );
    this.#egress = egress;
    egress.start();
    this.#log.info('push started');
    const ended = client.closed.then((reason) => {
      this.#live = undefined;
      this.#framesOut += egress.framesOut;
      this.#dropped += egress.dropped;
      egress.close();
      if (this.#egress === egress) this.#egress = undefined;
      metrics.sessions.inc({ protocol: 'rtmp-push', result: client.closeKind ?? 'closed' });
      this.#log.info({ reason, framesOut: egress.framesOut, framesDropped: egress.dropped }, 'push ended');
      return reason;
    });
    this.#live = {
      ended,
      close: (reason) => {
        egress.close();
        client.close(reason, 'aborted');
      },
    };
    return this.#live;
  }
}

export class PushManager {
  readonly #deps: OutboundDeps;
  readonly #maxPerStream: number;
  readonly #destinations = new Map<string, PushDestination>();
  /** Live sessions by destination id, then stream key. */
  readonly #sessions = new Map<string, Map<string, PushSession>>();
  readonly #watched = new WeakSet<Stream>();
  /** Sessions of ended streams still writing their last frames. */
  readonly #finishing = new Set<PushSession>();
  #nextId = 1;
  #closed = false;
  readonly #onPublish = (s: Stream): void => this.#startFor(s);

  constructor(deps: OutboundDeps, config: Readonly<Record<string, readonly string[]>>, maxPerStream: number) {
    this.#deps = deps;
    this.#maxPerStream = maxPerStream;
    for (const [app, urls] of Object.entries(config)) for (const url of urls) this.#addDestination({ app, url, source: 'config' });
    deps.registry.on('publish', this.#onPublish);
  }

  /** Sessions that still hold a timer, an attempt, a connection or a queue (0 once closed). */
  get holding(): number {
    let n = 0;
    for (const m of this.#sessions.values()) for (const s of m.values()) if (s.holding) n++;
    for (const s of this.#finishing) if (s.holding) n++;
    return n;
  }

  /** A destination for one stream (API). Starts at once if the stream is live; kept until removed. */
  add(req: { app: string; name: string; url: string }): PushView {
    if (this.#closed) throw new OutboundRequestError('limit', 'shutting down');
    if (!validStreamPart(req.app) || !validStreamPart(req.name)) {
      throw new OutboundRequestError('invalid', `invalid stream name ${JSON.stringify(`${req.app}/${req.name}`)}`);
    }
    validateTemplate(req.url, req.app, req.name);
    const dests = [...this.#destinations.values()].filter((d) => d.app === req.app && (d.name === undefined || d.name === req.name));
    if (dests.length >= this.#maxPerStream) throw new OutboundRequestError('limit', `${req.app}/${req.name} already has ${dests.length} push destinations (the limit)`);
    const dest = this.#addDestination({ ...req, source: 'api' });
    const live = this.#deps.registry.get(req.app, req.name);
    if (live && !live.ended) this.#startSession(dest, live);
    return this.#view(dest);
  }

  async remove(id: string): Promise<boolean> {
    const dest = this.#destinations.get(id);
    if (!dest) return false;
    if (dest.source === 'config') throw new OutboundRequestError('conflict', `${id} comes from the config file`);
    this.#destinations.delete(id);
    const sessions = this.#sessions.get(id);
    this.#sessions.delete(id);
    await Promise.all([...(sessions?.values() ?? [])].map((s) => s.close('push removed')));
    return true;
  }

  get(id: string): PushView | undefined {
    const d = this.#destinations.get(id);
    return d && this.#view(d);
  }

  list(): PushView[] {
    return [...this.#destinations.values()].map((d) => this.#view(d));
  }

  async close(reason: string): Promise<void> {
    this.#closed = true;
    this.#deps.registry.off('publish', this.#onPublish);
    const all = [...this.#sessions.values()].flatMap((m) => [...m.values()]).concat([...this.#finishing]);
    this.#sessions.clear();
    await Promise.all(all.map((s) => s.close(reason)));
  }

  #addDestination(d: Omit<PushDestination, 'id'>): PushDestination {
    validateTemplate(d.url, d.app, d.name ?? 'name');
    const dest: PushDestination = { ...d, id: `push-${this.#nextId++}` };
    this.#destinations.set(dest.id, dest);
    return dest;
  }

  #startFor(stream: Stream): void {
    if (this.#closed) return;
    let n = 0;
    for (const dest of this.#destinations.values()) {
      if (dest.app !== stream.app || (dest.name !== undefined && dest.name !== stream.name)) continue;
      if (++n > this.#maxPerStream) {
        this.#deps.log.warn({ stream: stream.key, limit: this.#maxPerStream }, 'push destinations over the limit are left out');
        break;
      }
      this.#startSession(dest, stream);
    }
  }

  #startSession(dest: PushDestination, stream: Stream): void {
    let target: RtmpTarget;
    try {
      target = parseRtmpUrl(resolvePushUrl(dest.url, stream.app, stream.name));
    } catch (err) {
      this.#deps.log.warn({ push: dest.id, stream: stream.key, err: (err as Error).message }, 'push URL invalid for this stream');
      return;
    }
    let byStream = this.#sessions.get(dest.id);
    if (!byStream) {
      byStream = new Map();
      this.#sessions.set(dest.id, byStream);
    }
    if (byStream.has(stream.key)) return;
    const session = new PushSession(dest, stream, target, this.#deps);
    byStream.set(stream.key, session);
    if (!this.#watched.has(stream)) {
      // One listener per stream, whatever its number of destinations.
      this.#watched.add(stream);
      stream.once('end', () => this.#streamEnded(stream));
    }
    session.start();
  }

  /** The stream's end ends its sessions: each egress writes what it still holds and says goodbye. */
  #streamEnded(stream: Stream): void {
    for (const byStream of this.#sessions.values()) {
      const session = byStream.get(stream.key);
      if (!session || session.stream !== stream) continue;
      byStream.delete(stream.key);
      this.#finishing.add(session);
      void session.finish('stream ended').finally(() => this.#finishing.delete(session));
    }
  }

  #view(d: PushDestination): PushView {
    return {
      id: d.id,
      app: d.app,
      name: d.name ?? null,
      url: redactTemplate(d.url),
      source: d.source,
      sessions: [...(this.#sessions.get(d.id)?.values() ?? [])].map((s) => s.view()),
    };
  }
}
