/**
 * `/api/v1/events`: a WebSocket that streams session events (publish, unpublish) as JSON lines.
 * A client that does not keep up is dropped rather than buffered without bound.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import { streamView } from './api.ts';

const MAX_BUFFERED = 1 << 20;

export class EventsSocket {
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: 4096 });
  readonly #registry: Registry;
  readonly #onPublish = (s: Stream): void => this.#broadcast({ type: 'publish', stream: streamView(s) });
  readonly #onUnpublish = (s: Stream, reason: string): void => this.#broadcast({ type: 'unpublish', app: s.app, name: s.name, reason });

  constructor(registry: Registry) {
    this.#registry = registry;
    registry.on('publish', this.#onPublish);
    registry.on('unpublish', this.#onUnpublish);
  }

  /** Takes an HTTP upgrade; returns false when the path is not ours. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/api/v1/events') return false;
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => ws.terminate());
      ws.send(JSON.stringify({ type: 'hello', streams: this.#registry.list().map(streamView) }));
    });
    return true;
  }

  get clients(): number {
    return this.#wss.clients.size;
  }

  #broadcast(event: object): void {
    const text = JSON.stringify(event);
    for (const ws of this.#wss.clients) this.#send(ws, text);
  }

  #send(ws: WebSocket, text: string): void {
    if (ws.bufferedAmount > MAX_BUFFERED) ws.terminate();
    else ws.send(text);
  }

  close(): void {
    this.#registry.off('publish', this.#onPublish);
    this.#registry.off('unpublish', this.#onUnpublish);
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
  }
}
