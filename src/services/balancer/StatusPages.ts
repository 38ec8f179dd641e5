/**
 * A `StatusReport` as the balancer port sends it: one line of at most the line limit, so a long one
 * is a page — the servers in id order after the asker's cursor, as many as fit, with `total` and,
 * when more follow, `next`. An asker that knows nothing of pages gets the first page. With
 * `--registry`, the first page also has the cluster, its list of balancers cut short to fit.
 */
import { Schema } from "effect"
import { type ClusterView, StatusReport } from "../../domain/Protocol.js"
import { ServerId, ServerView } from "../../domain/Server.js"
import { lineEncoder } from "../wire/LineCodec.js"
import { LineBudget, pageOf } from "../wire/Pages.js"

const encodeView = Schema.encodeSync(ServerView)
const encodeReport = lineEncoder(StatusReport)
/** The longest cursor a page can carry (a `ServerId` is at most 128 characters, none escaped in JSON). */
const longestId = ServerId.make("x".repeat(128))

/** Balancers the first page lists at most; `cluster.total` counts the others. */
export const maxBalancersShown = 64
/** The part of a line the cluster may take, so that servers still fit beside it. */
const clusterShare = 1 / 4

const byId = (a: ServerView, b: ServerView) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/**
 * `view` cut to fit `maxLine * clusterShare` bytes and `maxBalancersShown` balancers, in its order; one
 * too long to fit is left out rather than ending the list (its fields come from other balancers).
 */
export const clusterOnLine = (view: ClusterView, maxLine: number): ClusterView => {
  const all = view.balancers.length
  const envelope = JSON.stringify({ ...view, balancers: [], total: all })
  const budget = new LineBudget(Math.floor(maxLine * clusterShare), envelope)
  const shown: Array<ClusterView["balancers"][number]> = []
  for (const member of view.balancers) {
    if (shown.length >= maxBalancersShown) break
    if (budget.take(JSON.stringify(member))) shown.push(member)
  }
  return shown.length === all ? view : { ...view, balancers: shown, total: all }
}

/**
 * The page of `report` that starts after `after` (from the start without it) and fits `maxLine` bytes;
 * the first page carries the report's cluster, if any, cut by `clusterOnLine`.
 */
export const statusPage = (report: StatusReport, after: ServerId | undefined, maxLine: number): StatusReport => {
  const { strategy, servers } = report
  const total = servers.length
  const cluster =
    after === undefined && report.cluster !== undefined ? clusterOnLine(report.cluster, maxLine) : undefined
  const withCluster = cluster === undefined ? {} : { cluster }
  const rest = (after === undefined ? [...servers] : servers.filter((server) => server.id > after)).sort(byId)
  const budget = new LineBudget(
    maxLine,
    encodeReport(new StatusReport({ strategy, servers: [], total, next: longestId, ...withCluster }, true))
  )
  const page = pageOf(
    rest,
    (server) => server.id,
    (server) => JSON.stringify(encodeView(server)),
    budget
  )
  // The registry's own values: not checked again.
  return new StatusReport(
    {
      strategy,
      servers: page.entries,
      total,
      ...(page.next === undefined ? {} : { next: page.next }),
      ...withCluster
    },
    true
  )
}
