/**
 * The balancer's TLS, from its settings: one reloadable certificate for each listener that serves
 * TLS (the balancer port, the proxy), and the CAs the servers' certificates are checked against.
 * A reload reads the files again (a renewed certificate, a new CA) and installs them only once
 * everything else in the file has been accepted; moving TLS to other listeners takes a restart.
 */
import { Effect, Option } from "effect"
import {
  type Identity,
  type ListenerTls,
  loadIdentity,
  loadTrust,
  makeListenerTls,
  systemTrust
} from "../services/wire/Tls.js"
import type { TlsRefused, Trust, TrustRef } from "../services/wire/Tls.js"
import type { TlsSettings } from "./balancerSettings.js"
import type { InvalidOption, TlsListener } from "./options.js"
import { identityFrom } from "./tlsOptions.js"

export interface BalancerTls {
  readonly identity: Option.Option<Identity>
  readonly balancer: ListenerTls | undefined
  readonly proxy: ListenerTls | undefined
  readonly backendTrust: TrustRef
}

const certificateOf = (settings: TlsSettings) =>
  identityFrom(Option.fromNullable(settings.cert), Option.fromNullable(settings.key))

const trustOf = (settings: TlsSettings): Effect.Effect<Trust, TlsRefused> =>
  settings.backendCa === undefined ? Effect.succeed(systemTrust) : loadTrust(settings.backendCa, "--backend-ca")

/** Reads the certificate and the backend CAs the settings name; `proxied`: the balancer runs a proxy. */
export const startTls = (
  settings: TlsSettings,
  proxied: boolean
): Effect.Effect<BalancerTls, TlsRefused | InvalidOption> =>
  Effect.gen(function* () {
    const identity = yield* certificateOf(settings)
    const listener = (name: TlsListener, runs: boolean) =>
      Option.isSome(identity) && runs && settings.listeners.includes(name)
        ? Effect.map(makeListenerTls(name, identity.value), (tls): ListenerTls | undefined => tls)
        : Effect.succeed(undefined)
    return {
      identity,
      balancer: yield* listener("balancer", true),
      proxy: yield* listener("proxy", proxied),
      backendTrust: { current: yield* trustOf(settings) }
    }
  })

/**
 * What a reload does with TLS, read and checked now (a bad file refuses the whole reload): an
 * effect that installs the certificate and the CAs read, to run once the rest has been applied.
 */
export const reloadTls = (
  running: BalancerTls,
  next: TlsSettings
): Effect.Effect<Effect.Effect<void>, TlsRefused | InvalidOption> =>
  Effect.gen(function* () {
    const identity = yield* certificateOf(next)
    const listeners = [running.balancer, running.proxy].filter((tls): tls is ListenerTls => tls !== undefined)
    const loaded = Option.isSome(identity) && listeners.length > 0 ? yield* loadIdentity(identity.value) : undefined
    const trust = yield* trustOf(next)
    return Effect.gen(function* () {
      if (loaded !== undefined) yield* Effect.forEach(listeners, (tls) => tls.install(loaded), { discard: true })
      running.backendTrust.current = trust
    })
  })
