import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either } from "effect"
import { Redis } from "ioredis"
import { Host, Port, ServerId, Weight } from "../../../../src/domain/Server.js"
import * as RedisStore from "../../../../src/services/balancer/shared/RedisStore.js"
import type { LoadBatch, Published } from "../../../../src/services/balancer/shared/Store.js"
import { haveRedis, redisSkipReason, startRedis } from "../../../support/redis.js"

if (!haveRedis) console.warn(redisSkipReason)

describe("--registry URLs", () => {
  it("takes redis:// and rediss://, with a port and a database or without", () => {
    expect(RedisStore.parseRegistryUrl("redis://10.0.0.5")).toEqual(
      Either.right({ host: "10.0.0.5", port: 6379, db: 0, tls: false })
    )
    expect(RedisStore.parseRegistryUrl("rediss://cache.internal:6380/3")).toEqual(
      Either.right({ host: "cache.internal", port: 6380, db: 3, tls: true })
    )
    expect(RedisStore.parseRegistryUrl("redis://[::1]:7000")).toEqual(
      Either.right({ host: "::1", port: 7000, db: 0, tls: false })
    )
  })

  it("refuses a password (or a user) in the URL, another scheme, and a database that is not a number", () => {
    expect(RedisStore.parseRegistryUrl("redis://:secret@10.0.0.5")).toEqual(
      Either.left("a user or password in the URL")
    )
    expect(RedisStore.parseRegistryUrl("redis://admin@10.0.0.5")).toEqual(Either.left("a user or password in the URL"))
    expect(Either.isLeft(RedisStore.parseRegistryUrl("http://10.0.0.5"))).toBe(true)
    expect(Either.isLeft(RedisStore.parseRegistryUrl("redis://10.0.0.5/x"))).toBe(true)
    expect(Either.isLeft(RedisStore.parseRegistryUrl("10.0.0.5:6379"))).toBe(true)
  })
})

/** A store on a Redis of its own (namespace `t`), listening: what it hears, once it is connected. */
const listening = Effect.gen(function* () {
  const redis = yield* startRedis()
  const store = yield* RedisStore.make({
    target: { host: "127.0.0.1", port: redis.port, db: 0, tls: false },
    namespace: "t",
    timeout: Duration.seconds(2)
  })
  const connected = yield* Deferred.make<void>()
  const heard: Array<Published> = []
  yield* store.listen({
    connected: () => Deferred.unsafeDone(connected, Effect.void),
    disconnected: () => undefined,
    published: (message) => heard.push(message),
    unreadable: () => undefined
  })
  yield* Deferred.await(connected).pipe(Effect.timeout("3 seconds"))
  return { redis, store, heard }
})

describe.skipIf(!haveRedis)("the Redis store", () => {
  it.scopedLive("writes a change atomically: the snapshot holds it and the channel carries it with its revision", () =>
    Effect.gen(function* () {
      const { store, heard } = yield* listening
      const record = {
        id: ServerId.make("s1"),
        host: Host.make("127.0.0.1"),
        port: Port.make(4001),
        weight: Weight.make(3),
        draining: false,
        origin: "configured" as const
      }
      const signer = { from: "b1", instance: "run", sequence: 1 }
      expect(yield* store.write(signer, { _tag: "Server", record })).toBe(1)
      expect(yield* store.write({ ...signer, sequence: 2 }, { _tag: "Strategy", name: "weighted-round-robin" })).toBe(2)
      const first = yield* store.snapshot
      expect(first).toEqual({ revision: 2, strategy: "weighted-round-robin", servers: [record], epoch: first.epoch })
      // The epoch is set once (by the first read) and stays.
      expect(first.epoch).toMatch(/^[0-9a-f-]{36}$/)
      yield* Effect.sleep("20 millis").pipe(
        Effect.repeat({ until: () => heard.length >= 2 }),
        Effect.timeout("2 seconds")
      )
      expect(heard.map((message) => [message.revision, message.from, message.sequence, message.change._tag])).toEqual([
        [1, "b1", 1, "Server"],
        [2, "b1", 2, "Strategy"]
      ])
      // A strategy offered only if there is none: not written, no revision, nothing published.
      expect(
        yield* store.write({ ...signer, sequence: 9 }, { _tag: "Strategy", name: "round-robin", ifUnset: true })
      ).toBe(-1)
      expect((yield* store.snapshot).strategy).toBe("weighted-round-robin")
      yield* store.write({ ...signer, sequence: 3 }, { _tag: "Removed", id: record.id })
      expect(yield* store.snapshot).toEqual({
        revision: 3,
        strategy: "weighted-round-robin",
        servers: [],
        epoch: first.epoch
      })
    })
  )

  it.scopedLive("ends a run's leases only while it is not announced, once, and publishes each removal", () =>
    Effect.gen(function* () {
      const { store, heard } = yield* listening
      const holder = { balancer: "b1", instance: "run-1" }
      const server = (n: number) => ({
        id: ServerId.make(`s${n}`),
        host: Host.make("127.0.0.1"),
        port: Port.make(4000 + n),
        weight: Weight.make(1),
        draining: false
      })
      const signer = { from: "b1", instance: "run-1", sequence: 1 }
      yield* store.write(signer, { _tag: "Server", record: { ...server(1), origin: "registered", holder } })
      yield* store.write(signer, { _tag: "Server", record: { ...server(2), origin: "configured" } })
      yield* store.write(signer, {
        _tag: "Server",
        record: { ...server(3), origin: "registered", holder: { ...holder, instance: "run-2" } }
      })
      const member = { id: "b1", instance: "run-1", addresses: {}, version: "t", startedAt: 0, lastSeenAt: 0 }
      yield* store.announce(member, Duration.seconds(5))
      const expirer = { from: "b2", instance: "other", sequence: 7 }
      const ids = [1, 2, 3].map((n) => server(n).id)
      // Announced: nothing ends.
      expect(yield* store.expireLeases(expirer, holder, ids)).toEqual([])
      // A newer run of b1 announced: run-1's leases end; run-2's and the configured server stay.
      yield* store.announce({ ...member, instance: "run-2" }, Duration.seconds(5))
      expect(yield* store.expireLeases(expirer, holder, ids)).toEqual(["s1"])
      expect(yield* store.expireLeases(expirer, holder, ids)).toEqual([])
      const after = yield* store.snapshot
      expect(after.revision).toBe(4)
      expect(after.servers.map((record) => record.id).sort()).toEqual(["s2", "s3"])
      yield* Effect.sleep("20 millis").pipe(
        Effect.repeat({ until: () => heard.length >= 4 }),
        Effect.timeout("2 seconds")
      )
      expect(heard.at(-1)).toMatchObject({
        revision: 4,
        from: "b2",
        sequence: 7,
        change: { _tag: "Removed", id: "s1" }
      })
    })
  )

  it.scopedLive("fails at once, rather than queueing, while Redis is unreachable", () =>
    Effect.gen(function* () {
      const store = yield* RedisStore.make({
        target: { host: "127.0.0.1", port: 1, db: 0, tls: false },
        namespace: "t",
        timeout: Duration.seconds(1)
      })
      const started = Date.now()
      const result = yield* Effect.either(store.snapshot)
      expect(Either.isLeft(result) && result.left._tag).toBe("StoreUnavailable")
      expect(Date.now() - started).toBeLessThan(1000)
    })
  )

  it.scopedLive(
    "carries a batch of load reports on N:loads to another balancer's store; an unreadable one is told",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const config = {
          target: { host: "127.0.0.1", port: redis.port, db: 0, tls: false },
          namespace: "t",
          timeout: Duration.seconds(2)
        }
        const a = yield* RedisStore.make(config)
        const b = yield* RedisStore.make(config)
        const heard: Array<LoadBatch> = []
        const unreadable: Array<string> = []
        yield* b.listenLoads({ loads: (batch) => heard.push(batch), unreadable: (reason) => unreadable.push(reason) })
        // Subscribed to N:loads before N:changes, on one connection: once told `connected`, both are.
        const connected = yield* Deferred.make<void>()
        yield* b.listen({
          connected: () => Deferred.unsafeDone(connected, Effect.void),
          disconnected: () => undefined,
          published: () => undefined,
          unreadable: () => undefined
        })
        yield* Deferred.await(connected).pipe(Effect.timeout("3 seconds"))
        const batch: LoadBatch = {
          from: "a",
          instance: "run",
          publishedAt: 1,
          reports: [
            { id: ServerId.make("s1"), active: 4, latencyMs: 1.5 },
            { id: ServerId.make("s2"), active: 0 }
          ]
        }
        yield* a.publishLoads(batch)
        const raw = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis({ host: "127.0.0.1", port: redis.port }).on("error", () => undefined)),
          (client) => Effect.sync(() => client.disconnect())
        )
        yield* Effect.promise(() => raw.publish("t:loads", "{not a batch"))
        yield* Effect.sleep("20 millis").pipe(
          Effect.repeat({ until: () => heard.length + unreadable.length >= 2 }),
          Effect.timeout("2 seconds")
        )
        expect(heard).toEqual([batch])
        expect(unreadable).toEqual(["{not a batch"])
      })
  )
})
