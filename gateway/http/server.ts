/** The one HTTP server: routes from every feature, plus /healthz and /metrics. */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import { Router, sendText, type Route } from './router.ts';
import { listen } from '../net/listen.ts';

export class HttpServer {
  readonly router = new Router();
  readonly #server: Server;
  readonly #log: Logger;

  constructor(metrics: Metrics, log: Logger) {
    this.#log = log;
    this.router.add(
      { method: 'GET', path: /^\/healthz$/, handle: (_req, res) => sendText(res, 200, 'ok\n') },
      {
        method: 'GET',
        path: /^\/metrics$/,
        handle: async (_req, res) => {
          const body = await metrics.registry.metrics();
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        },
      },
    );
    this.#server = createServer((req, res) => {
      this.router.dispatch(req, res).catch((err: unknown) => this.#log.error({ err, url: req.url }, 'HTTP handler failed'));
    });
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 30_000;
    this.#server.keepAliveTimeout = 5_000;
  }

  /** Hands WebSocket upgrades to `handler`; a path it declines is refused. */
  onUpgrade(handler: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean): void {
    this.#server.on('upgrade', (req, socket, head) => {
      if (!handler(req, socket, head)) socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
    });
  }

  add(...routes: Route[]): void {
    this.router.add(...routes);
  }

  listen(port: number, host: string): Promise<{ port: number; host: string }> {
    return listen(this.#server, port, host, 'HTTP server');
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }
}
