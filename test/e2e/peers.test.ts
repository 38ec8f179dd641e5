/**
 * Saying what is wrong with a peer, from the real command line: a balancer address that is an HTTP
 * server, and a default port some other process holds.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import { runToEnd } from "../support/process.js"

/** Something listening on `port` (0: the system picks one) for the test's length; `undefined` if another process already holds it. */
const hold = <S extends Net.Server>(server: S, port: number) =>
  Effect.acquireRelease(
    Effect.async<number | undefined>((resume) => {
      server.once("error", () => resume(Effect.succeed(undefined)))
      server.listen(port, "127.0.0.1", () => {
        const address = server.address()
        resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : undefined))
      })
    }),
    () =>
      Effect.async<void>((resume) => {
        if (!server.listening) return resume(Effect.void)
        server.close(() => resume(Effect.void))
        if (server instanceof Http.Server) server.closeAllConnections()
      })
  )

describe("effect-lb and peers that are not what they should be (real processes)", () => {
  it.scopedLive(
    "status pointed at an HTTP server says it is not a balancer, in one line, exit 1",
    () =>
      Effect.gen(function* () {
        const port = yield* hold(
          Http.createServer((_, response) => response.end("hello")),
          0
        )
        const status = yield* runToEnd(["status", "--balancer", `127.0.0.1:${port}`])
        expect(status).toEqual({
          code: 1,
          output: "",
          errors: `effect-lb: 127.0.0.1:${port} did not answer as an effect-lb balancer (it answered: HTTP/1.1 400 Bad Request)\n`
        })
      }),
    20_000
  )

  it.scopedLive(
    "a server whose default port is taken names it and suggests --port 0, exit 1",
    () =>
      Effect.gen(function* () {
        // Held here, or already by some other process: taken either way.
        yield* hold(Net.createServer(), 4001)
        const server = yield* runToEnd(["server"])
        expect(server.code).toBe(1)
        expect(server.errors).toBe(
          "effect-lb: cannot listen on 127.0.0.1:4001: the address is in use (EADDRINUSE); give --port 0 to let the system pick a free port\n"
        )
      }),
    20_000
  )
})
