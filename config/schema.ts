/** The one config schema, with defaults that run with no file at all. */
import { z } from 'zod';

const port = z.number().int().min(0).max(65535);
const ms = z.number().int().min(1).max(3_600_000);
const bytes = z.number().int().min(1);

/** An outbound RTMP URL: rtmp://host[:port]/app/name[?query]; a push template may leave out the name. */
const rtmpUrl = (minSegments: 1 | 2) =>
  z
    .string()
    .max(2048)
    .refine(
      (u) => {
        try {
          const url = new URL(u);
          return url.protocol === 'rtmp:' && url.hostname !== '' && url.pathname.split('/').filter(Boolean).length >= minSegments;
        } catch {
          return false;
        }
      },
      minSegments === 2 ? 'expected rtmp://host[:port]/app/name' : 'expected rtmp://host[:port]/app[/name]',
    );
const streamPart = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$/, 'letters, digits, _ . - (up to 128)');

const listen = (defaultPort: number) =>
  z.strictObject({ host: z.string().min(1).default('0.0.0.0'), port: port.default(defaultPort) }).prefault({});

export const configSchema = z
  .strictObject({
    log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
    rtmp: z
      .strictObject({
        listen: listen(1935),
        /** Largest chunk size a peer may set. */
        maxChunkSize: z.number().int().min(128).max(0xffffff).default(65536),
        /** Largest message a peer may send (a keyframe of a high-bitrate stream fits). */
        maxMessageSize: z.number().int().min(1024).max(0xffffff).default(8 * 1024 * 1024),
        /** Chunk size we send. */
        outChunkSize: z.number().int().min(128).max(65536).default(4096),
        maxConnections: z.number().int().min(1).default(1000),
      })
      .prefault({}),
    http: z.strictObject({ listen: listen(8080) }).prefault({}),
    deadlines: z
      .strictObject({ handshakeMs: ms.default(5000), idleMs: ms.default(10_000), writeStallMs: ms.default(10_000) })
      .prefault({}),
    streams: z
      .strictObject({
        maxStreams: z.number().int().min(1).default(1000),
        onConflict: z.enum(['takeover', 'reject']).default('takeover'),
        gopCacheBytes: bytes.default(16 * 1024 * 1024),
        outputQueueBytes: bytes.default(16 * 1024 * 1024),
        outputQueueFrames: z.number().int().min(16).default(2000),
      })
      .prefault({}),
    pool: z.strictObject({ maxBytes: bytes.default(2 * 1024 * 1024 * 1024) }).prefault({}),
    auth: z
      .strictObject({
        /** Per-app publish keys; an app listed here requires `?key=` (RTMP) or a Bearer token (WHIP). */
        streamKeys: z.record(z.string(), z.array(z.string().min(1)).min(1)).default({}),
      })
      .prefault({}),
    webrtc: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** ICE and DTLS must complete within this time of the offer. */
        connectMs: ms.default(10_000),
        /** No media for this long ends a WHIP session. */
        idleMs: ms.default(10_000),
        maxSessions: z.number().int().min(1).default(200),
        /** Ask the browser for a keyframe when none came for this long (0: only after loss); HLS cuts at keyframes. */
        keyframeIntervalMs: z.number().int().min(0).max(60_000).default(2000),
        ice: z
          .strictObject({
            /** Extra host candidates to offer, e.g. a public or NAT address, or 127.0.0.1 for local tests. */
            additionalHostAddresses: z.array(z.string().min(1)).default([]),
            portRange: z.tuple([port, port]).optional(),
            /** Bind ICE to this IPv4 address only. */
            udp4: z.string().min(1).optional(),
          })
          .prefault({}),
      })
      .prefault({}),
    hls: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Container per app unless the app says otherwise. */
        format: z.enum(['ts', 'fmp4']).default('ts'),
        apps: z.record(z.string(), z.strictObject({ format: z.enum(['ts', 'fmp4']) })).default({}),
        targetDurationMs: z.number().int().min(500).max(30_000).default(2000),
        windowSegments: z.number().int().min(2).max(100).default(6),
        /** How long a playlist outlives its publisher (ENDLIST) so a returning one continues it. */
        graceMs: ms.default(30_000),
        /** Also write segments and playlists under this directory (off by default: memory is the source). */
        directory: z.string().min(1).optional(),
      })
      .prefault({}),
    shutdown: z.strictObject({ graceMs: ms.default(5000) }).prefault({}),
    /** Outbound RTMP (pulls and re-pushes): a connect timeout on top of `deadlines`, backoff and a breaker per target. */
    outbound: z
      .strictObject({
        connectTimeoutMs: ms.default(5000),
        /** Reconnect delays: exponential from initialMs, capped at maxMs, each drawn in [d/2, d) (jitter). */
        backoff: z.strictObject({ initialMs: ms.default(1000), maxMs: ms.default(30_000) }).prefault({}),
        /** Consecutive failed attempts that open a target's breaker; it then lets one probe through per backoff delay. */
        breaker: z.strictObject({ failures: z.number().int().min(1).max(1000).default(5) }).prefault({}),
        maxPulls: z.number().int().min(1).default(100),
        maxPushesPerStream: z.number().int().min(1).default(10),
      })
      .prefault({})
      .refine((o) => o.backoff.maxMs >= o.backoff.initialMs, { message: 'backoff.maxMs must be >= backoff.initialMs', path: ['backoff', 'maxMs'] }),
    /** Streams pulled from remote RTMP servers and published here as app/name. */
    pulls: z
      .array(z.strictObject({ url: rtmpUrl(2), app: streamPart, name: streamPart, key: z.string().min(1).optional() }))
      .default([])
      .refine((ps) => new Set(ps.map((p) => `${p.app}/${p.name}`)).size === ps.length, 'two pulls publish the same app/name'),
    /**
     * Re-push per app: every stream of the app goes to each URL. `{app}` and `{name}` are substituted; a URL
     * with only an app in its path gets `/{name}` appended.
     */
    push: z.record(streamPart, z.array(rtmpUrl(1))).default({}),
  })
  .prefault({});

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
