/** `effect-lb status` and `effect-lb strategy NAME`: an operator's view of a running balancer. */
import { Command } from "@effect/cli"
import { Clock, Console, Effect, Option } from "effect"
import { BalancerReply, type BalancerReply as BalancerReplyType, SetStrategy } from "../domain/Protocol.js"
import { formatEndpoint, type ServerView } from "../domain/Server.js"
import { askFirst, statusOfFirst } from "../services/client/BalancerClient.js"
import * as Wire from "../services/wire/Wire.js"
import { names } from "../services/balancer/strategies/Catalog.js"
import { clusterBlock } from "./clusterStatus.js"
import { balancers, checkedToken, json, oneOf, ruledArg, token } from "./options.js"
import { Schema } from "effect"
import { trustFrom, trustOptions } from "./tlsOptions.js"

/** A reply that is an error becomes the command's failure (one line, exit 1). */
const expect = <T extends BalancerReplyType["_tag"]>(reply: BalancerReplyType, tag: T) =>
  reply._tag === tag
    ? Effect.succeed(reply as Extract<BalancerReplyType, { _tag: T }>)
    : Effect.fail(new Error("message" in reply ? `${reply._tag}: ${reply.message}` : `unexpected answer ${reply._tag}`))

const pad = (cells: ReadonlyArray<string>, widths: ReadonlyArray<number>) =>
  cells
    .map((cell, i) => cell.padEnd(widths[i] ?? 0))
    .join("  ")
    .trimEnd()

/** A dead server's state says when it last answered (`now` in ms since the epoch), not its stale load. */
const stateCell = (server: ServerView, now: number | undefined) => {
  if (server.state !== "dead" || now === undefined || server.lastSeenAt === undefined) return server.state
  if (server.lastSeenAt === null) return "dead (never answered)"
  return `dead (last seen ${Math.max(0, Math.round((now - server.lastSeenAt) / 1000))}s ago)`
}

export const statusTable = (strategy: string, servers: ReadonlyArray<ServerView>, now?: number): string => {
  const header = ["ID", "ADDRESS", "WEIGHT", "STATE", "ACTIVE", "RESPONSE", "LOCATED"]
  const total = servers.reduce((sum, s) => sum + s.located, 0)
  const sorted = [...servers].sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true }))
  const rows = sorted.map((s) => [
    s.id,
    formatEndpoint(s),
    String(s.weight),
    stateCell(s, now),
    s.state === "dead" ? "-" : String(s.active),
    s.responseTimeMs === null ? "-" : `${s.responseTimeMs.toFixed(2)} ms`,
    `${s.located}${total > 0 ? ` (${Math.round((100 * s.located) / total)}%)` : ""}`
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const lines = [`strategy: ${strategy}`, pad(header, widths), ...rows.map((row) => pad(row, widths))]
  if (servers.length === 0) lines.push("(no servers)")
  return lines.join("\n")
}

const encodeReply = Schema.encodeSync(BalancerReply)

const statusBalancer = balancers("the balancer's address; given several, the first that answers is shown")

export const statusCommand = Command.make("status", { balancer: statusBalancer, json, ...trustOptions }, (flags) =>
  trustFrom(flags.tls, flags.ca).pipe(
    Effect.flatMap((trust) => statusOfFirst(flags.balancer, "5 seconds", trust)),
    Effect.flatMap(({ reply, balancer }) =>
      Effect.map(expect(reply, "StatusReport"), (report) => ({ report, balancer }))
    ),
    Effect.flatMap(({ report, balancer }) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Console.log(
          flags.json
            ? JSON.stringify(encodeReply(report))
            : // Given several, which one answered: each balancer has its own view.
              `${flags.balancer.length > 1 ? `balancer: ${balancer}\n` : ""}${statusTable(report.strategy, report.servers, now)}` +
                (report.cluster === undefined ? "" : `\n\n${clusterBlock(report.cluster, now)}`)
        )
      )
    ),
    Effect.provide(Wire.layer)
  )
).pipe(
  Command.withDescription(
    "show the balancer's servers, their state and load, and its strategy; with --registry, the cluster"
  )
)

export const strategyCommand = Command.make(
  "strategy",
  {
    name: ruledArg("NAME", oneOf(names), "the strategy to switch to"),
    balancer: balancers(
      "the balancer's address; given several, the strategy is set on the first that answers (each balancer keeps its own)"
    ),
    token,
    json,
    ...trustOptions
  },
  (flags) =>
    Effect.all([checkedToken(flags.token), trustFrom(flags.tls, flags.ca)]).pipe(
      Effect.flatMap(([token, trust]) =>
        askFirst(
          flags.balancer,
          new SetStrategy({ strategy: flags.name, token: Option.getOrUndefined(token) }),
          "5 seconds",
          trust
        )
      ),
      Effect.flatMap(({ reply, balancer }) => Effect.map(expect(reply, "StrategySet"), (set) => ({ set, balancer }))),
      Effect.flatMap(({ set, balancer }) =>
        Console.log(
          flags.json
            ? JSON.stringify(encodeReply(set))
            : // Given several, only the one that answered changed: each balancer keeps its own strategy.
              `strategy set to ${set.strategy}${flags.balancer.length > 1 ? ` on the balancer at ${balancer}` : ""}`
        )
      ),
      Effect.provide(Wire.layer)
    )
).pipe(Command.withDescription("switch the balancer's strategy at run time"))
