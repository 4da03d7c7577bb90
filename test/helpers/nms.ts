/**
 * node-media-server v4 as a second foreign RTMP peer: a child process run from a temporary folder (it
 * writes a JSON store there), RTMP only, on a free loopback port. dispose() kills and reaps it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accepts, freePort } from './nginx.ts';
import { start, type Proc } from './process.ts';
import { waitFor } from './wait.ts';

export interface Nms {
  readonly port: number;
  readonly proc: Proc;
  url(path: string): string;
  /** Kills it (SIGKILL) and waits for the exit. */
  stop(): Promise<void>;
  /** stop() and remove its folder. For t.teardown. */
  dispose(): Promise<void>;
}

const SCRIPT = `const NodeMediaServer = require(process.argv[2]);
const port = Number(process.argv[3]);
const nms = new NodeMediaServer({ bind: '127.0.0.1', rtmp: { port }, store: { path: './data' }, auth: { play: false, publish: false } }, './config.json');
nms.run();
`;

export async function startNms(): Promise<Nms> {
  const dir = mkdtempSync(join(tmpdir(), 'trib-nms-'));
  const port = await freePort();
  writeFileSync(join(dir, 'nms.cjs'), SCRIPT);
  const module = createRequire(import.meta.url).resolve('node-media-server');
  const proc = start(process.execPath, [join(dir, 'nms.cjs'), module, String(port)], { timeoutMs: 10 * 60_000, cwd: dir, keep: 20_000 });
  const stop = async (): Promise<void> => {
    await proc.kill('SIGKILL');
  };
  try {
    await waitFor(
      async () => {
        if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`node-media-server exited: ${proc.stdout()} ${proc.stderr()}`);
        return accepts(port);
      },
      { timeoutMs: 15_000, what: `node-media-server to accept on ${port}` },
    );
  } catch (err) {
    await stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    proc,
    url: (path) => `rtmp://127.0.0.1:${port}/${path}`,
    stop,
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
