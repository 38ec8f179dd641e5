/**
 * Deadlines, with real processes on loopback: a download whose server is stopped (SIGSTOP) before it
 * answers or in the middle of the payload completes from another server; a server closes downloads
 * whose peer never reads, and serves others again, while a slow reader that keeps reading is served.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { Locate, Status } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { raw } from "../support/net.js"
import { type Running, spawn } from "../support/process.js"

const listening = /listening on 127\.0\.0\.1:(\d+)/
const size = 64 * 1024 * 1024

/** A served folder with a 64 MB file (larger than any socket buffers) and an empty output folder. */
const workspace = Effect.acquireRelease(
  Effect.sync(() => {
    const base = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-deadlines-"))
    const served = Path.join(base, "served")
    const out = Path.join(base, "out")
    Fs.mkdirSync(served)
    Fs.mkdirSync(out)
    const big = Crypto.randomBytes(size)
    Fs.writeFileSync(Path.join(served, "big.bin"), big)
    return { base, served, out, big }
  }),
  ({ base }) => Effect.sync(() => Fs.rmSync(base, { recursive: true, force: true }))
)

/** SIGSTOPs a process; it is continued when the scope closes, whatever happened (and then killed by `spawn`). */
const stop = (running: Running) =>
  Effect.acquireRelease(
    Effect.sync(() => running.child.kill("SIGSTOP")),
    () => Effect.sync(() => running.child.kill("SIGCONT"))
  )

const askBalancer = (port: number, request: Locate | Status) =>
  ask({ host: "127.0.0.1", port }, request).pipe(Effect.provide(Wire.layer))

/** A balancer and two servers, `a` and `b`, serving `folder`; returns once both are live. */
const cluster = (folder: string) =>
  Effect.gen(function* () {
    const balancer = yield* spawn(["balancer", "--port", "0"])
    const port = Number((yield* balancer.waitFor(listening))[1])
    const servers = new Map<string, Running>()
    yield* Effect.forEach(
      ["a", "b"],
      (id) =>
        Effect.gen(function* () {
          const server = yield* spawn([
            "server",
            "--port",
            "0",
            "--id",
            id,
            "--balancer",
            `127.0.0.1:${port}`,
            "--files",
            folder
          ])
          yield* server.waitFor(listening)
          servers.set(id, server)
        }),
      { concurrency: "unbounded" }
    )
    yield* eventually(
      askBalancer(port, new Status()).pipe(Effect.orElseSucceed(() => undefined)),
      (reply) => reply?._tag === "StatusReport" && reply.servers.filter((s) => s.state === "live").length === 2
    )
    return { port, servers }
  })

/** The id of the one server the balancer has sent a client to. */
const locatedOnce = (port: number) =>
  Effect.flatMap(askBalancer(port, new Status()), (reply) =>
    reply._tag === "StatusReport"
      ? Effect.succeed(reply.servers.filter((s) => s.located > 0).map((s) => s.id))
      : Effect.fail(new Error(`answered ${reply._tag}`))
  )

/** `effect-lb client download big.bin` into `out`, with `options` before the request. */
const download = (port: number, out: string, options: ReadonlyArray<string> = []) =>
  spawn(["client", "--balancer", `127.0.0.1:${port}`, ...options, "download", "big.bin", "--out", out])

/** Polls (every 2 ms) until the client's partial file shows up in `out`. */
const partialAppears = (out: string) =>
  Effect.gen(function* () {
    while (!Fs.readdirSync(out).some((name) => name.endsWith(".part"))) yield* Effect.sleep("2 millis")
  }).pipe(Effect.timeout("10 seconds"))

describe("a download from a stalled server (real processes)", () => {
  it.scopedLive(
    "completes from another server when the one it goes to is stopped before it answers (default deadline)",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const { port, servers } = yield* cluster(space.served)
        // Round-robin: the next Locate goes to the server after the one this one gets.
        const first = yield* askBalancer(port, new Locate({ exclude: [] }))
        const next = first._tag === "Located" && first.server.id === "a" ? "b" : "a"
        const stalled = servers.get(next)
        if (stalled === undefined) return yield* Effect.die("no such server")
        yield* stop(stalled)
        const started = Date.now()
        const client = yield* download(port, space.out)
        const code = yield* client.exited.pipe(Effect.timeout("20 seconds"))
        const took = Date.now() - started
        expect(code).toBe(0)
        expect(client.errors()).toContain(`effect-lb: ${next} (127.0.0.1:`)
        expect(client.output()).toMatch(/saved .*big\.bin \(64 MiB\) from [ab] .*after 2 attempts/)
        expect(Fs.readdirSync(space.out)).toEqual(["big.bin"])
        expect(Fs.readFileSync(Path.join(space.out, "big.bin")).equals(space.big)).toBe(true)
        // The default deadline is 5 s of silence; the rest is the client process starting and the file.
        expect(took).toBeLessThan(15_000)
      }),
    30_000
  )

  it.scopedLive(
    "completes from another server, byte-exact, when the one sending it is stopped mid-payload (--read-timeout 2s)",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const { port, servers } = yield* cluster(space.served)
        const client = yield* download(port, space.out, ["--read-timeout", "2s"])
        // Frozen the moment its bytes start to arrive, the client cannot finish before its server is stopped.
        yield* partialAppears(space.out)
        yield* stop(client)
        const [sending] = yield* locatedOnce(port)
        const stalled = servers.get(sending ?? "")
        if (stalled === undefined) return yield* Effect.die("no server was located")
        const partial = Fs.readdirSync(space.out).find((name) => name.endsWith(".part")) ?? ""
        expect(Fs.statSync(Path.join(space.out, partial)).size).toBeLessThan(size / 2)
        yield* stop(stalled)
        client.child.kill("SIGCONT")
        const continued = Date.now()
        const code = yield* client.exited.pipe(Effect.timeout("15 seconds"))
        expect(code).toBe(0)
        expect(client.errors()).toMatch(
          new RegExp(`effect-lb: ${sending} \\(127\\.0\\.0\\.1:\\d+\\) failed \\(.*2s.*\\)`)
        )
        expect(Fs.readdirSync(space.out)).toEqual(["big.bin"])
        expect(Fs.readFileSync(Path.join(space.out, "big.bin")).equals(space.big)).toBe(true)
        expect(Date.now() - continued).toBeLessThan(8_000)
      }),
    30_000
  )
})

/** `count` connections that each ask for `name` and never read a byte; with a count of those the server closed. */
const nonReaders = (port: number, count: number, name: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      let closed = 0
      let received = 0
      const sockets = Array.from({ length: count }, () => {
        const socket = Net.createConnection({ host: "127.0.0.1", port })
        socket.pause()
        socket.write(JSON.stringify({ _tag: "Download", name }) + "\n")
        socket.on("error", () => undefined)
        socket.on("close", () => closed++)
        return socket
      })
      /** Starts reading at last: what was buffered arrives, then the close (a peer that never reads never sees it). */
      const drain = () =>
        sockets.forEach((socket) => {
          socket.on("data", (chunk: Buffer) => (received += chunk.length))
          socket.resume()
        })
      return { sockets, drain, closed: () => closed, received: () => received }
    }),
    ({ sockets }) => Effect.sync(() => sockets.forEach((socket) => socket.destroy()))
  )

describe("downloads whose peer does not read (real processes)", () => {
  it.scopedLive(
    "20 downloads that never read are closed after the idle timeout, and a new client is served",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const args = [
          "server",
          "--port",
          "0",
          "--files",
          space.served,
          "--max-connections",
          "20",
          "--idle-timeout",
          "2s"
        ]
        const server = yield* spawn(args)
        const port = Number((yield* server.waitFor(listening))[1])
        const readers = yield* nonReaders(port, 20, "big.bin")
        // All 20 hold their slot: another client is turned away.
        yield* eventually(
          Effect.map(raw(port, '{"_tag":"Ping"}\n', { expectLines: 1 }), ({ data }) => data),
          (data) => data.includes("Busy")
        )
        const stalled = Date.now()
        // Closed 2 s (plus at most one sweep) after their last byte moved; then others are served again.
        yield* eventually(
          Effect.map(raw(port, '{"_tag":"Ping"}\n', { expectLines: 1 }), ({ data }) => data),
          (data) => data.includes("Pong"),
          "8 seconds"
        )
        expect(Date.now() - stalled).toBeLessThan(5_000)
        // The server closed them: read now, each gets only what the socket buffers held, then the close.
        readers.drain()
        yield* eventually(
          Effect.sync(() => readers.closed()),
          (n) => n === 20,
          "3 seconds"
        )
        expect(readers.received()).toBeLessThan((20 * size) / 4)
      }),
    30_000
  )

  it.scopedLive(
    "a download read slowly but steadily outlives the idle timeout",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const server = yield* spawn(["server", "--port", "0", "--files", space.served, "--idle-timeout", "2s"])
        const port = Number((yield* server.waitFor(listening))[1])
        const reader = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const socket = Net.createConnection({ host: "127.0.0.1", port })
            let bytes = 0
            let sincePause = 0
            socket.write('{"_tag":"Download","name":"big.bin"}\n')
            // A few MB/s: 256 KiB, then a 50 ms pause. (The server sees progress only as the system's socket
            // buffers drain, a few MB at a time on loopback, so a much slower reader looks stalled for a while.)
            socket.on("data", (chunk: Buffer) => {
              bytes += chunk.length
              sincePause += chunk.length
              if (sincePause < 256 * 1024) return
              sincePause = 0
              socket.pause()
              setTimeout(() => socket.resume(), 50)
            })
            socket.on("error", () => undefined)
            return { socket, bytes: () => bytes }
          }),
          ({ socket }) => Effect.sync(() => socket.destroy())
        )
        yield* Effect.sleep("5 seconds")
        // The server still counts the download's connection (a Ping is not counted): it was not closed.
        const { data } = yield* raw(port, '{"_tag":"Ping"}\n', { expectLines: 1 })
        expect(JSON.parse(data)).toMatchObject({ _tag: "Pong", active: 1 })
        expect(reader.bytes()).toBeLessThan(size)
      }),
    30_000
  )
})
