/** A parser or muxer rejected its input; `reason` says what was wrong, for the log and the metric. */
export class CodecError extends Error {
  constructor(
    /** Which format rejected it: amf0, flv, h264, aac, rtmp, rtp, m3u8, ... */
    readonly format: string,
    readonly reason: string,
  ) {
    super(`${format}: ${reason}`);
    this.name = 'CodecError';
  }
}
