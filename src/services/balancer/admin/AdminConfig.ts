/**
 * The admin server as the balancer knows it before it is asked for one: its settings, its defaults
 * and the service it provides. The server itself (Admin.ts: the HTTP API, the dashboard, /metrics)
 * is loaded only with --admin-port, so a balancer without it does not load the HTTP stack.
 */
import { Context } from "effect"
import type { Address } from "../../wire/Wire.js"

export interface AdminConfig {
  /** 127.0.0.1 unless told otherwise: the admin API can change the rotation. */
  readonly host: string
  /** 0 lets the system pick. */
  readonly port: number
  /** The version `/api/status` reports. */
  readonly version?: string
}

export const defaults = { host: "127.0.0.1" } as const

export class Admin extends Context.Tag("effect-lb/Admin")<Admin, { readonly address: Address }>() {}
