import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Ping } from "../../src/domain/Protocol.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { listening, locate, statusOf } from "../support/ask.js"
import { spawn } from "../support/process.js"
import { connectTo } from "../support/server.js"

describe("effect-lb and signals (real processes)", () => {
  it.scopedLive(
    "SIGHUP is ignored, with a log line: the balancer and the server keep answering",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn(["balancer", "--port", "0"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const server = yield* spawn(["server", "--port", "0", "--id", "hup", "--balancer", `127.0.0.1:${port}`])
        const serverPort = Number((yield* server.waitFor(listening))[1])
        // A server is live once its first probe answers, not when it registers.
        yield* eventually(statusOf(port), (servers) => servers.length === 1 && servers[0]?.state === "live")

        balancer.child.kill("SIGHUP")
        server.child.kill("SIGHUP")
        yield* balancer.waitFor(/SIGHUP received and ignored/)
        yield* server.waitFor(/SIGHUP received and ignored/)

        expect(yield* locate(port, true)).toBe(`hup@${serverPort}`)
        const client = yield* connectTo({ host: "127.0.0.1", port: serverPort })
        expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong", id: "hup" })
        expect((yield* statusOf(port)).map((s) => s.state)).toEqual(["live"])
        balancer.child.kill("SIGTERM")
        server.child.kill("SIGTERM")
        expect(yield* balancer.exited).toBe(0)
        expect(yield* server.exited).toBe(0)
      }).pipe(Effect.provide(Wire.layer)),
    30_000
  )
})
