/** Shared pieces of the benchmark scripts: child processes, timing, and printing figures. */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const here = Path.dirname(fileURLToPath(import.meta.url))
/** bin/effect-lb.js, from dist/bench/ or bench/. */
export const effectLb = Path.resolve(
  here,
  here.includes(`${Path.sep}dist${Path.sep}`) ? "../.." : "..",
  "bin",
  "effect-lb.js"
)

export interface Child {
  readonly port: number
  readonly pid: number
  readonly stop: () => Promise<void>
}

/** Every child a bench started: killed when the bench exits, however it exits (an error, Ctrl-C). */
const children = new Set<ChildProcess.ChildProcess>()
const killAll = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}
process.once("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130))

/** Spawns `command args...` (node by default), killed when the bench exits. */
export const spawnTracked = (
  args: ReadonlyArray<string>,
  options: { readonly command?: string; readonly stdout?: "pipe" | "ignore" } = {}
): ChildProcess.ChildProcess => {
  const child = ChildProcess.spawn(options.command ?? process.execPath, args, {
    stdio: ["ignore", options.stdout ?? "pipe", options.command === undefined ? "inherit" : "ignore"]
  })
  children.add(child)
  child.once("exit", () => children.delete(child))
  child.once("error", () => undefined)
  return child
}

const stopper = (child: ChildProcess.ChildProcess) => () =>
  new Promise<void>((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done()
    child.once("exit", () => done())
    child.kill("SIGKILL")
  })

/**
 * Starts `node args...` and waits until its output has matched each of `patterns` (each with the
 * port as its first group); the ports found, in the order of the patterns.
 */
export const startWaiting = (
  args: ReadonlyArray<string>,
  patterns: ReadonlyArray<RegExp>
): Promise<Child & { readonly ports: ReadonlyArray<number> }> =>
  new Promise((resolve, reject) => {
    const child = spawnTracked(args)
    const stdout = child.stdout
    if (stdout === null) return reject(new Error("no stdout"))
    let out = ""
    const onData = (chunk: Buffer) => {
      out += chunk.toString()
      const ports = patterns.map((pattern) => pattern.exec(out)?.[1])
      if (ports.every((port) => port !== undefined)) {
        stdout.off("data", onData)
        stdout.resume()
        const numbers = ports.map(Number)
        resolve({ port: numbers[0] ?? 0, ports: numbers, pid: child.pid ?? 0, stop: stopper(child) })
      }
    }
    stdout.on("data", onData)
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}: ${out}`)))
  })

/** Starts `node args...` and waits until it prints `listening on host:PORT`. */
export const start = (args: ReadonlyArray<string>): Promise<Child> => startWaiting(args, [/listening on [^\s]*:(\d+)/])

/** CPU seconds (user + system) a process has used so far. */
export const cpuOf = (pid: number): number => {
  const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? []
  return (Number(fields[11]) + Number(fields[12])) / 100
}

const locateLine = JSON.stringify({ _tag: "Locate" }) + "\n"

/** Keep-alive Locates until `until` (ms): each connection sends a Locate, waits for the reply, sends the next. */
export const keepAliveLocates = (port: number, until: number, concurrency = 64): Promise<number> =>
  new Promise((resolve) => {
    let done = 0
    let open = concurrency
    for (let c = 0; c < concurrency; c++) {
      const socket = Net.createConnection({ host: "127.0.0.1", port, noDelay: true })
      let pending = ""
      socket.on("connect", () => socket.write(locateLine))
      socket.on("data", (chunk: Buffer) => {
        pending += chunk.toString()
        let end: number
        while ((end = pending.indexOf("\n")) >= 0) {
          pending = pending.slice(end + 1)
          done++
          if (Date.now() < until) socket.write(locateLine)
          else socket.end()
        }
      })
      socket.on("error", () => undefined)
      socket.on("close", () => {
        if (--open === 0) resolve(done)
      })
    }
  })

export const redisServerPath = process.env["REDIS_SERVER_PATH"] ?? "/usr/bin/redis-server"
export const haveRedis = (): boolean => Fs.existsSync(redisServerPath)

/** A port free on 127.0.0.1 a moment ago (the OS picks it). */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** One PING on a fresh connection: true when PONG comes back within 200 ms. */
const pong = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port })
    let answer = ""
    const finish = (ok: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => finish(false), 200)
    socket.on("error", () => finish(false))
    socket.on("data", (chunk: Buffer) => {
      answer += chunk.toString()
      if (answer.includes("\r\n")) finish(answer.startsWith("+PONG"))
    })
    socket.write("PING\r\n")
  })

/**
 * A `redis-server` on a free loopback port, nothing saved to disk, answering PING (within
 * `deadlineMs`; a port taken between the pick and the start is tried again, three times at most).
 */
export const startRedis = async (deadlineMs = 3000): Promise<Child & { readonly url: string }> => {
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    const child = spawnTracked(args, { command: redisServerPath, stdout: "ignore" })
    const until = Date.now() + deadlineMs
    while (Date.now() < until && child.exitCode === null && child.signalCode === null) {
      if (await pong(port)) return { port, pid: child.pid ?? 0, url: `redis://127.0.0.1:${port}`, stop: stopper(child) }
      await new Promise((wake) => setTimeout(wake, 10))
    }
    await stopper(child)()
  }
  throw new Error(`${redisServerPath} did not answer PING within ${deadlineMs} ms`)
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}

export const fixed = (value: number, digits = 2): string => value.toFixed(digits)

/** What `probe.ts` saw in a measured process between two signals. */
export interface ProbeFigures {
  /** Event-loop delay (`monitorEventLoopDelay`, 1 ms resolution): how late the loop came round. */
  readonly loopP50Ms: number
  readonly loopP99Ms: number
  readonly loopMaxMs: number
  /** Garbage collections: scavenges (and incremental steps), full mark-compacts, and their pauses. */
  readonly minor: number
  readonly major: number
  readonly pausedMs: number
  readonly maxPauseMs: number
}

/**
 * The benchmarks' `--probe` mode: the node flags that load `probe.ts` into a process started
 * after `Probe.make` (it sets the environment variable the preload reads), and one reading of a
 * process at a time: `reset` before a round, `read` after it.
 */
export class Probe {
  private constructor(readonly folder: string) {}

  static make(): Probe {
    const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-probe-"))
    process.env["EFFECT_LB_BENCH_PROBE"] = folder
    process.once("exit", () => Fs.rmSync(folder, { recursive: true, force: true }))
    return new Probe(folder)
  }

  /** Node flags that load the probe (before the script's path). */
  get nodeFlags(): ReadonlyArray<string> {
    return ["--import", Path.join(here, "probe.js")]
  }

  private lines(pid: number): Array<string> {
    try {
      return Fs.readFileSync(Path.join(this.folder, `${pid}.jsonl`), "utf8")
        .split("\n")
        .filter(Boolean)
    } catch {
      return []
    }
  }

  /** Signals the process and waits (up to 2 s) for its figures since the last signal. */
  read(pid: number): ProbeFigures | undefined {
    const before = this.lines(pid).length
    process.kill(pid, "SIGUSR2")
    const until = Date.now() + 2000
    const nap = new Int32Array(new SharedArrayBuffer(4))
    while (Date.now() < until) {
      const lines = this.lines(pid)
      const last = lines[lines.length - 1]
      if (lines.length > before && last !== undefined) return JSON.parse(last) as ProbeFigures
      Atomics.wait(nap, 0, 0, 5)
    }
    return undefined
  }

  /** Starts a fresh count (what came before is read and dropped). */
  reset(pid: number): void {
    this.read(pid)
  }
}
