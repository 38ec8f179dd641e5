/**
 * The playground's balancers: one, as always; or, with `--balancers N`, N sharing one registry on a
 * private `redis-server` (started here, stopped after them), each with its own ports, admin API and
 * dashboard, composed by `balancerLayer` exactly as `effect-lb balancer --registry` is. Each runs in
 * its own scope, so the menu can kill one and revive it to show the others carry on.
 */
import { Console, Context, Duration, Effect, Exit, Layer, Option, Schema, Scope } from "effect"
import { formatEndpoint } from "../domain/Server.js"
import * as Admin from "../services/balancer/admin/Admin.js"
import * as ControlPlane from "../services/balancer/ControlPlane.js"
import type * as HealthMonitor from "../services/balancer/HealthMonitor.js"
import { ServerRegistry } from "../services/balancer/ServerRegistry.js"
import * as LocalRedis from "../services/balancer/shared/LocalRedis.js"
import * as RedisStore from "../services/balancer/shared/RedisStore.js"
import type { StrategyName } from "../services/balancer/strategies/Catalog.js"
import type { Address } from "../services/wire/Wire.js"
import { balancerLayer, joinCluster } from "./balancer.js"
import type { Controls } from "./interactive.js"
import { hintBusyPort } from "./listen.js"
import { version } from "./version.js"

export interface PlaygroundBalancers {
  /** How many: 1 alone, 2 or more sharing a registry on a private Redis. */
  readonly count: number
  readonly strategy: StrategyName
  /** The first balancer's ports (0 picks a free one); the others' are picked by the system. */
  readonly port: number
  readonly adminPort: number
  readonly monitor: HealthMonitor.MonitorConfig
  readonly accessLog: boolean
  /** The private Redis, when there are several. */
  readonly redis: LocalRedis.LocalRedisConfig
}

/** `--balancers 2` or more, and no `redis-server` to share their registry on. */
export class BalancersNeedRedis extends Schema.TaggedError<BalancersNeedRedis>()("BalancersNeedRedis", {
  balancers: Schema.Number,
  command: Schema.String
}) {
  override get message(): string {
    return `--balancers ${this.balancers} needs ${this.command} to share their registry, and it is not installed (apt-get install redis-server)`
  }
}

/** One balancer running in its own scope. */
interface Running {
  readonly scope: Scope.CloseableScope
  readonly address: Address
  readonly dashboard: string
  readonly registry: ServerRegistry["Type"]
}

/** Each balancer's name (b1, b2, …) and the ports it was given, then the ones it got (kept for a revival). */
interface Known {
  readonly port: number
  readonly adminPort: number
}

export interface BalancerFleet {
  /** Every balancer's address, running or not, in order: what servers and clients are given. */
  readonly addresses: ReadonlyArray<Address>
  /** The registries of the balancers running now. */
  readonly registries: Effect.Effect<ReadonlyArray<ServerRegistry["Type"]>>
  /** The menu's hold on the balancers: only when there are several. */
  readonly controls: Controls | undefined
}

const storeTimeout = Duration.seconds(2)

/** Starts balancer `id` on `ports`, in a scope of its own (closed again if it fails to start). */
const startOne = (
  settings: PlaygroundBalancers,
  id: string,
  ports: Known,
  redis: Option.Option<LocalRedis.LocalRedis>
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const layer = balancerLayer({
      host: "127.0.0.1",
      port: ports.port,
      strategy: settings.strategy,
      servers: [],
      monitor: settings.monitor,
      token: Option.none(),
      accessLog: settings.accessLog,
      registry: Option.getOrUndefined(
        Option.map(redis, ({ target }) => ({
          store: { target, namespace: RedisStore.defaultNamespace, timeout: storeTimeout },
          balancerId: id
        }))
      )
    })
    // The admin server over the balancer, as `balancerLayer` adds it for `--admin-port`, so the
    // cluster is told its address.
    const admin = Admin.layer({ host: Admin.defaults.host, port: ports.adminPort, version })
    const whole = joinCluster.pipe(Layer.provideMerge(admin), Layer.provideMerge(layer))
    const context = yield* Layer.buildWithScope(whole, scope).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
    return {
      scope,
      address: Context.get(context, ControlPlane.ControlPlane).address,
      dashboard: `http://${formatEndpoint(Context.get(context, Admin.Admin).address)}/`,
      registry: Context.get(context, ServerRegistry)
    } satisfies Running
  })

/** The private Redis, said where; a missing `redis-server` said in one line. */
const startRedis = (settings: PlaygroundBalancers) =>
  LocalRedis.start(settings.redis).pipe(
    Effect.catchTag("RedisServerMissing", (missing) =>
      Effect.fail(new BalancersNeedRedis({ balancers: settings.count, command: missing.command }))
    ),
    Effect.tap((redis) =>
      Console.log(
        `redis     ${RedisStore.formatTarget(redis.target)}  the ${settings.count} balancers' shared registry (stopped with the playground)`
      )
    )
  )

/**
 * Starts the balancers (and, for several, their Redis first), says where each listens, and stops
 * them with the scope — the balancers before their Redis.
 */
export const startBalancers = (settings: PlaygroundBalancers) =>
  Effect.gen(function* () {
    const redis = settings.count > 1 ? Option.some(yield* startRedis(settings)) : Option.none()
    const known = new Map<string, Known>()
    const running = new Map<string, Running>()
    yield* Effect.addFinalizer(() =>
      Effect.forEach(running.values(), ({ scope }) => Scope.close(scope, Exit.void), { discard: true })
    )
    for (let i = 1; i <= settings.count; i++) {
      const id = `b${i}`
      const given = i === 1 ? { port: settings.port, adminPort: settings.adminPort } : { port: 0, adminPort: 0 }
      const started = yield* startOne(settings, id, given, redis)
      running.set(id, started)
      known.set(id, { port: started.address.port, adminPort: Number(new URL(started.dashboard).port) })
      const which = settings.count > 1 ? `  ${id}` : ""
      yield* Console.log(`balancer  ${formatEndpoint(started.address)}  strategy ${settings.strategy}${which}`)
      yield* Console.log(`dashboard ${started.dashboard}  (metrics: ${started.dashboard}metrics)${which}`)
    }
    const addresses = [...running.values()].map(({ address }) => address)
    const controls: Controls = {
      running: Effect.sync(() => [...running.keys()].sort()),
      stopped: Effect.sync(() => [...known.keys()].filter((id) => !running.has(id)).sort()),
      kill: (id) =>
        Effect.gen(function* () {
          const balancer = running.get(id)
          if (balancer === undefined) return
          running.delete(id)
          yield* Scope.close(balancer.scope, Exit.void)
        }),
      revive: (id) =>
        Effect.gen(function* () {
          const ports = known.get(id)
          if (ports === undefined || running.has(id)) return
          running.set(id, yield* startOne(settings, id, ports, redis))
        })
    }
    return {
      addresses,
      registries: Effect.sync(() => [...running.values()].map(({ registry }) => registry)),
      controls: settings.count > 1 ? controls : undefined
    } satisfies BalancerFleet
  }).pipe(hintBusyPort([{ flag: "--port", port: settings.port, fallback: ControlPlane.defaults.port }]))
