/** hls.js playing an HLS URL in headless Chromium, for tests that need a real player. */
import { launchChromium, newPage } from './browser.ts';
import { hlsJsSource, serveStatic } from './static-server.ts';

/** Plays `url` with hls.js in headless Chromium until currentTime has advanced `seconds`. */
export async function playWithHlsJs(t: { teardown(f: () => unknown): void }, url: string, seconds: number): Promise<{ advanced: number; waiting: number; errors: string[]; levels: number; height: number }> {
  const site = await serveStatic({
    '/hls.js': { type: 'text/javascript', body: hlsJsSource() },
    '/': { type: 'text/html', body: '<!doctype html><video id="v" muted playsinline></video><script src="/hls.js"></script>' },
  });
  t.teardown(() => site.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await newPage(browser);
  await page.goto(site.url + '/');
  return page.evaluate(
    async ({ url, seconds }) => {
      const w = window as unknown as {
        Hls: {
          new (c?: object): { levels: unknown[]; loadSource(u: string): void; attachMedia(v: HTMLVideoElement): void; on(e: string, f: (ev: string, d: { fatal: boolean; details: string }) => void): void; destroy(): void };
          Events: { ERROR: string };
        };
      };
      const video = document.getElementById('v') as HTMLVideoElement;
      const hls = new w.Hls({ liveSyncDurationCount: 2 });
      const errors: string[] = [];
      hls.on(w.Hls.Events.ERROR, (_e, d) => errors.push(`${d.fatal ? 'fatal ' : ''}${d.details}`));
      let waiting = 0;
      hls.loadSource(url);
      hls.attachMedia(video);
      await new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(() => reject(new Error(`no playback start: ${errors.join(',')}`)), 20_000);
        video.addEventListener('playing', () => {
          clearTimeout(deadline);
          resolve();
        }, { once: true });
        void video.play().catch(() => undefined);
      });
      video.addEventListener('waiting', () => waiting++);
      const start = video.currentTime;
      await new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(() => reject(new Error(`currentTime stuck at ${video.currentTime}`)), 20_000);
        const tick = (): void => {
          if (video.currentTime - start >= seconds) {
            clearTimeout(deadline);
            resolve();
          } else requestAnimationFrame(tick);
        };
        tick();
      });
      const result = { advanced: video.currentTime - start, waiting, errors, levels: hls.levels.length, height: video.videoHeight };
      hls.destroy();
      return result;
    },
    { url, seconds },
  );
}
