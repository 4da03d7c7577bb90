import test from 'ava';
import { readFileSync } from 'node:fs';
import { checkOffer, OfferRejectedError } from '../../gateway/webrtc/sdp.ts';

const OBS = readFileSync(new URL('./fixtures/obs-offer.sdp', import.meta.url), 'utf8');
const CHROME = readFileSync(new URL('./fixtures/chrome-offer.sdp', import.meta.url), 'utf8');

/** Edits an SDP line by line: drop lines matching `drop`, replace by `map`. */
function edit(sdp: string, f: (line: string) => string | undefined): string {
  return `${sdp
    .split('\r\n')
    .filter((l) => l !== '')
    .map(f)
    .filter((l): l is string => l !== undefined)
    .join('\r\n')}\r\n`;
}

function rejects(t: import('ava').ExecutionContext, sdp: string, status: 400 | 406, re: RegExp): void {
  const err = t.throws(() => checkOffer(sdp), { instanceOf: OfferRejectedError });
  t.is(err?.status, status, err?.message);
  t.regex(err?.message ?? '', re);
}

test('OBS offer: session-level ICE and fingerprint, LS group, OPUS in capitals', (t) => {
  const o = checkOffer(OBS);
  t.is(o.iceUfrag, 'Qk7v');
  t.is(o.icePwd, 'u4Hc9bVw2sTzX0pLmN8rQe');
  t.deepEqual(
    o.media.map((m) => [m.kind, m.codec, m.payloadType, m.mid, m.channels, m.rtxPayloadType]),
    [
      ['audio', 'opus', 111, '0', 2, undefined],
      ['video', 'h264', 96, '1', 1, undefined],
    ],
  );
  t.deepEqual(o.media[1]!.ssrcs, [3127550913]);
  t.regex(o.sdp, /a=group:LS 0 1/);
  t.regex(o.sdp, /a=rtpmap:111 OPUS\/48000\/2/);
  t.notRegex(o.sdp, /transport-cc|goog-remb|a=extmap/);
  t.regex(o.sdp, /a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n/);
});

test('Chrome offer: the first H.264 with packetization-mode=1 and its RTX; Opus only', (t) => {
  const o = checkOffer(CHROME);
  const [audio, video] = o.media;
  t.is(audio!.codec, 'opus');
  t.is(audio!.payloadType, 111);
  t.is(audio!.channels, 1);
  t.is(video!.codec, 'h264');
  t.regex(video!.fmtp, /packetization-mode=1/);
  t.truthy(video!.rtxPayloadType);
  t.is(video!.ssrcs.length, 2);
  const mVideo = /^m=video \d+ \S+ (.*)$/m.exec(o.sdp)![1]!.trim();
  t.is(mVideo, `${video!.payloadType} ${video!.rtxPayloadType}`);
  t.regex(o.sdp, /^m=audio \d+ \S+ 111\r$/m);
  t.notRegex(o.sdp, /VP8|VP9|AV1|red\/|ulpfec|G722|PCMU|telephone-event|transport-cc|goog-remb|ccm fir|a=extmap:/);
  t.notRegex(o.sdp, /packetization-mode=0/);
});

test('prefers the offerer\'s order among H.264 entries, any profile', (t) => {
  const o = checkOffer(
    edit(OBS, (l) =>
      l.startsWith('m=video')
        ? 'm=video 51734 UDP/TLS/RTP/SAVPF 97 96'
        : l === 'a=rtpmap:96 H264/90000'
          ? `${l}\r\na=rtpmap:97 h264/90000\r\na=fmtp:97 profile-level-id=640032;packetization-mode=1`
          : l,
    ),
  );
  t.is(o.media[1]!.payloadType, 97);
});

test('a missing a=setup is taken as actpass', (t) => {
  const o = checkOffer(edit(OBS, (l) => (l === 'a=setup:actpass' ? undefined : l)));
  t.regex(o.sdp, /a=setup:actpass/);
});

test('media-level ICE credentials and fingerprint are accepted too', (t) => {
  const sdp = edit(OBS, (l) => {
    if (/^a=(ice-ufrag|ice-pwd|fingerprint)/.test(l)) return undefined;
    if (l.startsWith('a=mid:')) return `${l}\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 AB:CD:EF`;
    return l;
  });
  t.is(checkOffer(sdp).iceUfrag, 'abcd');
});

test('rejects garbage, no media, missing ICE credentials or fingerprint, with a reason', (t) => {
  rejects(t, 'hello world', 400, /not an SDP line/);
  rejects(t, '\x00\x01\x02', 400, /not an SDP line/);
  rejects(t, '', 400, /v=0/);
  rejects(t, 'o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n', 400, /first line must be v=0/);
  rejects(t, 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n', 400, /no media sections/);
  rejects(t, edit(OBS, (l) => (l.startsWith('a=ice-pwd') ? undefined : l)), 400, /no ICE credentials/);
  rejects(t, edit(OBS, (l) => (l.startsWith('a=ice-ufrag') ? 'a=ice-ufrag:x' : l)), 400, /malformed a=ice-ufrag/);
  rejects(t, edit(OBS, (l) => (l.startsWith('a=fingerprint') ? undefined : l)), 400, /no DTLS fingerprint/);
  rejects(t, edit(OBS, (l) => (l.startsWith('m=audio') ? 'm=audio 9 RTP/AVP 111' : l)), 400, /not DTLS-SRTP/);
  rejects(t, edit(OBS, (l) => (l === 'a=rtcp-mux' ? undefined : l)), 400, /rtcp-mux/);
  rejects(t, edit(OBS, (l) => (l.startsWith('a=ssrc:') ? undefined : l)), 400, /a=ssrc/);
  rejects(t, edit(OBS, (l) => (l.startsWith('m=audio') ? 'm=audio 0 UDP/TLS/RTP/SAVPF 111' : l)), 400, /port 0/);
  rejects(t, edit(OBS, (l) => (l.startsWith('m=audio') ? 'm=audio' : l)), 400, /malformed media line/);
  rejects(t, edit(OBS, (l) => (l === 'a=mid:0' ? undefined : l)), 400, /not in the BUNDLE group/);
  rejects(t, edit(OBS, (l) => (l.startsWith('a=group:BUNDLE') ? undefined : l)), 400, /must be BUNDLEd/);
  rejects(t, edit(OBS, (l) => (l === 'a=end-of-candidates' ? 'a=candidate:xyz' : l)), 400, /malformed a=candidate/);
  rejects(t, `${OBS}a=x:${'y'.repeat(5000)}\r\n`, 400, /over 4096 characters/);
  rejects(t, 'v=0\r\n'.repeat(70_000), 400, /over 65536/);
});

test('rejects offers that do not send, or send too much', (t) => {
  rejects(t, edit(OBS, (l) => (l === 'a=sendonly' ? 'a=recvonly' : l)), 400, /direction recvonly/);
  const three = `${OBS}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n`;
  rejects(t, three, 400, /at most one audio and one video/);
  const twoVideo = edit(OBS, (l) => (l.startsWith('m=audio') ? 'm=video 51734 UDP/TLS/RTP/SAVPF 111' : l));
  rejects(t, twoVideo, 400, /more than one video/);
});

test('only unsupported codecs: 406 with what was offered', (t) => {
  const vp8 = edit(OBS, (l) =>
    l === 'a=rtpmap:96 H264/90000' ? 'a=rtpmap:96 VP8/90000' : l.startsWith('a=fmtp:96') ? undefined : l,
  );
  rejects(t, vp8, 406, /no H\.264 with packetization-mode=1 offered; offered vp8/);
  const mode0 = edit(OBS, (l) => (l.startsWith('a=fmtp:96') ? 'a=fmtp:96 profile-level-id=42e01f;packetization-mode=0' : l));
  rejects(t, mode0, 406, /only without packetization-mode=1/);
  const pcmu = edit(OBS, (l) =>
    l.startsWith('m=audio') ? 'm=audio 51734 UDP/TLS/RTP/SAVPF 0' : l.startsWith('a=rtpmap:111') ? 'a=rtpmap:0 PCMU/8000' : l.startsWith('a=fmtp:111') ? undefined : l,
  );
  rejects(t, pcmu, 406, /no Opus offered; offered pcmu/);
  const data = `${edit(OBS, (l) => (l.startsWith('a=group:BUNDLE') ? 'a=group:BUNDLE 0' : l))}`.replace(
    /m=video[\s\S]*$/,
    'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n',
  );
  rejects(t, data, 406, /only audio and video/);
  rejects(t, edit(OBS, (l) => (l === 'a=mid:1' ? `${l}\r\na=rid:h send\r\na=simulcast:send h` : l)), 406, /simulcast/);
});
