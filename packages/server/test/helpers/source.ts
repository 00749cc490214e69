/**
 * Node flags for a child process that runs Herald from the clone's sources:
 * the workspace packages (`@herald/protocol`, …) resolve to their
 * TypeScript sources (the "herald-source" condition of their `exports`)
 * instead of the `dist/` built at install time.
 */
export const SOURCE_NODE_ARGS: readonly string[] = ['--conditions=herald-source'];
