/**
 * The example app: a small "CMDB" of servers, audited end to end.
 *
 *   GET    /                       a short index of what to try
 *   GET    /servers, /servers/:id  list and read (public)
 *   POST   /servers                create   \
 *   PATCH  /servers/:id            update    } need a logged-in user (JWT cookie or Bearer token)
 *   DELETE /servers/:id            delete   /
 *   GET    /boom                   a handler that throws (recorded with its error; Koa answers 500 as usual)
 *   /login, /auth/...              login form, local login, JWT issuing, logout, Feishu OAuth, OIDC (see auth.ts)
 *   /audit/                        the audit viewer and API (admins only)
 */
import Router from '@koa/router';
import Koa, { type Context, type Next } from 'koa';
import { Schema, type Connection, type Model } from 'mongoose';
import { auditRouter, type Auditor } from '../lib/index.js';
import { authRouter, sessionMiddleware, type FeishuConfig, type OidcConfig, type SessionUser } from './auth.js';

export interface ServerDoc {
  name: string;
  ip: string;
  env: 'prod' | 'staging' | 'dev';
  owner?: string;
  tags: string[];
  adminPassword?: string;
}

export interface AppOptions {
  auditor: Auditor;
  connection: Connection;
  jwtSecret: string;
  feishu?: FeishuConfig | null;
  oidc?: OidcConfig | null;
}

export function serverModel(connection: Connection, auditor: Auditor): Model<ServerDoc> {
  if (connection.models.Server) return connection.models.Server as Model<ServerDoc>;
  const schema = new Schema<ServerDoc>({
    name: { type: String, required: true, unique: true },
    ip: { type: String, required: true },
    env: { type: String, enum: ['prod', 'staging', 'dev'], default: 'dev' },
    owner: String,
    tags: [String],
    // Stored by the app, never by the audit trail: the plugin redacts it in every change.
    adminPassword: String,
  }, { timestamps: true });
  schema.plugin(auditor.plugin, { exclude: ['createdAt', 'updatedAt'], label: 'name' });
  return connection.model<ServerDoc>('Server', schema);
}

function requireUser(ctx: Context, next: Next): Promise<void> {
  if (ctx.state.user === undefined) ctx.throw(401, 'log in first: POST /auth/login');
  return next();
}

function pick(body: unknown): Partial<ServerDoc> {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: Partial<ServerDoc> = {};
  for (const k of ['name', 'ip', 'env', 'owner', 'tags', 'adminPassword'] as const) if (b[k] !== undefined) (out as Record<string, unknown>)[k] = b[k];
  return out;
}

async function jsonBody(ctx: Context, next: Next): Promise<void> {
  if (ctx.is('application/json') && (ctx.request as { body?: unknown }).body === undefined) {
    let raw = '';
    for await (const chunk of ctx.req) {
      raw += chunk;
      if (raw.length > 100_000) ctx.throw(413);
    }
    try {
      (ctx.request as { body?: unknown }).body = raw === '' ? {} : JSON.parse(raw);
    } catch {
      ctx.throw(400, 'invalid JSON');
    }
  }
  await next();
}

export function createApp(o: AppOptions): Koa {
  const app = new Koa();
  const Server = serverModel(o.connection, o.auditor);

  // First: every request below is audited and runs inside the audit context.
  app.use(o.auditor({ exclude: ['/favicon.ico'], captureBody: true }));
  app.use(sessionMiddleware(o.jwtSecret));

  const auth = authRouter({ auditor: o.auditor, jwtSecret: o.jwtSecret, feishu: o.feishu ?? null, oidc: o.oidc ?? null });
  app.use(auth.routes()).use(auth.allowedMethods());

  const audit = auditRouter({ auditor: o.auditor, prefix: '/audit', authorize: (ctx) => (ctx.state.user as SessionUser | undefined)?.role === 'admin' });
  app.use(audit.routes()).use(audit.allowedMethods());

  const api = new Router();
  api.use(jsonBody);
  api.get('/', (ctx) => {
    ctx.body = {
      app: 'koa-audit example',
      try: [
        'GET /login in a browser (alice / alice-password), then the viewer at /audit/',
        'POST /auth/login {"username":"alice","password":"alice-password"}',
        'POST /servers {"name":"web-1","ip":"10.0.0.1"}',
        'PATCH /servers/:id {"env":"prod"}',
        'GET /boom',
        'GET /audit/ (as alice)',
      ],
    };
  });
  api.get('/servers', async (ctx) => {
    ctx.body = await Server.find().select('-adminPassword').lean();
  });
  api.get('/servers/:id', async (ctx) => {
    const doc = await Server.findById(ctx.params.id).select('-adminPassword').lean().catch(() => null);
    if (doc === null) ctx.throw(404);
    ctx.body = doc;
  });
  api.post('/servers', requireUser, async (ctx) => {
    const doc = await Server.create(pick((ctx.request as { body?: unknown }).body)).catch((err: Error) => ctx.throw(400, err.message));
    ctx.status = 201;
    ctx.body = { id: doc._id };
  });
  api.patch('/servers/:id', requireUser, async (ctx) => {
    // No projection here: FerretDB cannot project a findAndModify result, so the secret is dropped in code.
    const doc = await Server.findByIdAndUpdate(ctx.params.id, { $set: pick((ctx.request as { body?: unknown }).body) }, { returnDocument: 'after', runValidators: true })
      .lean().catch((err: Error) => ctx.throw(400, err.message));
    if (doc === null) return ctx.throw(404);
    const { adminPassword: _secret, ...visible } = doc;
    ctx.body = visible;
  });
  api.delete('/servers/:id', requireUser, async (ctx) => {
    const res = await Server.deleteOne({ _id: ctx.params.id }).catch(() => ctx.throw(404));
    if (res.deletedCount === 0) ctx.throw(404);
    ctx.status = 204;
  });
  api.get('/boom', () => {
    throw new Error('the example app failed on purpose');
  });
  app.use(api.routes()).use(api.allowedMethods());
  return app;
}
