/**
 * The balancer port: clients `Locate` a server; servers `Register`, report `Load` and `Deregister`
 * over a control connection they keep open; operators ask for `Status` and `SetStrategy`. An
 * optional token guards the requests that change the rotation.
 */
import { Context, Duration, Effect, Either, FiberMap, Layer, Option, Queue } from "effect"
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
import type { ServerId, ServerLocation } from "../domain/Server.js"
import { Balancer } from "./Balancer.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { Later, type SessionControl } from "./RequestPort.js"
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

    /** Everything but Locate: rare, and free to take an effect. */
    const answerControl = (
      request: Exclude<BalancerRequest, { _tag: "Locate" }>,
      session: Session
    ): Effect.Effect<BalancerReplyType | undefined> => {
      switch (request._tag) {
        case "Register":
          return authorize(request.token, "Register").pipe(
            Effect.zipRight(registry.add(request.server)),
            Effect.tap((server) => {
              session.registered = server.id
              // A server's control connection may stay quiet for long; it is never idle.
              session.control.keepAlive()
              return Effect.logInfo(`server ${server.id} registered at ${server.host}:${server.port}`)
            }),
            Effect.map((server): BalancerReplyType => new Registered({ id: server.id })),
            Effect.merge
          )
        case "Load":
          return session.registered === undefined
            ? Effect.succeed(new InvalidRequest({ message: "Load before Register on this connection" }))
            : Effect.as(registry.reportLoad(session.registered, request.active, request.latencyMs), undefined)
        case "Deregister": {
          const id = session.registered ?? request.id
          if (id === undefined) {
            return Effect.succeed(new InvalidRequest({ message: "Deregister needs the server's id" }))
          }
          return (session.registered === undefined ? authorize(request.token, "Deregister") : Effect.void).pipe(
            Effect.zipRight(registry.get(id)),
            Effect.flatMap(
              Option.match({
                onNone: () =>
                  Effect.succeed<BalancerReplyType>(new InvalidRequest({ message: `no server "${id}" is registered` })),
                onSome: () => Effect.as(FiberMap.run(draining, id, deregister(id)), new Deregistered({ id }))
              })
            ),
            Effect.merge
          )
        }
        case "Status":
          return Effect.all([balancer.strategy, registry.list]).pipe(
            Effect.map(([strategy, servers]) => new StatusReport({ strategy, servers }))
          )
        case "SetStrategy":
          return authorize(request.token, "SetStrategy").pipe(
            Effect.zipRight(balancer.setStrategy(request.strategy)),
            Effect.tap(() => Effect.logInfo(`strategy set to ${request.strategy}`)),
            Effect.as<BalancerReplyType>(new StrategySet({ strategy: request.strategy })),
            Effect.merge
          )
      }
    }

    /** One `Located` per server, reused while its address stays the same: encoded once, sent often. */
    const replies = new Map<ServerId, Located>()
    const located = (server: ServerLocation): Located => {
      const known = replies.get(server.id)
      if (known !== undefined && known.server.host === server.host && known.server.port === server.port) return known
      // Built from a location the registry holds valid: no need to validate it again.
      const reply = new Located({ server }, true)
      if (replies.size >= 65_536) replies.clear()
      replies.set(server.id, reply)
      return reply
    }

    interface Session {
      registered: ServerId | undefined
      readonly control: SessionControl
    }

    const address = yield* wire.serveRequests(
      { host: config.host, port: config.port },
      {
        request: BalancerRequest,
        reply: BalancerReply,
        idleTimeout: config.idleTimeout,
        maxLine: config.maxLine,
        invalid: (error): BalancerReplyType =>
          error._tag === "LineTooLong" ? new InvalidRequest({ message: error.message }) : error,
        open: (control) => {
          const session: Session = { registered: undefined, control }
          return {
            answer: (request) => {
              if (request._tag !== "Locate") return new Later(answerControl(request, session))
              // The hot path: decided and answered synchronously, no effect to run.
              const location = balancer.unsafeDetermineServer(request.exclude)
              return Either.isRight(location) ? located(location.right) : location.left
            },
            // A server that deregistered and then hung up has finished draining.
            closed: () =>
              session.registered === undefined
                ? Effect.void
                : Effect.flatMap(registry.get(session.registered), (server) =>
                    Option.isSome(server) && server.value.state === "draining"
                      ? Effect.asVoid(registry.remove(server.value.id))
                      : Effect.void
                  )
          }
        }
      }
    )
    return ControlPlane.of({ address })
  })

export const layer = (
  config: ControlPlaneConfig
): Layer.Layer<ControlPlane, ListenFailed, Wire | Balancer | ServerRegistry> => Layer.scoped(ControlPlane, make(config))
