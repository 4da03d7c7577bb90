/**
 * The transcode worker thread: one source stream's pipeline (or a one-off GPU probe), driven by
 * messages from the gateway. Everything native lives and dies in this thread; the synchronous
 * pipeline means the gateway's event loop never waits on a decoder or an encoder.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TranscodeError } from '../../codecs/transcode/errors.ts';
import { openCudaDevice } from '../../codecs/transcode/frame-pool.ts';
import { loadNodeAv } from '../../codecs/transcode/native.ts';
import { TranscodePipeline, type PipelineOutput } from '../../codecs/transcode/pipeline.ts';
import { fromWireTrack, type FromWorker, type ToWorker, type WorkerInit } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('gateway/transcode/worker.ts runs in a worker thread');
const init = workerData as WorkerInit;
const STATS_EVERY_MS = 500;

function send(m: FromWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(m, transfer);
}

function stageOf(err: unknown): string {
  return err instanceof TranscodeError ? err.stage : 'internal';
}

async function probe(device: string | undefined): Promise<void> {
  try {
    const av = await loadNodeAv();
    const hw = openCudaDevice(av, device);
    hw.free();
    send({ type: 'probe', ok: true, message: `CUDA device ${device ?? '0'} opened through node-av` });
  } catch (err) {
    send({ type: 'probe', ok: false, message: (err as Error).message });
  }
  port!.close();
}

async function transcode(options: Extract<WorkerInit, { mode: 'transcode' }>['options']): Promise<void> {
  const emit = (o: PipelineOutput): void => {
    if (o.type === 'track') send({ type: 'track', renditions: o.renditions, track: o.track });
    else {
      const f = o.frame;
      // A copy of exactly the frame's bytes: an output may be a view of a larger buffer, or the very
      // input bytes (a copied rendition, passed-through audio) that the pipeline still reads after.
      const data = new Uint8Array(f.data).slice().buffer;
      send({ type: 'frame', renditions: o.renditions, frame: { track: f.track, kind: f.kind, codec: f.codec, dts: f.dts, pts: f.pts, keyframe: f.keyframe, data } }, [data]);
    }
  };
  let pipeline: TranscodePipeline;
  try {
    pipeline = await TranscodePipeline.open(options, emit);
  } catch (err) {
    send({ type: 'error', stage: stageOf(err), message: (err as Error).message });
    port!.close();
    return;
  }
  send({ type: 'ready', pool: pipeline.pool.stats });
  let consumed = 0;
  let lastStats = 0;
  let finished = false;
  const finish = (): void => {
    finished = true;
    port!.off('message', onMessage);
    pipeline.close();
    port!.close();
  };
  const onMessage = (m: ToWorker): void => {
    if (finished) return;
    try {
      switch (m.type) {
        case 'track':
          pipeline.track(fromWireTrack(m.track));
          break;
        case 'frame': {
          const f = m.frame;
          pipeline.frame({ track: f.track, kind: f.kind, dts: f.dts, pts: f.pts, keyframe: f.keyframe, data: new Uint8Array(f.data) });
          break;
        }
        case 'end': {
          pipeline.flush();
          const stats = pipeline.stats;
          send({ type: 'done', stats });
          finish();
          return;
        }
        case 'stop':
          finish();
          return;
        case 'fault':
          if (m.fault === 'throw') throw new TranscodeError('encode', 'injected failure');
          if (m.fault === 'exit') process.exit(1);
          // A stuck native call: nothing of this thread runs any more.
          for (;;);
      }
      consumed++;
      const now = performance.now();
      if (now - lastStats >= STATS_EVERY_MS) {
        lastStats = now;
        send({ type: 'progress', consumed, stats: pipeline.stats });
      } else send({ type: 'progress', consumed });
    } catch (err) {
      send({ type: 'error', stage: stageOf(err), message: (err as Error).message });
      finish();
    }
  };
  port!.on('message', onMessage);
}

if (init.mode === 'probe') await probe(init.device);
else await transcode(init.options);
