/** Why a transcode stage failed: the stage, what it was doing and FFmpeg's own message. */
import type { NodeAv } from './native.ts';

export type TranscodeStage = 'load' | 'device' | 'pool' | 'decode' | 'scale' | 'encode' | 'audio' | 'config';

export class TranscodeError extends Error {
  constructor(
    readonly stage: TranscodeStage,
    message: string,
    /** FFmpeg's negative error code, when there is one. */
    readonly code?: number,
  ) {
    super(`${stage}: ${message}`);
    this.name = 'TranscodeError';
  }
}

/** FFmpeg's text for a negative return code. */
export function avErrorText(av: NodeAv, code: number): string {
  try {
    return new av.lib.FFmpegError(code).message;
  } catch {
    return `error ${code}`;
  }
}

/** Throws a TranscodeError for a negative FFmpeg return code; returns the code otherwise. */
export function check(av: NodeAv, ret: number, stage: TranscodeStage, what: string): number {
  if (ret < 0) throw new TranscodeError(stage, `${what}: ${avErrorText(av, ret)}`, ret);
  return ret;
}
