/**
 * The seam between WHIP sessions and a WebRTC implementation: an offer goes in, an answer comes
 * out, frames and tracks come out through a sink, and close() ends it. werift is the engine
 * today (werift-engine.ts); a mediasoup engine can sit beside it behind the same interface and
 * reuse the engine-independent RTP-to-frames pipeline in rtp-ingest.ts.
 */
import type { Logger } from 'pino';
import type { Frame, Track } from '../../sessions/frame.ts';
import type { CheckedOffer } from './sdp.ts';
import type { RtpIngestStats } from './rtp-ingest.ts';

/** Where an engine delivers what it receives. Calls may come at any time until close() resolves. */
export interface IngestSink {
  /** A new or changed track configuration, in order with the frames. */
  track(track: Track): void;
  /** A frame on the shared 90 kHz timeline; the sink takes over its reference. */
  frame(frame: Frame): void;
  /** RTP payload bytes received (every packet, before reordering), for the stream's byte count. */
  received(bytes: number): void;
  /** ICE and DTLS completed. */
  connected(): void;
  /** The engine lost the peer on its own (ICE failure, the remote closed DTLS). */
  closed(reason: string): void;
}

export interface RemoteCandidate {
  /** The candidate attribute value, `candidate:...`. */
  readonly candidate: string;
  readonly mid: string | undefined;
}

export interface IngestPeerStats extends RtpIngestStats {
  readonly packets: number;
  readonly bytes: number;
}

export interface IngestPeer {
  /** The SDP answer, with the engine's candidates gathered. */
  readonly answer: string;
  /** performance.now() of the last RTP packet received (or of the peer's creation). */
  readonly lastMediaAt: number;
  /** Trickled remote candidates (WHIP PATCH). */
  addRemoteCandidates(candidates: readonly RemoteCandidate[]): Promise<void>;
  stats(): IngestPeerStats;
  /** Ends the peer and releases everything it holds. Idempotent. */
  close(): Promise<void>;
}

/** The engine refused an offer that passed the gateway's own checks. */
export class EngineRejectedError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'EngineRejectedError';
  }
}

export interface WebRtcEngine {
  readonly name: string;
  /** Peers created and not yet completely closed. */
  readonly openPeers: number;
  /** A receive-only peer for a checked offer; resolves once its answer is ready. Rejects with EngineRejectedError. */
  open(offer: CheckedOffer, sink: IngestSink, log: Logger): Promise<IngestPeer>;
}
