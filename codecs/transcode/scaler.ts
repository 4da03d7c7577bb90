/**
 * Scales decoded pictures to one rendition's size through an FFmpeg filter graph:
 * buffer -> scale_cuda (GPU, surfaces stay on the device) or scale + format=yuv420p (CPU) -> buffersink.
 * The graph is built on the first picture and rebuilt when the input's size or format changes.
 */
import type { FilterContext, FilterGraph } from 'node-av/lib';
import { TranscodeError, check } from './errors.ts';
import type { FramePool, PooledFrame } from './frame-pool.ts';
import type { NodeAv } from './native.ts';

/** Distinct across scalers: a graph built anywhere gets a number no other graph had. */
let graphsBuilt = 0;

interface Graph {
  readonly graph: FilterGraph;
  readonly src: FilterContext;
  readonly sink: FilterContext;
  readonly width: number;
  readonly height: number;
  readonly format: number;
  readonly generation: number;
}

export class VideoScaler {
  readonly width: number;
  readonly height: number;
  readonly #av: NodeAv;
  readonly #pool: FramePool;
  readonly #name: string;
  #graph: Graph | undefined;
  #closed = false;

  constructor(av: NodeAv, pool: FramePool, size: { width: number; height: number }, name: string) {
    this.#av = av;
    this.#pool = pool;
    this.width = size.width;
    this.height = size.height;
    this.#name = name;
  }

  /**
   * Which graph made the pictures lately: it changes when the graph is rebuilt. On the GPU the scaled
   * surfaces then come from a new CUDA frames pool, and an encoder opened on the old one is reopened.
   */
  get generation(): number {
    return this.#graph?.generation ?? 0;
  }

  /** Scales one picture; each scaled picture is lent to `out` and released when it returns. */
  scale(input: PooledFrame, out: (scaled: PooledFrame) => void): void {
    if (this.#closed) throw new TranscodeError('scale', 'scale after close');
    const f = input.frame;
    let g = this.#graph;
    if (!g || g.width !== f.width || g.height !== f.height || g.format !== f.format) {
      this.#free();
      g = this.#graph = this.#build(input);
    }
    // KEEP_REF: the same decoded picture goes on to the other renditions' scalers.
    check(this.#av, g.src.buffersrcAddFrameSync(f, this.#av.c.AV_BUFFERSRC_FLAG_KEEP_REF), 'scale', 'feeding the scaler');
    this.#drain(g, out);
  }

  #drain(g: Graph, out: (scaled: PooledFrame) => void): void {
    const { c } = this.#av;
    for (;;) {
      const slot = this.#pool.acquire();
      try {
        const ret = g.sink.buffersinkGetFrameSync(slot.frame);
        if (ret === c.AVERROR_EAGAIN || ret === c.AVERROR_EOF) return;
        check(this.#av, ret, 'scale', 'reading the scaler');
        if (this.#pool.backend === 'gpu') this.#pool.noteSurfaces(`scale:${this.#name}`, slot.frame.hwFramesCtx);
        out(slot);
      } finally {
        slot.release();
      }
    }
  }

  #build(input: PooledFrame): Graph {
    const { lib } = this.#av;
    const f = input.frame;
    const graph = new lib.FilterGraph();
    graph.alloc();
    try {
      graph.nbThreads = 1;
      const filter = (name: string) => {
        const flt = lib.Filter.getByName(name);
        if (!flt) throw new TranscodeError('scale', `this FFmpeg build has no ${name} filter`);
        return flt;
      };
      const src = graph.allocFilter(filter('buffer'), 'in');
      if (!src) throw new TranscodeError('scale', 'cannot allocate the buffer source');
      check(
        this.#av,
        src.buffersrcParametersSet({
          width: f.width,
          height: f.height,
          format: f.format,
          timeBase: { num: 1, den: 90_000 },
          sampleAspectRatio: { num: 1, den: 1 },
          hwFramesCtx: f.hwFramesCtx,
        }),
        'scale',
        'setting the buffer source parameters',
      );
      check(this.#av, src.init(null), 'scale', 'initialising the buffer source');
      const gpu = this.#pool.backend === 'gpu';
      const scale = gpu
        ? graph.createFilter(filter('scale_cuda'), 'scale', `w=${this.width}:h=${this.height}`)
        : graph.createFilter(filter('scale'), 'scale', `w=${this.width}:h=${this.height}:flags=bilinear`);
      if (!scale) throw new TranscodeError('scale', `cannot create the ${gpu ? 'scale_cuda' : 'scale'} filter for ${this.width}x${this.height}`);
      let last = scale;
      if (!gpu) {
        const fmt = graph.createFilter(filter('format'), 'format', 'pix_fmts=yuv420p');
        if (!fmt) throw new TranscodeError('scale', 'cannot create the format filter');
        check(this.#av, scale.link(0, fmt, 0), 'scale', 'linking the scaler');
        last = fmt;
      }
      const sink = graph.createFilter(filter('buffersink'), 'out', null);
      if (!sink) throw new TranscodeError('scale', 'cannot create the buffer sink');
      check(this.#av, src.link(0, scale, 0), 'scale', 'linking the buffer source');
      check(this.#av, last.link(0, sink, 0), 'scale', 'linking the buffer sink');
      check(this.#av, graph.configSync(), 'scale', `configuring ${gpu ? 'scale_cuda' : 'scale'} ${f.width}x${f.height} -> ${this.width}x${this.height}`);
      return { graph, src, sink, width: f.width, height: f.height, format: f.format, generation: ++graphsBuilt };
    } catch (err) {
      graph.free();
      throw err;
    }
  }

  #free(): void {
    if (!this.#graph) return;
    this.#graph.graph.free();
    this.#graph = undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#free();
    this.#pool.forgetSurfaces(`scale:${this.#name}`);
  }
}
