import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FastCheck, Option } from "effect"
import { Balancer } from "../../../src/services/balancer/Balancer.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { names } from "../../../src/services/balancer/strategies/Catalog.js"
import { balancerLayer, spec } from "../../support/balancer.js"

const endpoint = (n: number) => ({ host: spec(n).host, port: spec(n).port })

const locateMany = (count: number, exclude: ReadonlyArray<ReturnType<typeof endpoint>> = []) =>
  Effect.flatMap(Balancer, (balancer) =>
    Effect.forEach(Array.from({ length: count }), () => Effect.map(balancer.determineServer(exclude), (s) => s.id))
  )

describe("Balancer", () => {
  it.effect("hands out live servers only, in the current strategy's order", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      for (const n of [1, 2, 3]) yield* registry.add(spec(n))
      yield* registry.setState(spec(2).id, "dead")
      expect(yield* locateMany(4)).toEqual(["s1", "s3", "s1", "s3"])
      yield* registry.setState(spec(2).id, "live")
      expect(new Set(yield* locateMany(3))).toEqual(new Set(["s1", "s2", "s3"]))
    }).pipe(Effect.provide(balancerLayer()))
  )

  it.effect("avoids excluded servers while another is live, and uses them when none is", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      for (const n of [1, 2]) yield* registry.add(spec(n))
      expect(new Set(yield* locateMany(6, [endpoint(1)]))).toEqual(new Set(["s2"]))
      yield* registry.setState(spec(2).id, "dead")
      expect(yield* locateMany(2, [endpoint(1)])).toEqual(["s1", "s1"])
    }).pipe(Effect.provide(balancerLayer()))
  )

  it.effect("fails with NoServerAvailable when no server is live", () =>
    Effect.gen(function* () {
      const balancer = yield* Balancer
      const registry = yield* ServerRegistry
      yield* registry.add(spec(1))
      yield* registry.setState(spec(1).id, "draining")
      const exit = yield* Effect.exit(balancer.determineServer())
      expect(exit).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "NoServerAvailable" })))
    }).pipe(Effect.provide(balancerLayer()))
  )

  it.effect("refuses an unknown strategy and keeps the current one", () =>
    Effect.gen(function* () {
      const balancer = yield* Balancer
      const registry = yield* ServerRegistry
      for (const n of [1, 2, 3]) yield* registry.add(spec(n))
      const refused = (name: string) =>
        Effect.map(Effect.flip(balancer.setStrategy(name)), (error) => ({ _tag: error._tag, message: error.message }))
      expect(yield* locateMany(1)).toEqual(["s1"])
      expect(yield* refused("fastest-please")).toEqual({
        _tag: "InvalidRequest",
        message: `unknown strategy "fastest-please"; known: ${names.join(", ")}`
      })
      // Kept, state and all: the round goes on where it was, not from a fresh start.
      expect(yield* balancer.strategy).toBe("round-robin")
      expect(yield* locateMany(3)).toEqual(["s2", "s3", "s1"])
      // And a current one that is not the default is kept too.
      yield* balancer.setStrategy("weighted-least-connection")
      expect(yield* refused("")).toMatchObject({ _tag: "InvalidRequest" })
      expect(yield* balancer.strategy).toBe("weighted-least-connection")
    }).pipe(Effect.provide(balancerLayer()))
  )

  it.effect("spreads a burst under least-connection, counting clients it located since the last report", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* registry.add(spec(1, 1))
      yield* registry.add(spec(2, 3))
      const picks = yield* locateMany(8)
      expect(picks.filter((id) => id === "s1").length).toBe(2)
      expect(picks.filter((id) => id === "s2").length).toBe(6)
      // A load report replaces the estimate with the server's own figure.
      yield* registry.reportLoad(spec(2).id, 30)
      yield* registry.reportLoad(spec(1).id, 0)
      expect(yield* locateMany(3)).toEqual(["s1", "s1", "s1"])
    }).pipe(Effect.provide(balancerLayer("weighted-least-connection")))
  )

  it.effect("counts how often each server was located", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      for (const n of [1, 2]) yield* registry.add(spec(n))
      yield* locateMany(5)
      const servers = yield* registry.list
      expect(servers.map((s) => [s.id, s.located])).toEqual([
        ["s1", 3],
        ["s2", 2]
      ])
    }).pipe(Effect.provide(balancerLayer()))
  )

  it.effect.prop(
    "never returns a dead or excluded server while another is live, under any strategy",
    {
      strategy: FastCheck.constantFrom(...names),
      states: FastCheck.array(FastCheck.constantFrom("live" as const, "dead" as const, "draining" as const), {
        minLength: 1,
        maxLength: 12
      }),
      excluded: FastCheck.array(FastCheck.nat(11), { maxLength: 4 })
    },
    ({ strategy, states, excluded }) =>
      Effect.gen(function* () {
        const registry = yield* ServerRegistry
        const balancer = yield* Balancer
        for (const [n, state] of states.entries()) {
          yield* registry.add(spec(n, 1 + (n % 3)))
          yield* registry.setState(spec(n).id, state)
        }
        const live = states.flatMap((state, n) => (state === "live" ? [spec(n).id as string] : []))
        const preferred = live.filter((id) => !excluded.some((n) => spec(n).id === id))
        for (let i = 0; i < 20; i++) {
          const picked = yield* Effect.option(balancer.determineServer(excluded.map(endpoint)))
          if (live.length === 0) expect(Option.isNone(picked)).toBe(true)
          else expect(preferred.length > 0 ? preferred : live).toContain(Option.getOrThrow(picked).id)
        }
      }).pipe(Effect.provide(balancerLayer(strategy))),
    { fastCheck: { numRuns: 60 } }
  )

  it.effect("loses no write when many fibers pick, report and probe at once", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      for (const n of [1, 2, 3, 4]) yield* registry.add(spec(n))
      const located = new Map<string, number>()
      const worker = (w: number) =>
        Effect.forEach(
          Array.from({ length: 200 }, (_, i) => i),
          (i) =>
            Effect.gen(function* () {
              const server = yield* balancer.determineServer()
              located.set(server.id, (located.get(server.id) ?? 0) + 1)
              yield* Effect.yieldNow()
              yield* registry.reportLoad(spec(1 + ((w + i) % 4)).id, i % 7)
              yield* registry.recordProbe(spec(1 + (i % 4)).id, 1 + (w % 5), i % 3)
              if (i % 50 === 0) yield* balancer.setStrategy(names[(w + i) % names.length] ?? "round-robin")
            })
        )
      yield* Effect.forEach(
        Array.from({ length: 50 }, (_, w) => w),
        worker,
        { concurrency: "unbounded" }
      )
      const servers = yield* registry.list
      expect(servers.reduce((sum, s) => sum + s.located, 0)).toBe(50 * 200)
      for (const server of servers) expect(server.located).toBe(located.get(server.id) ?? 0)
    }).pipe(Effect.provide(balancerLayer()))
  )
})
