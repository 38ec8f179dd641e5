import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import { Host, Port, ServerId, type ServerSpec, Weight } from "../../../src/domain/Server.js"
import * as Admin from "../../../src/services/balancer/admin/Admin.js"
import { Balancer } from "../../../src/services/balancer/Balancer.js"
import * as Metrics from "../../../src/services/balancer/Metrics.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { balancerLayer } from "../../support/balancer.js"
import { parse, valueOf } from "../../support/prometheus.js"

/** Server ids unique to this file: Effect's metrics are process-wide. */
const server = (name: string, port: number): ServerSpec => ({
  id: ServerId.make(`metrics-${name}`),
  host: Host.make("127.0.0.1"),
  port: Port.make(port),
  weight: Weight.make(1)
})

const adminLayer = Admin.layer({ host: "127.0.0.1", port: 0 }).pipe(Layer.provideMerge(balancerLayer("round-robin")))

const scrape = Effect.gen(function* () {
  const { address } = yield* Admin.Admin
  return yield* Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${address.port}/metrics`)
    return response.text()
  })
})

/** Series in Effect's process-global registry that name a server matching `test`: they never go. */
const globalSeriesNaming = (test: (id: string) => boolean) =>
  Effect.map(
    Metric.snapshot,
    (pairs) => pairs.filter((pair) => pair.metricKey.tags.some((tag) => tag.key === "server" && test(tag.value))).length
  )

describe("per-server metric series", () => {
  it.scopedLive("leave with their server: the store and the scrape forget it, the others keep counting", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      const before = Metrics.unsafeSeriesCount()
      const a = server("a", 43001)
      const b = server("b", 43002)
      yield* registry.add(a)
      yield* registry.add(b)
      // Every kind of per-server series: locates, a re-route (a client excluding a), an ejection, a probe.
      for (let i = 0; i < 4; i++) yield* balancer.determineServer()
      yield* balancer.determineServer([a])
      Metrics.unsafeProbed(a.id, 2.5)
      yield* registry.setState(a.id, "dead")
      const full = yield* scrape
      const families = parse(full)
      expect(valueOf(families, "effect_lb_locates_total", { server: a.id, strategy: "round-robin" })).toBe(2)
      expect(valueOf(families, "effect_lb_reroutes_total", { server: a.id })).toBe(1)
      expect(valueOf(families, "effect_lb_ejections_total", { server: a.id })).toBe(1)
      expect(valueOf(families, "effect_lb_probe_round_trip_seconds_count", { server: a.id })).toBe(1)
      expect(valueOf(families, "effect_lb_probe_round_trip_seconds_bucket", { server: a.id, le: "0.0032" })).toBe(1)
      expect(valueOf(families, "effect_lb_probe_round_trip_seconds_bucket", { server: a.id, le: "+Inf" })).toBe(1)
      expect(valueOf(families, "effect_lb_server_state", { server: a.id, state: "dead" })).toBe(1)
      expect(Metrics.unsafeSeriesCount()).toBe(before + 2)

      yield* registry.remove(a.id)
      expect(Metrics.unsafeSeriesCount()).toBe(before + 1)
      expect(Metrics.unsafeSeriesOf(a.id)).toBeUndefined()
      expect(yield* globalSeriesNaming((id) => id === a.id)).toBe(0)
      const gone = yield* scrape
      expect(gone).not.toContain(a.id)
      // b, still registered, keeps counting across scrapes: 3 locates before, 1 more now.
      expect(valueOf(parse(gone), "effect_lb_locates_total", { server: b.id, strategy: "round-robin" })).toBe(3)
      yield* balancer.determineServer()
      expect(valueOf(parse(yield* scrape), "effect_lb_locates_total", { server: b.id, strategy: "round-robin" })).toBe(
        4
      )
      yield* registry.remove(b.id)
      expect(Metrics.unsafeSeriesCount()).toBe(before)
      expect(yield* scrape).not.toContain("metrics-")
    }).pipe(Effect.provide(adminLayer))
  )

  it.scoped("stay bounded by the live servers when 20,000 distinct ids come and go", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      const before = Metrics.unsafeSeriesCount()
      const steady = server("steady", 43100)
      yield* registry.add(steady)
      let most = 0
      for (let i = 0; i < 20_000; i++) {
        const passing = server(`flood-${i}`, 44000 + (i % 1000))
        yield* registry.add(passing)
        // Each passing server gets every kind of series before it goes.
        yield* balancer.determineServer([steady])
        Metrics.unsafeProbed(passing.id, 1)
        yield* registry.setState(passing.id, "dead")
        most = Math.max(most, Metrics.unsafeSeriesCount() - before)
        yield* registry.remove(passing.id)
      }
      expect(most).toBe(2)
      expect(Metrics.unsafeSeriesCount() - before).toBe(1)
      // Nothing kept anywhere else either: Effect's registry names none of them.
      expect(yield* globalSeriesNaming((id) => id.startsWith("metrics-flood-"))).toBe(0)
      // The steady server counted all its re-routes.
      expect(Metrics.unsafeSeriesOf(steady.id)?.reroutes).toBe(20_000)
    }).pipe(Effect.provide(balancerLayer("round-robin")))
  )
})
