/**
 * Herald as a library: start a server in your own process (tests, embedding)
 * from a validated config. The `herald` command (src/cli/main.ts) is the
 * usual way to run it.
 */
export { startServer, type HeraldServer, type StartOptions } from './app/app.ts';
export { buildConfig, loadConfig, ConfigError, type ConfigSources } from './config/load.ts';
export type { Config } from './config/schema.ts';
export { version } from './app/version.ts';
