/**
 * The gateway's side of one transcode worker thread: starts it (TypeScript through tsx, as the
 * gateway itself runs), types its messages, and terminates it and waits for its exit on every path.
 */
import { Worker } from 'node:worker_threads';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.ts';

const ENTRY = new URL('./worker.ts', import.meta.url).href;

/** Worker threads get no --import loaders from the parent: register tsx there before the entry loads. */
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsx) (await import(workerData.tsx)).register();
  await import(workerData.entry);
})().catch((err) => {
  process.stderr.write('transcode worker failed to start: ' + (err && err.stack || err) + '\\n');
  process.exit(70);
});
`;

function tsxApi(): string | undefined {
  if (!ENTRY.endsWith('.ts')) return undefined;
  return import.meta.resolve('tsx/esm/api');
}

export interface WorkerHostOptions {
  /** JS heap limit of the thread; native (FFmpeg) memory is bounded by the frame pool instead. */
  maxHeapMb?: number;
  onMessage(m: FromWorker): void;
  /** The thread is gone: `code` 0 after a clean end; `error` when it threw or failed to start. */
  onExit(code: number, error: Error | undefined): void;
}

export class WorkerHost {
  readonly threadId: number;
  readonly exited: Promise<number>;
  readonly #worker: Worker;
  #exitCode: number | undefined;
  #error: Error | undefined;

  constructor(init: WorkerInit, opts: WorkerHostOptions) {
    this.#worker = new Worker(BOOTSTRAP, {
      eval: true,
      workerData: { ...init, entry: ENTRY, tsx: tsxApi() },
      resourceLimits: { maxOldGenerationSizeMb: opts.maxHeapMb ?? 256 },
      stdout: false,
      stderr: false,
    });
    this.threadId = this.#worker.threadId;
    this.#worker.on('message', (m: FromWorker) => opts.onMessage(m));
    this.#worker.on('error', (err) => {
      this.#error = err;
    });
    this.exited = new Promise<number>((resolve) => {
      this.#worker.once('exit', (code) => {
        this.#exitCode = code;
        opts.onExit(code, this.#error);
        resolve(code);
      });
    });
  }

  get running(): boolean {
    return this.#exitCode === undefined;
  }

  post(m: ToWorker, transfer: ArrayBuffer[] = []): void {
    if (this.#exitCode === undefined) this.#worker.postMessage(m, transfer);
  }

  /** Stops the thread (interrupting its JavaScript) and resolves once it has exited. */
  async terminate(): Promise<number> {
    if (this.#exitCode !== undefined) return this.#exitCode;
    await this.#worker.terminate();
    return this.exited;
  }
}
