/**
 * What the balancer counts, served as Prometheus text by the admin server.
 *
 * Figures that are not per server (failed picks, the strategy, the proxy's) are Effect `Metric`s.
 * Per-server figures are not: Effect's metric registry is process-global and never lets a series
 * go, so every server id ever seen would stay in memory for the life of the process — a peer that
 * registers new ids without end would grow the balancer without end. They live in a store of our
 * own instead, one entry per registered server, admitted when the registry adds it and dropped
 * when it leaves (`unsafeAdmit` / `unsafeForget`, called by the registry), and are turned into
 * `MetricPair`s at each scrape (`unsafeServerPairs`) with the same names, help, types, labels
 * and buckets Effect's metrics had. The server gauges (state, active connections, weight) are
 * read from the registry's list at scrape time and stored nowhere.
 *
 * Counted where it happens: picks and re-routes in the balancer (on the Locate hot path: a map
 * lookup and an increment, no label array), probe round trips and ejections in the health monitor
 * and the registry. A figure for a server the store does not hold (one already gone) is dropped.
 */
import { Metric, MetricBoundaries, MetricKey, MetricLabel, MetricPair, MetricState } from "effect"
import type { ServerId, ServerView } from "../../domain/Server.js"

export const locates = MetricKey.counter("effect_lb_locates_total", {
  description: "Clients sent to a server (Locate answers and proxied connections), by server and strategy",
  incremental: true
})
export const picksFailed = Metric.counter("effect_lb_picks_failed_total", {
  description: "Clients turned away because no server was available, by strategy",
  incremental: true
})
export const reroutes = MetricKey.counter("effect_lb_reroutes_total", {
  description: "Locates that excluded this server: a client failed on it and came back for another",
  incremental: true
})
export const ejections = MetricKey.counter("effect_lb_ejections_total", {
  description: "Times a live server was marked dead (silent past dead-after, or refused a proxied connect)",
  incremental: true
})
export const outlierEjections = MetricKey.counter("effect_lb_outlier_ejections_total", {
  description:
    "Times passive health ejected the server, by the failure that did it: excluded (by clients), connect, reset",
  incremental: true
})
export const probeRoundTrip = MetricKey.histogram(
  "effect_lb_probe_round_trip_seconds",
  MetricBoundaries.exponential({ start: 0.0001, factor: 2, count: 16 }),
  "Round trip of the health probe, by server"
)
export const activeConnections = MetricKey.gauge("effect_lb_server_active_connections", {
  description: "Active connections of a server (its own report, or the proxy's exact count)"
})
export const serverState = MetricKey.gauge("effect_lb_server_state", {
  description: "1 for the state the server is in (live, dead, draining), 0 for the others"
})
export const serverWeight = MetricKey.gauge("effect_lb_server_weight", { description: "The server's weight" })
export const strategyInfo = Metric.gauge("effect_lb_strategy", {
  description: "1 for the strategy the balancer uses now, 0 for the others"
})

export const proxyAccepted = Metric.counter("effect_lb_proxy_connections_total", {
  description: "Client connections the proxy accepted",
  incremental: true
})
export const proxyTurnedAway = Metric.counter("effect_lb_proxy_turned_away_total", {
  description:
    "Client connections the proxy closed unserved: at its connection limit, no server live, every backend tried failed, or no valid PROXY protocol header (--accept-proxy)",
  incremental: true
})
export const proxyOpen = Metric.gauge("effect_lb_proxy_open_connections", {
  description: "Client connections open through the proxy now"
})

/** With `--registry` only: whether this balancer is joined to the shared registry, where, and what waits. */
export const registryConnected = Metric.gauge("effect_lb_registry_connected", {
  description: "1 when the shared registry (--registry) answers and this balancer has read its state, else 0"
})
export const registryRevision = Metric.gauge("effect_lb_registry_revision", {
  description: "The shared registry's last revision this balancer applied"
})
export const registryPending = Metric.gauge("effect_lb_registry_pending_changes", {
  description:
    "This balancer's changes not yet written to the shared registry (it is unreachable, or they are on their way)"
})
export const registrySyncLag = Metric.gauge("effect_lb_registry_sync_lag_seconds", {
  description:
    "From the publication of the last shared change this balancer applied to its application here (the writer's clock against this one's)"
})

export const registryLoadBatches = Metric.counter("effect_lb_registry_load_batches_total", {
  description:
    "Batches of the servers' load reports on the shared registry's loads channel: published by this balancer, received from the others, or unreadable (dropped)",
  incremental: true
})
export const loadBatchLabels = {
  published: [MetricLabel.make("direction", "published")],
  received: [MetricLabel.make("direction", "received")],
  unreadable: [MetricLabel.make("direction", "unreadable")]
} as const

export const turnedAwayLabels = {
  limit: [MetricLabel.make("reason", "limit")],
  noServer: [MetricLabel.make("reason", "no_server")],
  backendsFailed: [MetricLabel.make("reason", "backends_failed")],
  proxyHeader: [MetricLabel.make("reason", "proxy_header")],
  tlsHandshake: [MetricLabel.make("reason", "tls_handshake")]
} as const

const states: ReadonlyArray<ServerView["state"]> = ["live", "dead", "draining"]

/** Label arrays built once per key and reused: the metric's hook is then found without hashing. */
export const labelCache = <K>(labels: (key: K) => ReadonlyArray<MetricLabel.MetricLabel>) => {
  const cache = new Map<K, ReadonlyArray<MetricLabel.MetricLabel>>()
  return (key: K) => {
    let known = cache.get(key)
    if (known === undefined) {
      known = labels(key)
      // Bounded: rebuilding an array is cheap.
      if (cache.size >= 65_536) cache.clear()
      cache.set(key, known)
    }
    return known
  }
}

/** The probe histogram's upper bounds, ascending, the last +Inf (as Effect's boundaries are). */
const bounds: ReadonlyArray<number> = [...probeRoundTrip.keyType.boundaries.values].sort((a, b) => a - b)

/** One registered server's figures. */
interface Series {
  /** Registries holding the server (one in a balancer; tests may run several in one process). */
  refs: number
  /** Clients sent to it, by strategy (a cell each: counting is a lookup and an increment). */
  readonly locates: Map<string, { count: number }>
  reroutes: number
  ejections: number
  /** Passive health's ejections, by the failure that did it. */
  outliers: Map<string, number> | undefined
  /** Health checks that failed, and proxied connects the server refused or did not accept in time. */
  failedChecks: number
  failedConnects: number
  /** Probe round trips per bucket of `bounds` (not cumulative), created at the first probe. */
  probes: { readonly buckets: Float64Array; count: number; sum: number } | undefined
}

const store = new Map<ServerId, Series>()

/** A server joined a registry: its figures are kept from now on (and keep counting if it was held). */
export const unsafeAdmit = (id: ServerId) => {
  const series = store.get(id)
  if (series !== undefined) series.refs += 1
  else {
    store.set(id, {
      refs: 1,
      locates: new Map(),
      reroutes: 0,
      ejections: 0,
      outliers: undefined,
      failedChecks: 0,
      failedConnects: 0,
      probes: undefined
    })
  }
}

/** A server left a registry: once no registry holds it, its figures go, and later ones are dropped. */
export const unsafeForget = (id: ServerId) => {
  const series = store.get(id)
  if (series === undefined) return
  series.refs -= 1
  if (series.refs <= 0) store.delete(id)
}

/** How many servers have figures kept: never more than the servers registered. */
export const unsafeSeriesCount = () => store.size

/** The figures kept for `id` (for tests and diagnostics), or `undefined` if none are. */
export const unsafeSeriesOf = (id: ServerId) => {
  const series = store.get(id)
  if (series === undefined) return undefined
  return {
    locates: new Map([...series.locates].map(([strategy, { count }]) => [strategy, count])),
    reroutes: series.reroutes,
    ejections: series.ejections,
    probes: series.probes?.count ?? 0
  }
}

/** Counts a client sent to `id` under `strategy` (the Locate hot path: no allocation once seen). */
export const unsafeLocated = (id: ServerId, strategy: string) => {
  const series = store.get(id)
  if (series === undefined) return
  const cell = series.locates.get(strategy)
  if (cell === undefined) series.locates.set(strategy, { count: 1 })
  else cell.count += 1
}

/** Counts a Locate that excluded `id`: a client failed on it and came back for another. */
export const unsafeRerouted = (id: ServerId) => {
  const series = store.get(id)
  if (series !== undefined) series.reroutes += 1
}

/** The counts kept for `id`, read in place (no copy: the status is built from them often). */
export const unsafeCountsOf = (
  id: ServerId
): Readonly<Pick<Series, "reroutes" | "ejections" | "failedChecks" | "failedConnects">> | undefined => store.get(id)

/** Counts a failed health check of `id`. */
export const unsafeCheckFailed = (id: ServerId) => {
  const series = store.get(id)
  if (series !== undefined) series.failedChecks += 1
}

/** Counts a proxied connect `id` refused or did not accept in time. */
export const unsafeConnectFailed = (id: ServerId) => {
  const series = store.get(id)
  if (series !== undefined) series.failedConnects += 1
}

/** Counts a live → dead transition of `id`. */
export const unsafeEjected = (id: ServerId) => {
  const series = store.get(id)
  if (series !== undefined) series.ejections += 1
}

/** Counts an ejection of `id` by passive health, for `reason`. */
export const unsafeOutlierEjected = (id: ServerId, reason: string) => {
  const series = store.get(id)
  if (series === undefined) return
  series.outliers ??= new Map()
  series.outliers.set(reason, (series.outliers.get(reason) ?? 0) + 1)
}

/** Records one probe round trip of `id`, in the first bucket whose bound is at least the value. */
export const unsafeProbed = (id: ServerId, roundTripMs: number) => {
  const series = store.get(id)
  if (series === undefined) return
  const seconds = roundTripMs / 1000
  series.probes ??= { buckets: new Float64Array(bounds.length), count: 0, sum: 0 }
  const probes = series.probes
  let bucket = 0
  while (bucket < bounds.length - 1 && !(seconds <= (bounds[bucket] ?? Infinity))) bucket += 1
  probes.buckets[bucket] = (probes.buckets[bucket] ?? 0) + 1
  probes.count += 1
  probes.sum += seconds
}

const histogramState = ({ buckets, count, sum }: NonNullable<Series["probes"]>) => {
  let cumulated = 0
  const cumulative = bounds.map((bound, i): readonly [number, number] => {
    cumulated += buckets[i] ?? 0
    return [bound, cumulated]
  })
  return MetricState.histogram({ buckets: cumulative, count, min: 0, max: 0, sum })
}

/** The stored figures of one server as metric pairs, each series only once it has counted something. */
const storedPairs = (
  pairs: Array<MetricPair.MetricPair.Untyped>,
  id: ServerId,
  labels: ReadonlyArray<MetricLabel.MetricLabel>
) => {
  const series = store.get(id)
  if (series === undefined) return
  const add = (
    key: MetricKey.MetricKey.Untyped,
    extra: ReadonlyArray<MetricLabel.MetricLabel>,
    state: MetricState.MetricState.Untyped
  ) => pairs.push(MetricPair.unsafeMake(MetricKey.taggedWithLabels(key, extra), state))
  for (const [strategy, { count }] of series.locates) {
    add(locates, [...labels, MetricLabel.make("strategy", strategy)], MetricState.counter(count))
  }
  if (series.reroutes > 0) add(reroutes, labels, MetricState.counter(series.reroutes))
  if (series.ejections > 0) add(ejections, labels, MetricState.counter(series.ejections))
  for (const [reason, count] of series.outliers ?? []) {
    add(outlierEjections, [...labels, MetricLabel.make("reason", reason)], MetricState.counter(count))
  }
  if (series.probes !== undefined) add(probeRoundTrip, labels, histogramState(series.probes))
}

/**
 * The per-server series of `servers` (the registry's list, read at the scrape) as metric pairs:
 * the gauges from what the registry knows now, the counters and histogram from the store. Built
 * at each scrape rather than on every change: the proxy's and the Locate path's counts change far
 * more often than anyone reads them.
 */
export const unsafeServerPairs = (servers: ReadonlyArray<ServerView>): Array<MetricPair.MetricPair.Untyped> => {
  const pairs: Array<MetricPair.MetricPair.Untyped> = []
  const gauge = (
    key: MetricKey.MetricKey.Gauge<number>,
    labels: ReadonlyArray<MetricLabel.MetricLabel>,
    value: number
  ) => pairs.push(MetricPair.unsafeMake(MetricKey.taggedWithLabels(key, labels), MetricState.gauge(value)))
  for (const server of servers) {
    const labels = [MetricLabel.make("server", server.id)]
    gauge(activeConnections, labels, server.active)
    gauge(serverWeight, labels, server.weight)
    for (const state of states) {
      gauge(serverState, [...labels, MetricLabel.make("state", state)], server.state === state ? 1 : 0)
    }
    storedPairs(pairs, server.id, labels)
  }
  return pairs
}

/** Sets the strategy gauge: 1 for `current`, 0 for every other known name. */
export const unsafeStrategyIs = (current: string, known: Iterable<string>) => {
  for (const name of known) strategyInfo.unsafeUpdate(name === current ? 1 : 0, [MetricLabel.make("strategy", name)])
}
