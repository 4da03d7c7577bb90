/**
 * Messages between the gateway and a transcode worker thread. Media bytes travel as transferred
 * ArrayBuffers (one copy on each side: out of the pooled buffer, into the pooled buffer).
 */
import type { PipelineOptions, PipelineStats } from '../../codecs/transcode/pipeline.ts';
import type { FramePoolStats } from '../../codecs/transcode/frame-pool.ts';
import type { Track } from '../../codecs/track.ts';

/** A Track whose config survived structured cloning as a Uint8Array. */
export type WireTrack = Omit<Track, 'config'> & { readonly config: Uint8Array };

export interface WireFrame {
  readonly track: number;
  readonly kind: 'video' | 'audio';
  readonly dts: number;
  readonly pts: number;
  readonly keyframe: boolean;
  readonly data: ArrayBuffer;
}

export type WorkerInit =
  | { readonly mode: 'transcode'; readonly options: PipelineOptions }
  | { readonly mode: 'probe'; readonly device?: string };

export type ToWorker =
  | { readonly type: 'track'; readonly track: WireTrack }
  | { readonly type: 'frame'; readonly frame: WireFrame }
  /** The source ended: flush, report and exit. */
  | { readonly type: 'end' }
  /** Stop now: free everything and exit, without flushing. */
  | { readonly type: 'stop' }
  /** Fault injection for tests: block the thread (a stuck encoder), throw (a native failure), or die at once. */
  | { readonly type: 'fault'; readonly fault: 'hang' | 'throw' | 'exit' };

export type FromWorker =
  | { readonly type: 'ready'; readonly pool: FramePoolStats }
  | { readonly type: 'track'; readonly renditions: readonly number[]; readonly track: WireTrack }
  | { readonly type: 'frame'; readonly renditions: readonly number[]; readonly frame: WireFrame & { readonly codec: 'h264' | 'aac' } }
  /** Input messages handled so far (the credit the gateway sends against), and now and then the stats. */
  | { readonly type: 'progress'; readonly consumed: number; readonly stats?: PipelineStats }
  | { readonly type: 'error'; readonly stage: string; readonly message: string }
  /** After 'end': everything flushed, every native object freed; `stats.pool.inUse` is what was still held before the pool closed. */
  | { readonly type: 'done'; readonly stats: PipelineStats }
  | { readonly type: 'probe'; readonly ok: boolean; readonly message: string };

/** A Buffer over a cloned Uint8Array, without copying. */
export function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

export function fromWireTrack(t: WireTrack): Track {
  return { ...t, config: asBuffer(t.config) } as Track;
}
