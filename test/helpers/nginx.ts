/**
 * nginx-rtmp (Debian nginx + libnginx-mod-rtmp) as a foreign RTMP peer: one process, no daemon, no master,
 * on a free loopback port, writing only under its own temporary folder (config, error log, pid).
 * stop() kills it (SIGKILL, as a crash would) and reaps it; restart() brings it back on the same port.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { start, type Proc } from './process.ts';
import { waitFor } from './wait.ts';

export interface Nginx {
  readonly port: number;
  readonly dir: string;
  url(path: string): string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Kills it with SIGKILL and waits for the exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port and waits until it accepts. */
  restart(): Promise<void>;
  /** Kills it (if running) and removes its folder. For t.teardown. */
  dispose(): Promise<void>;
  errorLog(): string;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Lifetime cap of one nginx process: a test that forgets it cannot leave it behind for long. */
const NGINX_LIFETIME_MS = 10 * 60_000;

export async function startNginx(opts: { applications?: string } = {}): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'trib-nginx-'));
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} info;
events { worker_connections 512; }
rtmp {
  server {
    listen 127.0.0.1:${port};
    chunk_size 4096;
    application live { live on; }
    ${opts.applications ?? ''}
  }
}
`,
  );
  let proc: Proc | undefined;
  const launch = async (): Promise<void> => {
    const p = start('nginx', ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], { timeoutMs: NGINX_LIFETIME_MS });
    proc = p;
    try {
      await waitFor(
        async () => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`nginx exited: ${p.stderr()} ${readLog()}`);
          return accepts(port);
        },
        { timeoutMs: 10_000, what: `nginx to accept on ${port}` },
      );
    } catch (err) {
      await p.kill();
      throw err;
    }
  };
  const readLog = (): string => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async (): Promise<void> => {
    const p = proc;
    proc = undefined;
    if (p) await p.kill('SIGKILL');
  };
  try {
    await launch();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    dir,
    url: (path) => `rtmp://127.0.0.1:${port}/${path}`,
    get running() {
      return proc !== undefined && proc.child.exitCode === null && proc.child.signalCode === null;
    },
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    errorLog: readLog,
  };
}
