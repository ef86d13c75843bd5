/**
 * koa-audit: a complete audit trail for Koa applications in MongoDB.
 *
 *   import audit, { createAudit } from 'koa-audit';          // ESM
 *   const { audit, createAudit } = require('koa-audit');     // CommonJS
 */
import type Router from '@koa/router';
import { createAudit, type Auditor } from './audit.js';
import { oidcRouter as oidcRouterOf, type OidcRouterOptions } from './login/providers/oidc.js';

let instance: Auditor | null = null;
/** The default instance, made at its first use: importing the package registers, opens and starts nothing. */
function defaultAuditor(): Auditor {
  instance ??= createAudit();
  return instance;
}

/** The zero-config instance: the default mongoose connection, collection `auditevents`. */
export const audit: Auditor = new Proxy(function audit() {} as unknown as Auditor, {
  apply: (_target, _this, args: Parameters<Auditor>) => defaultAuditor()(...args),
  get: (_target, key) => Reflect.get(defaultAuditor(), key),
  has: (_target, key) => Reflect.has(defaultAuditor(), key),
});
export default audit;

/**
 * `GET {prefix}/login` and `GET {prefix}/callback` for one OpenID Connect issuer (lib/login/providers/oidc.ts);
 * without `signals`, the events go to the default `audit` instance, as the contract's `oidcRouter({ issuer, ... })`.
 */
export function oidcRouter(options: OidcRouterOptions): Router {
  const o = options as OidcRouterOptions | null | undefined;
  return oidcRouterOf(o !== null && typeof o === 'object' && o.signals === undefined ? { ...o, signals: audit } : (o as OidcRouterOptions & { signals: Auditor }));
}
export { createAudit };
export type { Auditor, AuditorApi } from './audit.js';
export type { AuditContext } from './core/context.js';
export type { AuditOptions, Durability } from './core/options.js';
export type { MiddlewareOptions, PathPattern } from './request/middleware.js';
export type { PluginOptions } from './changes/plugin.js';
export type { LoginFailedInput, LoginSignalEvents, LoginSignals, LoginSucceededInput, LogoutInput, SignalTarget } from './login/login.js';
export type { SecurityEventName, SecurityEventNames, SecurityInput } from './login/security.js';
export { KNOWN_SECURITY_NAMES } from './login/security.js';
export type { TokenEventInput } from './login/tokens.js';
export { auditPassport } from './login/passport.js';
export type { AuditPassportOptions, PassportLike, PassportStrategyLike } from './login/passport.js';
export { jwtLogin } from './login/jwt-login.js';
export type { JwtLogin, JwtLoginAttempt, JwtLoginOptions, JwtLoginResult } from './login/jwt-login.js';
export { feishuProvider, feishuRouter } from './login/providers/feishu.js';
export { oidcProvider } from './login/providers/oidc.js';
export type { OidcFailureReason, OidcProviderOptions, OidcRouterOptions, OidcTokens, OidcUser } from './login/providers/oidc.js';
export { providerRouter, ProviderError } from './login/providers/provider.js';
export type { AuthorizeStep, LoginProvider, ProviderIdentity, ProviderRouterOptions, RouterFailureReason } from './login/providers/provider.js';
export type { FeishuFailureReason, FeishuProviderOptions, FeishuRouterOptions, FeishuTokens, FeishuUser } from './login/providers/feishu.js';
export type { QueryFilter, QueryPage } from './read/query.js';
export { auditRouter } from './read/router.js';
export type { AuditRouterOptions } from './read/router.js';
export type { JsonEvent } from './core/json.js';
export type { JwtOptions, JwtAlgorithm, JwtSecret, ActorResolver } from './core/actor.js';
export { AuditUnavailableError, RevertConflictError, RevertRefusedError } from './core/errors.js';
export type { AuditCallOptions } from './changes/call-note.js';
export type { RestoreOptions, RevertOptions, RevertResult } from './changes/revert.js';
export type { HistoryScope } from './changes/history.js';
export type { RetentionOptions } from './core/options.js';
export { parseTraceparent } from './core/trace.js';
export { REDACTED, BUILT_IN_REDACT_KEYS } from './core/redact.js';
export type { ScrubOptions, ScrubRule } from './core/scrub.js';
export { toStored, escapeKey, unescapeKey } from './core/safe.js';
export type * from './core/types.js';
export type { AuditSink } from './core/sink.js';
export { SinkError } from './core/sink.js';
export { webhookSink, signWebhook } from './sinks/webhook.js';
export type { WebhookSinkOptions, WebhookTls } from './sinks/webhook.js';
export { verifyWebhook, WebhookVerificationError } from './sinks/verify.js';
export type { VerifiedWebhook, VerifyWebhookOptions, WebhookFailure, WebhookInput } from './sinks/verify.js';
export { kafkaSink, defaultKafkaKey } from './sinks/kafka.js';
export type { KafkaSinkOptions } from './sinks/kafka.js';
export { otlpSink, otlpAttributes } from './sinks/otlp.js';
export type { OtlpSinkOptions } from './sinks/otlp.js';
export type { VerifyOptions } from './integrity/verify-options.js';
export type { ProblemType, VerifyProblem, VerifyResult } from './integrity/verify.js';
export { canonical, eventHash } from './integrity/canonical.js';
