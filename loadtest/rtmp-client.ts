/**
 * A lean RTMP client for the load tools: handshake, connect, createStream, then publish or play.
 * After that a publisher only writes bytes it was given (pre-chunked, shared with other publishers)
 * and a player hands each audio/video message to a callback. Server control messages (window
 * acknowledgement size, pings, chunk size) are answered on both sides.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { type AmfObject } from '../codecs/amf0.ts';
import { ChunkReader, MessageType, encodeMessage, type RtmpMessage } from '../codecs/rtmp/chunks.ts';
import { HANDSHAKE_SIZE, clientHello, clientReply } from '../codecs/rtmp/handshake.ts';
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
} from '../codecs/rtmp/messages.ts';

export interface RtmpTarget {
  host: string;
  port: number;
  app: string;
  /** Stream name, with any `?query` it carries (stream keys). */
  name: string;
  tcUrl: string;
}

/** `rtmp://host[:port]/app[/name]`; `name` overrides or supplies the stream name. */
export function parseRtmpUrl(url: string, name?: string): RtmpTarget {
  const u = new URL(url);
  if (u.protocol !== 'rtmp:') throw new Error(`not an rtmp:// URL: ${url}`);
  const parts = u.pathname.split('/').filter(Boolean);
  const app = parts[0];
  if (!app) throw new Error(`no application in ${url}`);
  const streamName = name ?? (parts.slice(1).join('/') + u.search);
  if (!streamName) throw new Error(`no stream name in ${url}`);
  const port = u.port ? Number(u.port) : 1935;
  return { host: u.hostname, port, app, name: streamName, tcUrl: `rtmp://${u.hostname}:${port}/${app}` };
}

export class RtmpError extends Error {
  constructor(
    readonly phase: string,
    message: string,
  ) {
    super(`${phase}: ${message}`);
    this.name = 'RtmpError';
  }
}

export interface RtmpClientOptions {
  /** Everything up to publish/play start must finish within this. */
  timeoutMs?: number;
  /** The chunk size we announce and use for what we send. */
  chunkSize?: number;
  /** Players: called with each audio, video and data message. */
  onMedia?: (msg: RtmpMessage) => void;
  /** Largest message accepted from the server. */
  maxMessageSize?: number;
}

type Mode = 'publish' | 'play';

const CONNECT_TX = 1;
const CREATE_STREAM_TX = 4;
const PUBLISH_TX = 5;

export class RtmpClient {
  readonly socket: Socket;
  readonly target: RtmpTarget;
  readonly mode: Mode;
  readonly chunkSize: number;
  /** The message stream id the server gave us. */
  streamId = 0;
  /** Resolves with the reason when the connection is gone. */
  readonly closed: Promise<string>;
  #reader: ChunkReader | undefined;
  #hs: Buffer[] = [];
  #hsLen = 0;
  #digest: Buffer | undefined;
  #window = 0;
  #acked = 0;
  #onMedia: ((msg: RtmpMessage) => void) | undefined;
  #settle: { resolve: () => void; reject: (e: Error) => void } | undefined;
  #closeReason = '';
  #phase = 'tcp connect';

  private constructor(target: RtmpTarget, mode: Mode, opts: RtmpClientOptions) {
    this.target = target;
    this.mode = mode;
    this.chunkSize = opts.chunkSize ?? 4096;
    this.#onMedia = opts.onMedia;
    this.socket = connect({ host: target.host, port: target.port, noDelay: true });
    const maxMessageSize = opts.maxMessageSize ?? 16 * 1024 * 1024;
    this.closed = new Promise((resolve) => {
      this.socket.once('close', () => {
        const reason = this.#closeReason || `closed by server during ${this.#phase}`;
        this.#fail(new RtmpError(this.#phase, reason));
        resolve(reason);
      });
    });
    this.socket.on('error', (e) => {
      this.#closeReason ||= e.message;
    });
    this.socket.once('connect', () => {
      this.#phase = 'handshake';
      const { c0c1, digest } = clientHello(randomBytes, 0);
      this.#digest = digest;
      this.socket.write(c0c1);
    });
    this.socket.on('data', (d: Buffer) => {
      try {
        this.#onData(d, maxMessageSize);
      } catch (err) {
        this.destroy(`protocol error: ${(err as Error).message}`);
      }
    });
  }

  /** Connects and starts publishing (or playing); rejects with an RtmpError naming the phase that failed. */
  static async open(target: RtmpTarget, mode: Mode, opts: RtmpClientOptions = {}): Promise<RtmpClient> {
    const c = new RtmpClient(target, mode, opts);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        c.#settle = { resolve, reject };
        timer = setTimeout(() => reject(new RtmpError(c.#phase, `timed out after ${timeoutMs} ms`)), timeoutMs);
      });
    } catch (err) {
      c.destroy((err as Error).message);
      throw err;
    } finally {
      clearTimeout(timer);
      c.#settle = undefined;
    }
    return c;
  }

  get phase(): string {
    return this.#phase;
  }

  #fail(err: Error): void {
    this.#settle?.reject(err);
    this.#settle = undefined;
  }

  #send(csid: number, msg: RtmpMessage): void {
    this.socket.write(encodeMessage(csid, msg, this.chunkSize));
  }

  #onData(d: Buffer, maxMessageSize: number): void {
    if (!this.#reader) {
      this.#hs.push(d);
      this.#hsLen += d.length;
      if (this.#hsLen < 1 + 2 * HANDSHAKE_SIZE) return;
      const all = Buffer.concat(this.#hs);
      this.#hs = [];
      const c2 = clientReply(all.subarray(0, 1 + 2 * HANDSHAKE_SIZE), this.#digest!, randomBytes);
      this.#reader = new ChunkReader({ maxChunkSize: 0xffffff, maxMessageSize });
      const cmd: AmfObject = {
        app: this.target.app,
        type: 'nonprivate',
        flashVer: this.mode === 'publish' ? 'FMLE/3.0 (compatible; tributary-loadtest)' : 'LNX 9,0,124,2',
        tcUrl: this.target.tcUrl,
      };
      if (this.mode === 'play') Object.assign(cmd, { fpad: false, capabilities: 15, audioCodecs: 4071, videoCodecs: 252, videoFunction: 1 });
      this.socket.write(
        Buffer.concat([
          c2,
          encodeMessage(Csid.Control, setChunkSize(this.chunkSize), 128),
          encodeMessage(Csid.Command, command(0, 'connect', CONNECT_TX, cmd), this.chunkSize),
        ]),
      );
      this.#phase = 'connect';
      const rest = all.subarray(1 + 2 * HANDSHAKE_SIZE);
      if (rest.length === 0) return;
      d = rest;
    }
    for (const msg of this.#reader.push(d)) this.#onMessage(msg);
    if (this.#window > 0 && this.#reader.bytesRead - this.#acked >= this.#window / 2) {
      this.#acked = this.#reader.bytesRead;
      this.#send(Csid.Control, acknowledgement(this.#acked));
    }
  }

  #onMessage(msg: RtmpMessage): void {
    switch (msg.type) {
      case MessageType.Audio:
      case MessageType.Video:
      case MessageType.DataAmf0:
        this.#onMedia?.(msg);
        return;
      case MessageType.WindowAckSize:
        this.#window = readU32(msg.payload, 'window acknowledgement size');
        return;
      case MessageType.UserControl: {
        const uc = parseUserControl(msg.payload);
        if (uc.event === UserControlEvent.PingRequest) this.#send(Csid.Control, userControl(UserControlEvent.PingResponse, uc.value));
        return;
      }
      case MessageType.CommandAmf0:
      case MessageType.CommandAmf3:
        this.#onCommand(msg);
        return;
      case MessageType.Aggregate:
        // Some servers send aggregates to players: split them into their tags.
        for (const m of splitAggregate(msg)) this.#onMedia?.(m);
        return;
      default:
    }
  }

  #onCommand(msg: RtmpMessage): void {
    const cmd = parseCommand(msg);
    if (cmd.name === '_error') {
      const info = cmd.args[0] as AmfObject | undefined;
      this.#fail(new RtmpError(this.#phase, `_error ${String(info?.code ?? '')} ${String(info?.description ?? '')}`.trim()));
      return;
    }
    if (cmd.name === '_result' && cmd.transactionId === CONNECT_TX && this.#phase === 'connect') {
      this.#phase = 'createStream';
      const name = this.target.name;
      if (this.mode === 'publish') {
        this.#send(Csid.Command, command(0, 'releaseStream', 2, null, name));
        this.#send(Csid.Command, command(0, 'FCPublish', 3, null, name));
      }
      this.#send(Csid.Command, command(0, 'createStream', CREATE_STREAM_TX, null));
      return;
    }
    if (cmd.name === '_result' && cmd.transactionId === CREATE_STREAM_TX && this.#phase === 'createStream') {
      const id = cmd.args[0];
      if (typeof id !== 'number') return this.#fail(new RtmpError(this.#phase, 'createStream result without a stream id'));
      this.streamId = id;
      this.#phase = this.mode;
      if (this.mode === 'publish') {
        this.#send(Csid.Command, command(id, 'publish', PUBLISH_TX, null, this.target.name, 'live'));
      } else {
        this.#send(Csid.Control, userControl(UserControlEvent.SetBufferLength, id, 3000));
        this.#send(Csid.Command, command(id, 'play', PUBLISH_TX, null, this.target.name, -2000));
      }
      return;
    }
    if (cmd.name === 'onStatus') {
      const info = (cmd.args[0] ?? {}) as AmfObject;
      const code = String(info.code ?? '');
      if (info.level === 'error' || /Failed|BadName|Rejected|StreamNotFound/.test(code)) {
        const reason = `${code} ${String(info.description ?? '')}`.trim();
        this.#fail(new RtmpError(this.#phase, reason));
        if (this.#phase !== 'closing') this.destroy(`server: ${reason}`);
        return;
      }
      if ((this.mode === 'publish' && code === 'NetStream.Publish.Start') || (this.mode === 'play' && code === 'NetStream.Play.Start')) {
        this.#phase = this.mode === 'publish' ? 'publishing' : 'playing';
        this.#settle?.resolve();
        this.#settle = undefined;
      }
    }
  }

  /** Writes bytes as they are (already chunked for this connection's chunk size and stream id). */
  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Bytes accepted by write() but not yet handed to the kernel. */
  get backlog(): number {
    return this.socket.writableLength;
  }

  /** Ends politely: FCUnpublish/deleteStream, then FIN; destroyed if the server does not close within 2 s. */
  async close(): Promise<void> {
    if (this.socket.destroyed) return;
    if (this.#phase === 'publishing' || this.#phase === 'playing') {
      this.#phase = 'closing';
      if (this.mode === 'publish') this.#send(Csid.Command, command(0, 'FCUnpublish', 6, null, this.target.name));
      this.#send(Csid.Command, command(0, 'deleteStream', 7, null, this.streamId));
    }
    this.#closeReason ||= 'closed by client';
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 2000);
    await this.closed;
    clearTimeout(t);
  }

  destroy(reason: string): void {
    this.#closeReason ||= reason;
    this.socket.destroy();
  }
}

/** The FLV tags inside an aggregate message, with their own timestamps. */
export function splitAggregate(msg: RtmpMessage): RtmpMessage[] {
  const out: RtmpMessage[] = [];
  const p = msg.payload;
  let pos = 0;
  let base: number | undefined;
  while (pos + 11 <= p.length) {
    const type = p[pos]!;
    const size = p.readUIntBE(pos + 1, 3);
    const ts = p.readUIntBE(pos + 4, 3) + p[pos + 7]! * 0x1000000;
    if (pos + 11 + size + 4 > p.length) break;
    base ??= ts;
    out.push({ type, streamId: msg.streamId, timestamp: (msg.timestamp + ts - base) >>> 0, payload: p.subarray(pos + 11, pos + 11 + size) });
    pos += 11 + size + 4;
  }
  return out;
}
