import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
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
    "a bad value is one stderr line and exit 1; help has no escape codes and fits COLUMNS; --log-format json anywhere",
    () =>
      Effect.gen(function* () {
        const [bad, help, logs] = yield* Effect.all(
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
            }).pipe(Effect.scoped)
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
      }),
    20_000
  )
})
