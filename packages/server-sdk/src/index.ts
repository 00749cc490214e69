/**
 * Herald server SDK: typed calls of the HTTP server API and token minting
 * for backends. (Filled in by issue 12's server SDK work.)
 */
export const SDK_NAME = '@herald/server-sdk';
