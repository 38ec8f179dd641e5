/**
 * TLS on the proxy, over real loopback sockets and throw-away certificates: terminated on the
 * listener, spoken to a backend that says it speaks TLS, after a PROXY protocol header on either
 * side; a plain-text client, a client that refuses the certificate and a backend whose CA is not
 * trusted each fail alone; a certificate reload drops nothing.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as NodeTls from "node:tls"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as Proxy from "../../../src/services/balancer/Proxy.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { loadTrust, makeListenerTls } from "../../../src/services/wire/Tls.js"
import { balancerLayer } from "../../support/balancer.js"
import { echoServer, raw } from "../../support/net.js"
import {
  type Certificates,
  makeCertificates,
  openssl,
  portOf,
  skipReason,
  tlsEcho,
  tlsExchange
} from "../../support/tls.js"

if (openssl === undefined) console.log(skipReason)

const certs: Certificates | undefined = openssl === undefined ? undefined : makeCertificates()
afterAll(() => certs?.remove())

const register = (id: string, port: number, tls = false) =>
  Effect.flatMap(ServerRegistry, (registry) =>
    registry.add({
      id: ServerId.make(id),
      host: Host.make("127.0.0.1"),
      port: Port.make(port),
      weight: Weight.make(1),
      ...(tls ? { tls: true } : {})
    })
  )

/** A proxy terminating TLS with `certs`' certificate (unless `terminate` is false). */
const tlsProxy = (certs: Certificates, overrides: Partial<Proxy.ProxyConfig> = {}, terminate = true) =>
  Effect.gen(function* () {
    const tls = terminate ? yield* makeListenerTls("proxy", { cert: certs.cert, key: certs.key }) : undefined
    const context = yield* Layer.build(
      Proxy.layer({ ...Proxy.defaults, port: 0, ...overrides, tls }).pipe(Layer.provideMerge(balancerLayer()))
    )
    const proxy = yield* Effect.provide(Proxy.Proxy, context)
    return { proxy, tls, context }
  })

describe.skipIf(certs === undefined)("the proxy with TLS", () => {
  const c = certs as Certificates

  it.scopedLive("terminates TLS: a TLS client's bytes reach a plain backend and its answer comes back", () =>
    Effect.gen(function* () {
      const backend = yield* echoServer
      const { proxy, context } = yield* tlsProxy(c)
      yield* Effect.provide(register("a", portOf(backend)), context)
      const answer = yield* tlsExchange(proxy.address.port, c.ca, "hello over TLS")
      expect(answer).toEqual({ received: "hello over TLS", subject: "localhost" })
    })
  )

  it.scopedLive("refuses a plain-text client and a client that does not trust it, counts them, serves the next", () =>
    Effect.gen(function* () {
      const backend = yield* echoServer
      // A client that drops its handshake is seen at the connect deadline: short here, so the drain is.
      const { proxy, context } = yield* tlsProxy(c, { connectTimeout: "500 millis" })
      yield* Effect.provide(register("a", portOf(backend)), context)
      const plain = yield* raw(proxy.address.port, "GET / HTTP/1.0\r\n\r\n")
      expect(plain).toEqual({ data: "", closedByServer: true })
      const distrust = yield* Effect.flip(tlsExchange(proxy.address.port, c.otherCa, "x"))
      expect(distrust.message).toMatch(/unable to verify|self.signed|certificate/i)
      expect((yield* tlsExchange(proxy.address.port, c.ca, "still here")).received).toBe("still here")
      const figures = yield* proxy.figures
      expect(figures.turnedAway.tlsHandshake).toBeGreaterThanOrEqual(1)
      expect(figures.accepted).toBe(3)
    })
  )

  it.scopedLive("a connection open across a certificate reload goes on; the next handshake gets the new one", () =>
    Effect.gen(function* () {
      const backend = yield* echoServer
      const { proxy, tls, context } = yield* tlsProxy(c)
      yield* Effect.provide(register("a", portOf(backend)), context)
      const open = yield* Effect.acquireRelease(
        Effect.async<NodeTls.TLSSocket>((resume) => {
          const socket = NodeTls.connect({
            host: "127.0.0.1",
            port: proxy.address.port,
            ca: Fs.readFileSync(c.ca)
          })
          socket.once("secureConnect", () => resume(Effect.succeed(socket)))
        }),
        (socket) => Effect.sync(() => socket.destroy())
      )
      const received: Array<Buffer> = []
      open.on("data", (chunk: Buffer) => received.push(chunk))
      open.write("before ")
      yield* tls === undefined ? Effect.die("no TLS") : tls.reload({ cert: c.cert2, key: c.key2 })
      const after = yield* tlsExchange(proxy.address.port, c.ca, "new")
      expect(after).toEqual({ received: "new", subject: "reloaded" })
      expect(open.getPeerCertificate().subject.CN).toBe("localhost")
      yield* Effect.async<void>((resume) => {
        open.on("close", () => resume(Effect.void))
        open.end("and after")
      })
      expect(Buffer.concat(received).toString()).toBe("before and after")
    })
  )

  it.scopedLive("a bad certificate at reload changes nothing", () =>
    Effect.gen(function* () {
      const backend = yield* echoServer
      const { proxy, tls, context } = yield* tlsProxy(c)
      yield* Effect.provide(register("a", portOf(backend)), context)
      if (tls === undefined) return yield* Effect.die("no TLS")
      const refused = yield* Effect.flip(tls.reload({ cert: c.cert, key: c.otherKey }))
      expect(refused.message).toContain("is not the private key of the certificate")
      expect((yield* tlsExchange(proxy.address.port, c.ca, "same")).subject).toBe("localhost")
    })
  )

  it.scopedLive("speaks TLS to a backend that says it does, checked against the backend CA", () =>
    Effect.gen(function* () {
      const backend = yield* tlsEcho(c, "secure")
      const trusted = { current: yield* loadTrust(c.ca) }
      const { proxy, context } = yield* tlsProxy(c, { backendTrust: trusted }, false)
      yield* Effect.provide(register("a", portOf(backend), true), context)
      const resumed: Array<boolean> = []
      backend.on("secureConnection", (socket: NodeTls.TLSSocket) => resumed.push(socket.isSessionReused()))
      const answer = yield* exchange(proxy.address.port, "to a TLS backend")
      expect(answer).toBe("secure|to a TLS backend")
      // The next connection to the same backend resumes the session: an abbreviated handshake.
      expect(yield* exchange(proxy.address.port, "resumed")).toBe("secure|resumed")
      expect(resumed).toEqual([false, true])
      // The same backend, no longer trusted: the connect fails, the backend is marked dead (the only
      // one: the client is closed unserved, counted as finding no server) and the reason logged.
      trusted.current = yield* loadTrust(c.otherCa)
      expect(yield* exchange(proxy.address.port, "again")).toBe("")
      const registry = yield* Effect.provide(ServerRegistry, context)
      const view = yield* registry.get(ServerId.make("a"))
      expect(view.pipe(Option.map((server) => server.failedConnects))).toEqual(Option.some(1))
      // Sessions made under the old CA are not resumed under the new one: the check ran (and failed).
      expect(resumed).toEqual([false, true])
      expect((yield* proxy.figures).turnedAway.noServer).toBe(1)
    })
  )

  it.scopedLive("reads a PROXY header before the handshake, and sends one before TLS to the backend", () =>
    Effect.gen(function* () {
      const backend = yield* tlsEcho(c, "b")
      const { proxy, context } = yield* tlsProxy(c, {
        acceptProxy: true,
        sendProxy: "v1",
        backendTrust: { current: yield* loadTrust(c.ca) }
      })
      // The backend reads the header in clear, then TLS: a TLS echo that first strips a v1 line.
      yield* Effect.provide(register("a", portOf(backend), true), context)
      const header = "PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"
      const headerSeen = yield* headerBeforeTls(backend)
      const answer = yield* tlsExchange(proxy.address.port, c.ca, "behind two balancers", header)
      expect(answer.received).toBe("b|behind two balancers")
      expect(headerSeen()).toBe(header)
    })
  )
})

/** A plain client: sends `text`, half-closes, returns what came back before the close. */
const exchange = (port: number, text: string) =>
  Effect.async<string>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
    const chunks: Array<Buffer> = []
    socket.on("connect", () => socket.end(text))
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed(Buffer.concat(chunks).toString())))
  }).pipe(Effect.timeout("5 seconds"), Effect.orDie)

/**
 * Makes the TLS server `server` read a PROXY v1 line in clear before its handshake (as a backend
 * behind `send-proxy` + TLS does); returns what the line was.
 */
const headerBeforeTls = (server: NodeTls.Server) =>
  Effect.sync(() => {
    let seen = ""
    const [listener] = server.listeners("connection") as Array<(socket: Net.Socket) => void>
    server.removeAllListeners("connection")
    server.on("connection", (socket: Net.Socket) => {
      socket.once("readable", function strip() {
        const chunk = socket.read() as Buffer | null
        if (chunk === null) return socket.once("readable", strip)
        const end = chunk.indexOf("\r\n") + 2
        seen = chunk.subarray(0, end).toString()
        if (end < chunk.length) socket.unshift(chunk.subarray(end))
        listener?.call(server, socket)
      })
    })
    return () => seen
  })
