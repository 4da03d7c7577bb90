/**
 * npm run loadtest -- --protocol rtmp --publishers 300 --viewers 100 --duration 60 --target 127.0.0.1
 *
 * Runs publishers (and viewers) against a server, shows live progress on stderr, and writes a JSON and
 * a markdown report. It nices itself below the server it loads.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { dirname } from 'node:path';
import { HELP, parseCli } from './options.ts';
import { installSignalHooks, interrupted } from './proc.ts';
import { renderMarkdown } from './report.ts';
import { runLoad, type Progress } from './run.ts';

function progressLine(p: Progress): string {
  const pub = p.publishers;
  let s = `${p.phase.padEnd(9)} ${p.elapsedS.toFixed(0).padStart(4)}s  publishers ${pub.live}/${pub.requested} live, ${pub.connecting} connecting, ${pub.failed} failed, ${p.mbps.toFixed(0)} Mbps`;
  if (p.viewers) s += ` | hls ${p.viewers.playing} playing, ${p.viewers.segments} seg, ${p.viewers.stalls} stalls, ${p.viewers.errors} err`;
  if (p.players) s += ` | rtmp play ${p.players.playing} ok, ${p.players.failed} failed`;
  return `${s} | tool cpu ${(p.cpu * 100).toFixed(0)}%`;
}

async function main(): Promise<void> {
  installSignalHooks();
  let opts;
  try {
    opts = parseCli(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`loadtest: ${(err as Error).message}\n\n${HELP}`);
    process.exit(2);
  }
  if (opts === 'help') {
    process.stdout.write(HELP);
    return;
  }
  if (opts.nice > getPriority()) setPriority(opts.nice);
  const emit = (o: Record<string, unknown>): void => {
    if (opts.events) process.stdout.write(`${JSON.stringify(o)}\n`);
  };
  const tty = process.stderr.isTTY && !opts.quiet;
  let lastPrinted = 0;
  const report = await runLoad({
    ...opts,
    signal: interrupted,
    onPhase: (phase, info) => {
      emit({ event: 'phase', phase, ...info });
      if (!opts.quiet && !tty) process.stderr.write(`loadtest: ${phase}\n`);
    },
    onProgress: (p) => {
      emit({ event: 'progress', ...p });
      if (opts.quiet) return;
      if (tty) process.stderr.write(`\r\x1b[K${progressLine(p)}`);
      else if (p.elapsedS - lastPrinted >= 5) {
        lastPrinted = p.elapsedS;
        process.stderr.write(`${progressLine(p)}\n`);
      }
    },
  });
  if (tty) process.stderr.write('\n');
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(`${opts.out}.json`, `${JSON.stringify(report, null, 2)}\n`);
  const md = renderMarkdown(report);
  writeFileSync(`${opts.out}.md`, md);
  emit({ event: 'report', json: `${opts.out}.json`, md: `${opts.out}.md` });
  if (!opts.events) process.stdout.write(md);
  process.stderr.write(`loadtest: report in ${opts.out}.json and ${opts.out}.md\n`);
}

await main();
process.exit(0);
