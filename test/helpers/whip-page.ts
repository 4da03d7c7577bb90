/** The publishing side of WHIP in a Chromium page: a sendonly peer with H.264 preferred, and its stats. */
import type { Page } from 'playwright-core';

export interface PublishResult {
  status: number;
  location: string | null;
  etag: string | null;
  error?: string;
}

/** Runs in the page: a sendonly peer, H.264 preferred, non-trickle offer POSTed to `url`. */
export async function publish(page: Page, url: string, token: string): Promise<PublishResult> {
  return page.evaluate(
    async ({ url, token }) => {
      // Browser code: the project compiles without the DOM lib, so the page's globals are untyped here.
      const w = globalThis as any;
      const ms = await w.navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720, frameRate: 30 }, audio: true });
      const pc = new w.RTCPeerConnection();
      w.pc = pc;
      w.ms = ms;
      for (const t of ms.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
      const caps: { mimeType: string; sdpFmtpLine?: string }[] = w.RTCRtpSender.getCapabilities('video').codecs;
      const h264 = caps.filter((c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine ?? ''));
      const vt = pc.getTransceivers().find((t: any) => t.sender.track?.kind === 'video');
      vt.setCodecPreferences([...h264, ...caps.filter((c) => !h264.includes(c))]);
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise<void>((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        const timer = setTimeout(resolve, 3000);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const r = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const body = await r.text();
      if (r.status !== 201) return { status: r.status, location: null, etag: null, error: body };
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
      await new Promise<void>((resolve, reject) => {
        if (pc.connectionState === 'connected') return resolve();
        const timer = setTimeout(() => reject(new Error(`not connected: ${pc.connectionState}`)), 10000);
        pc.addEventListener('connectionstatechange', () => {
          if (pc.connectionState === 'connected') {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      return { status: r.status, location: r.headers.get('location'), etag: r.headers.get('etag') };
    },
    { url, token },
  );
}

export interface OutboundStats {
  framesEncoded: number;
  frameWidth: number;
  frameHeight: number;
  audioPackets: number;
}

export async function outbound(page: Page): Promise<OutboundStats> {
  return page.evaluate(async () => {
    const pc = (globalThis as any).pc;
    const out = { framesEncoded: 0, frameWidth: 0, frameHeight: 0, audioPackets: 0 };
    (await pc.getStats()).forEach((s: Record<string, unknown>) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'video') {
        out.framesEncoded = Number(s.framesEncoded ?? 0);
        out.frameWidth = Number(s.frameWidth ?? 0);
        out.frameHeight = Number(s.frameHeight ?? 0);
      } else {
        out.audioPackets = Number(s.packetsSent ?? 0);
      }
    });
    return out;
  });
}
