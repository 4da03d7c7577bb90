/**
 * Builds a running gateway from a config: pool, registry, metrics, RTMP and HTTP servers.
 * gateway/main.ts is the process around it; tests start it directly.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { StreamKeyAuthorizer } from '../sessions/auth.ts';
import { BufferPool } from '../sessions/pool.ts';
import { Registry } from '../sessions/registry.ts';
import { HlsService } from './hls/service.ts';
import { apiRoutes } from './http/api.ts';
import { EventsSocket } from './http/events.ts';
import { HttpServer } from './http/server.ts';
import { Metrics } from './metrics.ts';
import { BREAKER_STATE_VALUE, BreakerRegistry } from './net/breaker.ts';
import { outboundRoutes } from './http/pulls-api.ts';
import { PullManager, type OutboundDeps } from './rtmp/pull.ts';
import { PushManager } from './rtmp/push.ts';
import { RtmpServer } from './rtmp/server.ts';
import { TranscodeService } from './transcode/service.ts';
import { whipRoutes } from './webrtc/whip.ts';

export interface Gateway {
  readonly rtmpPort: number;
  readonly httpPort: number;
  readonly pool: BufferPool;
  readonly registry: Registry;
  readonly metrics: Metrics;
  readonly hls: HlsService;
  readonly pulls: PullManager;
  readonly pushes: PushManager;
  readonly breakers: BreakerRegistry;
  /** Transcoding, when an app has renditions configured. */
  readonly transcode: TranscodeService | undefined;
  /** Stops accepting, ends every session, closes the listeners. */
  close(reason?: string): Promise<void>;
}

export async function startGateway(config: Config, log: Logger): Promise<Gateway> {
  const pool = new BufferPool({
    maxBytes: config.pool.maxBytes,
    onLeak: ({ size }) => log.error({ size }, 'pooled buffer collected without release'),
  });
  let metrics: Metrics | undefined;
  const registry = new Registry({
    maxStreams: config.streams.maxStreams,
    onConflict: config.streams.onConflict,
    authorizer: new StreamKeyAuthorizer(config.auth.streamKeys),
    admit: () =>
      pool.bytesInUse > pool.maxBytes * config.pool.refusePublishAbove
        ? `frame buffer pool is over ${Math.round(config.pool.refusePublishAbove * 100)}% full (${pool.bytesInUse} of ${pool.maxBytes} bytes)`
        : undefined,
    limits: {
      gopCacheBytes: config.streams.gopCacheBytes,
      output: {
        maxBytes: config.streams.outputQueueBytes,
        maxFrames: config.streams.outputQueueFrames,
        onDrop: (n) => metrics?.framesDropped.inc(n),
      },
    },
  });
  metrics = new Metrics(registry, pool);
  registry.on('publish', (s) => log.info({ stream: s.key, protocol: s.publisher.protocol, remote: s.publisher.remoteAddress }, 'stream published'));
  registry.on('unpublish', (s, reason) => log.info({ stream: s.key, reason, framesIn: s.framesIn }, 'stream ended'));

  const rtmp = new RtmpServer({
    registry,
    pool,
    metrics,
    log,
    deadlines: config.deadlines,
    maxChunkSize: config.rtmp.maxChunkSize,
    maxMessageSize: config.rtmp.maxMessageSize,
    outChunkSize: config.rtmp.outChunkSize,
    maxConnections: config.rtmp.maxConnections,
  });
  const hls = new HlsService(config.hls, registry, pool, log, (reason) => metrics.outputErrors.inc({ output: 'hls', reason }));
  const breakers = new BreakerRegistry({ ...config.outbound.backoff, failures: config.outbound.breaker.failures });
  metrics.breakers = () => breakers.list().map((b) => ({ target: b.target, state: BREAKER_STATE_VALUE[b.state] }));
  const outbound: OutboundDeps = {
    registry,
    pool,
    metrics,
    log,
    breakers,
    settings: {
      connectTimeoutMs: config.outbound.connectTimeoutMs,
      deadlines: config.deadlines,
      maxChunkSize: config.rtmp.maxChunkSize,
      maxMessageSize: config.rtmp.maxMessageSize,
      outChunkSize: config.rtmp.outChunkSize,
    },
  };
  const pulls = new PullManager(outbound, config.outbound.maxPulls);
  const pushes = new PushManager(outbound, config.push, config.outbound.maxPushesPerStream);
  const transcoding = config.transcode.enabled && Object.keys(config.transcode.apps).length > 0;
  // Probes the GPU once (backend auto or gpu); gpu without a device stops the start here.
  const transcode = transcoding
    ? await TranscodeService.start({
        config: config.transcode,
        registry,
        pool,
        log,
        streamKeys: config.auth.streamKeys,
        hasPlaylist: (app, name) => hls.packager(app, name)?.playlist !== undefined,
        onRefused: () => metrics.transcodesRefused.inc(),
        onRestarted: (reason) => metrics.transcodesRestarted.inc({ reason }),
      })
    : undefined;
  metrics.transcode = transcode;
  const http = new HttpServer(metrics, log);
  http.add(...apiRoutes(registry, transcode ? { transcode: (s) => transcode.view(s) } : {}), ...hls.routes(), ...outboundRoutes(pulls, pushes, breakers), ...(transcode?.routes() ?? []));
  const whip = config.webrtc.enabled
    ? whipRoutes({
        registry,
        pool,
        log,
        deadlines: { connectMs: config.webrtc.connectMs, idleMs: config.webrtc.idleMs },
        maxSessions: config.webrtc.maxSessions,
        gopMs: config.webrtc.keyframeIntervalMs,
        onDeadline: (kind) => metrics.deadlineExpired.inc({ protocol: 'webrtc', kind }),
        onRejected: (reason) => metrics.rejectedInput.inc({ protocol: 'webrtc', reason }),
        ice: {
          additionalHostAddresses: config.webrtc.ice.additionalHostAddresses,
          ...(config.webrtc.ice.portRange ? { portRange: config.webrtc.ice.portRange } : {}),
          ...(config.webrtc.ice.udp4 ? { interfaceAddresses: { udp4: config.webrtc.ice.udp4 } } : {}),
        },
      })
    : undefined;
  if (whip) http.add(...whip.routes);
  const events = new EventsSocket(registry);
  http.onUpgrade((req, socket, head) => events.upgrade(req, socket, head));

  let rtmpAddr;
  let httpAddr;
  try {
    rtmpAddr = await rtmp.listen(config.rtmp.listen.port, config.rtmp.listen.host);
    httpAddr = await http.listen(config.http.listen.port, config.http.listen.host);
  } catch (err) {
    // Whatever started before the failure (a listener, workers, push timers) is released here.
    events.close();
    await Promise.all([rtmp.close('startup failed'), http.close(), pushes.close('startup failed'), whip?.close(), transcode?.close()]);
    throw err;
  }
  log.info({ rtmp: rtmpAddr, http: httpAddr }, 'listening');

  let closing: Promise<void> | undefined;
  const gateway: Gateway = {
    rtmpPort: rtmpAddr.port,
    httpPort: httpAddr.port,
    pool,
    registry,
    metrics,
    hls,
    pulls,
    pushes,
    breakers,
    transcode,
    close(reason = 'server shutting down') {
      closing ??= (async () => {
        // Outbound first, so that nothing reconnects while the rest closes.
        await Promise.all([pulls.close(reason), pushes.close(reason)]);
        registry.close(reason);
        events.close();
        await Promise.all([rtmp.close(reason), whip?.close(), http.close(), transcode?.close()]);
        hls.close();
      })();
      return closing;
    },
  };
  try {
    for (const p of config.pulls) pulls.add(p, 'config');
  } catch (err) {
    await gateway.close('startup failed');
    throw err;
  }
  return gateway;
}
