/**
 * The one publish-authorisation point. Every ingest builds a PublishRequest and asks here;
 * tokens and webhooks plug in as further authorizers.
 */

export interface PublishRequest {
  readonly app: string;
  readonly name: string;
  readonly protocol: string;
  readonly remoteAddress: string;
  /** The credential the publisher presented: RTMP `?key=...`, WHIP Bearer token. */
  readonly key?: string;
}

export type AuthVerdict = { ok: true } | { ok: false; reason: string };

export interface PublishAuthorizer {
  authorize(req: PublishRequest): Promise<AuthVerdict>;
}

export const allowAll: PublishAuthorizer = {
  authorize: async () => ({ ok: true }),
};

/** Per-app stream keys: an app listed here requires one of its keys; other apps are open. */
export class StreamKeyAuthorizer implements PublishAuthorizer {
  readonly #keys: ReadonlyMap<string, ReadonlySet<string>>;

  constructor(keysByApp: Readonly<Record<string, readonly string[]>>) {
    this.#keys = new Map(Object.entries(keysByApp).map(([app, keys]) => [app, new Set(keys)]));
  }

  async authorize(req: PublishRequest): Promise<AuthVerdict> {
    const keys = this.#keys.get(req.app);
    if (!keys) return { ok: true };
    if (req.key === undefined || req.key === '') return { ok: false, reason: `app ${req.app} requires a stream key` };
    if (!keys.has(req.key)) return { ok: false, reason: `invalid stream key for app ${req.app}` };
    return { ok: true };
  }
}
