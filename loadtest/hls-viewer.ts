/**
 * HLS viewers that behave like a live player: reload the media playlist (every half target duration),
 * start three segments from the live edge, fetch each new segment in order, and play it out on a
 * simulated playhead. Each viewer reports freshness and errors:
 *
 * - lateness: when a segment was ready (downloaded, or listed when segments are not fetched) against
 *   when it should have been given the media durations, relative to the best case seen in the run;
 *   a segment is on time when that lateness is at most one target duration;
 * - age: ready time minus the segment's EXT-X-PROGRAM-DATE-TIME end, where the server writes one;
 * - stalls: the playhead reached the end of what was downloaded (a player would rebuffer);
 * - playlist stalls: no new segment for three target durations;
 * - sequence gaps: media sequence numbers that went by without ever being listed to us;
 * - errors: failed or timed-out playlist and segment requests, and playlists that do not parse.
 */
import { parseMediaPlaylist, type MediaPlaylist } from '../codecs/m3u8.ts';
import { Reservoir, round, summarize, type Summary } from './stats.ts';

export interface HlsViewerOptions {
  url: string;
  /** Download segments as a player does; false only watches the playlist. */
  fetchSegments?: boolean;
  /** Segments from the live edge at which playback starts. Default 3. */
  startSegments?: number;
  /** Reload interval as a fraction of the target duration. Default 0.5. */
  pollFactor?: number;
  /** How long a missing playlist (404 before the stream starts) is retried. Default 30 s. */
  startupTimeoutMs?: number;
  /** Upper bound on any one request. Default 10 s. */
  requestTimeoutMs?: number;
  signal?: AbortSignal;
  /** Injected clock and fetch, for tests. */
  now?: () => number;
  fetch?: typeof fetch;
}

export interface HlsViewerStats {
  url: string;
  state: 'starting' | 'playing' | 'ended' | 'failed' | 'stopped';
  firstSegmentMs: number | undefined;
  segments: number;
  bytes: number;
  onTime: number;
  late: number;
  sequenceGaps: number;
  sequenceResets: number;
  discontinuities: number;
  stalls: number;
  stalledMs: number;
  playlistStalls: number;
  playlistErrors: number;
  segmentErrors: number;
  parseErrors: number;
  /** Lateness of each segment in ms (see above). */
  latenessMs: number[];
  /** Age of each segment at ready time in ms, from PROGRAM-DATE-TIME. */
  ageMs: number[];
  downloadMs: number[];
  lastError: string | undefined;
}

interface Ready {
  at: number;
  /** Listed before we started watching (the first playlist's back segments): not timed. */
  history: boolean;
  /** Media time (ms) at the segment's end, within its epoch. */
  mediaEnd: number;
  epoch: number;
}

export class HlsViewer {
  readonly opts: HlsViewerOptions;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  readonly #stop = new AbortController();
  readonly #ready: Ready[] = [];
  readonly #s: HlsViewerStats;
  #lastSeq = -1;
  #epoch = 0;
  #mediaMs = 0;
  #lastNewAt = 0;
  #target = 2;
  #inPlaylistStall = false;
  // The simulated playhead.
  #playing = false;
  #pos = 0;
  #posAt = 0;
  #buffered = 0;
  #startNeed = 1;
  #t0 = 0;

  constructor(opts: HlsViewerOptions) {
    this.opts = opts;
    this.#now = opts.now ?? (() => performance.now());
    this.#fetch = opts.fetch ?? fetch;
    this.#s = {
      url: opts.url,
      state: 'starting',
      firstSegmentMs: undefined,
      segments: 0,
      bytes: 0,
      onTime: 0,
      late: 0,
      sequenceGaps: 0,
      sequenceResets: 0,
      discontinuities: 0,
      stalls: 0,
      stalledMs: 0,
      playlistStalls: 0,
      playlistErrors: 0,
      segmentErrors: 0,
      parseErrors: 0,
      latenessMs: [],
      ageMs: [],
      downloadMs: [],
      lastError: undefined,
    };
    if (opts.signal?.aborted) this.#stop.abort();
    opts.signal?.addEventListener('abort', () => this.#stop.abort(), { once: true });
  }

  /** Runs until stop(), the signal, ENDLIST, or `maxMs`; every wait and request is bounded. */
  async run(maxMs: number): Promise<HlsViewerStats> {
    this.#t0 = this.#now();
    const deadline = this.#t0 + maxMs;
    const startupDeadline = this.#t0 + (this.opts.startupTimeoutMs ?? 30_000);
    const factor = this.opts.pollFactor ?? 0.5;
    for (let polls = 0; polls < 1_000_000 && !this.#stop.signal.aborted && this.#now() < deadline; polls++) {
      const pl = await this.#loadPlaylist();
      if (this.#stop.signal.aborted) break;
      if (pl === undefined) {
        if (this.#s.state === 'starting' && this.#now() > startupDeadline) {
          this.#s.state = 'failed';
          this.#s.lastError ??= 'no playlist before the startup deadline';
          break;
        }
      } else {
        this.#target = pl.targetDuration;
        await this.#onPlaylist(pl);
        if (pl.endList) {
          this.#s.state = 'ended';
          break;
        }
      }
      this.#checkPlaylistStall();
      const wait = Math.max(100, Math.min(5000, this.#target * 1000 * factor));
      await this.#sleep(Math.min(wait, deadline - this.#now()));
    }
    this.#finish();
    return this.stats();
  }

  stop(): void {
    this.#stop.abort();
  }

  #sleep(ms: number): Promise<void> {
    const signal = this.#stop.signal;
    if (ms <= 0 || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  #request(url: string): Promise<Response> {
    const timeout = AbortSignal.timeout(this.opts.requestTimeoutMs ?? 10_000);
    return this.#fetch(url, { signal: AbortSignal.any([this.#stop.signal, timeout]) });
  }

  async #loadPlaylist(): Promise<MediaPlaylist | undefined> {
    let text: string;
    try {
      const res = await this.#request(this.opts.url);
      text = await res.text();
      if (res.status !== 200) {
        // Before the first segment a 404 is the stream not being there yet, not an error.
        if (this.#s.state !== 'starting' || res.status !== 404) this.#error('playlist', `HTTP ${res.status}`);
        return undefined;
      }
    } catch (err) {
      if (!this.#stop.signal.aborted) this.#error('playlist', (err as Error).message);
      return undefined;
    }
    try {
      return parseMediaPlaylist(text);
    } catch (err) {
      this.#s.parseErrors++;
      this.#s.lastError = (err as Error).message;
      return undefined;
    }
  }

  #error(kind: 'playlist' | 'segment', message: string): void {
    if (kind === 'playlist') this.#s.playlistErrors++;
    else this.#s.segmentErrors++;
    this.#s.lastError = `${kind}: ${message}`;
  }

  async #onPlaylist(pl: MediaPlaylist): Promise<void> {
    const segs = pl.segments;
    if (segs.length === 0) return;
    const last = segs[segs.length - 1]!.sequence;
    let fresh = segs;
    if (this.#lastSeq < 0) {
      fresh = segs.slice(Math.max(0, segs.length - (this.opts.startSegments ?? 3)));
      this.#startNeed = fresh.length;
    } else if (last < this.#lastSeq) {
      // The playlist went back: the server restarted the stream. A new timeline starts.
      this.#s.sequenceResets++;
      this.#newEpoch(true);
      fresh = segs.slice(Math.max(0, segs.length - 1));
    } else {
      fresh = segs.filter((s) => s.sequence > this.#lastSeq);
      const first = fresh[0];
      if (first && first.sequence > this.#lastSeq + 1) {
        const missed = first.sequence - this.#lastSeq - 1;
        this.#s.sequenceGaps += missed;
        // How much media went by is unknown: lateness is timed afresh from here (the gap itself counts as late).
        this.#newEpoch(false);
      }
    }
    if (fresh.length === 0) return;
    this.#lastNewAt = this.#now();
    this.#inPlaylistStall = false;
    const historyUntil = this.#startNeed > 1 && this.#s.segments === 0 ? fresh[fresh.length - 1]!.sequence : -1;
    for (const seg of fresh) {
      if (this.#stop.signal.aborted) return;
      this.#lastSeq = seg.sequence;
      if (seg.discontinuity && this.#s.segments > 0) {
        this.#s.discontinuities++;
        this.#newEpoch(false);
      }
      let ok = true;
      if (this.opts.fetchSegments !== false) ok = await this.#fetchSegment(new URL(seg.uri, this.opts.url).href, pl.targetDuration);
      this.#mediaMs += seg.duration * 1000;
      if (!ok) continue;
      const at = this.#now();
      this.#ready.push({ at, mediaEnd: this.#mediaMs, epoch: this.#epoch, history: seg.sequence < historyUntil });
      if (seg.programDateTime) this.#s.ageMs.push(round(Date.now() - (seg.programDateTime.getTime() + seg.duration * 1000), 0));
      this.#s.segments++;
      this.#s.firstSegmentMs ??= at - this.#t0;
      this.#s.state = 'playing';
      this.#advancePlayhead(at, seg.duration * 1000);
    }
  }

  async #fetchSegment(url: string, targetDuration: number): Promise<boolean> {
    const t = this.#now();
    try {
      const timeout = AbortSignal.timeout(Math.max(2000, targetDuration * 2000));
      const res = await this.#fetch(url, { signal: AbortSignal.any([this.#stop.signal, timeout]) });
      let n = 0;
      if (res.body) for await (const chunk of res.body) n += (chunk as Uint8Array).length;
      const declared = Number(res.headers.get('content-length') ?? n);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      if (n !== declared) throw new Error(`short body: ${n} of ${declared} bytes`);
      if (n === 0) throw new Error('empty segment');
      this.#s.bytes += n;
      this.#s.downloadMs.push(round(this.#now() - t, 1));
      return true;
    } catch (err) {
      if (!this.#stop.signal.aborted) this.#error('segment', (err as Error).message);
      return false;
    }
  }

  /** A new timeline for lateness; on a restart (`reload`) playback starts over too, as a player reloads. */
  #newEpoch(reload: boolean): void {
    this.#epoch++;
    this.#mediaMs = 0;
    if (!reload) return;
    if (this.#playing) this.#settleStall(this.#now());
    this.#playing = false;
    this.#buffered = 0;
    this.#pos = 0;
    this.#startNeed = 1;
  }

  /**
   * The playhead: starts once startSegments target durations are buffered (as hls.js keeps three target
   * durations behind the live edge), advances in real time, and stalls when it runs dry.
   */
  #advancePlayhead(at: number, durationMs: number): void {
    this.#buffered += durationMs;
    if (this.#playing) return this.#settleStall(at, durationMs);
    if (this.#buffered >= (this.opts.startSegments ?? 3) * this.#target * 1000 * 0.9) {
      this.#playing = true;
      this.#pos = 0;
      this.#posAt = at;
    }
  }

  /**
   * Moves the playhead to `at`. If it ran past what was buffered before the segment that just arrived
   * (`justAdded` ms of it), playback stalled from that moment until `at`.
   */
  #settleStall(at: number, justAdded = 0): void {
    const before = this.#buffered - justAdded;
    const pos = this.#pos + (at - this.#posAt);
    if (pos > before) {
      this.#s.stalls++;
      this.#s.stalledMs += pos - before;
      this.#pos = before;
    } else this.#pos = pos;
    this.#posAt = at;
  }

  #checkPlaylistStall(): void {
    if (this.#lastNewAt === 0 || this.#inPlaylistStall) return;
    if (this.#now() - this.#lastNewAt > 3 * this.#target * 1000) {
      this.#s.playlistStalls++;
      this.#inPlaylistStall = true;
    }
  }

  #finish(): void {
    if (this.#s.state === 'starting' || this.#s.state === 'playing') this.#s.state = this.#s.state === 'starting' && this.#s.segments === 0 ? 'failed' : 'stopped';
    if (this.#s.state === 'failed') this.#s.lastError ??= 'no segment';
    if (this.#playing) this.#settleStall(this.#now());
    this.#checkPlaylistStall();
    // Lateness against the best case of each epoch.
    const tolerance = this.#target * 1000;
    const timed = this.#ready.filter((r) => !r.history);
    const best = new Map<number, number>();
    for (const r of timed) best.set(r.epoch, Math.min(best.get(r.epoch) ?? Infinity, r.at - r.mediaEnd));
    this.#s.latenessMs = timed.map((r) => round(r.at - r.mediaEnd - best.get(r.epoch)!, 0));
    this.#s.onTime = this.#s.latenessMs.filter((l) => l <= tolerance).length;
    this.#s.late = this.#s.latenessMs.length - this.#s.onTime;
  }

  stats(): HlsViewerStats {
    return { ...this.#s };
  }
}

export interface HlsSummary {
  viewers: number;
  failed: number;
  segments: number;
  bytes: number;
  /** Segments on time / (timed segments + sequence gaps + failed segment downloads); the first playlist's back segments are not timed. */
  onTimeRate: number | undefined;
  stalls: number;
  stalledMs: number;
  playlistStalls: number;
  sequenceGaps: number;
  sequenceResets: number;
  playlistErrors: number;
  segmentErrors: number;
  parseErrors: number;
  firstSegmentMs: Summary | undefined;
  latenessMs: Summary | undefined;
  ageMs: Summary | undefined;
  downloadMs: Summary | undefined;
  errors: string[];
}

export function summarizeViewers(all: readonly HlsViewerStats[]): HlsSummary {
  const sum = (f: (s: HlsViewerStats) => number): number => all.reduce((a, s) => a + f(s), 0);
  const lateness = new Reservoir();
  const age = new Reservoir();
  const dl = new Reservoir();
  for (const s of all) {
    for (const v of s.latenessMs) lateness.add(v);
    for (const v of s.ageMs) age.add(v);
    for (const v of s.downloadMs) dl.add(v);
  }
  const onTime = sum((s) => s.onTime);
  const expected = sum((s) => s.onTime + s.late + s.sequenceGaps + s.segmentErrors);
  const errors = [...new Set(all.map((s) => s.lastError).filter((e): e is string => !!e))].slice(0, 10);
  return {
    viewers: all.length,
    failed: all.filter((s) => s.state === 'failed').length,
    segments: sum((s) => s.segments),
    bytes: sum((s) => s.bytes),
    onTimeRate: expected > 0 ? onTime / expected : undefined,
    stalls: sum((s) => s.stalls),
    stalledMs: sum((s) => s.stalledMs),
    playlistStalls: sum((s) => s.playlistStalls),
    sequenceGaps: sum((s) => s.sequenceGaps),
    sequenceResets: sum((s) => s.sequenceResets),
    playlistErrors: sum((s) => s.playlistErrors),
    segmentErrors: sum((s) => s.segmentErrors),
    parseErrors: sum((s) => s.parseErrors),
    firstSegmentMs: summarize(all.map((s) => s.firstSegmentMs).filter((v): v is number => v !== undefined)),
    latenessMs: summarize(lateness.values),
    ageMs: summarize(age.values),
    downloadMs: summarize(dl.values),
    errors,
  };
}
