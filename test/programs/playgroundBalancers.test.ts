import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Logger, LogLevel, Option } from "effect"
import { interactive } from "../../src/programs/interactive.js"
import { startServers } from "../../src/programs/playground.js"
import { startBalancers } from "../../src/programs/playgroundBalancers.js"
import * as HealthMonitor from "../../src/services/balancer/HealthMonitor.js"
import * as LocalRedis from "../../src/services/balancer/shared/LocalRedis.js"
import * as Client from "../../src/services/client/Client.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { refused } from "../support/net.js"
import { haveRedis, redisServerPath, redisSkipReason } from "../support/redis.js"
import * as TestTerminal from "../support/terminal.js"
import { down, enter } from "../support/terminal.js"

if (!haveRedis) console.warn(redisSkipReason)

/** Two balancers sharing a private Redis, with two servers given both. */
const twoBalancers = Effect.gen(function* () {
  const balancers = yield* startBalancers({
    count: 2,
    strategy: "round-robin",
    port: 0,
    adminPort: 0,
    monitor: { ...HealthMonitor.defaults, probeInterval: Duration.millis(100), deadAfter: Duration.seconds(1) },
    accessLog: false,
    redis: { ...LocalRedis.defaults, command: redisServerPath }
  })
  yield* startServers(balancers.addresses, [1, 1], Option.none())
  return balancers
})

const liveIds = (balancers: Effect.Effect.Success<typeof twoBalancers>) =>
  Effect.flatMap(balancers.registries, (registries) =>
    Effect.forEach(registries, (registry) =>
      Effect.map(registry.list, (servers) =>
        servers
          .filter((server) => server.state === "live")
          .map((server) => server.id)
          .sort()
      )
    )
  )

// The menu with balancer controls only: List, Download, Compute, Status, Strategy, Kill a balancer, Revive a balancer, Quit.
const killBalancer = [...Array.from({ length: 5 }, () => down), enter]
const reviveBalancer = [...Array.from({ length: 6 }, () => down), enter]
const listFiles = [enter]

describe.skipIf(!haveRedis)("the playground's --balancers 2", () => {
  it.scopedLive(
    "has both balancers list every server, and the client keeps working as each in turn is killed from the menu",
    () =>
      Effect.gen(function* () {
        const balancers = yield* twoBalancers
        expect(balancers.addresses).toHaveLength(2)
        yield* eventually(
          liveIds(balancers),
          (each) => each.length === 2 && each.every((ids) => ids.join() === "s1,s2")
        )
        const controls = balancers.controls
        if (controls === undefined) return expect.fail("two balancers come with the menu's controls")

        // Kill b1, list; revive b1, kill b2, list: whichever balancer the client keeps to, one of
        // the kills takes it away.
        const keys = [
          ...[...killBalancer, enter],
          ...listFiles,
          ...[...reviveBalancer, enter],
          ...[...killBalancer, down, enter],
          ...listFiles
        ]
        const shown: Array<string> = []
        const client = Client.layer({ ...Client.defaults, balancer: balancers.addresses }).pipe(
          Layer.provideMerge(Wire.layer),
          Layer.provideMerge(Layer.merge(NodeFileSystem.layer, NodePath.layer))
        )
        yield* interactive({ balancer: balancers.addresses, out: ".", balancers: controls }).pipe(
          Effect.provide(client),
          Effect.provide(TestTerminal.layer(keys, shown))
        )
        const text = TestTerminal.plain(shown)
        expect(text).toContain("Kill a balancer")
        expect(text).toContain("✓ killed b1")
        expect(text).toContain("✓ revived b1")
        expect(text).toContain("✓ killed b2")
        expect(text.match(/\d+ files on s\d/g)).toHaveLength(2)
        expect(text).not.toContain("✗")
        expect(yield* controls.running).toEqual(["b1"])
        expect(yield* controls.stopped).toEqual(["b2"])
        const [b1, b2] = balancers.addresses
        expect(yield* refused(b2?.port ?? 0)).toBe(true)
        expect(yield* refused(b1?.port ?? 0)).toBe(false)
        // The revived b1 knows both servers (from the shared registry, and their own registration).
        yield* eventually(liveIds(balancers), (each) => each.length === 1 && each[0]?.join() === "s1,s2")
      }).pipe(Logger.withMinimumLogLevel(LogLevel.Error)),
    30_000
  )
})
