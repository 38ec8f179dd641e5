import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import { spawn } from "../support/process.js"

/** A plain HTTP server that says its name: an ordinary backend that knows nothing of effect-lb. */
const httpBackend = (name: string) =>
  Effect.acquireRelease(
    Effect.async<Http.Server>((resume) => {
      const server = Http.createServer((_, response) => response.end(`hello from ${name}\n`))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  ).pipe(
    Effect.map((server) => {
      const address = server.address()
      return typeof address === "object" && address !== null ? address.port : 0
    })
  )

const get = (port: number) =>
  Effect.async<string, Error>((resume) => {
    // A new connection each time (no keep-alive agent), as curl would.
    Http.get({ host: "127.0.0.1", port, path: "/", agent: false }, (response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString()))
      response.on("end", () => resume(Effect.succeed(body.trim())))
    }).on("error", (error) => resume(Effect.fail(error)))
  })

describe("effect-lb balancer --proxy-port (the real process)", () => {
  it.scopedLive(
    "proxies plain HTTP clients to plain HTTP backends in rotation, and skips a dead one",
    () =>
      Effect.gen(function* () {
        const a = yield* httpBackend("A")
        const b = yield* httpBackend("B")
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--proxy-port",
          "0",
          "--health",
          "tcp",
          "--server",
          `127.0.0.1:${a}`,
          "--server",
          `127.0.0.1:${b}`,
          "--server",
          "127.0.0.1:1"
        ])
        const port = Number((yield* balancer.waitFor(/proxy listening on 127\.0\.0\.1:(\d+)/))[1])
        const answers = yield* Effect.forEach([1, 2, 3, 4, 5, 6], () => get(port))
        expect(new Set(answers)).toEqual(new Set(["hello from A", "hello from B"]))
        expect(answers.filter((answer) => answer === "hello from A").length).toBe(3)
        balancer.child.kill("SIGTERM")
        expect(yield* balancer.exited).toBe(0)
      }),
    20_000
  )
})
