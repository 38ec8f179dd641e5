import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Metric, Option, Ref, TestClock } from "effect"
import * as HealthMonitor from "../../../src/services/balancer/HealthMonitor.js"
import * as Metrics from "../../../src/services/balancer/Metrics.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as ServerRegistryModule from "../../../src/services/balancer/ServerRegistry.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { type Behaviour, fakeServer, spec } from "../../support/balancer.js"

const monitored = HealthMonitor.layer().pipe(
  Layer.provideMerge(ServerRegistryModule.layer()),
  Layer.provideMerge(Wire.layerMemory)
)

const stateOf = (id: string) =>
  Effect.flatMap(ServerRegistry, (registry) => registry.list).pipe(
    Effect.map((servers) => servers.find((server) => server.id === id)?.state)
  )

describe("HealthMonitor on the test clock", () => {
  it.scoped("marks a silent server dead at 5 seconds of silence, not 4.9", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* registry.add(spec(1))
      yield* TestClock.adjust("4999 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("dead")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("keeps a server that answers live, and measures its round trip", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const histogram = Metric.value(Metric.tagged(Metrics.probeRoundTrip, "server", "s1"))
      const probedBefore = (yield* histogram).count
      const pings = yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("20 seconds")
      expect(yield* stateOf("s1")).toBe("live")
      expect(yield* Ref.get(pings)).toBeGreaterThanOrEqual(20)
      const server = yield* registry.get(spec(1).id)
      expect(Option.map(server, (s) => s.responseTimeMs)).toEqual(Option.some(0))
      // Every answered probe is counted in the server's round-trip histogram.
      expect((yield* histogram).count - probedBefore).toBe(yield* Ref.get(pings))
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("brings a dead server back to live when it answers again", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const behaviour = yield* Ref.make<Behaviour>("stalled")
      yield* fakeServer(spec(1), behaviour)
      yield* registry.add(spec(1))
      yield* TestClock.adjust("6 seconds")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* Ref.set(behaviour, "healthy")
      yield* TestClock.adjust("6 seconds")
      expect(yield* stateOf("s1")).toBe("live")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("never lets a stalled server delay another server's probes", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("stalled"))
      const healthyPings = yield* fakeServer(spec(2), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* registry.add(spec(2))
      for (let second = 1; second <= 10; second++) {
        yield* TestClock.adjust("1 second")
        // One probe a second, on time, whatever the stalled server does.
        expect(yield* Ref.get(healthyPings)).toBe(second + 1)
      }
      expect(yield* stateOf("s1")).toBe("dead")
      expect(yield* stateOf("s2")).toBe("live")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("stops probing a server once it is removed", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const monitor = yield* HealthMonitor.HealthMonitor
      const pings = yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("2 seconds")
      expect(yield* monitor.watched).toBe(1)
      yield* registry.remove(spec(1).id)
      const before = yield* Ref.get(pings)
      yield* TestClock.adjust("5 seconds")
      expect(yield* Ref.get(pings)).toBe(before)
      expect(yield* monitor.watched).toBe(0)
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("with tcp health, a server that accepts connections is live even if it speaks no effect-lb", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      // Stalled: accepts and never answers a Ping — dead for `ping` health, alive for `tcp`.
      yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("stalled"))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("10 seconds")
      expect(yield* stateOf("s1")).toBe("live")
      const server = yield* registry.get(spec(1).id)
      expect(Option.map(server, (s) => s.responseTimeMs)).toEqual(Option.some(0))
      yield* registry.add(spec(2))
      yield* TestClock.adjust("5 seconds")
      expect(yield* stateOf("s2")).toBe("dead")
    }).pipe(
      Effect.provide(
        HealthMonitor.layer({ ...HealthMonitor.defaults, health: "tcp" }).pipe(
          Layer.provideMerge(ServerRegistryModule.layer()),
          Layer.provideMerge(Wire.layerMemory)
        )
      )
    )
  )

  it.scoped("uses the configured probe interval and dead-after", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      // s1 is silent (nobody listens); s2 answers, and counts the probes it gets.
      const pings = yield* fakeServer(spec(2), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* registry.add(spec(2))
      // A probe at once, then one every 250 ms: exactly, not the default second.
      for (let tick = 1; tick <= 7; tick++) {
        yield* TestClock.adjust("250 millis")
        expect(yield* Ref.get(pings)).toBe(tick + 1)
      }
      // Silent for 2 seconds, not 1.999: dead.
      yield* TestClock.adjust("249 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("dead")
      expect(yield* stateOf("s2")).toBe("live")
      expect(yield* Ref.get(pings)).toBe(9)
    }).pipe(
      Effect.provide(
        HealthMonitor.layer({ probeInterval: "250 millis", deadAfter: "2 seconds" }).pipe(
          Layer.provideMerge(ServerRegistryModule.layer()),
          Layer.provideMerge(Wire.layerMemory)
        )
      )
    )
  )
})
