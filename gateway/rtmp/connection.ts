/**
 * One RTMP connection on the server side: handshake, chunk stream, NetConnection and NetStream
 * commands, and the publish path into the registry. Every failure closes this connection only,
 * with one log line and a metric.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { CodecError } from '../../codecs/errors.ts';
import { ChunkReader, MessageType, encodeMessage, type RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { HANDSHAKE_SIZE, serverHandshake } from '../../codecs/rtmp/handshake.ts';
import {
  Csid,
  UserControlEvent,
  acknowledgement,
  command,
  parseCommand,
  parseData,
  parseUserControl,
  readU32,
  setChunkSize,
  setPeerBandwidth,
  statusObject,
  userControl,
  windowAckSize,
  type Command,
} from '../../codecs/rtmp/messages.ts';
import { PoolExhaustedError, type BufferPool } from '../../sessions/pool.ts';
import { PublishRefusedError, type Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import type { Metrics } from '../metrics.ts';
import { SocketDeadlines, type DeadlineKind, type DeadlineOptions } from '../net/deadlines.ts';
import { RtmpIngest } from './ingest.ts';
import { PlaySession } from './play.ts';

export interface RtmpConnectionDeps {
  registry: Registry;
  pool: BufferPool;
  metrics: Metrics;
  log: Logger;
  deadlines: DeadlineOptions;
  maxChunkSize: number;
  maxMessageSize: number;
  outChunkSize: number;
}

const WINDOW_ACK_SIZE = 2_500_000;
const PUBLISH_STREAM_ID = 1;

type Phase = 'c0c1' | 'c2' | 'chunks' | 'closed';

/** Splits `app/name?key=...` style names: the stream name and its query. */
function splitQuery(s: string): { base: string; params: URLSearchParams } {
  const q = s.indexOf('?');
  return q < 0 ? { base: s, params: new URLSearchParams() } : { base: s.slice(0, q), params: new URLSearchParams(s.slice(q + 1)) };
}

export class RtmpConnection {
  readonly id: string;
  readonly remoteAddress: string;
  readonly #socket: Socket;
  readonly #deps: RtmpConnectionDeps;
  readonly #log: Logger;
  readonly #deadlines: SocketDeadlines;
  readonly #reader: ChunkReader;
  #phase: Phase = 'c0c1';
  #handshakeBuf: Buffer = Buffer.alloc(0);
  #app = '';
  #peerWindow = 0;
  #lastAck = 0;
  #stream: Stream | undefined;
  #ingest: RtmpIngest | undefined;
  #publishing = false;
  /** Media that arrived while the publish was being authorised, replayed once it is accepted. */
  #pending: RtmpMessage[] | undefined;
  #pendingBytes = 0;
  #play: PlaySession | undefined;
  readonly #closeListeners: Array<() => void> = [];

  constructor(socket: Socket, id: string, deps: RtmpConnectionDeps) {
    this.id = id;
    this.#socket = socket;
    this.#deps = deps;
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.#log = deps.log.child({ session: id, protocol: 'rtmp', remote: this.remoteAddress });
    this.#reader = new ChunkReader({ maxChunkSize: deps.maxChunkSize, maxMessageSize: deps.maxMessageSize });
    this.#deadlines = new SocketDeadlines(socket, deps.deadlines, (kind) => this.#onDeadline(kind));
    socket.setNoDelay(true);
    socket.on('data', (data: Buffer) => this.#onData(data));
    socket.on('error', (err) => this.close(`socket error: ${err.message}`, 'error'));
    socket.on('close', () => this.close('peer closed the connection', 'closed'));
  }

  get closed(): boolean {
    return this.#phase === 'closed';
  }

  onClose(fn: () => void): void {
    this.#closeListeners.push(fn);
  }

  /** Ends the connection once: logs the reason, ends its stream, releases its timers. */
  close(reason: string, result = 'closed', flush = false): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    this.#deadlines.clear();
    const stream = this.#stream;
    this.#stream = undefined;
    this.#ingest = undefined;
    stream?.end(reason);
    const play = this.#play;
    this.#play = undefined;
    const fields = stream
      ? { stream: stream.key, framesIn: stream.framesIn, bytesIn: stream.bytesIn }
      : play
        ? { playing: play.stream.key, framesOut: play.framesOut, framesDropped: play.dropped }
        : {};
    play?.close();
    this.#deps.metrics.sessions.inc({ protocol: 'rtmp', result });
    this.#log.info({ ...fields, reason }, 'session end');
    if (flush && !this.#socket.destroyed) {
      // Let what was written (a refusal status) reach the peer, but never wait on it for long.
      const socket = this.#socket;
      const timer = setTimeout(() => socket.destroy(), 1000);
      socket.once('close', () => clearTimeout(timer));
      socket.end();
    } else if (!this.#socket.destroyed) this.#socket.destroy();
    for (const fn of this.#closeListeners) fn();
  }

  #reject(reason: string, metricReason: string): void {
    this.#deps.metrics.rejectedInput.inc({ protocol: 'rtmp', reason: metricReason });
    this.close(reason, 'rejected');
  }

  #onDeadline(kind: DeadlineKind): void {
    this.#deps.metrics.deadlineExpired.inc({ protocol: 'rtmp', kind });
    const what = kind === 'handshake' ? 'handshake' : kind === 'idle' ? 'read-idle' : 'write-stall';
    this.close(`${what} deadline expired`, `deadline_${kind}`);
  }

  #onData(data: Buffer): void {
    if (this.#phase === 'closed') return;
    this.#deadlines.read();
    this.#deps.metrics.bytesIn.inc({ protocol: 'rtmp' }, data.length);
    if (this.#stream) this.#stream.bytesIn += data.length;
    try {
      if (this.#phase !== 'chunks') data = this.#handshake(data);
      if (this.#phase === 'chunks' && data.length) {
        for (const msg of this.#reader.push(data)) {
          this.#onMessage(msg);
          if (this.closed) return;
        }
        this.#maybeAck();
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  #fail(err: unknown): void {
    if (err instanceof CodecError) this.#reject(`bad input: ${err.message}`, err.format);
    else if (err instanceof PoolExhaustedError) this.#reject(err.message, 'pool_exhausted');
    else {
      this.#log.error({ err }, 'unexpected error in RTMP session');
      this.close(`internal error: ${(err as Error).message}`, 'error');
    }
  }

  /** Consumes handshake bytes; returns what is left over for the chunk stream. */
  #handshake(data: Buffer): Buffer {
    this.#handshakeBuf = this.#handshakeBuf.length ? Buffer.concat([this.#handshakeBuf, data]) : data;
    if (this.#phase === 'c0c1') {
      if (this.#handshakeBuf.length >= 1 && this.#handshakeBuf[0] !== 3) {
        throw new CodecError('rtmp', `handshake: unsupported version byte 0x${this.#handshakeBuf[0]!.toString(16)}`);
      }
      if (this.#handshakeBuf.length < 1 + HANDSHAKE_SIZE) return Buffer.alloc(0);
      const { s0s1s2 } = serverHandshake(this.#handshakeBuf.subarray(0, 1 + HANDSHAKE_SIZE), randomBytes, Date.now());
      this.#write(s0s1s2);
      this.#handshakeBuf = this.#handshakeBuf.subarray(1 + HANDSHAKE_SIZE);
      this.#phase = 'c2';
    }
    if (this.#handshakeBuf.length < HANDSHAKE_SIZE) return Buffer.alloc(0);
    const rest = this.#handshakeBuf.subarray(HANDSHAKE_SIZE);
    this.#handshakeBuf = Buffer.alloc(0);
    this.#phase = 'chunks';
    this.#deadlines.handshakeDone();
    return rest;
  }

  /** Returns false when the socket buffer is full (the write-stall deadline runs until it drains). */
  #write(bytes: Buffer): boolean {
    if (this.#socket.destroyed) return true;
    const flushed = this.#socket.write(bytes);
    this.#deadlines.wrote(flushed);
    return flushed;
  }

  #send(csid: number, msg: RtmpMessage): boolean {
    return this.#write(encodeMessage(csid, msg, this.#deps.outChunkSize));
  }

  #maybeAck(): void {
    if (this.#peerWindow > 0 && this.#reader.bytesRead - this.#lastAck >= this.#peerWindow) {
      this.#lastAck = this.#reader.bytesRead;
      this.#send(Csid.Control, acknowledgement(this.#reader.bytesRead));
    }
  }

  #onMessage(msg: RtmpMessage): void {
    if (this.#pending && (msg.type === MessageType.Video || msg.type === MessageType.Audio || msg.type === MessageType.DataAmf0)) {
      this.#pendingBytes += msg.payload.length;
      if (this.#pendingBytes > this.#deps.maxMessageSize) throw new CodecError('rtmp', 'too much media before the publish was accepted');
      this.#pending.push(msg);
      return;
    }
    switch (msg.type) {
      case MessageType.Video:
        if (this.#ingest) this.#ingest.video(msg.payload, msg.timestamp);
        return;
      case MessageType.Audio:
        if (this.#ingest) this.#ingest.audio(msg.payload, msg.timestamp);
        return;
      case MessageType.DataAmf0:
      case MessageType.DataAmf3:
        if (this.#ingest) this.#ingest.metadata(parseData(msg));
        return;
      case MessageType.CommandAmf0:
      case MessageType.CommandAmf3:
        this.#onCommand(parseCommand(msg), msg.streamId);
        return;
      case MessageType.WindowAckSize:
        this.#peerWindow = readU32(msg.payload, 'Window Acknowledgement Size');
        return;
      case MessageType.UserControl: {
        const uc = parseUserControl(msg.payload);
        if (uc.event === UserControlEvent.PingRequest) this.#send(Csid.Control, userControl(UserControlEvent.PingResponse, uc.value));
        return;
      }
      case MessageType.Aggregate:
        throw new CodecError('rtmp', 'aggregate messages are not supported');
      default:
        // Set Chunk Size and Abort are applied by the reader; acknowledgements and bandwidth need nothing.
        return;
    }
  }

  #onCommand(cmd: Command, streamId: number): void {
    switch (cmd.name) {
      case 'connect':
        return this.#onConnect(cmd);
      case 'createStream':
        this.#send(Csid.Command, command(0, '_result', cmd.transactionId, null, PUBLISH_STREAM_ID));
        return;
      case 'releaseStream':
      case 'FCPublish':
        this.#send(Csid.Command, command(0, '_result', cmd.transactionId, null));
        return;
      case 'publish':
        this.#pending = [];
        this.#onPublish(cmd, streamId).catch((err: unknown) => this.#fail(err));
        return;
      case 'play':
        return this.#onPlay(cmd, streamId);
      case 'getStreamLength':
        // A live stream has no length; 0 tells the player so.
        this.#send(Csid.Command, command(0, '_result', cmd.transactionId, null, 0));
        return;
      case 'FCUnpublish':
      case 'deleteStream':
      case 'closeStream':
        if (this.#publishing) this.#unpublish();
        else if (this.#play) this.close('player stopped playing', 'closed', true);
        return;
      default:
        this.#log.debug({ command: cmd.name }, 'ignored command');
    }
  }

  #onConnect(cmd: Command): void {
    const app = cmd.object?.app;
    if (typeof app !== 'string' || app === '') throw new CodecError('rtmp', 'connect without an app');
    this.#app = splitQuery(app).base.replace(/\/+$/, '');
    this.#send(Csid.Control, windowAckSize(WINDOW_ACK_SIZE));
    this.#send(Csid.Control, setPeerBandwidth(WINDOW_ACK_SIZE, 2));
    this.#send(Csid.Control, setChunkSize(this.#deps.outChunkSize));
    this.#send(
      Csid.Command,
      command(0, '_result', cmd.transactionId, { fmsVer: 'FMS/3,0,1,123', capabilities: 31 }, {
        ...statusObject('status', 'NetConnection.Connect.Success', 'Connection succeeded.'),
        objectEncoding: 0,
      }),
    );
  }

  #onStatus(streamId: number, level: 'status' | 'error', code: string, description: string): void {
    this.#send(Csid.Command, command(streamId, 'onStatus', 0, null, statusObject(level, code, description)));
  }

  async #onPublish(cmd: Command, streamId: number): Promise<void> {
    const raw = cmd.args[0];
    if (typeof raw !== 'string' || raw === '') throw new CodecError('rtmp', 'publish without a stream name');
    if (!this.#app) {
      this.#onStatus(streamId, 'error', 'NetStream.Publish.BadName', 'connect first');
      return this.#reject('publish before connect', 'rtmp');
    }
    if (this.#publishing || this.#play) {
      this.#onStatus(streamId, 'error', 'NetStream.Publish.BadName', 'already publishing or playing');
      return;
    }
    this.#publishing = true;
    const { base: name, params } = splitQuery(raw);
    const key = params.get('key') ?? undefined;
    let stream: Stream;
    try {
      stream = await this.#deps.registry.publish(
        { app: this.#app, name, protocol: 'rtmp', remoteAddress: this.remoteAddress, key },
        { protocol: 'rtmp', remoteAddress: this.remoteAddress, close: (reason) => this.close(reason, 'kicked') },
      );
    } catch (err) {
      if (!(err instanceof PublishRefusedError)) throw err;
      this.#publishing = false;
      this.#pending = undefined;
      if (this.closed) return;
      this.#onStatus(streamId, 'error', 'NetStream.Publish.BadName', err.message);
      this.#deps.metrics.sessions.inc({ protocol: 'rtmp', result: `refused_${err.code}` });
      this.#log.info({ app: this.#app, name, reason: err.message }, 'publish refused');
      this.close(`publish refused: ${err.message}`, 'refused', true);
      return;
    }
    if (this.closed) {
      stream.end('publisher left during authorisation');
      return;
    }
    this.#stream = stream;
    this.#ingest = new RtmpIngest(stream, this.#deps.pool);
    this.#send(Csid.Control, userControl(UserControlEvent.StreamBegin, streamId));
    this.#onStatus(streamId, 'status', 'NetStream.Publish.Start', `${stream.key} is now published.`);
    this.#log.info({ stream: stream.key }, 'session start: publishing');
    const pending = this.#pending ?? [];
    this.#pending = undefined;
    this.#pendingBytes = 0;
    for (const msg of pending) this.#onMessage(msg);
  }

  #onPlay(cmd: Command, streamId: number): void {
    const raw = cmd.args[0];
    if (typeof raw !== 'string' || raw === '') throw new CodecError('rtmp', 'play without a stream name');
    if (!this.#app) return this.#reject('play before connect', 'rtmp');
    if (this.#publishing || this.#play) {
      this.#onStatus(streamId, 'error', 'NetStream.Play.Failed', 'this connection is already publishing or playing');
      return;
    }
    const { base: name } = splitQuery(raw);
    const stream = this.#deps.registry.get(this.#app, name);
    if (!stream) {
      this.#onStatus(streamId, 'error', 'NetStream.Play.StreamNotFound', `${this.#app}/${name} is not live`);
      this.#log.info({ app: this.#app, name }, 'play refused: stream not live');
      this.close('play of a stream that is not live', 'not_found', true);
      return;
    }
    // A player only receives: its writes are watched (write-stall), not its reads.
    this.#deadlines.disableIdle();
    this.#play = new PlaySession({
      stream,
      streamId,
      send: (csid, msg) => this.#send(csid, msg),
      onDrain: (fn) => {
        this.#socket.once('drain', fn);
        return () => this.#socket.off('drain', fn);
      },
      log: this.#log,
      metrics: this.#deps.metrics,
      onEnd: (reason) => this.close(`played stream ended: ${reason}`, 'ended', true),
    });
    this.#log.info({ stream: stream.key }, 'session start: playing');
  }

  #unpublish(): void {
    this.#publishing = false;
    const stream = this.#stream;
    this.#stream = undefined;
    this.#ingest = undefined;
    if (stream) {
      stream.end('unpublished');
      this.#log.info({ stream: stream.key, framesIn: stream.framesIn }, 'unpublished');
    }
  }
}
