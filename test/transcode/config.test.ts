/** The transcode section of the config: defaults, bitrates, and the errors a wrong one gets. */
import test from 'ava';
import { ConfigError, buildConfig } from '../../config/load.ts';
import { transcodeDependency } from '../../config/schema.ts';

const LADDER = [
  { name: '720p', height: 720, bitrate: '2500k' },
  { name: '480p', height: 480, bitrate: 1_000_000 },
  { name: 'src' },
];

test.serial('renditions per app with bitrates as written in the issue; defaults for the rest', (t) => {
  const c = buildConfig({ transcode: { apps: { live: { renditions: LADDER } } } }).transcode;
  t.deepEqual(c.apps.live!.renditions, [
    { name: '720p', height: 720, bitrate: 2_500_000 },
    { name: '480p', height: 480, bitrate: 1_000_000 },
    { name: 'src' },
  ]);
  t.like(c, { enabled: true, maxConcurrent: 4, stallMs: 10_000, audioBitrate: 128_000, pool: { backend: 'auto', size: 16 } });
  t.deepEqual(buildConfig({}).transcode.apps, {}, 'no transcoding unless configured');
  t.is(buildConfig({ transcode: { audioBitrate: '2.5M' } }).transcode.audioBitrate, 2_500_000);
});

test.serial('mistakes name the key', (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ apps: { live: { renditions: [{ name: '480p', height: 480 }] } } }, /transcode\.apps\.live\.renditions\.0\.bitrate: a rendition with a height needs a bitrate/],
    [{ apps: { live: { renditions: [{ name: 'a', height: 240, bitrate: 'fast' }] } } }, /transcode\.apps\.live\.renditions\.0\.bitrate: expected a bitrate such as 2500k/],
    [{ apps: { live: { renditions: [{ name: 'a' }, { name: 'a' }] } } }, /transcode\.apps\.live\.renditions\.1\.name: rendition name a is used twice/],
    [{ apps: { live: { renditions: [{ name: '../x' }] } } }, /transcode\.apps\.live\.renditions\.0\.name/],
    [{ pool: { backend: 'tpu' } }, /transcode\.pool\.backend/],
    [{ pool: { size: 1 } }, /transcode\.pool\.size/],
    [{ maxConcurrent: 0 }, /transcode\.maxConcurrent/],
  ];
  for (const [transcode, message] of bad) t.throws(() => buildConfig({ transcode }), { instanceOf: ConfigError, message }, JSON.stringify(transcode));
});

test.serial('renditions without a loadable node-av fail validation with a clear message; without renditions node-av is not needed', (t) => {
  const real = transcodeDependency.loadError;
  t.teardown(() => (transcodeDependency.loadError = real));
  t.is(real(), undefined, 'node-av loads here');
  transcodeDependency.loadError = () => "Cannot find package 'node-av'";
  const err = t.throws(() => buildConfig({ transcode: { apps: { live: { renditions: LADDER } } } }), { instanceOf: ConfigError });
  t.is(
    err!.message,
    "config: transcode.apps: renditions are configured but node-av (the optional transcoding dependency) cannot be loaded: Cannot find package 'node-av'. Install it (npm install node-av) or remove transcode.apps",
  );
  t.notThrows(() => buildConfig({}));
  t.notThrows(() => buildConfig({ transcode: { enabled: false, apps: { live: { renditions: LADDER } } } }));
});
