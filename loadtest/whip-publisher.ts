/**
 * WHIP publishers without a browser (RFC 9725): werift is the sending peer. Each publisher offers one
 * sendonly H.264 and one sendonly Opus transceiver, gathers its (loopback) candidates, POSTs the offer
 * as application/sdp, expects 201 with an SDP answer and a Location, and on close DELETEs that
 * Location. Media comes from a shared RtpFeed; a sender joins at a keyframe.
 */
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, type RTCPeerConnectionConfig } from 'werift';
import type { RtpFeed, RtpSubscriber, RtpTick } from './rtp-media.ts';
import { ramp } from './ramp.ts';

/**
 * werift on loopback: no STUN, loopback addresses not skipped (TESTING.md), and only loopback candidate
 * pairs checked, so every packet stays on 127.0.0.1. max-bundle: one transport from the start (werift
 * leaves the second one's socket open when a balanced offer is bundled by the answer).
 */
export function loopbackPeerConfig(): RTCPeerConnectionConfig {
  return {
    iceServers: [],
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceUseIpv6: false,
    iceFilterCandidatePair: (pair) => pair.remoteCandidate.host === '127.0.0.1' && pair.localCandidate.host === '127.0.0.1',
    bundlePolicy: 'max-bundle',
    codecs: {
      video: [
        new RTCRtpCodecParameters({
          mimeType: 'video/H264',
          clockRate: 90_000,
          rtcpFeedback: [{ type: 'nack' }, { type: 'nack', parameter: 'pli' }],
          parameters: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
        }),
      ],
      audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48_000, channels: 2 })],
    },
  };
}

/** Drops every ICE candidate line that is not on 127.0.0.1. */
export function loopbackCandidatesOnly(sdp: string): string {
  return sdp
    .split('\r\n')
    .filter((l) => !l.startsWith('a=candidate:') || l.split(' ')[4] === '127.0.0.1')
    .join('\r\n');
}

export type WhipState = 'connecting' | 'waiting-keyframe' | 'live' | 'failed' | 'closed';

export interface WhipStats {
  name: string;
  state: WhipState;
  connectMs: number | undefined;
  packetsSent: number;
  bytesSent: number;
  error: string | undefined;
}

export interface WhipPublisherOptions {
  /** The WHIP endpoint, e.g. http://127.0.0.1:8080/whip/live/cam */
  url: string;
  token?: string;
  feed: RtpFeed;
  timeoutMs?: number;
}

export class WhipPublisher implements RtpSubscriber {
  readonly url: string;
  state: WhipState = 'connecting';
  connectMs: number | undefined;
  packetsSent = 0;
  bytesSent = 0;
  error: string | undefined;
  /** The session resource from the Location header. */
  resource: string | undefined;
  readonly #opts: WhipPublisherOptions;
  readonly #video = new MediaStreamTrack({ kind: 'video' });
  readonly #audio = new MediaStreamTrack({ kind: 'audio' });
  #pc: RTCPeerConnection | undefined;

  constructor(opts: WhipPublisherOptions) {
    this.url = opts.url;
    this.#opts = opts;
  }

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.#opts.token ? { ...extra, authorization: `Bearer ${this.#opts.token}` } : extra;
  }

  /** Negotiates and waits for the DTLS connection; on failure the state says why and nothing is left open. */
  async connect(): Promise<void> {
    const t0 = performance.now();
    const timeoutMs = this.#opts.timeoutMs ?? 15_000;
    const timeout = AbortSignal.timeout(timeoutMs);
    try {
      const pc = new RTCPeerConnection(loopbackPeerConfig());
      this.#pc = pc;
      pc.addTransceiver(this.#video, { direction: 'sendonly' });
      pc.addTransceiver(this.#audio, { direction: 'sendonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const offer = pc.localDescription && loopbackCandidatesOnly(pc.localDescription.sdp);
      if (!offer) throw new Error('no local description');
      const res = await fetch(this.url, { method: 'POST', headers: this.#headers({ 'content-type': 'application/sdp' }), body: offer, signal: timeout });
      const answer = await res.text();
      if (res.status !== 201) throw new Error(`WHIP POST answered ${res.status}: ${answer.slice(0, 200)}`);
      const type = res.headers.get('content-type') ?? '';
      if (!type.startsWith('application/sdp')) throw new Error(`WHIP answer has content-type ${JSON.stringify(type)}`);
      const location = res.headers.get('location');
      if (!location) throw new Error('WHIP answer without a Location');
      this.resource = new URL(location, this.url).href;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      let sub: { unSubscribe: () => void } | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          const check = (state: string): void => {
            if (state === 'connected') resolve();
            else if (state === 'failed' || state === 'closed') reject(new Error(`peer connection ${state}`));
          };
          sub = pc.connectionStateChange.subscribe(check);
          if (timeout.aborted) reject(new Error(`not connected within ${timeoutMs} ms`));
          timeout.addEventListener('abort', () => reject(new Error(`not connected within ${timeoutMs} ms`)), { once: true });
          check(pc.connectionState);
        });
      } finally {
        sub?.unSubscribe();
      }
    } catch (err) {
      this.error = (err as Error).message;
      if (this.state === 'connecting') this.state = 'failed';
      await this.#teardown();
      return;
    }
    this.connectMs = performance.now() - t0;
    if (this.state !== 'connecting') return this.#teardown();
    this.state = 'waiting-keyframe';
    this.#opts.feed.subscribe(this);
    this.#pc.connectionStateChange.subscribe((s) => {
      if ((s === 'failed' || s === 'closed' || s === 'disconnected') && this.state !== 'closed') {
        this.#opts.feed.unsubscribe(this);
        this.state = 'failed';
        this.error = `peer connection ${s}`;
      }
    });
  }

  onTick(tick: RtpTick): void {
    let from = 0;
    if (this.state === 'waiting-keyframe') {
      if (tick.keyframeAt < 0) return;
      from = tick.keyframeAt;
      this.state = 'live';
    }
    if (this.state !== 'live') return;
    for (let i = from; i < tick.video.length; i++) {
      this.#video.writeRtp(tick.video[i]!);
      this.bytesSent += tick.video[i]!.length;
    }
    for (const p of tick.audio) {
      this.#audio.writeRtp(p);
      this.bytesSent += p.length;
    }
    this.packetsSent += tick.video.length - from + tick.audio.length;
  }

  async #teardown(): Promise<void> {
    this.#opts.feed.unsubscribe(this);
    const pc = this.#pc;
    this.#pc = undefined;
    if (this.resource) {
      const resource = this.resource;
      this.resource = undefined;
      await fetch(resource, { method: 'DELETE', headers: this.#headers(), signal: AbortSignal.timeout(3000) }).catch(() => undefined);
    }
    await pc?.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.state !== 'failed') this.state = 'closed';
    await this.#teardown();
  }

  stats(name: string): WhipStats {
    return { name, state: this.state, connectMs: this.connectMs, packetsSent: this.packetsSent, bytesSent: this.bytesSent, error: this.error };
  }
}

export interface WhipPublishersOptions {
  /** Endpoint template with `{name}`, e.g. http://127.0.0.1:8080/whip/live/{name} */
  urlTemplate: string;
  names: readonly string[];
  feed: RtpFeed;
  rampMs: number;
  token?: string;
  signal?: AbortSignal;
}

export class WhipPublishers {
  readonly #pubs: Array<{ name: string; p: WhipPublisher }>;
  readonly #opts: WhipPublishersOptions;

  constructor(opts: WhipPublishersOptions) {
    this.#opts = opts;
    this.#pubs = opts.names.map((name) => ({
      name,
      p: new WhipPublisher({ url: opts.urlTemplate.replaceAll('{name}', encodeURIComponent(name)), feed: opts.feed, ...(opts.token ? { token: opts.token } : {}) }),
    }));
  }

  async start(): Promise<void> {
    await ramp(this.#pubs, this.#opts.rampMs, (x) => x.p.connect(), this.#opts.signal);
  }

  counts(): Record<WhipState, number> {
    const c: Record<WhipState, number> = { connecting: 0, 'waiting-keyframe': 0, live: 0, failed: 0, closed: 0 };
    for (const { p } of this.#pubs) c[p.state]++;
    return c;
  }

  packetsSent(): number {
    return this.#pubs.reduce((a, { p }) => a + p.packetsSent, 0);
  }

  bytesSent(): number {
    return this.#pubs.reduce((a, { p }) => a + p.bytesSent, 0);
  }

  stats(): WhipStats[] {
    return this.#pubs.map(({ name, p }) => p.stats(name));
  }

  async close(): Promise<void> {
    await Promise.all(this.#pubs.map(({ p }) => p.close()));
  }
}
