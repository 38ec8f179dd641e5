/** Balancer pieces for tests: a registry, a balancer and fake servers on whichever Wire is provided. */
import { Effect, Layer, Option, Ref } from "effect"
import { Pong, ServerReply, ServerRequest } from "../../src/domain/Protocol.js"
import { Host, Port, ServerId, type ServerSpec, Weight } from "../../src/domain/Server.js"
import * as Balancer from "../../src/services/balancer/Balancer.js"
import * as Operator from "../../src/services/balancer/Operator.js"
import * as ServerRegistry from "../../src/services/balancer/ServerRegistry.js"
import { Strategies, type StrategyName } from "../../src/services/balancer/strategies/Catalog.js"
import { Wire } from "../../src/services/wire/Wire.js"

export const spec = (n: number, weight = 1, host = "127.0.0.1"): ServerSpec => ({
  id: ServerId.make(`s${n}`),
  host: Host.make(host),
  port: Port.make(41000 + n),
  weight: Weight.make(weight)
})

/** A registry, a balancer over it with the real strategy table, and the operator's controls. */
export const balancerLayer = (
  strategy: StrategyName = "round-robin",
  operator: Partial<Operator.OperatorConfig> = {},
  registry: Partial<ServerRegistry.RegistryConfig> = {}
) =>
  Operator.layer({ ...Operator.defaults, ...operator }).pipe(
    Layer.provideMerge(Balancer.layer(strategy)),
    Layer.provideMerge(ServerRegistry.layer({ ...ServerRegistry.defaultConfig, ...registry })),
    Layer.provideMerge(Strategies.layer)
  )

export type Behaviour = "healthy" | "stalled"

/**
 * A stand-in server at `spec`'s address that answers `Ping` with `Pong` (or, stalled, accepts and
 * never answers). Returns a counter of the pings it answered.
 */
export const fakeServer = (server: ServerSpec, behaviour: Ref.Ref<Behaviour>) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const pings = yield* Ref.make(0)
    yield* wire.serve({ host: server.host, port: server.port }, (connection) =>
      Effect.gen(function* () {
        const request = yield* connection.read(ServerRequest)
        if (Option.isNone(request)) return
        if ((yield* Ref.get(behaviour)) === "stalled") return yield* Effect.never
        yield* Ref.update(pings, (n) => n + 1)
        yield* connection.send(ServerReply, new Pong({ id: server.id, active: 0 }))
      }).pipe(Effect.ignore)
    )
    return pings
  })
