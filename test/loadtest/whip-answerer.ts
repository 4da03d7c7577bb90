/**
 * A minimal WHIP endpoint (RFC 9725) with werift as the receiving peer, to test the WHIP publishers' side
 * of the protocol on its own: POST offer -> 201 + answer + Location; DELETE ends it.
 * It counts what arrives per session: RTP packets per kind, H.264 frames (marker bits) and IDRs.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { RTCPeerConnection, type RtpPacket } from 'werift';
import { loopbackCandidatesOnly, loopbackPeerConfig } from '../../loadtest/whip-publisher.ts';

export interface Received {
  videoPackets: number;
  audioPackets: number;
  videoFrames: number;
  idrs: number;
  /** The NAL type that began the first video frame (7 = SPS, as before an IDR). */
  firstNalType: number | undefined;
  deleted: boolean;
}

export interface WhipAnswerer {
  readonly url: string;
  readonly sessions: Map<string, Received>;
  close(): Promise<void>;
}

function nalTypes(p: RtpPacket): number[] {
  const b = p.payload;
  const t = (b[0] ?? 0) & 0x1f;
  if (t === 28) return (b[1] ?? 0) & 0x80 ? [(b[1] ?? 0) & 0x1f] : [];
  if (t === 24) {
    const out: number[] = [];
    for (let i = 1; i + 2 < b.length; ) {
      const len = b.readUInt16BE(i);
      out.push((b[i + 2] ?? 0) & 0x1f);
      i += 2 + len;
    }
    return out;
  }
  return [t];
}

export async function startWhipAnswerer(): Promise<WhipAnswerer> {
  const sessions = new Map<string, Received>();
  const peers = new Map<string, RTCPeerConnection>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      void (async () => {
        const m = /^\/whip\/live\/([^/]+)(?:\/([^/]+))?$/.exec(req.url ?? '');
        if (!m) return void res.writeHead(404).end();
        if (req.method === 'DELETE' && m[2]) {
          const pc = peers.get(m[2]);
          const rec = sessions.get(m[2]);
          if (!pc || !rec) return void res.writeHead(404).end();
          rec.deleted = true;
          peers.delete(m[2]);
          await pc.close();
          return void res.writeHead(200).end();
        }
        if (req.method !== 'POST' || m[2]) return void res.writeHead(405).end();
        if (req.headers['content-type'] !== 'application/sdp') return void res.writeHead(415).end();
        const id = randomUUID();
        const rec: Received = { videoPackets: 0, audioPackets: 0, videoFrames: 0, idrs: 0, firstNalType: undefined, deleted: false };
        const pc = new RTCPeerConnection(loopbackPeerConfig());
        let frameStart = true;
        pc.onTrack.subscribe((track) => {
          track.onReceiveRtp.subscribe((p) => {
            if (track.kind === 'audio') return void rec.audioPackets++;
            rec.videoPackets++;
            const types = nalTypes(p);
            if (frameStart) rec.firstNalType ??= types[0];
            if (types.includes(5)) rec.idrs++;
            frameStart = p.header.marker;
            if (p.header.marker) rec.videoFrames++;
          });
        });
        await pc.setRemoteDescription({ type: 'offer', sdp: Buffer.concat(chunks).toString() });
        for (const t of pc.getTransceivers()) t.setDirection('recvonly');
        await pc.setLocalDescription(await pc.createAnswer());
        sessions.set(id, rec);
        peers.set(id, pc);
        res.writeHead(201, { 'content-type': 'application/sdp', location: `/whip/live/${m[1]}/${id}` }).end(loopbackCandidatesOnly(pc.localDescription!.sdp));
      })().catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/whip/live/{name}`,
    sessions,
    async close() {
      await Promise.all([...peers.values()].map((pc) => pc.close().catch(() => undefined)));
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
