/**
 * Slow and silent clients against the real processes: 2,000 idle connections (slowloris; fewer when
 * the open-files limit is lower, e.g. 896 under the common 1,024) do not keep others from being
 * served and are closed after the idle timeout; a client that reads a
 * download very slowly does not make the server buffer the file.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { connectionsWithinLimit } from "../support/limits.js"
import { raw } from "../support/net.js"
import { spawn } from "../support/process.js"
import { rssMb } from "../support/rss.js"

const listening = /listening on 127\.0\.0\.1:(\d+)/

/**
 * Opens `count` connections that never send a byte; resolves once all are open, with a count of those
 * closed since. Fails, having closed them, as soon as one cannot be opened or after 10 s: never waits
 * for ever (an acquire cannot be interrupted, so a wait here would hold the test's finalizers).
 */
const idleConnections = (port: number, count: number) =>
  Effect.acquireRelease(
    Effect.async<{ sockets: Array<Net.Socket>; closed: () => number }, Error>((resume) => {
      const sockets: Array<Net.Socket> = []
      let open = 0
      let closed = 0
      let done = false
      const fail = (reason: string) => {
        if (done) return
        done = true
        clearTimeout(timer)
        sockets.forEach((socket) => socket.destroy())
        resume(Effect.fail(new Error(`${open} of ${count} idle connections opened: ${reason}`)))
      }
      const timer = setTimeout(() => fail("not within 10 s"), 10_000)
      for (let i = 0; i < count && !done; i++) {
        const socket = Net.createConnection({ host: "127.0.0.1", port })
        let connected = false
        socket.once("connect", () => {
          connected = true
          if (++open < count || done) return
          done = true
          clearTimeout(timer)
          resume(Effect.succeed({ sockets, closed: () => closed }))
        })
        socket.on("error", (error) => {
          if (!connected) fail(error.message)
        })
        socket.on("close", () => closed++)
        sockets.push(socket)
      }
    }),
    ({ sockets }) => Effect.sync(() => sockets.forEach((socket) => socket.destroy()))
  )

const waitUntil = (check: () => boolean, ms: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + ms
    while (!check() && Date.now() < deadline) yield* Effect.sleep("50 millis")
    return check()
  })

/** 2,000 idle connections, or as many as the open-files limit (of this process and the child) allows. */
const slowlorisConnections = connectionsWithinLimit(2000)

const slowloris = (args: ReadonlyArray<string>, request: string, answer: string) =>
  Effect.gen(function* () {
    const process = yield* spawn([...args, "--port", "0", "--idle-timeout", "2s"])
    const port = Number((yield* process.waitFor(listening))[1])
    const count = slowlorisConnections
    const idle = yield* idleConnections(port, count)
    const asked = Date.now()
    const { data } = yield* raw(port, request + "\n", { expectLines: 1 })
    expect(data).toContain(answer)
    expect(Date.now() - asked).toBeLessThan(2000)
    // Closed after the 2 s idle timeout (plus one sweep), not kept for ever.
    yield* waitUntil(() => idle.closed() === count, 6000)
    expect(idle.closed()).toBe(count)
    expect(process.child.exitCode).toBeNull()
  })

describe("slow and silent clients against the real processes", () => {
  it.scopedLive(
    "the server serves others promptly beside 2,000 idle connections (fewer under a lower open-files limit), and closes them after the idle timeout",
    () => slowloris(["server"], '{"_tag":"Ping"}', "Pong"),
    30_000
  )

  it.scopedLive(
    "the balancer serves others promptly beside 2,000 idle connections (fewer under a lower open-files limit), and closes them after the idle timeout",
    () => slowloris(["balancer"], '{"_tag":"Status"}', "StatusReport"),
    30_000
  )

  it.scopedLive(
    "a client reading a download very slowly does not make the server buffer the file",
    () =>
      Effect.gen(function* () {
        const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-slow-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(folder, { recursive: true, force: true })))
        const size = 128 * 1024 * 1024
        const fd = Fs.openSync(Path.join(folder, "big.bin"), "w")
        const block = Crypto.randomBytes(1024 * 1024)
        for (let i = 0; i < size / block.length; i++) Fs.writeSync(fd, block)
        Fs.closeSync(fd)
        const server = yield* spawn(["server", "--port", "0", "--files", folder])
        const port = Number((yield* server.waitFor(listening))[1])
        const before = rssMb(server.child.pid)
        const received = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const socket = Net.createConnection({ host: "127.0.0.1", port })
            let bytes = 0
            socket.write('{"_tag":"Download","name":"big.bin"}\n')
            // Reads a trickle: 64 KiB every 50 ms (about 1.3 MB/s), paused in between.
            socket.on("data", (chunk: Buffer) => {
              bytes += chunk.length
              socket.pause()
              setTimeout(() => socket.resume(), 50)
            })
            socket.on("error", () => undefined)
            return { socket, bytes: () => bytes }
          }),
          ({ socket }) => Effect.sync(() => socket.destroy())
        )
        yield* Effect.sleep("3 seconds")
        expect(received.bytes()).toBeGreaterThan(0)
        expect(received.bytes()).toBeLessThan(size / 4)
        // The file is 128 MB; the server holds no more than its socket and stream buffers.
        expect(rssMb(server.child.pid) - before).toBeLessThan(32)
      }),
    30_000
  )
})
