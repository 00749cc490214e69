export * from './codes.ts';
export * from './channel-name.ts';
export * from './positions.ts';
export * from './frames.ts';
export * from './codec.ts';
