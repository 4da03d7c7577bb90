/**
 * The registry of live streams by `app/name`: one publisher per name, takeover or refusal of a
 * second one, a cap on streams, and the single publish-authorisation point every ingest calls.
 */
import { EventEmitter } from 'node:events';
import type { PublishAuthorizer, PublishRequest } from './auth.ts';
import { Stream, type PublisherInfo, type StreamLimits } from './stream.ts';

export class PublishRefusedError extends Error {
  constructor(
    readonly code: 'unauthorized' | 'busy' | 'limit' | 'invalid' | 'shutdown',
    reason: string,
  ) {
    super(reason);
    this.name = 'PublishRefusedError';
  }
}

export interface RegistryOptions {
  maxStreams: number;
  /** What a second publisher on a live name does: take it over, or be refused. */
  onConflict: 'takeover' | 'reject';
  limits: StreamLimits;
  authorizer: PublishAuthorizer;
  /** Says why a new stream cannot be taken now (e.g. memory), or nothing when it can. */
  admit?: () => string | undefined;
}

interface RegistryEvents {
  publish: [Stream];
  unpublish: [Stream, string];
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$/;

export function validStreamPart(s: string): boolean {
  return NAME_RE.test(s) && s !== '.' && s !== '..';
}

export class Registry extends EventEmitter<RegistryEvents> {
  readonly #streams = new Map<string, Stream>();
  readonly #opts: RegistryOptions;
  #closed = false;

  constructor(opts: RegistryOptions) {
    super();
    this.#opts = opts;
  }

  get size(): number {
    return this.#streams.size;
  }

  get(app: string, name: string): Stream | undefined {
    return this.#streams.get(`${app}/${name}`);
  }

  list(): Stream[] {
    return [...this.#streams.values()];
  }

  /**
   * Authorises and registers a publisher. Resolves to its Stream; rejects with
   * PublishRefusedError saying why. The stream leaves the registry when it ends.
   */
  async publish(req: PublishRequest, publisher: PublisherInfo): Promise<Stream> {
    if (this.#closed) throw new PublishRefusedError('shutdown', 'server is shutting down');
    if (!validStreamPart(req.app) || !validStreamPart(req.name)) {
      throw new PublishRefusedError('invalid', `invalid stream name ${JSON.stringify(`${req.app}/${req.name}`)}`);
    }
    const verdict = await this.#opts.authorizer.authorize(req);
    if (!verdict.ok) throw new PublishRefusedError('unauthorized', verdict.reason);
    if (this.#closed) throw new PublishRefusedError('shutdown', 'server is shutting down');
    const key = `${req.app}/${req.name}`;
    const live = this.#streams.get(key);
    if (live) {
      if (this.#opts.onConflict === 'reject') throw new PublishRefusedError('busy', `stream ${key} is already being published`);
      // End first: a publisher's close() ends its own stream with its own reason (RtmpConnection does).
      live.end('takeover');
      live.publisher.close(`taken over by ${publisher.protocol} publisher from ${publisher.remoteAddress}`);
    } else if (this.#streams.size >= this.#opts.maxStreams) {
      throw new PublishRefusedError('limit', `stream limit of ${this.#opts.maxStreams} reached`);
    } else {
      // A takeover replaces a stream; only a new one needs room.
      const full = this.#opts.admit?.();
      if (full !== undefined) throw new PublishRefusedError('limit', full);
    }
    const stream = new Stream(req.app, req.name, publisher, this.#opts.limits);
    this.#streams.set(key, stream);
    stream.once('end', (reason) => {
      if (this.#streams.get(key) === stream) this.#streams.delete(key);
      this.emit('unpublish', stream, reason);
    });
    this.emit('publish', stream);
    return stream;
  }

  /** Refuses new publishers and ends every stream. */
  close(reason: string): void {
    this.#closed = true;
    for (const s of [...this.#streams.values()]) {
      s.publisher.close(reason);
      s.end(reason);
    }
  }
}
