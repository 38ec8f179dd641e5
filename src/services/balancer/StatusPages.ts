/**
 * A `StatusReport` as the balancer port sends it: one line of at most the line limit, so a long one
 * is a page — the servers in id order after the asker's cursor, as many as fit, with `total` and,
 * when more follow, `next`. An asker that knows nothing of pages gets the first page.
 */
import { Schema } from "effect"
import { StatusReport } from "../../domain/Protocol.js"
import { ServerId, ServerView } from "../../domain/Server.js"
import { lineEncoder } from "../wire/LineCodec.js"
import { LineBudget, pageOf } from "../wire/Pages.js"

const encodeView = Schema.encodeSync(ServerView)
const encodeReport = lineEncoder(StatusReport)
/** The longest cursor a page can carry (a `ServerId` is at most 128 characters, none escaped in JSON). */
const longestId = ServerId.make("x".repeat(128))

const byId = (a: ServerView, b: ServerView) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** The page of `report` that starts after `after` (from the start without it) and fits `maxLine` bytes. */
export const statusPage = (report: StatusReport, after: ServerId | undefined, maxLine: number): StatusReport => {
  const { strategy, servers } = report
  const total = servers.length
  const rest = (after === undefined ? [...servers] : servers.filter((server) => server.id > after)).sort(byId)
  const budget = new LineBudget(
    maxLine,
    encodeReport(new StatusReport({ strategy, servers: [], total, next: longestId }))
  )
  const page = pageOf(
    rest,
    (server) => server.id,
    (server) => JSON.stringify(encodeView(server)),
    budget
  )
  // The registry's own values: not checked again.
  return new StatusReport(
    { strategy, servers: page.entries, total, ...(page.next === undefined ? {} : { next: page.next }) },
    true
  )
}
