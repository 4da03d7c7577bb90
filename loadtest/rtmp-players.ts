/**
 * N RTMP players: each plays one stream, counts what arrives and notices when it stops arriving
 * (a stall: no video for longer than stallMs) or goes back in time.
 */
import { MessageType, type RtmpMessage } from '../codecs/rtmp/chunks.ts';
import { RtmpClient, parseRtmpUrl, type RtmpTarget } from './rtmp-client.ts';
import { ramp } from './ramp.ts';

export interface PlayerStats {
  name: string;
  state: 'connecting' | 'playing' | 'failed' | 'closed';
  connectMs: number | undefined;
  firstVideoMs: number | undefined;
  videoFrames: number;
  audioFrames: number;
  bytes: number;
  stalls: number;
  stalledMs: number;
  timestampRegressions: number;
  /** Video frames per second between the first and the last frame received. */
  fps: number;
  error: string | undefined;
}

class Player {
  readonly target: RtmpTarget;
  readonly s: PlayerStats;
  client: RtmpClient | undefined;
  #t0 = 0;
  #lastVideoAt = 0;
  #firstVideoAt = 0;
  #lastVideoTs = -1;
  #stallStart = 0;

  constructor(target: RtmpTarget) {
    this.target = target;
    this.s = {
      name: target.name,
      state: 'connecting',
      connectMs: undefined,
      firstVideoMs: undefined,
      videoFrames: 0,
      audioFrames: 0,
      bytes: 0,
      stalls: 0,
      stalledMs: 0,
      timestampRegressions: 0,
      fps: 0,
      error: undefined,
    };
  }

  async connect(timeoutMs: number): Promise<void> {
    this.#t0 = performance.now();
    try {
      this.client = await RtmpClient.open(this.target, 'play', { timeoutMs, onMedia: (m) => this.#onMedia(m) });
    } catch (err) {
      this.s.state = 'failed';
      this.s.error = (err as Error).message;
      return;
    }
    this.s.connectMs = performance.now() - this.#t0;
    if (this.s.state !== 'connecting') return this.client.destroy('closed');
    this.s.state = 'playing';
    void this.client.closed.then((reason) => {
      if (this.s.state === 'closed') return;
      this.s.state = 'failed';
      this.s.error = reason;
    });
  }

  #onMedia(m: RtmpMessage): void {
    this.s.bytes += m.payload.length;
    if (m.type === MessageType.Audio) {
      if (m.payload.length > 1 && m.payload[1] === 1) this.s.audioFrames++;
      return;
    }
    if (m.type !== MessageType.Video || m.payload.length < 2 || m.payload[1] !== 1) return;
    const now = performance.now();
    this.s.videoFrames++;
    if (this.#firstVideoAt === 0) {
      this.#firstVideoAt = now;
      this.s.firstVideoMs = now - this.#t0;
    }
    if (this.#stallStart > 0) {
      this.s.stalledMs += now - this.#stallStart;
      this.#stallStart = 0;
    }
    this.#lastVideoAt = now;
    if (now > this.#firstVideoAt) this.s.fps = (this.s.videoFrames - 1) / ((now - this.#firstVideoAt) / 1000);
    if (this.#lastVideoTs >= 0 && m.timestamp < this.#lastVideoTs) this.s.timestampRegressions++;
    this.#lastVideoTs = m.timestamp;
  }

  /** Called every second: opens a stall when video stopped arriving. */
  check(now: number, stallMs: number): void {
    if (this.s.state !== 'playing' || this.#lastVideoAt === 0 || this.#stallStart > 0) return;
    if (now - this.#lastVideoAt > stallMs) {
      this.s.stalls++;
      this.#stallStart = this.#lastVideoAt + stallMs;
    }
  }

  async close(): Promise<void> {
    if (this.#stallStart > 0) this.s.stalledMs += performance.now() - this.#stallStart;
    this.#stallStart = 0;
    const was = this.s.state;
    this.s.state = 'closed';
    if (was !== 'failed') await this.client?.close();
  }
}

export interface RtmpPlayersOptions {
  url: string;
  /** One name per player (names may repeat: several players on one stream). */
  names: readonly string[];
  rampMs: number;
  stallMs?: number;
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

export class RtmpPlayers {
  readonly #players: Player[];
  readonly #opts: RtmpPlayersOptions;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: RtmpPlayersOptions) {
    this.#opts = opts;
    this.#players = opts.names.map((n) => new Player(parseRtmpUrl(opts.url, n)));
  }

  async start(): Promise<void> {
    this.#timer = setInterval(() => {
      const now = performance.now();
      for (const p of this.#players) p.check(now, this.#opts.stallMs ?? 2000);
    }, 500);
    await ramp(this.#players, this.#opts.rampMs, (p) => p.connect(this.#opts.connectTimeoutMs ?? 10_000), this.#opts.signal);
  }

  stats(): PlayerStats[] {
    return this.#players.map((p) => ({ ...p.s }));
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all(this.#players.map((p) => p.close()));
  }
}
