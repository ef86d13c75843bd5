/**
 * Mocha global fixtures: one database server for the whole run, stopped at the end (and on any exit).
 * The URI travels in KOA_AUDIT_TEST_URI so that every test file, however it is loaded, finds the same server.
 */
import { startDatabase, stopDatabase } from './database.js';

export async function mochaGlobalSetup(): Promise<void> {
  const db = await startDatabase();
  process.env.KOA_AUDIT_TEST_URI = db.uri;
  process.env.KOA_AUDIT_TEST_DB_KIND = db.kind;
}

export async function mochaGlobalTeardown(): Promise<void> {
  await stopDatabase();
}
