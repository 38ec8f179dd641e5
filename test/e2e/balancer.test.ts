import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { listening, locate, statusOf } from "../support/ask.js"
import { spawn } from "../support/process.js"

describe("effect-lb balancer with real servers (processes)", () => {
  it.scopedLive(
    "servers register, a killed one leaves the rotation, a restarted one comes back, a stopped one leaves at once",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn(["balancer", "--port", "0", "--probe-interval", "200ms", "--dead-after", "1s"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const address = `127.0.0.1:${port}`
        const one = yield* spawn(["server", "--port", "0", "--id", "one", "--balancer", address])
        const onePort = (yield* one.waitFor(listening))[1] ?? ""
        const two = yield* spawn(["server", "--port", "0", "--id", "two", "--balancer", address])
        yield* two.waitFor(listening)
        yield* eventually(statusOf(port), (servers) => servers.filter((s) => s.state === "live").length === 2)
        const picks = yield* Effect.forEach([1, 2, 3, 4], () => locate(port))
        expect(new Set(picks)).toEqual(new Set(["one", "two"]))

        // SIGKILL: no goodbye; the health monitor finds out within dead-after.
        one.child.kill("SIGKILL")
        yield* eventually(statusOf(port), (servers) => servers.find((s) => s.id === "one")?.state === "dead")
        expect(yield* Effect.forEach([1, 2, 3], () => locate(port))).toEqual(["two", "two", "two"])

        // Restarted on its port, it registers again and is handed out again.
        const again = yield* spawn(["server", "--port", onePort, "--id", "one", "--balancer", address])
        yield* again.waitFor(listening)
        yield* eventually(statusOf(port), (servers) => servers.find((s) => s.id === "one")?.state === "live")
        expect(new Set(yield* Effect.forEach([1, 2, 3, 4], () => locate(port)))).toEqual(new Set(["one", "two"]))

        // SIGTERM: it deregisters, so it is gone well before dead-after would notice.
        two.child.kill("SIGTERM")
        expect(yield* two.exited).toBe(0)
        const servers = yield* statusOf(port)
        expect(servers.map((s) => s.id)).toEqual(["one"])
      }).pipe(Effect.provide(Wire.layer)),
    30_000
  )

  it.scopedLive(
    "status and strategy work from the command line, with a token",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--token",
          "t0k",
          "--server",
          "127.0.0.1:1:3",
          "--strategy",
          "weighted-round-robin"
        ])
        const port = (yield* balancer.waitFor(listening))[1] ?? ""
        const status = yield* spawn(["status", "--balancer", `127.0.0.1:${port}`])
        expect(yield* status.exited).toBe(0)
        expect(status.output()).toContain("strategy: weighted-round-robin")
        expect(status.output()).toMatch(/127\.0\.0\.1:1\s+127\.0\.0\.1:1\s+3\s+dead \(never answered\)\s+-/)
        const refused = yield* spawn(["strategy", "round-robin", "--balancer", `127.0.0.1:${port}`])
        expect(yield* refused.exited).toBe(1)
        expect(refused.errors()).toContain("Unauthorized")
        const set = yield* spawn([
          "strategy",
          "round-robin",
          "--balancer",
          `127.0.0.1:${port}`,
          "--token",
          "t0k",
          "--json"
        ])
        expect(yield* set.exited).toBe(0)
        expect(JSON.parse(set.output())).toEqual({ _tag: "StrategySet", strategy: "round-robin" })
        const unreachable = yield* spawn(["status", "--balancer", "127.0.0.1:1"])
        expect(yield* unreachable.exited).toBe(1)
        expect(unreachable.errors().trim()).toBe("effect-lb: cannot connect to 127.0.0.1:1: ECONNREFUSED")
      }),
    30_000
  )
})
