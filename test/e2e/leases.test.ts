/**
 * Leases on real processes: three balancers sharing one real `redis-server`. A server registered
 * through one balancer only, whose balancer is SIGKILLed, leaves every list once that balancer's
 * announcement has lapsed and a lease has passed; a server that moves to another balancer stays.
 * Where `redis-server` is missing, this file says so and skips.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { allSee, balancer, request } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { startServer, workspace } from "../support/load.js"
import { haveRedis, redisSkipReason, startRedis } from "../support/redis.js"

if (!haveRedis) console.warn(redisSkipReason)

const probing = ["--probe-interval", "100ms", "--dead-after", "600ms"]

/** The announcement's 5 s, a 5 s lease, a 1 s reading: and 3 s of slack for a busy machine. */
const boundMs = 14_000

describe.skipIf(!haveRedis)("leases (processes on a real Redis)", () => {
  it.scopedLive(
    "a balancer SIGKILLed: the server registered only there leaves the others' lists within the bound; the one that moved stays",
    () =>
      Effect.gen(function* () {
        const space = yield* workspace
        const redis = yield* startRedis()
        const namespace = `leases-${process.pid}`
        const [a, b, c] = yield* Effect.all(
          [1, 2, 3].map(() => balancer(redis.url, namespace, probing)),
          { concurrency: "unbounded" }
        )
        if (a === undefined || b === undefined || c === undefined) return expect.unreachable()
        yield* Effect.forEach([a, b, c], (each) => each.running.waitFor(/joined the shared registry/, 5000), {
          concurrency: "unbounded"
        })
        // "only" knows a alone, so it cannot register anywhere else; "moves" knows a first, then b.
        yield* startServer("only", 0, a.port, space.served)
        yield* startServer("moves", 0, [a.port, b.port], space.served)
        yield* a.running.waitFor(/server moves registered/)
        const others = [b.admin, c.admin]
        yield* allSee(
          [a.admin, ...others],
          (status) => status.servers.has("only") && status.servers.has("moves"),
          "3 seconds"
        )

        // Every balancer announced (a lease lasts as long as its holder's announcement).
        const announced = Effect.map(
          request(b.admin, "/api/status"),
          ({ body }) => (body as { cluster?: { balancers?: ReadonlyArray<unknown> } }).cluster?.balancers?.length ?? 0
        )
        yield* eventually(announced, (count) => count === 3, "3 seconds")

        a.running.child.kill("SIGKILL")
        yield* a.running.exited
        const killedAt = yield* Clock.currentTimeMillis
        yield* b.running.waitFor(/server moves registered/)
        yield* allSee(others, (status) => !status.servers.has("only"), `${boundMs} millis`)
        const took = (yield* Clock.currentTimeMillis) - killedAt
        console.log(`a server held by a SIGKILLed balancer left the others' lists ${took} ms after the kill`)
        // Not before the announcement lapsed and a lease passed (5 s each, less a heartbeat).
        expect(took).toBeGreaterThan(8_000)
        expect(took).toBeLessThan(boundMs)
        expect(b.running.output() + c.running.output()).toMatch(/balancer .* is gone: its lease expired, removed only/)
        // The server that moved to b is b's now: it stays everywhere.
        yield* allSee(others, (status) => status.servers.get("moves")?.state === "live")
      }),
    40_000
  )
})
