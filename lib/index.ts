/**
 * koa-audit: a complete audit trail for Koa applications in MongoDB.
 *
 *   import audit, { createAudit } from 'koa-audit';          // ESM
 *   const { audit, createAudit } = require('koa-audit');     // CommonJS
 */
import { createAudit } from './auditor.js';

/** The zero-config instance: the default mongoose connection, collection `auditevents`. */
export const audit = createAudit();
export default audit;

export { createAudit };
export type { Auditor, AuditorEvents, CloseResult } from './auditor.js';
export type { AuditContext } from './context.js';
export type { AuditOptions } from './options.js';
export type { MiddlewareOptions, PathPattern } from './middleware.js';
export type { PluginOptions } from './plugin.js';
export type { LoginFailedInput, LoginSignalEvents, LoginSignals, LoginSucceededInput, LogoutInput, SignalTarget } from './login.js';
export { jwtLogin } from './jwt-login.js';
export type { JwtLogin, JwtLoginAttempt, JwtLoginOptions, JwtLoginResult } from './jwt-login.js';
export { feishuRouter } from './providers/feishu.js';
export type { FeishuFailureReason, FeishuRouterOptions, FeishuTokens, FeishuUser } from './providers/feishu.js';
export type { QueryFilter, QueryPage } from './query.js';
export { auditRouter } from './router.js';
export type { AuditRouterOptions } from './router.js';
export type { JsonEvent } from './serialize.js';
export type { JwtOptions, ActorResolver } from './actor.js';
export type { AuditStats, OnFull } from './store/writer.js';
export { AuditUnavailableError } from './store/writer.js';
export { REDACTED, BUILT_IN_REDACT_KEYS } from './redact.js';
export { toStored, escapeKey, unescapeKey } from './safe.js';
export type * from './types.js';
