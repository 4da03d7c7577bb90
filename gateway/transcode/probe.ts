/**
 * Which backend the frame pool uses, decided once at start-up. The GPU is usable when the NVIDIA
 * driver's libcuda is present and node-av opens a CUDA device in a throwaway worker thread (so that a
 * driver that crashes takes only that thread with it). `gpu` without one refuses to start; `auto`
 * falls back to the CPU and says so once.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { WorkerHost } from './worker-host.ts';

export type BackendSetting = 'auto' | 'gpu' | 'cpu';

export interface ProbeResult {
  readonly ok: boolean;
  readonly reason: string;
}

export interface BackendChoice {
  readonly backend: 'cpu' | 'gpu';
  readonly reason: string;
}

export class NoGpuError extends Error {
  constructor(reason: string) {
    super(`transcode.pool.backend is gpu but no CUDA device can be used: ${reason}`);
    this.name = 'NoGpuError';
  }
}

const LIBCUDA = 'libcuda.so.1';
const LIB_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/nvidia/lib64', '/usr/local/nvidia/lib', '/usr/lib/wsl/lib'];

/** Where the driver's libcuda.so.1 is, if anywhere the dynamic loader would look. */
export function findLibcuda(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), ...LIB_DIRS];
  for (const d of dirs) {
    const p = join(d, LIBCUDA);
    if (existsSync(p)) return p;
  }
  return undefined;
}

const PROBE_TIMEOUT_MS = 30_000;

/** Opens (and closes) a CUDA device through node-av in a worker thread. */
export async function probeCuda(device?: string): Promise<ProbeResult> {
  const lib = findLibcuda();
  if (!lib) return { ok: false, reason: `${LIBCUDA} (from the NVIDIA driver) was not found` };
  let result: ProbeResult | undefined;
  const host = new WorkerHost(
    { mode: 'probe', ...(device !== undefined ? { device } : {}) },
    {
      onMessage: (m) => {
        if (m.type === 'probe') result = { ok: m.ok, reason: m.ok ? `${m.message} (${lib})` : m.message };
      },
      onExit: () => undefined,
    },
  );
  const timer = setTimeout(() => void host.terminate(), PROBE_TIMEOUT_MS);
  try {
    const code = await host.exited;
    return result ?? { ok: false, reason: `the probe thread exited with code ${code} without an answer` };
  } finally {
    clearTimeout(timer);
  }
}

/** The backend for this process: probed once, logged once. */
export async function chooseBackend(
  setting: BackendSetting,
  log: Logger,
  opts: { device?: string; probe?: (device?: string) => Promise<ProbeResult> } = {},
): Promise<BackendChoice> {
  if (setting === 'cpu') {
    const choice = { backend: 'cpu', reason: 'transcode.pool.backend is cpu' } as const;
    log.info(choice, 'transcode backend');
    return choice;
  }
  const probed = await (opts.probe ?? probeCuda)(opts.device);
  if (!probed.ok) {
    if (setting === 'gpu') throw new NoGpuError(probed.reason);
    const choice = { backend: 'cpu', reason: `no GPU: ${probed.reason}` } as const;
    log.info(choice, 'transcode backend: auto chose the CPU');
    return choice;
  }
  const choice = { backend: 'gpu', reason: probed.reason } as const;
  log.info(choice, setting === 'auto' ? 'transcode backend: auto chose the GPU' : 'transcode backend');
  return choice;
}
