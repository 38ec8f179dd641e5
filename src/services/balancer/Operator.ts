/**
 * What an operator may do to a running balancer — see it, switch its strategy, add a server, drain
 * and remove one — with the token check in front of every change. One service, so the balancer
 * port (`Status`, `SetStrategy`, `Deregister`) and the admin HTTP API do exactly the same thing.
 */
import { Context, Duration, Effect, FiberMap, Layer, Option, Queue } from "effect"
import * as Crypto from "node:crypto"
import {
  type Busy,
  InvalidRequest,
  type RegistryUnavailable,
  ServerExists,
  ServerNotFound,
  Unauthorized
} from "../../domain/Errors.js"
import { StatusReport } from "../../domain/Protocol.js"
import { formatEndpoint, type ServerId, type ServerSpec, type ServerView, type Weight } from "../../domain/Server.js"
import { Balancer } from "./Balancer.js"
import { type Registration, ServerRegistry, type ServerRef } from "./ServerRegistry.js"
import { RegistrySync } from "./shared/SharedRegistry.js"

export interface OperatorConfig {
  /** When set, every change must carry it. */
  readonly token?: string | undefined
  /** A server being drained is removed once it reports no active connections, or after this long. */
  readonly drainTimeout: Duration.DurationInput
}

export const defaults: OperatorConfig = { drainTimeout: Duration.seconds(30) }

export class Operator extends Context.Tag("effect-lb/Operator")<
  Operator,
  {
    /** Succeeds when no token is set, or `token` is it; `what` names the change in the error. */
    readonly authorize: (token: string | undefined, what: string) => Effect.Effect<void, Unauthorized>
    /**
     * Succeeds when an operator's change can be made: always, but with a shared registry
     * (`--registry`) that is unreachable. Asked before every operator's change (not before a server's
     * own registration, load or goodbye, which go on and are shared later).
     */
    readonly writable: Effect.Effect<void, RegistryUnavailable>
    readonly status: Effect.Effect<StatusReport>
    /** One server as the registry sees it now. */
    readonly get: (id: ServerId) => Effect.Effect<ServerView, ServerNotFound>
    readonly setStrategy: (name: string) => Effect.Effect<void, InvalidRequest>
    /**
     * Adds a server (the health monitor takes it from there); it stays however long it is dead. One
     * already registered under the id or at the address is left as it is: `ServerExists` names it;
     * `Busy` past the registry's limit.
     */
    readonly add: (spec: ServerSpec) => Effect.Effect<ServerView, ServerExists | Busy>
    /**
     * No new clients at once; removed when its connections are gone, or at the drain timeout. Returns at
     * once. Drains the registration in force when it is called: if the server registers again
     * meanwhile, the new registration is left alone.
     */
    readonly drain: (server: ServerRef) => Effect.Effect<void, ServerNotFound>
    /** A new weight, taken by the strategy at once; the server keeps its state and load. */
    readonly setWeight: (id: ServerId, weight: Weight) => Effect.Effect<ServerView, ServerNotFound>
    /** Removed at once, whatever it is doing. */
    readonly remove: (id: ServerId) => Effect.Effect<void, ServerNotFound>
  }
>() {}

/** Equal tokens, compared in constant time (hashes first, so lengths leak nothing either). */
const sameToken = (expected: string, given: string | undefined) => {
  if (given === undefined) return false
  const a = Crypto.createHash("sha256").update(expected).digest()
  const b = Crypto.createHash("sha256").update(given).digest()
  return Crypto.timingSafeEqual(a, b)
}

/** The refusal when a server with `spec`'s id, or at its address, is already registered. */
const existing = (registry: ServerRegistry["Type"], spec: ServerSpec) =>
  Effect.map(registry.get(spec.id), (byId) => {
    const endpoint = formatEndpoint(spec)
    const id = Option.isSome(byId) ? byId.value.id : registry.unsafeIdAt(spec)
    if (id === undefined) return Option.none()
    const where = Option.isSome(byId)
      ? `server "${id}" is already registered, at ${formatEndpoint(byId.value)} with weight ${byId.value.weight}`
      : `${endpoint} is already registered, as server "${id}"`
    const message = `${where}; to change its weight, PATCH /api/servers/${id}; to replace it, remove it first`
    return Option.some(new ServerExists({ message, id }))
  })

export const make = (config: OperatorConfig) =>
  Effect.gen(function* () {
    const balancer = yield* Balancer
    const registry = yield* ServerRegistry
    const sync = yield* Effect.serviceOption(RegistrySync)
    const draining = yield* FiberMap.make<ServerId>()
    // Adds one at a time: two racing adds of the same server cannot both pass the check.
    const adding = yield* Effect.makeSemaphore(1)

    const notFound = (id: ServerId) => new ServerNotFound({ message: `no server "${id}" is registered` })
    const known = (id: ServerId) =>
      Effect.flatMap(registry.get(id), (server) =>
        Option.isSome(server) ? Effect.succeed(server.value) : Effect.fail(notFound(id))
      )

    const drainThenRemove = (registration: Registration) =>
      Effect.gen(function* () {
        // Already superseded or removed: nothing of this registration is left to drain.
        if (Option.isNone(yield* registry.setState(registration, "draining"))) return
        const changes = yield* registry.subscribe
        const drained = Effect.gen(function* () {
          while (true) {
            const current = yield* registry.get(registration)
            if (Option.isNone(current) || current.value.active === 0) return
            yield* Queue.take(changes)
          }
        })
        yield* drained.pipe(Effect.timeout(config.drainTimeout), Effect.ignore)
        if (yield* registry.remove(registration)) yield* Effect.logInfo(`server ${registration.id} drained and removed`)
      }).pipe(Effect.scoped)

    /** The registration `server` names now, if it is in force. */
    const inForce = (server: ServerRef) =>
      Effect.sync(() => {
        const id = typeof server === "string" ? server : server.id
        const current = registry.unsafeRegistration(id)
        return current !== undefined && (typeof server === "string" || current.generation === server.generation)
          ? Effect.succeed(current)
          : Effect.fail(notFound(id))
      }).pipe(Effect.flatten)

    return Operator.of({
      authorize: (token, what) =>
        config.token === undefined || sameToken(config.token, token)
          ? Effect.void
          : Effect.fail(new Unauthorized({ message: `${what} needs the balancer's token` })),
      writable: Option.isSome(sync) ? sync.value.writable : Effect.void,
      status: Effect.all([balancer.strategy, registry.list]).pipe(
        // Built from the registry's own values: valid by construction, so not checked again (5,000 servers took a second).
        Effect.map(([strategy, servers]) => new StatusReport({ strategy, servers }, true))
      ),
      get: known,
      setStrategy: (name) =>
        balancer.setStrategy(name).pipe(Effect.tap(() => Effect.logInfo(`strategy set to ${name}`))),
      add: (spec) =>
        Effect.flatMap(
          existing(registry, spec),
          Option.match({
            onSome: (exists): Effect.Effect<ServerView, ServerExists | Busy> => Effect.fail(exists),
            onNone: () => registry.add(spec, "configured")
          })
        ).pipe(
          Effect.tap((server) => Effect.logInfo(`server ${server.id} added at ${server.host}:${server.port}`)),
          adding.withPermits(1)
        ),
      drain: (server) =>
        Effect.flatMap(inForce(server), (registration) =>
          Effect.asVoid(FiberMap.run(draining, registration.id, drainThenRemove(registration)))
        ),
      setWeight: (id, weight) =>
        registry.setWeight(id, weight).pipe(
          Effect.flatMap(
            Option.match({
              onNone: () => Effect.fail(notFound(id)),
              onSome: (server) => Effect.as(Effect.logInfo(`server ${id} weight set to ${weight}`), server)
            })
          )
        ),
      remove: (id) =>
        known(id).pipe(
          Effect.zipRight(FiberMap.remove(draining, id)),
          Effect.zipRight(registry.remove(id)),
          Effect.zipRight(Effect.logInfo(`server ${id} removed`))
        )
    })
  })

export const layer = (config: OperatorConfig = defaults): Layer.Layer<Operator, never, Balancer | ServerRegistry> =>
  Layer.scoped(Operator, make(config))
