/** A small Ogg page reader for tests: the packets of the first logical stream, in order. */

export interface OggPacket {
  data: Buffer;
  /** The granule position of the page this packet ends on, for the last packet of a page; -1 otherwise. */
  granule: bigint;
}

export function readOggPackets(file: Buffer): OggPacket[] {
  const packets: OggPacket[] = [];
  let serial: number | undefined;
  let pending: Buffer[] = [];
  let off = 0;
  while (off < file.length) {
    if (off + 27 > file.length) throw new Error(`Ogg page header truncated at ${off}`);
    if (file.toString('latin1', off, off + 4) !== 'OggS') throw new Error(`no OggS capture pattern at ${off}`);
    const granule = file.readBigInt64LE(off + 6);
    const pageSerial = file.readUInt32LE(off + 14);
    const segments = file[off + 26]!;
    if (off + 27 + segments > file.length) throw new Error(`Ogg segment table truncated at ${off}`);
    const lacing = file.subarray(off + 27, off + 27 + segments);
    let body = off + 27 + segments;
    serial ??= pageSerial;
    const mine = pageSerial === serial;
    const ends: number[] = [];
    for (let i = 0; i < segments; i++) {
      const len = lacing[i]!;
      if (body + len > file.length) throw new Error(`Ogg page body truncated at ${off}`);
      if (mine) pending.push(file.subarray(body, body + len));
      body += len;
      if (len < 255 && mine) {
        packets.push({ data: Buffer.concat(pending), granule: -1n });
        pending = [];
        ends.push(packets.length - 1);
      }
    }
    const last = ends[ends.length - 1];
    if (last !== undefined) packets[last]!.granule = granule;
    off = body;
  }
  return packets;
}
