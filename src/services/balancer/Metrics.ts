/**
 * What the balancer counts, as Effect `Metric`s (served as Prometheus text by the admin server).
 *
 * Counted where it happens: picks and re-routes in the balancer (on the Locate hot path, so per
 * label set the label array is built once and reused — Effect caches a metric's hook per array),
 * probe round trips and ejections in the health monitor and the proxy. What the registry knows
 * (state, active connections, weight) is copied into gauges when they are read.
 */
import { Metric, MetricBoundaries, MetricLabel } from "effect"
import type { ServerId, ServerView } from "../../domain/Server.js"

export const locates = Metric.counter("effect_lb_locates_total", {
  description: "Clients sent to a server (Locate answers and proxied connections), by server and strategy",
  incremental: true
})
export const picksFailed = Metric.counter("effect_lb_picks_failed_total", {
  description: "Clients turned away because no server was available, by strategy",
  incremental: true
})
export const reroutes = Metric.counter("effect_lb_reroutes_total", {
  description: "Locates that excluded this server: a client failed on it and came back for another",
  incremental: true
})
export const ejections = Metric.counter("effect_lb_ejections_total", {
  description: "Times a live server was marked dead (silent past dead-after, or refused a proxied connect)",
  incremental: true
})
export const probeRoundTrip = Metric.histogram(
  "effect_lb_probe_round_trip_seconds",
  MetricBoundaries.exponential({ start: 0.0001, factor: 2, count: 16 }),
  "Round trip of the health probe, by server"
)
export const activeConnections = Metric.gauge("effect_lb_server_active_connections", {
  description: "Active connections of a server (its own report, or the proxy's exact count)"
})
export const serverState = Metric.gauge("effect_lb_server_state", {
  description: "1 for the state the server is in (live, dead, draining), 0 for the others"
})
export const serverWeight = Metric.gauge("effect_lb_server_weight", { description: "The server's weight" })
export const strategyInfo = Metric.gauge("effect_lb_strategy", {
  description: "1 for the strategy the balancer uses now, 0 for the others"
})

export const proxyAccepted = Metric.counter("effect_lb_proxy_connections_total", {
  description: "Client connections the proxy accepted",
  incremental: true
})
export const proxyTurnedAway = Metric.counter("effect_lb_proxy_turned_away_total", {
  description:
    "Client connections the proxy closed unserved: at its connection limit, no server live, or every backend tried failed",
  incremental: true
})
export const proxyOpen = Metric.gauge("effect_lb_proxy_open_connections", {
  description: "Client connections open through the proxy now"
})

export const turnedAwayLabels = {
  limit: [MetricLabel.make("reason", "limit")],
  noServer: [MetricLabel.make("reason", "no_server")],
  backendsFailed: [MetricLabel.make("reason", "backends_failed")]
} as const

const states: ReadonlyArray<ServerView["state"]> = ["live", "dead", "draining"]

/** Label arrays built once per key and reused: the metric's hook is then found without hashing. */
export const labelCache = <K>(labels: (key: K) => ReadonlyArray<MetricLabel.MetricLabel>) => {
  const cache = new Map<K, ReadonlyArray<MetricLabel.MetricLabel>>()
  return (key: K) => {
    let known = cache.get(key)
    if (known === undefined) {
      known = labels(key)
      // Bounded: servers come and go over a long life; rebuilding an array is cheap.
      if (cache.size >= 65_536) cache.clear()
      cache.set(key, known)
    }
    return known
  }
}

export const serverLabels = labelCache((id: ServerId) => [MetricLabel.make("server", id)])

/** Counts a live → dead transition of `id`. */
export const unsafeEjected = (id: ServerId) => ejections.unsafeUpdate(1, serverLabels(id))

/** Records one probe round trip of `id`. */
export const unsafeProbed = (id: ServerId, roundTripMs: number) =>
  probeRoundTrip.unsafeUpdate(roundTripMs / 1000, serverLabels(id))

/**
 * Copies what the registry knows now into the server gauges. Called at each scrape rather than on
 * every change: the proxy's and the Locate path's counts change far more often than anyone reads them.
 */
export const unsafeRecordServers = (servers: ReadonlyArray<ServerView>) => {
  for (const server of servers) {
    const labels = serverLabels(server.id)
    activeConnections.unsafeUpdate(server.active, labels)
    serverWeight.unsafeUpdate(server.weight, labels)
    for (const state of states) {
      serverState.unsafeUpdate(server.state === state ? 1 : 0, [...labels, MetricLabel.make("state", state)])
    }
  }
}

/** Sets the strategy gauge: 1 for `current`, 0 for every other known name. */
export const unsafeStrategyIs = (current: string, known: Iterable<string>) => {
  for (const name of known) strategyInfo.unsafeUpdate(name === current ? 1 : 0, [MetricLabel.make("strategy", name)])
}
