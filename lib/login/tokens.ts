/**
 * Token-level events for apps that issue their own tokens (koa-jwt, API keys): `tokenIssued` / `tokenRevoked` record
 * the security events `authn_token_created` / `authn_token_revoked`. The token itself is never stored: a JWT is
 * decoded (not verified: the app just made it, or is throwing it away) for its `jti`, subject and expiry, and any
 * token is identified by a short SHA-256 fingerprint, enough to match the two events of one token.
 */
import { createHash } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { Context } from 'koa';
import type { Security } from './security.js';

export interface TokenEventInput {
  ctx?: Context;
  /** The user the token belongs to (its subject). Default: the request's actor. */
  user?: unknown;
  /** The token (a JWT, an API key): only its fingerprint, `jti` and expiry are stored. */
  token?: string;
  /** The token's id when the app has one (a `jti`, a database id). */
  tokenId?: string;
  /** `'access'`, `'refresh'`, `'api_key'`, ... */
  tokenType?: string;
  reason?: string;
  meta?: Record<string, unknown>;
}

/** 16 hex characters of the token's SHA-256: identifies it, reveals nothing usable. */
export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

function details(input: TokenEventInput): { target: Record<string, string>; meta: Record<string, unknown> } {
  const target: Record<string, string> = { type: input.tokenType ?? 'token' };
  const meta: Record<string, unknown> = { ...(input.meta ?? {}) };
  if (typeof input.token === 'string' && input.token !== '') {
    meta.fingerprint = tokenFingerprint(input.token);
    let claims: ReturnType<typeof jwt.decode> & object | null = null;
    try {
      claims = jwt.decode(input.token, { json: true });
    } catch {
      claims = null; // not a JWT (an API key): the fingerprint alone identifies it
    }
    if (claims !== null) {
      if (typeof claims.jti === 'string') target.id = claims.jti;
      if (typeof claims.exp === 'number') meta.expiresAt = new Date(claims.exp * 1000).toISOString();
      if (typeof claims.sub === 'string') meta.subject = claims.sub;
    }
  }
  if (typeof input.tokenId === 'string' && input.tokenId !== '') target.id = input.tokenId;
  target.id ??= typeof meta.fingerprint === 'string' ? meta.fingerprint : 'unknown';
  return { target, meta };
}

export function createTokenEvents(security: Security) {
  function record(name: 'authn_token_created' | 'authn_token_revoked', input: TokenEventInput): Promise<void> {
    if (input === null || typeof input !== 'object') return Promise.reject(new TypeError(`koa-audit: ${name === 'authn_token_created' ? 'tokenIssued' : 'tokenRevoked'} needs an input object`));
    const { target, meta } = details(input);
    return security(name, { ctx: input.ctx, user: input.user, target, reason: input.reason, meta });
  }
  return {
    tokenIssued: (input: TokenEventInput) => record('authn_token_created', input),
    tokenRevoked: (input: TokenEventInput) => record('authn_token_revoked', input),
  };
}
