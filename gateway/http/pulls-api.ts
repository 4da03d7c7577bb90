/**
 * The outbound API: pulls (`/api/v1/pulls`), re-push destinations (`/api/v1/pushes`) and the breakers
 * of every outbound target (`/api/v1/breakers`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import type { BreakerRegistry } from '../net/breaker.ts';
import { OutboundRequestError, type PullManager } from '../rtmp/pull.ts';
import type { PushManager } from '../rtmp/push.ts';
import { HttpError, readBody, sendJson, type Route } from './router.ts';

const BODY_LIMIT = 16 * 1024;

const pullBody = z.strictObject({
  url: z.string().min(1).max(2048),
  app: z.string().min(1).max(128),
  name: z.string().min(1).max(128),
  key: z.string().min(1).max(512).optional(),
});

const pushBody = z.strictObject({
  url: z.string().min(1).max(2048),
  app: z.string().min(1).max(128),
  name: z.string().min(1).max(128),
});

async function jsonBody<T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'expected application/json');
  const raw = await readBody(req, BODY_LIMIT);
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new HttpError(400, parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; '));
  }
  return parsed.data;
}

function asHttp(err: unknown): never {
  if (err instanceof OutboundRequestError) {
    const status = err.code === 'invalid' ? 400 : err.code === 'conflict' ? 409 : err.code === 'not_found' ? 404 : 429;
    throw new HttpError(status, err.message);
  }
  throw err;
}

const ID = '([A-Za-z0-9_-]{1,64})';

export function outboundRoutes(pulls: PullManager, pushes: PushManager, breakers: BreakerRegistry): Route[] {
  return [
    { method: 'GET', path: /^\/api\/v1\/pulls\/?$/, handle: (_req, res) => sendJson(res, 200, { pulls: pulls.list() }) },
    {
      method: 'POST',
      path: /^\/api\/v1\/pulls\/?$/,
      handle: async (req: IncomingMessage, res: ServerResponse) => {
        const body = await jsonBody(req, pullBody);
        try {
          sendJson(res, 201, pulls.add(body, 'api'));
        } catch (err) {
          asHttp(err);
        }
      },
    },
    {
      method: 'GET',
      path: new RegExp(`^/api/v1/pulls/${ID}$`),
      handle: (_req, res, m) => {
        const p = pulls.get(m[1]!);
        if (!p) throw new HttpError(404, 'no such pull');
        sendJson(res, 200, p);
      },
    },
    {
      method: 'DELETE',
      path: new RegExp(`^/api/v1/pulls/${ID}$`),
      handle: async (_req, res, m) => {
        if (!(await pulls.remove(m[1]!))) throw new HttpError(404, 'no such pull');
        res.writeHead(204).end();
      },
    },
    { method: 'GET', path: /^\/api\/v1\/pushes\/?$/, handle: (_req, res) => sendJson(res, 200, { pushes: pushes.list() }) },
    {
      method: 'POST',
      path: /^\/api\/v1\/pushes\/?$/,
      handle: async (req, res) => {
        const body = await jsonBody(req, pushBody);
        try {
          sendJson(res, 201, pushes.add(body));
        } catch (err) {
          asHttp(err);
        }
      },
    },
    {
      method: 'GET',
      path: new RegExp(`^/api/v1/pushes/${ID}$`),
      handle: (_req, res, m) => {
        const p = pushes.get(m[1]!);
        if (!p) throw new HttpError(404, 'no such push destination');
        sendJson(res, 200, p);
      },
    },
    {
      method: 'DELETE',
      path: new RegExp(`^/api/v1/pushes/${ID}$`),
      handle: async (_req, res, m) => {
        let removed: boolean;
        try {
          removed = await pushes.remove(m[1]!);
        } catch (err) {
          asHttp(err);
        }
        if (!removed) throw new HttpError(404, 'no such push destination');
        res.writeHead(204).end();
      },
    },
    {
      method: 'GET',
      path: /^\/api\/v1\/breakers\/?$/,
      handle: (_req, res) => sendJson(res, 200, { breakers: breakers.list().map((b) => b.view()) }),
    },
  ];
}
