/**
 * A TCP proxy in front of the test server that makes it answer `hello` as a replica set member would (`setName`,
 * `hosts`), and passes everything else through byte for byte. FerretDB is never a replica set; this lets a test
 * watch what a real auditor does on one (the write-concern warning) against the real server behind it.
 * Only OP_MSG replies (opcode 2013) without checksums are rewritten; that is all a driver sends here.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { mongo } from 'mongoose';

const OP_MSG = 2013;

function rewrite(message: Buffer, setName: string, hosts: string[]): Buffer {
  if (message.readInt32LE(12) !== OP_MSG) return message;
  const flags = message.readUInt32LE(16);
  if ((flags & 1) !== 0 || message[20] !== 0) return message; // a checksum, or not a body section first
  const docLength = message.readInt32LE(21);
  const body = mongo.BSON.deserialize(message.subarray(21, 21 + docLength));
  if (!('isWritablePrimary' in body) && !('ismaster' in body)) return message;
  const reply = mongo.BSON.serialize({ ...body, setName, hosts, primary: hosts[0] });
  const rest = message.subarray(21 + docLength);
  const out = Buffer.concat([message.subarray(0, 21), reply, rest]);
  out.writeInt32LE(out.length, 0);
  return out;
}

export interface ReplicaSetProxy {
  /** A URI through the proxy, with directConnection (the driver must not go looking for the other members). */
  uri(database: string): string;
  close(): Promise<void>;
}

export async function replicaSetProxy(target: string, setName = 'rs-test', members = 3): Promise<ReplicaSetProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: hostname, port: Number(port) });
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    let pending = Buffer.alloc(0);
    upstream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= pending.readInt32LE(0)) {
        const length = pending.readInt32LE(0);
        client.write(rewrite(pending.subarray(0, length), setName, hosts));
        pending = pending.subarray(length);
      }
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const self = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const hosts = [self, ...Array.from({ length: members - 1 }, (_, i) => `127.0.0.1:${1 + i}`)];
  return {
    uri: (database) => `mongodb://${self}/${database}?directConnection=true`,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}
