/**
 * A jsonwebtoken login flow that only needs the signals emitter: it checks the credentials with the app's
 * `verify`, signs a token on success and emits `login`, or emits `login_failed` on bad credentials. The
 * password goes to `verify` and nowhere else: it is never part of an emitted event.
 */
import jwt from 'jsonwebtoken';
import type { Context } from 'koa';
import { toActor, type JwtAlgorithm, type JwtSecret } from '../core/actor.js';
import { signalsOf, type SignalTarget } from './login.js';
import { checkKnown, fail, fnOption, JWT_ALGORITHMS, nonEmptyString, objectOption, signingKey } from '../core/options.js';
import type { Actor } from '../core/types.js';

export interface JwtLoginOptions<U> {
  /** Where events are emitted: an auditor or its `signals`. */
  signals: SignalTarget;
  /** Signing key (HMAC secret, or a private key for asymmetric algorithms). */
  secret: JwtSecret;
  /** Default `'HS256'`. */
  algorithm?: JwtAlgorithm;
  /** Token lifetime, as jsonwebtoken takes it (`'1h'`, seconds). Default `'1h'`. */
  expiresIn?: number | string;
  issuer?: string;
  audience?: string;
  /** Checks the credentials: the user on success, null (or undefined) when they are wrong. */
  verify: (identifier: string, password: string, ctx: Context | undefined) => U | null | undefined | Promise<U | null | undefined>;
  /**
   * Extra claims of the token. The claims that say who the token is for are the recorded actor's only: `sub` is
   * its id and `name` its name; `id`, `_id`, `username` and `name` returned here are dropped, and so is `email`
   * when the actor has no name (a verifier would otherwise take it for the name).
   */
  claims?: (user: U) => Record<string, unknown>;
  /** `provider` of the events. Default `'jwt'`. */
  provider?: string;
}

export interface JwtLoginAttempt {
  ctx?: Context;
  identifier: string;
  password: string;
  /** Goes into the event (redacted like every meta). */
  meta?: Record<string, unknown>;
}

export interface JwtLoginResult<U> {
  token: string;
  user: U;
}

/**
 * Resolves with `{ token, user }`, or null when the credentials are wrong or missing. When `verify` itself
 * throws (or returns a user without an id), `login_failed` is emitted with reason `'verify_error'` and the error
 * is thrown; when `claims` or signing throws, the reason is `'sign_error'`.
 */
export type JwtLogin<U> = (attempt: JwtLoginAttempt) => Promise<JwtLoginResult<U> | null>;


/** The claims a verifier reads the actor from (see `toActor`): `id ?? _id ?? sub`, `username ?? name ?? email`. */
const IDENTITY_CLAIMS: ReadonlySet<string> = new Set(['id', '_id', 'sub', 'username', 'name', 'email']);

/** The token payload: the app's claims, with the identity claims taken from the recorded actor only. */
function payloadFor(actor: Actor, extra: unknown): Record<string, unknown> {
  if (extra !== undefined && (extra === null || typeof extra !== 'object' || Array.isArray(extra))) {
    throw new TypeError('koa-audit: jwtLogin claims() must return an object');
  }
  const payload: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(extra ?? {})) {
    if (!IDENTITY_CLAIMS.has(k)) payload[k] = v;
  }
  payload.sub = actor.id;
  if (actor.name !== undefined) {
    payload.name = actor.name;
    // With a name claim present, `email` can no longer be taken for the name: it may stay.
    const email = (extra as Record<string, unknown> | undefined)?.email;
    if (email !== undefined) payload.email = email;
  }
  return payload;
}

/** Builds the login function: resolves with `{ token, user }`, or null when the credentials are wrong. */
export function jwtLogin<U>(options: JwtLoginOptions<U>): JwtLogin<U> {
  objectOption('jwtLogin options', options ?? null);
  checkKnown(options, ['signals', 'secret', 'algorithm', 'expiresIn', 'issuer', 'audience', 'verify', 'claims', 'provider'], 'jwtLogin');
  const signals = signalsOf(options.signals, 'signals');
  const secret = signingKey('secret', options.secret) as jwt.Secret;
  const algorithm = options.algorithm ?? 'HS256';
  if (!JWT_ALGORITHMS.has(algorithm)) fail('algorithm', `one of ${[...JWT_ALGORITHMS].join(', ')}`, algorithm);
  fnOption('verify', options.verify, '(identifier, password, ctx) => user | null', true);
  fnOption('claims', options.claims, '(user) => object', false);
  const provider = nonEmptyString('provider', options.provider, 'jwt');
  // jsonwebtoken checks the text of `expiresIn` itself (a bad one is a sign_error): its `ms` template type is not ours to expose.
  const signOptions: jwt.SignOptions = { algorithm, expiresIn: (options.expiresIn ?? '1h') as jwt.SignOptions['expiresIn'] };
  if (options.issuer !== undefined) signOptions.issuer = nonEmptyString('issuer', options.issuer, '');
  if (options.audience !== undefined) signOptions.audience = nonEmptyString('audience', options.audience, '');
  const { verify, claims } = options;

  return async function login(attempt: JwtLoginAttempt): Promise<JwtLoginResult<U> | null> {
    const { ctx, meta } = attempt;
    const identifier = typeof attempt.identifier === 'string' ? attempt.identifier : '';
    const password = typeof attempt.password === 'string' ? attempt.password : '';
    if (identifier === '' || password === '') {
      signals.emit('login_failed', { ctx, identifier: identifier === '' ? null : identifier, provider, reason: 'missing_credentials', meta });
      return null;
    }
    let user: U | null | undefined;
    try {
      user = await verify(identifier, password, ctx);
    } catch (err) {
      signals.emit('login_failed', { ctx, identifier, provider, reason: 'verify_error', meta });
      throw err;
    }
    if (user === null || user === undefined) {
      signals.emit('login_failed', { ctx, identifier, provider, reason: 'bad_credentials', meta });
      return null;
    }
    const actor = toActor(user, 'explicit');
    if (actor === null) {
      signals.emit('login_failed', { ctx, identifier, provider, reason: 'verify_error', meta });
      throw new TypeError('koa-audit: jwtLogin verify() returned a user without an id (id, _id or sub)');
    }
    let token: string;
    try {
      token = jwt.sign(payloadFor(actor, claims === undefined ? undefined : claims(user)), secret, signOptions);
    } catch (err) {
      signals.emit('login_failed', { ctx, identifier, provider, reason: 'sign_error', meta });
      throw err;
    }
    signals.emit('login', { ctx, user, provider, identifier, meta });
    return { token, user };
  };
}
