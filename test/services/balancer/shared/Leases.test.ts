import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Option, TestClock } from "effect"
import type { ServerSpec } from "../../../../src/domain/Server.js"
import * as ServerRegistry from "../../../../src/services/balancer/ServerRegistry.js"
import * as Cluster from "../../../../src/services/balancer/shared/Cluster.js"
import {
  type Holder,
  type MemoryBackend,
  makeMemoryBackend,
  type ServerRecord
} from "../../../../src/services/balancer/shared/Store.js"
import { spec } from "../../../support/balancer.js"
import { clusterMember, settled } from "../../../support/shared.js"

/** Moves the clock on to `ms` (since the test's start) in quarter seconds, letting the fibers run at each. */
const until = (ms: number) =>
  Effect.gen(function* () {
    while ((yield* Clock.currentTimeMillis) < ms) {
      yield* TestClock.adjust("250 millis")
      yield* settled
    }
  })

/** A balancer run that announced itself once, at 0, and then died: its announcement lapses at 5 s. */
const dead: Holder = { balancer: "a", instance: "run-of-a" }

const announceDead = (backend: MemoryBackend) =>
  backend
    .connect()
    .announce(
      { id: dead.balancer, instance: dead.instance, addresses: {}, version: "test", startedAt: 0, lastSeenAt: 0 },
      Cluster.defaults.expireAfter
    )

const registered = (server: ServerSpec, holder?: Holder): ServerRecord => ({
  ...server,
  draining: false,
  origin: "registered",
  ...(holder === undefined ? {} : { holder })
})

/** Writes `record` as its holder `a` did. */
const heldByDead = (backend: MemoryBackend, record: ServerRecord) =>
  backend.writeAs({ from: dead.balancer, instance: dead.instance, sequence: 1 }, { _tag: "Server", record })

const listed = (registry: ServerRegistry.ServerRegistry["Type"], server: ServerSpec) =>
  Effect.map(registry.get(server.id), Option.isSome)

const inStore = (backend: MemoryBackend, server: ServerSpec) =>
  Effect.map(backend.connect().snapshot, (snapshot) => snapshot.servers.find((record) => record.id === server.id))

describe("leases (on the in-memory store, by the TestClock)", () => {
  it.scoped(
    "a holder's announcement lapses: its servers go after the lease, not before, once however many see it; others stay",
    () =>
      Effect.gen(function* () {
        const backend = makeMemoryBackend()
        yield* announceDead(backend)
        heldByDead(backend, registered(spec(1), dead))
        // Without a holder (an older balancer's record), and configured: never expire.
        heldByDead(backend, registered(spec(2)))
        backend.writeAs(
          { from: "op", instance: "op", sequence: 1 },
          {
            _tag: "Server",
            record: { ...spec(3), draining: false, origin: "configured" }
          }
        )
        const b = yield* clusterMember(backend, "b", yield* Effect.scope)
        const c = yield* clusterMember(backend, "c", yield* Effect.scope)
        yield* settled
        expect(yield* listed(b.registry, spec(1))).toBe(true)
        // Unannounced from 5 s: seen so from 5 s, so listed until 10 s.
        yield* until(9_750)
        expect(yield* listed(b.registry, spec(1))).toBe(true)
        expect(yield* listed(c.registry, spec(1))).toBe(true)
        yield* until(11_000)
        expect(yield* listed(b.registry, spec(1))).toBe(false)
        expect(yield* listed(c.registry, spec(1))).toBe(false)
        expect(yield* inStore(backend, spec(1))).toBeUndefined()
        // b and c both acted: one removal was written.
        const removals = backend.writes.filter((write) => write.change._tag === "Removed")
        expect(removals.length).toBe(1)
        yield* until(30_000)
        for (const server of [spec(2), spec(3)]) {
          expect(yield* listed(b.registry, server)).toBe(true)
          expect(yield* inStore(backend, server)).toBeDefined()
        }
      })
  )

  it.scoped("a server that registered again on another balancer (a take-over) stays after its old holder died", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      yield* announceDead(backend)
      heldByDead(backend, registered(spec(1), dead))
      const b = yield* clusterMember(backend, "b", yield* Effect.scope)
      const c = yield* clusterMember(backend, "c", yield* Effect.scope)
      yield* settled
      yield* until(3_000)
      yield* b.registry.register(spec(1))
      yield* settled
      expect((yield* inStore(backend, spec(1)))?.holder?.balancer).toBe("b")
      // A weight set on c keeps b as the holder.
      yield* c.registry.setWeight(spec(1).id, spec(4, 5).weight)
      yield* settled
      expect(yield* inStore(backend, spec(1))).toMatchObject({ weight: 5, holder: { balancer: "b" } })
      yield* until(20_000)
      expect(yield* listed(c.registry, spec(1))).toBe(true)
      expect(yield* inStore(backend, spec(1))).toBeDefined()
    })
  )

  it.scoped(
    "Redis restarted empty: announcements missing for a while remove nothing, and an absence counts again from the restart",
    () =>
      Effect.gen(function* () {
        const backend = makeMemoryBackend()
        yield* announceDead(backend)
        heldByDead(backend, registered(spec(2), dead))
        const b = yield* clusterMember(backend, "b", yield* Effect.scope)
        // c renews every 3 s: after the restart its announcement is missing for 2.5 s.
        const c = yield* clusterMember(backend, "c", yield* Effect.scope, { heartbeat: Duration.seconds(3) })
        yield* c.registry.register(spec(1))
        yield* until(6_500)
        backend.restartEmpty()
        yield* settled
        // Written back by b and c, holder included.
        expect((yield* inStore(backend, spec(2)))?.holder).toEqual(dead)
        // a was seen missing from 5 s, but the restart at 6.5 s starts that again: not gone at 11 s.
        yield* until(11_000)
        expect(yield* listed(b.registry, spec(2))).toBe(true)
        yield* until(13_000)
        expect(yield* listed(b.registry, spec(2))).toBe(false)
        yield* until(20_000)
        expect(yield* listed(b.registry, spec(1))).toBe(true)
        expect(yield* inStore(backend, spec(1))).toMatchObject({ holder: { balancer: "c" } })
      })
  )

  it.scoped("while the store is down nothing expires; once it is back, a whole lease is waited again", () =>
    Effect.gen(function* () {
      const backend = makeMemoryBackend()
      yield* announceDead(backend)
      heldByDead(backend, registered(spec(1), dead))
      const b = yield* clusterMember(backend, "b", yield* Effect.scope)
      yield* until(8_000)
      backend.setUp(false)
      yield* until(30_000)
      expect(yield* listed(b.registry, spec(1))).toBe(true)
      backend.setUp(true)
      yield* until(34_000)
      expect(yield* listed(b.registry, spec(1))).toBe(true)
      expect(yield* inStore(backend, spec(1))).toBeDefined()
      yield* until(36_500)
      expect(yield* listed(b.registry, spec(1))).toBe(false)
    })
  )

  it.scoped(
    "a holder alive but unannounced for a while (stalled) takes back the leases others ended: its servers stay listed",
    () =>
      Effect.gen(function* () {
        const backend = makeMemoryBackend()
        // a announces at 0 and next at 12 s: unannounced from 5 s, its leases end at about 10 s.
        const a = yield* clusterMember(backend, "a", yield* Effect.scope, { heartbeat: Duration.seconds(12) })
        const b = yield* clusterMember(backend, "b", yield* Effect.scope)
        yield* settled
        yield* a.registry.register(spec(1))
        yield* until(4_000)
        expect((yield* inStore(backend, spec(1)))?.holder?.balancer).toBe("a")
        yield* until(11_500)
        // b ended a's lease, and a, which still has the server registered, shared it again.
        expect(
          backend.writes.some((write) => write.change._tag === "Removed" && write.change.leaseEnded === true)
        ).toBe(true)
        expect((yield* inStore(backend, spec(1)))?.holder?.balancer).toBe("a")
        expect(yield* listed(b.registry, spec(1))).toBe(true)
        expect(yield* listed(a.registry, spec(1))).toBe(true)
      })
  )
})
