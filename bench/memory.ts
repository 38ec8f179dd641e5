/**
 * Memory per idle connection: the resident memory each silent connection adds to effect-lb's
 * balancer (on its balancer port), to its server, and to a plain node:net server holding the same
 * connections (bench/baseline-locate-server.ts, the yardstick), all three in the same run.
 *
 * How: a fresh process takes connections in steps (2,500 at a time up to 15,000); after each step,
 * once it has accepted them all (its open descriptors, /proc/PID/fd) and 0.5 s more, its anonymous
 * resident memory is read (RssAnon in /proc/PID/status: V8's heap and malloc's, not the pages of
 * the node binary it reads in). The figure is the slope of the least-squares line through the
 * steps from 2,500 on, in KB per connection: the first 2,500 warm the process (V8's young
 * generation grows to its working size, code is compiled) and are not a cost per connection. A
 * single before/after difference mostly measured when V8 happened to grow its heap; a line through
 * six steps averages those jumps out. Three rounds, the three processes in turn in each (so load
 * from other work on the machine falls on all three alike): the median slope, with the rounds'
 * min–max and the fit's standard error. The slope is split into malloc's heap ([heap] in
 * /proc/PID/smaps: libuv and node's C++ side of a socket) and the rest (V8's heap, mostly). The
 * processes run as users run them: no extra node flags, no collection forced. The kernel's socket
 * memory is not in RSS and not counted. The balancer port has no connection limit of its own
 * (--max-connections is the proxy's); the server is given --max-connections 100000.
 *
 *   npm run bench:memory [-- --rounds 3 --step 2500 --connections 15000]
 *
 * This process holds the client side of every connection: keep --connections under `ulimit -n`.
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { effectLb, fixed, median, start } from "./support.js"

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    step: { type: "string", default: "2500" },
    connections: { type: "string", default: "15000" }
  }
})
const rounds = Number(values.rounds)
const step = Number(values.step)
const most = Number(values.connections)
if (!(rounds >= 1 && step >= 1 && most >= 3 * step))
  throw new Error("want --rounds >= 1 and --connections >= 3 x --step")

/** Connections opened at once: within plain node's listen backlog (511), so no handshake is dropped. */
const batch = 500
const settleMs = 500
const acceptDeadlineMs = 20_000

const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms))

/** Anonymous resident memory, and the part of it in malloc's heap, in KB. */
interface Reading {
  readonly anonymous: number
  readonly malloc: number
}

const read = (pid: number): Reading => {
  const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const anonymous = Number(/RssAnon:\s+(\d+)/.exec(status)?.[1] ?? 0)
  let malloc = 0
  let inHeap = false
  for (const line of Fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inHeap = line.endsWith("[heap]")
    else if (inHeap && line.startsWith("Rss:")) malloc += Number(/(\d+)/.exec(line)?.[1] ?? 0)
  }
  return { anonymous, malloc }
}

const descriptors = (pid: number) => Fs.readdirSync(`/proc/${pid}/fd`).length

/** Least squares through (x, y): the slope and its standard error. */
const fit = (points: ReadonlyArray<readonly [number, number]>) => {
  const n = points.length
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / n
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / n
  const sxx = points.reduce((sum, [x]) => sum + (x - meanX) ** 2, 0)
  const slope = points.reduce((sum, [x, y]) => sum + (x - meanX) * (y - meanY), 0) / sxx
  const residuals = points.reduce((sum, [x, y]) => sum + (y - meanY - slope * (x - meanX)) ** 2, 0)
  return { slope, error: Math.sqrt(residuals / Math.max(1, n - 2) / sxx) }
}

/** Opens `count` connections to `port`, resolving once all have connected; any error fails it. */
const open = (port: number, count: number, into: Array<Net.Socket>): Promise<void> =>
  new Promise((resolve, reject) => {
    let left = count
    for (let i = 0; i < count; i++) {
      const socket = Net.createConnection({ host: "127.0.0.1", port })
      socket.once("connect", () => {
        if (--left === 0) resolve()
      })
      socket.on("error", (error) => reject(error))
      into.push(socket)
    }
  })

/** Waits until the process holds `count` descriptors (it has accepted every connection). */
const accepted = async (pid: number, count: number) => {
  const until = Date.now() + acceptDeadlineMs
  while (descriptors(pid) < count) {
    if (Date.now() > until)
      throw new Error(`process ${pid} did not accept its connections within ${acceptDeadlineMs} ms`)
    await sleep(20)
  }
}

interface Pass {
  /** KB per connection: of all anonymous memory, of malloc's heap, and the fit's standard error. */
  readonly slope: number
  readonly malloc: number
  readonly error: number
}

/** One fresh process taking connections step by step: its slopes. */
const pass = async (args: ReadonlyArray<string>): Promise<Pass> => {
  const child = await start(args)
  const sockets: Array<Net.Socket> = []
  try {
    await sleep(settleMs)
    const base = descriptors(child.pid)
    const points: Array<readonly [number, Reading]> = []
    for (let count = step; count <= most; count += step) {
      while (sockets.length < count) await open(child.port, Math.min(batch, count - sockets.length), sockets)
      await accepted(child.pid, base + count)
      await sleep(settleMs)
      points.push([count, read(child.pid)])
    }
    const anonymous = fit(points.map(([count, reading]) => [count, reading.anonymous]))
    const malloc = fit(points.map(([count, reading]) => [count, reading.malloc]))
    return { slope: anonymous.slope, malloc: malloc.slope, error: anonymous.error }
  } finally {
    // A reset, not a close: no TIME_WAIT left behind for each of the connections.
    for (const socket of sockets) socket.resetAndDestroy()
    await child.stop()
  }
}

const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-mem-"))
const baselineScript = Path.join(Path.dirname(new URL(import.meta.url).pathname), "baseline-locate-server.js")
const targets = [
  {
    name: "effect-lb balancer",
    aimKb: 3,
    args: [effectLb, "balancer", "--port", "0", "--probe-interval", "1h", "--idle-timeout", "1h"]
  },
  {
    name: "effect-lb server",
    aimKb: 6,
    args: [effectLb, "server", "--port", "0", "--files", folder, "--idle-timeout", "1h", "--max-connections", "100000"]
  },
  { name: "plain node:net", aimKb: undefined, args: [baselineScript] }
] as const

console.log(
  `memory per idle connection: slope of anonymous RSS over ${step}..${most} silent connections ` +
    `(steps of ${step}), ${rounds} rounds`
)
const passes: Array<Array<Pass>> = targets.map(() => [])
try {
  for (let round = 1; round <= rounds; round++) {
    const figures: Array<string> = []
    for (const [index, target] of targets.entries()) {
      const result = await pass(target.args)
      passes[index]?.push(result)
      figures.push(`${target.name} ${fixed(result.slope)}`)
    }
    console.log(`  round ${round}: ${figures.join(", ")} KB per connection`)
  }
} finally {
  Fs.rmSync(folder, { recursive: true, force: true })
}

const summary = passes.map((results) => {
  const slopes = results.map((result) => result.slope)
  return {
    slope: median(slopes),
    low: Math.min(...slopes),
    high: Math.max(...slopes),
    error: median(results.map((result) => result.error)),
    malloc: median(results.map((result) => result.malloc))
  }
})
console.log(`  ${"".padEnd(20)} KB per connection   rounds (min-max)   fit +-   malloc + rest`)
for (const [index, target] of targets.entries()) {
  const figure = summary[index]
  if (figure === undefined) continue
  console.log(
    `  ${target.name.padEnd(20)} ${fixed(figure.slope).padStart(17)}   ${`${fixed(figure.low)}-${fixed(figure.high)}`.padStart(16)}` +
      `   ${fixed(figure.error).padStart(6)}   ${fixed(figure.malloc)} + ${fixed(figure.slope - figure.malloc)}`
  )
}
const plain = summary[targets.length - 1]
for (const [index, target] of targets.entries()) {
  const figure = summary[index]
  if (target.aimKb === undefined || figure === undefined || plain === undefined) continue
  console.log(
    `  ${target.name} <= ${target.aimKb} KB: ${figure.slope <= target.aimKb ? "met" : "not met"} ` +
      `(${fixed(figure.slope)} KB, ${fixed(figure.slope / plain.slope)}x plain node:net's ${fixed(plain.slope)} KB)`
  )
}
