/** The Prometheus metrics of one gateway instance (its own registry, so tests can run several). */
import client from 'prom-client';
import type { BufferPool } from '../sessions/pool.ts';
import type { Registry as StreamRegistry } from '../sessions/registry.ts';

/** What the transcode supervisor reports, while transcoding runs. */
export interface TranscodeGaugeSource {
  readonly activeRenditions: number;
  readonly poolStats: { readonly size: number; readonly inUse: number; readonly deviceMemoryBytes: number };
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly bytesIn: client.Counter<'protocol'>;
  readonly deadlineExpired: client.Counter<'protocol' | 'kind'>;
  readonly rejectedInput: client.Counter<'protocol' | 'reason'>;
  readonly sessions: client.Counter<'protocol' | 'result'>;
  readonly framesDropped: client.Counter;
  readonly outputErrors: client.Counter<'output' | 'reason'>;
  readonly framesOut: client.Counter<'output'>;
  readonly outboundAttempts: client.Counter<'kind' | 'result'>;
  /** Set by the wiring: the outbound breakers, for tributary_breaker_state. */
  breakers: (() => Iterable<{ target: string; state: number }>) | undefined;
  readonly transcodesRefused: client.Counter;
  readonly transcodesRestarted: client.Counter<'reason'>;
  /** Set by the transcode service when it starts. */
  transcode: TranscodeGaugeSource | undefined;

  constructor(streams: StreamRegistry, pool: BufferPool) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    new client.Gauge({
      name: 'tributary_streams_active',
      help: 'Streams with a live publisher',
      registers,
      collect() {
        this.set(streams.size);
      },
    });
    new client.Gauge({
      name: 'tributary_pool_bytes_in_use',
      help: 'Bytes of pooled frame buffers handed out',
      registers,
      collect() {
        this.set(pool.bytesInUse);
      },
    });
    new client.Gauge({
      name: 'tributary_pool_bytes_limit',
      help: 'Upper bound of the frame buffer pool',
      registers,
      collect() {
        this.set(pool.maxBytes);
      },
    });
    this.bytesIn = new client.Counter({ name: 'tributary_bytes_in_total', help: 'Bytes received from publishers', labelNames: ['protocol'], registers });
    this.deadlineExpired = new client.Counter({
      name: 'tributary_socket_deadline_expired_total',
      help: 'Sessions closed by a socket deadline',
      labelNames: ['protocol', 'kind'],
      registers,
    });
    this.rejectedInput = new client.Counter({
      name: 'tributary_rejected_input_total',
      help: 'Connections or requests closed for malformed or oversized input',
      labelNames: ['protocol', 'reason'],
      registers,
    });
    this.sessions = new client.Counter({
      name: 'tributary_sessions_total',
      help: 'Sessions ended, by how they ended',
      labelNames: ['protocol', 'result'],
      registers,
    });
    const transcodeGauge = (name: string, help: string, read: (t: TranscodeGaugeSource) => number): void => {
      const self = this;
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(self.transcode ? read(self.transcode) : 0);
        },
      });
    };
    transcodeGauge('tributary_transcodes_active', 'Renditions transcoding now (what transcode.maxConcurrent caps)', (t) => t.activeRenditions);
    transcodeGauge('tributary_transcode_pool_frames', 'Decoded-frame slots of the running transcodes (fixed per transcode)', (t) => t.poolStats.size);
    transcodeGauge('tributary_transcode_pool_frames_in_use', 'Decoded-frame slots holding a picture now', (t) => t.poolStats.inUse);
    transcodeGauge('tributary_transcode_device_memory_bytes', 'GPU memory of the CUDA surface pools behind the frame pools (0 on the CPU backend)', (t) => t.poolStats.deviceMemoryBytes);
    this.transcodesRefused = new client.Counter({ name: 'tributary_transcodes_refused_total', help: 'Renditions refused because transcode.maxConcurrent was reached', registers });
    this.transcodesRestarted = new client.Counter({
      name: 'tributary_transcodes_restarted_total',
      help: 'Transcode workers restarted, by why (error, exit, stall)',
      labelNames: ['reason'],
      registers,
    });
    this.outputErrors = new client.Counter({
      name: 'tributary_output_errors_total',
      help: 'Times an output dropped what it was building (pool full, a muxer refusing a frame); the stream goes on',
      labelNames: ['output', 'reason'],
      registers,
    });
    this.framesDropped = new client.Counter({
      name: 'tributary_output_frames_dropped_total',
      help: 'Frames outputs skipped because they fell behind (to the next keyframe)',
      registers,
    });
    this.framesOut = new client.Counter({
      name: 'tributary_rtmp_frames_out_total',
      help: 'Frames written to RTMP outputs: players (play) and re-push destinations (push)',
      labelNames: ['output'],
      registers,
    });
    this.outboundAttempts = new client.Counter({
      name: 'tributary_outbound_attempts_total',
      help: 'Outbound connection attempts (pull, push) by result: ok, or why they failed',
      labelNames: ['kind', 'result'],
      registers,
    });
    const metrics = this;
    new client.Gauge({
      name: 'tributary_breaker_state',
      help: 'Circuit breaker per outbound target: 0 closed, 1 open, 2 half-open',
      labelNames: ['target'],
      registers,
      collect() {
        this.reset();
        for (const b of metrics.breakers?.() ?? []) this.set({ target: b.target }, b.state);
      },
    });
  }
}
