/**
 * Encoding of server frames. Publications are encoded by string assembly
 * around the publication's data, which is kept as JSON text from the moment
 * it is accepted: a publication is serialized once, never per subscriber.
 */
import type { ClientInfo, Push, Reply, ReplyError } from './frames.ts';

/**
 * A result Herald has already assembled as JSON text (a history page around
 * stored publication data): embedded as is, never parsed back, so stored
 * data of any shape cannot break a reader.
 */
export class JsonText {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

/** A command or API result as JSON text. */
export function encodeResult(result: unknown): string {
  return result instanceof JsonText ? result.text : JSON.stringify(result ?? {});
}

export function encodeReply(id: number, result: unknown): string {
  return '{"id":' + id + ',"result":' + encodeResult(result) + '}';
}

export function encodeReplyError(id: number, error: ReplyError, detail?: string): string {
  const body: ReplyError = detail === undefined ? { code: error.code, message: error.message } : { code: error.code, message: error.message, detail };
  return '{"id":' + id + ',"error":' + JSON.stringify(body) + '}';
}

export function encodePush(push: Push): string {
  return JSON.stringify(push);
}

/** `dataJson` must be valid JSON text (it is embedded as is). */
export function encodePublicationPush(
  channel: string,
  offset: number,
  dataJson: string,
  info: ClientInfo | undefined,
): string {
  return (
    '{"push":"publication","channel":' +
    JSON.stringify(channel) +
    ',"offset":' +
    offset +
    ',"data":' +
    dataJson +
    (info === undefined ? '' : ',"info":' + JSON.stringify(info)) +
    '}'
  );
}

/** `dataJson` must be valid JSON text (it is embedded as is). */
export function encodePublication(offset: number, dataJson: string, info: ClientInfo | undefined): string {
  return (
    '{"offset":' + offset + ',"data":' + dataJson + (info === undefined ? '' : ',"info":' + JSON.stringify(info)) + '}'
  );
}

export type { Reply };
