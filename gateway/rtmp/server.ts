/** The RTMP listener: accepts connections up to a cap and owns every RtmpConnection it made. */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { RtmpConnection, type RtmpConnectionDeps } from './connection.ts';
import { listen } from '../net/listen.ts';

export interface RtmpServerOptions extends RtmpConnectionDeps {
  maxConnections: number;
}

export class RtmpServer {
  readonly #server: Server;
  readonly #opts: RtmpServerOptions;
  readonly #log: Logger;
  readonly #connections = new Set<RtmpConnection>();
  #nextId = 1;

  constructor(opts: RtmpServerOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#server = createServer((socket) => this.#accept(socket));
  }

  get connections(): number {
    return this.#connections.size;
  }

  listen(port: number, host: string): Promise<{ port: number; host: string }> {
    return listen(this.#server, port, host, 'RTMP server');
  }

  #accept(socket: Socket): void {
    if (this.#connections.size >= this.#opts.maxConnections) {
      this.#opts.metrics.rejectedInput.inc({ protocol: 'rtmp', reason: 'connection_limit' });
      this.#log.warn({ remote: socket.remoteAddress, limit: this.#opts.maxConnections }, 'RTMP connection refused: connection limit');
      socket.destroy();
      return;
    }
    const conn = new RtmpConnection(socket, `rtmp-${this.#nextId++}`, this.#opts);
    this.#connections.add(conn);
    conn.onClose(() => this.#connections.delete(conn));
  }

  /** Stops accepting, closes every connection with `reason`, resolves when the listener is closed. */
  async close(reason: string): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const conn of [...this.#connections]) conn.close(reason, 'shutdown');
    await closed;
  }
}
