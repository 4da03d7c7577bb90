/**
 * The transcode of one source stream: its rendition streams in the registry, the worker thread that
 * does the work, the bounded hand-over of source frames to it, and its supervision.
 *
 * - Frames go to the worker against credits (MAX_IN_FLIGHT unanswered messages); past that the job
 *   stops reading the source's output queue, which then drops to the next keyframe as any slow
 *   output does. The publisher and the other outputs never wait on a transcode.
 * - A worker that fails (an error, an exit, or no output for `stallMs` while input waits) is
 *   terminated, awaited, and replaced after an exponential backoff with jitter; the new one starts
 *   from the source's cached GOP. Rendition streams live on across restarts: what a new worker
 *   produces at or before what was already published is dropped, and video resumes on a keyframe.
 * - After `maxRestarts` failures in a row the renditions end as failed. The source is never touched.
 */
import type { Logger } from 'pino';
import type { PipelineOptions, PipelineStats } from '../../codecs/transcode/pipeline.ts';
import type { Track } from '../../codecs/track.ts';
import type { OutputQueue } from '../../sessions/output-queue.ts';
import type { BufferPool, PooledBuffer } from '../../sessions/pool.ts';
import type { Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import type { FromWorker } from './protocol.ts';
import { fromWireTrack } from './protocol.ts';
import { WorkerHost } from './worker-host.ts';

/** Unanswered messages to a worker before the job stops reading its source. */
const MAX_IN_FLIGHT = 120;
/** A worker that has produced output for this long has recovered: the backoff starts over. */
const HEALTHY_AFTER_MS = 30_000;
/** How long a finishing worker may take to flush before it is terminated. */
const FINISH_GRACE_MS = 10_000;
/** How long a worker asked to stop may take before it is terminated. */
const STOP_GRACE_MS = 2_000;
/** How long terminate() may take before the thread is given up on (a native call that never returns). */
const TERMINATE_TIMEOUT_MS = 5_000;

export type JobState = 'starting' | 'running' | 'restarting' | 'finishing' | 'ended' | 'failed' | 'refused';
export type RenditionState = 'starting' | 'active' | 'restarting' | 'refused' | 'failed' | 'ended' | 'closed';

export interface RenditionConfig {
  readonly name: string;
  readonly height?: number;
  readonly bitrate?: number;
}

export interface TranscodeSettings {
  readonly backend: 'cpu' | 'gpu';
  readonly poolSize: number;
  readonly device?: string;
  readonly stallMs: number;
  readonly restartBackoffMs: number;
  readonly maxRestartBackoffMs: number;
  readonly maxRestarts: number;
  readonly audioBitrate: number;
  readonly preset: string;
  readonly threads: number;
  readonly gopSeconds: number;
}

export interface JobDeps {
  readonly registry: Registry;
  readonly pool: BufferPool;
  readonly log: Logger;
  readonly settings: TranscodeSettings;
  /** The publish key renditions present to the registry (the app's first stream key, if it has any). */
  readonly streamKey?: string;
  onRestart(reason: 'error' | 'exit' | 'stall'): void;
  /** A rendition stream got a track (for the master playlist). */
  onTrack(job: TranscodeJob, rendition: RenditionConfig, track: Track): void;
  /** The job is over (source ended, or nothing left to do); its renditions no longer count against the cap. */
  onEnded(job: TranscodeJob): void;
}

export interface RenditionView {
  readonly name: string;
  readonly stream: string;
  readonly state: RenditionState;
  readonly reason?: string;
  readonly height?: number;
  readonly bitrate?: number;
  readonly width?: number;
  readonly outputHeight?: number;
  readonly framesOut: number;
}

export interface TranscodeView {
  readonly source: string;
  readonly state: JobState;
  readonly backend: 'cpu' | 'gpu';
  readonly renditions: RenditionView[];
  readonly restarts: number;
  readonly lastFailure?: string;
  readonly pool?: PipelineStats['pool'];
  readonly framesIn?: number;
}

interface Slot {
  readonly spec: RenditionConfig;
  readonly name: string;
  readonly key: string;
  state: RenditionState;
  reason: string | undefined;
  stream: Stream | undefined;
  readonly tracks: Map<number, Track>;
  video: Track | undefined;
  readonly lastDts: Map<number, number>;
  needKeyframe: boolean;
  framesOut: number;
}

export class TranscodeJob {
  readonly source: Stream;
  readonly #deps: JobDeps;
  readonly #log: Logger;
  readonly #slots: Slot[];
  #state: JobState = 'starting';
  #worker: WorkerHost | undefined;
  /** The renditions the current worker makes, by the index it addresses them with. */
  #workerSlots: Slot[] = [];
  #queue: OutputQueue | undefined;
  #posted = 0;
  #consumed = 0;
  #pendingSince: number | undefined;
  #spawnedAt = 0;
  #restarts = 0;
  #failuresInRow = 0;
  #lastFailure: string | undefined;
  #stats: PipelineStats | undefined;
  #finalStats: PipelineStats | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #finishTimer: NodeJS.Timeout | undefined;
  #stallTimer: NodeJS.Timeout | undefined;
  #endReason = '';
  #ended: Promise<void>;
  #resolveEnded!: () => void;

  constructor(source: Stream, admitted: readonly RenditionConfig[], refused: ReadonlyArray<{ spec: RenditionConfig; reason: string }>, deps: JobDeps) {
    this.source = source;
    this.#deps = deps;
    this.#log = deps.log.child({ stream: source.key, component: 'transcode' });
    const slot = (spec: RenditionConfig, state: RenditionState, reason?: string): Slot => ({
      spec,
      name: `${source.name}_${spec.name}`,
      key: `${source.app}/${source.name}_${spec.name}`,
      state,
      reason,
      stream: undefined,
      tracks: new Map(),
      video: undefined,
      lastDts: new Map(),
      needKeyframe: false,
      framesOut: 0,
    });
    this.#slots = [...admitted.map((s) => slot(s, 'starting')), ...refused.map((r) => slot(r.spec, 'refused', r.reason))];
    this.#ended = new Promise((resolve) => (this.#resolveEnded = resolve));
    if (admitted.length === 0) this.#state = 'refused';
  }

  get state(): JobState {
    return this.#state;
  }

  /** Renditions that count against the cap. */
  get activeRenditions(): number {
    if (this.#state === 'ended' || this.#state === 'failed') return 0;
    return this.#slots.filter((s) => s.state === 'starting' || s.state === 'active' || s.state === 'restarting').length;
  }

  /** The pool stats of the running worker, if one runs. */
  get poolStats(): PipelineStats['pool'] | undefined {
    return this.#worker?.running ? this.#stats?.pool : undefined;
  }

  /** What the last worker reported when it finished (its pool's frames in use before it closed). */
  get finalStats(): PipelineStats | undefined {
    return this.#finalStats;
  }

  get restarts(): number {
    return this.#restarts;
  }

  /** Resolves when the job is over and its worker has exited. */
  get ended(): Promise<void> {
    return this.#ended;
  }

  get threadId(): number | undefined {
    return this.#worker?.threadId;
  }

  view(): TranscodeView {
    return {
      source: this.source.key,
      state: this.#state,
      backend: this.#deps.settings.backend,
      renditions: this.#slots.map((s) => {
        const v = s.video;
        return {
          name: s.spec.name,
          stream: s.key,
          state: s.state,
          ...(s.reason !== undefined ? { reason: s.reason } : {}),
          ...(s.spec.height !== undefined ? { height: s.spec.height } : {}),
          ...(s.spec.bitrate !== undefined ? { bitrate: s.spec.bitrate } : {}),
          ...(v?.kind === 'video' ? { width: v.width, outputHeight: v.height } : {}),
          framesOut: s.framesOut,
        };
      }),
      restarts: this.#restarts,
      ...(this.#lastFailure !== undefined ? { lastFailure: this.#lastFailure } : {}),
      ...(this.#stats ? { pool: this.#stats.pool, framesIn: this.#stats.videoIn + this.#stats.audioIn } : {}),
    };
  }

  /** The rendition streams that are live now, with their configs. */
  renditionStreams(): Array<{ spec: RenditionConfig; stream: Stream }> {
    return this.#slots.filter((s) => s.stream && !s.stream.ended).map((s) => ({ spec: s.spec, stream: s.stream! }));
  }

  /** Publishes the rendition streams, then starts the worker. */
  async start(): Promise<void> {
    if (this.#state === 'refused') return;
    const { registry, streamKey } = this.#deps;
    await Promise.all(
      this.#slots
        .filter((s) => s.state === 'starting')
        .map(async (s) => {
          try {
            const stream = await registry.publish(
              { app: this.source.app, name: s.name, protocol: 'transcode', remoteAddress: `transcode:${this.source.key}`, ...(streamKey !== undefined ? { key: streamKey } : {}) },
              { protocol: 'transcode', remoteAddress: `transcode:${this.source.key}`, close: (reason) => this.#renditionClosed(s, reason) },
            );
            if (this.#state !== 'starting') {
              stream.end(this.#endReason || 'transcode stopped');
              return;
            }
            s.stream = stream;
          } catch (err) {
            s.state = 'refused';
            s.reason = `rendition stream ${s.key} refused: ${(err as Error).message}`;
            this.#log.warn({ rendition: s.spec.name, reason: s.reason }, 'transcode rendition refused');
          }
        }),
    );
    if (this.#state !== 'starting') return;
    if (!this.#slots.some((s) => s.state === 'starting')) {
      this.#end('no rendition could be published');
      return;
    }
    if (this.source.ended) {
      this.#end(`source ended (${this.source.ended})`);
      return;
    }
    this.source.once('end', (reason) => {
      // A source that ends while a restart waits out its backoff: nothing to restart for.
      if (this.#state === 'restarting') this.#end(`source ended (${reason})`);
    });
    this.#stallTimer = setInterval(() => this.#checkStall(), Math.max(50, Math.floor(this.#deps.settings.stallMs / 4)));
    this.#stallTimer.unref();
    this.#spawn();
  }

  /** Stops at once (shutdown, a takeover of the source): renditions end with `reason`, the worker is awaited. */
  async stop(reason: string): Promise<void> {
    if (this.#state === 'ended' || this.#state === 'failed' || this.#state === 'refused') {
      this.#resolveEnded();
      return this.#ended;
    }
    this.#endReason = reason;
    // The rendition streams end now (a new publisher of the source may want their names at once);
    // the worker is awaited after.
    const stopping = this.#stopWorker();
    this.#end(reason);
    await stopping;
  }

  /**
   * Fault injection for tests and drills: 'crash' ends the worker thread at once, behind the job's
   * back (exit code 1, nothing freed, as a kill or a fatal error would); 'hang' blocks it (a stuck
   * encoder); 'throw' makes it fail with an error.
   */
  injectFault(fault: 'crash' | 'hang' | 'throw'): void {
    this.#worker?.post({ type: 'fault', fault: fault === 'crash' ? 'exit' : fault });
  }

  // --- worker ----------------------------------------------------------------------------------

  #pipelineOptions(slots: readonly Slot[]): PipelineOptions {
    const s = this.#deps.settings;
    return {
      backend: s.backend,
      poolSize: s.poolSize,
      ...(s.device !== undefined ? { device: s.device } : {}),
      renditions: slots.map((slot) => ({ name: slot.spec.name, ...(slot.spec.height !== undefined ? { height: slot.spec.height } : {}), bitrate: slot.spec.bitrate ?? 0 })),
      audioBitrate: s.audioBitrate,
      preset: s.preset,
      threads: s.threads,
      gopSeconds: s.gopSeconds,
    };
  }

  #spawn(): void {
    this.#restartTimer = undefined;
    if (this.source.ended) {
      this.#end(`source ended (${this.source.ended})`);
      return;
    }
    this.#state = 'running';
    for (const s of this.#slots) if (s.state === 'starting' || s.state === 'restarting') s.state = 'active';
    // Refused and closed renditions are not made at all.
    this.#workerSlots = this.#slots.filter((s) => s.state === 'active');
    this.#posted = 0;
    this.#consumed = 0;
    this.#pendingSince = undefined;
    this.#spawnedAt = performance.now();
    const w: WorkerHost = new WorkerHost(
      { mode: 'transcode', options: this.#pipelineOptions(this.#workerSlots) },
      { onMessage: (m) => this.#onMessage(w, m), onExit: (code, err) => this.#onExit(w, code, err) },
    );
    this.#worker = w;
    this.#log.info({ thread: w.threadId, backend: this.#deps.settings.backend, renditions: this.#slots.filter((s) => s.state === 'active').map((s) => s.spec.name) }, 'transcode worker started');
    const q = this.source.attach();
    this.#queue = q;
    q.onReadable = () => this.#drain();
    this.#drain();
  }

  /** Hands queued source events to the worker while it has credit. */
  #drain(): void {
    const q = this.#queue;
    const w = this.#worker;
    if (!q || !w || this.#state !== 'running') return;
    while (this.#posted - this.#consumed < MAX_IN_FLIGHT) {
      const ev = q.shift();
      if (!ev) break;
      if (ev.type === 'track') {
        w.post({ type: 'track', track: ev.track });
        this.#posted++;
      } else if (ev.type === 'frame') {
        const f = ev.frame;
        try {
          const data = new ArrayBuffer(f.data.length);
          new Uint8Array(data).set(f.data.bytes);
          w.post({ type: 'frame', frame: { track: f.track, kind: f.kind, dts: f.dts, pts: f.pts, keyframe: f.keyframe, data } }, [data]);
        } finally {
          f.data.release();
        }
        this.#posted++;
        this.#pendingSince ??= performance.now();
      }
    }
    const ended = q.ended;
    if (ended !== undefined) this.#sourceEnded(ended);
  }

  #onMessage(w: WorkerHost, m: FromWorker): void {
    if (w !== this.#worker) return;
    switch (m.type) {
      case 'ready':
        this.#stats = { pool: m.pool, videoIn: 0, audioIn: 0, decoded: 0, renditions: [], audioOut: 0 };
        break;
      case 'track':
        this.#onTrack(m.renditions, fromWireTrack(m.track));
        break;
      case 'frame':
        this.#onFrame(m);
        break;
      case 'progress':
        this.#consumed = m.consumed;
        if (m.stats) this.#stats = m.stats;
        if (this.#consumed >= this.#posted) this.#pendingSince = undefined;
        this.#drain();
        break;
      case 'error':
        this.#log.warn({ stage: m.stage, error: m.message }, 'transcode worker failed');
        if (this.#state === 'finishing') break; // it exits; the job finishes with what it has
        void this.#restart('error', `${m.stage}: ${m.message}`);
        break;
      case 'done':
        this.#finalStats = m.stats;
        this.#stats = m.stats;
        break;
      case 'probe':
        break;
    }
  }

  #onTrack(renditions: readonly number[], track: Track): void {
    for (const i of renditions) {
      const s = this.#workerSlots[i];
      if (!s?.stream || s.state !== 'active') continue;
      const old = s.tracks.get(track.id);
      if (old && old.codec === track.codec && old.config.equals(track.config)) continue;
      s.tracks.set(track.id, track);
      if (track.kind === 'video') s.video = track;
      s.stream.setTrack(track);
      this.#deps.onTrack(this, s.spec, track);
    }
  }

  #onFrame(m: Extract<FromWorker, { type: 'frame' }>): void {
    const f = m.frame;
    const targets: Slot[] = [];
    for (const i of m.renditions) {
      const s = this.#workerSlots[i];
      if (!s?.stream || s.state !== 'active' || !s.tracks.has(f.track)) continue;
      const last = s.lastDts.get(f.track);
      // A restarted worker repeats the cached GOP: what was published already is not published again.
      if (last !== undefined && f.dts <= last) continue;
      if (f.kind === 'video' && s.needKeyframe) {
        if (!f.keyframe) continue;
        s.needKeyframe = false;
      }
      targets.push(s);
    }
    const now = performance.now();
    this.#pendingSince = this.#posted > this.#consumed ? now : undefined;
    if (now - this.#spawnedAt >= HEALTHY_AFTER_MS) this.#failuresInRow = 0;
    if (targets.length === 0) return;
    let buf: PooledBuffer;
    try {
      buf = this.#deps.pool.copyOf(new Uint8Array(f.data));
    } catch (err) {
      this.#log.warn({ error: (err as Error).message }, 'transcode output dropped: buffer pool exhausted');
      return;
    }
    for (let i = 1; i < targets.length; i++) buf.retain();
    for (const s of targets) {
      s.lastDts.set(f.track, f.dts);
      s.framesOut++;
      s.stream!.push({ track: f.track, kind: f.kind, codec: f.codec, dts: f.dts, pts: Math.max(f.pts, f.dts), keyframe: f.keyframe, data: buf });
    }
  }

  #onExit(w: WorkerHost, code: number, err: Error | undefined): void {
    if (w !== this.#worker) return;
    this.#worker = undefined;
    this.#detachQueue();
    if (this.#state === 'finishing') {
      this.#end(this.#endReason);
      return;
    }
    if (this.#state === 'running') void this.#restart('exit', `worker exited with code ${code}${err ? `: ${err.message}` : ''}`);
  }

  #checkStall(): void {
    if (this.#state !== 'running' || !this.#worker || this.#pendingSince === undefined) return;
    const waited = performance.now() - this.#pendingSince;
    if (waited > this.#deps.settings.stallMs) void this.#restart('stall', `stalled: no output for ${Math.round(waited)} ms with input waiting`);
  }

  async #restart(kind: 'error' | 'exit' | 'stall', reason: string): Promise<void> {
    if (this.#state !== 'running') return;
    this.#state = 'restarting';
    this.#restarts++;
    this.#failuresInRow++;
    this.#lastFailure = reason;
    this.#deps.onRestart(kind);
    for (const s of this.#slots) {
      if (s.state === 'active') s.state = 'restarting';
      s.needKeyframe = true;
    }
    // A stalled worker is most likely stuck: a short grace before it is terminated.
    await this.#stopWorker(kind === 'stall' ? 500 : STOP_GRACE_MS);
    if (this.#state !== 'restarting') return;
    const { maxRestarts, restartBackoffMs, maxRestartBackoffMs } = this.#deps.settings;
    if (this.#failuresInRow > maxRestarts) {
      this.#log.error({ reason, failures: this.#failuresInRow }, 'transcode failed: giving up after repeated failures');
      this.#fail(`${this.#failuresInRow} failures in a row, the last: ${reason}`);
      return;
    }
    const base = Math.min(maxRestartBackoffMs, restartBackoffMs * 2 ** (this.#failuresInRow - 1));
    const delayMs = Math.round(base * (0.8 + Math.random() * 0.4));
    this.#log.warn({ reason, attempt: this.#failuresInRow, delayMs }, 'transcode restarting');
    this.#restartTimer = setTimeout(() => this.#spawn(), delayMs);
  }

  #fail(reason: string): void {
    this.#state = 'failed';
    this.#clearTimers();
    for (const s of this.#slots) {
      if (s.state === 'refused' || s.state === 'closed') continue;
      s.state = 'failed';
      s.reason = `transcode failed: ${reason}`;
      s.stream?.end(s.reason);
      s.stream = undefined;
    }
    this.#deps.onEnded(this);
    this.#resolveEnded();
  }

  /** The source ended: the worker flushes what it has, then the renditions end. */
  #sourceEnded(reason: string): void {
    if (this.#state !== 'running') return;
    this.#endReason = `source ended (${reason})`;
    this.#state = 'finishing';
    this.#detachQueue();
    this.#worker?.post({ type: 'end' });
    this.#finishTimer = setTimeout(() => {
      this.#log.warn({ graceMs: FINISH_GRACE_MS }, 'transcode worker did not finish in time; terminating it');
      void this.#stopWorker().then(() => this.#end(this.#endReason));
    }, FINISH_GRACE_MS);
    this.#finishTimer.unref();
  }

  #renditionClosed(s: Slot, reason: string): void {
    if (s.state === 'closed' || s.state === 'ended') return;
    s.state = 'closed';
    s.reason = reason;
    s.stream = undefined;
    this.#log.info({ rendition: s.spec.name, reason }, 'transcode rendition closed');
    if (!this.#slots.some((x) => x.stream) && (this.#state === 'running' || this.#state === 'restarting' || this.#state === 'starting')) {
      void this.stop('every rendition stream was closed');
    }
  }

  #detachQueue(): void {
    const q = this.#queue;
    this.#queue = undefined;
    if (q) this.source.detach(q);
  }

  /**
   * Stops the worker (if any) and waits for it to exit. It is asked first: terminate() while the
   * thread is inside a node-av call makes that call's failing N-API throw fatal, which aborts the
   * whole process; so only a worker that does not answer within `graceMs` (stuck) is terminated.
   */
  async #stopWorker(graceMs = STOP_GRACE_MS): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    this.#detachQueue();
    if (!w) return;
    w.post({ type: 'stop' });
    const within = (p: Promise<unknown>, ms: number): Promise<boolean> => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        p.then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), ms);
        }),
      ]).finally(() => clearTimeout(timer));
    };
    if (await within(w.exited, graceMs)) return;
    this.#log.warn({ thread: w.threadId, graceMs }, 'transcode worker did not stop when asked; terminating it');
    if (!(await within(w.terminate(), TERMINATE_TIMEOUT_MS))) {
      this.#log.error({ thread: w.threadId }, 'transcode worker did not exit after terminate (a native call that does not return); leaving it');
    }
  }

  #clearTimers(): void {
    clearTimeout(this.#restartTimer);
    clearTimeout(this.#finishTimer);
    clearInterval(this.#stallTimer);
    this.#restartTimer = this.#finishTimer = this.#stallTimer = undefined;
  }

  #end(reason: string): void {
    if (this.#state === 'ended' || this.#state === 'failed') return;
    const wasRefused = this.#state === 'refused';
    this.#state = 'ended';
    this.#clearTimers();
    for (const s of this.#slots) {
      if (s.state === 'refused' || s.state === 'closed') continue;
      s.state = 'ended';
      s.reason = reason;
      s.stream?.end(reason);
      s.stream = undefined;
    }
    if (!wasRefused) {
      const final = this.#finalStats;
      this.#log.info(
        { reason, restarts: this.#restarts, poolInUseAtEnd: final?.pool.inUse, poolPeakInUse: final?.pool.peakInUse, framesIn: final ? final.videoIn + final.audioIn : undefined },
        'transcode finished',
      );
    }
    this.#deps.onEnded(this);
    this.#resolveEnded();
  }
}
