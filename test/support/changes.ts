/** Helpers of the change-auditing tests: an auditor on a test database, and its events read back. */
import { Schema, type Model, type SchemaDefinition, type mongo } from 'mongoose';
import type { CommandStartedEvent } from 'mongodb';
import type { AuditOptions, Auditor, PluginOptions } from '../../lib/index.js';
import type { AuditEvent, Change } from '../../lib/core/types.js';
import { storedEvents, useFixture, type Fixture } from './helpers.js';

export interface ChangeFixture {
  auditor: Auditor;
  /** A fresh model on the test connection with the plugin applied (a unique name per call). */
  model<T = Record<string, unknown>>(definition: SchemaDefinition, options?: PluginOptions, schemaOptions?: object): Model<T>;
  /** The stored change events, oldest first, after a flush. */
  events(filter?: Record<string, unknown>): Promise<AuditEvent[]>;
}

let counter = 0;

/** An auditor of `fx` (closed with it) and models with its plugin, on `fx`'s connection. Call it once `fx` has connected. */
export function changeFixture(fx: Fixture, auditOptions: AuditOptions = {}): ChangeFixture {
  const conn = fx.conn;
  const auditor = fx.auditor({ flushIntervalMs: 20, ...auditOptions });
  return {
    auditor,
    model<T>(definition: SchemaDefinition, options?: PluginOptions, schemaOptions?: object): Model<T> {
      const schema = new Schema(definition, schemaOptions);
      schema.plugin(auditor.plugin, options);
      const name = `M${++counter}_${Date.now().toString(36)}`;
      return conn.model(name, schema) as unknown as Model<T>;
    },
    events: (filter: Record<string, unknown> = {}): Promise<AuditEvent[]> => storedEvents(auditor, filter),
  };
}

/** Changes sorted by path: servers may order fields differently, the tests compare sets of changes. */
export function byPath(changes: Change[] | undefined): Change[] {
  return [...(changes ?? [])].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export interface ChangesFixture extends ChangeFixture, Omit<Fixture, 'auditor'> {
  /** The `find` commands sent to `model`'s collection since the last `resetCommands()`. */
  finds(model: { collection: { collectionName: string } }): CommandStartedEvent[];
  resetCommands(): void;
  /** The commands of `names` sent to `model`'s collection while `fn` runs. */
  sent(model: { collection: { collectionName: string } }, names: readonly string[], fn: () => Promise<unknown>): Promise<CommandStartedEvent[]>;
  /** Another auditor with its plugin on the same connection, with other options; closed with the file. */
  withOptions(options: AuditOptions): ChangeFixture;
}

/**
 * The fixture of every change-auditing test file: `useFixture` (see test/support/helpers.ts) with an auditor and
 * its plugin. Its connection opens a fresh database named after the file, with command monitoring, so that a test
 * can see what the plugin reads (projections, limits, sessions).
 */
export function useChanges(name: string, auditOptions: AuditOptions = {}): ChangesFixture {
  const fx = useFixture(name, { connection: { monitorCommands: true } });
  let main: ChangeFixture | undefined;
  const commands: CommandStartedEvent[] = [];
  before(() => {
    fx.conn.getClient().on('commandStarted', (e: CommandStartedEvent) => commands.push(e));
    main = changeFixture(fx, auditOptions);
  });
  const ready = (): ChangeFixture => {
    if (main === undefined) throw new Error('the change fixture connects in before()');
    return main;
  };
  const sent = async (model: { collection: { collectionName: string } }, names: readonly string[], fn: () => Promise<unknown>): Promise<CommandStartedEvent[]> => {
    const from = commands.length;
    await fn();
    return commands.slice(from).filter((e) => names.includes(e.commandName) && e.command[e.commandName] === model.collection.collectionName);
  };
  return {
    get conn() {
      return fx.conn;
    },
    get uri() {
      return fx.uri;
    },
    get auditor(): Auditor {
      return ready().auditor;
    },
    tmp: fx.tmp,
    serve: fx.serve,
    listen: fx.listen,
    connect: fx.connect,
    database: fx.database,
    own: fx.own,
    cleanup: fx.cleanup,
    model: (definition, options, schemaOptions) => ready().model(definition, options, schemaOptions),
    events: (filter) => ready().events(filter),
    finds: (model) => commands.filter((c) => c.commandName === 'find' && c.command.find === model.collection.collectionName),
    sent,
    resetCommands: () => {
      commands.length = 0;
    },
    withOptions: (options) => changeFixture(fx, options),
  };
}

/** The models the change tests write through, one shape each (fields and plugin options as each test needs). */
export interface Post {
  _id: mongo.ObjectId;
  title: string;
  n?: number;
  tags?: string[];
}

export interface User {
  _id: mongo.ObjectId;
  email: string;
  age?: number;
  grp?: string;
  n?: number;
}

export interface Account {
  _id: mongo.ObjectId;
  email: string;
  code?: string;
  age?: number;
}

/** A fresh Post model (title required), audited. */
export function postModel(fx: ChangeFixture): Model<Post> {
  return fx.model<Post>({ title: { type: String, required: true }, n: Number, tags: [String] });
}

/** A fresh User model (unique email, age >= 0, at most 5 documents recorded one by one), its indexes built. */
export async function userModel(fx: ChangeFixture): Promise<Model<User>> {
  const User = fx.model<User>({ email: { type: String, required: true, unique: true }, age: { type: Number, min: 0 }, grp: String, n: Number }, { maxDocuments: 5 });
  await User.init();
  return User;
}
