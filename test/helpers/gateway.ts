/** An in-process gateway on free ports, with its log lines captured for assertions. */
import { Writable } from 'node:stream';
import { buildConfig } from '../../config/load.ts';
import type { ConfigInput } from '../../config/schema.ts';
import { startGateway, type Gateway } from '../../gateway/app.ts';
import { createLogger } from '../../gateway/log.ts';

export interface LogLine {
  level: number;
  msg: string;
  reason?: string;
  [key: string]: unknown;
}

export interface TestGateway extends Gateway {
  readonly logs: LogLine[];
  rtmpUrl(path: string): string;
  httpUrl(path: string): string;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

export async function startTestGateway(overrides: ConfigInput = {}): Promise<TestGateway> {
  const base: ConfigInput = {
    ...overrides,
    rtmp: { ...overrides.rtmp, listen: { host: '127.0.0.1', port: 0 } },
    http: { ...overrides.http, listen: { host: '127.0.0.1', port: 0 } },
    log: { level: 'debug', ...overrides.log },
  };
  const config = buildConfig(base);
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      cb();
    },
  });
  const gw = await startGateway(config, createLogger(config.log.level, sink));
  return {
    ...gw,
    close: gw.close,
    logs,
    rtmpUrl: (path) => `rtmp://127.0.0.1:${gw.rtmpPort}/${path}`,
    httpUrl: (path) => `http://127.0.0.1:${gw.httpPort}${path}`,
    async metric(name, labels = {}) {
      const text = await gw.metrics.registry.metrics();
      let total = 0;
      for (const line of text.split('\n')) {
        if (!line.startsWith(name)) continue;
        const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const labelText = m[2] ?? '';
        if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) total += Number(m[3]);
      }
      return total;
    },
  };
}
