/**
 * The werift engine: one receive-only RTCPeerConnection per publisher, negotiating only what
 * sdp.ts kept (H.264 packetization-mode 1 with NACK/RTX and PLI, Opus; no transport-cc, no REMB,
 * no header extensions), feeding RTP and sender reports into the shared RtpIngest pipeline.
 * werift answers NACKs itself (its NackHandler) and unwraps RTX; PLIs are sent from here.
 */
import type { Logger } from 'pino';
import {
  PictureLossIndication,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RtcpPayloadSpecificFeedback,
  RtcpSrPacket,
  type RTCRtpTransceiver,
  type RtcpPacket,
  type RtpPacket as WeriftRtpPacket,
} from 'werift';
import { ntpToSeconds } from '../../codecs/rtp-clock.ts';
import type { BufferPool } from '../../sessions/pool.ts';
import {
  EngineRejectedError,
  type IngestPeer,
  type IngestPeerStats,
  type IngestSink,
  type RemoteCandidate,
  type WebRtcEngine,
} from './engine.ts';
import { RtpIngest } from './rtp-ingest.ts';
import type { CheckedOffer } from './sdp.ts';

export interface IceOptions {
  /** Extra host addresses to offer as candidates (e.g. 127.0.0.1, which werift skips by default). */
  readonly additionalHostAddresses?: string[];
  /** UDP port range for ICE, [min, max]. */
  readonly portRange?: [number, number];
  /** Bind ICE to these local addresses only. */
  readonly interfaceAddresses?: { udp4?: string; udp6?: string };
  readonly useIpv6?: boolean;
}

export interface WeriftEngineOptions {
  readonly pool: BufferPool;
  readonly ice?: IceOptions;
  /** Longest time without a video keyframe before one is requested (0: only on loss). */
  readonly gopMs?: number;
  /** Longest wait for local candidate gathering before the answer goes out anyway (default 3000 ms). */
  readonly gatherTimeoutMs?: number;
  /** Tests only: drop this percentage of received UDP packets (werift's debug hook) to exercise NACK and PLI. */
  readonly simulatedLossPercent?: number;
}

function codecsFor(offer: CheckedOffer): { audio: RTCRtpCodecParameters[]; video: RTCRtpCodecParameters[] } {
  const audio: RTCRtpCodecParameters[] = [];
  const video: RTCRtpCodecParameters[] = [];
  for (const m of offer.media) {
    if (m.kind === 'audio') {
      audio.push(new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2 }));
    } else {
      video.push(
        new RTCRtpCodecParameters({
          mimeType: 'video/H264',
          clockRate: 90000,
          rtcpFeedback: [{ type: 'nack' }, { type: 'nack', parameter: 'pli' }],
        }),
      );
      if (m.rtxPayloadType !== undefined) video.push(new RTCRtpCodecParameters({ mimeType: 'video/rtx', clockRate: 90000 }));
    }
  }
  return { audio, video };
}

export class WeriftEngine implements WebRtcEngine {
  readonly name = 'werift';
  readonly #o: WeriftEngineOptions;
  #open = 0;

  constructor(opts: WeriftEngineOptions) {
    this.#o = opts;
  }

  get openPeers(): number {
    return this.#open;
  }

  async open(offer: CheckedOffer, sink: IngestSink, log: Logger): Promise<IngestPeer> {
    const ice = this.#o.ice ?? {};
    const pc = new RTCPeerConnection({
      iceServers: [],
      codecs: codecsFor(offer),
      headerExtensions: { audio: [], video: [] },
      iceUseIpv6: ice.useIpv6 ?? true,
      ...(ice.additionalHostAddresses ? { iceAdditionalHostAddresses: ice.additionalHostAddresses } : {}),
      ...(ice.portRange ? { icePortRange: ice.portRange } : {}),
      ...(ice.interfaceAddresses ? { iceInterfaceAddresses: ice.interfaceAddresses } : {}),
      // werift 0.24 keeps a packet when inboundPacketLoss/100 >= Math.random(): it is a keep percentage.
      ...(this.#o.simulatedLossPercent ? { debug: { inboundPacketLoss: 100 - this.#o.simulatedLossPercent } } : {}),
    });
    this.#open++;
    const peer = new WeriftPeer(pc, offer, sink, log, this.#o, () => this.#open--);
    try {
      await peer.negotiate(offer.sdp, this.#o.gatherTimeoutMs ?? 3000);
    } catch (err) {
      await peer.close();
      if (err instanceof EngineRejectedError) throw err;
      throw new EngineRejectedError(`werift refused the offer: ${(err as Error).message}`);
    }
    return peer;
  }
}

class WeriftPeer implements IngestPeer {
  answer = '';
  lastMediaAt = performance.now();
  readonly #pc: RTCPeerConnection;
  readonly #sink: IngestSink;
  readonly #log: Logger;
  readonly #ingest: RtpIngest;
  readonly #onClosed: () => void;
  readonly #unsubscribe: (() => void)[] = [];
  #videoTransceiver: RTCRtpTransceiver | undefined;
  #connected = false;
  #closing: Promise<void> | undefined;
  #packets = 0;
  #bytes = 0;

  constructor(pc: RTCPeerConnection, offer: CheckedOffer, sink: IngestSink, log: Logger, o: WeriftEngineOptions, onClosed: () => void) {
    this.#pc = pc;
    this.#sink = sink;
    this.#log = log;
    this.#onClosed = onClosed;
    this.#ingest = new RtpIngest({
      pool: o.pool,
      media: offer.media,
      out: { track: (t) => sink.track(t), frame: (f) => sink.frame(f) },
      requestKeyframe: (ssrc) => this.#sendPli(ssrc),
      gopMs: o.gopMs ?? 0,
      log,
    });
    const sub = pc.connectionStateChange.subscribe((state) => {
      if (this.#closing) return;
      if (state === 'connected' && !this.#connected) {
        this.#connected = true;
        this.lastMediaAt = performance.now();
        this.#ingest.start();
        sink.connected();
      } else if (state === 'failed') {
        sink.closed('ICE/DTLS failed');
      } else if (state === 'closed') {
        sink.closed('the remote peer closed the connection');
      }
    });
    this.#unsubscribe.push(() => sub.unSubscribe());
  }

  async negotiate(sdp: string, gatherTimeoutMs: number): Promise<void> {
    const pc = this.#pc;
    await pc.setRemoteDescription({ type: 'offer', sdp });
    for (const tr of pc.getTransceivers()) this.#attach(tr);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (pc.iceGatheringState !== 'complete') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, gatherTimeoutMs);
        const sub = pc.iceGatheringStateChange.subscribe((s) => {
          if (s === 'complete') done();
        });
        function done(): void {
          clearTimeout(timer);
          sub.unSubscribe();
          resolve();
        }
      });
    }
    const local = pc.localDescription?.sdp;
    if (!local) throw new EngineRejectedError('werift produced no answer');
    this.answer = local;
  }

  #attach(tr: RTCRtpTransceiver): void {
    const kind = tr.kind === 'video' ? 'video' : tr.kind === 'audio' ? 'audio' : undefined;
    if (!kind) return;
    if (kind === 'video') this.#videoTransceiver = tr;
    for (const track of tr.receiver.tracks) {
      const rtp = track.onReceiveRtp.subscribe((p: WeriftRtpPacket) => {
        this.lastMediaAt = performance.now();
        this.#packets++;
        this.#bytes += p.payload.length;
        this.#sink.received(p.payload.length);
        const h = p.header;
        this.#ingest.rtp(kind, {
          payloadType: h.payloadType,
          sequenceNumber: h.sequenceNumber,
          timestamp: h.timestamp,
          ssrc: h.ssrc,
          marker: h.marker,
          payload: p.payload,
        });
      });
      const rtcp = track.onReceiveRtcp.subscribe((p: RtcpPacket) => {
        if (p.type !== RtcpSrPacket.type) return;
        const sr = p as RtcpSrPacket;
        this.#ingest.senderReport(kind, {
          ssrc: sr.ssrc,
          ntpSeconds: ntpToSeconds(sr.senderInfo.ntpTimestamp),
          rtpTimestamp: sr.senderInfo.rtpTimestamp,
        });
      });
      this.#unsubscribe.push(
        () => rtp.unSubscribe(),
        () => rtcp.unSubscribe(),
      );
    }
  }

  #sendPli(mediaSsrc: number): void {
    const tr = this.#videoTransceiver;
    if (!tr || !this.#connected || this.#closing) return;
    const receiver = tr.receiver;
    const packet = new RtcpPayloadSpecificFeedback({
      feedback: new PictureLossIndication({ senderSsrc: receiver.rtcpSsrc, mediaSsrc }),
    });
    receiver.dtlsTransport.sendRtcp([packet]).catch((err: unknown) => {
      this.#log.debug({ err }, 'webrtc: PLI not sent');
    });
  }

  async addRemoteCandidates(candidates: readonly RemoteCandidate[]): Promise<void> {
    for (const c of candidates) {
      await this.#pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.mid ?? null });
    }
  }

  stats(): IngestPeerStats {
    return { ...this.#ingest.stats(), packets: this.#packets, bytes: this.#bytes };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const u of this.#unsubscribe.splice(0)) u();
      this.#ingest.close();
      try {
        await this.#pc.close();
      } catch (err) {
        this.#log.warn({ err }, 'webrtc: werift close failed');
      } finally {
        this.#onClosed();
      }
    })();
    return this.#closing;
  }
}
