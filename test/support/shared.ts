/**
 * Balancers sharing the in-memory store, for the shared registry's tests: one balancer with its
 * operator, or one announcing itself in the cluster, and a pause that lets their fibers run.
 */
import { Context, type Duration, Effect, Layer, Scope } from "effect"
import * as Balancer from "../../src/services/balancer/Balancer.js"
import * as Operator from "../../src/services/balancer/Operator.js"
import * as ServerRegistry from "../../src/services/balancer/ServerRegistry.js"
import * as Cluster from "../../src/services/balancer/shared/Cluster.js"
import * as SharedRegistry from "../../src/services/balancer/shared/SharedRegistry.js"
import { type MemoryBackend, SharedStore } from "../../src/services/balancer/shared/Store.js"
import { Strategies, type StrategyName } from "../../src/services/balancer/strategies/Catalog.js"

/** Lets the fibers take what is queued (the in-memory store answers at once). */
export const settled = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow(), { discard: true })

/** A registry and a balancer running `strategy`, shared through `store` (with `config` over the defaults). */
const sharing = (
  store: SharedStore["Type"],
  balancerId: string,
  strategy: StrategyName = "round-robin",
  config: Partial<SharedRegistry.SharedConfig> = {}
) => {
  const decision = Balancer.layer(strategy).pipe(
    Layer.provideMerge(ServerRegistry.layer()),
    Layer.provideMerge(Strategies.layer)
  )
  return SharedRegistry.layer({ ...SharedRegistry.defaults, balancerId, ...config }).pipe(
    Layer.provide(Layer.merge(decision, Layer.succeed(SharedStore, store)))
  )
}

export interface MemberOptions {
  /** The strategy it starts with (round-robin). */
  readonly strategy?: StrategyName
  /** Its link to the store (a new connection to the backend). */
  readonly store?: SharedStore["Type"]
  /** Over `SharedRegistry.defaults`. */
  readonly config?: Partial<SharedRegistry.SharedConfig>
}

/** One balancer sharing `backend`: its operator, registry and balancer as the rest of it sees them. */
export const member = (backend: MemoryBackend, balancerId: string, options: MemberOptions = {}) =>
  Effect.gen(function* () {
    const shared = sharing(options.store ?? backend.connect(), balancerId, options.strategy, options.config)
    const context = yield* Layer.build(
      Operator.layer(Operator.defaults).pipe(Layer.provideMerge(Layer.merge(shared, Strategies.layer)))
    )
    return {
      operator: Context.get(context, Operator.Operator),
      registry: Context.get(context, ServerRegistry.ServerRegistry),
      balancer: Context.get(context, Balancer.Balancer)
    }
  })

export interface ClusterMemberOptions {
  /** How often it announces itself (`Cluster.defaults`: every second); a real one, so it holds leases. */
  readonly heartbeat?: Duration.DurationInput
  /** The addresses it announces (none). */
  readonly addresses?: Cluster.Addresses
}

/** One balancer sharing `backend`, with `Cluster`, announcing itself for the life of `scope`. */
export const clusterMember = (
  backend: MemoryBackend,
  balancerId: string,
  scope: Scope.Scope,
  options: ClusterMemberOptions = {}
) =>
  Effect.gen(function* () {
    const store = backend.connect()
    const layer = Cluster.layer({
      ...Cluster.defaults,
      heartbeat: options.heartbeat ?? Cluster.defaults.heartbeat,
      balancerId,
      version: "test",
      url: "memory",
      namespace: "test"
    }).pipe(Layer.provideMerge(sharing(store, balancerId)), Layer.provide(Layer.succeed(SharedStore, store)))
    const context = yield* Layer.buildWithScope(layer, scope)
    const cluster = Context.get(context, Cluster.Cluster)
    yield* Scope.extend(cluster.announce(options.addresses ?? {}), scope)
    return { cluster, registry: Context.get(context, ServerRegistry.ServerRegistry) }
  })
