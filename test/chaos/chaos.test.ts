/**
 * Chaos, with real processes on loopback: servers killed (SIGKILL and SIGTERM) and restarted under
 * load, the balancer killed and restarted, a server that stalls. Every request must complete, and
 * every download must be exact.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { eventually } from "../support/eventually.js"
import { clientFor, listening, liveServers, startServer, workspace } from "../support/load.js"
import { type Running, spawn } from "../support/process.js"

describe("chaos", () => {
  it.scopedLive(
    "500 requests from 20 clients complete, downloads exact, while servers are killed and restarted down to one",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const balancer = yield* spawn(["balancer", "--port", "0", "--probe-interval", "100ms", "--dead-after", "600ms"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const servers = new Map<string, { process: Running; port: number }>()
        for (const id of ["s1", "s2", "s3", "s4", "s5"]) servers.set(id, yield* startServer(id, 0, port, space.served))
        yield* eventually(liveServers(port), (n) => n === 5)
        const client = yield* clientFor(port)

        // The killer: SIGKILL and SIGTERM in turn, one server brought back, until only s5 is left.
        const script: ReadonlyArray<[string, "SIGKILL" | "SIGTERM" | "restart"]> = [
          ["s1", "SIGKILL"],
          ["s2", "SIGTERM"],
          ["s1", "restart"],
          ["s3", "SIGKILL"],
          ["s1", "SIGTERM"],
          ["s4", "SIGKILL"]
        ]
        // Paced by the load, not by a clock, so that on any machine every step lands among requests
        // under way: step k waits until the middle of batch k has completed, and batch k + 1 waits
        // for step k (a killed server's process gone). The last batch runs with s5 alone.
        const batch = Math.floor(500 / (script.length + 1))
        const steps = yield* Effect.forEach(script, ([id, what]) =>
          Effect.map(Deferred.make<void>(), (done) => ({ id, what, done }))
        )
        let completed = 0
        const reached = (count: number) =>
          Effect.gen(function* () {
            while (completed < count) yield* Effect.sleep("5 millis")
          })
        const killer = yield* Effect.forkScoped(
          Effect.forEach(steps, ({ id, what, done }, k) =>
            Effect.gen(function* () {
              yield* reached(k * batch + batch / 2)
              const server = servers.get(id)
              if (server === undefined) return yield* Effect.dieMessage(`no server ${id}`)
              if (what === "restart") servers.set(id, yield* startServer(id, server.port, port, space.served))
              else {
                server.process.child.kill(what)
                yield* server.process.exited
              }
              yield* Deferred.succeed(done, undefined)
            })
          )
        )
        const stepsBefore = (n: number) => steps[Math.min(Math.floor(n / batch), steps.length) - 1]?.done

        const outs = Array.from({ length: 20 }, (_, w) => {
          const out = Path.join(space.base, `out${w}`)
          Fs.mkdirSync(out)
          return out
        })
        let next = 0
        let rerouted = 0
        const lastBatch: Array<string> = []
        const worker = (w: number) =>
          Effect.gen(function* () {
            while (next < 500) {
              const n = next++
              const gate = stepsBefore(n)
              if (gate !== undefined) yield* Deferred.await(gate)
              const out = outs[w] ?? space.base
              const served =
                n % 3 === 0
                  ? yield* Effect.tap(client.download("data.bin", out, undefined, { overwrite: true }), (saved) =>
                      expect(Fs.readFileSync(saved.value.path).equals(space.data)).toBe(true)
                    )
                  : n % 3 === 1
                    ? yield* Effect.tap(client.list(), (list) => expect(list.value).toHaveProperty("notes.txt"))
                    : yield* Effect.tap(client.compute(1), (computed) => expect(computed.value).toBe(1))
              if (served.attempts > 1) rerouted++
              if (n >= steps.length * batch) lastBatch.push(served.server.id)
              completed++
            }
          })
        yield* Effect.forEach(
          Array.from({ length: 20 }, (_, w) => w),
          worker,
          { concurrency: "unbounded" }
        )
        yield* Fiber.join(killer)
        // The kills hit requests under way: some had to go elsewhere.
        expect(rerouted).toBeGreaterThan(0)
        // Down to one: whatever was asked after the last step, s5 answered.
        expect(new Set(lastBatch)).toEqual(new Set(["s5"]))
        yield* eventually(liveServers(port), (n) => n === 1)
      }),
    60_000
  )

  it.scopedLive(
    "when the balancer is killed and restarted, servers register again and retrying clients complete",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const first = yield* spawn(["balancer", "--port", "0", "--probe-interval", "200ms"])
        const port = Number((yield* first.waitFor(listening))[1])
        for (const id of ["a", "b"]) yield* startServer(id, 0, port, space.served)
        yield* eventually(liveServers(port), (n) => n === 2)
        first.child.kill("SIGKILL")
        yield* first.exited
        const client = yield* clientFor(port, { backoff: "100 millis" })
        // Clients start while there is no balancer at all...
        const requests = yield* Effect.forkScoped(
          Effect.forEach(Array.from({ length: 10 }), () => client.list(), { concurrency: "unbounded" })
        )
        yield* Effect.sleep("700 millis")
        // Still under way: no request has given up.
        expect(Option.isNone(yield* Fiber.poll(requests))).toBe(true)
        // ...and finish once a new one is up and the servers have found it by themselves.
        const second = yield* spawn(["balancer", "--port", String(port), "--probe-interval", "200ms"])
        yield* second.waitFor(listening)
        const answers = yield* Fiber.join(requests)
        for (const answer of answers) {
          expect(["a", "b"]).toContain(answer.server.id)
          // The first attempt found no balancer: each answer came from trying again.
          expect(answer.attempts).toBeGreaterThan(1)
        }
        yield* eventually(liveServers(port), (n) => n === 2)
      }),
    60_000
  )

  it.scopedLive(
    "a server that stalls (accepts, never answers) is ejected, and no client waits past its timeout",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const balancer = yield* spawn(["balancer", "--port", "0", "--probe-interval", "100ms", "--dead-after", "1s"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const stalled = yield* startServer("stalled", 0, port, space.served)
        yield* startServer("healthy", 0, port, space.served)
        yield* eventually(liveServers(port), (n) => n === 2)
        // SIGSTOP: the kernel still completes connections, but nobody ever answers them.
        stalled.process.child.kill("SIGSTOP")
        yield* Effect.addFinalizer(() => Effect.sync(() => stalled.process.child.kill("SIGCONT")))
        const client = yield* clientFor(port, { replyTimeout: "1 second", connectTimeout: "500 millis" })
        const timings = yield* Effect.forEach(
          Array.from({ length: 20 }),
          () =>
            Effect.gen(function* () {
              const started = Date.now()
              const answer = yield* client.list()
              return { ms: Date.now() - started, server: answer.server.id }
            }),
          { concurrency: 10 }
        )
        for (const { ms, server } of timings) {
          expect(server).toBe("healthy")
          // At most one timed-out attempt on the stalled server, then an answer elsewhere.
          expect(ms).toBeLessThan(3000)
        }
        yield* eventually(liveServers(port), (n) => n === 1)
      }),
    60_000
  )
})
