import { expect } from 'chai';
import Koa from 'koa';
import { createServer } from 'node:http';
import { providerRouter, ProviderError, type AuditEvent, type Auditor, type LoginProvider } from '../lib/index.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';

// ---- the README's "add a provider in one short module" example, verbatim ----
interface GitHubUser { id: number; login: string; name?: string }

function githubProvider(o: { clientId: string; clientSecret: string; baseUrl?: string; apiUrl?: string }): LoginProvider<GitHubUser, string> {
  const web = o.baseUrl ?? 'https://github.com';
  const api = o.apiUrl ?? 'https://api.github.com';
  const call = async (url: string, init: RequestInit, stage: string): Promise<Record<string, unknown>> => {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) })
      .catch((err: unknown) => { throw new ProviderError('network_error', { stage, error: String((err as Error).name) }); });
    const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok || typeof body.error === 'string') throw new ProviderError(`${stage}_failed`, { status: res.status, error: body.error });
    return body;
  };
  return {
    name: 'github',
    label: 'GitHub',
    reasons: ['token_exchange_failed', 'user_info_failed', 'network_error'],
    authorizeUrl: ({ state, redirectUri }) =>
      ({ url: `${web}/login/oauth/authorize?${new URLSearchParams({ client_id: o.clientId, redirect_uri: redirectUri, state })}` }),
    async exchange({ code, redirectUri }) {
      const body = await call(`${web}/login/oauth/access_token`, {
        method: 'POST',
        headers: { accept: 'application/json', 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: o.clientId, client_secret: o.clientSecret, code, redirect_uri: redirectUri }),
      }, 'token_exchange');
      return String(body.access_token);
    },
    async userInfo(token) {
      const u = (await call(`${api}/user`, { headers: { authorization: `Bearer ${token}` } }, 'user_info')) as unknown as GitHubUser;
      return { id: String(u.id), name: u.name ?? u.login, profile: u, meta: { login: u.login } };
    },
  };
}
// ---- end of the README example ----

const SECRET = 'gh-client-secret-SENTINEL-0c4e';
const TOKEN = 'gho_token-SENTINEL-77aa';

describe('one provider shape: a GitHub provider in one short module (the README example)', () => {
  const fx = useFixture('provider_shape');
  let auditor: Auditor;
  let ghUrl: string;
  let server: Running;
  let refuseCode = false;

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);

  async function flow(): Promise<Response> {
    const start = await fetch(`${server.url}/auth/github/login`, { redirect: 'manual' });
    const cookie = start.headers.getSetCookie()[0].split(';')[0];
    const consent = await fetch(start.headers.get('location') ?? '', { redirect: 'manual' });
    return fetch(consent.headers.get('location') ?? '', { redirect: 'manual', headers: { cookie } });
  }

  before(async () => {
    // A stand-in for GitHub's three endpoints, on 127.0.0.1.
    const gh = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/login/oauth/authorize') {
        const back = new URL(url.searchParams.get('redirect_uri') ?? '');
        back.searchParams.set('code', 'gh-code-1');
        back.searchParams.set('state', url.searchParams.get('state') ?? '');
        res.writeHead(302, { location: back.href }).end();
      } else if (url.pathname === '/login/oauth/access_token') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(refuseCode ? { error: 'bad_verification_code' } : { access_token: TOKEN, token_type: 'bearer' }));
      } else if (url.pathname === '/user' && req.headers.authorization === `Bearer ${TOKEN}`) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 4242, login: 'octocat', name: 'The Octocat' }));
      } else res.writeHead(401).end('{}');
    });
    ghUrl = (await fx.listen(gh)).url;
    auditor = fx.auditor({ collection: 'gh_events' });
    const app = new Koa();
    app.use(auditor());
    app.use(providerRouter(githubProvider({ clientId: 'gh-client', clientSecret: SECRET, baseUrl: ghUrl, apiUrl: ghUrl }), {
      signals: auditor,
      onLogin: (ctx, user) => ({ id: `gh:${user.id}`, name: user.login }),
      stateSecret: 'state-key-of-this-app',
    }).routes());
    server = await fx.listen(app);
  });

  it('logs in through the shared router: login with provider github', async () => {
    refuseCode = false;
    const res = await flow();
    expect(res.status).to.equal(302);
    const [ev] = await events({ requestId: res.headers.get('x-request-id'), kind: { $in: ['login', 'login_failed'] } });
    expect(ev).to.deep.include({ kind: 'login', provider: 'github', identifier: '4242', meta: { login: 'octocat' } });
    expect(ev.actor).to.deep.equal({ id: 'gh:4242', name: 'octocat', via: 'explicit' });
  });

  it('fails with the provider\'s reason, and stores no secret', async () => {
    refuseCode = true;
    const res = await flow();
    expect(res.status).to.equal(401);
    expect(await res.text()).to.equal('GitHub login failed: token_exchange_failed');
    const [ev] = await events({ requestId: res.headers.get('x-request-id'), kind: 'login_failed' });
    expect(ev).to.deep.include({ provider: 'github', reason: 'token_exchange_failed', meta: { status: 200, error: 'bad_verification_code' } });
    for (const doc of await events({})) expect(JSON.stringify(doc)).to.not.match(/SENTINEL|gh-code-1/);
  });
});
