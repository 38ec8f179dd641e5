/**
 * The servers' load reports, shared through the in-memory store on the `TestClock`: coalesced into
 * one batch per 100 ms, applied by the other balancers (load and latency only), unreadable ones dropped.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, Option, TestClock } from "effect"
import type { ServerId } from "../../../../src/domain/Server.js"
import * as Metrics from "../../../../src/services/balancer/Metrics.js"
import * as ServerRegistry from "../../../../src/services/balancer/ServerRegistry.js"
import { type MemoryBackend, makeMemoryBackend } from "../../../../src/services/balancer/shared/Store.js"
import { spec } from "../../../support/balancer.js"
import { member as sharedMember, settled } from "../../../support/shared.js"

const member = (backend: MemoryBackend, balancerId: string) =>
  sharedMember(backend, balancerId, { strategy: "weighted-least-connection", config: { maxServers: 100 } })

const loadOf = (registry: ServerRegistry.ServerRegistry["Type"], id: ServerId) =>
  Effect.map(
    registry.get(id),
    Option.map((server) => ({ active: server.active, latencyMs: server.latencyMs, state: server.state }))
  )

const batches = (direction: keyof typeof Metrics.loadBatchLabels) =>
  Effect.map(
    Metric.value(Metrics.registryLoadBatches.pipe(Metric.taggedWithLabels(Metrics.loadBatchLabels[direction]))),
    (state) => state.count
  )

/** Two balancers on one store, each knowing server 1 (added on a). */
const twoBalancers = Effect.gen(function* () {
  const backend = makeMemoryBackend()
  const a = yield* member(backend, "a")
  const b = yield* member(backend, "b")
  yield* settled
  yield* a.operator.add(spec(1))
  yield* settled
  return { backend, a, b, id: spec(1).id }
})

describe("the servers' load reports, shared", () => {
  it.scoped("50 reports within 100 ms are published as one batch, with each server's latest report", () =>
    Effect.gen(function* () {
      const { backend, a, id } = yield* twoBalancers
      yield* a.operator.add(spec(2))
      yield* settled
      for (let i = 1; i <= 50; i++) {
        yield* a.registry.reportLoad(i % 2 === 0 ? id : spec(2).id, i, i / 10)
        yield* TestClock.adjust("1 millis")
      }
      expect(backend.loadBatches.length).toBe(0)
      yield* TestClock.adjust("50 millis")
      yield* settled
      expect(backend.loadBatches.length).toBe(1)
      expect(backend.loadBatches[0]?.reports).toEqual([
        { id: spec(2).id, active: 49, latencyMs: 4.9 },
        { id, active: 50, latencyMs: 5 }
      ])
      // Nothing changed since: nothing more is published.
      yield* TestClock.adjust("1 second")
      expect(backend.loadBatches.length).toBe(1)
    })
  )

  it.scoped("the other balancer applies the load reported on the first; its live/dead verdict stays its own", () =>
    Effect.gen(function* () {
      const { a, b, id } = yield* twoBalancers
      const received = yield* batches("received")
      yield* b.registry.setState(id, "dead")
      yield* a.registry.reportLoad(id, 7, 12.5)
      yield* TestClock.adjust("100 millis")
      yield* settled
      // Dead on b, by b's verdict: it shows no load, but it kept the report (it shows once live).
      expect(yield* loadOf(b.registry, id)).toEqual(Option.some({ active: 0, latencyMs: 12.5, state: "dead" }))
      expect(yield* batches("received")).toBe(received + 1)
      yield* b.registry.setState(id, "live")
      expect(yield* loadOf(b.registry, id)).toEqual(Option.some({ active: 7, latencyMs: 12.5, state: "live" }))
      expect(yield* loadOf(a.registry, id)).toEqual(Option.some({ active: 7, latencyMs: 12.5, state: "live" }))
      // A remote report makes no server live either.
      yield* b.registry.setState(id, "dead")
      yield* a.registry.reportLoad(id, 8)
      yield* TestClock.adjust("100 millis")
      yield* settled
      expect(yield* loadOf(b.registry, id)).toEqual(Option.some({ active: 0, latencyMs: 12.5, state: "dead" }))
    })
  )

  it.scoped("a report of a server the other balancer does not know is ignored there", () =>
    Effect.gen(function* () {
      const { backend, b } = yield* twoBalancers
      backend.sayOnLoads(
        JSON.stringify({ from: "c", instance: "c-run", publishedAt: 0, reports: [{ id: "nowhere", active: 3 }] })
      )
      yield* settled
      expect(Option.isNone(yield* b.registry.get(spec(9).id))).toBe(true)
      expect((yield* b.registry.list).map((server) => server.id)).toEqual([spec(1).id])
    })
  )

  it.scoped("an unreadable message on the loads channel is counted and dropped; the next batch is applied", () =>
    Effect.gen(function* () {
      const { backend, b, id } = yield* twoBalancers
      const unreadable = yield* batches("unreadable")
      backend.sayOnLoads("not json")
      backend.sayOnLoads(
        JSON.stringify({ from: "c", instance: "c-run", publishedAt: 0, reports: [{ id, active: -1 }] })
      )
      yield* settled
      // Counted once by each listener (a and b).
      expect(yield* batches("unreadable")).toBe(unreadable + 4)
      expect(yield* loadOf(b.registry, id)).toEqual(Option.some({ active: 0, latencyMs: null, state: "live" }))
      backend.sayOnLoads(JSON.stringify({ from: "c", instance: "c-run", publishedAt: 0, reports: [{ id, active: 4 }] }))
      yield* settled
      expect(yield* loadOf(b.registry, id)).toEqual(Option.some({ active: 4, latencyMs: null, state: "live" }))
    })
  )

  it.scoped("while the store is down nothing is published; the latest report is when it answers", () =>
    Effect.gen(function* () {
      const { backend, a, b, id } = yield* twoBalancers
      backend.setUp(false)
      yield* settled
      yield* a.registry.reportLoad(id, 2)
      yield* a.registry.reportLoad(id, 3)
      yield* TestClock.adjust("1 second")
      expect(backend.loadBatches.length).toBe(0)
      backend.setUp(true)
      yield* settled
      yield* TestClock.adjust("100 millis")
      yield* settled
      expect(backend.loadBatches.map((batch) => batch.reports)).toEqual([[{ id, active: 3 }]])
      expect(yield* loadOf(b.registry, id)).toEqual(Option.some({ active: 3, latencyMs: null, state: "live" }))
    })
  )
})
