/**
 * The shared registry's cost and speed, against a `redis-server` of its own (Debian's, on a free
 * loopback port, nothing saved), with balancer processes of the built command line.
 *
 * 1. Keep-alive Locates (64 connections) on a balancer with `--registry` while 1,000 remote changes a
 *    second arrive (weights written through the store's own write path by a change generator in its
 *    own process, `registry-changes.ts`), against the same balancer without `--registry`, in
 *    interleaved rounds. In the in-memory rounds the same generator writes to another namespace,
 *    which another balancer applies, so the machine is as busy. The measured balancer's
 *    `effect_lb_registry_revision` (its /metrics) says the changes arrived.
 * 2. Propagation across three balancers: weights PATCHed through one; the other two are polled
 *    (keep-alive, every ~1 ms) until each shows the new weight. Times run from sending the PATCH.
 *
 *   npm run bench:registry [-- --seconds 2 --rounds 7 --rate 1000 --changes 300]
 *
 * Without `redis-server` (or REDIS_SERVER_PATH) it says so in one line and exits 0.
 */
import * as Http from "node:http"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import {
  type Child,
  cpuOf,
  effectLb,
  fixed,
  haveRedis,
  keepAliveLocates,
  median,
  redisServerPath,
  spawnTracked,
  startRedis,
  startWaiting
} from "./support.js"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "2" },
    rounds: { type: "string", default: "7" },
    rate: { type: "string", default: "1000" },
    changes: { type: "string", default: "300" }
  }
})
const seconds = Number(values.seconds)
const rounds = Number(values.rounds)
const rate = Number(values.rate)
const changes = Number(values.changes)

if (!haveRedis()) {
  console.log(`registry bench skipped: no redis-server at ${redisServerPath} (set REDIS_SERVER_PATH)`)
  process.exit(0)
}

const servers = [0, 1, 2].map((i) => `127.0.0.1:${20_000 + i}`)
const generatorScript = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "registry-changes.js")
const agent = new Http.Agent({ keepAlive: true, maxSockets: 4 })

type Balancer = Child & { readonly admin: number }
const balancer = async (extra: ReadonlyArray<string>): Promise<Balancer> => {
  const child = await startWaiting(
    [
      effectLb,
      "balancer",
      "--port",
      "0",
      "--admin-port",
      "0",
      "--dead-after",
      "1h",
      "--probe-interval",
      "1h",
      "--strategy",
      "round-robin",
      ...servers.flatMap((server) => ["--server", server]),
      ...extra
    ],
    [/balancer listening on 127\.0\.0\.1:(\d+)/, /admin and dashboard on http:\/\/127\.0\.0\.1:(\d+)\//]
  )
  return { ...child, admin: child.ports[1] ?? 0 }
}
const shared = (url: string, namespace: string) => ["--registry", url, "--registry-namespace", namespace]

/** One admin API request (keep-alive, 2 s at most): its status and body. */
const call = (port: number, method: string, path: string, body?: string) =>
  new Promise<{ readonly status: number; readonly body: string }>((resolve, reject) => {
    const request = Http.request(
      { host: "127.0.0.1", port, method, path, agent, timeout: 2000, headers: { "content-type": "application/json" } },
      (response) => {
        let text = ""
        response.on("data", (chunk: Buffer) => (text += chunk.toString()))
        response.once("end", () => resolve({ status: response.statusCode ?? 0, body: text }))
      }
    )
    request.once("timeout", () => request.destroy(new Error(`${method} ${path}: no answer within 2 s`)))
    request.once("error", reject)
    request.end(body)
  })

/** The balancer's `effect_lb_registry_revision`, from its /metrics. */
const revisionOf = async (admin: number) => {
  const { body } = await call(admin, "GET", "/metrics")
  return Number(/^effect_lb_registry_revision(?:\{[^}]*\})? (\S+)$/m.exec(body)?.[1] ?? NaN)
}

/** Starts the change generator on `namespace`, for `forSeconds`; resolves when it has begun. */
const startChanges = (url: string, namespace: string, forSeconds: number) =>
  new Promise<{ readonly done: Promise<string> }>((resolve, reject) => {
    const args = ["--registry", url, "--namespace", namespace, "--servers", servers.join(","), "--rate", String(rate)]
    const child = spawnTracked([generatorScript, ...args, "--seconds", String(forSeconds)])
    let out = ""
    const done = new Promise<string>((finished) =>
      child.once("exit", () => finished(/done (.*)/.exec(out)?.[1] ?? `exited early: ${out}`))
    )
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes("changing")) resolve({ done })
    })
    child.once("exit", (code) => reject(new Error(`the change generator exited with ${code}: ${out}`)))
  })

/** Figure 1: keep-alive Locates, in memory and with --registry under remote changes, interleaved. */
const locateUnderChanges = async (
  measured: Record<Mode, Balancer>,
  elsewhere: Balancer,
  url: string,
  namespaces: Record<Mode, string>
) => {
  console.log(
    `Keep-alive Locate (64 connections), ${servers.length} servers, round-robin; ${rate} weight changes/s written to the shared registry by another process; ${rounds} interleaved rounds of ${seconds} s`
  )
  // Warm-up, 2 s each, as bench:locate: V8 compiles the balancer's hot path over the first seconds.
  for (const mode of modes) await keepAliveLocates(measured[mode].port, Date.now() + 2000)
  const rates: Record<Mode, Array<number>> = { memory: [], registry: [] }
  const cpu: Record<Mode, Array<number>> = { memory: [], registry: [] }
  const applied: Array<number> = []
  const cpuPerChange: Array<number> = []
  for (let round = 1; round <= rounds; round++) {
    for (const mode of modes) {
      const target = measured[mode]
      const generator = await startChanges(url, namespaces[mode], seconds + 0.5)
      // In the in-memory rounds, the balancer applying the changes has no other work: its CPU per change.
      const applier = mode === "registry" ? target : elsewhere
      const revisionBefore = await revisionOf(applier.admin)
      const cpuBefore = cpuOf(target.pid)
      const applierCpuBefore = cpuOf(applier.pid)
      const started = Date.now()
      const count = await keepAliveLocates(target.port, started + seconds * 1000)
      const elapsed = (Date.now() - started) / 1000
      const cpuEach = ((cpuOf(target.pid) - cpuBefore) / count) * 1e6
      const applierCpu = cpuOf(applier.pid) - applierCpuBefore
      const revisions = ((await revisionOf(applier.admin)) - revisionBefore) / elapsed
      if (mode === "memory") cpuPerChange.push((applierCpu / (revisions * elapsed)) * 1e6)
      const generated = await generator.done
      rates[mode].push(count / elapsed)
      cpu[mode].push(cpuEach)
      if (mode === "registry") applied.push(revisions)
      console.log(
        `  round ${round} ${label[mode]} ${fixed(count / elapsed, 0).padStart(7)} Locates/s  ${fixed(cpuEach, 1)} µs CPU each` +
          `  ${mode === "registry" ? "applied here" : "applied elsewhere"} ${fixed(revisions, 0)}/s` +
          `  (generator: sent ok failed s = ${generated})`
      )
    }
  }
  const ratio = median(rates.registry) / median(rates.memory)
  const paired = rates.registry.map((rate, i) => rate / (rates.memory[i] ?? NaN))
  for (const mode of modes)
    console.log(
      `  median ${label[mode]} ${fixed(median(rates[mode]), 0).padStart(7)} Locates/s  ${fixed(median(cpu[mode]), 1)} µs CPU each`
    )
  console.log(`  remote changes applied by the --registry balancer: median ${fixed(median(applied), 0)}/s`)
  console.log(
    `  CPU of a balancer per remote change applied (with no Locates to answer): median ${fixed(median(cpuPerChange), 0)} µs`
  )
  console.log(
    `  ratio --registry / in-memory = ${fixed(ratio)}x (median of each round's pair: ${fixed(median(paired))}x)  aim >= 0.95x: ${ratio >= 0.95 ? "met" : "not met"}`
  )
}

const modes = ["memory", "registry"] as const
type Mode = (typeof modes)[number]
const label: Record<Mode, string> = { memory: "in-memory ", registry: "--registry" }

/** Polls `admin` (every ~1 ms) until server `id` has `weight`: ms since `since`, or undefined after 2 s. */
const seen = async (admin: number, id: string, weight: number, since: number) => {
  while (performance.now() - since < 2000) {
    const { body } = await call(admin, "GET", `/api/servers/${encodeURIComponent(id)}`)
    if ((JSON.parse(body) as { weight?: number }).weight === weight) return performance.now() - since
    await new Promise((wake) => setTimeout(wake, 1))
  }
  return undefined
}

/** The `q` quantile of sorted values (nearest rank). */
const quantile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN

/** Figure 2: each change PATCHed through `writer`, timed until each of `readers` shows it. */
const propagation = async (writer: Balancer, readers: ReadonlyArray<Balancer>) => {
  const times: Array<number> = []
  const patches: Array<number> = []
  let missed = 0
  const weights = new Map(servers.map((id): [string, number] => [id, 1]))
  const warmUp = 20
  for (let k = 0; k < warmUp + changes; k++) {
    const id = servers[k % servers.length] ?? ""
    const weight = ((weights.get(id) ?? 1) % 100) + 1
    weights.set(id, weight)
    const since = performance.now()
    const [patched, ...arrivals] = await Promise.all([
      call(writer.admin, "PATCH", `/api/servers/${encodeURIComponent(id)}`, JSON.stringify({ weight })).then(
        ({ status }) => (status === 200 ? performance.now() - since : undefined)
      ),
      ...readers.map((reader) => seen(reader.admin, id, weight, since))
    ])
    if (k < warmUp) continue
    if (patched !== undefined) patches.push(patched)
    for (const arrival of arrivals)
      if (arrival === undefined) missed++
      else times.push(arrival)
  }
  const sorted = [...times].sort((a, b) => a - b)
  const p99 = missed > 0 ? Infinity : quantile(sorted, 0.99)
  console.log(
    `Propagation across 3 balancers: ${changes} weight changes PATCHed through one, the other two polled every ~1 ms`
  )
  console.log(
    `  from sending the PATCH until each other balancer shows it (${times.length} arrivals, ${missed} not within 2 s):`
  )
  console.log(
    `  p50 ${fixed(quantile(sorted, 0.5))} ms  p99 ${fixed(quantile(sorted, 0.99))} ms  max ${fixed(sorted.at(-1) ?? NaN)} ms  (the PATCH's own answer: p50 ${fixed(median(patches))} ms)`
  )
  console.log(`  aim p99 <= 50 ms: ${p99 <= 50 ? "met" : "not met"}`)
}

const everyone: Array<Child> = []
try {
  const redis = await startRedis()
  everyone.push(redis)
  const started = await Promise.all([
    balancer([]),
    balancer(shared(redis.url, "bench")),
    balancer(shared(redis.url, "bench-elsewhere")),
    balancer(shared(redis.url, "bench-propagation")),
    balancer(shared(redis.url, "bench-propagation")),
    balancer(shared(redis.url, "bench-propagation"))
  ])
  everyone.push(...started)
  const [memory, registry, elsewhere, first, second, third] = started
  if (!memory || !registry || !elsewhere || !first || !second || !third) throw new Error("not started")
  // The in-memory rounds get the same changes, on a namespace another balancer (not the measured one) applies.
  await locateUnderChanges({ memory, registry }, elsewhere, redis.url, { memory: "bench-elsewhere", registry: "bench" })
  await propagation(first, [second, third])
} finally {
  agent.destroy()
  for (const child of everyone.reverse()) await child.stop()
}
