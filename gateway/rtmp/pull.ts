/**
 * Pulls: streams played from remote RTMP servers and published into the registry as app/name, like any
 * publisher (protocol 'rtmp-pull'), so every output works on them. Each pull keeps one session up through
 * a Reconnector behind its source's breaker. An attempt succeeds once the source has sent media; a
 * source that never answers the handshake, or goes quiet after play started, is cut by the client's
 * deadlines and counted. Each reconnect is a new publication of the name (HLS marks a DISCONTINUITY),
 * whose timestamps continue after the last one's, so downstream time never goes back.
 */
import type { Logger } from 'pino';
import { CodecError } from '../../codecs/errors.ts';
import { MessageType, type RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { parseData } from '../../codecs/rtmp/messages.ts';
import { parseVideoTag } from '../../codecs/flv.ts';
import { PoolExhaustedError, type BufferPool } from '../../sessions/pool.ts';
import { validStreamPart, type Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import type { Metrics } from '../metrics.ts';
import { Reconnector, type BreakerRegistry, type BreakerView, type ReconnectorState, type SessionHandle, type TargetBreaker } from '../net/breaker.ts';
import type { DeadlineOptions } from '../net/deadlines.ts';
import { RtmpClient, RtmpClientError, RtmpUrlError, parseRtmpUrl, type RtmpTarget } from './client.ts';
import { RtmpIngest } from './ingest.ts';

/** What every outbound RTMP connection is made with. */
export interface OutboundSettings {
  connectTimeoutMs: number;
  deadlines: DeadlineOptions;
  maxChunkSize: number;
  maxMessageSize: number;
  outChunkSize: number;
}

export interface OutboundDeps {
  registry: Registry;
  pool: BufferPool;
  metrics: Metrics;
  log: Logger;
  breakers: BreakerRegistry;
  settings: OutboundSettings;
}

/** A pull or push request that cannot be honoured: bad input, a clash, or a cap reached. */
export class OutboundRequestError extends Error {
  constructor(
    readonly code: 'invalid' | 'conflict' | 'limit' | 'not_found',
    message: string,
  ) {
    super(message);
    this.name = 'OutboundRequestError';
  }
}

export interface PullSpec {
  url: string;
  app: string;
  name: string;
  /** The publish key, for an app that requires one (auth.streamKeys). */
  key?: string;
}

export interface PullView {
  id: string;
  url: string;
  app: string;
  name: string;
  source: 'config' | 'api';
  state: ReconnectorState;
  upSince: string | null;
  nextAttemptAt: string | null;
  framesIn: number;
  breaker: BreakerView;
}

/** The next publication of a reconnected pull starts this long (90 kHz) after the last one's last DTS. */
const CONTINUE_GAP = 3000;

export function failureKind(err: unknown): string {
  if (err instanceof RtmpClientError) return err.kind;
  return 'error';
}

class Pull {
  readonly id: string;
  readonly spec: PullSpec;
  readonly target: RtmpTarget;
  readonly source: 'config' | 'api';
  readonly #deps: OutboundDeps;
  readonly #log: Logger;
  readonly #breaker: TargetBreaker;
  readonly #reconnector: Reconnector;
  #baseDts = 0;
  #stream: Stream | undefined;
  #released = false;

  constructor(id: string, spec: PullSpec, target: RtmpTarget, source: 'config' | 'api', deps: OutboundDeps) {
    this.id = id;
    this.spec = spec;
    this.target = target;
    this.source = source;
    this.#deps = deps;
    this.#log = deps.log.child({ pull: id, stream: `${spec.app}/${spec.name}`, source: target.redacted });
    this.#breaker = deps.breakers.acquire(target.redacted);
    this.#reconnector = new Reconnector({
      breaker: this.#breaker,
      log: this.#log,
      connect: (signal) => this.#connect(signal),
      onAttempt: (ok, err) => deps.metrics.outboundAttempts.inc({ kind: 'pull', result: ok ? 'ok' : failureKind(err) }),
    });
  }

  get holding(): boolean {
    return this.#reconnector.holding;
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

  view(): PullView {
    const r = this.#reconnector;
    return {
      id: this.id,
      url: this.target.redacted,
      app: this.spec.app,
      name: this.spec.name,
      source: this.source,
      state: r.state,
      upSince: r.upSince !== undefined ? new Date(r.upSince).toISOString() : null,
      nextAttemptAt: r.nextAttemptAt !== undefined ? new Date(r.nextAttemptAt).toISOString() : null,
      framesIn: this.#stream && !this.#stream.ended ? this.#stream.framesIn : 0,
      breaker: this.#breaker.view(),
    };
  }

  /** One attempt: play the source, buffer until it can be published well, publish, then feed the ingest. */
  async #connect(signal: AbortSignal): Promise<SessionHandle> {
    const { registry, pool, metrics, settings } = this.#deps;
    const { app, name, key } = this.spec;
    const live = registry.get(app, name);
    if (live) throw new Error(`${app}/${name} is being published by ${live.publisher.protocol} from ${live.publisher.remoteAddress}`);

    const start = new StartBuffer(settings.maxMessageSize);
    let feed: ((msg: RtmpMessage) => void) | undefined;
    const client = new RtmpClient({
      target: this.target,
      mode: 'play',
      ...settings,
      log: this.#log,
      onDeadline: (kind) => metrics.deadlineExpired.inc({ protocol: 'rtmp-pull', kind }),
      onMessage: (msg) => {
        metrics.bytesIn.inc({ protocol: 'rtmp-pull' }, msg.payload.length);
        if (feed) return feed(msg);
        if (!start.add(msg)) client.close('too much media before the pull could be published', 'protocol');
      },
    });
    const onAbort = (): void => client.close(`pull stopped: ${String((signal.reason as Error | undefined)?.message ?? 'aborted')}`, 'aborted');
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    const closedError = (): RtmpClientError => new RtmpClientError(client.closeKind ?? 'closed', client.closeReason ?? 'closed');
    let waitTimer: NodeJS.Timeout | undefined;
    try {
      await client.ready;
      // Play.Start alone proves little (nginx says it for a name nobody publishes): wait for media, and
      // for what makes a good start (see StartBuffer). The read-idle deadline bounds a silent source.
      await new Promise<void>((resolve, reject) => {
        start.onMedia = () => {
          waitTimer ??= setTimeout(() => start.force(), settings.deadlines.idleMs);
        };
        start.onReady = resolve;
        if (start.ready) resolve();
        else if (start.sawMedia) start.onMedia();
        void client.closed.then(() => reject(closedError()));
      });
      clearTimeout(waitTimer);
      waitTimer = undefined;
      const stream = await registry.publish(
        { app, name, protocol: 'rtmp-pull', remoteAddress: this.target.redacted, key },
        { protocol: 'rtmp-pull', remoteAddress: this.target.redacted, close: (reason) => client.close(reason, 'ended') },
      );
      if (client.isClosed) {
        stream.end(client.closeReason ?? 'closed');
        throw closedError();
      }
      this.#stream = stream;
      const ingest = new RtmpIngest(stream, pool, { baseDts: this.#baseDts });
      feed = (msg) => this.#feed(client, stream, ingest, msg);
      for (const msg of start.drain()) {
        feed(msg);
        if (client.isClosed) break;
      }
      this.#log.info({ baseDts: this.#baseDts }, 'pull started: publishing');
      const ended = client.closed.then((reason) => {
        stream.end(reason);
        if (ingest.lastDts !== undefined) this.#baseDts = ingest.lastDts + CONTINUE_GAP;
        metrics.sessions.inc({ protocol: 'rtmp-pull', result: client.closeKind ?? 'closed' });
        this.#log.info({ reason, framesIn: stream.framesIn, bytesIn: stream.bytesIn }, 'pull ended');
        return reason;
      });
      return { ended, close: (reason) => client.close(reason, 'aborted') };
    } catch (err) {
      client.close(`pull attempt failed: ${(err as Error).message}`, err instanceof RtmpClientError ? err.kind : 'refused');
      throw err;
    } finally {
      clearTimeout(waitTimer);
      signal.removeEventListener('abort', onAbort);
    }
  }

  #feed(client: RtmpClient, stream: Stream, ingest: RtmpIngest, msg: RtmpMessage): void {
    if (client.isClosed) return;
    stream.bytesIn += msg.payload.length;
    try {
      if (msg.type === MessageType.Video) ingest.video(msg.payload, msg.timestamp);
      else if (msg.type === MessageType.Audio) ingest.audio(msg.payload, msg.timestamp);
      else ingest.metadata(parseData(msg));
    } catch (err) {
      if (err instanceof CodecError) {
        this.#deps.metrics.rejectedInput.inc({ protocol: 'rtmp-pull', reason: err.format });
        client.close(`bad input from the source: ${err.message}`, 'protocol');
      } else if (err instanceof PoolExhaustedError) {
        this.#deps.metrics.rejectedInput.inc({ protocol: 'rtmp-pull', reason: 'pool_exhausted' });
        client.close(err.message, 'protocol');
      } else {
        this.#log.error({ err }, 'unexpected error in a pull');
        client.close(`internal error: ${(err as Error).message}`, 'protocol');
      }
    }
  }
}

function isVideoFrame(msg: RtmpMessage): boolean {
  if (msg.type !== MessageType.Video) return false;
  try {
    const h = parseVideoTag(msg.payload);
    return h.packetType === 'nalu' && h.frameType !== 5;
  } catch {
    return false;
  }
}

function isConfig(msg: RtmpMessage): boolean {
  if (msg.type === MessageType.DataAmf0 || msg.type === MessageType.DataAmf3) return true;
  if (msg.type === MessageType.Audio) return msg.payload[1] === 0;
  try {
    return parseVideoTag(msg.payload).packetType === 'config';
  } catch {
    return false;
  }
}

/**
 * What a pull holds between play start and its publication. Sources send audio before the first video
 * keyframe (nginx-rtmp starts a new player's video at the next keyframe); publishing at the first audio
 * frame would show every output an audio-only stream and then a track change (an HLS discontinuity at
 * second 0). So the pull publishes once the first video frame is here, or at the first audio frame when
 * the metadata announces no video, or when forced (a wall-clock bound, see #connect); and it replays the
 * metadata and sequence headers before the frames. Bounded in bytes.
 */
class StartBuffer {
  readonly #maxBytes: number;
  readonly #messages: RtmpMessage[] = [];
  #bytes = 0;
  #expectVideo: boolean | undefined;
  #sawAudio = false;
  #ready = false;
  sawMedia = false;
  onMedia: (() => void) | undefined;
  onReady: (() => void) | undefined;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  get ready(): boolean {
    return this.#ready;
  }

  /** Holds one message; false when the bound is exceeded. */
  add(msg: RtmpMessage): boolean {
    this.#bytes += msg.payload.length;
    if (this.#bytes > this.#maxBytes) return false;
    this.#messages.push(msg);
    if (msg.type === MessageType.DataAmf0 || msg.type === MessageType.DataAmf3) this.#metadata(msg);
    else if (msg.type === MessageType.Audio && !isConfig(msg)) this.#sawAudio = true;
    const media = this.#sawAudio || isVideoFrame(msg);
    if (media && !this.sawMedia) {
      this.sawMedia = true;
      this.onMedia?.();
    }
    if (isVideoFrame(msg) || (this.#sawAudio && this.#expectVideo === false)) this.force();
    return true;
  }

  force(): void {
    if (this.#ready) return;
    this.#ready = true;
    this.onReady?.();
  }

  /** The held messages, configs first. */
  drain(): RtmpMessage[] {
    const all = this.#messages.splice(0);
    this.#bytes = 0;
    return [...all.filter(isConfig), ...all.filter((m) => !isConfig(m))];
  }

  #metadata(msg: RtmpMessage): void {
    try {
      const values = parseData(msg);
      const obj = values[values[0] === '@setDataFrame' ? 2 : 1];
      if (values.includes('onMetaData') && obj && typeof obj === 'object' && !Array.isArray(obj) && !(obj instanceof Date)) {
        this.#expectVideo = 'videocodecid' in obj || 'width' in obj;
      }
    } catch {
      // Unreadable metadata is the ingest's to reject once published.
    }
  }
}

export class PullManager {
  readonly #deps: OutboundDeps;
  readonly #max: number;
  readonly #pulls = new Map<string, Pull>();
  #nextId = 1;
  #closed = false;

  constructor(deps: OutboundDeps, maxPulls: number) {
    this.#deps = deps;
    this.#max = maxPulls;
  }

  get size(): number {
    return this.#pulls.size;
  }

  /** Pulls that still hold a timer, an attempt or a session (0 once closed). */
  get holding(): number {
    let n = 0;
    for (const p of this.#pulls.values()) if (p.holding) n++;
    return n;
  }

  add(spec: PullSpec, source: 'config' | 'api'): PullView {
    if (this.#closed) throw new OutboundRequestError('limit', 'shutting down');
    let target: RtmpTarget;
    try {
      target = parseRtmpUrl(spec.url);
    } catch (err) {
      if (err instanceof RtmpUrlError) throw new OutboundRequestError('invalid', err.message);
      throw err;
    }
    if (!validStreamPart(spec.app) || !validStreamPart(spec.name)) {
      throw new OutboundRequestError('invalid', `invalid stream name ${JSON.stringify(`${spec.app}/${spec.name}`)}`);
    }
    for (const p of this.#pulls.values()) {
      if (p.spec.app === spec.app && p.spec.name === spec.name) throw new OutboundRequestError('conflict', `${spec.app}/${spec.name} is already pulled (${p.id})`);
    }
    if (this.#pulls.size >= this.#max) throw new OutboundRequestError('limit', `pull limit of ${this.#max} reached`);
    const pull = new Pull(`pull-${this.#nextId++}`, spec, target, source, this.#deps);
    this.#pulls.set(pull.id, pull);
    pull.start();
    this.#deps.log.info({ pull: pull.id, source: target.redacted, stream: `${spec.app}/${spec.name}`, from: source }, 'pull added');
    return pull.view();
  }

  get(id: string): PullView | undefined {
    return this.#pulls.get(id)?.view();
  }

  list(): PullView[] {
    return [...this.#pulls.values()].map((p) => p.view());
  }

  /** Stops a pull: its session ends (and with it the stream), its timer is cleared. */
  async remove(id: string, reason = 'pull removed'): Promise<boolean> {
    const p = this.#pulls.get(id);
    if (!p) return false;
    this.#pulls.delete(id);
    await p.close(reason);
    this.#deps.log.info({ pull: id }, 'pull removed');
    return true;
  }

  async close(reason: string): Promise<void> {
    this.#closed = true;
    const all = [...this.#pulls.values()];
    this.#pulls.clear();
    await Promise.all(all.map((p) => p.close(reason)));
  }
}
