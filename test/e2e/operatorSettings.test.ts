/**
 * Slow start, passive health and the PROXY protocol over real processes, set from the settings file
 * and changed by a reload (SIGHUP); and a SIGHUP that reaches the balancer while it starts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { Locate } from "../../src/domain/Protocol.js"
import { Host, Port } from "../../src/domain/Server.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { echoServer, raw } from "../support/net.js"
import { spawn } from "../support/process.js"

interface Shown {
  readonly id: string
  readonly state: string
  readonly effectiveWeight?: number
  readonly slowStartUntil?: number
  readonly ejectedUntil?: number
  readonly ejectedReason?: string
}

const fetched = (port: number, path: string) =>
  Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) }))

/** The servers as the admin API's `/api/status` shows them, by id. */
const statusOf = (adminPort: number) =>
  Effect.flatMap(fetched(adminPort, "/api/status"), (response) =>
    Effect.promise(async () => {
      const body = (await response.json()) as { servers: ReadonlyArray<Shown> }
      return Object.fromEntries(body.servers.map((server) => [server.id, server]))
    })
  )

const portOf = (server: Net.Server) => {
  const address = server.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

/** One Locate, `exclude` naming servers the client failed on: the id located, or the reply's tag. */
const locate = (port: number, exclude: ReadonlyArray<number> = []) =>
  ask(
    { host: "127.0.0.1", port },
    new Locate({ exclude: exclude.map((excluded) => ({ host: Host.make("127.0.0.1"), port: Port.make(excluded) })) })
  ).pipe(
    Effect.map((reply) => (reply._tag === "Located" ? reply.server.id : reply._tag)),
    Effect.provide(Wire.layer)
  )

/** The share of `count` Locates that went to `id`. */
const shareOf = (port: number, id: string, count: number) =>
  Effect.map(
    Effect.forEach(Array.from({ length: count }), () => locate(port)),
    (ids) => ids.filter((located) => located === id).length / count
  )

const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-operator-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

const settings = (servers: ReadonlyArray<string>, extra: ReadonlyArray<string> = []) =>
  [
    "port: 0",
    "strategy: weighted-round-robin",
    "health: { check: tcp, interval: 100ms, dead-after: 1s }",
    "admin: { port: 0 }",
    `servers: [${servers.join(", ")}]`,
    ...extra
  ].join("\n")

describe("slow start, passive health and the PROXY protocol from the settings file (real processes)", () => {
  it.scopedLive(
    "a reload turns them on: a server joining ramps up, two exclusions eject, backends get a PROXY header",
    () =>
      Effect.gen(function* () {
        const [a, b] = [portOf(yield* echoServer), portOf(yield* echoServer)]
        const [idA, idB] = [`127.0.0.1:${a}`, `127.0.0.1:${b}`] as const
        const file = Path.join(yield* tempDir, "effect-lb.yaml")
        Fs.writeFileSync(file, settings([idA], ["proxy: { port: 0, drain-timeout: 0 }"]))
        const balancer = yield* spawn(["balancer", "--config", file])
        const proxyPort = Number((yield* balancer.waitFor(/proxy listening on 127\.0\.0\.1:(\d+)/))[1])
        const port = Number((yield* balancer.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))[1])
        const adminPort = Number((yield* balancer.waitFor(/admin and dashboard on http:\/\/127\.0\.0\.1:(\d+)/))[1])
        yield* eventually(statusOf(adminPort), (servers) => servers[idA]?.state === "live")

        // Off by default: exclusions do not eject, backends get the client's bytes alone.
        for (let i = 0; i < 3; i++) yield* locate(port, [a])
        expect((yield* statusOf(adminPort))[idA]).toMatchObject({ state: "live" })
        expect((yield* raw(proxyPort, "hi\n", { expectLines: 1 })).data).toBe("hi\n")

        Fs.writeFileSync(
          file,
          settings(
            [idA, idB],
            [
              "proxy: { port: 0, drain-timeout: 0, send-proxy: v1 }",
              "slow-start: 4s",
              "passive-health: { eject-after: 2, eject-time: 5s }"
            ]
          )
        )
        balancer.child.kill("SIGHUP")
        const reloaded = (yield* balancer.waitFor(/configuration reloaded: [^\n]*/))[0]
        expect(reloaded).toContain("1 server added")
        expect(reloaded).not.toContain("needs a restart")

        // B joins: it takes a tenth of its weight at first, and a growing share.
        const joined = yield* eventually(statusOf(adminPort), (servers) => servers[idB]?.state === "live")
        expect(joined[idB]?.effectiveWeight).toBeLessThan(0.3)
        expect(joined[idB]?.slowStartUntil).toBeGreaterThan(Date.now())
        expect(joined[idA]?.effectiveWeight).toBeUndefined()
        const atFirst = yield* shareOf(port, idB, 200)
        yield* eventually(statusOf(adminPort), (servers) => (servers[idB]?.effectiveWeight ?? 1) >= 0.7)
        const later = yield* shareOf(port, idB, 200)
        expect(atFirst).toBeLessThan(0.25)
        expect(later).toBeGreaterThan(atFirst + 0.1)

        // A client that failed on A says so twice: A is ejected, with its reason, and counted.
        yield* locate(port, [a])
        yield* locate(port, [a])
        const ejected = (yield* statusOf(adminPort))[idA]
        expect(ejected).toMatchObject({ state: "dead", ejectedReason: "2 failures in a row: excluded by clients" })
        expect(ejected?.ejectedUntil).toBeGreaterThan(Date.now() + 3000)
        const metrics = yield* Effect.flatMap(fetched(adminPort, "/metrics"), (response) =>
          Effect.promise(() => response.text())
        )
        const ejections = metrics
          .split("\n")
          .filter((line) => line.startsWith("effect_lb_outlier_ejections_total{") && line.includes(`"${idA}"`))
        expect(ejections).toHaveLength(1)
        expect(ejections[0]).toContain('reason="excluded"')
        expect(ejections[0]).toMatch(/\} 1$/)

        // New proxied connections start with a PROXY v1 header naming the client. (After the ejection:
        // a proxied connection that ends cleanly ends its server's run of failures.)
        const proxied = yield* raw(proxyPort, "hi\n", { expectLines: 2 })
        expect(proxied.data).toMatch(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\nhi\n$/)

        balancer.child.kill("SIGTERM")
        expect(yield* balancer.exited).toBe(0)
      }),
    30_000
  )

  it.scopedLive("a SIGHUP while the balancer starts does not end it: it reloads once started", () =>
    Effect.gen(function* () {
      // The settings come through a FIFO: the balancer waits, mid-start, until the test writes them.
      const fifo = Path.join(yield* tempDir, "effect-lb.yaml")
      ChildProcess.execFileSync("mkfifo", [fifo])
      const writeSettings = (text: string) =>
        Effect.promise(async () => {
          const handle = await Fs.promises.open(fifo, "w")
          await handle.writeFile(text)
          await handle.close()
        }).pipe(Effect.timeout("10 seconds"))
      const balancer = yield* spawn(["balancer", "--config", fifo])
      const handle = yield* Effect.promise(() => Fs.promises.open(fifo, "w")).pipe(Effect.timeout("10 seconds"))
      // The balancer has opened the file for reading: it is starting.
      balancer.child.kill("SIGHUP")
      yield* Effect.promise(async () => {
        await handle.writeFile(settings([]))
        await handle.close()
      })
      yield* balancer.waitFor(/balancer listening on/)
      // Once started, it reloads for that SIGHUP: it reads the file again.
      yield* writeSettings(settings([]).replace("weighted-round-robin", "round-robin"))
      yield* balancer.waitFor(/configuration reloaded: [^\n]*strategy round-robin/)
      balancer.child.kill("SIGTERM")
      expect(yield* balancer.exited).toBe(0)
    })
  )
})
