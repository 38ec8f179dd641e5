/**
 * A Register flood against the real balancer (no token): a peer pipelines 10,500 Registers of
 * distinct addresses where nothing listens, while another client keeps asking Locate. The registry
 * stops at --max-servers (10,000) and answers the rest Busy; Locates keep being answered promptly;
 * memory stays bounded; the process stays up.
 *
 * The bounds: p99 of Locate under 50 ms (a Locate costs microseconds; 50 ms is the budget a
 * client's 2 s Locate timeout leaves forty-fold, and what an operator would still call "flat"), and
 * RSS within 200 MB of where it started (the flood's 10,000 servers at a few KB each, with room for
 * the garbage a burst leaves before it is collected).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import { spawn } from "../support/process.js"
import { rssMb } from "../support/rss.js"

const listening = /balancer listening on 127\.0\.0\.1:(\d+)/
const flood = 10_500
const maxServers = 10_000

/** Ports with no listener on this machine, outside the range the system hands out for port 0. */
const unreachablePorts = (count: number): Array<number> => {
  const [low = 32768, high = 60999] = Fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
    .trim()
    .split(/\s+/)
    .map(Number)
  const listeningPorts = new Set<number>()
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = Fs.existsSync(table) ? Fs.readFileSync(table, "utf8") : ""
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/)
      // State 0A is LISTEN; the local address ends in :PORT (hex).
      if (fields[3] === "0A") listeningPorts.add(parseInt(fields[1]?.split(":").pop() ?? "0", 16))
    }
  }
  const ports: Array<number> = []
  for (let port = 1024; port < 65536 && ports.length < count; port++) {
    if ((port < low || port > high) && !listeningPorts.has(port)) ports.push(port)
  }
  return ports
}

/** A connection that asks Locate every 5 ms, one at a time, and records each answer's latency. */
const locating = (port: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = Net.createConnection({ host: "127.0.0.1", port })
      const latencies: Array<number> = []
      let askedAt = 0
      let buffered = ""
      socket.on("data", (chunk: Buffer) => {
        buffered += chunk.toString()
        while (buffered.includes("\n")) {
          buffered = buffered.slice(buffered.indexOf("\n") + 1)
          latencies.push(performance.now() - askedAt)
          askedAt = 0
        }
      })
      socket.on("error", () => undefined)
      const timer = setInterval(() => {
        if (askedAt !== 0 || socket.connecting) return
        askedAt = performance.now()
        socket.write('{"_tag":"Locate"}\n')
      }, 5)
      /** The answers so far, and the one still awaited counted as its wait so far. */
      const latenciesNow = () => (askedAt === 0 ? latencies : [...latencies, performance.now() - askedAt])
      return { socket, timer, latenciesNow }
    }),
    ({ socket, timer }) =>
      Effect.sync(() => {
        clearInterval(timer)
        socket.destroy()
      })
  )

/** Writes every Register at once and counts the replies by tag. */
const flooding = (port: number, targets: ReadonlyArray<number>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = Net.createConnection({ host: "127.0.0.1", port })
      const replies = new Map<string, number>()
      let buffered = ""
      socket.on("data", (chunk: Buffer) => {
        buffered += chunk.toString()
        let end: number
        while ((end = buffered.indexOf("\n")) >= 0) {
          const tag = /"_tag":"(\w+)"/.exec(buffered.slice(0, end))?.[1] ?? "?"
          replies.set(tag, (replies.get(tag) ?? 0) + 1)
          buffered = buffered.slice(end + 1)
        }
      })
      socket.on("error", () => undefined)
      const lines = targets.map(
        (target, i) =>
          JSON.stringify({
            _tag: "Register",
            server: { id: `flood-${i}`, host: "127.0.0.1", port: target, weight: 1 }
          }) + "\n"
      )
      socket.write(lines.join(""))
      return { socket, replies }
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

const percentile = (values: ReadonlyArray<number>, q: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
}

describe("a Register flood against the real balancer", () => {
  it.scopedLive(
    `${flood.toLocaleString("en")} Registers of unreachable servers: capped with Busy, Locates stay fast, memory stays bounded`,
    () =>
      Effect.gen(function* () {
        const targets = unreachablePorts(flood)
        expect(targets).toHaveLength(flood)
        // One real server-to-be so that Locate has somewhere to send the client: a configured one.
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--max-servers",
          String(maxServers),
          "--server",
          `127.0.0.1:${targets[0] ?? 1024}`
        ])
        const port = Number((yield* balancer.waitFor(listening))[1])
        yield* Effect.sleep("500 millis")
        const before = rssMb(balancer.child.pid)
        const client = yield* locating(port)
        yield* Effect.sleep("300 millis")
        const peer = yield* flooding(port, targets.slice(1, flood))
        let peak = before
        const started = Date.now()
        const answered = () => [...peer.replies.values()].reduce((a, b) => a + b, 0)
        // Until every Register is answered (and 2 s more), at most 25 s (a few on a quiet machine).
        let doneAt: number | undefined
        while (Date.now() - started < 25_000 && (doneAt === undefined || Date.now() - doneAt < 2000)) {
          yield* Effect.sleep("200 millis")
          peak = Math.max(peak, rssMb(balancer.child.pid))
          if (doneAt === undefined && answered() === flood - 1) doneAt = Date.now()
        }
        const latencies = client.latenciesNow()
        const figures = {
          registered: peer.replies.get("Registered") ?? 0,
          busy: peer.replies.get("Busy") ?? 0,
          floodSeconds: ((doneAt ?? Date.now()) - started) / 1000,
          locates: latencies.length,
          p50Ms: Math.round(percentile(latencies, 0.5) * 100) / 100,
          p99Ms: Math.round(percentile(latencies, 0.99) * 100) / 100,
          maxMs: Math.round(Math.max(...latencies) * 100) / 100,
          rssBeforeMb: Math.round(before),
          rssPeakMb: Math.round(peak)
        }
        console.log("register flood:", JSON.stringify(figures))
        // The configured server fills one place: 9,999 Registers fit, the other 501 are refused.
        expect({ registered: figures.registered, busy: figures.busy }).toEqual({
          registered: maxServers - 1,
          busy: flood - maxServers
        })
        expect(balancer.child.exitCode).toBeNull()
        expect(figures.locates).toBeGreaterThan(100)
        expect(figures.p99Ms).toBeLessThan(50)
        expect(figures.rssPeakMb - figures.rssBeforeMb).toBeLessThan(200)
      }),
    40_000
  )
})
