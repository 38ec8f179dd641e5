import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Either, Layer, Metric, Option, TestClock } from "effect"
import { type ServerId, type ServerSpec, Weight } from "../../../../src/domain/Server.js"
import * as Balancer from "../../../../src/services/balancer/Balancer.js"
import * as Metrics from "../../../../src/services/balancer/Metrics.js"
import * as Operator from "../../../../src/services/balancer/Operator.js"
import * as ServerRegistry from "../../../../src/services/balancer/ServerRegistry.js"
import { makeMemoryBackend, type SharedChange, type Signer } from "../../../../src/services/balancer/shared/Store.js"
import { Strategies } from "../../../../src/services/balancer/strategies/Catalog.js"
import { spec } from "../../../support/balancer.js"
import { member, settled } from "../../../support/shared.js"

const other = { from: "elsewhere", instance: "another-run", sequence: 1 }
const record = (server: ServerSpec, draining = false) => ({
  _tag: "Server" as const,
  record: { ...server, draining, origin: "configured" as const }
})

const weightOf = (registry: ServerRegistry.ServerRegistry["Type"], id: ServerId) =>
  Effect.map(
    registry.get(id),
    Option.map((server) => server.weight)
  )
const stateOf = (registry: ServerRegistry.ServerRegistry["Type"], id: ServerId) =>
  Effect.map(
    registry.get(id),
    Option.map((server) => server.state)
  )

/** Two balancers, a and b, sharing one in-memory store, both joined. */
const twoBalancers = Effect.gen(function* () {
  const backend = makeMemoryBackend()
  const a = yield* member(backend, "a")
  const b = yield* member(backend, "b")
  yield* settled
  return { backend, a, b }
})

describe("the shared registry (on the in-memory store)", () => {
  it.scoped(
    "a server added on one balancer is listed by the other; its weight, its drain and the strategy follow",
    () =>
      Effect.gen(function* () {
        const backend = makeMemoryBackend()
        const a = yield* member(backend, "a")
        const b = yield* member(backend, "b")
        const server = spec(1, 2)
        yield* settled
        yield* a.operator.add(server)
        yield* settled
        expect(yield* weightOf(b.registry, server.id)).toEqual(Option.some(2))
        yield* a.operator.setWeight(server.id, Weight.make(7))
        yield* settled
        expect(yield* weightOf(b.registry, server.id)).toEqual(Option.some(7))
        yield* b.operator.setStrategy("weighted-round-robin")
        yield* settled
        expect(yield* a.balancer.strategy).toBe("weighted-round-robin")
        // Drained on a: draining on b too; with no connections, a removes it at once, and so does b.
        yield* a.registry.reportLoad(server.id, 3)
        yield* a.operator.drain(server.id)
        yield* settled
        expect(yield* stateOf(b.registry, server.id)).toEqual(Option.some("draining"))
        yield* a.registry.reportLoad(server.id, 0)
        yield* settled
        expect(yield* b.registry.get(server.id)).toEqual(Option.none())
      })
  )

  it.scoped("a local change is written once, and neither balancer applies it again when it comes back", () =>
    Effect.gen(function* () {
      const { backend, a, b } = yield* twoBalancers
      const before = backend.writes.length
      const { registration } = yield* a.registry.register(spec(1))
      yield* settled
      const written = backend.writes.slice(before)
      expect(written.map((message) => [message.from, message.change._tag])).toEqual([["a", "Server"]])
      // The echo changed nothing on a: the registration it made is still the one in force.
      expect(a.registry.unsafeRegistration(registration.id)).toEqual(registration)
      expect(Option.isSome(yield* b.registry.get(registration.id))).toBe(true)
      yield* settled
      expect(backend.writes.length).toBe(before + 1)
    })
  )

  it.scoped("two balancers changing the same things at once end up agreeing", () =>
    Effect.gen(function* () {
      const { backend, a, b } = yield* twoBalancers
      yield* a.operator.add(spec(1))
      yield* settled
      yield* a.operator.setStrategy("weighted-round-robin")
      yield* b.operator.setStrategy("weighted-least-connection")
      yield* a.operator.setWeight(spec(1).id, Weight.make(2))
      yield* a.operator.setWeight(spec(1).id, Weight.make(3))
      yield* b.operator.setWeight(spec(1).id, Weight.make(4))
      yield* settled
      expect(yield* a.balancer.strategy).toBe(yield* b.balancer.strategy)
      const weight = yield* weightOf(a.registry, spec(1).id)
      expect(yield* weightOf(b.registry, spec(1).id)).toEqual(weight)
      // The last write wins, everywhere.
      const last = backend.writes.filter((message) => message.change._tag === "Server").at(-1)?.change
      expect(last?._tag === "Server" ? Option.some(last.record.weight) : Option.none()).toEqual(weight)
    })
  )

  it.scoped("live and dead stay each balancer's own: a verdict on one is neither written nor seen by the other", () =>
    Effect.gen(function* () {
      const { backend, a, b } = yield* twoBalancers
      yield* a.operator.add(spec(1))
      yield* settled
      const before = backend.writes.length
      yield* a.registry.setState(spec(1).id, "dead")
      yield* settled
      expect(backend.writes.length).toBe(before)
      expect(yield* stateOf(b.registry, spec(1).id)).toEqual(Option.some("live"))
    })
  )

  it.scoped("a revision missing makes it read a snapshot: what it missed, added and removed, is applied", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      backend.writeAs(other, record(spec(3)))
      const b = yield* member(backend, "b")
      yield* settled
      expect(Option.isSome(yield* b.registry.get(spec(3).id))).toBe(true)
      backend.dropNext(2)
      backend.writeAs(other, record(spec(1)))
      backend.writeAs(other, { _tag: "Removed", id: spec(3).id })
      yield* settled
      expect(Option.isNone(yield* b.registry.get(spec(1).id))).toBe(true)
      backend.writeAs(other, record(spec(2)))
      yield* settled
      expect((yield* b.registry.list).map((server) => server.id).sort()).toEqual([spec(1).id, spec(2).id])
    })
  )

  it.scoped("while the store is down a balancer serves what it knows, and shares its changes when it answers", () =>
    Effect.gen(function* () {
      const { backend, a, b } = yield* twoBalancers
      backend.setUp(false)
      yield* settled
      yield* a.operator.add(spec(1))
      backend.writeAs(other, record(spec(2)))
      yield* settled
      expect(Option.isSome(yield* a.registry.get(spec(1).id))).toBe(true)
      expect(Option.isNone(yield* b.registry.get(spec(1).id))).toBe(true)
      backend.setUp(true)
      yield* settled
      expect((yield* b.registry.list).map((server) => server.id).sort()).toEqual([spec(1).id, spec(2).id])
      expect((yield* a.registry.list).map((server) => server.id).sort()).toEqual([spec(1).id, spec(2).id])
    })
  )

  it.scoped(
    "while the store is down an operator's change is refused with RegistryUnavailable; allowed again once it is read",
    () =>
      Effect.gen(function* () {
        const backend = makeMemoryBackend()
        const a = yield* member(backend, "a")
        yield* settled
        expect(yield* Effect.either(a.operator.writable)).toEqual(Either.right(undefined))
        backend.setUp(false)
        yield* settled
        const refused = yield* Effect.flip(a.operator.writable)
        expect(refused._tag).toBe("RegistryUnavailable")
        expect(refused.message).toContain("is unreachable: operator changes are refused until it answers")
        backend.setUp(true)
        yield* settled
        expect(yield* Effect.either(a.operator.writable)).toEqual(Either.right(undefined))
      })
  )

  it.scoped("without a shared registry an operator's change is always allowed", () =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        Operator.layer(Operator.defaults).pipe(
          Layer.provideMerge(Balancer.layer("round-robin")),
          Layer.provideMerge(ServerRegistry.layer()),
          Layer.provideMerge(Strategies.layer)
        )
      )
      expect(yield* Effect.either(Context.get(context, Operator.Operator).writable)).toEqual(Either.right(undefined))
    })
  )

  it.scoped("a restart seen only after others wrote past the old revision is still a restart: nothing removed", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      backend.writeAs(other, record(spec(1)))
      backend.writeAs(other, record(spec(2)))
      const b = yield* member(backend, "b")
      yield* settled
      const before = backend.revision()
      backend.restartEmpty()
      // Before b reads it again, others refill it past b's revision, with other servers.
      for (const n of [3, 4, 5, 6, 7].slice(0, before + 1)) backend.writeAs(other, record(spec(n)))
      expect(backend.revision()).toBeGreaterThan(before)
      yield* settled
      const known = (yield* b.registry.list).map((server) => server.id)
      expect(known).toEqual(expect.arrayContaining([spec(1).id, spec(2).id, spec(3).id]))
      // And b wrote back what it knew: a balancer joining now is given servers 1 and 2 too.
      const c = yield* member(backend, "c")
      yield* settled
      expect((yield* c.registry.list).map((server) => server.id)).toEqual(
        expect.arrayContaining([spec(1).id, spec(2).id])
      )
    })
  )

  it.scoped("/metrics says whether it is joined, at which revision, and how many of its changes wait", () =>
    Effect.gen(function* () {
      const gauges = Effect.all({
        connected: Metric.value(Metrics.registryConnected),
        revision: Metric.value(Metrics.registryRevision),
        pending: Metric.value(Metrics.registryPending)
      }).pipe(Effect.map(({ connected, revision, pending }) => [connected.value, revision.value, pending.value]))
      const backend = makeMemoryBackend()
      backend.writeAs(other, record(spec(1)))
      const a = yield* member(backend, "a")
      yield* settled
      expect(yield* gauges).toEqual([1, 2, 0])
      backend.setUp(false)
      yield* settled
      yield* a.operator.add(spec(2))
      yield* settled
      expect(yield* gauges).toEqual([0, 2, 1])
      backend.setUp(true)
      yield* settled
      expect(yield* gauges).toEqual([1, 3, 0])
    })
  )

  it.scoped("a balancer started before any other shares its --server entries and its strategy when it joins", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      backend.setUp(false)
      const a = yield* member(backend, "a", { strategy: "weighted-round-robin" })
      yield* a.registry.add(spec(1), "configured")
      yield* settled
      expect(backend.writes.length).toBe(0)
      backend.setUp(true)
      yield* settled
      const b = yield* member(backend, "b")
      yield* settled
      expect(Option.isSome(yield* b.registry.get(spec(1).id))).toBe(true)
      expect(yield* b.balancer.strategy).toBe("weighted-round-robin")
    })
  )

  it.scoped("a balancer joining as Redis comes back empty does not overwrite the strategy the others write back", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      /** A link whose writes take `delay` once `slow` is set. */
      const link = (delay: Duration.DurationInput, offered: Array<SharedChange>) => {
        const store = backend.connect()
        const self = { slow: false, store }
        self.store = {
          ...store,
          write: (signer: Signer, change: SharedChange) =>
            Effect.suspend(() => {
              offered.push(change)
              return Effect.zipRight(Effect.sleep(self.slow ? delay : 0), store.write(signer, change))
            })
        }
        return self
      }
      const byA: Array<SharedChange> = []
      const byC: Array<SharedChange> = []
      const linkA = link("500 millis", byA)
      const a = yield* member(backend, "a", { strategy: "weighted-round-robin", store: linkA.store })
      yield* settled
      // The first to join an empty store offers its strategy.
      expect(backend.writes.at(-1)?.change).toEqual({ _tag: "Strategy", name: "weighted-round-robin", ifUnset: true })
      // Redis restarts empty. a writes back what it knew, each write taking 0.5 s; c joins at once, reads it empty,
      // and offers its own strategy, which takes 1.5 s: it arrives after all of a's.
      linkA.slow = true
      backend.restartEmpty()
      yield* settled
      const linkC = link("1500 millis", byC)
      linkC.slow = true
      const c = yield* member(backend, "c", { strategy: "round-robin", store: linkC.store })
      yield* settled
      yield* TestClock.adjust("5 seconds")
      yield* settled
      expect(byA).toContainEqual({ _tag: "Strategy", name: "weighted-round-robin" })
      expect(byC).toContainEqual({ _tag: "Strategy", name: "round-robin", ifUnset: true })
      expect((yield* backend.connect().snapshot).strategy).toBe("weighted-round-robin")
      expect(yield* a.balancer.strategy).toBe("weighted-round-robin")
      expect(yield* c.balancer.strategy).toBe("weighted-round-robin")
    })
  )

  it.scoped("a store that went back (Redis restarted empty) removes nothing here, and is seeded again", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      backend.writeAs(other, record(spec(1)))
      backend.writeAs(other, record(spec(2)))
      const b = yield* member(backend, "b")
      yield* settled
      expect((yield* b.registry.list).length).toBe(2)
      yield* b.balancer.setStrategy("weighted-round-robin")
      yield* settled
      backend.restartEmpty()
      yield* settled
      expect((yield* b.registry.list).map((server) => server.id).sort()).toEqual([spec(1).id, spec(2).id])
      // What b knew is in the store again: a balancer joining now is given it, strategy included.
      const c = yield* member(backend, "c")
      yield* settled
      expect((yield* c.registry.list).map((server) => server.id).sort()).toEqual([spec(1).id, spec(2).id])
      expect(yield* c.balancer.strategy).toBe("weighted-round-robin")
      // Changes from then on are applied again, from the store's new revisions.
      backend.writeAs(other, record(spec(3)))
      yield* settled
      expect(Option.isSome(yield* b.registry.get(spec(3).id))).toBe(true)
    })
  )
})
