/**
 * HLS playlists (RFC 8216): a writer for media and master playlists, and strict parsers for both.
 * The parsers reject with CodecError('m3u8', 'line N: reason'); the writers refuse input that the parser
 * would reject, so what we write always reads back.
 */
import { CodecError } from './errors.ts';

export interface Segment {
  uri: string;
  /** Seconds. */
  duration: number;
  /** Media sequence number: the playlist's mediaSequence plus the segment's index. */
  sequence: number;
  discontinuity?: boolean;
  programDateTime?: Date;
  /** EXT-X-BYTERANGE; without an offset the range follows the previous segment's range of the same URI. */
  byteRange?: { length: number; offset?: number };
  /** An EXT-X-MAP written just before this segment; as in HLS it also applies to the segments after it. */
  map?: { uri: string };
}

export interface MediaPlaylist {
  version: number;
  targetDuration: number;
  mediaSequence: number;
  discontinuitySequence: number;
  segments: Segment[];
  endList: boolean;
  independentSegments?: boolean;
  /** EXT-X-MAP before the first segment; a segment's own map overrides it from there on. */
  map?: { uri: string };
}

export interface Variant {
  uri: string;
  bandwidth: number;
  resolution?: { width: number; height: number };
  codecs?: string;
  frameRate?: number;
}

function fail(reason: string): never {
  throw new CodecError('m3u8', reason);
}

function failAt(line: number, reason: string): never {
  throw new CodecError('m3u8', `line ${line}: ${reason}`);
}

const INTEGER = /^\d+$/;
const DECIMAL = /^\d+(?:\.\d+)?$/;
const BYTERANGE = /^(\d+)(?:@(\d+))?$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})$/;
const ATTRIBUTE_NAME = /[A-Z0-9-]+=/y;

/** A decimal-integer that fits a safe JS integer. */
function integer(value: string | undefined, line: number, tag: string): number {
  if (value === undefined || !INTEGER.test(value)) failAt(line, `${tag} value ${JSON.stringify(value ?? '')} is not a decimal integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) failAt(line, `${tag} value ${value} is too large`);
  return n;
}

interface Attribute {
  quoted: boolean;
  value: string;
}

/** An attribute list (RFC 8216 4.2): NAME=value pairs, values quoted strings or unquoted tokens. */
function attributes(value: string | undefined, line: number, tag: string): Map<string, Attribute> {
  const out = new Map<string, Attribute>();
  if (value === undefined || value === '') failAt(line, `${tag} has no attributes`);
  let i = 0;
  while (i < value.length) {
    ATTRIBUTE_NAME.lastIndex = i;
    const m = ATTRIBUTE_NAME.exec(value);
    if (!m) failAt(line, `${tag} attribute list is malformed at column ${i + 1}`);
    const name = m[0].slice(0, -1);
    i += m[0].length;
    let v: Attribute;
    if (value[i] === '"') {
      const end = value.indexOf('"', i + 1);
      if (end < 0) failAt(line, `${tag} attribute ${name} has an unterminated quoted string`);
      v = { quoted: true, value: value.slice(i + 1, end) };
      i = end + 1;
    } else {
      let end = value.indexOf(',', i);
      if (end < 0) end = value.length;
      const raw = value.slice(i, end);
      if (raw === '' || raw.includes('"')) failAt(line, `${tag} attribute ${name} has a malformed value`);
      v = { quoted: false, value: raw };
      i = end;
    }
    if (out.has(name)) failAt(line, `${tag} attribute ${name} appears twice`);
    out.set(name, v);
    if (i < value.length) {
      if (value[i] !== ',') failAt(line, `${tag} expected a comma after attribute ${name}`);
      i++;
      if (i === value.length) failAt(line, `${tag} attribute list ends with a comma`);
    }
  }
  return out;
}

function quoted(attrs: Map<string, Attribute>, name: string, line: number, tag: string): string | undefined {
  const a = attrs.get(name);
  if (a === undefined) return undefined;
  if (!a.quoted) failAt(line, `${tag} attribute ${name} must be a quoted string`);
  return a.value;
}

/** Splits into lines (LF or CRLF) and checks the #EXTM3U header. */
function linesOf(text: string): string[] {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.endsWith('\r')) lines[i] = l.slice(0, -1);
  }
  if (lines[0] !== '#EXTM3U') failAt(1, 'missing #EXTM3U on the first line');
  return lines;
}

function tagOf(line: string): { name: string; value: string | undefined } {
  const colon = line.indexOf(':');
  return colon < 0 ? { name: line.slice(1), value: undefined } : { name: line.slice(1, colon), value: line.slice(colon + 1) };
}

const MASTER_TAGS = new Set(['EXT-X-STREAM-INF', 'EXT-X-I-FRAME-STREAM-INF', 'EXT-X-MEDIA', 'EXT-X-SESSION-DATA', 'EXT-X-SESSION-KEY']);
const MEDIA_TAGS = new Set([
  'EXTINF',
  'EXT-X-TARGETDURATION',
  'EXT-X-MEDIA-SEQUENCE',
  'EXT-X-DISCONTINUITY-SEQUENCE',
  'EXT-X-BYTERANGE',
  'EXT-X-DISCONTINUITY',
  'EXT-X-PROGRAM-DATE-TIME',
  'EXT-X-MAP',
  'EXT-X-ENDLIST',
  'EXT-X-PLAYLIST-TYPE',
  'EXT-X-I-FRAMES-ONLY',
]);

// ---------------------------------------------------------------------------------------------------
// Media playlists

/**
 * Parses a media playlist strictly: #EXTM3U first; EXTINF `<decimal>,[title]` followed by a URI line;
 * EXT-X-TARGETDURATION present, an integer, and no segment duration rounding above it;
 * EXT-X-MEDIA-SEQUENCE / DISCONTINUITY-SEQUENCE integers before the first segment; EXT-X-BYTERANGE
 * `n[@o]` within safe integers, an offset-less range only after a range of the same URI, and, when
 * `resourceSizes` knows the URI, inside the resource. Encrypted playlists (EXT-X-KEY other than NONE),
 * I-frame playlists and master playlist tags are rejected; other unknown tags are ignored, as RFC 8216 asks.
 */
export function parseMediaPlaylist(text: string, opts?: { resourceSizes?: ReadonlyMap<string, number> }): MediaPlaylist {
  const lines = linesOf(text);
  let version: number | undefined;
  let targetDuration: number | undefined;
  let mediaSequence: number | undefined;
  let discontinuitySequence: number | undefined;
  let endList = false;
  let independentSegments = false;
  let playlistType = false;
  let map: { uri: string } | undefined;
  const segments: Segment[] = [];
  const extinfLines: number[] = [];
  const rangeLines: number[] = [];

  // Tags pending for the next segment.
  let extinf: { duration: number; line: number } | undefined;
  let range: { length: number; offset?: number; line: number } | undefined;
  let discontinuity = false;
  let programDateTime: Date | undefined;
  let segmentMap: { uri: string } | undefined;

  const once = (seen: unknown, line: number, tag: string) => {
    if (seen !== undefined && seen !== false) failAt(line, `${tag} appears more than once`);
  };
  const beforeSegments = (line: number, tag: string) => {
    if (segments.length > 0 || extinf !== undefined) failAt(line, `${tag} must come before the first segment`);
  };

  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const n = i + 1;
    if (line.trim() === '') continue;
    if (line.startsWith('#EXT')) {
      const { name, value } = tagOf(line);
      const noValue = () => {
        if (value !== undefined) failAt(n, `${name} takes no value`);
      };
      switch (name) {
        case 'EXTM3U':
          failAt(n, '#EXTM3U appears again');
        case 'EXT-X-VERSION':
          once(version, n, name);
          version = integer(value, n, name);
          if (version < 1) failAt(n, 'EXT-X-VERSION must be at least 1');
          break;
        case 'EXT-X-TARGETDURATION':
          once(targetDuration, n, name);
          targetDuration = integer(value, n, name);
          break;
        case 'EXT-X-MEDIA-SEQUENCE':
          once(mediaSequence, n, name);
          beforeSegments(n, name);
          mediaSequence = integer(value, n, name);
          break;
        case 'EXT-X-DISCONTINUITY-SEQUENCE':
          once(discontinuitySequence, n, name);
          beforeSegments(n, name);
          if (discontinuity || segments.some((s) => s.discontinuity)) failAt(n, `${name} must come before any EXT-X-DISCONTINUITY`);
          discontinuitySequence = integer(value, n, name);
          break;
        case 'EXT-X-ENDLIST':
          noValue();
          once(endList, n, name);
          endList = true;
          break;
        case 'EXT-X-INDEPENDENT-SEGMENTS':
          noValue();
          independentSegments = true;
          break;
        case 'EXT-X-PLAYLIST-TYPE':
          once(playlistType, n, name);
          if (value !== 'EVENT' && value !== 'VOD') failAt(n, `EXT-X-PLAYLIST-TYPE ${JSON.stringify(value ?? '')} is not EVENT or VOD`);
          playlistType = true;
          break;
        case 'EXT-X-I-FRAMES-ONLY':
          failAt(n, 'I-frame playlists are not supported');
        case 'EXTINF': {
          if (extinf !== undefined) failAt(n, `EXTINF follows the EXTINF on line ${extinf.line} without a URI between them`);
          const comma = value === undefined ? -1 : value.indexOf(',');
          const d = value === undefined || comma < 0 ? undefined : value.slice(0, comma);
          if (d === undefined || !DECIMAL.test(d)) failAt(n, `EXTINF ${JSON.stringify(value ?? '')} is not <duration>,[title]`);
          const duration = Number(d);
          if (!Number.isFinite(duration)) failAt(n, `EXTINF duration ${d} is out of range`);
          extinf = { duration, line: n };
          break;
        }
        case 'EXT-X-BYTERANGE': {
          if (range !== undefined) failAt(n, `EXT-X-BYTERANGE follows the one on line ${range.line} without a URI between them`);
          const m = value === undefined ? null : BYTERANGE.exec(value);
          if (!m) failAt(n, `EXT-X-BYTERANGE ${JSON.stringify(value ?? '')} is not <length>[@<offset>]`);
          const length = Number(m[1]);
          const offset = m[2] === undefined ? undefined : Number(m[2]);
          if (!Number.isSafeInteger(length) || length < 1) failAt(n, `EXT-X-BYTERANGE length ${m[1]} is out of range`);
          if (offset !== undefined && !Number.isSafeInteger(offset + length)) failAt(n, `EXT-X-BYTERANGE offset ${m[2]} is out of range`);
          range = offset === undefined ? { length, line: n } : { length, offset, line: n };
          break;
        }
        case 'EXT-X-DISCONTINUITY':
          noValue();
          discontinuity = true;
          break;
        case 'EXT-X-PROGRAM-DATE-TIME': {
          const ms = value !== undefined && DATE_TIME.test(value) ? Date.parse(value) : NaN;
          if (Number.isNaN(ms)) failAt(n, `EXT-X-PROGRAM-DATE-TIME ${JSON.stringify(value ?? '')} is not an ISO 8601 date-time with a time zone`);
          programDateTime = new Date(ms);
          break;
        }
        case 'EXT-X-MAP': {
          const attrs = attributes(value, n, name);
          const uri = quoted(attrs, 'URI', n, name);
          if (uri === undefined || uri === '') failAt(n, 'EXT-X-MAP has no URI');
          if (attrs.has('BYTERANGE')) failAt(n, 'EXT-X-MAP BYTERANGE is not supported');
          if (map === undefined && segments.length === 0 && extinf === undefined && segmentMap === undefined) map = { uri };
          else segmentMap = { uri };
          break;
        }
        case 'EXT-X-KEY': {
          const method = attributes(value, n, name).get('METHOD');
          if (method === undefined || method.quoted) failAt(n, 'EXT-X-KEY has no METHOD');
          if (method.value !== 'NONE') failAt(n, `encrypted segments (EXT-X-KEY METHOD=${method.value}) are not supported`);
          break;
        }
        default:
          if (MASTER_TAGS.has(name)) failAt(n, `${name} is a master playlist tag`);
        // Unknown tags are ignored (RFC 8216 6.3.1).
      }
      continue;
    }
    if (line.startsWith('#')) continue; // comment
    // A URI line.
    if (extinf === undefined) failAt(n, `URI ${JSON.stringify(line)} has no EXTINF before it`);
    if (endList) failAt(n, 'segment after EXT-X-ENDLIST');
    const seg: Segment = { uri: line, duration: extinf.duration, sequence: 0 };
    if (discontinuity) seg.discontinuity = true;
    if (programDateTime) seg.programDateTime = programDateTime;
    if (range) seg.byteRange = range.offset === undefined ? { length: range.length } : { length: range.length, offset: range.offset };
    if (segmentMap) seg.map = segmentMap;
    segments.push(seg);
    extinfLines.push(extinf.line);
    rangeLines.push(range?.line ?? 0);
    extinf = undefined;
    range = undefined;
    discontinuity = false;
    programDateTime = undefined;
    segmentMap = undefined;
  }
  const last = lines.length;
  if (extinf !== undefined) failAt(extinf.line, 'EXTINF has no URI after it');
  if (range !== undefined) failAt(range.line, 'EXT-X-BYTERANGE has no segment after it');
  if (targetDuration === undefined) failAt(last, 'missing EXT-X-TARGETDURATION');

  const seq0 = mediaSequence ?? 0;
  const sizes = opts?.resourceSizes;
  let prevEnd: { uri: string; end: number } | undefined;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    s.sequence = seq0 + i;
    if (Math.round(s.duration) > targetDuration) {
      failAt(extinfLines[i]!, `segment duration ${s.duration} rounds above EXT-X-TARGETDURATION ${targetDuration}`);
    }
    const br = s.byteRange;
    if (br === undefined) {
      prevEnd = undefined;
      continue;
    }
    const rl = rangeLines[i]!;
    let offset = br.offset;
    if (offset === undefined) {
      if (prevEnd === undefined || prevEnd.uri !== s.uri) failAt(rl, 'EXT-X-BYTERANGE without an offset must follow a range of the same URI');
      offset = prevEnd.end;
    }
    const end = offset + br.length;
    if (!Number.isSafeInteger(end)) failAt(rl, 'EXT-X-BYTERANGE end is out of range');
    const size = sizes?.get(s.uri);
    if (size !== undefined && end > size) {
      failAt(rl, `EXT-X-BYTERANGE ${br.length}@${offset} reaches past the end of ${s.uri} (${size} bytes)`);
    }
    prevEnd = { uri: s.uri, end };
  }

  const p: MediaPlaylist = {
    version: version ?? 1,
    targetDuration,
    mediaSequence: seq0,
    discontinuitySequence: discontinuitySequence ?? 0,
    segments,
    endList,
  };
  if (independentSegments) p.independentSegments = true;
  if (map) p.map = map;
  return p;
}

function checkUri(uri: string, what: string): void {
  if (uri === '' || /[\r\n]/.test(uri) || uri.startsWith('#') || uri.trim() !== uri) fail(`${what} URI ${JSON.stringify(uri)} cannot be written`);
}

function checkQuoted(value: string, what: string): void {
  if (value === '' || /["\r\n]/.test(value)) fail(`${what} ${JSON.stringify(value)} cannot be a quoted string`);
}

function checkCount(v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) fail(`${what} ${v} is not a non-negative integer`);
}

/** A decimal-floating-point with no exponent, shortest form that reads back to the same number. */
function decimal(v: number): string {
  const s = String(v);
  return s.includes('e') ? v.toFixed(6).replace(/\.?0+$/, '') : s;
}

/**
 * Writes a media playlist. Refuses what the parser would reject (segment sequences that do not follow
 * mediaSequence, durations rounding above the target, malformed URIs and byte ranges) and a version
 * below what the features used need (3 for fractional durations, 4 for byte ranges, 6 for EXT-X-MAP).
 */
export function writeMediaPlaylist(p: MediaPlaylist): string {
  checkCount(p.version, 'version');
  if (p.version < 1) fail('version must be at least 1');
  checkCount(p.targetDuration, 'target duration');
  checkCount(p.mediaSequence, 'media sequence');
  checkCount(p.discontinuitySequence, 'discontinuity sequence');
  let needed = 1;
  const out = ['#EXTM3U', `#EXT-X-VERSION:${p.version}`, `#EXT-X-TARGETDURATION:${p.targetDuration}`, `#EXT-X-MEDIA-SEQUENCE:${p.mediaSequence}`];
  if (p.discontinuitySequence !== 0) out.push(`#EXT-X-DISCONTINUITY-SEQUENCE:${p.discontinuitySequence}`);
  if (p.independentSegments) out.push('#EXT-X-INDEPENDENT-SEGMENTS');
  if (p.map) {
    checkQuoted(p.map.uri, 'map URI');
    out.push(`#EXT-X-MAP:URI="${p.map.uri}"`);
    needed = 6;
  }
  let prev: { uri: string; ranged: boolean } | undefined;
  p.segments.forEach((s, i) => {
    const what = `segment ${i}`;
    if (s.sequence !== p.mediaSequence + i) fail(`${what} sequence ${s.sequence} is not media sequence ${p.mediaSequence} + ${i}`);
    checkUri(s.uri, what);
    if (!Number.isFinite(s.duration) || s.duration < 0) fail(`${what} duration ${s.duration} is not a finite non-negative number`);
    if (Math.round(s.duration) > p.targetDuration) fail(`${what} duration ${s.duration} rounds above the target duration ${p.targetDuration}`);
    if (!Number.isInteger(s.duration)) needed = Math.max(needed, 3);
    if (s.discontinuity) out.push('#EXT-X-DISCONTINUITY');
    if (s.programDateTime) {
      if (Number.isNaN(s.programDateTime.getTime())) fail(`${what} program date-time is invalid`);
      out.push(`#EXT-X-PROGRAM-DATE-TIME:${s.programDateTime.toISOString()}`);
    }
    if (s.map) {
      checkQuoted(s.map.uri, `${what} map URI`);
      out.push(`#EXT-X-MAP:URI="${s.map.uri}"`);
      needed = 6;
    }
    if (s.byteRange) {
      const { length, offset } = s.byteRange;
      if (!Number.isSafeInteger(length) || length < 1) fail(`${what} byte range length ${length} is not a positive integer`);
      if (offset !== undefined) checkCount(offset, `${what} byte range offset`);
      else if (!prev?.ranged || prev.uri !== s.uri) fail(`${what} byte range without an offset must follow a range of the same URI`);
      out.push(`#EXT-X-BYTERANGE:${length}${offset === undefined ? '' : `@${offset}`}`);
      needed = Math.max(needed, 4);
    }
    out.push(`#EXTINF:${decimal(s.duration)},`, s.uri);
    prev = { uri: s.uri, ranged: s.byteRange !== undefined };
  });
  if (p.version < needed) fail(`version ${p.version} is below ${needed}, which the playlist's features need`);
  if (p.endList) out.push('#EXT-X-ENDLIST');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------
// Master playlists

/** Writes a master playlist with one EXT-X-STREAM-INF per variant (FRAME-RATE to three decimals). */
export function writeMasterPlaylist(variants: readonly Variant[]): string {
  if (variants.length === 0) fail('a master playlist needs at least one variant');
  const out = ['#EXTM3U'];
  variants.forEach((v, i) => {
    const what = `variant ${i}`;
    checkUri(v.uri, what);
    if (!Number.isSafeInteger(v.bandwidth) || v.bandwidth < 1) fail(`${what} bandwidth ${v.bandwidth} is not a positive integer`);
    const attrs = [`BANDWIDTH=${v.bandwidth}`];
    if (v.resolution) {
      const { width, height } = v.resolution;
      if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 1 || height < 1) fail(`${what} resolution ${width}x${height} is invalid`);
      attrs.push(`RESOLUTION=${width}x${height}`);
    }
    if (v.codecs !== undefined) {
      checkQuoted(v.codecs, `${what} codecs`);
      attrs.push(`CODECS="${v.codecs}"`);
    }
    if (v.frameRate !== undefined) {
      if (!Number.isFinite(v.frameRate) || v.frameRate <= 0) fail(`${what} frame rate ${v.frameRate} is invalid`);
      attrs.push(`FRAME-RATE=${v.frameRate.toFixed(3)}`);
    }
    out.push(`#EXT-X-STREAM-INF:${attrs.join(',')}`, v.uri);
  });
  return out.join('\n') + '\n';
}

/**
 * Parses a master playlist strictly: #EXTM3U first; each EXT-X-STREAM-INF has an integer BANDWIDTH,
 * optional RESOLUTION WxH, CODECS quoted string and FRAME-RATE decimal, and is followed by its URI.
 * Media playlist tags are rejected; other tags (EXT-X-MEDIA, ...) are ignored.
 */
export function parseMasterPlaylist(text: string): Variant[] {
  const lines = linesOf(text);
  const variants: Variant[] = [];
  let pending: { variant: Omit<Variant, 'uri'>; line: number } | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const n = i + 1;
    if (line.trim() === '') continue;
    if (line.startsWith('#EXT')) {
      const { name, value } = tagOf(line);
      if (name === 'EXTM3U') failAt(n, '#EXTM3U appears again');
      if (MEDIA_TAGS.has(name)) failAt(n, `${name} is a media playlist tag`);
      if (name !== 'EXT-X-STREAM-INF') continue;
      if (pending) failAt(n, `EXT-X-STREAM-INF follows the one on line ${pending.line} without a URI between them`);
      const attrs = attributes(value, n, name);
      const bw = attrs.get('BANDWIDTH');
      if (bw === undefined || bw.quoted) failAt(n, 'EXT-X-STREAM-INF has no BANDWIDTH');
      const variant: Omit<Variant, 'uri'> = { bandwidth: integer(bw.value, n, 'BANDWIDTH') };
      const res = attrs.get('RESOLUTION');
      if (res !== undefined) {
        const m = res.quoted ? null : /^(\d+)x(\d+)$/.exec(res.value);
        if (!m) failAt(n, `RESOLUTION ${JSON.stringify(res.value)} is not <width>x<height>`);
        variant.resolution = { width: integer(m[1], n, 'RESOLUTION width'), height: integer(m[2], n, 'RESOLUTION height') };
      }
      const codecs = quoted(attrs, 'CODECS', n, name);
      if (codecs !== undefined) variant.codecs = codecs;
      const fr = attrs.get('FRAME-RATE');
      if (fr !== undefined) {
        if (fr.quoted || !DECIMAL.test(fr.value)) failAt(n, `FRAME-RATE ${JSON.stringify(fr.value)} is not a decimal number`);
        variant.frameRate = Number(fr.value);
      }
      pending = { variant, line: n };
      continue;
    }
    if (line.startsWith('#')) continue;
    if (!pending) failAt(n, `URI ${JSON.stringify(line)} has no EXT-X-STREAM-INF before it`);
    variants.push({ uri: line, ...pending.variant });
    pending = undefined;
  }
  if (pending) failAt(pending.line, 'EXT-X-STREAM-INF has no URI after it');
  return variants;
}
