import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, TestClock } from "effect"
import { Balancer } from "../../../src/services/balancer/Balancer.js"
import { rampAt, ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import type { StrategyName } from "../../../src/services/balancer/strategies/Catalog.js"
import { balancerLayer, spec } from "../../support/balancer.js"

const s1 = spec(1)
const s2 = spec(2)

/** s2's share of `count` Locates (distinct keys, each server's load reported back to 0 first). */
const shareOfS2 = (count: number) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const balancer = yield* Balancer
    yield* registry.reportLoad(s1.id, 0)
    yield* registry.reportLoad(s2.id, 0)
    let picked = 0
    for (let i = 0; i < count; i++) {
      const location = yield* balancer.determineServer([], `client-${i}`)
      if (location.id === s2.id) picked += 1
    }
    return picked / count
  })

/** Two servers of weight 1 at full weight; then s2 dies and comes back. */
const s2BackFromDead = Effect.gen(function* () {
  const registry = yield* ServerRegistry
  yield* registry.add(s1)
  yield* registry.add(s2)
  // Both answer probes in 10 ms (weighted-response-time needs a figure to weigh).
  yield* registry.recordProbe(s1.id, 10, 0)
  yield* registry.recordProbe(s2.id, 10, 0)
  yield* TestClock.adjust("31 seconds")
  yield* registry.setState(s2.id, "dead")
  yield* registry.setState(s2.id, "live")
})

const weighted: ReadonlyArray<StrategyName> = [
  "weighted-round-robin",
  "weighted-least-connection",
  "weighted-response-time",
  "consistent-hash"
]

describe("slow start", () => {
  it("ramps from 10% of the weight to all of it, in step with the time live", () => {
    expect(rampAt(0, 30_000)).toBe(0.1)
    expect(rampAt(1_000, 30_000)).toBe(0.1)
    expect(rampAt(15_000, 30_000)).toBe(0.5)
    expect(rampAt(30_000, 30_000)).toBe(1)
    expect(rampAt(90_000, 30_000)).toBe(1)
  })

  for (const strategy of weighted) {
    it.effect(`${strategy}: a server back from dead takes a share that grows with time`, () =>
      Effect.gen(function* () {
        yield* s2BackFromDead
        const atFirst = yield* shareOfS2(500)
        yield* TestClock.adjust("15 seconds")
        const halfway = yield* shareOfS2(500)
        yield* TestClock.adjust("16 seconds")
        const after = yield* shareOfS2(500)
        // Weights 1 : 0.1, 1 : 0.5, 1 : 1 — shares of about 9%, 33%, 50%.
        expect(atFirst).toBeLessThan(0.15)
        expect(halfway).toBeGreaterThan(0.25)
        expect(halfway).toBeLessThan(0.42)
        expect(after).toBeGreaterThan(0.42)
      }).pipe(Effect.provide(balancerLayer(strategy, {}, { slowStartMs: 30_000 })))
    )
  }

  it.effect("shows the weight taken now and when it will be full, only while ramping", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* s2BackFromDead
      const since = (yield* registry.get(s2.id)).pipe(Option.getOrThrow).stateSince ?? 0
      yield* TestClock.adjust("6 seconds")
      const ramping = (yield* registry.get(s2.id)).pipe(Option.getOrThrow)
      expect(ramping.weight).toBe(1)
      expect(ramping.effectiveWeight).toBe(0.2)
      expect(ramping.slowStartUntil).toBe(since + 30_000)
      expect((yield* registry.get(s1.id)).pipe(Option.getOrThrow).effectiveWeight).toBeUndefined()
      yield* TestClock.adjust("25 seconds")
      const full = (yield* registry.get(s2.id)).pipe(Option.getOrThrow)
      expect(full.effectiveWeight).toBeUndefined()
      expect(full.slowStartUntil).toBeUndefined()
    }).pipe(Effect.provide(balancerLayer("weighted-round-robin", {}, { slowStartMs: 30_000 })))
  )

  it.effect("off by default: a server back from dead takes its full share at once", () =>
    Effect.gen(function* () {
      yield* s2BackFromDead
      expect(yield* shareOfS2(500)).toBe(0.5)
      expect(
        (yield* ServerRegistry.pipe(Effect.flatMap((r) => r.get(s2.id)))).pipe(Option.getOrThrow)
      ).not.toHaveProperty("effectiveWeight")
    }).pipe(Effect.provide(balancerLayer("weighted-round-robin")))
  )

  it.effect("a reload turns slow start on, stretches a ramp under way, and ends every ramp when it turns it off", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const effectiveWeight = Effect.map(registry.get(s2.id), (server) => Option.getOrThrow(server).effectiveWeight)
      const tunables = { slowStartMs: 30_000, ejectAfter: 0, ejectTimeMs: 30_000, maxEjectedPercent: 50 }
      yield* registry.reconfigure(tunables)
      yield* s2BackFromDead
      yield* TestClock.adjust("6 seconds")
      expect(yield* effectiveWeight).toBe(0.2)
      // Twice as long: the ramp keeps its start, so 6 s of 60 s.
      yield* registry.reconfigure({ ...tunables, slowStartMs: 60_000 })
      expect(yield* effectiveWeight).toBe(0.1)
      yield* TestClock.adjust("24 seconds")
      expect(yield* effectiveWeight).toBe(0.5)
      expect(yield* shareOfS2(600)).toBeLessThan(0.42)
      yield* registry.reconfigure({ ...tunables, slowStartMs: 0 })
      expect(yield* effectiveWeight).toBeUndefined()
      expect(yield* shareOfS2(500)).toBe(0.5)
    }).pipe(Effect.provide(balancerLayer("weighted-round-robin")))
  )
})
