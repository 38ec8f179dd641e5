/**
 * What a backend server IS: its identity, where it listens, how much it weighs, and the state the
 * balancer sees it in. Values only — no I/O.
 */
import { ParseResult, Schema } from "effect"

/** A server's name, unique within one balancer (`s1`, `api-3`, `10.0.0.7:4001`). */
export const ServerId = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(128),
  Schema.pattern(/^[A-Za-z0-9._:\-[\]]+$/),
  Schema.brand("ServerId")
)
export type ServerId = typeof ServerId.Type

/** A host name or an IP address literal (IPv6 without brackets). */
export const Host = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(255),
  Schema.pattern(/^[A-Za-z0-9._:%-]+$/),
  Schema.brand("Host")
)
export type Host = typeof Host.Type

export const Port = Schema.Int.pipe(Schema.between(1, 65535), Schema.brand("Port"))
export type Port = typeof Port.Type

/** How many shares of traffic a server takes, relative to the others. */
export const Weight = Schema.Int.pipe(Schema.between(1, 1000), Schema.brand("Weight"))

/** A duration or figure in milliseconds: JSON has no Infinity or NaN, so neither is a value here. */
export const FiniteNonNegative = Schema.NonNegative.pipe(Schema.finite())
export type Weight = typeof Weight.Type

export const ServerState = Schema.Literal("live", "dead", "draining")
export type ServerState = typeof ServerState.Type

/** Where a server listens. */
export const Endpoint = Schema.Struct({ host: Host, port: Port })
export type Endpoint = typeof Endpoint.Type

/**
 * A host and a port as the network has them, not validated: where to listen (`port: 0` lets the
 * system pick), where to connect, where a connection comes from.
 */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * `host:port`, with IPv6 literals in brackets (`[::1]:4001`) so the text is never ambiguous. The one
 * place an address becomes text.
 */
export const formatEndpoint = (endpoint: Address): string =>
  endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`

const endpointPattern = /^(?:\[([^\]]+)\]|([^:]+)|(.*:.*)):(\d{1,5})$/

/** `host:port` text ⇄ `Endpoint`. Accepts `[::1]:4001` and, for IPv6, the bare `::1:4001` form. */
export const EndpointFromString = Schema.transformOrFail(Schema.String, Endpoint, {
  strict: true,
  decode: (text, _, ast) => {
    const match = endpointPattern.exec(text.trim())
    const host = match?.[1] ?? match?.[2] ?? match?.[3]
    const port = match?.[4]
    return host === undefined || port === undefined
      ? ParseResult.fail(new ParseResult.Type(ast, text, `expected host:port, got "${text}"`))
      : ParseResult.succeed({ host, port: Number(port) })
  },
  encode: (endpoint) => ParseResult.succeed(formatEndpoint(endpoint))
})

/**
 * `true` when the server's port speaks TLS (a server started with a certificate says so when it
 * registers; `--backend-tls` says so of the configured ones). Optional: absent means plain TCP, as
 * before TLS existed, so older peers neither send nor need it.
 */
const Tls = Schema.optionalWith(Schema.Boolean, { exact: true })

/** A server as a client needs to know it: its name, where to reach it, and whether it speaks TLS. */
export const ServerLocation = Schema.Struct({ id: ServerId, host: Host, port: Port, tls: Tls })
export type ServerLocation = typeof ServerLocation.Type

/** A server as it introduces itself to the balancer. */
export const ServerSpec = Schema.Struct({ id: ServerId, host: Host, port: Port, weight: Weight, tls: Tls })
export type ServerSpec = typeof ServerSpec.Type

/** A server as the balancer reports it. */
export const ServerView = Schema.Struct({
  id: ServerId,
  host: Host,
  port: Port,
  weight: Weight,
  tls: Tls,
  state: ServerState,
  active: Schema.NonNegativeInt,
  responseTimeMs: Schema.NullOr(FiniteNonNegative),
  /** The server's own report of how long its requests take (smoothed), when it sends one. */
  latencyMs: Schema.optional(Schema.NullOr(FiniteNonNegative)),
  located: Schema.NonNegativeInt,
  /**
   * When a health probe last answered, in milliseconds since the Unix epoch; `null` if none has.
   * Optional in the schema (older balancers do not send it); effect-lb always sends it.
   */
  lastSeenAt: Schema.optional(Schema.NullOr(Schema.NonNegativeInt)),
  // The rest are optional too (older balancers do not send them); effect-lb always sends them.
  /** When the server entered its current state, in milliseconds since the Unix epoch. */
  stateSince: Schema.optional(Schema.NonNegativeInt),
  /** The last health check: when, whether it answered, and what it said ("ping 1.2 ms ok", "refused"). */
  lastCheck: Schema.optional(
    Schema.Struct({ at: Schema.NonNegativeInt, ok: Schema.Boolean, result: Schema.String.pipe(Schema.maxLength(200)) })
  ),
  /** Health checks that failed, since the server joined. */
  failedChecks: Schema.optional(Schema.NonNegativeInt),
  /** Proxied connections the server refused or did not accept in time. */
  failedConnects: Schema.optional(Schema.NonNegativeInt),
  /** Locates that excluded it: a client failed on it and came back for another. */
  reroutes: Schema.optional(Schema.NonNegativeInt),
  /** Times it went from live to dead. */
  ejections: Schema.optional(Schema.NonNegativeInt),
  /**
   * Slow start (`--slow-start`), only while the server is ramping up: the weight it takes now (a
   * share of `weight`, growing with time), and when it will take all of it (ms since the Unix epoch).
   */
  effectiveWeight: Schema.optional(FiniteNonNegative),
  slowStartUntil: Schema.optional(Schema.NonNegativeInt),
  /**
   * Passive health (`--eject-after`), only while the server is ejected: until when at least (ms since
   * the Unix epoch; it returns once that has passed and a probe answers), and why, in words.
   */
  ejectedUntil: Schema.optional(Schema.NonNegativeInt),
  ejectedReason: Schema.optional(Schema.String.pipe(Schema.maxLength(200)))
})
export type ServerView = typeof ServerView.Type

export type LastCheck = NonNullable<ServerView["lastCheck"]>
