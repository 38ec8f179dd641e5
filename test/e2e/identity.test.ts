import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Compute } from "../../src/domain/Protocol.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { listening, locate, statusOf } from "../support/ask.js"
import { spawn } from "../support/process.js"
import { connectTo } from "../support/server.js"

describe("effect-lb: a registration belongs to the process that made it (real processes)", () => {
  it.scopedLive(
    "a rolling restart under the same id: the old process's last load, goodbye and hang-up leave the new one registered",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn(["balancer", "--port", "0", "--probe-interval", "200ms", "--dead-after", "1s"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const address = `127.0.0.1:${port}`
        const old = yield* spawn(["server", "--port", "0", "--id", "s1", "--balancer", address])
        const oldPort = Number((yield* old.waitFor(listening))[1])
        yield* eventually(statusOf(port), (servers) => servers.some((s) => s.port === oldPort && s.state === "live"))

        // The new process comes up under the same id, on another port, while the old one still runs.
        const fresh = yield* spawn(["server", "--port", "0", "--id", "s1", "--balancer", address])
        const freshPort = Number((yield* fresh.waitFor(listening))[1])
        yield* eventually(statusOf(port), (servers) => servers.some((s) => s.port === freshPort))

        // The old one still has a request in flight (a Load goes out as it starts and ends), and is stopped.
        const user = yield* connectTo({ host: "127.0.0.1", port: oldPort })
        const computing = yield* Effect.fork(user.ask(new Compute({ seconds: 1 })))
        yield* Effect.sleep("300 millis")
        old.child.kill("SIGTERM")
        expect(yield* Fiber.join(computing)).toMatchObject({ _tag: "Computed" })
        expect(yield* old.exited).toBe(0)

        // Past the balancer's dead-after, s1 is still the new process, live, and handed to clients.
        yield* Effect.sleep("1500 millis")
        const servers = yield* statusOf(port)
        expect(servers.map(({ id, port, state, active }) => ({ id, port, state, active }))).toEqual([
          { id: "s1", port: freshPort, state: "live", active: 0 }
        ])
        expect(yield* Effect.forEach([1, 2, 3], () => locate(port, true))).toEqual([
          `s1@${freshPort}`,
          `s1@${freshPort}`,
          `s1@${freshPort}`
        ])
        expect(fresh.child.exitCode).toBe(null)
      }).pipe(Effect.provide(Wire.layer)),
    30_000
  )
})
