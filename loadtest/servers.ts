/**
 * The servers the bench loads, each started on loopback ports in its own temporary folder and stopped
 * (SIGTERM, then SIGKILL) and reaped by stop(), which also removes its folders:
 *
 * - tributary: `node --import tsx gateway/main.ts` with a generated config, ports from its "listening" line;
 * - nginx-rtmp: Debian nginx + libnginx-mod-rtmp, one process (master_process off), HLS on with its
 *   files on /dev/shm (the root disk's discard mount stalls HLS writers) served by the same nginx;
 * - node-media-server 4: RTMP only (v4 has no HLS), run from a temporary folder (it writes a store there).
 */
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start, type Proc, type ProcResult } from './proc.ts';

export type ServerName = 'tributary' | 'nginx-rtmp' | 'node-media-server';

export interface ServerUnderTest {
  readonly name: ServerName;
  readonly proc: Proc;
  readonly pid: number;
  /** rtmp://127.0.0.1:PORT/live */
  readonly rtmpUrl: string;
  /** Playlist URL template with {name}, where the server makes HLS. */
  readonly hlsUrl: string | undefined;
  /** WHIP endpoint template with {name}, where the server has one. */
  readonly whipUrl: string | undefined;
  stop(): Promise<ProcResult>;
}

export interface LaunchOptions {
  /** The server is killed after this long whatever happens. */
  timeoutMs: number;
  /** tributary: write a V8 CPU profile into this folder on exit. */
  cpuProfDir?: string;
  /** nginx-rtmp: also record every stream as FLV into this folder (tests). */
  recordDir?: string;
  /** nginx-rtmp: HLS on (default true). */
  hls?: boolean;
}

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const NGINX_RTMP_MODULE = '/usr/lib/nginx/modules/ngx_rtmp_module.so';

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Resolves once a TCP connect to the port succeeds; rejects when the process exits or time runs out. */
async function waitForPort(port: number, proc: Proc, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let exited = false;
  void proc.done.then(
    () => (exited = true),
    () => (exited = true),
  );
  while (performance.now() < deadline) {
    if (exited) throw new Error(`exited before listening: ${proc.stderr().slice(-800)}${proc.stdout().slice(-800)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not listening on ${port} within ${timeoutMs} ms`);
}

function cleanupOnStop(proc: Proc, dirs: string[]): () => Promise<ProcResult> {
  return async () => {
    const r = await proc.stop(8000);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    return r;
  };
}

export async function launchTributary(o: LaunchOptions): Promise<ServerUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-'));
  const config = {
    log: { level: 'info' },
    http: { listen: { host: '127.0.0.1', port: 0 } },
    // WHIP on loopback only; enough sessions for the largest step.
    webrtc: { maxSessions: 5000, ice: { udp4: '127.0.0.1', additionalHostAddresses: ['127.0.0.1'] } },
    streams: { maxStreams: 5000 },
    rtmp: { listen: { host: '127.0.0.1', port: 0 }, maxConnections: 5000 },
  };
  const configPath = join(dir, 'config.json');
  writeFileSync(configPath, JSON.stringify(config));
  const nodeArgs = ['--import', 'tsx'];
  if (o.cpuProfDir) nodeArgs.push('--cpu-prof', '--cpu-prof-dir', o.cpuProfDir);
  const proc = start(process.execPath, [...nodeArgs, 'gateway/main.ts', '--config', configPath], { timeoutMs: o.timeoutMs, cwd: REPO_ROOT, keep: 20_000 });
  const stop = cleanupOnStop(proc, [dir]);
  try {
    const deadline = performance.now() + 30_000;
    let ports: { rtmp: number; http: number } | undefined;
    while (!ports) {
      const line = proc.stdout().split('\n').find((l) => l.includes('"msg":"listening"'));
      if (line) {
        const j = JSON.parse(line) as { rtmp: { port: number }; http: { port: number } };
        ports = { rtmp: j.rtmp.port, http: j.http.port };
        break;
      }
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`tributary exited: ${proc.stderr().slice(-800)}${proc.stdout().slice(-800)}`);
      if (performance.now() > deadline) throw new Error('tributary did not log "listening" within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const http = `http://127.0.0.1:${ports.http}`;
    return {
      name: 'tributary',
      proc,
      pid: proc.pid,
      rtmpUrl: `rtmp://127.0.0.1:${ports.rtmp}/live`,
      hlsUrl: `${http}/hls/live/{name}/index.m3u8`,
      whipUrl: `${http}/whip/live/{name}`,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

export function nginxConfig(o: { dir: string; hlsDir: string; rtmpPort: number; httpPort: number; recordDir?: string; hls: boolean }): string {
  const hls = o.hls ? `hls on; hls_path ${o.hlsDir}; hls_nested on; hls_fragment 2s; hls_playlist_length 12s;` : '';
  const record = o.recordDir ? `record all; record_path ${o.recordDir}; record_unique off;` : 'record off;';
  const tmp = join(o.dir, 'tmp');
  return `load_module ${NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid ${join(o.dir, 'nginx.pid')};
error_log ${join(o.dir, 'error.log')} warn;
events { worker_connections 8192; }
rtmp {
  server {
    listen 127.0.0.1:${o.rtmpPort};
    chunk_size 4096;
    application live {
      live on;
      ${hls}
      ${record}
    }
  }
}
http {
  access_log off;
  client_body_temp_path ${tmp}; proxy_temp_path ${tmp}; fastcgi_temp_path ${tmp}; uwsgi_temp_path ${tmp}; scgi_temp_path ${tmp};
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:${o.httpPort};
    location /hls/ { alias ${o.hlsDir}/; add_header Cache-Control no-cache; add_header Access-Control-Allow-Origin *; }
  }
}
`;
}

export async function launchNginxRtmp(o: LaunchOptions): Promise<ServerUnderTest> {
  if (!existsSync(NGINX_RTMP_MODULE)) throw new Error(`nginx-rtmp is not installed (${NGINX_RTMP_MODULE}): apt-get install nginx libnginx-mod-rtmp`);
  const dir = mkdtempSync(join(tmpdir(), 'nginx-rtmp-bench-'));
  // HLS in memory: on the discard-mounted root disk nginx-rtmp's HLS falls behind at 50 streams.
  const shm = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/nginx-rtmp-hls-') : mkdtempSync(join(tmpdir(), 'nginx-rtmp-hls-'));
  const [rtmpPort, httpPort] = [await freePort(), await freePort()];
  const hls = o.hls ?? true;
  writeFileSync(join(dir, 'nginx.conf'), nginxConfig({ dir, hlsDir: shm, rtmpPort, httpPort, hls, ...(o.recordDir ? { recordDir: o.recordDir } : {}) }));
  const proc = start('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], { timeoutMs: o.timeoutMs, keep: 20_000 });
  const stop = cleanupOnStop(proc, [dir, shm]);
  try {
    await waitForPort(rtmpPort, proc, 15_000);
  } catch (err) {
    await stop();
    throw new Error(`nginx-rtmp: ${(err as Error).message}`);
  }
  return {
    name: 'nginx-rtmp',
    proc,
    pid: proc.pid,
    rtmpUrl: `rtmp://127.0.0.1:${rtmpPort}/live`,
    hlsUrl: hls ? `http://127.0.0.1:${httpPort}/hls/{name}/index.m3u8` : undefined,
    whipUrl: undefined,
    stop,
  };
}

export async function launchNodeMediaServer(o: LaunchOptions): Promise<ServerUnderTest> {
  const app = join(REPO_ROOT, 'node_modules', 'node-media-server', 'bin', 'app.js');
  if (!existsSync(app)) throw new Error('node-media-server is not installed (npm install)');
  const dir = mkdtempSync(join(tmpdir(), 'nms-bench-'));
  const [rtmpPort, httpPort] = [await freePort(), await freePort()];
  const config = {
    bind: '127.0.0.1',
    notify: { url: '' },
    store: { path: './data', maxHistory: 1000 },
    // Secrets set and no users: nothing is generated or written back into the config.
    auth: { play: false, publish: false, secret: 'bench', jwt: { secret: 'bench', expiresIn: '24h', refreshExpiresIn: '7d', algorithm: 'HS256', users: [] } },
    rtmp: { port: rtmpPort },
    http: { port: httpPort },
    webadmin: { enable: false },
    record: { auto: false, path: './record' },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const proc = start(process.execPath, [app, '-c', join(dir, 'config.json'), '--no-admin'], { timeoutMs: o.timeoutMs, cwd: dir, keep: 20_000 });
  const stop = cleanupOnStop(proc, [dir]);
  try {
    await waitForPort(rtmpPort, proc, 15_000);
  } catch (err) {
    await stop();
    throw new Error(`node-media-server: ${(err as Error).message}`);
  }
  return { name: 'node-media-server', proc, pid: proc.pid, rtmpUrl: `rtmp://127.0.0.1:${rtmpPort}/live`, hlsUrl: undefined, whipUrl: undefined, stop };
}

export function launch(name: ServerName, o: LaunchOptions): Promise<ServerUnderTest> {
  switch (name) {
    case 'tributary':
      return launchTributary(o);
    case 'nginx-rtmp':
      return launchNginxRtmp(o);
    case 'node-media-server':
      return launchNodeMediaServer(o);
  }
}
