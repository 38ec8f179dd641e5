import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { listening, statusOf } from "../support/ask.js"
import { spawn } from "../support/process.js"
import * as Wire from "../../src/services/wire/Wire.js"

const example = Path.join(import.meta.dirname, "..", "..", "effect-lb.example.yaml")

/** A file in a fresh temporary folder, removed with the scope. */
const fileWith = (name: string, text: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-config-"))
      const file = Path.join(dir, name)
      Fs.writeFileSync(file, text)
      return file
    }),
    (file) => Effect.sync(() => Fs.rmSync(Path.dirname(file), { recursive: true, force: true }))
  )

describe("effect-lb check-config and balancer --config (real processes)", () => {
  it.scopedLive(
    "check-config passes the example file (exit 0, one line) and refuses a bad one (exit 1, one line)",
    () =>
      Effect.gen(function* () {
        const good = yield* spawn(["check-config", example], { EFFECT_LB_TOKEN: "example-token" })
        expect(yield* good.exited).toBe(0)
        expect(good.output()).toMatch(/^.*effect-lb\.example\.yaml: OK \(.*3 servers.*token set\)\n$/)

        const missing = yield* spawn(["check-config", example], { EFFECT_LB_TOKEN: undefined })
        expect(yield* missing.exited).toBe(1)
        expect(missing.errors()).toBe(
          `effect-lb: ${example}: token must name a set environment variable (got env EFFECT_LB_TOKEN, which is not set)\n`
        )

        const bad = yield* fileWith("effect-lb.yaml", "health:\n  dead-after: 0\n")
        const refused = yield* spawn(["check-config", bad])
        expect(yield* refused.exited).toBe(1)
        expect(refused.errors()).toBe(
          `effect-lb: ${bad}: health.dead-after must be a duration from 10ms to 1h, like 500ms, 2s or 5m (got 0)\n`
        )
        expect(refused.output()).toBe("")

        const typo = yield* fileWith("typo.yaml", "proxy:\n  prot: 8080\n")
        const broken = yield* fileWith("broken.yaml", "port: 4000\nhealth:\n  rise: 2\n fall: 3\n")
        const [typoRun, brokenRun] = yield* Effect.all([spawn(["check-config", typo]), spawn(["check-config", broken])])
        expect([yield* typoRun.exited, yield* brokenRun.exited]).toEqual([1, 1])
        expect(typoRun.errors()).toBe(
          `effect-lb: ${typo}: proxy.prot is not a known key in proxy (keys: port, max-connections, connect-timeout, idle-timeout, drain-timeout, send-proxy, accept-proxy)\n`
        )
        expect(brokenRun.errors()).toBe(
          `effect-lb: ${broken}: not valid YAML or JSON at line 4, column 1: All mapping items must start at the same column\n`
        )
      }),
    30_000
  )

  it.scopedLive(
    "balancer --config starts from the file; a flag given wins over it; a bad file starts nothing",
    () =>
      Effect.gen(function* () {
        const file = yield* fileWith(
          "effect-lb.json",
          JSON.stringify({ port: 1, strategy: "weighted-round-robin", servers: ["127.0.0.1:1:2", "127.0.0.1:2"] })
        )
        const balancer = yield* spawn(["balancer", "--config", file, "--port", "0", "--log-level", "error"])
        const match = yield* balancer.waitFor(/listening on 127\.0\.0\.1:(\d+), strategy (\S+), (\d+) servers/)
        expect(match[2]).toBe("weighted-round-robin")
        expect(match[3]).toBe("2")
        const port = Number((yield* balancer.waitFor(listening))[1])
        expect((yield* statusOf(port)).map((server) => [server.id, server.weight])).toEqual([
          ["127.0.0.1:1", 2],
          ["127.0.0.1:2", 1]
        ])
        balancer.child.kill("SIGTERM")
        expect(yield* balancer.exited).toBe(0)

        const bad = yield* fileWith("bad.yaml", "port: 0\nserver: 127.0.0.1:1\n")
        const refused = yield* spawn(["balancer", "--config", bad])
        expect(yield* refused.exited).toBe(1)
        expect(refused.errors()).toMatch(/^effect-lb: .*bad\.yaml: server is not a known key \(keys: host, port, /)
      }).pipe(Effect.provide(Wire.layer)),
    30_000
  )
})
