import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Logger, Metric, Scope, TestClock } from "effect"
import * as Metrics from "../../../../src/services/balancer/Metrics.js"
import * as Cluster from "../../../../src/services/balancer/shared/Cluster.js"
import { type MemoryBackend, makeMemoryBackend } from "../../../../src/services/balancer/shared/Store.js"
import { spec } from "../../../support/balancer.js"
import { clusterMember, settled } from "../../../support/shared.js"

/** One balancer sharing `backend`, announcing itself at `balancer` for the life of `scope`. */
const member = (backend: MemoryBackend, balancerId: string, scope: Scope.Scope) =>
  clusterMember(backend, balancerId, scope, { addresses: { balancer: `127.0.0.1:${balancerId.length}` } })

const idsIn = (cluster: Cluster.Cluster["Type"]) =>
  Effect.map(cluster.view, (view) => view.balancers.map((balancer) => `${balancer.id}${balancer.self ? "*" : ""}`))

describe("the cluster's balancers (on the in-memory store)", () => {
  it.scoped("each balancer announces itself; a clean stop removes it from every list", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      const a = yield* member(backend, "a", yield* Effect.scope)
      const bScope = yield* Scope.make()
      const b = yield* member(backend, "b", bScope)
      yield* settled
      expect(yield* idsIn(a.cluster)).toEqual(["a*", "b"])
      expect(yield* idsIn(b.cluster)).toEqual(["a", "b*"])
      const view = yield* a.cluster.view
      expect(view.registry).toMatchObject({ connected: true, namespace: "test", url: "memory" })
      expect(view.balancers[1]).toMatchObject({ id: "b", addresses: { balancer: "127.0.0.1:1" }, version: "test" })
      yield* Scope.close(bScope, Exit.void)
      expect(yield* idsIn(a.cluster)).toEqual(["a*"])
    })
  )

  it.scoped("the heartbeat keeps a balancer listed; one that stops without saying expires within seconds", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      const a = yield* member(backend, "a", yield* Effect.scope)
      const store = backend.connect()
      // A balancer that announced itself once and then died (no heartbeat, no removal).
      yield* store.announce(
        { id: "gone", instance: "x", addresses: {}, version: "old", startedAt: 0, lastSeenAt: 0 },
        Cluster.defaults.expireAfter
      )
      yield* settled
      expect(yield* idsIn(a.cluster)).toEqual(["a*", "gone"])
      yield* TestClock.adjust("4 seconds")
      expect(yield* idsIn(a.cluster)).toEqual(["a*", "gone"])
      yield* TestClock.adjust("2 seconds")
      expect(yield* idsIn(a.cluster)).toEqual(["a*"])
      // a itself renewed every second all along.
      yield* TestClock.adjust("30 seconds")
      const view = yield* a.cluster.view
      expect(view.balancers.map((balancer) => [balancer.id, balancer.lastSeenAt])).toEqual([["a", 36_000]])
    })
  )

  it.scoped("with the store down, the registry says not connected and the last list is shown, stale", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      const a = yield* member(backend, "a", yield* Effect.scope)
      yield* member(backend, "b", yield* Effect.scope)
      yield* settled
      expect((yield* a.cluster.view).stale).toBeUndefined()
      backend.setUp(false)
      yield* settled
      const view = yield* a.cluster.view
      expect(view.registry.connected).toBe(false)
      expect(view.stale).toBe(true)
      expect(view.balancers.map((balancer) => balancer.id)).toEqual(["a", "b"])
      backend.setUp(true)
      yield* settled
      expect((yield* a.cluster.view).registry.connected).toBe(true)
    })
  )

  it.scoped("an announcement failing is logged once it has lapsed (5 s), once, and not while it recovers in time", () =>
    Effect.gen(function* () {
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push((Array.isArray(message) ? message : [message]).join(" "))
      })
      const backend = makeMemoryBackend()
      backend.setUp(false)
      yield* member(backend, "a", yield* Effect.scope).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, logger))
      )
      const announcing = () => warnings.filter((line) => line.includes("announced to the cluster"))
      yield* TestClock.adjust("3 seconds")
      expect(announcing()).toEqual([])
      backend.setUp(true)
      yield* TestClock.adjust("1 second")
      backend.setUp(false)
      yield* TestClock.adjust("4 seconds")
      expect(announcing()).toEqual([])
      yield* TestClock.adjust("3 seconds")
      expect(announcing()).toHaveLength(1)
      expect(announcing()[0]).toContain("has not been announced to the cluster for 5s")
      yield* TestClock.adjust("10 seconds")
      expect(announcing()).toHaveLength(1)
    })
  )

  it.scoped("the sync lag is the time from a change's publication to its application here", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      const a = yield* member(backend, "a", yield* Effect.scope)
      yield* settled
      yield* TestClock.adjust("10 seconds")
      // Published 250 ms ago by another balancer's clock.
      backend.writeAs(
        { from: "b", instance: "other", sequence: 1 },
        { _tag: "Server", record: { ...spec(1), draining: false, origin: "configured" } },
        9_750
      )
      yield* settled
      expect((yield* a.cluster.view).registry.syncLagSeconds).toBe(0.25)
      expect((yield* Metric.value(Metrics.registrySyncLag)).value).toBe(0.25)
    })
  )
})
