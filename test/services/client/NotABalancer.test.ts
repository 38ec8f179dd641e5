/**
 * Pointed at something that is not an effect-lb balancer, the operator's view and the client say so
 * in one line, with what it did instead — never `malformed JSON` — and always within their deadline.
 * Real loopback sockets: an HTTP server, a listener that never answers, one that hangs up at once,
 * one that sends a banner, and an effect-lb server's own port.
 */
import { describe, expect, it } from "@effect/vitest"
import { NodeContext } from "@effect/platform-node"
import { Effect, Either, Layer } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import { Locate, SetStrategy } from "../../../src/domain/Protocol.js"
import { StrategyName } from "../../../src/domain/Protocol.js"
import { ask, status } from "../../../src/services/client/BalancerClient.js"
import * as Client from "../../../src/services/client/Client.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { excerpt } from "../../../src/services/wire/Peer.js"
import { servedFolder } from "../../support/fixtures.js"
import { startServer } from "../../support/server.js"

/** A listener on a free loopback port, doing `onSocket` with each connection; closed with the scope. */
const listener = (make: () => Net.Server) =>
  Effect.acquireRelease(
    Effect.async<{ server: Net.Server; address: { host: string; port: number } }>((resume) => {
      const server = make()
      server.listen(0, "127.0.0.1", () => {
        const bound = server.address()
        resume(
          Effect.succeed({
            server,
            address: { host: "127.0.0.1", port: typeof bound === "object" && bound !== null ? bound.port : 0 }
          })
        )
      })
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        // close waits for open connections: end those the test left open.
        if (server instanceof Http.Server) server.closeAllConnections()
        sockets.forEach((socket) => socket.destroy())
      })
  ).pipe(Effect.map(({ address }) => address))

const sockets = new Set<Net.Socket>()
const tcp = (onSocket: (socket: Net.Socket) => void) => () =>
  Net.createServer((socket) => {
    socket.on("error", () => {})
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    onSocket(socket)
  })

const http = () => Http.createServer((_, response) => response.end("hello"))
const silent = tcp(() => {})
const closing = tcp((socket) => socket.destroy())
const banner = tcp((socket) => socket.write("SSH-2.0-OpenSSH_9.6\r\n"))

const failure = <A, E extends { message: string }, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.either(effect), (result) => (Either.isLeft(result) ? result.left.message : "succeeded"))

const notABalancer = (port: number, reason: string) =>
  `127.0.0.1:${port} did not answer as an effect-lb balancer (${reason})`

describe("a peer that is not an effect-lb balancer", () => {
  it.scopedLive("an HTTP server: says what it answered", () =>
    Effect.gen(function* () {
      const address = yield* listener(http)
      const said = notABalancer(address.port, "it answered: HTTP/1.1 400 Bad Request")
      expect(yield* failure(status(address))).toBe(said)
      expect(yield* failure(ask(address, new SetStrategy({ strategy: StrategyName.make("round-robin") })))).toBe(said)
      expect(yield* failure(ask(address, new Locate({})))).toBe(said)
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("a listener that never answers: gives up at the deadline", () =>
    Effect.gen(function* () {
      const address = yield* listener(silent)
      const started = Date.now()
      expect(yield* failure(status(address, "300 millis"))).toBe(notABalancer(address.port, "no answer within 0.3 s"))
      expect(yield* failure(ask(address, new Locate({}), "300 millis"))).toBe(
        notABalancer(address.port, "no answer within 0.3 s")
      )
      expect(Date.now() - started).toBeLessThan(2000)
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("a listener that hangs up at once, or sends a banner", () =>
    Effect.gen(function* () {
      const closes = yield* listener(closing)
      expect(yield* failure(status(closes))).toMatch(
        new RegExp(
          `^127\\.0\\.0\\.1:${closes.port} did not answer as an effect-lb balancer \\((it closed the connection without answering|the connection closed: ECONNRESET)\\)$`
        )
      )
      const talks = yield* listener(banner)
      expect(yield* failure(status(talks))).toBe(notABalancer(talks.port, "it answered: SSH-2.0-OpenSSH_9.6"))
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("an effect-lb server's port: its refusal of the balancer's requests is quoted", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root)
      const { port } = server.address
      expect(yield* failure(status(server.address))).toMatch(
        new RegExp(
          `^127\\.0\\.0\\.1:${port} did not answer as an effect-lb balancer \\(it answered InvalidRequest: Status: _tag: Expected "ListFiles"`
        )
      )
      expect(
        yield* failure(ask(server.address, new SetStrategy({ strategy: StrategyName.make("round-robin") })))
      ).toMatch(/did not answer as an effect-lb balancer \(it answered InvalidRequest: SetStrategy: /)
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("the client stops at once on an answer no balancer gives, instead of retrying", () =>
    Effect.gen(function* () {
      const address = yield* listener(http)
      const client = yield* Client.make({ ...Client.defaults, balancer: address })
      const started = Date.now()
      expect(yield* failure(client.list())).toBe(notABalancer(address.port, "it answered: HTTP/1.1 400 Bad Request"))
      // One attempt, not six with back-off between them.
      expect(Date.now() - started).toBeLessThan(1000)
    }).pipe(Effect.provide(Layer.merge(Wire.layer, NodeContext.layer)))
  )

  it("shows what a peer sent as a short printable excerpt", () => {
    expect(excerpt("  HTTP/1.1 400 Bad Request\r")).toBe("HTTP/1.1 400 Bad Request")
    expect(excerpt("a\u0000b\u001bc")).toBe("a?b?c")
    expect(excerpt("x".repeat(500))).toHaveLength(100)
  })
})
