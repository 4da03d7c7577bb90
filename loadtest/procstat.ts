/**
 * What a process (and everything it spawned) costs, read from /proc: CPU seconds (utime + stime of the
 * process and its live descendants, plus cutime + cstime of the children they have reaped), RSS and
 * PSS. Linux only; every read is of a few small files.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';

let ticks: number | undefined;

/** Clock ticks per second (USER_HZ), almost always 100. */
export function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

export interface StatLine {
  pid: number;
  ppid: number;
  /** utime, stime, cutime, cstime in clock ticks. */
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
}

/** Parses /proc/PID/stat; the command name may hold spaces and parentheses, so fields count from the last ')'. */
export function parseStat(text: string): StatLine {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('malformed /proc stat line');
  const pid = Number(text.slice(0, text.indexOf(' ')));
  const f = text.slice(close + 2).trim().split(/\s+/);
  // f[0] is field 3 (state): field n is f[n - 3].
  const n = (i: number): number => Number(f[i - 3] ?? 0);
  return { pid, ppid: n(4), utime: n(14), stime: n(15), cutime: n(16), cstime: n(17) };
}

function readStat(pid: number): StatLine | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The process and its live descendants, by walking every /proc/N/stat once. */
export function processTree(root: number): StatLine[] {
  const all = new Map<number, StatLine[]>();
  const self = readStat(root);
  if (!self) return [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (!s) continue;
    const list = all.get(s.ppid);
    if (list) list.push(s);
    else all.set(s.ppid, [s]);
  }
  const out: StatLine[] = [self];
  for (let i = 0; i < out.length && i < 10_000; i++) out.push(...(all.get(out[i]!.pid) ?? []));
  return out;
}

export interface Usage {
  /** CPU seconds (user + system) of the tree, reaped children included. */
  cpuSeconds: number;
  rssBytes: number;
  pssBytes: number;
  processes: number;
}

function kb(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU, RSS and PSS of a process tree now; zeroes if the process is gone. */
export function usage(root: number): Usage {
  const tree = processTree(root);
  const hz = clockTicks();
  let t = 0;
  let rss = 0;
  let pss = 0;
  for (const s of tree) {
    t += s.utime + s.stime + s.cutime + s.cstime;
    try {
      const roll = readFileSync(`/proc/${s.pid}/smaps_rollup`, 'utf8');
      rss += kb(roll, 'Rss');
      pss += kb(roll, 'Pss');
    } catch {
      try {
        rss += kb(readFileSync(`/proc/${s.pid}/status`, 'utf8'), 'VmRSS');
      } catch {
        /* gone */
      }
    }
  }
  return { cpuSeconds: t / hz, rssBytes: rss, pssBytes: pss, processes: tree.length };
}

export interface Machine {
  cores: number;
  cpuModel: string;
  kernel: string;
  node: string;
  memoryBytes: number;
}

export function machine(): Machine {
  let model = cpus()[0]?.model ?? 'unknown';
  let mem = 0;
  let kernel = 'unknown';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? model;
    mem = kb(readFileSync('/proc/meminfo', 'utf8'), 'MemTotal');
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    /* not Linux */
  }
  return { cores: cpus().length, cpuModel: model, kernel, node: process.version, memoryBytes: mem };
}
