/** A tiny HTTP server for test pages and the scripts they load, on a free loopback port. */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';

export interface StaticServer {
  readonly url: string;
  close(): Promise<void>;
}

export async function serveStatic(files: Record<string, { type: string; body: string | Buffer }>): Promise<StaticServer> {
  const server: Server = createServer((req, res) => {
    const f = files[new URL(req.url ?? '/', 'http://x').pathname];
    if (!f) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': f.type }).end(f.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${addr.port}`,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export function hlsJsSource(): string {
  return readFileSync(new URL('../../node_modules/hls.js/dist/hls.min.js', import.meta.url), 'utf8');
}
