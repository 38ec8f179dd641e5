/**
 * Cost of one pick per strategy at 10, 50, 1,000 and 10,000 servers: the strategy alone, and the
 * balancer's whole `determineServer` (registry bookkeeping included), run synchronously.
 *
 *   npm run bench:picks
 */
import { Effect, Layer } from "effect"
import { Host, Port, ServerId, Weight } from "../src/domain/Server.js"
import * as Balancer from "../src/services/balancer/Balancer.js"
import * as ServerRegistry from "../src/services/balancer/ServerRegistry.js"
import { catalog, Strategies } from "../src/services/balancer/strategies/Catalog.js"
import { type Candidate, Strategy } from "../src/services/balancer/strategies/Strategy.js"
import { fixed } from "./support.js"

const sizes = [10, 50, 1_000, 10_000]

const candidates = (n: number): Array<Candidate> =>
  Array.from({ length: n }, (_, i) => ({
    id: ServerId.make(`s${i}`),
    weight: 1 + (i % 5),
    active: i % 17,
    responseTimeMs: 1 + ((i * 7919) % 100) / 10,
    latencyMs: null
  }))

/** Nanoseconds per call of `step`, best of 5 runs of `iterations` calls. */
const timeIt = (iterations: number, step: () => void): number => {
  let best = Infinity
  for (let run = 0; run < 5; run++) {
    const started = process.hrtime.bigint()
    for (let i = 0; i < iterations; i++) step()
    best = Math.min(best, Number(process.hrtime.bigint() - started) / iterations)
  }
  return best
}

const none = new Set<ServerId>()
// Client keys (addresses), for consistent-hash; the other strategies ignore them.
const keys = Array.from({ length: 1024 }, (_, i) => `10.0.${i >> 8}.${i & 255}`)
let k = 0
const nextKey = () => keys[k++ & 1023]
const rows: Array<Array<string>> = []
for (const member of catalog) {
  // Each strategy from its own layer, as the balancer gets it.
  const definition = Effect.runSync(Effect.provide(Strategy, member.layer))
  for (const n of sizes) {
    const servers = candidates(n)
    const strategy = definition.makePicker()
    for (const server of servers) strategy.upsert(server)
    const load = servers.map((server) => server.active)
    // A pick, plus the update a real pick causes: one more connection on the chosen server.
    const pickOnly = timeIt(200_000, () => {
      strategy.pick(none, nextKey())
    })
    const pickAndCount = timeIt(200_000, () => {
      const id = strategy.pick(none, nextKey())
      const at = id === undefined ? -1 : Number(id.slice(1))
      const server = servers[at]
      if (server !== undefined) {
        load[at] = (load[at] ?? 0) + 1
        strategy.upsert({ ...server, active: load[at] ?? 0 })
      }
    })

    const layer = Balancer.layer(member.name).pipe(
      Layer.provideMerge(ServerRegistry.layer()),
      Layer.provide(Strategies.layer)
    )
    const determine = Effect.gen(function* () {
      const registry = yield* ServerRegistry.ServerRegistry
      const balancer = yield* Balancer.Balancer
      for (const [i, server] of servers.entries()) {
        yield* registry.add({
          id: server.id,
          host: Host.make("127.0.0.1"),
          port: Port.make(10_000 + i),
          weight: Weight.make(server.weight)
        })
      }
      const locate = Effect.suspend(() => balancer.determineServer(undefined, nextKey()))
      // Inside one fiber, as the control plane calls it: the runtime's per-run start-up is not counted.
      let best = Infinity
      for (let run = 0; run < 5; run++) {
        const started = process.hrtime.bigint()
        for (let i = 0; i < 50_000; i++) yield* locate
        best = Math.min(best, Number(process.hrtime.bigint() - started) / 50_000)
      }
      return best
    }).pipe(Effect.provide(layer), Effect.scoped, Effect.runSync)

    rows.push([
      member.name,
      String(n),
      fixed(pickOnly / 1000, 3),
      fixed(pickAndCount / 1000, 3),
      fixed(determine / 1000, 2)
    ])
  }
}

const header = ["strategy", "servers", "pick µs", "pick+count µs", "determineServer µs"]
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
console.log("cost of one pick (best of 5 runs; the strategy alone, and the balancer's whole decision)")
for (const row of [header, ...rows]) console.log("  " + row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join("  "))
