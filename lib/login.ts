/** Login auditing. (Stub: filled in by the login issue.) */
import { EventEmitter } from 'node:events';
import type { Context } from 'koa';
import type { AuditCore } from './auditor.js';

export interface LoginSucceededInput { ctx?: Context; user: unknown; provider?: string; identifier?: string; meta?: Record<string, unknown> }
export interface LoginFailedInput { ctx?: Context; identifier: string | null; provider?: string; reason: string; meta?: Record<string, unknown> }
export interface LogoutInput { ctx?: Context; user: unknown; provider?: string; meta?: Record<string, unknown> }

export interface LoginSignalEvents {
  login: [LoginSucceededInput];
  login_failed: [LoginFailedInput];
  logout: [LogoutInput];
}
export type LoginSignals = EventEmitter<LoginSignalEvents>;

export function createLogin(_core: AuditCore) {
  const signals: LoginSignals = new EventEmitter<LoginSignalEvents>();
  const notYet = async (): Promise<void> => {
    throw new Error('koa-audit: login auditing is not implemented yet');
  };
  return { signals, loginSucceeded: notYet, loginFailed: notYet, logout: notYet };
}
