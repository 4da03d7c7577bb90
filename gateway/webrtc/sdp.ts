/**
 * The WHIP offer, checked before any peer exists: a bounded line parser, the rules an ingest
 * offer must meet (DTLS-SRTP, ICE credentials, sending audio/video, SSRCs), codec selection
 * (H.264 packetization-mode 1 of any profile, Opus), and the reduced offer an engine is given:
 * only the chosen codecs (and the RTX of the H.264 one), feedback limited to NACK and PLI, so that
 * transport-cc and REMB are never negotiated.
 *
 * OBS quirks accepted: ICE credentials and fingerprint at session level, a=group:LS, codec names
 * in capitals (OPUS), a missing a=setup (taken as actpass).
 */

/** An offer refused: `status` is the HTTP status (400 malformed, 406 nothing acceptable), `code` a short metric label. */
export class OfferRejectedError extends Error {
  constructor(
    readonly status: 400 | 406,
    readonly code: 'sdp' | 'codec',
    reason: string,
  ) {
    super(reason);
    this.name = 'OfferRejectedError';
  }
}

export interface OfferMedia {
  readonly kind: 'audio' | 'video';
  /** Position of the m-section in the offer. */
  readonly index: number;
  readonly mid: string | undefined;
  readonly codec: 'h264' | 'opus';
  readonly payloadType: number;
  readonly clockRate: number;
  /** RTP retransmission payload type for the chosen codec, when offered. */
  readonly rtxPayloadType: number | undefined;
  /** Audio: 2 when the sender says it sends stereo (sprop-stereo=1), else 1. */
  readonly channels: number;
  readonly fmtp: string;
  readonly ssrcs: readonly number[];
}

export interface CheckedOffer {
  readonly media: readonly OfferMedia[];
  readonly iceUfrag: string;
  readonly icePwd: string;
  /** The offer reduced to what the gateway accepts; this is what the engine negotiates. */
  readonly sdp: string;
}

export const SDP_LIMITS = {
  maxBytes: 64 * 1024,
  maxLines: 4000,
  maxLineLength: 4096,
  maxSections: 2,
  maxPayloadTypes: 128,
} as const;

interface RtpMap {
  pt: number;
  name: string;
  clock: number;
  channels: number | undefined;
}

interface Section {
  index: number;
  kind: string;
  port: number;
  proto: string;
  fmts: string[];
  lines: string[];
  attrs: Map<string, string[]>;
}

const bad = (reason: string): never => {
  throw new OfferRejectedError(400, 'sdp', reason);
};
const unacceptable = (reason: string): never => {
  throw new OfferRejectedError(406, 'codec', reason);
};

const ICE_CHARS = /^[A-Za-z0-9+/]+$/;
const MID_RE = /^[A-Za-z0-9_.\-]{1,32}$/;
/** RFC 8839 5.1: foundation, component, transport, priority, address, port, typ, then anything. */
export const CANDIDATE_RE = /^candidate:[A-Za-z0-9+/]{1,32} \d{1,3} (?:udp|tcp) \d{1,10} [A-Za-z0-9.:\-]{1,253} \d{1,5} typ (?:host|srflx|prflx|relay)(?: [\x21-\x7e ]*)?$/i;

function attrsOf(lines: readonly string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of lines) {
    if (!line.startsWith('a=')) continue;
    const colon = line.indexOf(':');
    const name = (colon < 0 ? line.slice(2) : line.slice(2, colon)).trim();
    const value = colon < 0 ? '' : line.slice(colon + 1).trim();
    let list = m.get(name);
    if (!list) m.set(name, (list = []));
    list.push(value);
  }
  return m;
}

function first(attrs: Map<string, string[]>, name: string): string | undefined {
  return attrs.get(name)?.[0];
}

function fmtpParams(fmtp: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of fmtp.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    m.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return m;
}

function splitLines(text: string): string[] {
  if (text.length > SDP_LIMITS.maxBytes) bad(`offer of ${text.length} bytes is over ${SDP_LIMITS.maxBytes}`);
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length > SDP_LIMITS.maxLines) bad(`offer of ${lines.length} lines is over ${SDP_LIMITS.maxLines}`);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.length > SDP_LIMITS.maxLineLength) bad(`line ${i + 1} is over ${SDP_LIMITS.maxLineLength} characters`);
    if (!/^[a-z]=/.test(line)) bad(`line ${i + 1} is not an SDP line (type=value): ${JSON.stringify(line.slice(0, 40))}`);
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x08\x0b-\x1f\x7f]/.test(line)) bad(`line ${i + 1} holds control characters`);
  }
  return lines;
}

/**
 * Checks a WHIP offer and reduces it for the engine. Throws OfferRejectedError with the reason.
 */
export function checkOffer(text: string): CheckedOffer {
  const lines = splitLines(text);
  if (lines[0] !== 'v=0') bad('not an SDP offer: the first line must be v=0');
  const firstM = lines.findIndex((l) => l.startsWith('m='));
  if (firstM < 0) bad('offer has no media sections (m=)');
  const sessionLines = lines.slice(0, firstM);
  if (!sessionLines.some((l) => l.startsWith('o='))) bad('offer has no origin line (o=)');
  const sessionAttrs = attrsOf(sessionLines);
  const sections: Section[] = [];
  for (let i = firstM; i < lines.length; ) {
    let j = i + 1;
    while (j < lines.length && !lines[j]!.startsWith('m=')) j++;
    const mline = lines[i]!;
    const m = /^m=(\S+) (\d+)(?:\/\d+)? (\S+)((?: \S+)+)$/.exec(mline);
    if (!m) bad(`malformed media line ${JSON.stringify(mline.slice(0, 80))}`);
    const fmts = m![4]!.trim().split(' ');
    if (fmts.length > SDP_LIMITS.maxPayloadTypes) bad(`media line with ${fmts.length} formats`);
    const body = lines.slice(i + 1, j);
    sections.push({
      index: sections.length,
      kind: m![1]!,
      port: Number(m![2]),
      proto: m![3]!,
      fmts,
      lines: body,
      attrs: attrsOf(body),
    });
    i = j;
  }
  if (sections.length > SDP_LIMITS.maxSections) bad(`offer has ${sections.length} media sections; at most one audio and one video`);
  const bundle = (sessionAttrs.get('group') ?? []).map((g) => g.split(/\s+/)).find((g) => g[0] === 'BUNDLE');
  // RFC 9725 4.2: WHIP uses BUNDLE (max-bundle). werift answers an unbundled offer inconsistently, so require it.
  if (sections.length > 1 && !bundle) bad('audio and video must be BUNDLEd (a=group:BUNDLE)');

  let iceUfrag: string | undefined;
  let icePwd: string | undefined;
  const media: OfferMedia[] = [];
  const seenKinds = new Set<string>();
  for (const s of sections) {
    if (seenKinds.has(s.kind)) bad(`offer has more than one ${s.kind} section`);
    seenKinds.add(s.kind);
  }
  for (const s of sections) {
    const where = `section ${s.index} (${s.kind})`;
    if (s.kind !== 'audio' && s.kind !== 'video') unacceptable(`${where}: only audio and video are accepted`);
    if (!/^(UDP\/TLS\/RTP\/SAVPF|UDP\/TLS\/RTP\/SAVP|RTP\/SAVPF)$/.test(s.proto)) bad(`${where}: transport ${s.proto} is not DTLS-SRTP`);
    if (s.port === 0) bad(`${where}: port 0 (a disabled or bundle-only section) is not supported`);
    const ufrag = first(s.attrs, 'ice-ufrag') ?? first(sessionAttrs, 'ice-ufrag');
    const pwd = first(s.attrs, 'ice-pwd') ?? first(sessionAttrs, 'ice-pwd');
    if (!ufrag || !pwd) bad(`${where}: no ICE credentials (a=ice-ufrag and a=ice-pwd, in the section or the session)`);
    if (ufrag!.length < 4 || ufrag!.length > 256 || !ICE_CHARS.test(ufrag!)) bad(`${where}: malformed a=ice-ufrag`);
    if (pwd!.length < 22 || pwd!.length > 256 || !ICE_CHARS.test(pwd!)) bad(`${where}: malformed a=ice-pwd`);
    iceUfrag ??= ufrag;
    icePwd ??= pwd;
    const fp = first(s.attrs, 'fingerprint') ?? first(sessionAttrs, 'fingerprint');
    if (!fp) bad(`${where}: no DTLS fingerprint (a=fingerprint)`);
    if (!/^(sha-1|sha-224|sha-256|sha-384|sha-512) [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$/i.test(fp!)) bad(`${where}: malformed a=fingerprint`);
    const setup = first(s.attrs, 'setup') ?? first(sessionAttrs, 'setup');
    if (setup !== undefined && setup !== 'actpass' && setup !== 'active' && setup !== 'passive') bad(`${where}: a=setup:${setup}`);
    if (!s.attrs.has('rtcp-mux')) bad(`${where}: a=rtcp-mux is required`);
    const dirs = ['sendonly', 'sendrecv', 'recvonly', 'inactive'];
    const dir = dirs.find((d) => s.attrs.has(d)) ?? dirs.find((d) => sessionAttrs.has(d)) ?? 'sendrecv';
    if (dir !== 'sendonly' && dir !== 'sendrecv') bad(`${where}: direction ${dir}; a WHIP publisher must send`);
    if (s.attrs.has('simulcast') || s.attrs.has('rid')) unacceptable(`${where}: simulcast is not supported`);
    for (const c of s.attrs.get('candidate') ?? []) {
      if (!CANDIDATE_RE.test(`candidate:${c}`)) bad(`${where}: malformed a=candidate:${c.slice(0, 60)}`);
    }
    const mid = first(s.attrs, 'mid');
    if (mid !== undefined && !MID_RE.test(mid)) bad(`${where}: malformed a=mid`);
    if (bundle && sections.length > 1 && (mid === undefined || !bundle.includes(mid))) bad(`${where}: not in the BUNDLE group (a=mid)`);
    const ssrcs = [...new Set((s.attrs.get('ssrc') ?? []).map((v) => Number(v.split(' ')[0])))];
    if (ssrcs.length === 0 || ssrcs.some((n) => !Number.isInteger(n) || n < 0 || n > 0xffffffff)) {
      bad(`${where}: no valid a=ssrc (this engine routes media by SSRC)`);
    }

    const rtpmaps = new Map<number, RtpMap>();
    for (const v of s.attrs.get('rtpmap') ?? []) {
      const r = /^(\d{1,3}) ([A-Za-z0-9_.\-]+)\/(\d+)(?:\/(\d+))?$/.exec(v);
      if (!r) bad(`${where}: malformed a=rtpmap:${v.slice(0, 60)}`);
      const pt = Number(r![1]);
      if (pt > 127 || !s.fmts.includes(String(pt))) continue;
      rtpmaps.set(pt, { pt, name: r![2]!.toLowerCase(), clock: Number(r![3]), channels: r![4] === undefined ? undefined : Number(r![4]) });
    }
    const fmtps = new Map<number, string>();
    for (const v of s.attrs.get('fmtp') ?? []) {
      const r = /^(\d{1,3}) (.*)$/.exec(v);
      if (r) fmtps.set(Number(r[1]), r[2]!);
    }
    const offered = s.fmts.map(Number).filter((pt) => Number.isInteger(pt) && rtpmaps.has(pt));
    const names = [...new Set(offered.map((pt) => rtpmaps.get(pt)!.name))];
    let chosen: RtpMap | undefined;
    if (s.kind === 'video') {
      chosen = offered
        .map((pt) => rtpmaps.get(pt)!)
        .find((r) => r.name === 'h264' && r.clock === 90000 && fmtpParams(fmtps.get(r.pt) ?? '').get('packetization-mode') === '1');
      if (!chosen) {
        const modes = names.includes('h264') ? ' (H.264 offered only without packetization-mode=1)' : '';
        unacceptable(`${where}: no H.264 with packetization-mode=1 offered${modes}; offered ${names.join(', ') || 'nothing'}`);
      }
    } else {
      chosen = offered.map((pt) => rtpmaps.get(pt)!).find((r) => r.name === 'opus' && r.clock === 48000);
      if (!chosen) unacceptable(`${where}: no Opus offered; offered ${names.join(', ') || 'nothing'}`);
    }
    const c = chosen!;
    // werift enables NACK/PLI from the lowest payload type of a section: keep RTX only above the media type.
    const rtx = offered.find(
      (pt) => pt > c.pt && rtpmaps.get(pt)!.name === 'rtx' && fmtpParams(fmtps.get(pt) ?? '').get('apt') === String(c.pt),
    );
    const fmtp = fmtps.get(c.pt) ?? '';
    const channels = s.kind === 'audio' && fmtpParams(fmtp).get('sprop-stereo') === '1' ? 2 : 1;
    media.push({
      kind: s.kind as 'audio' | 'video',
      index: s.index,
      mid,
      codec: s.kind === 'video' ? 'h264' : 'opus',
      payloadType: c.pt,
      clockRate: c.clock,
      rtxPayloadType: rtx,
      channels,
      fmtp,
      ssrcs,
    });
  }
  return { media, iceUfrag: iceUfrag!, icePwd: icePwd!, sdp: reduce(sessionLines, sessionAttrs, sections, media) };
}

/** Feedback the gateway negotiates: NACK (with RTX when offered) and PLI. No transport-cc, no REMB. */
function keepFeedback(value: string): boolean {
  const parts = value.split(/\s+/);
  return parts[1] === 'nack' && (parts.length === 2 || parts[2] === 'pli');
}

function reduce(sessionLines: string[], sessionAttrs: Map<string, string[]>, sections: Section[], media: OfferMedia[]): string {
  const out: string[] = [...sessionLines];
  const hasSetup = sessionAttrs.has('setup') || sections.every((s) => s.attrs.has('setup'));
  if (!hasSetup) out.push('a=setup:actpass');
  for (const s of sections) {
    const m = media[s.index]!;
    const keep = new Set([m.payloadType, ...(m.rtxPayloadType === undefined ? [] : [m.rtxPayloadType])]);
    out.push(`m=${s.kind} ${s.port} ${s.proto} ${[...keep].join(' ')}`);
    for (const line of s.lines) {
      const a = /^a=(rtpmap|fmtp|rtcp-fb):(\S+)(.*)$/.exec(line);
      if (a) {
        const pt = a[2] === '*' ? -1 : Number(a[2]);
        if (pt !== -1 && !keep.has(pt)) continue;
        if (a[1] === 'rtcp-fb') {
          if (pt === -1 || pt !== m.payloadType || !keepFeedback(`${a[2]}${a[3]}`)) continue;
        }
      }
      if (line.startsWith('a=extmap:') || line.startsWith('a=extmap-allow-mixed')) continue;
      out.push(line);
    }
  }
  return `${out.join('\r\n')}\r\n`;
}
