/**
 * The write-concern check: an audit event acknowledged by one member of a replica set can be rolled back by a
 * failover, so a write concern weaker than majority there deserves a warning. Standalone servers (and
 * FerretDB, which is not a replica set) have nothing weaker or stronger to offer: no warning.
 */
import type { Connection, WriteConcern } from 'mongoose';

/** The fields of a `hello` (or legacy `isMaster`) answer the check looks at. */
export interface HelloReply {
  setName?: unknown;
  hosts?: unknown;
  maxWireVersion?: unknown;
}

/** MongoDB 5.0 (wire version 13) made `w: 'majority'` the implicit default on replica sets. */
const MAJORITY_DEFAULT_WIRE_VERSION = 13;

/** Why `wc` is weaker than majority on the server that answered `hello`, or null when it is not. */
export function weakWriteConcern(hello: HelloReply, wc: WriteConcern | undefined): string | null {
  if (typeof hello.setName !== 'string' || hello.setName === '') return null;
  const w = wc?.w;
  if (w === 'majority') return null;
  if (w === undefined) {
    if (typeof hello.maxWireVersion === 'number' && hello.maxWireVersion >= MAJORITY_DEFAULT_WIRE_VERSION) return null;
    return `no write concern is set and this server (before MongoDB 5.0) defaults to w: 1 on replica set "${hello.setName}"`;
  }
  if (typeof w === 'number') {
    const members = Array.isArray(hello.hosts) ? hello.hosts.length : 0;
    if (members > 0 && w >= Math.floor(members / 2) + 1) return null;
    return `write concern w: ${w} is weaker than majority on replica set "${hello.setName}"`;
  }
  return null; // a custom tag set: the application chose it knowingly
}

/** The write concern the audit inserts will use: the option, else the connection's (its database's or client's). */
export function effectiveWriteConcern(connection: Connection, configured: WriteConcern | undefined): WriteConcern | undefined {
  if (configured !== undefined) return configured;
  const fromDb = connection.db?.writeConcern;
  if (fromDb !== undefined) return fromDb;
  try {
    return connection.getClient().writeConcern;
  } catch {
    return undefined;
  }
}

/** Asks the server and warns (once, through `warn`) when the audit writes could be rolled back. Never throws. */
export async function checkWriteConcern(
  connection: Connection,
  configured: WriteConcern | undefined,
  warn: (code: string, message: string) => void,
): Promise<void> {
  const db = connection.db;
  if (db === undefined) return;
  let hello: HelloReply;
  try {
    hello = await db.admin().command({ hello: 1 });
  } catch {
    try {
      hello = await db.admin().command({ isMaster: 1 });
    } catch {
      return; // not allowed to ask: nothing to judge
    }
  }
  const why = weakWriteConcern(hello, effectiveWriteConcern(connection, configured));
  if (why !== null) {
    warn('KOA_AUDIT_WEAK_WRITE_CONCERN', `${why}: audit events acknowledged by one member can be lost in a failover; pass writeConcern: { w: 'majority' }`);
  }
}
