import { describe, expect, it } from "@effect/vitest"
import { Effect, HashMap, Layer, Logger, LogLevel, Option } from "effect"
import * as Net from "node:net"
import { Locate } from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as AccessLog from "../../../src/services/balancer/AccessLog.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import * as Proxy from "../../../src/services/balancer/Proxy.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { ask } from "../../../src/services/client/BalancerClient.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer } from "../../support/balancer.js"
import { eventually } from "../../support/eventually.js"

interface Line {
  readonly level: string
  readonly message: string
  readonly fields: Record<string, unknown>
}

/** A logger that keeps every line, its level and its annotations (as a JSON logger would write them). */
const capture = () => {
  const lines: Array<Line> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    lines.push({
      level: logLevel.label,
      message: Array.isArray(message) ? message.map(String).join(" ") : String(message),
      fields: Object.fromEntries(HashMap.toEntries(annotations))
    })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const accessLines = (lines: ReadonlyArray<Line>) => lines.filter((line) => line.fields["access"] !== undefined)

const register = (id: string, port: number) =>
  Effect.flatMap(ServerRegistry, (registry) =>
    registry.add({ id: ServerId.make(id), host: Host.make("127.0.0.1"), port: Port.make(port), weight: Weight.make(1) })
  )

const plane = (accessLog: boolean) =>
  ControlPlane.layer({ ...ControlPlane.defaults, port: 0, accessLog }).pipe(
    Layer.provideMerge(balancerLayer("round-robin")),
    Layer.provideMerge(Wire.layer)
  )

const proxy = (accessLog: boolean) =>
  Proxy.layer({ ...Proxy.defaults, port: 0, accessLog }).pipe(Layer.provideMerge(balancerLayer("round-robin")))

/** An echo backend on a free port, closed with the scope. */
const echo = Effect.acquireRelease(
  Effect.async<Net.Server>((resume) => {
    const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => undefined)
      socket.pipe(socket)
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)
const portOf = (server: Net.Server) => {
  const address = server.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

/** Sends `text` through the proxy, half-closes, and waits for the close; returns what came back. */
const through = (port: number, text: string) =>
  Effect.async<string>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
    let received = ""
    socket.on("data", (chunk: Buffer) => (received += chunk.toString()))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed(received)))
    socket.end(text)
  })

describe("the access log", () => {
  it("says in one short line what the annotations say in full", () => {
    const server = { id: ServerId.make("s1"), host: Host.make("127.0.0.1"), port: Port.make(4001) }
    const proxied: AccessLog.AccessEntry = {
      kind: "proxy",
      client: "127.0.0.1:50000",
      server,
      durationMs: 12.3456,
      bytesIn: 5,
      bytesOut: 7,
      outcome: "proxied"
    }
    expect(AccessLog.describe(proxied)).toBe(
      "proxy 127.0.0.1:50000 -> s1 127.0.0.1:4001 proxied 12.346 ms in 5 B out 7 B"
    )
    expect(AccessLog.annotations(proxied)).toEqual({
      access: "proxy",
      client: "127.0.0.1:50000",
      server: "s1",
      serverAddress: "127.0.0.1:4001",
      durationMs: 12.346,
      bytesIn: 5,
      bytesOut: 7,
      outcome: "proxied"
    })
    // A server named by its address is not named twice; a Locate carries no bytes.
    const byAddress = { ...server, id: ServerId.make("127.0.0.1:4001") }
    expect(
      AccessLog.describe({
        kind: "locate",
        client: "10.0.0.9:1234",
        server: byAddress,
        durationMs: 0.01,
        outcome: "located"
      })
    ).toBe("locate 10.0.0.9:1234 -> 127.0.0.1:4001 located 0.01 ms")
    expect(
      AccessLog.describe({
        kind: "locate",
        client: "10.0.0.9:1234",
        server: undefined,
        durationMs: 0,
        outcome: "no server"
      })
    ).toBe("locate 10.0.0.9:1234 no server 0 ms")
  })

  it.scopedLive("keeps at most its capacity waiting, and says how many lines it dropped", () => {
    const { layer, lines } = capture()
    return Effect.gen(function* () {
      const log = yield* AccessLog.make(3)
      const entry: AccessLog.AccessEntry = {
        kind: "locate",
        client: "127.0.0.1:1",
        server: undefined,
        durationMs: 0,
        outcome: "no server"
      }
      // Written synchronously in one go: the writer fiber has had no turn in between.
      for (let i = 0; i < 10; i++) log.unsafeWrite(entry)
      yield* eventually(
        Effect.sync(() => lines),
        (all) => all.some((line) => line.message.includes("dropped")),
        "2 seconds"
      )
      expect(accessLines(lines)).toHaveLength(3)
      expect(lines.find((line) => line.message.includes("dropped"))?.message).toBe(
        "access log: 7 line(s) dropped (more than 3 waiting)"
      )
    }).pipe(Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Error))
  })

  it.scopedLive("writes one line per Locate: client, server, duration, outcome (even at --log-level error)", () => {
    const { layer, lines } = capture()
    return Effect.gen(function* () {
      const { address } = yield* ControlPlane.ControlPlane
      yield* register("s1", 41_901)
      expect(yield* ask(address, new Locate({}))).toMatchObject({ _tag: "Located" })
      yield* Effect.flatMap(ServerRegistry, (registry) => registry.remove(ServerId.make("s1")))
      expect(yield* ask(address, new Locate({}))).toMatchObject({ _tag: "NoServerAvailable" })
      const logged = yield* eventually(
        Effect.sync(() => accessLines(lines)),
        (all) => all.length >= 2,
        "2 seconds"
      )
      expect(logged).toHaveLength(2)
      const [located, none] = logged
      expect(located?.level).toBe("INFO")
      expect(located?.message).toMatch(/^locate 127\.0\.0\.1:\d+ -> s1 127\.0\.0\.1:41901 located [\d.]+ ms$/)
      expect(located?.fields).toMatchObject({
        access: "locate",
        server: "s1",
        serverAddress: "127.0.0.1:41901",
        outcome: "located"
      })
      expect(located?.fields["client"]).toMatch(/^127\.0\.0\.1:\d+$/)
      expect(typeof located?.fields["durationMs"]).toBe("number")
      expect(none?.fields).toMatchObject({ access: "locate", outcome: "no server" })
      expect(none?.fields["server"]).toBeUndefined()
    }).pipe(Effect.provide(plane(true)), Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Error))
  })

  it.scopedLive("writes nothing when it is off", () => {
    const { layer, lines } = capture()
    return Effect.gen(function* () {
      const { address } = yield* ControlPlane.ControlPlane
      yield* register("s1", 41_902)
      yield* ask(address, new Locate({}))
      yield* Effect.sleep("100 millis")
      expect(accessLines(lines)).toEqual([])
    }).pipe(Effect.provide(plane(false)), Effect.provide(layer))
  })

  it.scopedLive("writes one line per proxied connection: client, server, duration, bytes each way, outcome", () => {
    const { layer, lines } = capture()
    return Effect.gen(function* () {
      const backend = yield* echo
      yield* register("echo", portOf(backend))
      const { address } = yield* Proxy.Proxy
      expect(yield* through(address.port, "hello")).toBe("hello")
      const [line] = yield* eventually(
        Effect.sync(() => accessLines(lines)),
        (all) => all.length >= 1,
        "2 seconds"
      )
      expect(line?.message).toMatch(
        new RegExp(
          `^proxy 127\\.0\\.0\\.1:\\d+ -> echo 127\\.0\\.0\\.1:${portOf(backend)} proxied [\\d.]+ ms in 5 B out 5 B$`
        )
      )
      expect(line?.fields).toMatchObject({
        access: "proxy",
        server: "echo",
        bytesIn: 5,
        bytesOut: 5,
        outcome: "proxied"
      })
      // No server live: the client is turned away, and that is a line too.
      yield* Effect.flatMap(ServerRegistry, (registry) => registry.remove(ServerId.make("echo")))
      yield* through(address.port, "anyone?")
      const all = yield* eventually(
        Effect.sync(() => accessLines(lines)),
        (all) => all.length >= 2,
        "2 seconds"
      )
      expect(all[1]?.fields).toMatchObject({ access: "proxy", outcome: "no server", bytesIn: 0, bytesOut: 0 })
      expect(Option.fromNullable(all[1]?.fields["server"])).toEqual(Option.none())
    }).pipe(Effect.provide(proxy(true)), Effect.provide(layer))
  })
})
