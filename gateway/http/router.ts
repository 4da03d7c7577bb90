/**
 * A minimal method+path router for the one HTTP server (WHIP, HLS, API, metrics, health).
 * Each feature module contributes Routes; the server owns the socket.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface Route {
  readonly method: string | readonly string[];
  /** Matched against the decoded-nothing raw pathname (no query). */
  readonly path: RegExp;
  handle(req: IncomingMessage, res: ServerResponse, match: RegExpExecArray, url: URL): void | Promise<void>;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Reads a request body up to `limit` bytes; a larger one is refused with 413. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new HttpError(413, `body over ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `body over ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Dot segments, encoded dots, slashes and backslashes, and backslashes themselves. */
const UNSAFE_PATH = /(^|\/)\.{1,2}(\/|$)|%2e|%2f|%5c|\\/i;

export class Router {
  readonly #routes: Route[] = [];

  add(...routes: Route[]): void {
    this.#routes.push(...routes);
  }

  /** Finds the route; answers 404 for an unknown path and 405 for a known path with another method. */
  async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // URL parsing would resolve dot segments; a path that needs resolving addresses nothing here.
    if (UNSAFE_PATH.test((req.url ?? '/').split('?')[0]!)) {
      sendText(res, 404, 'not found\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    let pathMatched = false;
    for (const route of this.#routes) {
      const m = route.path.exec(url.pathname);
      if (!m) continue;
      pathMatched = true;
      const methods = typeof route.method === 'string' ? [route.method] : route.method;
      if (!methods.includes(method) && !(method === 'HEAD' && methods.includes('GET'))) continue;
      try {
        await route.handle(req, res, m, url);
      } catch (err) {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (err instanceof HttpError) sendText(res, err.status, `${err.message}\n`, { ...err.headers });
        else sendText(res, 500, 'internal error\n');
        if (!(err instanceof HttpError)) throw err;
      }
      return;
    }
    sendText(res, pathMatched ? 405 : 404, pathMatched ? 'method not allowed\n' : 'not found\n');
  }
}
