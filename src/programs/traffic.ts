/**
 * Scripted clients for the playground: `--demo N` (a fixed mix of requests, then a table of what
 * each server got) and `--traffic N` (background clients that never stop, for the dashboard).
 * Each scripted client has a key of its own (`demo-3`, `traffic-1`): they all come from 127.0.0.1,
 * and consistent-hash would otherwise send every one of them to the same server.
 */
import { Clock, Console, Effect, Either, Random } from "effect"
import { formatEndpoint } from "../domain/Server.js"
import * as Client from "../services/client/Client.js"
import type * as Wire from "../services/wire/Wire.js"

/** The playground's balancer, or its several (`--balancers N`). */
type Balancers = Wire.Address | ReadonlyArray<Wire.Address>

const describe = (balancer: Balancers) =>
  "host" in balancer
    ? `balancer ${formatEndpoint(balancer)}`
    : `balancer${balancer.length === 1 ? "" : "s"} ${balancer.map(formatEndpoint).join(", ")}`

/** Clients named `prefix-1` … `prefix-count`, each its own key for keyed strategies. */
export const scriptedClients = (balancer: Balancers, prefix: string, count: number) =>
  Effect.forEach(
    Array.from({ length: count }, (_, i) => `${prefix}-${i + 1}`),
    (key) => Client.make({ ...Client.defaults, balancer, key })
  )

/** Clients the demo spreads its requests over (the key of each request's client). */
const demoClients = 16

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0)

/** Scripted traffic: a mix of list, download and compute from concurrent clients; a table at the end. */
export const demo = (requests: number, balancer: Balancers, servers: ReadonlyArray<string>, out: string) =>
  Effect.gen(function* () {
    const clients = yield* scriptedClients(balancer, "demo", Math.min(requests, demoClients))
    const [first] = clients
    if (first === undefined) return
    const done: Array<{ server: string; ms: number }> = []
    let failed = 0
    // Downloads pick from what the servers actually serve (the samples, or the --files folder).
    const files = Object.keys((yield* Effect.either(first.list())).pipe(Either.getOrElse(() => ({ value: {} }))).value)
    const plan = yield* Effect.forEach(Array.from({ length: requests }), () =>
      Effect.map(Random.nextIntBetween(0, 100), (roll) => (roll < 50 ? "list" : roll < 80 ? "download" : "compute"))
    )
    yield* Console.log(
      `demo: ${requests} requests (list 50%, download 30%, compute 1 s 20%) from 8 concurrent clients…`
    )
    yield* Effect.forEach(
      plan,
      (kind, i) =>
        Effect.gen(function* () {
          const started = yield* Clock.currentTimeMillis
          const client = clients[i % clients.length] ?? first
          const server =
            kind === "list"
              ? (yield* client.list()).server.id
              : kind === "download" && files.length > 0
                ? (yield* client.download(files[i % files.length] ?? "", out, undefined, { overwrite: true })).server.id
                : kind === "download"
                  ? (yield* client.list()).server.id
                  : (yield* client.compute(1)).server.id
          done.push({ server, ms: (yield* Clock.currentTimeMillis) - started })
        }).pipe(
          Effect.catchAll(() =>
            Effect.sync(() => {
              failed += 1
            })
          )
        ),
      { concurrency: 8, discard: true }
    )
    const rows = servers.map((id) => {
      const mine = done.filter((d) => d.server === id).map((d) => d.ms)
      mine.sort((a, b) => a - b)
      return { id, count: mine.length, p50: percentile(mine, 50), p99: percentile(mine, 99) }
    })
    const widest = Math.max(1, ...rows.map((row) => row.count))
    yield* Console.log(`\nserver  requests  share   p50 ms  p99 ms`)
    for (const row of rows) {
      const share = done.length === 0 ? 0 : (100 * row.count) / done.length
      yield* Console.log(
        `${row.id.padEnd(6)}  ${String(row.count).padStart(8)}  ${share.toFixed(1).padStart(4)}%  ${String(row.p50).padStart(6)}  ${String(row.p99).padStart(6)}  ${"█".repeat(Math.round((30 * row.count) / widest))}`
      )
    }
    yield* Console.log(`\n${done.length} served, ${failed} failed (${describe(balancer)})`)
  })

/**
 * Background clients for the dashboard to show: each asks for a list, a download or a one-second
 * computation, pauses a moment, and goes again — re-routing by itself when a server is killed.
 */
export const traffic = (count: number, balancer: Balancers, out: string) =>
  Effect.gen(function* () {
    const clients = yield* scriptedClients(balancer, "traffic", count)
    const [first] = clients
    if (first === undefined) return
    const files = Object.keys((yield* Effect.either(first.list())).pipe(Either.getOrElse(() => ({ value: {} }))).value)
    const loop = (client: Client.Client["Type"]) =>
      Effect.gen(function* () {
        const roll = yield* Random.nextIntBetween(0, 100)
        const file = files[roll % Math.max(files.length, 1)]
        if (roll < 50 || file === undefined) yield* client.list()
        else if (roll < 70) yield* client.download(file, out, undefined, { overwrite: true })
        else yield* client.compute(1)
      }).pipe(
        Effect.ignore,
        Effect.zipRight(Effect.flatMap(Random.nextIntBetween(100, 600), (ms) => Effect.sleep(ms))),
        Effect.forever
      )
    for (const client of clients) yield* Effect.forkScoped(loop(client))
  })
