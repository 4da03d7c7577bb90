/**
 * Mirrors one stream's HLS output into a directory, off the event loop's critical path: writes are
 * queued and done with fs/promises, playlists are replaced atomically (write then rename), and a
 * failure is logged once and counted rather than stopping the stream.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { SegmentSink } from './packager.ts';

export class DiskSink implements SegmentSink {
  readonly #dir: string;
  readonly #log: Logger;
  #chain: Promise<void>;
  #failed = false;

  constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log;
    this.#chain = mkdir(dir, { recursive: true }).then(
      () => undefined,
      (err: unknown) => this.#fail(err),
    );
  }

  segment(name: string, data: Uint8Array): void {
    const copy = Buffer.from(data);
    this.#enqueue(() => writeFile(join(this.#dir, name), copy));
  }

  playlist(text: string): void {
    const tmp = join(this.#dir, 'index.m3u8.tmp');
    this.#enqueue(async () => {
      await writeFile(tmp, text);
      await rename(tmp, join(this.#dir, 'index.m3u8'));
    });
  }

  remove(name: string): void {
    this.#enqueue(() => rm(join(this.#dir, name), { force: true }));
  }

  /** Resolves when everything queued so far is on disk (or failed). */
  flushed(): Promise<void> {
    return this.#chain;
  }

  #enqueue(op: () => Promise<void>): void {
    this.#chain = this.#chain.then(op).catch((err: unknown) => this.#fail(err));
  }

  #fail(err: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#log.error({ err, dir: this.#dir }, 'HLS disk output failed; serving from memory only');
  }
}
