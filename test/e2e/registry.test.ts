/**
 * Three real balancer processes sharing one registry on a real `redis-server` (started here on a free
 * loopback port): a server registered through one is listed by all three within a second; a weight,
 * a strategy and a drain made on one are seen by all; a server's load, reported to one, shows on
 * another. Where `redis-server` is missing, this file says
 * so and skips.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import { allSee, balancer, request, statusOf } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import * as Net from "node:net"
import { echoServer } from "../support/net.js"
import { runToEnd, spawn } from "../support/process.js"
import { freeRedisPort, haveRedis, redisSkipReason, startRedis } from "../support/redis.js"

if (!haveRedis) console.warn(redisSkipReason)

/** A raw control connection to a balancer port on 127.0.0.1, closed with the scope. */
const controlConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = Net.createConnection({ host: "127.0.0.1", port })
      socket.on("error", () => undefined)
      return socket
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

describe.skipIf(!haveRedis)("balancers sharing a registry on Redis", () => {
  it.scopedLive(
    "a server registered through one is listed by all three; a weight, a strategy and a drain made on one are seen by all",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const namespace = `test-${process.pid}`
        const balancers = yield* Effect.all(
          [1, 2, 3].map(() => balancer(redis.url, namespace)),
          {
            concurrency: "unbounded"
          }
        )
        const [one, two, three] = balancers
        if (one === undefined || two === undefined || three === undefined) return expect.unreachable()
        const admins = balancers.map((each) => each.admin)
        yield* Effect.forEach(balancers, (each) => each.running.waitFor(/joined the shared registry/, 5000), {
          concurrency: "unbounded"
        })

        // A server registers with the first balancer only.
        yield* spawn(["server", "--port", "0", "--id", "one", "--balancer", `127.0.0.1:${one.port}`])
        yield* eventually(statusOf(one.admin), (status) => status.servers.has("one"), "10 seconds")
        yield* allSee(admins, (status) => status.servers.has("one"))

        yield* request(two.admin, "/api/servers/one", {
          method: "PATCH",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ weight: 5 })
        })
        yield* allSee(admins, (status) => status.servers.get("one")?.weight === 5)

        const switched = yield* runToEnd(["strategy", "weighted-round-robin", "--balancer", `127.0.0.1:${three.port}`])
        expect(switched.code).toBe(0)
        yield* allSee(admins, (status) => status.strategy === "weighted-round-robin")

        // Added on the third, drained (then removed, having no connections) through the second.
        const echo = yield* echoServer
        const address = echo.address()
        const echoPort = typeof address === "object" && address !== null ? address.port : 0
        const added = yield* request(three.admin, "/api/servers", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ id: "echo", host: "127.0.0.1", port: echoPort, weight: 2 })
        })
        expect(added.status).toBe(201)
        yield* allSee(admins, (status) => status.servers.get("echo")?.weight === 2)
        const drained = yield* request(two.admin, "/api/servers/echo", { method: "DELETE" })
        expect(drained.status).toBe(202)
        yield* allSee(admins, (status) => !status.servers.has("echo") && status.servers.has("one"))
      }),
    20_000
  )

  it.scopedLive(
    "Redis drops every connection, its data intact: both balancers read it again and a change made then reaches both within 2 s",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const namespace = `cut-${process.pid}`
        const [a, b] = yield* Effect.all([balancer(redis.url, namespace), balancer(redis.url, namespace)], {
          concurrency: "unbounded"
        })
        yield* Effect.forEach([a, b], (each) => each.running.waitFor(/joined the shared registry/, 5000), {
          discard: true
        })
        const added = yield* request(a.admin, "/api/servers", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ host: "127.0.0.1", port: 4999, id: "s1", weight: 2 })
        })
        expect(added.status).toBe(201)
        yield* allSee([a.admin, b.admin], (status) => status.servers.get("s1")?.weight === 2)
        // Every client connection of Redis closed by Redis itself (both balancers' two each).
        const admin = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true, maxRetriesPerRequest: 1 })
        yield* Effect.acquireRelease(
          Effect.promise(() => admin.connect()),
          () => Effect.sync(() => admin.disconnect())
        )
        const killed = yield* Effect.promise(() => admin.call("CLIENT", "KILL", "SKIPME", "yes"))
        expect(Number(killed)).toBeGreaterThanOrEqual(4)
        const cut = Date.now()
        const changed = yield* eventually(
          request(a.admin, "/api/servers/s1", {
            method: "PATCH",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ weight: 5 })
          }),
          (response) => response.status === 200,
          "2 seconds"
        )
        expect(changed.status).toBe(200)
        yield* allSee([a.admin, b.admin], (status) => status.servers.get("s1")?.weight === 5, "2 seconds")
        expect(Date.now() - cut).toBeLessThan(2_000)
        yield* Effect.forEach([a, b], (one) => one.running.waitFor(/answers again/, 2000), { discard: true })
      }),
    20_000
  )

  it.scopedLive(
    "a balancer started while Redis is down serves its --server entries, and shares them when Redis comes up",
    () =>
      Effect.gen(function* () {
        const port = yield* freeRedisPort
        const echo = yield* echoServer
        const address = echo.address()
        const echoPort = typeof address === "object" && address !== null ? address.port : 0
        const first = yield* balancer(`redis://127.0.0.1:${port}`, "down", [
          "--server",
          `127.0.0.1:${echoPort}`,
          "--health",
          "tcp"
        ])
        yield* first.running.waitFor(/shared registry .* is unreachable/, 5000)
        // Serving what it knows: the server is probed live and located.
        yield* eventually(
          statusOf(first.admin),
          (status) => status.servers.get(`127.0.0.1:${echoPort}`)?.state === "live",
          "5 seconds"
        )
        yield* startRedis({ port })
        yield* first.running.waitFor(/joined the shared registry/, 5000)
        const second = yield* balancer(`redis://127.0.0.1:${port}`, "down")
        yield* allSee([second.admin], (status) => status.servers.has(`127.0.0.1:${echoPort}`), "3 seconds")
      }),
    20_000
  )

  it.scopedLive(
    "a server's load, reported to the balancer it registered with, shows on another within a second",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const namespace = `loads-${process.pid}`
        const [one, two] = yield* Effect.all(
          [1, 2].map(() => balancer(redis.url, namespace, ["--health", "tcp"])),
          { concurrency: "unbounded" }
        )
        if (one === undefined || two === undefined) return expect.unreachable()
        yield* Effect.forEach([one, two], (each) => each.running.waitFor(/joined the shared registry/, 5000), {
          concurrency: "unbounded"
        })
        // A server (answering the TCP probes) registers with the first, then reports its load there.
        const echo = yield* echoServer
        const address = echo.address()
        const echoPort = typeof address === "object" && address !== null ? address.port : 0
        const control = yield* controlConnection(one.port)
        control.write(
          JSON.stringify({ _tag: "Register", server: { id: "loaded", host: "127.0.0.1", port: echoPort, weight: 1 } }) +
            "\n"
        )
        yield* allSee([two.admin], (status) => status.servers.get("loaded")?.state === "live", "5 seconds")
        control.write(JSON.stringify({ _tag: "Load", active: 7, latencyMs: 2.5 }) + "\n")
        yield* allSee([two.admin], (status) => status.servers.get("loaded")?.active === 7, "1 second")
        const shown = (yield* statusOf(two.admin)).servers.get("loaded")
        expect(shown?.latencyMs).toBe(2.5)
        expect(shown?.state).toBe("live")
      }),
    20_000
  )
})
