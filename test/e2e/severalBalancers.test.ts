/**
 * Two balancer processes and a server given both: the server registers with the first; SIGKILL that
 * balancer and the server registers with the other, and clients given both are served throughout.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Client from "../../src/services/client/Client.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { listening } from "../support/ask.js"
import { eventually } from "../support/eventually.js"
import { spawn } from "../support/process.js"

describe("a server and clients given two balancers (processes)", () => {
  it.scopedLive(
    "the server moves to the other balancer when its own is killed, and every request is served",
    () =>
      Effect.gen(function* () {
        const first = yield* spawn(["balancer", "--port", "0"])
        const second = yield* spawn(["balancer", "--port", "0"])
        const a = `127.0.0.1:${(yield* first.waitFor(listening))[1] ?? ""}`
        const b = `127.0.0.1:${(yield* second.waitFor(listening))[1] ?? ""}`
        const server = yield* spawn(["server", "--port", "0", "--id", "s1", "--balancer", `${a},${b}`])
        const logs = () => server.output() + server.errors()
        yield* eventually(Effect.sync(logs), (text) => text.includes(`registered as s1 with the balancer at ${a}`))

        const context = yield* Layer.build(
          Client.layer({
            ...Client.defaults,
            balancer: [a, b].map((text) => {
              const [host = "", port = ""] = text.split(":")
              return { host, port: Number(port) }
            })
          }).pipe(Layer.provide(Wire.layer), Layer.provide(NodeContext.layer))
        )
        const compute = Effect.flatMap(Effect.provide(Client.Client, context), (client) => client.compute(0))
        for (let i = 0; i < 3; i++) expect(yield* compute).toMatchObject({ value: 0, server: { id: "s1" } })

        first.child.kill("SIGKILL")
        // Asked at once: the client passes over the dead balancer, and waits out the server's move.
        for (let i = 0; i < 3; i++) expect(yield* compute).toMatchObject({ value: 0, server: { id: "s1" } })
        yield* eventually(
          Effect.sync(logs),
          (text) => text.includes(`registered as s1 with the balancer at ${b}`),
          "5 seconds"
        )

        // The command line: both forms of --balancer, the dead one first.
        const cli = yield* spawn(["client", "compute", "0", "--balancer", a, "--balancer", b, "--json"])
        expect(yield* cli.exited).toBe(0)
        expect(JSON.parse(cli.output())).toMatchObject({ seconds: 0, server: { id: "s1" }, attempts: 1 })
        const status = yield* spawn(["status", "--balancer", `${a},${b}`])
        expect(yield* status.exited).toBe(0)
        expect(status.output()).toMatch(new RegExp(`^balancer: ${b}\\nstrategy: `))
      }),
    30_000
  )
})
