import { describe, expect, it } from "@effect/vitest"
import { Clock, type Duration, Effect, Option, TestClock } from "effect"
import type { ServerSpec } from "../../../src/domain/Server.js"
import { Balancer } from "../../../src/services/balancer/Balancer.js"
import * as Metrics from "../../../src/services/balancer/Metrics.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { balancerLayer, spec } from "../../support/balancer.js"

const passive = { ejectAfter: 3, ejectTimeMs: 10_000, maxEjectedPercent: 50 }

/** A client that failed on `server` comes back `times` times for another. */
const excluded = (server: ServerSpec, times: number) =>
  Effect.flatMap(Balancer, (balancer) =>
    Effect.repeatN(balancer.determineServer([{ host: server.host, port: server.port }]), times - 1)
  )

const stateOf = (server: ServerSpec) =>
  Effect.flatMap(ServerRegistry, (registry) => Effect.map(registry.get(server.id), Option.getOrThrow))

const addFour = Effect.flatMap(ServerRegistry, (registry) => Effect.forEach([1, 2, 3, 4], (n) => registry.add(spec(n))))

describe("passive health", () => {
  it.effect("ejects a server after N Locates in a row that excluded it, with the reason", () =>
    Effect.gen(function* () {
      yield* addFour
      yield* excluded(spec(1), 2)
      expect((yield* stateOf(spec(1))).state).toBe("live")
      yield* excluded(spec(1), 1)
      const ejected = yield* stateOf(spec(1))
      expect(ejected.state).toBe("dead")
      expect(ejected.ejectedUntil).toBe(10_000)
      expect(ejected.ejectedReason).toBe("3 failures in a row: excluded by clients")
      expect(Metrics.unsafeSeriesOf(spec(1).id)?.ejections).toBe(1)
    }).pipe(Effect.provide(balancerLayer("round-robin", {}, passive)))
  )

  it.effect("never ejects more than max-ejected-percent of the servers", () =>
    Effect.gen(function* () {
      yield* addFour
      for (const n of [1, 2, 3]) yield* excluded(spec(n), 3)
      expect((yield* stateOf(spec(1))).state).toBe("dead")
      expect((yield* stateOf(spec(2))).state).toBe("dead")
      const spared = yield* stateOf(spec(3))
      expect(spared.state).toBe("live")
      expect(spared.ejectedUntil).toBeUndefined()
    }).pipe(Effect.provide(balancerLayer("round-robin", {}, passive)))
  )

  it.effect("returns once the ejection time is out and a probe answers; a repeat ejection lasts longer", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* addFour
      yield* excluded(spec(1), 3)
      // A probe answering before the time is out does not bring it back.
      yield* TestClock.adjust("9 seconds")
      yield* registry.setState(spec(1).id, "live")
      expect((yield* stateOf(spec(1))).state).toBe("dead")
      yield* TestClock.adjust("1 second")
      yield* registry.setState(spec(1).id, "live")
      const back = yield* stateOf(spec(1))
      expect(back.state).toBe("live")
      expect(back.ejectedUntil).toBeUndefined()
      yield* excluded(spec(1), 3)
      expect((yield* stateOf(spec(1))).ejectedUntil).toBe(10_000 + 20_000)
    }).pipe(Effect.provide(balancerLayer("round-robin", {}, passive)))
  )

  it.effect("a run of failures ends when they are more than the ejection time apart", () =>
    Effect.gen(function* () {
      yield* addFour
      yield* excluded(spec(1), 2)
      yield* TestClock.adjust("11 seconds")
      yield* excluded(spec(1), 2)
      expect((yield* stateOf(spec(1))).state).toBe("live")
    }).pipe(Effect.provide(balancerLayer("round-robin", {}, passive)))
  )

  it.effect("off by default: exclusions never eject", () =>
    Effect.gen(function* () {
      yield* addFour
      yield* excluded(spec(1), 20)
      expect((yield* stateOf(spec(1))).state).toBe("live")
    }).pipe(Effect.provide(balancerLayer("round-robin")))
  )

  it.effect("forgives one ejection for each ejection time a server stays live without a failure", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const ejectedFor = (server: ServerSpec) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          yield* excluded(server, 3)
          return ((yield* stateOf(server)).ejectedUntil ?? now) - now
        })
      const returns = (server: ServerSpec, after: Duration.DurationInput) =>
        Effect.zipRight(TestClock.adjust(after), registry.setState(server.id, "live"))
      yield* addFour
      expect(yield* ejectedFor(spec(1))).toBe(10_000)
      yield* returns(spec(1), "10 seconds")
      expect(yield* ejectedFor(spec(1))).toBe(20_000)
      yield* returns(spec(1), "20 seconds")
      expect(yield* ejectedFor(spec(1))).toBe(30_000)
      // Back, and clean for two ejection times: two of its three ejections forgiven, the next lasts 2x.
      yield* returns(spec(1), "30 seconds")
      yield* TestClock.adjust("20 seconds")
      expect(yield* ejectedFor(spec(1))).toBe(20_000)
      // Time dead does not count: back after a long ejection and failing at once, it is not forgiven.
      yield* returns(spec(1), "60 seconds")
      expect(yield* ejectedFor(spec(1))).toBe(30_000)
      // A clean spell long enough forgives all: the next is a first ejection again.
      yield* returns(spec(1), "30 seconds")
      yield* TestClock.adjust("5 minutes")
      expect(yield* ejectedFor(spec(1))).toBe(10_000)
    }).pipe(Effect.provide(balancerLayer("round-robin", {}, passive)))
  )

  it.effect("a reload turns passive health on or off, or changes it, keeping each server's state", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* addFour
      yield* excluded(spec(1), 5)
      expect((yield* stateOf(spec(1))).state).toBe("live")
      yield* registry.reconfigure({ slowStartMs: 0, ...passive, ejectAfter: 2 })
      yield* excluded(spec(1), 2)
      expect((yield* stateOf(spec(1))).ejectedUntil).toBe(10_000)
      yield* registry.reconfigure({ slowStartMs: 0, ...passive, ejectAfter: 0 })
      yield* excluded(spec(2), 5)
      expect((yield* stateOf(spec(2))).state).toBe("live")
      // The ejection under way runs its course.
      expect((yield* stateOf(spec(1))).state).toBe("dead")
    }).pipe(Effect.provide(balancerLayer("round-robin")))
  )
})
