/**
 * RTMP play: one player of one live stream, on a server connection (connection.ts hands it the play
 * command). The player gets StreamBegin and Play.Reset/Play.Start, then through its RtmpEgress the
 * metadata, the sequence headers, the frames since the last keyframe and the live frames. A player
 * that falls behind skips to the next keyframe in its bounded queue; one that stops reading is closed
 * by the connection's write-stall deadline. When the stream ends the player hears UnpublishNotify and
 * StreamEOF and the connection closes.
 */
import type { Logger } from 'pino';
import type { RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { Csid, UserControlEvent, command, dataMessage, statusObject, userControl } from '../../codecs/rtmp/messages.ts';
import type { Stream } from '../../sessions/stream.ts';
import type { Metrics } from '../metrics.ts';
import { RtmpEgress, type EgressSink } from './egress.ts';

export interface PlaySessionOptions {
  stream: Stream;
  /** The message stream id the player's play command came on. */
  streamId: number;
  /** Writes on the player's connection; false when its socket buffer is full. */
  send(csid: number, msg: RtmpMessage): boolean;
  onDrain(fn: () => void): () => void;
  log: Logger;
  metrics: Metrics;
  /** The stream ended (or writing failed): the connection should close. Called once. */
  onEnd(reason: string): void;
}

export class PlaySession {
  readonly stream: Stream;
  readonly #egress: RtmpEgress;
  readonly #opts: PlaySessionOptions;
  #closed = false;

  constructor(opts: PlaySessionOptions) {
    this.#opts = opts;
    this.stream = opts.stream;
    const { stream, streamId } = opts;
    const status = (code: string, description: string): RtmpMessage =>
      command(streamId, 'onStatus', 0, null, { ...statusObject('status', code, description), details: stream.key });
    opts.send(Csid.Control, userControl(UserControlEvent.StreamBegin, streamId));
    opts.send(Csid.Command, status('NetStream.Play.Reset', `Playing and resetting ${stream.key}.`));
    opts.send(Csid.Command, status('NetStream.Play.Start', `Started playing ${stream.key}.`));
    opts.send(Csid.Data, dataMessage(streamId, 0, '|RtmpSampleAccess', true, true));
    const sink: EgressSink = { streamId, send: opts.send, onDrain: opts.onDrain };
    const frames = opts.metrics.framesOut.labels('play');
    this.#egress = new RtmpEgress(stream, sink, {
      log: opts.log,
      role: 'play',
      onFrame: () => frames.inc(),
      onEnd: (reason, error) => {
        if (!error) {
          opts.send(Csid.Command, status('NetStream.Play.UnpublishNotify', `${stream.key} is now unpublished.`));
          opts.send(Csid.Control, userControl(UserControlEvent.StreamEof, streamId));
        }
        opts.onEnd(reason);
      },
    });
    this.#egress.start();
  }

  get framesOut(): number {
    return this.#egress.framesOut;
  }

  get dropped(): number {
    return this.#egress.dropped;
  }

  /** Stops reading the stream and releases what is queued. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#egress.close();
  }
}
