/**
 * Balancing quality: how each strategy copes when one server is slow. Five backend servers register
 * with a real balancer (separate processes); one computes 5× slower than the others. Many concurrent
 * clients each Locate a server and ask it to Compute (a seeded random 1–3 "seconds", scaled to
 * milliseconds), over and over. Per strategy: throughput, latency p50/p99/max (Locate + request),
 * and each server's share.
 *
 *   npm run bench:quality [-- --requests 1200 --clients 16 --seed 7 --slots 4|none]
 */
import * as Net from "node:net"
import { parseArgs } from "node:util"
import { names } from "../src/services/balancer/strategies/Catalog.js"
import { type Child, effectLb, fixed, start } from "./support.js"

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "1200" },
    clients: { type: "string", default: "16" },
    seed: { type: "string", default: "7" },
    // consistent-hash is left out by default: it is for affinity, not spread — and every client
    // here comes from 127.0.0.1, so it would rightly send them all to one server.
    strategies: { type: "string", default: names.filter((name) => name !== "consistent-hash").join(",") },
    slots: { type: "string", default: "4" }
  }
})
const requests = Number(values.requests)
const clients = Number(values.clients)
const fastScale = 0.02 // a "second" of Compute is 20 ms
const slowScale = 0.1 // ... and 100 ms on the slow server

/** mulberry32: a small seeded generator, so every strategy faces the same sequence of work. */
const seeded = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** Sends one line and resolves with the first line of the answer. */
const exchange = (port: number, line: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, noDelay: true })
    let buffered = ""
    socket.on("connect", () => socket.write(line + "\n"))
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString()
      const end = buffered.indexOf("\n")
      if (end >= 0) {
        socket.end()
        resolve(buffered.slice(0, end))
      }
    })
    socket.on("error", reject)
  })

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0

const waitUntil = async (check: () => Promise<boolean>, ms = 10_000) => {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error("timed out waiting for the servers to register")
}

interface Result {
  strategy: string
  throughput: number
  p50: number
  p99: number
  max: number
  share: Map<string, number>
  failed: number
}

const run = async (strategy: string): Promise<Result> => {
  const children: Array<Child> = []
  try {
    const balancer = await start([
      effectLb,
      "balancer",
      "--port",
      "0",
      "--strategy",
      strategy,
      "--probe-interval",
      "200ms"
    ])
    children.push(balancer)
    for (let i = 1; i <= 5; i++) {
      const scale = i === 5 ? slowScale : fastScale
      children.push(
        await start([
          effectLb,
          "server",
          "--port",
          "0",
          "--id",
          i === 5 ? "slow" : `fast${i}`,
          "--balancer",
          `127.0.0.1:${balancer.port}`,
          "--compute-scale",
          String(scale),
          ...(values.slots === "none" ? [] : ["--compute-slots", String(values.slots)])
        ])
      )
    }
    await waitUntil(async () => {
      const status = JSON.parse(await exchange(balancer.port, JSON.stringify({ _tag: "Status" }))) as {
        servers: Array<{ state: string; responseTimeMs: number | null }>
      }
      return status.servers.filter((s) => s.state === "live" && s.responseTimeMs !== null).length === 5
    })
    const random = seeded(Number(values.seed))
    const work = Array.from({ length: requests }, () => 1 + Math.floor(random() * 3))
    const latencies: Array<number> = []
    const share = new Map<string, number>()
    let next = 0
    let failed = 0
    const started = performance.now()
    const loop = async () => {
      while (next < work.length) {
        const seconds = work[next++] ?? 1
        const t0 = performance.now()
        try {
          const located = JSON.parse(await exchange(balancer.port, JSON.stringify({ _tag: "Locate" }))) as {
            server: { id: string; port: number }
          }
          const reply = JSON.parse(
            await exchange(located.server.port, JSON.stringify({ _tag: "Compute", seconds }))
          ) as {
            _tag: string
          }
          if (reply._tag !== "Computed") throw new Error(reply._tag)
          latencies.push(performance.now() - t0)
          share.set(located.server.id, (share.get(located.server.id) ?? 0) + 1)
        } catch {
          failed++
        }
      }
    }
    await Promise.all(Array.from({ length: clients }, loop))
    const elapsed = (performance.now() - started) / 1000
    latencies.sort((a, b) => a - b)
    return {
      strategy,
      throughput: latencies.length / elapsed,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1] ?? 0,
      share,
      failed
    }
  } finally {
    for (const child of children.reverse()) await child.stop()
  }
}

const strategies = (values.strategies ?? "").split(",").filter((s) => s.length > 0)
console.log(
  `balancing quality: 5 servers (one computes 5× slower), ${clients} concurrent clients, ${requests} requests, seed ${values.seed}`
)
console.log(`  work: Compute 1-3 "seconds" = 20-60 ms on a fast server, 100-300 ms on the slow one`)
console.log(
  values.slots === "none"
    ? "  servers compute without limit (sleeps never queue)\n"
    : `  each server computes ${values.slots} at a time, like a ${values.slots}-core machine; the rest queue\n`
)
const results: Array<Result> = []
for (const strategy of strategies) results.push(await run(strategy))
const servers = ["fast1", "fast2", "fast3", "fast4", "slow"]
console.log(
  `  ${"strategy".padEnd(26)} ${"req/s".padStart(7)} ${"p50 ms".padStart(7)} ${"p99 ms".padStart(7)} ${"max ms".padStart(7)}   share ${servers.join(" / ")}`
)
for (const r of results) {
  const total = [...r.share.values()].reduce((a, b) => a + b, 0)
  const shares = servers.map((s) => `${fixed((100 * (r.share.get(s) ?? 0)) / Math.max(total, 1), 0)}%`).join(" / ")
  console.log(
    `  ${r.strategy.padEnd(26)} ${fixed(r.throughput, 0).padStart(7)} ${fixed(r.p50, 1).padStart(7)} ${fixed(r.p99, 1).padStart(7)} ${fixed(r.max, 1).padStart(7)}   ${shares}${r.failed > 0 ? `  (${r.failed} failed)` : ""}`
  )
}
const roundRobin = results.find((r) => r.strategy === "round-robin")
if (roundRobin !== undefined) {
  console.log(`\n  p99 relative to round-robin (aim for the dynamic strategies: <= 0.50):`)
  for (const r of results) console.log(`    ${r.strategy.padEnd(26)} ${fixed(r.p99 / roundRobin.p99)}`)
}
