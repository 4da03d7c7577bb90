/**
 * Loads the config: built-in defaults, then a YAML/JSON file (--config PATH or TRIBUTARY_CONFIG),
 * then environment overrides. Errors name the key and why.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { configSchema, type Config } from './schema.ts';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Json = Record<string, unknown>;

const ENV_OVERRIDES: ReadonlyArray<{ env: string; path: readonly string[]; type: 'port' | 'string' }> = [
  { env: 'TRIBUTARY_RTMP_PORT', path: ['rtmp', 'listen', 'port'], type: 'port' },
  { env: 'TRIBUTARY_HTTP_PORT', path: ['http', 'listen', 'port'], type: 'port' },
  { env: 'TRIBUTARY_RTMP_HOST', path: ['rtmp', 'listen', 'host'], type: 'string' },
  { env: 'TRIBUTARY_HTTP_HOST', path: ['http', 'listen', 'host'], type: 'string' },
  { env: 'TRIBUTARY_LOG_LEVEL', path: ['log', 'level'], type: 'string' },
];

function setPath(obj: Json, path: readonly string[], value: unknown): void {
  let node = obj;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Json;
  }
  node[path[path.length - 1]!] = value;
}

function formatIssues(error: z.ZodError, source: string): string {
  return error.issues
    .map((i) => {
      const key = i.path.length ? i.path.join('.') : '(root)';
      if (i.code === 'unrecognized_keys') return `${source}: unknown key ${i.keys.map((k) => [...i.path, k].join('.')).join(', ')}`;
      return `${source}: ${key}: ${i.message}`;
    })
    .join('\n');
}

/** Parses a config from an already-read object plus environment overrides. */
export function buildConfig(file: unknown, env: NodeJS.ProcessEnv = {}, source = 'config'): Config {
  if (file !== undefined && (typeof file !== 'object' || file === null || Array.isArray(file))) {
    throw new ConfigError(`${source}: the top level must be a mapping of keys`);
  }
  const raw: Json = structuredClone((file as Json | undefined) ?? {});
  for (const o of ENV_OVERRIDES) {
    const v = env[o.env];
    if (v === undefined || v === '') continue;
    if (o.type === 'port') {
      if (!/^\d+$/.test(v)) throw new ConfigError(`${o.env}: expected a port number, got ${JSON.stringify(v)}`);
      setPath(raw, o.path, Number(v));
    } else setPath(raw, o.path, v);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error, source));
  return parsed.data;
}

/** The config path from `--config PATH` / `--config=PATH`, else TRIBUTARY_CONFIG. */
export function configPathFrom(argv: readonly string[], env: NodeJS.ProcessEnv): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config') {
      const p = argv[i + 1];
      if (!p) throw new ConfigError('--config needs a path');
      return p;
    }
    if (a.startsWith('--config=')) return a.slice('--config='.length);
  }
  return env.TRIBUTARY_CONFIG || undefined;
}

export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): Config {
  const path = configPathFrom(argv, env);
  if (path === undefined) return buildConfig(undefined, env, 'defaults');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read: ${(err as Error).message}`);
  }
  let file: unknown;
  try {
    file = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  return buildConfig(file ?? {}, env, path);
}
