import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually } from "../support/eventually.js"
import { balancer, request } from "../support/cluster.js"
import { runToEnd, spawn } from "../support/process.js"
import { haveRedis, redisSkipReason, startRedis } from "../support/redis.js"

if (!haveRedis) console.warn(redisSkipReason)

interface Cluster {
  readonly registry: { readonly connected: boolean; readonly namespace: string; readonly url: string }
  readonly balancers: ReadonlyArray<{
    readonly id: string
    readonly self: boolean
    readonly addresses: { readonly balancer?: string; readonly admin?: string }
  }>
}

/** The `cluster` field of a balancer's `/api/status`. */
const clusterOf = (admin: number) =>
  Effect.map(request(admin, "/api/status"), ({ body }) => (body as { cluster?: Cluster }).cluster)

/** A balancer on the registry at `url`, in the namespace `view`, named `id`. */
const member = (url: string, id: string) => balancer(url, "view", ["--balancer-id", id])

const ids = (cluster: Cluster | undefined) => cluster?.balancers.map((each) => `${each.id}${each.self ? "*" : ""}`)

describe.skipIf(!haveRedis)("the cluster on the admin API (real Redis, two balancers)", () => {
  it.scopedLive(
    "each balancer's /api/status lists both, and the registry; one stopped cleanly leaves the list",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const [one, two] = yield* Effect.all([member(redis.url, "one"), member(redis.url, "two")], {
          concurrency: "unbounded"
        })
        const both = (cluster: Cluster | undefined) => cluster?.balancers.length === 2
        const seenByOne = yield* eventually(clusterOf(one.admin), both, "5 seconds")
        const seenByTwo = yield* eventually(clusterOf(two.admin), both, "5 seconds")
        expect(ids(seenByOne)).toEqual(["one*", "two"])
        expect(ids(seenByTwo)).toEqual(["one", "two*"])
        expect(seenByOne?.registry).toMatchObject({ namespace: "view", url: redis.url.replace(/\/$/, "") })
        expect(seenByOne?.balancers[1]?.addresses).toEqual({
          balancer: `127.0.0.1:${two.port}`,
          admin: `127.0.0.1:${two.admin}`
        })
        yield* eventually(clusterOf(one.admin), (cluster) => cluster?.registry.connected === true, "5 seconds")

        two.running.child.kill("SIGTERM")
        expect(yield* two.running.exited).toBe(0)
        expect(ids(yield* clusterOf(one.admin))).toEqual(["one*"])
      }),
    20_000
  )

  it.scopedLive(
    "effect-lb status asked of one balancer prints the registry, connected, and both balancers; --json carries them",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const [one, two] = yield* Effect.all([member(redis.url, "one"), member(redis.url, "two")], {
          concurrency: "unbounded"
        })
        yield* eventually(
          clusterOf(one.admin),
          (cluster) => cluster?.balancers.length === 2 && cluster.registry.connected,
          "5 seconds"
        )
        const shown = yield* runToEnd(["status", "--balancer", `127.0.0.1:${one.port}`])
        expect(shown.code).toBe(0)
        const url = redis.url.replace(/\/$/, "")
        expect(shown.output).toContain(`registry: ${url}, namespace view: connected, revision `)
        expect(shown.output).toMatch(/^balancers: 2$/m)
        expect(shown.output).toMatch(
          new RegExp(
            `^one \\(this one\\)\\s+balancer 127\\.0\\.0\\.1:${one.port}, admin 127\\.0\\.0\\.1:${one.admin}\\s+\\d+\\.\\d+\\.\\d+\\s+\\d+s\\s+\\d+s ago$`,
            "m"
          )
        )
        expect(shown.output).toMatch(new RegExp(`^two\\s+balancer 127\\.0\\.0\\.1:${two.port}, admin`, "m"))
        const json = yield* runToEnd(["status", "--balancer", `127.0.0.1:${two.port}`, "--json"])
        expect(json.code).toBe(0)
        const report = JSON.parse(json.output) as { cluster?: Cluster }
        expect(ids(report.cluster)).toEqual(["one", "two*"])
        expect(report.cluster?.registry).toMatchObject({ connected: true, namespace: "view", url })
      }),
    20_000
  )
})

describe("the cluster without a registry", () => {
  it.scopedLive("effect-lb status of a balancer without --registry prints no cluster", () =>
    Effect.gen(function* () {
      const alone = yield* spawn(["balancer", "--port", "0"])
      const port = Number((yield* alone.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))[1])
      const shown = yield* runToEnd(["status", "--balancer", `127.0.0.1:${port}`])
      expect(shown.code).toBe(0)
      expect(shown.output).toBe(
        "strategy: round-robin\nID  ADDRESS  WEIGHT  STATE  ACTIVE  RESPONSE  LOCATED\n(no servers)\n"
      )
      const json = yield* runToEnd(["status", "--balancer", `127.0.0.1:${port}`, "--json"])
      expect(JSON.parse(json.output)).not.toHaveProperty("cluster")
    })
  )
})
