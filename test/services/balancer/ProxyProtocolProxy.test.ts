import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import * as Net from "node:net"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as Metrics from "../../../src/services/balancer/Metrics.js"
import * as Proxy from "../../../src/services/balancer/Proxy.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import type { StrategyName } from "../../../src/services/balancer/strategies/Catalog.js"
import { balancerLayer } from "../../support/balancer.js"

/**
 * A backend that answers each connection, once the client has half-closed, with its name and every
 * byte it received: what the client gets back is exactly what the backend saw.
 */
const recorder = (name: string) =>
  Effect.acquireRelease(
    Effect.async<{ server: Net.Server; port: number; accepted: { count: number }; sockets: Set<Net.Socket> }>(
      (resume) => {
        const accepted = { count: 0 }
        const sockets = new Set<Net.Socket>()
        const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
          accepted.count += 1
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
          const chunks: Array<Buffer> = []
          socket.on("error", () => undefined)
          socket.on("data", (chunk: Buffer) => chunks.push(chunk))
          socket.on("end", () => socket.end(Buffer.concat([Buffer.from(`${name}|`), ...chunks])))
        })
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(
            Effect.succeed({
              server,
              port: typeof address === "object" && address !== null ? address.port : 0,
              accepted,
              sockets
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

const register = (id: string, port: number) =>
  Effect.flatMap(ServerRegistry, (registry) =>
    registry.add({ id: ServerId.make(id), host: Host.make("127.0.0.1"), port: Port.make(port), weight: Weight.make(1) })
  )

const proxyWith = (strategy: StrategyName, overrides: Partial<Proxy.ProxyConfig>) =>
  Proxy.layer({ ...Proxy.defaults, port: 0, ...overrides }).pipe(Layer.provideMerge(balancerLayer(strategy)))

/** Writes `chunks` one by one (a turn apart), half-closes, and collects the answer until the close. */
const exchange = (port: number, chunks: ReadonlyArray<Buffer | string>) =>
  Effect.async<{ received: Buffer; localPort: number }>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true, noDelay: true })
    const received: Array<Buffer> = []
    let localPort = 0
    socket.on("connect", () => {
      localPort = socket.localPort ?? 0
      const next = (i: number) => {
        const chunk = chunks[i]
        if (chunk === undefined) return socket.end()
        socket.write(chunk, () => setTimeout(() => next(i + 1), 5))
      }
      next(0)
    })
    socket.on("data", (chunk: Buffer) => received.push(chunk))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed({ received: Buffer.concat(received), localPort })))
  }).pipe(Effect.timeout("5 seconds"), Effect.orDie)

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
const signature = Buffer.from("0d0a0d0a000d0a515549540a", "hex")

const refusedCount = Effect.map(
  Metric.value(Metric.tagged(Metrics.proxyTurnedAway, "reason", "proxy_header")),
  (state) => state.count
)

describe("Proxy with the PROXY protocol, over loopback", () => {
  it.scopedLive("--send-proxy v1: the backend sees the v1 line, byte for byte, then the client's bytes", () =>
    Effect.gen(function* () {
      const backend = yield* recorder("a")
      yield* register("a", backend.port)
      const proxy = (yield* Proxy.Proxy).address.port
      const { received, localPort } = yield* exchange(proxy, ["hello ", "world"])
      expect(received.toString("latin1")).toBe(`a|PROXY TCP4 127.0.0.1 127.0.0.1 ${localPort} ${proxy}\r\nhello world`)
    }).pipe(Effect.provide(proxyWith("round-robin", { sendProxy: "v1" })))
  )

  it.scopedLive("--send-proxy v2: the backend sees the v2 header, byte for byte, then the client's bytes", () =>
    Effect.gen(function* () {
      const backend = yield* recorder("a")
      yield* register("a", backend.port)
      const proxy = (yield* Proxy.Proxy).address.port
      const { received, localPort } = yield* exchange(proxy, ["hello"])
      const header = Buffer.concat([
        signature,
        Buffer.from([0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1]),
        u16(localPort),
        u16(proxy)
      ])
      expect(received).toEqual(Buffer.concat([Buffer.from("a|"), header, Buffer.from("hello")]))
    }).pipe(Effect.provide(proxyWith("round-robin", { sendProxy: "v2" })))
  )

  it.scopedLive("--accept-proxy with --send-proxy: the header sent on carries the client of the header accepted", () =>
    Effect.gen(function* () {
      const backend = yield* recorder("a")
      yield* register("a", backend.port)
      const proxy = (yield* Proxy.Proxy).address.port
      // v1 in, cut in three, with the client's first bytes in the same chunk as the header's end.
      const v1 = yield* exchange(proxy, ["PROXY TCP4 203.0.1", "13.7 198.51.100.1 40000 4", "43\r\nhel", "lo"])
      const expected = Buffer.concat([
        signature,
        Buffer.from([0x21, 0x11, 0x00, 0x0c, 203, 0, 113, 7, 198, 51, 100, 1]),
        u16(40000),
        u16(443),
        Buffer.from("hello")
      ])
      expect(v1.received).toEqual(Buffer.concat([Buffer.from("a|"), expected]))
      // v2 in, IPv6, with a TLV: passed on as the same addresses.
      const v2In = Buffer.concat([
        signature,
        Buffer.from("212100290000000000000000000000000000000100000000000000000000000000000002", "hex"),
        u16(1234),
        u16(80),
        Buffer.from("0400020000", "hex")
      ])
      const v2 = yield* exchange(proxy, [v2In.subarray(0, 20), Buffer.concat([v2In.subarray(20), Buffer.from("x")])])
      expect(v2.received.subarray(2, 2 + 16 + 36)).toEqual(
        Buffer.concat([v2In.subarray(0, 14), u16(36), v2In.subarray(16, 52)])
      )
      expect(v2.received.subarray(2 + 52).toString()).toBe("x")
      // LOCAL: the socket's own addresses are sent on.
      const local = yield* exchange(proxy, [Buffer.concat([signature, Buffer.from("20000000", "hex")]), "y"])
      expect(local.received.subarray(2 + 16, 2 + 24)).toEqual(Buffer.from([127, 0, 0, 1, 127, 0, 0, 1]))
      expect(local.received.subarray(2 + 24, 2 + 26)).toEqual(u16(local.localPort))
    }).pipe(Effect.provide(proxyWith("round-robin", { acceptProxy: true, sendProxy: "v2" })))
  )

  it.scopedLive("--accept-proxy: a client that sends its header, its bytes and its FIN at once is served whole", () =>
    Effect.gen(function* () {
      const backend = yield* recorder("a")
      yield* register("a", backend.port)
      const port = (yield* Proxy.Proxy).address.port
      for (let i = 0; i < 5; i++) {
        const received = yield* Effect.async<string>((resume) => {
          const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
          const chunks: Array<Buffer> = []
          socket.on("data", (chunk: Buffer) => chunks.push(chunk))
          socket.on("error", () => undefined)
          socket.on("close", () => resume(Effect.succeed(Buffer.concat(chunks).toString())))
          socket.end("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nall at once")
        }).pipe(Effect.timeout("5 seconds"), Effect.orDie)
        expect(received).toBe("a|all at once")
      }
    }).pipe(Effect.provide(proxyWith("round-robin", { acceptProxy: true })))
  )

  it.scopedLive("--accept-proxy: consistent-hash keys on the client address in the header, not the socket's", () =>
    Effect.gen(function* () {
      for (const name of ["a", "b", "c", "d"]) yield* register(name, (yield* recorder(name)).port)
      const proxy = (yield* Proxy.Proxy).address.port
      const via = (client: string) =>
        Effect.map(
          exchange(proxy, [`PROXY TCP4 ${client} 10.0.0.1 5000 443\r\n`, "z"]),
          ({ received }) => received.toString().split("|")[0]
        )
      const clients = Array.from({ length: 24 }, (_, i) => `198.51.100.${i + 1}`)
      const first = yield* Effect.forEach(clients, via)
      // Every connection comes from 127.0.0.1: keyed on the socket they would all land on one backend.
      expect(new Set(first).size).toBeGreaterThan(1)
      expect(yield* Effect.forEach(clients, via)).toEqual(first)
    }).pipe(Effect.provide(proxyWith("consistent-hash", { acceptProxy: true })))
  )

  it.scopedLive("--accept-proxy refuses a malformed header, a missing one and a slow one, and counts each", () =>
    Effect.gen(function* () {
      const backend = yield* recorder("a")
      yield* register("a", backend.port)
      const proxy = yield* Proxy.Proxy
      const before = yield* refusedCount
      const plain = yield* exchange(proxy.address.port, ["GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
      const bad = yield* exchange(proxy.address.port, ["PROXY TCP4 1.2.3.4 1.2.3.999 1 2\r\nsecret"])
      const cut = yield* exchange(proxy.address.port, ["PROXY TCP4 1.2.3.4"])
      expect([plain.received.length, bad.received.length, cut.received.length]).toEqual([0, 0, 0])
      // Silent: closed at the connect timeout (200 ms here), not held.
      const started = Date.now()
      yield* Effect.async<void>((resume) => {
        const socket = Net.createConnection({ host: "127.0.0.1", port: proxy.address.port })
        socket.on("error", () => undefined)
        socket.on("close", () => resume(Effect.void))
      }).pipe(Effect.timeout("3 seconds"), Effect.orDie)
      expect(Date.now() - started).toBeLessThan(2000)
      expect(backend.accepted.count).toBe(0)
      expect((yield* refusedCount) - before).toBe(4)
      expect((yield* proxy.figures).turnedAway).toMatchObject({ proxyHeader: 4, noServer: 0 })
      // A good header still goes through.
      const good = yield* exchange(proxy.address.port, ["PROXY UNKNOWN\r\nok"])
      expect(good.received.toString()).toBe("a|ok")
    }).pipe(Effect.provide(proxyWith("round-robin", { acceptProxy: true, connectTimeout: "200 millis" })))
  )

  it.scopedLive("without --accept-proxy the figures carry no proxyHeader field, and bytes pass untouched", () =>
    Effect.gen(function* () {
      const backend = yield* recorder("a")
      yield* register("a", backend.port)
      const proxy = yield* Proxy.Proxy
      const { received } = yield* exchange(proxy.address.port, ["PROXY UNKNOWN\r\n"])
      expect(received.toString()).toBe("a|PROXY UNKNOWN\r\n")
      expect("proxyHeader" in (yield* proxy.figures).turnedAway).toBe(false)
    }).pipe(Effect.provide(proxyWith("round-robin", {})))
  )
})
