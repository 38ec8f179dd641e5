import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Locate } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { spawn } from "../support/process.js"

/** Runs an effect-lb command to its end: its exit code and what it printed. */
const run = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}) =>
  Effect.gen(function* () {
    const running = yield* spawn(args, env)
    const code = yield* running.exited
    return { code, errors: running.errors(), output: running.output() }
  }).pipe(Effect.scoped)

describe("the command line, through the built bin (real processes)", () => {
  it.scopedLive(
    "a bad value is one stderr line and exit 1; help has no escape codes and fits COLUMNS; --log-format json anywhere (access log too)",
    () =>
      Effect.gen(function* () {
        const [bad, help, logs, access] = yield* Effect.all(
          [
            run(["balancer", "--port", "70000"]),
            run(["balancer", "--help"], { NO_COLOR: "1", COLUMNS: "60" }),
            Effect.gen(function* () {
              const server = yield* spawn([
                "server",
                "--port",
                "0",
                "--balancer",
                "127.0.0.1:1",
                "--log-level",
                "debug",
                "--log-format",
                "json"
              ])
              return (yield* server.waitFor(/^\{.*\}$/m))[0]
            }).pipe(Effect.scoped),
            // The access log renders its own lines: in the format asked for, like every other line.
            Effect.gen(function* () {
              const balancer = yield* spawn(["--log-format", "json", "balancer", "--port", "0", "--access-log"])
              const [, port] = yield* balancer.waitFor(/listening on [^\s]*:(\d+)/)
              yield* ask({ host: "127.0.0.1", port: Number(port) }, new Locate({}))
              return (yield* balancer.waitFor(/^\{"message":"locate .*\}$/m))[0]
            }).pipe(Effect.scoped, Effect.provide(Wire.layer))
          ],
          { concurrency: "unbounded" }
        )
        expect(bad).toMatchObject({
          code: 1,
          errors: "effect-lb: --port must be an integer from 0 to 65535 (got 70000)\n",
          output: ""
        })
        expect(help.code).toBe(0)
        expect(help.output).toMatch(/\[default: 4000;/)
        expect(help.output).not.toContain("\u001b")
        for (const row of help.output.split("\n")) expect(row.length).toBeLessThanOrEqual(60)
        expect(JSON.parse(logs)).toMatchObject({ logLevel: "DEBUG", timestamp: expect.any(String) })
        expect(JSON.parse(access)).toMatchObject({
          message: expect.stringMatching(/^locate 127\.0\.0\.1:\d+ no server [\d.]+ ms$/),
          logLevel: "INFO",
          timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
          annotations: { access: "locate", outcome: "no server", durationMs: expect.any(Number) },
          spans: {},
          fiberId: expect.stringMatching(/^#\d+$/)
        })
      }),
    20_000
  )
})
