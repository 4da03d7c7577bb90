/**
 * One load run: publishers (RTMP or WHIP) ramp up, a warm-up passes, then a measured window during
 * which HLS viewers and RTMP players watch the published streams; then everything is closed and a
 * report is built. Every phase is bounded in time; the run stops by itself.
 */
import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { HlsViewer, summarizeViewers, type HlsViewerStats } from './hls-viewer.ts';
import { ensureRtmpMedia, ensureWhipMedia, RTMP_MEDIA, WHIP_MEDIA } from './media.ts';
import { machine, usage } from './procstat.ts';
import { errorCounts, type LoadReport, type PlayersSummary, type PublisherSummary } from './report.ts';
import { FlvClip, RtmpFeed } from './replay.ts';
import { RtmpPlayers } from './rtmp-players.ts';
import { RtmpPublishers } from './rtmp-publishers.ts';
import { buildRtpClip, RtpFeed } from './rtp-media.ts';
import { coreFraction, sampleSelf } from './selfcpu.ts';
import { summarize } from './stats.ts';
import { WhipPublishers } from './whip-publisher.ts';

export interface LoadOptions {
  protocol: 'rtmp' | 'whip';
  publishers: number;
  /** HLS viewers, spread round-robin over the published streams. */
  viewers: number;
  rtmpPlayers: number;
  /** The measured window. */
  durationS: number;
  rampS: number;
  warmupS: number;
  /** rtmp://host:port/app: publish (protocol rtmp) and play URL base. */
  rtmpUrl: string;
  /** HLS playlist URL template with {name}. */
  hlsUrl: string;
  /** WHIP endpoint template with {name}. */
  whipUrl: string;
  /** Stream names are prefix + index. */
  prefix: string;
  cacheDir: string;
  tickMs: number;
  /** Viewers download segments (true) or only poll playlists. */
  fetchSegments: boolean;
  token?: string;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** 'measuring' and 'measured' bracket the window (the bench samples the server's /proc there). */
  onPhase?: (phase: 'media' | 'ramp' | 'warmup' | 'measuring' | 'measured' | 'closing', info?: Record<string, unknown>) => void;
}

export interface Progress {
  phase: string;
  elapsedS: number;
  publishers: { live: number; connecting: number; failed: number; requested: number };
  mbps: number;
  viewers: { playing: number; segments: number; stalls: number; errors: number } | undefined;
  players: { playing: number; failed: number } | undefined;
  /** The load tool's CPU over the last interval, fraction of one core. */
  cpu: number;
}

export function streamNames(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i}`);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

interface PublisherPool {
  start(): Promise<void>;
  close(): Promise<void>;
  counts(): { live: number; connecting: number; 'waiting-keyframe': number; failed: number; closed: number };
  bytes(): number;
  summary(windowS: number, bytesInWindow: number): PublisherSummary;
  ticks(): { ticks: number; late: number };
}

async function rtmpPool(o: LoadOptions, names: string[], maxMs: number): Promise<{ pool: PublisherPool; media: LoadReport['media']; feed: RtmpFeed }> {
  o.onPhase?.('media');
  const file = await ensureRtmpMedia(o.cacheDir);
  const clip = new FlvClip(readFileSync(file));
  const feed = new RtmpFeed(clip, { tickMs: o.tickMs, maxMs });
  const pubs = new RtmpPublishers({ url: o.rtmpUrl, names, feed, rampMs: o.rampS * 1000, ...(o.signal ? { signal: o.signal } : {}) });
  const m = RTMP_MEDIA;
  return {
    feed,
    media: {
      description: `FLV H.264 ${m.width}x${m.height} ${m.fps} fps, keyframe every ${m.keyframeSeconds} s, AAC`,
      videoFrames: clip.videoFrames,
      audioFrames: clip.audioFrames,
      loopMs: clip.periodMs,
      mbps: clip.bitsPerSecond / 1e6,
    },
    pool: {
      start: () => pubs.start(),
      close: () => pubs.close(),
      counts: () => pubs.counts(),
      bytes: () => pubs.bytesSent(),
      ticks: () => ({ ticks: feed.ticks, late: feed.lateTicks }),
      summary(windowS, bytesInWindow) {
        const st = pubs.stats();
        const c = pubs.counts();
        const mbps = (bytesInWindow * 8) / 1e6 / Math.max(windowS, 0.001);
        return {
          protocol: 'rtmp',
          requested: names.length,
          live: c.live + c['waiting-keyframe'],
          refused: st.filter((s) => s.state === 'failed' && s.droppedAfterMs === undefined && s.connectMs === undefined).length,
          dropped: st.filter((s) => s.droppedAfterMs !== undefined || (s.state === 'failed' && s.connectMs !== undefined)).length,
          connectMs: summarize(st.map((s) => s.connectMs).filter((v): v is number => v !== undefined)),
          skippedTicks: st.reduce((a, s) => a + s.skippedTicks, 0),
          resyncs: st.reduce((a, s) => a + s.resyncs, 0),
          mbps,
          mbpsPerStream: mbps / Math.max(1, c.live + c['waiting-keyframe']),
          errors: errorCounts(st.map((s) => s.error)),
        };
      },
    },
  };
}

async function whipPool(o: LoadOptions, names: string[], maxMs: number): Promise<{ pool: PublisherPool; media: LoadReport['media']; feed: RtpFeed }> {
  o.onPhase?.('media');
  const files = await ensureWhipMedia(o.cacheDir);
  const clip = buildRtpClip(readFileSync(files.h264), readFileSync(files.opus), files.fps);
  const feed = new RtpFeed(clip, { tickMs: Math.min(o.tickMs, 20), maxMs });
  const pubs = new WhipPublishers({ urlTemplate: o.whipUrl, names, feed, rampMs: o.rampS * 1000, ...(o.token ? { token: o.token } : {}), ...(o.signal ? { signal: o.signal } : {}) });
  const m = WHIP_MEDIA;
  return {
    feed,
    media: {
      description: `RTP H.264 constrained baseline ${m.width}x${m.height} ${m.fps} fps, keyframe every ${m.keyframeSeconds} s, Opus`,
      videoFrames: clip.videoFrames,
      audioFrames: clip.audioFrames,
      loopMs: clip.periodMs,
      mbps: clip.bitsPerSecond / 1e6,
    },
    pool: {
      start: () => pubs.start(),
      close: () => pubs.close(),
      counts: () => pubs.counts(),
      bytes: () => pubs.bytesSent(),
      ticks: () => ({ ticks: feed.ticks, late: 0 }),
      summary(windowS, bytesInWindow) {
        const st = pubs.stats();
        const c = pubs.counts();
        const mbps = (bytesInWindow * 8) / 1e6 / Math.max(windowS, 0.001);
        return {
          protocol: 'whip',
          requested: names.length,
          live: c.live + c['waiting-keyframe'],
          refused: st.filter((s) => s.state === 'failed' && s.connectMs === undefined).length,
          dropped: st.filter((s) => s.state === 'failed' && s.connectMs !== undefined).length,
          connectMs: summarize(st.map((s) => s.connectMs).filter((v): v is number => v !== undefined)),
          skippedTicks: 0,
          resyncs: 0,
          mbps,
          mbpsPerStream: mbps / Math.max(1, c.live + c['waiting-keyframe']),
          errors: errorCounts(st.map((s) => s.error)),
        };
      },
    },
  };
}

export async function runLoad(o: LoadOptions): Promise<LoadReport> {
  const startedAt = new Date().toISOString();
  const names = streamNames(o.prefix, o.publishers);
  const maxMs = (o.rampS + o.warmupS + o.durationS + 60) * 1000;
  const t0 = performance.now();
  const { pool, media, feed } = o.protocol === 'rtmp' ? await rtmpPool(o, names, maxMs) : await whipPool(o, names, maxMs);
  const hardStop = AbortSignal.any([AbortSignal.timeout(maxMs + 60_000), ...(o.signal ? [o.signal] : [])]);
  setMaxListeners(0, hardStop);

  let phase = 'ramp';
  let viewers: HlsViewer[] = [];
  let viewerRuns: Array<Promise<HlsViewerStats>> = [];
  let players: RtmpPlayers | undefined;
  let lastBytes = 0;
  let lastCpu = sampleSelf();
  let lastAt = performance.now();
  const progress = setInterval(() => {
    const now = performance.now();
    const bytes = pool.bytes();
    const cpu = sampleSelf();
    const c = pool.counts();
    const vs = viewers.map((v) => v.stats());
    o.onProgress?.({
      phase,
      elapsedS: (now - t0) / 1000,
      publishers: { live: c.live + c['waiting-keyframe'], connecting: c.connecting, failed: c.failed, requested: names.length },
      mbps: ((bytes - lastBytes) * 8) / 1e6 / ((now - lastAt) / 1000),
      viewers: viewers.length
        ? {
            playing: vs.filter((s) => s.state === 'playing').length,
            segments: vs.reduce((a, s) => a + s.segments, 0),
            stalls: vs.reduce((a, s) => a + s.stalls + s.playlistStalls, 0),
            errors: vs.reduce((a, s) => a + s.playlistErrors + s.segmentErrors + s.parseErrors, 0),
          }
        : undefined,
      players: players ? { playing: players.stats().filter((s) => s.state === 'playing').length, failed: players.stats().filter((s) => s.state === 'failed').length } : undefined,
      cpu: coreFraction(lastCpu, cpu),
    });
    lastBytes = bytes;
    lastCpu = cpu;
    lastAt = now;
  }, 1000);

  let report: LoadReport | undefined;
  try {
    o.onPhase?.('ramp', { publishers: names.length });
    feed.start();
    await Promise.race([pool.start(), sleep((o.rampS + 30) * 1000, hardStop)]);
    phase = 'warmup';
    o.onPhase?.('warmup');
    await sleep(o.warmupS * 1000, hardStop);

    phase = 'measuring';
    const live = names;
    const cpuA = sampleSelf();
    const bytesA = pool.bytes();
    const ticksA = pool.ticks();
    o.onPhase?.('measuring', { live: pool.counts().live });
    const windowMs = o.durationS * 1000;
    if (o.viewers > 0 && live.length > 0) {
      viewers = Array.from(
        { length: o.viewers },
        (_, i) =>
          new HlsViewer({
            url: o.hlsUrl.replaceAll('{name}', encodeURIComponent(live[i % live.length]!)),
            fetchSegments: o.fetchSegments,
            startupTimeoutMs: Math.min(30_000, windowMs),
            signal: hardStop,
          }),
      );
      viewerRuns = viewers.map((v) => v.run(windowMs));
    }
    if (o.rtmpPlayers > 0 && live.length > 0) {
      players = new RtmpPlayers({ url: o.rtmpUrl, names: Array.from({ length: o.rtmpPlayers }, (_, i) => live[i % live.length]!), rampMs: Math.min(5000, windowMs / 4), signal: hardStop });
      void players.start();
    }
    const windowStart = performance.now();
    await sleep(windowMs, hardStop);
    const windowS = (performance.now() - windowStart) / 1000;
    o.onPhase?.('measured', { live: pool.counts().live });
    for (const v of viewers) v.stop();
    const cpuB = sampleSelf();
    const bytesB = pool.bytes();
    const ticksB = pool.ticks();
    const viewerStats = await Promise.all(viewerRuns);
    const playerStats = players?.stats();

    const publishers = pool.summary(windowS, bytesB - bytesA);
    let rtmpPlayers: PlayersSummary | undefined;
    if (playerStats) {
      rtmpPlayers = {
        players: playerStats.length,
        playing: playerStats.filter((s) => s.state === 'playing').length,
        failed: playerStats.filter((s) => s.state === 'failed').length,
        videoFrames: playerStats.reduce((a, s) => a + s.videoFrames, 0),
        fps: playerStats.reduce((a, s) => a + s.fps, 0) / Math.max(1, playerStats.filter((s) => s.videoFrames > 1).length),
        stalls: playerStats.reduce((a, s) => a + s.stalls, 0),
        stalledMs: playerStats.reduce((a, s) => a + s.stalledMs, 0),
        timestampRegressions: playerStats.reduce((a, s) => a + s.timestampRegressions, 0),
        firstVideoMs: summarize(playerStats.map((s) => s.firstVideoMs).filter((v): v is number => v !== undefined)),
        errors: errorCounts(playerStats.map((s) => s.error)),
      };
    }
    const cpuSeconds = cpuB.cpuSeconds - cpuA.cpuSeconds;
    report = {
      tool: 'tributary-loadtest',
      version: 1,
      startedAt,
      machine: machine(),
      target: {
        ...(o.protocol === 'rtmp' || o.rtmpPlayers > 0 ? { rtmp: o.rtmpUrl } : {}),
        ...(o.viewers > 0 ? { hls: o.hlsUrl } : {}),
        ...(o.protocol === 'whip' ? { whip: o.whipUrl } : {}),
      },
      media,
      durationS: Math.round(windowS * 10) / 10,
      interrupted: o.signal?.aborted ?? false,
      publishers,
      hls: viewers.length ? summarizeViewers(viewerStats) : undefined,
      rtmpPlayers,
      generator: {
        cpuSeconds,
        coreFraction: coreFraction(cpuA, cpuB),
        msPerStreamSecond: windowS >= 0.5 ? (cpuSeconds * 1000) / Math.max(1, publishers.live) / windowS : Number.NaN,
        rssBytes: usage(process.pid).rssBytes || process.memoryUsage().rss,
        nice: getPriority(),
        ticks: ticksB.ticks - ticksA.ticks,
        lateTicks: ticksB.late - ticksA.late,
      },
    };
  } finally {
    phase = 'closing';
    o.onPhase?.('closing');
    clearInterval(progress);
    for (const v of viewers) v.stop();
    await Promise.race([Promise.all([players?.close(), pool.close()]), sleep(15_000)]);
    feed.stop();
  }
  return report!;
}
