/**
 * Transcoding for the gateway: a job per source stream in an app with renditions, a cap on
 * renditions transcoding at once, the master playlist of each source's variants, the API view and
 * the numbers behind the metrics.
 *
 * Past the cap a rendition is refused (a warning in the log, state 'refused' in the API, a metric);
 * the source stream and its other outputs carry on unchanged.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { writeMasterPlaylist, type Variant } from '../../codecs/m3u8.ts';
import type { Track, VideoTrack } from '../../codecs/track.ts';
import type { Config } from '../../config/schema.ts';
import type { BufferPool } from '../../sessions/pool.ts';
import type { Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import { HttpError, sendJson, type Route } from '../http/router.ts';
import { TranscodeJob, type RenditionConfig, type TranscodeSettings, type TranscodeView } from './job.ts';
import { chooseBackend, type BackendChoice, type ProbeResult } from './probe.ts';

export interface TranscodeServiceDeps {
  readonly config: Config['transcode'];
  readonly registry: Registry;
  readonly pool: BufferPool;
  readonly log: Logger;
  /** Publish keys per app (a rendition presents its app's first key). */
  readonly streamKeys: Readonly<Record<string, readonly string[]>>;
  /** Whether HLS has a playlist for a stream (a variant is listed once it has). */
  hasPlaylist(app: string, name: string): boolean;
  /** Replaces the GPU probe (tests). */
  probe?: (device?: string) => Promise<ProbeResult>;
  onRefused?(): void;
  onRestarted?(reason: 'error' | 'exit' | 'stall'): void;
}

/** What a rendition stream of a transcode is, for the API. */
export interface RenditionOfView {
  readonly renditionOf: string;
  readonly rendition: string;
}

interface VariantInfo {
  spec: RenditionConfig;
  video?: VideoTrack;
  audio?: Track;
}

const NAME = '[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,127}';
const MASTER_PATH = new RegExp(`^/hls/(${NAME})/(${NAME})/master\\.m3u8$`);
const CORS = { 'access-control-allow-origin': '*' };
/** Assumed for AAC that is passed through (its bitrate is not signalled). */
const PASSTHROUGH_AUDIO_BPS = 128_000;

export class TranscodeService {
  readonly backend: BackendChoice;
  readonly #deps: TranscodeServiceDeps;
  readonly #settings: TranscodeSettings;
  readonly #jobs = new Map<string, TranscodeJob>();
  /** Per source key, what each rendition carries: kept past the job for the master playlist while HLS keeps the variants. */
  readonly #variants = new Map<string, Map<string, VariantInfo>>();
  readonly #onPublish = (s: Stream): void => this.#publish(s);
  #closed = false;
  #refused = 0;

  private constructor(deps: TranscodeServiceDeps, backend: BackendChoice) {
    this.#deps = deps;
    this.backend = backend;
    const c = deps.config;
    this.#settings = {
      backend: backend.backend,
      poolSize: c.pool.size,
      ...(c.pool.device !== undefined ? { device: c.pool.device } : {}),
      stallMs: c.stallMs,
      restartBackoffMs: c.restartBackoffMs,
      maxRestartBackoffMs: c.maxRestartBackoffMs,
      maxRestarts: c.maxRestarts,
      audioBitrate: c.audioBitrate,
      preset: c.preset,
      threads: c.threads,
      gopSeconds: c.gopSeconds,
    };
    deps.registry.on('publish', this.#onPublish);
  }

  /** Chooses the backend (probing the GPU once unless told cpu) and starts listening for publishers. */
  static async start(deps: TranscodeServiceDeps): Promise<TranscodeService> {
    const c = deps.config.pool;
    const backend = await chooseBackend(c.backend, deps.log, { ...(c.device !== undefined ? { device: c.device } : {}), ...(deps.probe ? { probe: deps.probe } : {}) });
    return new TranscodeService(deps, backend);
  }

  /** Renditions transcoding now (what the cap counts). */
  get activeRenditions(): number {
    let n = 0;
    for (const j of this.#jobs.values()) n += j.activeRenditions;
    return n;
  }

  get refusedTotal(): number {
    return this.#refused;
  }

  /** Frame pool totals over the running workers. */
  get poolStats(): { size: number; inUse: number; deviceMemoryBytes: number } {
    const t = { size: 0, inUse: 0, deviceMemoryBytes: 0 };
    for (const j of this.#jobs.values()) {
      const p = j.poolStats;
      if (!p) continue;
      t.size += p.size;
      t.inUse += p.inUse;
      t.deviceMemoryBytes += p.deviceMemoryBytes;
    }
    return t;
  }

  job(app: string, name: string): TranscodeJob | undefined {
    return this.#jobs.get(`${app}/${name}`);
  }

  list(): TranscodeView[] {
    return [...this.#jobs.values()].map((j) => j.view());
  }

  /** The transcode part of a stream's API view: its renditions for a source, its source for a rendition. */
  view(s: Stream): TranscodeView | RenditionOfView | undefined {
    const job = this.#jobs.get(s.key);
    if (job && job.source === s) return job.view();
    if (s.publisher.protocol !== 'transcode') return undefined;
    for (const j of this.#jobs.values()) {
      const r = j.renditionStreams().find((x) => x.stream === s);
      if (r) return { renditionOf: j.source.key, rendition: r.spec.name };
    }
    return undefined;
  }

  routes(): Route[] {
    return [
      { method: 'GET', path: MASTER_PATH, handle: (_req, res, m) => this.#master(res, m[1]!, m[2]!) },
      { method: 'GET', path: /^\/api\/v1\/transcodes\/?$/, handle: (_req: IncomingMessage, res: ServerResponse) => sendJson(res, 200, { backend: this.backend, activeRenditions: this.activeRenditions, maxConcurrent: this.#deps.config.maxConcurrent, transcodes: this.list() }) },
    ];
  }

  /** Stops every transcode and waits for every worker thread to exit. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#deps.registry.off('publish', this.#onPublish);
    await Promise.all([...this.#jobs.values()].map((j) => j.stop('server shutting down')));
    this.#jobs.clear();
  }

  #publish(source: Stream): void {
    if (this.#closed || !this.#deps.config.enabled || source.publisher.protocol === 'transcode') return;
    const app = this.#deps.config.apps[source.app];
    if (!app) return;
    const previous = this.#jobs.get(source.key);
    // A publisher that took over the name: the old transcode goes first, so its rendition streams are free.
    if (previous) void previous.stop('source taken over');
    const max = this.#deps.config.maxConcurrent;
    let active = this.activeRenditions;
    const admitted: RenditionConfig[] = [];
    const refused: Array<{ spec: RenditionConfig; reason: string }> = [];
    for (const spec of app.renditions) {
      if (active < max) {
        admitted.push(spec);
        active++;
        continue;
      }
      const reason = `transcode cap reached: ${max} renditions already transcoding (transcode.maxConcurrent)`;
      refused.push({ spec, reason });
      this.#refused++;
      this.#deps.onRefused?.();
      this.#deps.log.warn({ stream: source.key, rendition: spec.name, maxConcurrent: max }, `transcode refused for ${source.key}_${spec.name}: ${reason}; the source stream is unaffected`);
    }
    const streamKey = this.#deps.streamKeys[source.app]?.[0];
    const job: TranscodeJob = new TranscodeJob(source, admitted, refused, {
      registry: this.#deps.registry,
      pool: this.#deps.pool,
      log: this.#deps.log,
      settings: this.#settings,
      ...(streamKey !== undefined ? { streamKey } : {}),
      onRestart: (reason) => this.#deps.onRestarted?.(reason),
      onTrack: (_j, spec, track) => this.#noteTrack(source, spec, track),
      onEnded: (j) => {
        // A refused-only job stays listed while its source lives, so that the refusal is visible.
        if (j.state !== 'refused' && this.#jobs.get(source.key) === j) this.#jobs.delete(source.key);
      },
    });
    this.#jobs.set(source.key, job);
    source.once('end', () => {
      if (job.state === 'refused' && this.#jobs.get(source.key) === job) this.#jobs.delete(source.key);
    });
    this.#variants.set(source.key, new Map(app.renditions.map((spec) => [spec.name, { spec }])));
    job.start().catch((err: unknown) => {
      this.#deps.log.error({ err, stream: source.key }, 'transcode failed to start');
      void job.stop(`transcode failed to start: ${(err as Error).message}`);
    });
  }

  #noteTrack(source: Stream, spec: RenditionConfig, track: Track): void {
    const info = this.#variants.get(source.key)?.get(spec.name);
    if (!info) return;
    if (track.kind === 'video') info.video = track;
    else info.audio = track;
  }

  #master(res: ServerResponse, app: string, name: string): void {
    const key = `${app}/${name}`;
    const infos = this.#variants.get(key);
    if (!infos) throw new HttpError(404, 'no transcode for this stream', CORS);
    const job = this.#jobs.get(key);
    const variants: Variant[] = [];
    for (const info of infos.values()) {
      const renditionName = `${name}_${info.spec.name}`;
      if (!this.#deps.hasPlaylist(app, renditionName)) continue;
      const codecs = [info.video?.codecString, info.audio?.codecString].filter((c): c is string => c !== undefined);
      const audioBps = info.audio ? (info.audio.codec === 'aac' && job?.source.tracks.get(info.audio.id)?.codec === 'opus' ? this.#deps.config.audioBitrate : PASSTHROUGH_AUDIO_BPS) : 0;
      let videoBps = info.spec.bitrate ?? 0;
      if (info.spec.height === undefined) videoBps = this.#measuredVideoBps(job, info.spec) ?? 2_000_000;
      variants.push({
        uri: `../${renditionName}/index.m3u8`,
        // BANDWIDTH is a peak: the target plus the container's overhead.
        bandwidth: Math.round((videoBps + audioBps) * 1.1),
        ...(info.video ? { resolution: { width: info.video.width, height: info.video.height } } : {}),
        ...(codecs.length ? { codecs: codecs.join(',') } : {}),
      });
    }
    if (variants.length === 0) {
      if (!job) this.#variants.delete(key);
      throw new HttpError(404, 'no rendition has a playlist yet', CORS);
    }
    const text = writeMasterPlaylist(variants);
    res.writeHead(200, { ...CORS, 'content-type': 'application/vnd.apple.mpegurl', 'cache-control': 'no-cache', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** The bitrate a copied rendition's video has shown so far. */
  #measuredVideoBps(job: TranscodeJob | undefined, spec: RenditionConfig): number | undefined {
    const r = job?.renditionStreams().find((x) => x.spec === spec);
    if (!r) return undefined;
    const seconds = (Date.now() - r.stream.startedAt.getTime()) / 1000;
    if (seconds < 1) return undefined;
    let bytes = 0;
    for (const t of r.stream.tracks.values()) if (t.kind === 'video') bytes += r.stream.trackStats.get(t.id)?.bytes ?? 0;
    return bytes > 0 ? Math.round((bytes * 8) / seconds) : undefined;
  }
}
