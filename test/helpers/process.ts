/** Child processes for tests: every one has a deadline, is killed on abort and always reaped. */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Proc {
  readonly child: ChildProcess;
  /** Resolves when the process has exited and its pipes are closed. */
  readonly done: Promise<ProcResult>;
  /** Sends a signal (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<ProcResult>;
  stdout(): string;
  stderr(): string;
}

export interface ProcOptions {
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Keep at most this many characters of each output stream (the tail). */
  keep?: number;
}

export function start(cmd: string, args: readonly string[], opts: ProcOptions): Proc {
  const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = opts.keep ?? 200_000;
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-keep)));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-keep)));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
  const done = new Promise<ProcResult>((resolve, reject) => {
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  return {
    child,
    done,
    stdout: () => out,
    stderr: () => err,
    kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return done;
    },
  };
}

/** Runs a command to completion within its deadline. */
export async function run(cmd: string, args: readonly string[], opts: ProcOptions): Promise<ProcResult> {
  return start(cmd, args, opts).done;
}
