/**
 * A cluster of real processes: three balancers sharing one real `redis-server`, servers and clients
 * given all three. A balancer SIGKILLed under load costs no request; Redis killed and restarted empty
 * costs nothing either: the balancers serve throughout and fill it again. Where `redis-server` is
 * missing, this file says so and skips.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Fiber } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { allSee, balancer, request, type Status } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { clientFor, liveServers, startServer, workspace } from "../support/load.js"
import { haveRedis, redisSkipReason, startRedis } from "../support/redis.js"

if (!haveRedis) console.warn(redisSkipReason)

const probing = ["--probe-interval", "100ms", "--dead-after", "600ms"]

/** Redis, three balancers joined to it, and `servers` server processes given all three (first one first). */
const cluster = (namespace: string, servers: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const space = yield* workspace
    const redis = yield* startRedis()
    const balancers = yield* Effect.all(
      [1, 2, 3].map(() => balancer(redis.url, namespace, probing)),
      { concurrency: "unbounded" }
    )
    yield* Effect.forEach(balancers, (each) => each.running.waitFor(/joined the shared registry/, 5000), {
      concurrency: "unbounded"
    })
    const ports = balancers.map((each) => each.port)
    yield* Effect.forEach(servers, (id) => startServer(id, 0, ports, space.served), { concurrency: "unbounded" })
    yield* Effect.forEach(ports, (port) => eventually(liveServers(port), (n) => n === servers.length), {
      concurrency: "unbounded"
    })
    return { space, redis, balancers, ports, admins: balancers.map((each) => each.admin) }
  })

/** The Locates a balancer answered, by its /metrics. */
const locatesAt = (admin: number) =>
  Effect.map(
    Effect.promise(() => fetch(`http://127.0.0.1:${admin}/metrics`).then((response) => response.text())),
    (text) =>
      text
        .split("\n")
        .filter((line) => line.startsWith("effect_lb_locates_total{"))
        .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
  )

const patch = (admin: number, id: string, body: unknown) =>
  request(admin, `/api/servers/${id}`, {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body)
  })

describe.skipIf(!haveRedis)("a cluster of three balancers on Redis (processes)", () => {
  it.scopedLive(
    "a balancer SIGKILLed during 500 requests from 20 clients given all three: every request completes, downloads exact",
    () =>
      Effect.gen(function* () {
        const { balancers, ports, space } = yield* cluster(`kill-${process.pid}`, ["s1", "s2", "s3"])
        const [doomed] = balancers
        if (doomed === undefined) return expect.unreachable()
        // Twenty clients, each starting at a random balancer (so some at the one to be killed).
        const clients = yield* Effect.forEach(Array.from({ length: 20 }), () => clientFor(ports))
        const outs = clients.map((_, w) => {
          const out = Path.join(space.base, `out${w}`)
          Fs.mkdirSync(out)
          return out
        })

        // Paced by the load: the kill lands once 200 requests completed, with requests under way;
        // requests from the 300th on wait for it, so the last 200 run with two balancers.
        const killed = yield* Deferred.make<number>()
        let completed = 0
        const killer = yield* Effect.forkScoped(
          Effect.gen(function* () {
            while (completed < 200) yield* Effect.sleep("2 millis")
            const before = yield* locatesAt(doomed.admin)
            doomed.running.child.kill("SIGKILL")
            yield* doomed.running.exited
            yield* Deferred.succeed(killed, before)
          })
        )
        let next = 0
        let downloads = 0
        const worker = (w: number) =>
          Effect.gen(function* () {
            const client = clients[w]
            const out = outs[w]
            if (client === undefined || out === undefined) return expect.unreachable()
            while (next < 500) {
              const n = next++
              if (n >= 300) yield* Deferred.await(killed)
              if (n % 3 === 0) {
                const saved = yield* client.download("data.bin", out, undefined, { overwrite: true })
                expect(Fs.readFileSync(saved.value.path).equals(space.data)).toBe(true)
                downloads++
              } else if (n % 3 === 1) expect((yield* client.list()).value).toHaveProperty("notes.txt")
              else expect((yield* client.compute(0)).value).toBe(0)
              completed++
            }
          })
        const started = yield* Clock.currentTimeMillis
        yield* Effect.forEach(clients, (_, w) => worker(w), { concurrency: "unbounded", discard: true })
        const took = (yield* Clock.currentTimeMillis) - started
        // The killed balancer had been answering some of these clients.
        yield* Fiber.join(killer)
        expect(yield* Deferred.await(killed)).toBeGreaterThan(0)
        expect(completed).toBe(500)
        expect(downloads).toBe(167)
        console.log(`500 requests from 20 clients across a balancer kill in ${took} ms`)
        // The servers moved to the balancers left; both still have all three live.
        for (const port of ports.slice(1)) expect(yield* liveServers(port)).toBe(3)
      }),
    30_000
  )

  it.scopedLive(
    "Redis killed, then restarted empty: Locates served meanwhile; in 2 s every balancer has it filled again, and changes reach all",
    () =>
      Effect.gen(function* () {
        const namespace = `restart-${process.pid}`
        const { admins, ports, redis } = yield* cluster(namespace, ["s1", "s2"])
        const [one, two, three] = admins
        if (one === undefined || two === undefined || three === undefined) return expect.unreachable()
        // Known before: s1's weight set through one, the strategy through two.
        expect((yield* patch(one, "s1", { weight: 3 })).status).toBe(200)
        expect(
          (yield* request(two, "/api/strategy", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ strategy: "weighted-round-robin" })
          })).status
        ).toBe(200)
        const before = (status: Status) =>
          status.strategy === "weighted-round-robin" &&
          status.servers.get("s1")?.weight === 3 &&
          status.servers.get("s2")?.state === "live"
        yield* allSee(admins, before)

        redis.child.kill("SIGKILL")
        yield* Effect.async<void>((resume) => {
          redis.child.once("exit", () => resume(Effect.void))
          if (redis.child.exitCode !== null || redis.child.signalCode !== null) resume(Effect.void)
        })
        // Down: the balancers serve what they know (for longer than a lease), and say operator
        // changes cannot be made.
        const client = yield* clientFor(ports, { attempts: 1 })
        for (let i = 0; i < 6; i++) expect((yield* client.compute(0)).value).toBe(0)
        yield* Effect.sleep("1500 millis")
        for (let i = 0; i < 6; i++) expect((yield* client.list()).value).toHaveProperty("notes.txt")
        yield* allSee(admins, before)
        // An operator's change is refused (503, typed), not made on one balancer alone.
        const refused = yield* patch(one, "s1", { weight: 9 })
        expect(refused.status).toBe(503)
        expect(refused.body).toMatchObject({ _tag: "RegistryUnavailable" })
        yield* allSee(admins, before)

        // Back, empty, on the same port.
        yield* startRedis({ port: redis.port })
        const answered = yield* Clock.currentTimeMillis
        // A balancer joining now is given everything the three knew: Redis holds it all again.
        const fourth = yield* balancer(redis.url, namespace, probing)
        yield* allSee([...admins, fourth.admin], before, "2 seconds")
        const converged = (yield* Clock.currentTimeMillis) - answered
        console.log(`a balancer started when Redis answered again had everything ${converged} ms after`)

        // A change made after reaches all: a weight through three, a drain through the fourth.
        yield* eventually(patch(three, "s2", { weight: 4 }), (response) => response.status === 200, "2 seconds")
        yield* allSee([...admins, fourth.admin], (status) => status.servers.get("s2")?.weight === 4)
        const drained = yield* request(fourth.admin, "/api/servers/s1", { method: "DELETE" })
        expect(drained.status).toBe(202)
        yield* allSee([...admins, fourth.admin], (status) => {
          const s1 = status.servers.get("s1")
          return s1 === undefined || s1.state === "draining"
        })
      }),
    30_000
  )
})
