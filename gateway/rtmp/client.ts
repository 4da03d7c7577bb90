/**
 * The outbound RTMP client: TCP connect under a connect timeout, the digest handshake, `connect`,
 * `createStream`, then `play` (a pull) or `publish` (a re-push). The socket has the same deadlines as
 * the server side (handshake, read-idle, write-stall). Every failure closes this client only, once,
 * with a kind and a reason; the client owns its socket and its timers and releases them on close().
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AmfObject } from '../../codecs/amf0.ts';
import { CodecError } from '../../codecs/errors.ts';
import { ChunkReader, MessageType, encodeMessage, type RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { HANDSHAKE_SIZE, clientHello, clientReply } from '../../codecs/rtmp/handshake.ts';
import {
  Csid,
  UserControlEvent,
  acknowledgement,
  command,
  parseCommand,
  parseUserControl,
  readU32,
  setChunkSize,
  userControl,
  windowAckSize,
  type Command,
} from '../../codecs/rtmp/messages.ts';
import { SocketDeadlines, type DeadlineKind, type DeadlineOptions } from '../net/deadlines.ts';

/** Where an rtmp:// URL points: the app is the first path segment, the name the rest (with the query). */
export interface RtmpTarget {
  readonly host: string;
  readonly port: number;
  readonly app: string;
  /** The stream name as sent in play/publish, query included (servers read keys from it). */
  readonly name: string;
  readonly tcUrl: string;
  /** The URL without query or credentials: for logs, metrics and the API. */
  readonly redacted: string;
}

export class RtmpUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RtmpUrlError';
  }
}

export function parseRtmpUrl(raw: string): RtmpTarget {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RtmpUrlError(`not a URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if (url.protocol !== 'rtmp:') throw new RtmpUrlError(`only rtmp:// URLs are supported, not ${url.protocol}`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw new RtmpUrlError('URL without a host');
  const port = url.port ? Number(url.port) : 1935;
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length < 2) throw new RtmpUrlError('URL needs an app and a stream name: rtmp://host[:port]/app/name');
  const app = parts[0]!;
  const name = parts.slice(1).join('/') + url.search;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return {
    host,
    port,
    app,
    name,
    tcUrl: `rtmp://${hostPart}:${port}/${app}`,
    redacted: `rtmp://${hostPart}:${port}/${parts.join('/')}`,
  };
}

export type ClientMode = 'play' | 'publish';

/** Why a client ended: `connect` (TCP, including its timeout), a deadline, the peer refusing, or other. */
export type ClientFailureKind = 'connect' | 'handshake' | 'idle' | 'write_stall' | 'refused' | 'protocol' | 'closed' | 'aborted' | 'ended';

export class RtmpClientError extends Error {
  constructor(
    readonly kind: ClientFailureKind,
    message: string,
  ) {
    super(message);
    this.name = 'RtmpClientError';
  }
}

export interface RtmpClientOptions {
  target: RtmpTarget;
  mode: ClientMode;
  connectTimeoutMs: number;
  deadlines: DeadlineOptions;
  maxChunkSize: number;
  maxMessageSize: number;
  outChunkSize: number;
  log: Logger;
  /** A deadline (connect included) expired: for the metric. */
  onDeadline?(kind: DeadlineKind): void;
  /** play: every audio, video and data message from the source, in order. */
  onMessage?(msg: RtmpMessage): void;
}

const WINDOW_ACK_SIZE = 2_500_000;
const TX_CONNECT = 1;
const TX_CREATE_STREAM = 4;
const TX_START = 5;
/** How long a closing publisher waits for its last bytes to leave before the socket is destroyed. */
const FLUSH_MS = 1000;
/** Aggregate messages carry FLV tags: an 11-byte header, the body and a 4-byte previous-tag size. */
const TAG_HEADER = 11;

type Phase = 'connecting' | 'handshake' | 'chunks' | 'closed';

export class RtmpClient {
  readonly target: RtmpTarget;
  readonly mode: ClientMode;
  /** Resolves when play or publish has started; rejects with RtmpClientError if it never does. */
  readonly ready: Promise<void>;
  /** Resolves with the reason once the client has closed. */
  readonly closed: Promise<string>;
  readonly #opts: RtmpClientOptions;
  readonly #log: Logger;
  readonly #socket: Socket;
  readonly #reader: ChunkReader;
  #deadlines: SocketDeadlines | undefined;
  #connectTimer: NodeJS.Timeout | undefined;
  #phase: Phase = 'connecting';
  #handshakeBuf: Buffer = Buffer.alloc(0);
  #c1Digest: Buffer | undefined;
  #started = false;
  #streamId = 0;
  #peerWindow = 0;
  #lastAck = 0;
  #closeReason: string | undefined;
  #closeKind: ClientFailureKind | undefined;
  #resolveReady!: () => void;
  #rejectReady!: (err: RtmpClientError) => void;
  #resolveClosed!: (reason: string) => void;

  constructor(opts: RtmpClientOptions) {
    this.#opts = opts;
    this.target = opts.target;
    this.mode = opts.mode;
    this.#log = opts.log.child({ target: opts.target.redacted, mode: opts.mode });
    this.#reader = new ChunkReader({ maxChunkSize: opts.maxChunkSize, maxMessageSize: opts.maxMessageSize });
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Whoever waits on ready sees the rejection; nobody waiting is not an error.
    this.ready.catch(() => {});
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));

    this.#connectTimer = setTimeout(() => {
      this.#opts.onDeadline?.('connect');
      this.close(`connect timeout after ${opts.connectTimeoutMs} ms`, 'connect');
    }, opts.connectTimeoutMs);
    this.#socket = connect({ host: opts.target.host, port: opts.target.port });
    this.#socket.setNoDelay(true);
    this.#socket.once('connect', () => this.#onConnect());
    this.#socket.on('data', (d: Buffer) => this.#onData(d));
    this.#socket.on('error', (err) =>
      this.close(this.#phase === 'connecting' ? `connect failed: ${err.message}` : `socket error: ${err.message}`, this.#phase === 'connecting' ? 'connect' : 'closed'),
    );
    this.#socket.on('close', () => this.close('peer closed the connection', 'closed'));
  }

  get isClosed(): boolean {
    return this.#phase === 'closed';
  }

  get started(): boolean {
    return this.#started;
  }

  /** The message stream id the server gave us (for publish: put it on every media message). */
  get streamId(): number {
    return this.#streamId;
  }

  get closeReason(): string | undefined {
    return this.#closeReason;
  }

  get closeKind(): ClientFailureKind | undefined {
    return this.#closeKind;
  }

  /** Sends one message; false when the socket's buffer is full (wait for onDrain before sending more). */
  send(csid: number, msg: RtmpMessage): boolean {
    return this.#write(encodeMessage(csid, msg, this.#opts.outChunkSize));
  }

  /** Calls `fn` once the socket's buffer has drained; returns a function that cancels it. */
  onDrain(fn: () => void): () => void {
    this.#socket.once('drain', fn);
    return () => this.#socket.off('drain', fn);
  }

  /**
   * Ends the client once. `flush` lets what was written (a publisher's deleteStream) leave first, for at
   * most FLUSH_MS.
   */
  close(reason: string, kind: ClientFailureKind = 'closed', flush = false): void {
    if (this.#phase === 'closed') return;
    const wasStarted = this.#started;
    this.#phase = 'closed';
    this.#closeReason = reason;
    this.#closeKind = kind;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#deadlines?.clear();
    const socket = this.#socket;
    if (flush && !socket.destroyed && wasStarted) {
      const timer = setTimeout(() => socket.destroy(), FLUSH_MS);
      socket.once('close', () => clearTimeout(timer));
      socket.end();
    } else if (!socket.destroyed) socket.destroy();
    this.#rejectReady(new RtmpClientError(kind, reason));
    this.#log.debug({ reason, kind }, 'RTMP client closed');
    this.#resolveClosed(reason);
  }

  /** A publisher's polite goodbye, then close. */
  finish(reason: string): void {
    if (this.#phase === 'chunks' && this.#started && this.mode === 'publish') {
      this.send(Csid.Command, command(0, 'FCUnpublish', 6, null, this.target.name));
      this.send(Csid.Command, command(0, 'deleteStream', 7, null, this.#streamId));
    }
    this.close(reason, 'ended', true);
  }

  #write(bytes: Buffer): boolean {
    if (this.#phase === 'closed' || this.#socket.destroyed) return true;
    const flushed = this.#socket.write(bytes);
    this.#deadlines?.wrote(flushed);
    return flushed;
  }

  #send(csid: number, msg: RtmpMessage): void {
    this.#write(encodeMessage(csid, msg, this.#opts.outChunkSize));
  }

  #onConnect(): void {
    if (this.#phase !== 'connecting') return;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#phase = 'handshake';
    this.#deadlines = new SocketDeadlines(this.#socket, this.#opts.deadlines, (kind) => {
      this.#opts.onDeadline?.(kind);
      const what = kind === 'handshake' ? 'handshake' : kind === 'idle' ? 'read-idle' : kind === 'write_stall' ? 'write-stall' : kind;
      this.close(`${what} deadline expired`, kind === 'connect' ? 'connect' : kind);
    });
    const { c0c1, digest } = clientHello(randomBytes, Date.now());
    this.#c1Digest = digest;
    this.#write(c0c1);
  }

  #onData(data: Buffer): void {
    if (this.#phase === 'closed' || this.#phase === 'connecting') return;
    this.#deadlines?.read();
    try {
      if (this.#phase === 'handshake') data = this.#handshake(data);
      if (this.#phase === 'chunks' && data.length) {
        for (const msg of this.#reader.push(data)) {
          this.#onMessage(msg);
          if (this.isClosed) return;
        }
        if (this.#peerWindow > 0 && this.#reader.bytesRead - this.#lastAck >= this.#peerWindow) {
          this.#lastAck = this.#reader.bytesRead;
          this.#send(Csid.Control, acknowledgement(this.#reader.bytesRead >>> 0));
        }
      }
    } catch (err) {
      if (err instanceof RtmpClientError) this.close(err.message, err.kind);
      else if (err instanceof CodecError) this.close(`bad input from the server: ${err.message}`, 'protocol');
      else {
        this.#log.error({ err }, 'unexpected error in RTMP client');
        this.close(`internal error: ${(err as Error).message}`, 'protocol');
      }
    }
  }

  /** Reads S0+S1+S2, answers C2 and starts the NetConnection; returns what is left for the chunk stream. */
  #handshake(data: Buffer): Buffer {
    this.#handshakeBuf = this.#handshakeBuf.length ? Buffer.concat([this.#handshakeBuf, data]) : data;
    if (this.#handshakeBuf[0] !== undefined && this.#handshakeBuf[0] !== 3) {
      throw new CodecError('rtmp', `handshake: server answered version byte 0x${this.#handshakeBuf[0].toString(16)}`);
    }
    const need = 1 + 2 * HANDSHAKE_SIZE;
    if (this.#handshakeBuf.length < need) return Buffer.alloc(0);
    const c2 = clientReply(this.#handshakeBuf.subarray(0, need), this.#c1Digest!, randomBytes);
    const rest = this.#handshakeBuf.subarray(need);
    this.#handshakeBuf = Buffer.alloc(0);
    this.#write(c2);
    this.#phase = 'chunks';
    this.#deadlines?.handshakeDone();
    this.#send(Csid.Control, setChunkSize(this.#opts.outChunkSize));
    this.#send(Csid.Control, windowAckSize(WINDOW_ACK_SIZE));
    const t = this.target;
    const props: AmfObject =
      this.mode === 'publish'
        ? { app: t.app, type: 'nonprivate', flashVer: 'FMLE/3.0 (compatible; Tributary)', tcUrl: t.tcUrl }
        : {
            app: t.app,
            flashVer: 'LNX 9,0,124,2',
            tcUrl: t.tcUrl,
            fpad: false,
            capabilities: 15,
            audioCodecs: 4071,
            videoCodecs: 252,
            videoFunction: 1,
          };
    this.#send(Csid.Command, command(0, 'connect', TX_CONNECT, props));
    return rest;
  }

  #onMessage(msg: RtmpMessage): void {
    switch (msg.type) {
      case MessageType.Audio:
      case MessageType.Video:
      case MessageType.DataAmf0:
      case MessageType.DataAmf3:
        if (this.mode === 'play') this.#opts.onMessage?.(msg);
        return;
      case MessageType.Aggregate:
        if (this.mode === 'play') for (const sub of splitAggregate(msg)) this.#opts.onMessage?.(sub);
        return;
      case MessageType.CommandAmf0:
      case MessageType.CommandAmf3:
        this.#onCommand(parseCommand(msg));
        return;
      case MessageType.WindowAckSize:
        this.#peerWindow = readU32(msg.payload, 'Window Acknowledgement Size');
        return;
      case MessageType.UserControl: {
        const uc = parseUserControl(msg.payload);
        if (uc.event === UserControlEvent.PingRequest) this.#send(Csid.Control, userControl(UserControlEvent.PingResponse, uc.value));
        return;
      }
      default:
        // Set Chunk Size and Abort are applied by the reader; acknowledgements and bandwidth need nothing.
        return;
    }
  }

  #onCommand(cmd: Command): void {
    const t = this.target;
    if (cmd.name === '_result' && cmd.transactionId === TX_CONNECT) {
      if (this.mode === 'publish') {
        this.#send(Csid.Command, command(0, 'releaseStream', 2, null, t.name));
        this.#send(Csid.Command, command(0, 'FCPublish', 3, null, t.name));
      }
      this.#send(Csid.Command, command(0, 'createStream', TX_CREATE_STREAM, null));
      return;
    }
    if (cmd.name === '_result' && cmd.transactionId === TX_CREATE_STREAM) {
      const id = cmd.args[0];
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new RtmpClientError('protocol', 'createStream answered without a stream id');
      this.#streamId = id;
      if (this.mode === 'play') {
        this.#send(Csid.Control, userControl(UserControlEvent.SetBufferLength, id, 1000));
        this.#send(Csid.Command, command(id, 'play', TX_START, null, t.name, -2000));
      } else {
        this.#send(Csid.Command, command(id, 'publish', TX_START, null, t.name, 'live'));
      }
      return;
    }
    if (cmd.name === '_error') {
      const info = describe(cmd.args[0]);
      if (cmd.transactionId === TX_CONNECT || cmd.transactionId === TX_CREATE_STREAM || cmd.transactionId === TX_START) {
        throw new RtmpClientError('refused', `server refused ${cmd.transactionId === TX_CONNECT ? 'connect' : cmd.transactionId === TX_CREATE_STREAM ? 'createStream' : this.mode}: ${info}`);
      }
      return;
    }
    if (cmd.name === 'onStatus') {
      const status = cmd.args[0];
      const code = status && typeof status === 'object' && !Array.isArray(status) && !(status instanceof Date) ? status.code : undefined;
      const level = status && typeof status === 'object' && !Array.isArray(status) && !(status instanceof Date) ? status.level : undefined;
      if (code === (this.mode === 'play' ? 'NetStream.Play.Start' : 'NetStream.Publish.Start')) {
        if (!this.#started) {
          this.#started = true;
          // A publisher hears little back (acknowledgements at most): its writes are what is watched.
          if (this.mode === 'publish') this.#deadlines?.disableIdle();
          this.#log.debug('RTMP client started');
          this.#resolveReady();
        }
        return;
      }
      if (level === 'error') throw new RtmpClientError('refused', `server: ${describe(status)}`);
      if (this.mode === 'play' && this.#started && (code === 'NetStream.Play.UnpublishNotify' || code === 'NetStream.Play.Stop' || code === 'NetStream.Play.Complete')) {
        this.close(`source ended (${String(code)})`, 'ended');
      }
    }
    // onBWDone, onFCPublish, _checkbw and the like need no answer.
  }
}

function describe(v: unknown): string {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    return [o.code, o.description].filter((x) => typeof x === 'string').join(': ') || 'no description';
  }
  return typeof v === 'string' ? v : 'no description';
}

/**
 * Splits an Aggregate message into the messages it carries (FLV tags back to back). Every size is checked
 * against what remains; timestamps are made relative to the aggregate's own.
 */
export function splitAggregate(msg: RtmpMessage): RtmpMessage[] {
  const out: RtmpMessage[] = [];
  const b = msg.payload;
  let p = 0;
  let first: number | undefined;
  while (p < b.length) {
    if (b.length - p < TAG_HEADER) throw new CodecError('rtmp', `aggregate: truncated tag header at ${p}`);
    const type = b[p]! & 0x1f;
    const size = b.readUIntBE(p + 1, 3);
    const ts = (b.readUIntBE(p + 4, 3) | (b[p + 7]! << 24)) >>> 0;
    if (size + 4 > b.length - p - TAG_HEADER) throw new CodecError('rtmp', `aggregate: tag of ${size} bytes overruns the message`);
    first ??= ts;
    const body = b.subarray(p + TAG_HEADER, p + TAG_HEADER + size);
    if (type === MessageType.Audio || type === MessageType.Video || type === MessageType.DataAmf0) {
      out.push({ type, streamId: msg.streamId, timestamp: (msg.timestamp + ts - first) >>> 0, payload: body });
    }
    p += TAG_HEADER + size + 4;
  }
  return out;
}
