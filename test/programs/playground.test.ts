import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { askSettings, weightsFor } from "../../src/programs/playground.js"
import type { StrategyName } from "../../src/services/balancer/strategies/Catalog.js"
import { eventually } from "../support/eventually.js"
import { refused } from "../support/net.js"
import { spawn } from "../support/process.js"
import { haveRedis, redisServerPath, redisSkipReason } from "../support/redis.js"
import * as TestTerminal from "../support/terminal.js"
import { backspace, down, enter, type } from "../support/terminal.js"

if (!haveRedis) console.warn(redisSkipReason)

const files = Layer.merge(NodeFileSystem.layer, NodePath.layer)
const none = { servers: Option.none<number>(), strategy: Option.none<StrategyName>() }

describe("the playground's questions", () => {
  it.effect("re-asks the number of servers until it is 1 to 50, then offers the strategies", () =>
    Effect.gen(function* () {
      const shown: Array<string> = []
      const keys = [
        ...[...type("0"), enter, backspace],
        ...[...type("51"), enter, backspace, backspace],
        ...[...type("abc"), ...type("3"), enter],
        ...[down, enter]
      ]
      const settings = yield* askSettings(none, true).pipe(
        Effect.provide(Layer.merge(files, TestTerminal.layer(keys, shown)))
      )
      expect(settings).toEqual({ servers: 3, strategy: "weighted-round-robin" })
      const text = TestTerminal.plain(shown)
      expect(text).toContain("0 must be greater than or equal to 1")
      expect(text).toContain("51 must be less than or equal to 50")
    })
  )

  it.effect("asks nothing the flags already say, and takes defaults without a terminal", () =>
    Effect.gen(function* () {
      const given = yield* askSettings(
        { servers: Option.some(7), strategy: Option.some<StrategyName>("round-robin") },
        true
      ).pipe(Effect.provide(Layer.merge(files, TestTerminal.layer([], []))))
      expect(given).toEqual({ servers: 7, strategy: "round-robin" })
      const defaults = yield* askSettings(none, false).pipe(
        Effect.provide(Layer.merge(files, TestTerminal.layer([], [])))
      )
      expect(defaults).toEqual({ servers: 3, strategy: "round-robin" })
    })
  )

  it("states sensible weights: equal, or 1, 2, 3 over and over for weighted strategies", () => {
    expect(weightsFor({ servers: 4, strategy: "round-robin" }, Option.none())).toEqual([1, 1, 1, 1])
    expect(weightsFor({ servers: 5, strategy: "weighted-round-robin" }, Option.none())).toEqual([1, 2, 3, 1, 2])
    expect(weightsFor({ servers: 3, strategy: "round-robin" }, Option.some([5, 1]))).toEqual([5, 1, 5])
  })
})

describe("effect-lb playground (the real process)", () => {
  it.scopedLive(
    "answers on its ports, serves clients from other terminals, and stops cleanly on SIGINT",
    () =>
      Effect.gen(function* () {
        const playground = yield* spawn(["playground", "--servers", "3", "--strategy", "round-robin", "--port", "0"])
        yield* playground.waitFor(/serving until Ctrl-C/)
        const balancerPort = Number(/balancer\s+127\.0\.0\.1:(\d+)/.exec(playground.output())?.[1])
        const serverPorts = [...playground.output().matchAll(/server\s+127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]))
        expect(serverPorts).toHaveLength(3)
        const status = yield* spawn(["status", "--balancer", `127.0.0.1:${balancerPort}`, "--json"])
        expect(yield* status.exited).toBe(0)
        const report = JSON.parse(status.output()) as { servers: Array<{ id: string; state: string }> }
        expect(report.servers.map((s) => `${s.id}:${s.state}`).sort()).toEqual(["s1:live", "s2:live", "s3:live"])
        const client = yield* spawn(["client", "--balancer", `127.0.0.1:${balancerPort}`, "list"])
        expect(yield* client.exited).toBe(0)
        expect(client.output()).toMatch(/whoami\.txt\ttxt/)

        // The dashboard's address is printed; its API sees the same servers. A dashboard left
        // open (an event stream that never ends by itself) must not hold up the exit.
        const dashboard = /dashboard\s+(http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(playground.output())
        const adminPort = Number(dashboard?.[2])
        const servers = yield* Effect.promise(() =>
          fetch(`${dashboard?.[1] ?? ""}api/servers`).then((r) => r.json() as Promise<Array<{ id: string }>>)
        )
        expect(servers.map((s) => s.id).sort()).toEqual(["s1", "s2", "s3"])
        // The background clients keep the servers busy with no one at the keyboard: every server is picked.
        const picked = Effect.promise(() =>
          fetch(`${dashboard?.[1] ?? ""}api/servers`).then((r) => r.json() as Promise<Array<{ located: number }>>)
        )
        yield* eventually(picked, (all) => all.every((server) => server.located >= 3), "5 seconds")
        const watching = new AbortController()
        yield* Effect.addFinalizer(() => Effect.sync(() => watching.abort()))
        const events = yield* Effect.promise(() =>
          fetch(`${dashboard?.[1] ?? ""}api/events`, { signal: watching.signal })
        )
        expect(events.status).toBe(200)

        const stopping = Date.now()
        playground.child.kill("SIGINT")
        expect(yield* playground.exited).toBe(0)
        expect(Date.now() - stopping).toBeLessThan(5000)
        for (const port of [balancerPort, adminPort, ...serverPorts]) expect(yield* refused(port)).toBe(true)
      }),
    30_000
  )

  it.scopedLive(
    "runs scripted traffic with --demo and prints what each server got",
    () =>
      Effect.gen(function* () {
        const playground = yield* spawn([
          "playground",
          "--servers",
          "3",
          "--strategy",
          "weighted-round-robin",
          "--demo",
          "30",
          "--port",
          "0"
        ])
        expect(yield* playground.exited).toBe(0)
        const output = playground.output()
        expect(output).toContain("weights: 1, 2, 3")
        expect(output).toMatch(/s1\s+\d+\s+[\d.]+%/)
        expect(output).toMatch(/s3\s+\d+\s+[\d.]+%/)
        expect(output).toContain("30 served, 0 failed")
      }),
    30_000
  )

  it.scopedLive(
    "gives each scripted client a key of its own, so consistent-hash spreads them over the servers",
    () =>
      Effect.gen(function* () {
        const playground = yield* spawn([
          "playground",
          "--servers",
          "3",
          "--strategy",
          "consistent-hash",
          "--demo",
          "32",
          "--port",
          "0"
        ])
        expect(yield* playground.exited).toBe(0)
        const served = [...playground.output().matchAll(/^(s\d)\s+(\d+)\s+[\d.]+%/gm)].map((m) => Number(m[2]))
        expect(served).toHaveLength(3)
        expect(served.reduce((a, b) => a + b, 0)).toBe(32)
        // All from 127.0.0.1: keyed by address, one server would get all 32.
        expect(served.filter((count) => count > 0).length).toBeGreaterThan(1)
      }),
    30_000
  )
})

describe.skipIf(!haveRedis)("effect-lb playground --balancers 2 (the real process)", () => {
  it.scopedLive(
    "starts a private Redis and two balancers that each list every server, and stops them all on SIGINT",
    () =>
      Effect.gen(function* () {
        const playground = yield* spawn(
          ["playground", "--balancers", "2", "--servers", "2", "--strategy", "round-robin", "--port", "0"],
          { PATH: Path.dirname(redisServerPath) }
        )
        yield* playground.waitFor(/serving until Ctrl-C/, 20_000)
        const output = playground.output()
        const redisPort = Number(/redis\s+redis:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1])
        const balancers = [...output.matchAll(/balancer\s+(127\.0\.0\.1:\d+)\s+strategy round-robin\s+(b\d)/g)]
        expect(balancers.map((m) => m[2])).toEqual(["b1", "b2"])
        expect([...output.matchAll(/dashboard\s+http:\/\/127\.0\.0\.1:\d+\/.*\s(b\d)$/gm)].map((m) => m[1])).toEqual([
          "b1",
          "b2"
        ])
        const addresses = balancers.map((m) => m[1] ?? "")
        expect(output).toContain(`more clients: npx effect-lb client --balancer ${addresses.join(",")}`)
        for (const address of addresses) {
          const status = yield* spawn(["status", "--balancer", address, "--json"])
          expect(yield* status.exited).toBe(0)
          const report = JSON.parse(status.output()) as { servers: Array<{ id: string; state: string }> }
          expect(report.servers.map((s) => `${s.id}:${s.state}`).sort()).toEqual(["s1:live", "s2:live"])
        }
        expect(yield* refused(redisPort)).toBe(false)

        playground.child.kill("SIGINT")
        expect(yield* playground.exited).toBe(0)
        for (const address of addresses) expect(yield* refused(Number(address.split(":")[1]))).toBe(true)
        expect(yield* refused(redisPort)).toBe(true)
      }),
    40_000
  )
})

describe("effect-lb playground --balancers 2 without redis-server", () => {
  it.scopedLive("says in one line that --balancers 2 needs redis-server when it is not installed", () =>
    Effect.gen(function* () {
      const empty = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-no-redis-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(empty, { recursive: true, force: true })))
      const playground = yield* spawn(
        ["playground", "--balancers", "2", "--servers", "1", "--strategy", "round-robin", "--port", "0"],
        { PATH: empty }
      )
      expect(yield* playground.exited).toBe(1)
      expect(playground.errors()).toBe(
        "effect-lb: --balancers 2 needs redis-server to share their registry, and it is not installed (apt-get install redis-server)\n"
      )
      expect(playground.output()).not.toContain("balancer ")
    })
  )
})
