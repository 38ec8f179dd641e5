/**
 * Deadlines, with real processes on loopback: a download whose server is stopped (SIGSTOP) before it
 * answers or in the middle of the payload completes from another server.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Locate, Status } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
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
        expect(client.output()).toMatch(/saved .*big\.bin \(67\.1 MB\) from [ab] .*after 2 attempts/)
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
