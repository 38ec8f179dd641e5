/**
 * Cost of one pick per strategy at 10, 50, 1,000 and 10,000 servers: the strategy alone, and the
 * balancer's whole `determineServer` (registry bookkeeping included), run synchronously. Then
 * consistent-hash at real weights (all 32, and mixed 1..1000): a pick, the first keyed pick after
 * N servers joined (it builds the table), one join and one leave at N (each applied by the next
 * keyed pick), and the keys a join moves against the ideal weight / (total + weight).
 *
 *   npm run bench:picks
 */
import { Effect, Layer } from "effect"
import { Host, Port, ServerId, Weight } from "../src/domain/Server.js"
import * as Balancer from "../src/services/balancer/Balancer.js"
import * as ServerRegistry from "../src/services/balancer/ServerRegistry.js"
import { catalog, Strategies } from "../src/services/balancer/strategies/Catalog.js"
import { ConsistentHash } from "../src/services/balancer/strategies/ConsistentHash.js"
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

/** Milliseconds of `step` after a fresh `setup`, best of `runs`. */
const timeOnce = <A>(runs: number, setup: () => A, step: (a: A) => void): number => {
  let best = Infinity
  for (let run = 0; run < runs; run++) {
    const state = setup()
    const started = process.hrtime.bigint()
    step(state)
    best = Math.min(best, Number(process.hrtime.bigint() - started) / 1e6)
  }
  return best
}

const hashing = Effect.runSync(Effect.provide(Strategy, ConsistentHash.layer))
const weighted = (n: number, weight: (i: number) => number): Array<Candidate> =>
  candidates(n).map((server, i) => ({ ...server, weight: weight(i) }))
const joined = (servers: ReadonlyArray<Candidate>) => {
  const picker = hashing.makePicker()
  for (const server of servers) picker.upsert(server)
  picker.pick(none, "warm")
  return picker
}
const sample = Array.from({ length: 65_536 }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`)
const hashRows: Array<Array<string>> = []
for (const [label, weight] of [
  ["32", () => 32],
  ["1..1000", (i: number) => 1 + ((i * 7919) % 1000)]
] as const) {
  for (const n of sizes) {
    const servers = weighted(n, weight)
    const newcomer: Candidate = {
      id: ServerId.make(`s${n}`),
      weight: 32,
      active: 0,
      responseTimeMs: null,
      latencyMs: null
    }
    const picker = joined(servers)
    const pick = timeIt(200_000, () => {
      picker.pick(none, nextKey())
    })
    const first = timeOnce(
      5,
      () => {
        const fresh = hashing.makePicker()
        for (const server of servers) fresh.upsert(server)
        return fresh
      },
      (fresh) => fresh.pick(none, "10.0.0.1")
    )
    const join = timeOnce(
      5,
      () => joined(servers),
      (p) => {
        p.upsert(newcomer)
        p.pick(none, "10.0.0.1")
      }
    )
    const leave = timeOnce(
      5,
      () => joined(servers),
      (p) => {
        p.remove(servers[0]?.id ?? newcomer.id)
        p.pick(none, "10.0.0.1")
      }
    )
    const before = sample.map((key) => picker.pick(none, key))
    picker.upsert(newcomer)
    const moved = sample.filter((key, i) => picker.pick(none, key) !== before[i]).length / sample.length
    const total = servers.reduce((sum, server) => sum + server.weight, 0)
    hashRows.push([
      label,
      String(n),
      fixed(pick / 1000, 3),
      fixed(first, 2),
      fixed(join, 2),
      fixed(leave, 2),
      `${fixed(moved * 100, 3)}% / ${fixed((100 * newcomer.weight) / (total + newcomer.weight), 3)}%`
    ])
  }
}
const hashHeader = ["weights", "servers", "pick µs", "first pick ms", "join ms", "leave ms", "join moves / ideal"]
const hashWidths = hashHeader.map((h, i) => Math.max(h.length, ...hashRows.map((row) => (row[i] ?? "").length)))
console.log("\nconsistent-hash at real weights (best of 5; join and leave applied by the next keyed pick)")
for (const row of [hashHeader, ...hashRows]) {
  console.log("  " + row.map((cell, i) => cell.padEnd(hashWidths[i] ?? 0)).join("  "))
}
