/**
 * One WHIP publishing session: its peer (from an engine), its Stream, its deadlines (ICE+DTLS
 * must complete within connectMs; no media for idleMs ends it), and its single close path, which
 * cascades to the peer and the stream and writes the session's end line.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Stream } from '../../sessions/stream.ts';
import type { IngestPeer, IngestPeerStats, RemoteCandidate, WebRtcEngine } from './engine.ts';
import type { CheckedOffer } from './sdp.ts';

export interface WhipDeadlines {
  /** ICE and DTLS must complete within this many ms of the offer. */
  readonly connectMs: number;
  /** No RTP for this many ms ends the session. */
  readonly idleMs: number;
}

export interface WhipSessionParams {
  readonly id: string;
  readonly stream: Stream;
  readonly offer: CheckedOffer;
  /** The Bearer token the session was published with, if any. */
  readonly key: string | undefined;
  readonly remoteAddress: string;
  readonly engine: WebRtcEngine;
  readonly log: Logger;
  readonly deadlines: WhipDeadlines;
  readonly onDeadline?: (kind: 'handshake' | 'idle') => void;
  /** Called once when the session has ended (peer closed). */
  readonly onEnd: (session: WhipSession, reason: string) => void;
}

export function newSessionId(): string {
  return randomBytes(18).toString('base64url');
}

export class WhipSession {
  readonly id: string;
  readonly stream: Stream;
  readonly offer: CheckedOffer;
  readonly key: string | undefined;
  readonly remoteAddress: string;
  readonly startedAt = performance.now();
  /** Changes on every ICE restart; this gateway does not do restarts, so it stays. */
  readonly etag = `"${randomBytes(9).toString('base64url')}"`;
  readonly #p: WhipSessionParams;
  readonly #log: Logger;
  #peer: IngestPeer | undefined;
  #handshakeTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #connectedAt: number | undefined;
  #closeReason: string | undefined;
  #closing: Promise<void> | undefined;

  private constructor(p: WhipSessionParams) {
    this.#p = p;
    this.id = p.id;
    this.stream = p.stream;
    this.offer = p.offer;
    this.key = p.key;
    this.remoteAddress = p.remoteAddress;
    this.#log = p.log;
  }

  /**
   * Opens the peer and starts the handshake deadline. Resolves once the answer is ready; rejects
   * (with the engine's error, the peer closed) if the engine refuses the offer or the session was
   * closed meanwhile.
   */
  static async open(p: WhipSessionParams): Promise<WhipSession> {
    const s = new WhipSession(p);
    s.#handshakeTimer = setTimeout(() => {
      p.onDeadline?.('handshake');
      void s.close(`handshake deadline: ICE and DTLS not complete within ${p.deadlines.connectMs} ms`);
    }, p.deadlines.connectMs);
    let peer: IngestPeer;
    try {
      peer = await p.engine.open(
        p.offer,
        {
          track: (t) => p.stream.setTrack(t),
          frame: (f) => p.stream.push(f),
          received: (bytes) => {
            p.stream.bytesIn += bytes;
          },
          connected: () => s.#connected(),
          closed: (reason) => void s.close(reason),
        },
        p.log,
      );
    } catch (err) {
      clearTimeout(s.#handshakeTimer);
      s.#closeReason ??= 'negotiation failed';
      throw err;
    }
    s.#peer = peer;
    if (s.#closeReason !== undefined) {
      // Closed (takeover, shutdown, deadline) while the answer was being made.
      await s.close(s.#closeReason);
      throw new SessionClosedError(s.#closeReason);
    }
    return s;
  }

  get answer(): string {
    return this.#peer?.answer ?? '';
  }

  get closed(): boolean {
    return this.#closeReason !== undefined;
  }

  get connected(): boolean {
    return this.#connectedAt !== undefined;
  }

  peerStats(): IngestPeerStats | undefined {
    return this.#peer?.stats();
  }

  addRemoteCandidates(c: readonly RemoteCandidate[]): Promise<void> {
    if (!this.#peer || this.closed) return Promise.resolve();
    return this.#peer.addRemoteCandidates(c);
  }

  #connected(): void {
    if (this.closed || this.#connectedAt !== undefined) return;
    this.#connectedAt = performance.now();
    clearTimeout(this.#handshakeTimer);
    this.#log.debug({ ms: Math.round(this.#connectedAt - this.startedAt) }, 'whip: connected');
    this.#armIdle(this.#p.deadlines.idleMs);
  }

  #armIdle(ms: number): void {
    this.#idleTimer = setTimeout(() => {
      const last = Math.max(this.#peer?.lastMediaAt ?? 0, this.#connectedAt ?? 0);
      const idle = performance.now() - last;
      const limit = this.#p.deadlines.idleMs;
      if (idle >= limit) {
        this.#p.onDeadline?.('idle');
        void this.close(`idle deadline: no media for ${limit} ms`);
      } else {
        this.#armIdle(limit - idle);
      }
    }, Math.max(1, Math.ceil(ms)));
  }

  /** Ends the session: deadlines, peer, stream; logs the end line. Idempotent; resolves when the peer is closed. */
  close(reason: string): Promise<void> {
    if (this.#closing) return this.#closing;
    if (!this.#peer) {
      // Still negotiating: open() sees the reason and closes once the peer exists.
      this.#closeReason ??= reason;
      clearTimeout(this.#handshakeTimer);
      return Promise.resolve();
    }
    this.#closeReason ??= reason;
    const peer = this.#peer;
    this.#closing = (async () => {
      clearTimeout(this.#handshakeTimer);
      clearTimeout(this.#idleTimer);
      this.stream.end(this.#closeReason!);
      await peer.close();
      const stats = peer.stats();
      this.#log.info(
        {
          reason: this.#closeReason,
          durationMs: Math.round(performance.now() - this.startedAt),
          connected: this.#connectedAt !== undefined,
          frames: this.stream.framesIn,
          bytes: stats.bytes,
          packets: stats.packets,
          lostPackets: stats.lostPackets,
          droppedFrames: stats.droppedFrames,
          keyframeRequests: stats.keyframeRequests,
          sync: stats.sync,
        },
        'whip session ended',
      );
      this.#p.onEnd(this, this.#closeReason!);
    })();
    return this.#closing;
  }
}

export class SessionClosedError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'SessionClosedError';
  }
}
