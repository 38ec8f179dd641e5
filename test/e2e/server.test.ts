import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Compute, ListFiles, Ping } from "../../src/domain/Protocol.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { servedFolder } from "../support/fixtures.js"
import { spawn } from "../support/process.js"
import { connectTo } from "../support/server.js"

const listening = /listening on 127\.0\.0\.1:(\d+)/

describe("effect-lb server (the real process)", () => {
  it.scopedLive(
    "serves its folder, and on SIGTERM finishes the request in flight and exits 0",
    () =>
      Effect.gen(function* () {
        const folder = yield* servedFolder(1024)
        const server = yield* spawn(["server", "--port", "0", "--id", "e2e", "--files", folder.root])
        const port = Number((yield* server.waitFor(listening))[1])
        const client = yield* connectTo({ host: "127.0.0.1", port })
        expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong", id: "e2e" })
        expect(yield* client.ask(new ListFiles())).toMatchObject({ files: { "notes.txt": "txt" } })
        const computing = yield* Effect.fork(client.ask(new Compute({ seconds: 1 })))
        yield* Effect.sleep("200 millis")
        server.child.kill("SIGTERM")
        expect(yield* Fiber.join(computing)).toMatchObject({ _tag: "Computed", seconds: 1 })
        expect(yield* server.exited).toBe(0)
      }).pipe(Effect.provide(Wire.layer)),
    20_000
  )

  it.scopedLive(
    "without --files serves the sample folder shipped with effect-lb",
    () =>
      Effect.gen(function* () {
        const server = yield* spawn(["server", "--port", "0"])
        const port = Number((yield* server.waitFor(listening))[1])
        const client = yield* connectTo({ host: "127.0.0.1", port })
        expect(yield* client.ask(new ListFiles())).toMatchObject({
          files: { "notes.txt": "txt", "gradient.png": "png" }
        })
        server.child.kill("SIGINT")
        expect(yield* server.exited).toBe(0)
      }).pipe(Effect.provide(Wire.layer)),
    20_000
  )

  it.scopedLive(
    "fails with one readable line when it cannot listen",
    () =>
      Effect.gen(function* () {
        const first = yield* spawn(["server", "--port", "0"])
        const port = (yield* first.waitFor(listening))[1] ?? "0"
        const second = yield* spawn(["server", "--port", port])
        expect(yield* second.exited).toBe(1)
        expect(second.errors().trim()).toBe(
          `effect-lb: cannot listen on 127.0.0.1:${port}: the address is in use (EADDRINUSE)`
        )
      }),
    20_000
  )

  it.scopedLive(
    "rejects a bad option value with a message and exit code 1",
    () =>
      Effect.gen(function* () {
        const server = yield* spawn(["server", "--max-compute", "-5"])
        expect(yield* server.exited).toBe(1)
        expect(server.errors()).toBe("effect-lb: --max-compute must be an integer from 0 to 86400 (got -5)\n")
      }),
    20_000
  )
})
