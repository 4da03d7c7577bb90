/**
 * Summarizes a V8 .cpuprofile (node --cpu-prof): self time by function and by file, so a bench report
 * can say where a server spends its CPU. Also a CLI: node --import tsx loadtest/profile.ts FILE [N].
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  selfMs: number;
  share: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Sampled time not spent idle (waiting in the event loop); shares are of this. */
  busyMs: number;
  functions: ProfileEntry[];
  files: ProfileEntry[];
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function place(url: string): string {
  if (!url) return '(native)';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.startsWith('node:')) return path;
  const rel = relative(ROOT, path);
  const nm = rel.lastIndexOf('node_modules/');
  if (nm >= 0) return rel.slice(nm + 'node_modules/'.length).split('/').slice(0, 2).join('/');
  return rel;
}

export function summarizeProfile(profile: CpuProfile, top = 20): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    self.set(id, (self.get(id) ?? 0) + dt);
    total += dt;
  });
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  let idle = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const f = n.callFrame;
    if (f.functionName === '(idle)') {
      idle += ms;
      continue;
    }
    const where = place(f.url);
    const name = f.functionName.startsWith('(') ? f.functionName : `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}`;
    fn.set(name, (fn.get(name) ?? 0) + ms);
    const fileKey = f.functionName.startsWith('(') ? f.functionName : where;
    file.set(fileKey, (file.get(fileKey) ?? 0) + ms);
  }
  const rank = (m: Map<string, number>): ProfileEntry[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, selfMs]) => ({ name, selfMs: Math.round(selfMs), share: busy > 0 ? selfMs / busy : 0 }));
  const busy = total - idle;
  return { totalMs: Math.round(total), busyMs: Math.round(busy), functions: rank(fn), files: rank(file) };
}

/**
 * The main thread's profile among those node --cpu-prof wrote into a folder (with tsx, the module loader's
 * worker thread writes one too): CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile, thread 0.
 */
export function mainThreadProfile(files: readonly string[]): string | undefined {
  const profiles = files.filter((f) => f.endsWith('.cpuprofile'));
  return profiles.find((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f)) ?? profiles[0];
}

export function summarizeProfileFile(path: string, top = 20): ProfileSummary {
  return summarizeProfile(JSON.parse(readFileSync(path, 'utf8')) as CpuProfile, top);
}

export function renderProfile(s: ProfileSummary, title: string): string {
  const rows = (list: ProfileEntry[]): string[] => list.map((e) => `| ${(e.share * 100).toFixed(1)}% | ${e.selfMs} | \`${e.name.replaceAll('|', '\\|')}\` |`);
  return [
    `### ${title}`,
    '',
    `Self time: ${(s.busyMs / 1000).toFixed(1)} s busy of ${(s.totalMs / 1000).toFixed(1)} s sampled, over the whole process life (start, ramp, window, shutdown); shares are of the busy time.`,
    '',
    '| share | self ms | by file |',
    '|---:|---:|---|',
    ...rows(s.files.slice(0, 12)),
    '',
    '| share | self ms | by function |',
    '|---:|---:|---|',
    ...rows(s.functions),
    '',
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node --import tsx loadtest/profile.ts FILE.cpuprofile [TOP]\n');
    process.exit(2);
  }
  const top = Number(process.argv[3] ?? 25);
  if (!Number.isInteger(top) || top < 1) {
    process.stderr.write(`TOP must be a positive integer, not ${JSON.stringify(process.argv[3])}\n`);
    process.exit(2);
  }
  process.stdout.write(renderProfile(summarizeProfileFile(file, top), file));
}
