/**
 * node-av (FFmpeg N-API bindings) is an optional dependency: it is imported here, and only when a
 * transcode or a GPU probe asks for it, so a gateway without transcoding never loads it.
 *
 * node-av's demuxer calls Promise.withResolvers (ES2024), which Node 20 lacks; without it the demuxer
 * yields zero packets and no error. We do not use the demuxer, but the polyfill goes in before
 * node-av loads so that no path of it can fail that way.
 */
export type AvLib = typeof import('node-av/lib');
export type AvConstants = typeof import('node-av/constants');

export interface NodeAv {
  readonly lib: AvLib;
  readonly c: AvConstants;
}

interface Resolvers<T> {
  promise: Promise<T>;
  resolve: (value: T | PromiseLike<T>) => void;
  reject: (reason?: unknown) => void;
}

/** Installs Promise.withResolvers where the runtime lacks it (Node 20). Idempotent. */
export function polyfillPromiseWithResolvers(): void {
  const P = Promise as unknown as { withResolvers?: <T>() => Resolvers<T> };
  if (typeof P.withResolvers === 'function') return;
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T>(this: PromiseConstructor): Resolvers<T> {
      let resolve!: Resolvers<T>['resolve'];
      let reject!: Resolvers<T>['reject'];
      const promise = new this<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

let loading: Promise<NodeAv> | undefined;

/** Loads node-av once per thread. Rejects with the loader's own message when it cannot load. */
export function loadNodeAv(): Promise<NodeAv> {
  polyfillPromiseWithResolvers();
  loading ??= Promise.all([import('node-av/lib'), import('node-av/constants')]).then(
    ([lib, c]) => {
      // FFmpeg's own chatter (x264's settings banner, decoder warnings) goes to stderr; errors only.
      lib.Log.setLevel(c.AV_LOG_ERROR);
      return { lib, c };
    },
    (err: unknown) => {
      loading = undefined;
      throw err;
    },
  );
  return loading;
}
