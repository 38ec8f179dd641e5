/**
 * Reloading the settings file (SIGHUP, `POST /api/reload`): the servers it lists are added, drained
 * when they leave it, and re-weighted in place; the strategy, the probe settings, slow start,
 * passive health and the proxy's PROXY protocol settings (for new connections) are applied.
 * Nothing else is touched: a server's state, load and latency stay, connections stay open, and the
 * servers that registered themselves or were added through the admin API are not the file's to
 * remove. A file that is refused changes nothing.
 */
import { Context, Effect, Layer, Option, Schema } from "effect"
import { formatEndpoint, ServerId, type Weight } from "../../domain/Server.js"
import type { Host, Port } from "../../domain/Server.js"
import { Balancer } from "./Balancer.js"
import { HealthMonitor, type Settings } from "./HealthMonitor.js"
import { Operator } from "./Operator.js"
import { Proxy, type ProxyProtocolSettings } from "./Proxy.js"
import { ServerRegistry, type Tunables } from "./ServerRegistry.js"

/** What a reload asks for, read from the file (the flags given still win over it). */
export interface Desired {
  readonly strategy: string
  /** The file's servers; `undefined` when `--server` flags decide them (a reload leaves them be). */
  readonly servers:
    | ReadonlyArray<{ readonly host: Host; readonly port: Port; readonly weight: Weight; readonly tls?: boolean }>
    | undefined
  readonly monitor: Settings
  /** Slow start and passive health, applied in place. */
  readonly tunables: Tunables
  /** The PROXY protocol on either side, for new proxied connections (with a proxy only). */
  readonly proxyProtocol: ProxyProtocolSettings
  /** Installs the certificates and CA read again (checked already): applied last, when all else has been. */
  readonly tls?: Effect.Effect<void>
  /** The keys whose new value takes a restart (listening addresses, limits fixed at start). */
  readonly restartNeeded: ReadonlyArray<string>
}

/** A reload refused: the file is bad (the one line saying why), and the running settings stay. */
export class ReloadFailed extends Schema.TaggedError<ReloadFailed>()("ReloadFailed", { message: Schema.String }) {}

/** What a reload changed, and what it could not. */
export interface ReloadReport {
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  readonly reweighted: ReadonlyArray<string>
  readonly strategy: string
  readonly restartNeeded: ReadonlyArray<string>
}

export class Reloader extends Context.Tag("effect-lb/Reloader")<
  Reloader,
  { readonly reload: Effect.Effect<ReloadReport, ReloadFailed> }
>() {}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`

/** The one log line a reload leaves. */
export const reportLine = (report: ReloadReport): string =>
  `configuration reloaded: ${plural(report.added.length, "server")} added, ${report.removed.length} draining, ` +
  `${report.reweighted.length} re-weighted; strategy ${report.strategy}` +
  (report.restartNeeded.length === 0 ? "" : `; needs a restart to change: ${report.restartNeeded.join(", ")}`)

export const make = (load: Effect.Effect<Desired, ReloadFailed>) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const operator = yield* Operator
    const balancer = yield* Balancer
    const monitor = yield* HealthMonitor
    const proxy = yield* Effect.serviceOption(Proxy)
    const oneAtATime = yield* Effect.makeSemaphore(1)

    const applyServers = (servers: NonNullable<Desired["servers"]>) =>
      Effect.gen(function* () {
        const added: Array<string> = []
        const reweighted: Array<string> = []
        const wanted = new Set<string>()
        for (const server of servers) {
          const id = ServerId.make(formatEndpoint(server))
          wanted.add(id)
          const known = yield* registry.get(id)
          if (Option.isNone(known) || known.value.state === "draining") {
            // A draining one is taken back: the file lists it again.
            yield* Effect.ignore(registry.add({ ...server, id }, "file"))
            added.push(id)
          } else if (known.value.weight !== server.weight) {
            yield* registry.setWeight(id, server.weight)
            reweighted.push(id)
          }
        }
        const removed: Array<string> = []
        for (const server of yield* registry.list) {
          if (wanted.has(server.id) || registry.unsafeOrigin(server.id) !== "file" || server.state === "draining")
            continue
          yield* Effect.ignore(operator.drain(server.id))
          removed.push(server.id)
        }
        return { added, removed, reweighted }
      })

    const apply = (desired: Desired) =>
      Effect.gen(function* () {
        if ((yield* balancer.strategy) !== desired.strategy)
          yield* Effect.mapError(
            balancer.setStrategy(desired.strategy),
            (error) => new ReloadFailed({ message: error.message })
          )
        yield* monitor.reconfigure(desired.monitor)
        yield* registry.reconfigure(desired.tunables)
        if (Option.isSome(proxy)) yield* proxy.value.reconfigure(desired.proxyProtocol)
        const servers =
          desired.servers === undefined
            ? { added: [], removed: [], reweighted: [] }
            : yield* applyServers(desired.servers)
        if (desired.tls !== undefined) yield* desired.tls
        return { ...servers, strategy: desired.strategy, restartNeeded: desired.restartNeeded }
      })

    const reload = oneAtATime.withPermits(1)(
      load.pipe(
        Effect.flatMap(apply),
        Effect.tap((report) => Effect.logInfo(reportLine(report))),
        Effect.tapError((error) => Effect.logError(`reload refused, the running configuration stays: ${error.message}`))
      )
    )
    return Reloader.of({ reload })
  })

export const layer = (
  load: Effect.Effect<Desired, ReloadFailed>
): Layer.Layer<Reloader, never, ServerRegistry | Operator | Balancer | HealthMonitor> =>
  Layer.effect(Reloader, make(load))
