/**
 * Child processes of the load tools (ffmpeg, the servers under test, the generator). Every one has a
 * deadline, can be niced, is killed with its whole process group on stop, and is always reaped; a
 * registry kills whatever is still running when this process exits or is interrupted.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ProcOptions {
  /** The process is killed (SIGKILL to its group) after this long. */
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run under `nice -n N`. */
  nice?: number;
  /** Keep at most this many characters of each output stream (the tail). */
  keep?: number;
  /** Called with each complete stdout line. */
  onLine?: (line: string) => void;
}

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited and its pipes are closed. */
  readonly done: Promise<ProcResult>;
  stdout(): string;
  stderr(): string;
  /** SIGTERM to the group, SIGKILL after `graceMs`; resolves when reaped. */
  stop(graceMs?: number): Promise<ProcResult>;
}

const live = new Set<ChildProcess>();
let hooked = false;
const interrupt = new AbortController();
/**
 * Aborted on the first SIGINT/SIGTERM/SIGHUP so a run can stop early and still write its report; a
 * second signal kills every child and exits at once.
 */
export const interrupted: AbortSignal = interrupt.signal;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const c of live) killGroup(c, 'SIGKILL');
  });
}

let signalsHooked = false;

/**
 * For entry points (CLI, bench): the first SIGINT/SIGTERM/SIGHUP aborts `interrupted`, a second kills
 * every child and exits. Libraries and tests leave signals alone.
 */
export function installSignalHooks(): void {
  hookExit();
  if (signalsHooked) return;
  signalsHooked = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (!interrupt.signal.aborted) return interrupt.abort(new Error(`interrupted by ${sig}`));
      for (const c of live) killGroup(c, 'SIGKILL');
      process.exit(130);
    });
  }
}

export function start(cmd: string, args: readonly string[], opts: ProcOptions): Proc {
  hookExit();
  const argv = opts.nice ? ['nice', ['-n', String(opts.nice), cmd, ...args]] as const : [cmd, args] as const;
  // detached: its own process group, so stop() reaches whatever it spawns too.
  const child = spawn(argv[0], argv[1], { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  live.add(child);
  const keep = opts.keep ?? 100_000;
  let out = '';
  let err = '';
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out = (out + d).slice(-keep);
    if (opts.onLine) {
      const lines = (partial + d).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) opts.onLine(l);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-keep)));
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), opts.timeoutMs);
  const done = new Promise<ProcResult>((resolve, reject) => {
    child.once('error', (e) => {
      clearTimeout(timer);
      live.delete(child);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      // Whatever the leader left behind in its group goes with it.
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* group empty */
        }
      }
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  // Callers that only stop() must not see an unhandled rejection from a spawn error.
  done.catch(() => {});
  return {
    child,
    pid: child.pid ?? -1,
    done,
    stdout: () => out,
    stderr: () => err,
    async stop(graceMs = 5000) {
      if (child.exitCode === null && child.signalCode === null) {
        killGroup(child, 'SIGTERM');
        const t = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
        try {
          return await done;
        } finally {
          clearTimeout(t);
        }
      }
      return done;
    },
  };
}

/** Runs a command to completion within its deadline. */
export function run(cmd: string, args: readonly string[], opts: ProcOptions): Promise<ProcResult> {
  return start(cmd, args, opts).done;
}
