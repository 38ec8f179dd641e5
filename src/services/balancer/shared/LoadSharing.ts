/**
 * The servers' load reports, shared: a server reports its load to one balancer only (on its control
 * connection), and the others' least-connection and response-time picks want it too.
 *
 * Out: each report received here is kept, the latest per server, and they are published together in
 * one batch on the store's loads channel, at most once per `interval` (the first report of a quiet
 * spell waits one interval, so a burst goes out as one batch). Nothing is published while the store
 * is unreachable: what waits is kept (the latest per server) and published when it answers.
 *
 * In: the other balancers' batches are kept the same way, the latest per server, and applied by one
 * fiber, all that arrived since it last ran, synchronously, to the inner registry (so not published
 * again). A report only sets the server's reported load and latency, as one received here does: it
 * never changes whether the server is live or dead (each balancer's own probes say that), its probe
 * round trips, or its located count. A server not known here is ignored.
 *
 * A report is superseded within one interval, so a lost batch does not matter: there is no revision,
 * and nothing of it is in the snapshot.
 */
import { Clock, Duration, Effect, type Scope } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import * as Metrics from "../Metrics.js"
import type { ServerRegistry } from "../ServerRegistry.js"
import { type LoadReport, maxLoadReports, type SharedStore, StoreUnavailable } from "./Store.js"

export interface LoadConfig {
  /** This balancer's name (`--balancer-id`) and this run of it: its own batches are ignored when they come back. */
  readonly from: string
  readonly instance: string
  /** One batch per this long, at most. */
  readonly interval: Duration.DurationInput
  /** Each publication must be done within this long. */
  readonly timeout: Duration.DurationInput
  /** Servers whose report waits (out, or in), at most: the registry's server cap. */
  readonly maxServers: number
}

export interface LoadSharing {
  /** A server's report, received here: published with the next batch. Synchronous. */
  readonly reported: (id: ServerId, active: number, latencyMs: number | undefined) => void
}

/** Keeps `report` (the latest per server), unless `cap` servers wait already. */
const keep = (waiting: Map<ServerId, LoadReport>, cap: number, report: LoadReport) => {
  if (waiting.has(report.id) || waiting.size < cap) waiting.set(report.id, report)
}

/** Publishes what waits, one batch per interval at most; kept while the store is unreachable. */
const publisher = (store: SharedStore["Type"], config: LoadConfig, cap: number, linkUp: () => boolean) =>
  Effect.gen(function* () {
    const waiting = new Map<ServerId, LoadReport>()
    const wake = yield* Effect.makeLatch(false)
    let warned = false
    const publish = Effect.gen(function* () {
      if (waiting.size === 0) return
      // Unreachable: kept, and tried again next interval.
      if (!linkUp()) return yield* wake.open
      const reports = [...waiting.values()]
      waiting.clear()
      const publishedAt = yield* Clock.currentTimeMillis
      const sent = yield* store
        .publishLoads({ from: config.from, instance: config.instance, publishedAt, reports })
        .pipe(
          Effect.timeoutFail({
            duration: config.timeout,
            onTimeout: () => new StoreUnavailable({ message: "no answer within the deadline" })
          }),
          Effect.either
        )
      if (sent._tag === "Right") {
        Metrics.registryLoadBatches.unsafeUpdate(1, Metrics.loadBatchLabels.published)
        warned = false
        return
      }
      // A newer report of a server, received meanwhile, wins over the one that was not sent.
      for (const report of reports) if (!waiting.has(report.id)) keep(waiting, cap, report)
      yield* wake.open
      if (!warned)
        yield* Effect.logWarning(`load reports not shared yet (${sent.left.message}): kept, the latest per server`)
      warned = true
    })
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          yield* wake.await
          yield* Effect.sleep(config.interval)
          yield* wake.close
          yield* publish
        })
      )
    )
    return (report: LoadReport) => {
      keep(waiting, cap, report)
      wake.unsafeOpen()
    }
  })

/** Applies the other balancers' batches to `registry`, all that arrived since the last time, in one go. */
const receiver = (store: SharedStore["Type"], registry: ServerRegistry["Type"], config: LoadConfig, cap: number) =>
  Effect.gen(function* () {
    const arrived = new Map<ServerId, LoadReport>()
    const wake = yield* Effect.makeLatch(false)
    let unreadable: string | undefined
    let told = false
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          yield* wake.await
          yield* wake.close
          if (unreadable !== undefined && !told) {
            told = true
            yield* Effect.logWarning(
              `unreadable load reports on the shared registry, dropped (said once): ${unreadable}`
            )
          }
          const reports = [...arrived.values()]
          arrived.clear()
          for (const report of reports) yield* registry.reportLoad(report.id, report.active, report.latencyMs)
        })
      )
    )
    yield* store.listenLoads({
      loads: (batch) => {
        if (batch.instance === config.instance) return
        Metrics.registryLoadBatches.unsafeUpdate(1, Metrics.loadBatchLabels.received)
        for (const report of batch.reports) keep(arrived, cap, report)
        wake.unsafeOpen()
      },
      unreadable: (reason) => {
        Metrics.registryLoadBatches.unsafeUpdate(1, Metrics.loadBatchLabels.unreadable)
        unreadable ??= reason
        wake.unsafeOpen()
      }
    })
  })

/** Shares the load reports received here, and applies the others' to `registry` (the inner one). */
export const make = (
  store: SharedStore["Type"],
  registry: ServerRegistry["Type"],
  config: LoadConfig,
  linkUp: () => boolean
): Effect.Effect<LoadSharing, never, Scope.Scope> =>
  Effect.gen(function* () {
    const cap = Math.max(1, Math.min(config.maxServers, maxLoadReports))
    const send = yield* publisher(store, config, cap, linkUp)
    yield* receiver(store, registry, config, cap)
    return {
      reported: (id, active, latencyMs) => send(latencyMs === undefined ? { id, active } : { id, active, latencyMs })
    }
  })

export const defaultInterval = Duration.millis(100)
