import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, FiberId, FiberRefs, HashMap, Layer, List, Logger, LogLevel, Option } from "effect"
import * as Net from "node:net"
import * as Stream from "node:stream"
import { Locate } from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as AccessLog from "../../../src/services/balancer/AccessLog.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import * as Proxy from "../../../src/services/balancer/Proxy.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { ask } from "../../../src/services/client/BalancerClient.js"
import { LogOutput, type Output, prettyLogger } from "../../../src/services/LogOutput.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer } from "../../support/balancer.js"
import { eventually } from "../../support/eventually.js"
import { echoServer } from "../../support/net.js"

interface Line {
  readonly level: string
  readonly message: string
  readonly fields: Record<string, unknown>
}

/** A logger that keeps every line Effect's logger writes (the access log's warning about dropped lines). */
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

/** The access log's lines read back: JSON objects, or pretty lines with their indented annotations. */
const parse = (format: Output["format"], text: string): Array<Line> => {
  if (format === "json")
    return text
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => {
        const object = JSON.parse(line) as { logLevel: string; message: string; annotations: Record<string, unknown> }
        return { level: object.logLevel, message: object.message, fields: object.annotations }
      })
  const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = []
  for (const line of text.split("\n")) {
    const head = /^\[\d\d:\d\d:\d\d\.\d{3}\] (\w+) (.*)$/.exec(line)
    const field = /^ {2}(\w+): (.*)$/.exec(line)
    if (head !== null) lines.push({ level: head[1] ?? "", message: head[2] ?? "", fields: {} })
    else if (field !== null) {
      const last = lines[lines.length - 1]
      if (last !== undefined) last.fields[field[1] ?? ""] = field[2]
    } else expect(line).toBe("")
  }
  return lines
}

/** Where the access log writes in a test: a stream that keeps every write, in `format`. */
const sink = (format: Output["format"]) => {
  const writes: Array<string> = []
  const stream = new Stream.Writable({
    decodeStrings: false,
    write: (chunk: string, _encoding, done) => {
      writes.push(chunk)
      done()
    }
  })
  return {
    writes,
    lines: Effect.sync(() => parse(format, writes.join(""))),
    output: Effect.provideService(LogOutput, { format, colors: false, stream })
  }
}

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

const located = (client: string, at = 0): AccessLog.AccessEntry => ({
  kind: "locate",
  client,
  server: { id: ServerId.make("s1"), host: Host.make("127.0.0.1"), port: Port.make(4001) },
  durationMs: 0.0214,
  outcome: "located",
  at
})

const proxied: AccessLog.AccessEntry = {
  kind: "proxy",
  client: "127.0.0.1:50000",
  server: { id: ServerId.make("s1"), host: Host.make("127.0.0.1"), port: Port.make(4001) },
  durationMs: 12.3456,
  bytesIn: 5,
  bytesOut: 7,
  outcome: "proxied",
  at: 1_700_000_000_123
}

describe("the access log", () => {
  it("says in one short line what the annotations say in full", () => {
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
    const byAddress = { id: ServerId.make("127.0.0.1:4001"), host: Host.make("127.0.0.1"), port: Port.make(4001) }
    expect(AccessLog.describe({ ...located("10.0.0.9:1234"), server: byAddress, durationMs: 0.01 })).toBe(
      "locate 10.0.0.9:1234 -> 127.0.0.1:4001 located 0.01 ms"
    )
    expect(
      AccessLog.describe({ ...located("10.0.0.9:1234"), server: undefined, durationMs: 0, outcome: "no server" })
    ).toBe("locate 10.0.0.9:1234 no server 0 ms")
  })

  it("writes a JSON line as Effect's JSON logger writes one: the same keys and values, its own time", () => {
    // A client text that JSON must escape (ids and addresses never need it), and one it need not.
    for (const client of ["127.0.0.1:50000", 'odd "client"\\\n\u0001\ud800']) {
      const entry = { ...proxied, client }
      const ours = AccessLog.render({ format: "json", colors: false, stream: process.stdout }, "#7")([entry])
      const effects = Logger.jsonLogger.log({
        fiberId: FiberId.runtime(7, 0),
        logLevel: LogLevel.Info,
        message: AccessLog.describe(entry),
        cause: Cause.empty,
        context: FiberRefs.empty(),
        spans: List.empty(),
        annotations: HashMap.fromIterable(Object.entries(AccessLog.annotations(entry))),
        date: new Date(entry.at)
      })
      expect(ours.endsWith("\n")).toBe(true)
      expect(ours.split("\n")).toHaveLength(2)
      expect(JSON.parse(ours)).toEqual(JSON.parse(effects))
      expect(JSON.parse(ours)).toMatchObject({ timestamp: "2023-11-14T22:13:20.123Z", annotations: { client } })
    }
  })

  it.effect("writes a pretty line as the program's pretty logger writes one: one line, colours and all", () =>
    Effect.gen(function* () {
      for (const entry of [located("127.0.0.1:5", 0), { ...proxied, at: 0 }]) {
        for (const colors of [false, true]) {
          const printed: Array<string> = []
          const stream = new Stream.Writable({
            decodeStrings: false,
            write: (chunk: string, _encoding, done) => {
              printed.push(chunk)
              done()
            }
          })
          yield* Effect.logInfo(AccessLog.describe(entry)).pipe(
            Effect.provide(Logger.replace(Logger.defaultLogger, prettyLogger(colors, stream)))
          )
          const ours = AccessLog.render({ format: "pretty", colors, stream: process.stdout }, "#7")([entry])
          expect(ours).toBe(printed.join(""))
          expect(ours.split("\n")).toHaveLength(2)
          expect(ours.includes("#")).toBe(false) // no fiber id
          expect(ours.includes("\x1b[")).toBe(colors)
        }
      }
    })
  )

  it.scopedLive("writes a batch of lines in one write: every line, in order, with the time each happened", () => {
    const { lines, output, writes } = sink("json")
    return Effect.gen(function* () {
      const log = yield* AccessLog.make(8192)
      for (let i = 0; i < 5000; i++) log.unsafeWrite(located(`127.0.0.1:${i}`, 1_700_000_000_000 + i))
      const all = yield* eventually(lines, (all) => all.length >= 5000, "2 seconds")
      expect(all.map((line) => line.fields["client"])).toEqual(Array.from({ length: 5000 }, (_, i) => `127.0.0.1:${i}`))
      expect(writes).toHaveLength(1)
      const stamps = writes
        .join("")
        .split("\n", 1001)
        .map((line) => (line === "" ? "" : JSON.parse(line).timestamp))
      expect(stamps[0]).toBe("2023-11-14T22:13:20.000Z")
      expect(stamps[999]).toBe("2023-11-14T22:13:20.999Z")
      expect(stamps[1000]).toBe("2023-11-14T22:13:21.000Z")
      // What gathered when the log closes is written as it closes.
      yield* Effect.scoped(
        Effect.map(AccessLog.make(), (second) => {
          for (let i = 0; i < 3; i++) second.unsafeWrite(located(`10.0.0.1:${i}`))
        })
      )
      expect((yield* lines).slice(5000).map((line) => line.fields["client"])).toEqual([
        "10.0.0.1:0",
        "10.0.0.1:1",
        "10.0.0.1:2"
      ])
    }).pipe(output)
  })

  it.scopedLive("waits while a slow stream drains, keeping at most its capacity meanwhile", () => {
    const captured = capture()
    // A stream that takes a write only when the test lets it: a pipe nobody reads.
    const writes: Array<string> = []
    const held: Array<() => void> = []
    const stream = new Stream.Writable({
      highWaterMark: 16,
      decodeStrings: false,
      write: (chunk: string, _encoding, done) => {
        writes.push(chunk)
        held.push(done)
      }
    })
    return Effect.gen(function* () {
      const log = yield* AccessLog.make(100)
      log.unsafeWrite(located("127.0.0.1:1"))
      yield* eventually(
        Effect.sync(() => writes.length),
        (count) => count === 1,
        "2 seconds"
      )
      // The writer waits for the stream: these stay in the buffer, and what does not fit is dropped.
      for (let i = 0; i < 100; i++) log.unsafeWrite(located("127.0.0.1:2"))
      yield* Effect.sleep("100 millis")
      for (let i = 0; i < 50; i++) log.unsafeWrite(located("127.0.0.1:3"))
      expect(writes).toHaveLength(1)
      expect(stream.writableLength).toBeLessThan(1000)
      held.shift()?.()
      yield* eventually(
        Effect.sync(() => writes.length),
        (count) => count === 2,
        "2 seconds"
      )
      expect(parse("pretty", writes[1] ?? "")).toHaveLength(100)
      held.shift()?.()
      const warning = yield* eventually(
        Effect.sync(() => captured.lines.find((line) => line.message.includes("dropped"))),
        (line) => line !== undefined,
        "2 seconds"
      )
      expect(warning?.message).toBe("access log: 50 line(s) dropped (more than 100 waiting)")
    }).pipe(
      Effect.provideService(LogOutput, { format: "pretty", colors: false, stream }),
      Effect.provide(captured.layer)
    )
  })

  it.scopedLive("keeps at most its capacity waiting, and says how many lines it dropped", () => {
    const { layer, lines: logged } = capture()
    const { lines, output } = sink("json")
    return Effect.gen(function* () {
      const log = yield* AccessLog.make(3)
      // Written synchronously in one go: the writer fiber has had no turn in between.
      for (let i = 0; i < 10; i++)
        log.unsafeWrite({ ...located("127.0.0.1:1"), server: undefined, outcome: "no server" })
      yield* eventually(
        Effect.sync(() => logged),
        (all) => all.some((line) => line.message.includes("dropped")),
        "2 seconds"
      )
      expect(yield* lines).toHaveLength(3)
      expect(logged.find((line) => line.message.includes("dropped"))?.message).toBe(
        "access log: 7 line(s) dropped (more than 3 waiting)"
      )
    }).pipe(output, Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Error))
  })

  it.scopedLive("writes one line per Locate: client, server, duration, outcome (even at --log-level error)", () => {
    const { lines, output } = sink("json")
    return Effect.gen(function* () {
      const { address } = yield* ControlPlane.ControlPlane
      yield* register("s1", 41_901)
      expect(yield* ask(address, new Locate({}))).toMatchObject({ _tag: "Located" })
      yield* Effect.flatMap(ServerRegistry, (registry) => registry.remove(ServerId.make("s1")))
      expect(yield* ask(address, new Locate({}))).toMatchObject({ _tag: "NoServerAvailable" })
      const logged = yield* eventually(lines, (all) => all.length >= 2, "2 seconds")
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
    }).pipe(Effect.provide(plane(true)), output, Logger.withMinimumLogLevel(LogLevel.Error))
  })

  it.scopedLive("writes nothing when it is off", () => {
    const { output, writes } = sink("pretty")
    return Effect.gen(function* () {
      const { address } = yield* ControlPlane.ControlPlane
      yield* register("s1", 41_902)
      yield* ask(address, new Locate({}))
      yield* Effect.sleep("100 millis")
      expect(writes).toEqual([])
    }).pipe(Effect.provide(plane(false)), output)
  })

  it.scopedLive("writes one line per proxied connection: client, server, duration, bytes each way, outcome", () => {
    const { lines, output } = sink("json")
    return Effect.gen(function* () {
      const backend = yield* echoServer
      yield* register("echo", portOf(backend))
      const { address } = yield* Proxy.Proxy
      expect(yield* through(address.port, "hello")).toBe("hello")
      const [line] = yield* eventually(lines, (all) => all.length >= 1, "2 seconds")
      expect(line?.level).toBe("INFO")
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
      expect(typeof line?.fields["durationMs"]).toBe("number")
      // No server live: the client is turned away, and that is a line too.
      yield* Effect.flatMap(ServerRegistry, (registry) => registry.remove(ServerId.make("echo")))
      yield* through(address.port, "anyone?")
      const all = yield* eventually(lines, (all) => all.length >= 2, "2 seconds")
      expect(all[1]?.fields).toMatchObject({ access: "proxy", outcome: "no server", bytesIn: 0, bytesOut: 0 })
      expect(Option.fromNullable(all[1]?.fields["server"])).toEqual(Option.none())
    }).pipe(Effect.provide(proxy(true)), output)
  })
})
