/**
 * A small fake of Feishu's OAuth HTTP API on 127.0.0.1, for tests and for the example app in development:
 *
 *   GET  /open-apis/authen/v1/authorize   consents at once: 302 to redirect_uri?code=..&state=.. (or ?error=access_denied)
 *   POST /open-apis/authen/v2/oauth/token  code -> { code: 0, access_token, ... }; checks client id/secret and redirect_uri
 *   GET  /open-apis/authen/v1/user_info    Bearer access token -> { code: 0, data: { open_id, name, ... } }
 *
 * `mode` switches one failure on: denied consent, a token error, a user_info error, or a network failure
 * (connection reset, or no answer at all) on either call.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FakeFeishuMode =
  | 'ok'
  | 'deny'
  | 'token_error'
  | 'token_reset'
  | 'token_hang'
  | 'user_info_error'
  | 'user_info_reset';

export interface FakeFeishuUser {
  open_id: string;
  union_id?: string;
  name?: string;
  en_name?: string;
  email?: string;
  tenant_key?: string;
}

export interface FakeFeishuOptions {
  appId?: string;
  appSecret?: string;
  user?: FakeFeishuUser;
  /** Prefix of the access tokens handed out (tests put a sentinel here to prove tokens are never stored). */
  tokenPrefix?: string;
}

export interface FakeFeishu {
  url: string;
  appId: string;
  appSecret: string;
  mode: FakeFeishuMode;
  user: FakeFeishuUser;
  /** Every request the fake received: method, path, and the parsed JSON body or Authorization header. */
  readonly calls: { method: string; path: string; body?: Record<string, unknown>; authorization?: string }[];
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) req.destroy(new Error('body too large'));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

export async function startFakeFeishu(options: FakeFeishuOptions = {}): Promise<FakeFeishu> {
  const codes = new Map<string, { redirectUri: string; expires: number }>();
  const tokens = new Set<string>();
  const fake: FakeFeishu = {
    url: '',
    appId: options.appId ?? 'cli_fake_app',
    appSecret: options.appSecret ?? 'fake-app-secret',
    mode: 'ok',
    user: options.user ?? { open_id: 'ou_fake_alice', union_id: 'on_fake_alice', name: 'Alice Feishu', email: 'alice@feishu.example', tenant_key: 'fake_tenant' },
    calls: [],
    close: async () => undefined,
  };
  const tokenPrefix = options.tokenPrefix ?? 'u-fake-';

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const call: FakeFeishu['calls'][number] = { method: req.method ?? 'GET', path: url.pathname };
    fake.calls.push(call);

    if (req.method === 'GET' && url.pathname === '/open-apis/authen/v1/authorize') {
      const redirectUri = url.searchParams.get('redirect_uri');
      const state = url.searchParams.get('state') ?? '';
      if (url.searchParams.get('app_id') !== fake.appId || redirectUri === null || !URL.canParse(redirectUri)) {
        return json(res, 400, { code: 20001, msg: 'invalid app_id or redirect_uri' });
      }
      const back = new URL(redirectUri);
      if (fake.mode === 'deny') {
        back.searchParams.set('error', 'access_denied');
      } else {
        const code = randomBytes(12).toString('hex');
        codes.set(code, { redirectUri, expires: Date.now() + 5 * 60_000 });
        back.searchParams.set('code', code);
      }
      back.searchParams.set('state', state);
      res.writeHead(302, { location: back.href });
      res.end();
      return;
    }

    if (req.method === 'POST' && url.pathname === '/open-apis/authen/v2/oauth/token') {
      const raw = await readBody(req);
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        return json(res, 400, { code: 20002, error: 'invalid_request', error_description: 'body is not JSON' });
      }
      call.body = body;
      if (fake.mode === 'token_reset') {
        req.socket.destroy();
        return;
      }
      if (fake.mode === 'token_hang') return; // never answers: the client's timeout must fire
      if (fake.mode === 'token_error') return json(res, 400, { code: 20050, error: 'server_error', error_description: 'fake token error' });
      if (body.grant_type !== 'authorization_code' || body.client_id !== fake.appId || body.client_secret !== fake.appSecret) {
        return json(res, 400, { code: 20002, error: 'invalid_client', error_description: 'client authentication failed' });
      }
      const issued = typeof body.code === 'string' ? codes.get(body.code) : undefined;
      if (issued === undefined || issued.expires < Date.now() || issued.redirectUri !== body.redirect_uri) {
        return json(res, 400, { code: 20003, error: 'invalid_grant', error_description: 'code is invalid, used or expired' });
      }
      codes.delete(body.code as string);
      const token = `${tokenPrefix}${randomBytes(12).toString('hex')}`;
      tokens.add(token);
      return json(res, 200, {
        code: 0,
        access_token: token,
        expires_in: 7200,
        refresh_token: `r-${randomBytes(12).toString('hex')}`,
        refresh_token_expires_in: 604800,
        token_type: 'Bearer',
        scope: '',
      });
    }

    if (req.method === 'GET' && url.pathname === '/open-apis/authen/v1/user_info') {
      const auth = req.headers.authorization ?? '';
      call.authorization = auth;
      if (fake.mode === 'user_info_reset') {
        req.socket.destroy();
        return;
      }
      if (fake.mode === 'user_info_error') return json(res, 200, { code: 99991663, msg: 'fake user_info error' });
      const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      if (!tokens.has(token)) return json(res, 401, { code: 99991668, msg: 'invalid access token' });
      return json(res, 200, { code: 0, msg: 'success', data: { ...fake.user, avatar_url: 'https://example.invalid/a.png' } });
    }

    json(res, 404, { code: 404, msg: 'not found' });
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) json(res, 500, { code: 500, msg: 'fake failed' });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return fake;
}
