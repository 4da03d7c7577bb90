/** The tributary process: config, logger, gateway, signals. Exit 2 on a bad config. */
import { ConfigError, loadConfig } from '../config/load.ts';
import { startGateway } from './app.ts';
import { createLogger } from './log.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.argv.slice(2), process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`tributary: invalid configuration\n${err.message}\n`);
    process.exit(2);
  }
  const log = createLogger(config.log.level);
  let gateway;
  try {
    gateway = await startGateway(config, log);
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    process.exitCode = 1;
    return;
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, config.shutdown.graceMs);
    force.unref();
    gateway.close(`server shutting down (${signal})`).then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

await main();
