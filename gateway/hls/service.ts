/**
 * HLS for every stream: a packager per stream name, created when a stream is published and kept
 * through its grace period, and the HTTP routes that serve playlists and segments from memory.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../../config/schema.ts';
import type { BufferPool } from '../../sessions/pool.ts';
import type { Registry } from '../../sessions/registry.ts';
import type { Stream } from '../../sessions/stream.ts';
import { parseRange } from '../http/range.ts';
import { HttpError, type Route } from '../http/router.ts';
import { DiskSink } from './disk.ts';
import { HlsPackager } from './packager.ts';

const NAME = '[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,127}';
const HLS_PATH = new RegExp(`^/hls/(${NAME})/(${NAME})/(index\\.m3u8|seg-\\d{1,12}\\.(?:ts|m4s)|init-\\d{1,6}\\.mp4)$`);

const CONTENT_TYPES: Record<string, string> = {
  m3u8: 'application/vnd.apple.mpegurl',
  ts: 'video/mp2t',
  m4s: 'video/iso.segment',
  mp4: 'video/mp4',
};

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'content-length, content-range',
};

export class HlsService {
  readonly #packagers = new Map<string, HlsPackager>();
  readonly #config: Config['hls'];
  readonly #pool: BufferPool;
  readonly #log: Logger;

  readonly #onError: (reason: string) => void;

  constructor(config: Config['hls'], registry: Registry, pool: BufferPool, log: Logger, onError: (reason: string) => void = () => {}) {
    this.#config = config;
    this.#onError = onError;
    this.#pool = pool;
    this.#log = log;
    if (config.enabled) registry.on('publish', (s) => this.#onPublish(s));
  }

  get packagers(): number {
    return this.#packagers.size;
  }

  packager(app: string, name: string): HlsPackager | undefined {
    return this.#packagers.get(`${app}/${name}`);
  }

  #onPublish(stream: Stream): void {
    let p = this.#packagers.get(stream.key);
    if (!p) {
      const format = this.#config.apps[stream.app]?.format ?? this.#config.format;
      const sink = this.#config.directory ? new DiskSink(join(this.#config.directory, stream.app, stream.name), this.#log) : undefined;
      const key = stream.key;
      const created: HlsPackager = new HlsPackager(
        key,
        {
          format,
          targetDurationMs: this.#config.targetDurationMs,
          windowSegments: this.#config.windowSegments,
          graceMs: this.#config.graceMs,
          onError: this.#onError,
        },
        this.#pool,
        this.#log,
        () => {
          if (this.#packagers.get(key) === created) this.#packagers.delete(key);
        },
        sink,
      );
      p = created;
      this.#packagers.set(key, p);
    }
    p.attach(stream);
  }

  routes(): Route[] {
    return [
      { method: 'OPTIONS', path: /^\/hls\//, handle: (_req, res) => void res.writeHead(204, { ...CORS, 'access-control-allow-methods': 'GET, HEAD, OPTIONS', 'access-control-allow-headers': 'range' }).end() },
      { method: 'GET', path: HLS_PATH, handle: (req, res, m) => this.#serve(req, res, m[1]!, m[2]!, m[3]!) },
    ];
  }

  #serve(req: IncomingMessage, res: ServerResponse, app: string, name: string, file: string): void {
    const p = this.#packagers.get(`${app}/${name}`);
    if (!p) throw new HttpError(404, 'no such stream', CORS);
    const ext = file.slice(file.lastIndexOf('.') + 1);
    if (file === 'index.m3u8') {
      const text = p.playlist;
      if (text === undefined) throw new HttpError(404, 'no segment yet', CORS);
      return this.#send(req, res, Buffer.from(text), ext, 'no-cache');
    }
    if (ext === 'mp4') {
      const init = p.init(file);
      if (!init) throw new HttpError(404, 'no such init segment', CORS);
      return this.#send(req, res, init, ext, 'max-age=3600');
    }
    const seg = p.segment(file);
    if (!seg) throw new HttpError(404, 'no such segment', CORS);
    // The window may slide while the response is still being written: hold the bytes until then.
    seg.retain();
    let released = false;
    const release = (): void => {
      if (!released) seg.release();
      released = true;
    };
    res.once('close', release);
    try {
      this.#send(req, res, seg.bytes, ext, 'max-age=3600');
    } catch (err) {
      release();
      throw err;
    }
  }

  #send(req: IncomingMessage, res: ServerResponse, body: Uint8Array, ext: string, cache: string): void {
    const headers: Record<string, string | number> = {
      ...CORS,
      'content-type': CONTENT_TYPES[ext] ?? 'application/octet-stream',
      'cache-control': cache,
      'accept-ranges': 'bytes',
    };
    const range = parseRange(req.headers.range, body.length);
    if (range === 'unsatisfiable') throw new HttpError(416, 'range not satisfiable', { ...CORS, 'content-range': `bytes */${body.length}` });
    let part = body;
    let status = 200;
    if (range) {
      part = body.subarray(range.start, range.end + 1);
      status = 206;
      headers['content-range'] = `bytes ${range.start}-${range.end}/${body.length}`;
    }
    headers['content-length'] = part.length;
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : part);
  }

  close(): void {
    for (const p of this.#packagers.values()) p.close();
    this.#packagers.clear();
  }
}
