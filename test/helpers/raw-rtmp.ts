/** A raw RTMP client for tests that must send exactly the bytes they choose. */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { ChunkReader, encodeMessage, type RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { HANDSHAKE_SIZE, clientHello, clientReply } from '../../codecs/rtmp/handshake.ts';

export class RawRtmp {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  readonly received: RtmpMessage[] = [];
  #buf = Buffer.alloc(0);
  #reader: ChunkReader | undefined;
  #waiters: Array<() => void> = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      if (this.#reader) {
        try {
          this.received.push(...this.#reader.push(d));
        } catch {
          socket.destroy();
        }
      } else this.#buf = Buffer.concat([this.#buf, d]);
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  static async open(port: number): Promise<RawRtmp> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawRtmp(socket);
  }

  /** Completes the digest handshake as ffmpeg would; after it, chunks can be sent. */
  async handshake(): Promise<void> {
    const { c0c1, digest } = clientHello(randomBytes, 0);
    this.socket.write(c0c1);
    await this.#until(() => this.#buf.length >= 1 + 2 * HANDSHAKE_SIZE);
    const c2 = clientReply(this.#buf.subarray(0, 1 + 2 * HANDSHAKE_SIZE), digest, randomBytes);
    const rest = this.#buf.subarray(1 + 2 * HANDSHAKE_SIZE);
    this.#reader = new ChunkReader({ maxChunkSize: 1 << 24, maxMessageSize: 1 << 24 });
    if (rest.length) this.received.push(...this.#reader.push(rest));
    this.socket.write(c2);
  }

  send(msg: RtmpMessage, csid = 3, chunkSize = 128): void {
    this.socket.write(encodeMessage(csid, msg, chunkSize));
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  async waitFor(pred: (m: RtmpMessage) => boolean, timeoutMs = 5000): Promise<RtmpMessage> {
    let found: RtmpMessage | undefined;
    await this.#until(() => (found = this.received.find(pred)) !== undefined, timeoutMs);
    return found!;
  }

  #until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('raw RTMP client: timed out')), timeoutMs);
      const check = (): void => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else if (this.socket.destroyed) {
          clearTimeout(timer);
          reject(new Error('raw RTMP client: connection closed'));
        } else this.#waiters.push(check);
      };
      check();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}
