import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Metric, Option, Scope } from "effect"
import * as Crypto from "node:crypto"
import * as Net from "node:net"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as Metrics from "../../../src/services/balancer/Metrics.js"
import * as Proxy from "../../../src/services/balancer/Proxy.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { balancerLayer } from "../../support/balancer.js"
import type { StrategyName } from "../../../src/services/balancer/strategies/Catalog.js"
import { eventually } from "../../support/eventually.js"

/** A TCP backend: echoes what it gets (ending when the client ends), or behaves as told. */
const backend = (
  behaviour: "echo" | "hold" | "die after 64 KiB" | "reset after 64 KiB" | "end and ignore the close" | Buffer = "echo"
) =>
  Effect.acquireRelease(
    Effect.async<{ server: Net.Server; port: number; sockets: Set<Net.Socket>; accepted: { count: number } }>(
      (resume) => {
        const sockets = new Set<Net.Socket>()
        const accepted = { count: 0 }
        const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
          accepted.count += 1
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
          socket.on("error", () => undefined)
          if (behaviour === "echo") socket.pipe(socket)
          // Answers the first bytes with the whole buffer and closes its side: a download.
          if (Buffer.isBuffer(behaviour)) socket.once("data", () => socket.end(behaviour))
          if (behaviour === "die after 64 KiB") {
            let seen = 0
            socket.on("data", (chunk: Buffer) => {
              seen += chunk.length
              if (seen >= 64 * 1024) socket.destroy()
            })
          }
          // Answers the first bytes with part of a stream, then aborts it with a reset (RST, not FIN).
          if (behaviour === "reset after 64 KiB")
            socket.once("data", () => socket.write(Buffer.alloc(64 * 1024, 7), () => socket.resetAndDestroy()))
          // Sends its answer and its FIN at once, then keeps its side open for good.
          if (behaviour === "end and ignore the close") socket.end("bye")
        })
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(
            Effect.succeed({
              server,
              port: typeof address === "object" && address !== null ? address.port : 0,
              sockets,
              accepted
            })
          )
        })
      }
    ),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        sockets.forEach((socket) => socket.destroy())
        server.close(() => resume(Effect.void))
      })
  )

const register = (id: string, port: number, weight = 1) =>
  Effect.flatMap(ServerRegistry, (registry) =>
    registry.add({
      id: ServerId.make(id),
      host: Host.make("127.0.0.1"),
      port: Port.make(port),
      weight: Weight.make(weight)
    })
  )

const proxyWith = (strategy: StrategyName, overrides: Partial<Proxy.ProxyConfig> = {}) =>
  Proxy.layer({ ...Proxy.defaults, port: 0, ...overrides }).pipe(Layer.provideMerge(balancerLayer(strategy)))

const proxyPort = Effect.map(Proxy.Proxy, (proxy) => proxy.address.port)

/** Sends `payload`, half-closes, and collects everything until the proxy closes the connection. */
const roundTrip = (port: number, payload: Buffer) =>
  Effect.async<{ received: Buffer; ms: number }>((resume) => {
    const started = Date.now()
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
    const chunks: Array<Buffer> = []
    socket.on("data", (chunk) => chunks.push(chunk))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed({ received: Buffer.concat(chunks), ms: Date.now() - started })))
    socket.end(payload)
  })

/** Opens a connection through the proxy and keeps it (sending a byte so it is surely paired). */
const hold = (port: number) =>
  Effect.acquireRelease(
    Effect.async<Net.Socket>((resume) => {
      const socket = Net.createConnection({ host: "127.0.0.1", port }, () => {
        socket.write("x")
        socket.once("data", () => resume(Effect.succeed(socket)))
      })
      socket.on("error", () => undefined)
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

const activeOf = (id: string) =>
  Effect.flatMap(ServerRegistry, (registry) => registry.get(ServerId.make(id))).pipe(
    Effect.map(Option.match({ onNone: () => -1, onSome: (server) => server.active }))
  )

describe("Proxy over loopback", () => {
  it.scopedLive("passes bytes exactly both ways, 8 MB, and honours a half-close", () =>
    Effect.gen(function* () {
      const echo = yield* backend("echo")
      yield* register("echo", echo.port)
      const payload = Crypto.randomBytes(8 * 1024 * 1024)
      const { received } = yield* roundTrip(yield* proxyPort, payload)
      // The client half-closed after sending; the echo still came back in full, then the close.
      expect(received.length).toBe(payload.length)
      expect(received.equals(payload)).toBe(true)
    }).pipe(Effect.provide(proxyWith("round-robin")))
  )

  it.scopedLive("delivers every byte to a slow client after the backend has sent them all and closed", () =>
    Effect.gen(function* () {
      const payload = Crypto.randomBytes(16 * 1024 * 1024)
      const sender = yield* backend(payload)
      yield* register("sender", sender.port)
      const port = yield* proxyPort
      // A client that reads a chunk, then waits a moment: its receive buffer stays full, so the
      // proxy still holds bytes for it when the backend's side has long finished.
      const received = yield* Effect.async<Buffer>((resume) => {
        const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
        const chunks: Array<Buffer> = []
        socket.on("data", (chunk: Buffer) => {
          chunks.push(chunk)
          socket.pause()
          setTimeout(() => socket.resume(), 1)
        })
        socket.on("error", () => undefined)
        socket.on("close", () => resume(Effect.succeed(Buffer.concat(chunks))))
        socket.end("send it")
      })
      expect(received.length).toBe(payload.length)
      expect(received.equals(payload)).toBe(true)
    }).pipe(Effect.provide(proxyWith("round-robin")))
  )

  it.scopedLive("skips a backend that refuses the connect, before the client sees a byte, and marks it dead", () =>
    Effect.gen(function* () {
      const echo = yield* backend("echo")
      yield* register("refuses", 1)
      yield* register("echo", echo.port)
      const { received } = yield* roundTrip(yield* proxyPort, Buffer.from("hello"))
      expect(received.toString()).toBe("hello")
      const registry = yield* ServerRegistry
      const refused = yield* registry.get(ServerId.make("refuses"))
      expect(Option.map(refused, (s) => s.state)).toEqual(Option.some("dead"))
    }).pipe(Effect.provide(proxyWith("round-robin")))
  )

  it.scopedLive("closes the client's connection when its backend dies mid-stream (it never hangs)", () =>
    Effect.gen(function* () {
      // (The drain is short, so that if this fails the proxy's shutdown does not wait on a stuck pair.)
      const dying = yield* backend("die after 64 KiB")
      yield* register("dying", dying.port)
      // Closed promptly, by the proxy reacting to the death (its idle timeout is minutes away).
      const { received } = yield* roundTrip(yield* proxyPort, Crypto.randomBytes(1024 * 1024)).pipe(
        Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("the client hung") })
      )
      expect(dying.accepted.count).toBe(1)
      expect(received.length).toBe(0)
      // And the pair is gone from the proxy's books: nothing open, nothing counted on the backend.
      const proxy = yield* Proxy.Proxy
      const books = Effect.all([proxy.open, activeOf("dying")])
      expect(yield* eventually(books, ([open, active]) => open === 0 && active === 0, "2 seconds")).toEqual([0, 0])
    }).pipe(Effect.provide(proxyWith("round-robin", { drainTimeout: "100 millis" })))
  )

  it.scopedLive("passes a backend's reset on to the client as a reset, not a clean end", () =>
    Effect.gen(function* () {
      const resetting = yield* backend("reset after 64 KiB")
      yield* register("resetting", resetting.port)
      const port = yield* proxyPort
      const outcome = yield* Effect.async<{ received: number; ended: boolean; error: string | undefined }>((resume) => {
        const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
        let received = 0
        let ended = false
        let error: string | undefined
        socket.on("data", (chunk: Buffer) => (received += chunk.length))
        // A clean end is the failure this test is about: close at once rather than wait.
        socket.on("end", () => {
          ended = true
          socket.destroy()
        })
        socket.on("error", (cause: NodeJS.ErrnoException) => (error = cause.code))
        socket.on("close", () => resume(Effect.succeed({ received, ended, error })))
        socket.write("GET")
      }).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the client hung") }))
      // Whatever arrived before the reset, the stream did not end cleanly: the client sees the abort.
      expect(outcome.ended).toBe(false)
      expect(outcome.error).toBe("ECONNRESET")
      expect(outcome.received).toBeLessThanOrEqual(64 * 1024)
      yield* Effect.sleep("100 millis")
      expect(yield* (yield* Proxy.Proxy).open).toBe(0)
    }).pipe(Effect.provide(proxyWith("round-robin")))
  )

  it.scopedLive("passes a client's reset on to its backend as a reset", () =>
    Effect.gen(function* () {
      const held = yield* backend("hold")
      yield* register("held", held.port)
      const port = yield* proxyPort
      const client = yield* Effect.async<Net.Socket>((resume) => {
        const socket = Net.createConnection({ host: "127.0.0.1", port }, () => resume(Effect.succeed(socket)))
        socket.on("error", () => undefined)
      })
      yield* eventually(
        Effect.sync(() => held.sockets.size),
        (n) => n === 1,
        "2 seconds"
      )
      const [serverSide] = [...held.sockets]
      const seen = Effect.async<{ ended: boolean; error: string | undefined }>((resume) => {
        let ended = false
        let error: string | undefined
        serverSide?.on("end", () => {
          ended = true
          serverSide.destroy()
        })
        serverSide?.on("error", (cause: NodeJS.ErrnoException) => (error = cause.code))
        serverSide?.on("close", () => resume(Effect.succeed({ ended, error })))
      })
      client.resetAndDestroy()
      const outcome = yield* seen.pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the backend never heard") })
      )
      expect(outcome).toEqual({ ended: false, error: "ECONNRESET" })
    }).pipe(Effect.provide(proxyWith("round-robin")))
  )

  it.scopedLive("closes a half-closed pair whose client ignores the backend's FIN after the idle timeout", () =>
    Effect.gen(function* () {
      const ending = yield* backend("end and ignore the close")
      yield* register("ending", ending.port)
      const port = yield* proxyPort
      const proxy = yield* Proxy.Proxy
      // The client reads the answer and the FIN but never closes its own side.
      const client = yield* Effect.acquireRelease(
        Effect.async<{ socket: Net.Socket; since: number }>((resume) => {
          const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
          socket.on("error", () => undefined)
          socket.resume()
          socket.once("end", () => resume(Effect.succeed({ socket, since: Date.now() })))
        }),
        ({ socket }) => Effect.sync(() => socket.destroy())
      )
      expect(yield* proxy.open).toBe(1)
      expect(yield* activeOf("ending")).toBe(1)
      // Nothing moves either way: the pair is idle, and the 300 ms idle timeout closes it.
      yield* eventually(proxy.open, (open) => open === 0, "3 seconds")
      const heldFor = Date.now() - client.since
      expect(heldFor).toBeGreaterThanOrEqual(250)
      expect(heldFor).toBeLessThan(2000)
      expect(yield* activeOf("ending")).toBe(0)
    }).pipe(Effect.provide(proxyWith("round-robin", { idleTimeout: "300 millis" })))
  )

  it.scopedLive("closes a half-closed pair whose backend ignores the client's FIN after the idle timeout", () =>
    Effect.gen(function* () {
      const held = yield* backend("hold")
      yield* register("held", held.port)
      const port = yield* proxyPort
      const proxy = yield* Proxy.Proxy
      // The client sends a request and its FIN, and waits; the backend takes both and does nothing.
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
          socket.on("error", () => undefined)
          socket.end("request")
          return socket
        }),
        (socket) => Effect.sync(() => socket.destroy())
      )
      yield* eventually(
        Effect.sync(() => held.sockets.size),
        (n) => n === 1,
        "2 seconds"
      )
      const since = Date.now()
      yield* eventually(proxy.open, (open) => open === 0, "3 seconds")
      expect(Date.now() - since).toBeLessThan(2000)
      expect(yield* activeOf("held")).toBe(0)
    }).pipe(Effect.provide(proxyWith("round-robin", { idleTimeout: "300 millis" })))
  )

  it.scopedLive("steers least-connection by the exact count of open connections", () =>
    Effect.gen(function* () {
      const a = yield* backend("echo")
      const b = yield* backend("echo")
      yield* register("a", a.port)
      yield* register("b", b.port, 2)
      const port = yield* proxyPort
      const scope = yield* Scope.make()
      for (let i = 0; i < 6; i++) yield* hold(port).pipe(Scope.extend(scope))
      // Weights 1:2: least connections per unit of weight gives 2 and 4.
      expect([yield* activeOf("a"), yield* activeOf("b")]).toEqual([2, 4])
      expect([a.sockets.size, b.sockets.size]).toEqual([2, 4])
      yield* Scope.close(scope, Exit.void)
      yield* Effect.sleep("200 millis")
      expect([yield* activeOf("a"), yield* activeOf("b")]).toEqual([0, 0])
    }).pipe(Effect.provide(proxyWith("weighted-least-connection")))
  )

  it.scopedLive("consistent-hash keeps a client (by its address) on one backend", () =>
    Effect.gen(function* () {
      const backends = yield* Effect.forEach([1, 2, 3, 4], () => backend("echo"))
      yield* Effect.forEach(backends, (b, i) => register(`b${i}`, b.port))
      const port = yield* proxyPort
      for (let i = 0; i < 6; i++) {
        const { received } = yield* roundTrip(port, Buffer.from(`request ${i}`))
        expect(received.toString()).toBe(`request ${i}`)
      }
      // Every connection came from 127.0.0.1: all six on the same backend.
      expect(backends.map((b) => b.accepted.count).sort()).toEqual([0, 0, 0, 6])
    }).pipe(Effect.provide(proxyWith("consistent-hash")))
  )

  it.scopedLive("refuses connections past its limit at once, and closes idle ones", () =>
    Effect.gen(function* () {
      const echo = yield* backend("echo")
      yield* register("echo", echo.port)
      const port = yield* proxyPort
      const turnedAway = Metric.value(Metric.tagged(Metrics.proxyTurnedAway, "reason", "limit"))
      const before = (yield* turnedAway).count
      yield* hold(port)
      yield* hold(port)
      const third = yield* roundTrip(port, Buffer.from("too many"))
      expect(third.received.length).toBe(0)
      expect(third.ms).toBeLessThan(1000)
      expect((yield* turnedAway).count).toBe(before + 1)
      // The two held connections idle out after 300 ms.
      yield* Effect.sleep("1 second")
      const proxy = yield* Proxy.Proxy
      expect(yield* proxy.open).toBe(0)
    }).pipe(Effect.provide(proxyWith("round-robin", { maxConnections: 2, idleTimeout: "300 millis" })))
  )

  it.scopedLive("on shutdown stops accepting and lets an open connection finish, up to the drain timeout", () =>
    Effect.gen(function* () {
      const echo = yield* backend("echo")
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(proxyWith("round-robin", { drainTimeout: "500 millis" }), scope)
      yield* register("echo", echo.port).pipe(Effect.provide(context))
      const port = Context.get(context, Proxy.Proxy).address.port
      const open = yield* hold(port)
      const closing = Date.now()
      const closed = Effect.async<number>((resume) => {
        open.once("close", () => resume(Effect.succeed(Date.now() - closing)))
      })
      yield* Scope.close(scope, Exit.void)
      // New connections are refused at once; the open one was cut at the drain timeout.
      const refused = yield* Effect.async<boolean>((resume) => {
        const socket = Net.createConnection({ host: "127.0.0.1", port })
        socket.once("connect", () => resume(Effect.succeed(false)))
        socket.once("error", () => resume(Effect.succeed(true)))
      })
      expect(refused).toBe(true)
      const after = yield* closed
      expect(after).toBeGreaterThanOrEqual(400)
      expect(after).toBeLessThan(2000)
    })
  )
})
