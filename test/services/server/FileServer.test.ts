import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Scope, Stream, SubscriptionRef, TestClock, TestServices } from "effect"
import * as Net from "node:net"
import { Compute, Download, ListFiles, Ping } from "../../../src/domain/Protocol.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { refusedNames, servedFolder } from "../../support/fixtures.js"
import { lines, raw } from "../../support/net.js"
import { connectTo, startServer } from "../../support/server.js"

describe("FileServer over loopback", () => {
  it.scopedLive("answers each request of the contract on one connection", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root)
      const client = yield* connectTo(server.address)
      expect(yield* client.ask(new ListFiles())).toMatchObject({
        _tag: "FileList",
        files: { "notes.txt": "txt", "big.bin": "bin", "alias.txt": "txt", empty: "" }
      })
      expect(yield* client.ask(new Compute({ seconds: 0 }))).toMatchObject({ _tag: "Computed", seconds: 0 })
      expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong", id: server.id, active: 1 })
      expect(yield* client.ask(new Download({ name: "empty" }))).toMatchObject({ _tag: "FileHeader", size: 0 })
      expect(yield* client.ask(new Download({ name: "notes.txt" }))).toMatchObject({ _tag: "FileHeader", size: 16 })
      expect((yield* client.payload(16)).toString()).toBe("hello effect-lb\n")
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("sends the exact bytes of a large file, and the connection goes on", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(8 * 1024 * 1024)
      const server = yield* startServer(folder.root)
      const client = yield* connectTo(server.address)
      const header = yield* client.ask(new Download({ name: "big.bin" }))
      expect(header).toMatchObject({ _tag: "FileHeader", name: "big.bin", size: folder.big.length })
      expect((yield* client.payload(folder.big.length)).equals(folder.big)).toBe(true)
      expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong" })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("refuses every path outside the folder, and every name that is not a plain file", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root)
      const client = yield* connectTo(server.address)
      for (const name of refusedNames) {
        expect(yield* client.ask(new Download({ name })), JSON.stringify(name)).toMatchObject({ _tag: "FileNotFound" })
      }
      expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong" })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("answers bad seconds with InvalidRequest and keeps the connection", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root, { maxCompute: 60 })
      const bad = [-1, 1.5, "3", 61, 1e300, null, {}, true].map((seconds) =>
        JSON.stringify({ _tag: "Compute", seconds })
      )
      const { data } = yield* raw(server.address.port, [...bad, '{"_tag":"Ping"}', ""].join("\n"), {
        expectLines: bad.length + 1
      })
      const replies = lines(data)
      expect(replies.map((reply) => reply._tag)).toEqual([...bad.map(() => "InvalidRequest"), "Pong"])
      expect(replies[3]?.message).toMatch(
        /^SECONDS must be an integer from 0 to the server's --max-compute, 60 here \(got \d+\)$/
      )
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("answers malformed lines with InvalidRequest and carries on", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root)
      const bad = [
        "not json",
        "{}",
        "[]",
        "42",
        '{"_tag":"Format"}',
        '{"_tag":"Download"}',
        '{"_tag":"Download","name":7}'
      ]
      const payload = Buffer.concat([
        Buffer.from(bad.join("\n") + "\n"),
        Buffer.from([0xc3, 0x28, 0x0a]),
        Buffer.from('{"_tag":"Ping"}\n')
      ])
      const { data } = yield* raw(server.address.port, payload, { expectLines: bad.length + 2 })
      const replies = lines(data)
      expect(replies.map((reply) => reply._tag)).toEqual([...bad.map(() => "InvalidRequest"), "InvalidRequest", "Pong"])
      expect(replies[0]?.message).toBe("malformed JSON")
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("refuses an oversized line, closes that connection, and serves the next client", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root, { maxLine: 1024 })
      const huge = yield* raw(server.address.port, "x".repeat(64 * 1024))
      expect(huge.closedByServer).toBe(true)
      expect(lines(huge.data)).toEqual([{ _tag: "InvalidRequest", message: "line longer than 1024 bytes" }])
      const client = yield* connectTo(server.address)
      expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong" })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("survives a client that vanishes mid-download, and counts it gone", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(32 * 1024 * 1024)
      const server = yield* startServer(folder.root)
      // A download under way: the first megabyte in, the rest held back (the socket paused).
      const { socket, received } = yield* Effect.acquireRelease(
        Effect.async<{ socket: Net.Socket; received: number }>((resume) => {
          const socket = Net.createConnection({ host: "127.0.0.1", port: server.address.port })
          let bytes = 0
          const onData = (chunk: Buffer) => {
            bytes += chunk.length
            if (bytes <= 1024 * 1024) return
            socket.pause()
            socket.off("data", onData)
            resume(Effect.succeed({ socket, received: bytes }))
          }
          socket.on("data", onData)
          socket.on("error", () => undefined)
          socket.write('{"_tag":"Download","name":"big.bin"}\n')
        }),
        ({ socket }) => Effect.sync(() => socket.destroy())
      )
      expect(received).toBeLessThan(folder.big.length)
      // Counted while it downloads...
      expect(yield* SubscriptionRef.get(server.active)).toBe(1)
      socket.destroy()
      // ...and counted gone once it has vanished, within a deadline.
      yield* server.active.changes.pipe(
        Stream.takeUntil((n) => n === 0),
        Stream.runDrain,
        Effect.timeout("3 seconds")
      )
      const client = yield* connectTo(server.address)
      expect(yield* client.ask(new Download({ name: "notes.txt" }))).toMatchObject({ _tag: "FileHeader", size: 16 })
      expect((yield* client.payload(16)).toString()).toBe("hello effect-lb\n")
      // The one who vanished is not counted among those served now.
      expect(yield* client.ask(new Ping())).toMatchObject({ _tag: "Pong", active: 1 })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("answers Busy past its connection limit", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root, { maxConnections: 2 })
      const first = yield* connectTo(server.address)
      const second = yield* connectTo(server.address)
      yield* first.ask(new Ping())
      yield* second.ask(new Ping())
      const third = yield* raw(server.address.port, '{"_tag":"Ping"}\n')
      expect(third.closedByServer).toBe(true)
      expect(lines(third.data).map((reply) => reply._tag)).toEqual(["Busy"])
      expect(yield* first.ask(new Ping())).toMatchObject({ _tag: "Pong" })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("closes a connection that stays idle past the idle timeout", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root, { idleTimeout: "200 millis" })
      const idle = yield* raw(server.address.port, "")
      expect(idle.closedByServer).toBe(true)
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("does not count a probe that only pings as an active connection", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder()
      const server = yield* startServer(folder.root)
      const prober = yield* connectTo(server.address)
      expect(yield* prober.ask(new Ping())).toMatchObject({ active: 0 })
      const user = yield* connectTo(server.address)
      yield* user.ask(new ListFiles())
      expect(yield* SubscriptionRef.get(server.active)).toBe(1)
      expect(yield* prober.ask(new Ping())).toMatchObject({ active: 1 })
      yield* user.connection.destroy
      yield* server.active.changes.pipe(
        Stream.takeUntil((n) => n === 0),
        Stream.runDrain,
        Effect.timeout("3 seconds")
      )
    }).pipe(Effect.provide(Wire.layer))
  )
})

describe("FileServer on the test clock", () => {
  it.scoped("computes for exactly the seconds asked, without blocking other clients", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root)
      const computing = yield* connectTo(server.address)
      const other = yield* connectTo(server.address)
      const reply = yield* Effect.fork(computing.ask(new Compute({ seconds: 3 })))
      yield* TestClock.adjust("2999 millis")
      expect(Option.isNone(yield* Fiber.poll(reply))).toBe(true)
      expect(yield* other.ask(new ListFiles())).toMatchObject({ _tag: "FileList" })
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(reply)).toMatchObject({ _tag: "Computed", seconds: 3 })
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("with compute slots, runs that many computations at once and queues the rest", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root, { computeSlots: 1 })
      const first = yield* connectTo(server.address)
      const second = yield* connectTo(server.address)
      const one = yield* Effect.fork(first.ask(new Compute({ seconds: 1 })))
      yield* TestClock.adjust("1 millis")
      const two = yield* Effect.fork(second.ask(new Compute({ seconds: 1 })))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(one)).toMatchObject({ _tag: "Computed" })
      expect(Option.isNone(yield* Fiber.poll(two))).toBe(true)
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(two)).toMatchObject({ _tag: "Computed" })
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("closes an idle connection after 30 seconds, not before", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root)
      const client = yield* connectTo(server.address)
      yield* client.ask(new Ping())
      const closed = yield* Effect.fork(client.connection.closed)
      yield* TestClock.adjust("29 seconds")
      expect(Option.isNone(yield* Fiber.poll(closed))).toBe(true)
      yield* TestClock.adjust("1 seconds")
      yield* Fiber.join(closed)
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("on shutdown refuses new clients and lets a computation in flight finish", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root, { drainTimeout: "10 seconds" })
      const computing = yield* connectTo(server.address)
      const reply = yield* Effect.fork(computing.ask(new Compute({ seconds: 4 })))
      yield* TestClock.adjust("1 second")
      const drained = yield* Effect.fork(server.drain)
      yield* TestClock.adjust("1 millis")
      const late = yield* connectTo(server.address)
      expect(yield* late.receive).toMatchObject({ _tag: "Busy" })
      yield* TestClock.adjust("3 seconds")
      expect(yield* Fiber.join(reply)).toMatchObject({ _tag: "Computed", seconds: 4 })
      // Its connection is closed after the answer, and then the drain is done.
      yield* computing.connection.closed
      yield* Fiber.join(drained)
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("a client that hangs up during its computation abandons it, and its slot goes to the next", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root, { computeSlots: 1 })
      const leaving = yield* connectTo(server.address)
      yield* leaving.send(new Compute({ seconds: 60 }))
      yield* TestClock.adjust("1 millis")
      expect(yield* SubscriptionRef.get(server.active)).toBe(1)
      yield* leaving.connection.destroy
      const next = yield* connectTo(server.address)
      const reply = yield* Effect.fork(next.ask(new Compute({ seconds: 1 })))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(reply)).toMatchObject({ _tag: "Computed", seconds: 1 })
      expect(yield* next.ask(new Ping())).toMatchObject({ _tag: "Pong", active: 1 })
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("on shutdown cuts a computation that outlasts the drain timeout", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const serverScope = yield* Scope.make()
      const server = yield* startServer(folder.root, { drainTimeout: "2 seconds" }).pipe(Scope.extend(serverScope))
      const computing = yield* connectTo(server.address)
      const reply = yield* Effect.fork(Effect.exit(computing.ask(new Compute({ seconds: 60 }))))
      const closed = yield* Effect.fork(computing.connection.closed)
      yield* TestClock.adjust("1 millis")
      // A daemon, so a shutdown that never ends fails the deadline below rather than hanging the
      // test's own teardown.
      const shutdown = yield* Effect.forkDaemon(Scope.close(serverScope, Exit.void))
      // The drain waits for the computation, up to its timeout and not a moment less...
      yield* TestClock.adjust("1999 millis")
      expect(Option.isNone(yield* Fiber.poll(shutdown))).toBe(true)
      expect(Option.isNone(yield* Fiber.poll(closed))).toBe(true)
      // ...then cuts it: the shutdown ends, and the client's connection closes without an answer.
      yield* TestClock.adjust("1 millis")
      const [, , answer] = yield* Effect.all([Fiber.join(shutdown), Fiber.join(closed), Fiber.join(reply)]).pipe(
        Effect.timeout("2 seconds"),
        TestServices.provideLive
      )
      expect(Exit.isSuccess(answer)).toBe(false)
    }).pipe(Effect.provide(Wire.layerMemory))
  )
})
