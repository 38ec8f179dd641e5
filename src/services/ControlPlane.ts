/**
 * The balancer port: clients `Locate` a server; servers `Register`, report `Load` and `Deregister`
 * over a control connection they keep open; operators ask for `Status` and `SetStrategy`. An
 * optional token guards the requests that change the rotation.
 */
import { Context, Duration, Effect, FiberMap, Layer, Option, Queue } from "effect"
import * as Crypto from "node:crypto"
import { InvalidRequest, Unauthorized } from "../domain/Errors.js"
import {
  BalancerReply,
  type BalancerReply as BalancerReplyType,
  BalancerRequest,
  Deregistered,
  Located,
  Registered,
  StatusReport,
  StrategySet
} from "../domain/Protocol.js"
import type { ServerId } from "../domain/Server.js"
import { Balancer } from "./Balancer.js"
import type { Connection } from "./Connection.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { type Address, type ListenFailed, Wire } from "./Wire.js"

export interface ControlPlaneConfig {
  readonly host: string
  /** 0 lets the system pick. */
  readonly port: number
  /** When set, Register, SetStrategy and an operator's Deregister must carry it. */
  readonly token?: string | undefined
  /** A connection that has not registered and sends nothing for this long is closed. */
  readonly idleTimeout: Duration.DurationInput
  /** A deregistered server is removed once it reports no active connections, or after this long. */
  readonly drainTimeout: Duration.DurationInput
  readonly maxLine: number
}

export const defaults = {
  host: "127.0.0.1",
  port: 4000,
  idleTimeout: Duration.seconds(30),
  drainTimeout: Duration.seconds(30),
  maxLine: 64 * 1024
} as const

export class ControlPlane extends Context.Tag("effect-lb/ControlPlane")<
  ControlPlane,
  {
    /** Where the balancer port listens (the real port when asked for 0). */
    readonly address: Address
  }
>() {}

const sameToken = (expected: string, given: string | undefined) => {
  if (given === undefined) return false
  const a = Crypto.createHash("sha256").update(expected).digest()
  const b = Crypto.createHash("sha256").update(given).digest()
  return Crypto.timingSafeEqual(a, b)
}

export const make = (config: ControlPlaneConfig) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const balancer = yield* Balancer
    const registry = yield* ServerRegistry
    const draining = yield* FiberMap.make<ServerId>()

    const authorize = (token: string | undefined, what: string) =>
      config.token === undefined || sameToken(config.token, token)
        ? Effect.void
        : Effect.fail(new Unauthorized({ message: `${what} needs the balancer's token` }))

    /** Drained, then removed: no new clients at once; gone when its connections are, or at the timeout. */
    const deregister = (id: ServerId) =>
      Effect.gen(function* () {
        yield* registry.setState(id, "draining")
        const changes = yield* registry.subscribe
        const drained = Effect.gen(function* () {
          while (true) {
            const current = yield* registry.get(id)
            if (Option.isNone(current) || current.value.active === 0) return
            yield* Queue.take(changes)
          }
        })
        yield* drained.pipe(Effect.timeout(config.drainTimeout), Effect.ignore)
        yield* registry.remove(id)
        yield* Effect.logInfo(`server ${id} deregistered`)
      }).pipe(Effect.scoped)

    const answer = (
      request: BalancerRequest,
      registered: ServerId | undefined
    ): Effect.Effect<{ readonly reply?: BalancerReplyType; readonly registered?: ServerId }> => {
      switch (request._tag) {
        case "Locate":
          return balancer.determineServer(request.exclude).pipe(
            Effect.map((server): BalancerReplyType => new Located({ server })),
            Effect.merge,
            Effect.map((reply) => ({ reply }))
          )
        case "Register":
          return authorize(request.token, "Register").pipe(
            Effect.zipRight(registry.add(request.server)),
            Effect.tap((server) => Effect.logInfo(`server ${server.id} registered at ${server.host}:${server.port}`)),
            Effect.map((server) => ({ reply: new Registered({ id: server.id }), registered: server.id })),
            Effect.catchAll((reply) => Effect.succeed({ reply }))
          )
        case "Load":
          return registered === undefined
            ? Effect.succeed({ reply: new InvalidRequest({ message: "Load before Register on this connection" }) })
            : Effect.as(registry.reportLoad(registered, request.active), {})
        case "Deregister": {
          const id = registered ?? request.id
          if (id === undefined) {
            return Effect.succeed({ reply: new InvalidRequest({ message: "Deregister needs the server's id" }) })
          }
          return (registered === undefined ? authorize(request.token, "Deregister") : Effect.void).pipe(
            Effect.zipRight(registry.get(id)),
            Effect.flatMap(
              Option.match({
                onNone: () =>
                  Effect.succeed<BalancerReplyType>(new InvalidRequest({ message: `no server "${id}" is registered` })),
                onSome: () => Effect.as(FiberMap.run(draining, id, deregister(id)), new Deregistered({ id }))
              })
            ),
            Effect.merge,
            Effect.map((reply) => ({ reply }))
          )
        }
        case "Status":
          return Effect.all([balancer.strategy, registry.list]).pipe(
            Effect.map(([strategy, servers]) => ({ reply: new StatusReport({ strategy, servers }) }))
          )
        case "SetStrategy":
          return authorize(request.token, "SetStrategy").pipe(
            Effect.zipRight(balancer.setStrategy(request.strategy)),
            Effect.tap(() => Effect.logInfo(`strategy set to ${request.strategy}`)),
            Effect.as<BalancerReplyType>(new StrategySet({ strategy: request.strategy })),
            Effect.merge,
            Effect.map((reply) => ({ reply }))
          )
      }
    }

    const serveConnection = (connection: Connection) => {
      let registered: ServerId | undefined
      return Effect.gen(function* () {
        while (true) {
          const read = connection.read(BalancerRequest).pipe(
            // A bad line does not spoil the connection: say why, and read the next one.
            Effect.catchTag("InvalidRequest", (error) =>
              Effect.as(connection.send(BalancerReply, error), "skipped" as const)
            )
          )
          // A server's control connection may stay quiet for long; anyone else's may not.
          const next =
            registered === undefined
              ? yield* Effect.raceFirst(read, Effect.as(Effect.sleep(config.idleTimeout), "idle" as const))
              : yield* read
          if (next === "skipped") continue
          if (next === "idle" || Option.isNone(next)) return
          const { reply, registered: now } = yield* answer(next.value, registered)
          if (now !== undefined) registered = now
          if (reply !== undefined) yield* connection.send(BalancerReply, reply)
        }
      }).pipe(
        Effect.catchTag("LineTooLong", (error) =>
          connection.send(BalancerReply, new InvalidRequest({ message: error.message }))
        ),
        Effect.catchAll((error) => Effect.logDebug(`connection from ${connection.peer} ended`, error)),
        // A server that deregistered and then hung up has finished draining.
        Effect.ensuring(
          Effect.suspend(() =>
            registered === undefined
              ? Effect.void
              : Effect.flatMap(registry.get(registered), (server) =>
                  Option.isSome(server) && server.value.state === "draining"
                    ? Effect.asVoid(registry.remove(server.value.id))
                    : Effect.void
                )
          )
        )
      )
    }

    const address = yield* wire.serve(
      { host: config.host, port: config.port, maxLine: config.maxLine },
      serveConnection
    )
    return ControlPlane.of({ address })
  })

export const layer = (
  config: ControlPlaneConfig
): Layer.Layer<ControlPlane, ListenFailed, Wire | Balancer | ServerRegistry> => Layer.scoped(ControlPlane, make(config))
