/** Builders and parsers for RTMP protocol-control, user-control and command messages. */
import { decodeAmf0, encodeAmf0, type AmfObject, type AmfValue } from '../amf0.ts';
import { CodecError } from '../errors.ts';
import { MessageType, type RtmpMessage } from './chunks.ts';

export const enum UserControlEvent {
  StreamBegin = 0,
  StreamEof = 1,
  StreamDry = 2,
  SetBufferLength = 3,
  StreamIsRecorded = 4,
  PingRequest = 6,
  PingResponse = 7,
}

/** Chunk stream ids by purpose, as Flash and nginx-rtmp use them. */
export const Csid = { Control: 2, Command: 3, Audio: 4, Video: 6, Data: 5 } as const;

function control(type: number, payload: Buffer): RtmpMessage {
  return { type, streamId: 0, timestamp: 0, payload };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export const setChunkSize = (size: number): RtmpMessage => control(MessageType.SetChunkSize, u32(size & 0x7fffffff));
export const acknowledgement = (bytes: number): RtmpMessage => control(MessageType.Acknowledgement, u32(bytes));
export const windowAckSize = (size: number): RtmpMessage => control(MessageType.WindowAckSize, u32(size));

export function setPeerBandwidth(size: number, limitType: 0 | 1 | 2): RtmpMessage {
  return control(MessageType.SetPeerBandwidth, Buffer.concat([u32(size), Buffer.from([limitType])]));
}

export function userControl(event: UserControlEvent, value: number, extra?: number): RtmpMessage {
  const b = Buffer.alloc(extra === undefined ? 6 : 10);
  b.writeUInt16BE(event, 0);
  b.writeUInt32BE(value >>> 0, 2);
  if (extra !== undefined) b.writeUInt32BE(extra >>> 0, 6);
  return control(MessageType.UserControl, b);
}

export interface UserControl {
  event: number;
  value: number;
}

export function parseUserControl(payload: Buffer): UserControl {
  if (payload.length < 6) throw new CodecError('rtmp', `user control message of ${payload.length} bytes`);
  return { event: payload.readUInt16BE(0), value: payload.readUInt32BE(2) };
}

export function readU32(payload: Buffer, what: string): number {
  if (payload.length < 4) throw new CodecError('rtmp', `short ${what} message`);
  return payload.readUInt32BE(0);
}

export interface Command {
  readonly name: string;
  readonly transactionId: number;
  readonly object: AmfObject | null;
  readonly args: readonly AmfValue[];
}

export function command(streamId: number, name: string, transactionId: number, object: AmfObject | null, ...args: AmfValue[]): RtmpMessage {
  return { type: MessageType.CommandAmf0, streamId, timestamp: 0, payload: encodeAmf0(name, transactionId, object, ...args) };
}

export function dataMessage(streamId: number, timestamp: number, ...values: AmfValue[]): RtmpMessage {
  return { type: MessageType.DataAmf0, streamId, timestamp, payload: encodeAmf0(...values) };
}

/** AMF3 commands and data carry AMF0 after a format byte of 0. */
function amf0Body(msg: RtmpMessage): Buffer {
  if (msg.type !== MessageType.CommandAmf3 && msg.type !== MessageType.DataAmf3) return msg.payload;
  if (msg.payload.length < 1) throw new CodecError('rtmp', 'empty AMF3 message');
  return msg.payload.subarray(1);
}

export function parseCommand(msg: RtmpMessage): Command {
  const values = decodeAmf0(amf0Body(msg));
  const [name, tx, obj, ...args] = values;
  if (typeof name !== 'string') throw new CodecError('rtmp', 'command without a name');
  if (typeof tx !== 'number') throw new CodecError('rtmp', `command ${name} without a transaction id`);
  const object = obj !== null && typeof obj === 'object' && !Array.isArray(obj) && !(obj instanceof Date) ? obj : null;
  return { name, transactionId: tx, object, args };
}

export function parseData(msg: RtmpMessage): AmfValue[] {
  return decodeAmf0(amf0Body(msg));
}

export function statusObject(level: 'status' | 'error' | 'warning', code: string, description: string): AmfObject {
  return { level, code, description };
}
