import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
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

/** A backend that answers each connection, once the client half-closes, with every byte it received. */
const recordingBackend = Effect.acquireRelease(
  Effect.async<Net.Server>((resume) => {
    const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
      const chunks: Array<Buffer> = []
      socket.on("error", () => undefined)
      socket.on("data", (chunk: Buffer) => chunks.push(chunk))
      socket.on("end", () => socket.end(Buffer.concat(chunks)))
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(
  Effect.map((server) => {
    const address = server.address()
    return typeof address === "object" && address !== null ? address.port : 0
  })
)

/** Sends `bytes` and half-closes; what came back before the close. */
const exchange = (port: number, bytes: string) =>
  Effect.async<string>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
    const chunks: Array<Buffer> = []
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed(Buffer.concat(chunks).toString("latin1"))))
    socket.end(bytes)
  }).pipe(Effect.timeout("5 seconds"), Effect.orDie)

describe("effect-lb balancer --accept-proxy --send-proxy (the real process)", () => {
  it.scopedLive(
    "passes the client of the accepted header on in the header sent, and refuses a connection without one",
    () =>
      Effect.gen(function* () {
        const backend = yield* recordingBackend
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--proxy-port",
          "0",
          "--admin-port",
          "0",
          "--health",
          "tcp",
          "--accept-proxy",
          "--access-log",
          "--send-proxy",
          "v1",
          "--server",
          `127.0.0.1:${backend}`
        ])
        const port = Number((yield* balancer.waitFor(/proxy listening on 127\.0\.0\.1:(\d+)/))[1])
        const admin = Number((yield* balancer.waitFor(/admin and dashboard on http:\/\/127\.0\.0\.1:(\d+)/))[1])
        expect(yield* exchange(port, "PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\nhello")).toBe(
          "PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\nhello"
        )
        expect(yield* exchange(port, "hello")).toBe("")
        const status = yield* Effect.tryPromise(() =>
          fetch(`http://127.0.0.1:${admin}/api/status`).then((response) => response.json() as Promise<unknown>)
        ).pipe(Effect.orDie)
        expect(status).toMatchObject({ proxy: { turnedAway: { proxyHeader: 1 } } })
        // The access log names the client from the header, and the refused one.
        yield* balancer.waitFor(/proxy \[2001:db8::7\]:51000 -> \S+ proxied/)
        yield* balancer.waitFor(/proxy 127\.0\.0\.1:\d+ bad proxy header/)
        balancer.child.kill("SIGTERM")
        expect(yield* balancer.exited).toBe(0)
      }),
    20_000
  )
})
