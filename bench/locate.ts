/**
 * Locate requests per second over loopback: effect-lb's balancer against a plain `node:net` server
 * that answers the same reply line, interleaved rounds in one run. Two ways clients use it:
 * many Locates on one connection (64 connections), and one connection per Locate (64 at a time).
 * Also prints each server's CPU time per request, which does not depend on the load generator.
 *
 *   npm run bench:locate [-- --seconds 3 --rounds 3] [-- --access-log]
 *
 * `--access-log` adds a third server to the rounds: the balancer with its access log on, and prints
 * what the log costs (CPU per Locate on / off, and the difference: the cost of a line).
 */
import * as Net from "node:net"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { cpuOf, effectLb, fixed, keepAliveLocates, median, start } from "./support.js"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
    "access-log": { type: "boolean", default: false }
  }
})
const seconds = Number(values.seconds)
const rounds = Number(values.rounds)
const concurrency = 64
const request = JSON.stringify({ _tag: "Locate" }) + "\n"

/** Keep-alive: each connection sends a Locate, waits for the reply, sends the next. */
const persistent = (port: number, until: number): Promise<number> => keepAliveLocates(port, until, concurrency)

/** Connection per request: connect, Locate, read the reply, close; `concurrency` at a time. */
const perConnection = (port: number, until: number): Promise<number> =>
  new Promise((resolve) => {
    let done = 0
    let running = 0
    const one = () => {
      if (Date.now() >= until) {
        if (running === 0) resolve(done)
        return
      }
      running++
      const socket = Net.createConnection({ host: "127.0.0.1", port, noDelay: true })
      socket.on("connect", () => socket.write(request))
      socket.once("data", () => {
        done++
        socket.end()
      })
      socket.on("error", () => undefined)
      socket.on("close", () => {
        running--
        one()
      })
    }
    for (let c = 0; c < concurrency; c++) one()
  })

const servers = Array.from({ length: 10 }, (_, i) => ["--server", `127.0.0.1:${20_000 + i}`]).flat()
const balancer = (extra: ReadonlyArray<string>) =>
  start([effectLb, "balancer", "--port", "0", "--dead-after", "1h", "--probe-interval", "1h", ...servers, ...extra])
const baselineScript = Path.join(Path.dirname(new URL(import.meta.url).pathname), "baseline-locate-server.js")
// With --access-log, a second balancer with its access log on runs in the same rounds, side by side.
const children = {
  lb: await balancer([]),
  ...(values["access-log"] ? { "lb+log": await balancer(["--access-log"]) } : {}),
  node: await start([baselineScript])
}
type Who = keyof typeof children
const everyone = Object.keys(children) as Array<Who>
const label: Record<Who, string> = {
  lb: "effect-lb balancer  ",
  "lb+log": "  with --access-log ",
  node: "plain node:net      "
}

type Mode = "keep-alive" | "connection per Locate"

const verdict = (met: boolean) => (met ? "met" : "not met")

/**
 * Each figure against plain node:net, with its aim: kept alive, the rate (>= 0.95); a connection per
 * Locate, the CPU each Locate costs (<= 1.15x: per connection, the rate mostly measures the client).
 */
const printAims = (mode: Mode, rate: Partial<Record<Who, Array<number>>>, cpu: Partial<Record<Who, Array<number>>>) => {
  const rateRatio = median(rate.lb ?? []) / median(rate.node ?? [])
  const cpuRatio = median(cpu.lb ?? []) / median(cpu.node ?? [])
  const rateAim = mode === "keep-alive" ? ` aim >= 0.95: ${verdict(rateRatio >= 0.95)}` : ""
  const cpuAim = mode === "keep-alive" ? "" : ` aim <= 1.15: ${verdict(cpuRatio <= 1.15)}`
  console.log(`    effect-lb / node:net rate          = ${fixed(rateRatio)}${rateAim}`)
  console.log(`    effect-lb / node:net CPU per Locate = ${fixed(cpuRatio)}${cpuAim}`)
}
const modes: Record<Mode, (port: number, until: number) => Promise<number>> = {
  "keep-alive": persistent,
  "connection per Locate": perConnection
}
try {
  console.log(`Locate over loopback, ${concurrency} concurrent clients, ${rounds} interleaved rounds of ${seconds} s`)
  for (const [mode, run] of Object.entries(modes) as Array<[Mode, typeof persistent]>) {
    for (const who of everyone) await run(children[who]?.port ?? 0, Date.now() + 500) // warm-up
    const rate: Partial<Record<Who, Array<number>>> = {}
    const cpu: Partial<Record<Who, Array<number>>> = {}
    for (let round = 0; round < rounds; round++) {
      for (const who of everyone) {
        const child = children[who]
        if (child === undefined) continue
        const cpuBefore = cpuOf(child.pid)
        const started = Date.now()
        const count = await run(child.port, started + seconds * 1000)
        const elapsed = (Date.now() - started) / 1000
        ;(rate[who] ??= []).push(count / elapsed)
        ;(cpu[who] ??= []).push(((cpuOf(child.pid) - cpuBefore) / count) * 1e6)
      }
    }
    console.log(`  ${mode}:`)
    for (const who of everyone) {
      console.log(
        `    ${label[who]} ${fixed(median(rate[who] ?? []), 0).padStart(7)} Locates/s   ${fixed(median(cpu[who] ?? []), 1)} µs CPU each`
      )
    }
    printAims(mode, rate, cpu)
    if (cpu["lb+log"] !== undefined) {
      const on = median(cpu["lb+log"])
      const off = median(cpu.lb ?? [])
      console.log(
        `    access log on / off = ${fixed(on / off)}x the CPU each, +${fixed(on - off, 1)} µs a line  (aim <= 1.7x, ~5 µs)`
      )
    }
  }
} finally {
  for (const who of everyone) await children[who]?.stop()
}
