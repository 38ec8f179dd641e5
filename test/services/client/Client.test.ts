import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber, Layer, Option, Ref, Scope, TestClock, TestServices } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Busy } from "../../../src/domain/Errors.js"
import { FileHeader, ServerReply, ServerRequest } from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId, type ServerSpec, Weight } from "../../../src/domain/Server.js"
import * as Client from "../../../src/services/client/Client.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer } from "../../support/balancer.js"
import { servedFolder } from "../../support/fixtures.js"
import { startServer } from "../../support/server.js"

const plane = ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(Layer.provideMerge(balancerLayer()))

const at = (id: string, port: number): ServerSpec => ({
  id: ServerId.make(id),
  host: Host.make("127.0.0.1"),
  port: Port.make(port),
  weight: Weight.make(1)
})

/** A client of the balancer under test, quick to retry. */
const client = Effect.gen(function* () {
  const { address } = yield* ControlPlane.ControlPlane
  const context = yield* Layer.build(
    Client.layer({ ...Client.defaults, balancer: address, backoff: "10 millis" }).pipe(Layer.provide(NodeContext.layer))
  )
  return Effect.runSync(Effect.provide(Client.Client, context))
})

/** A server that takes one request and then misbehaves as told. */
const misbehaving = (port: number, behaviour: "hang up" | "busy" | "half a file") =>
  Effect.gen(function* () {
    const wire = yield* Wire.Wire
    yield* wire.serve({ host: "127.0.0.1", port }, (connection) =>
      Effect.gen(function* () {
        const request = yield* connection.read(ServerRequest)
        if (Option.isNone(request)) return
        if (behaviour === "busy") return yield* connection.send(ServerReply, new Busy({ message: "full" }))
        if (behaviour === "half a file") {
          yield* connection.send(ServerReply, new FileHeader({ name: "big.bin", size: 1_000_000 }))
          // Promises a million bytes, sends a hundred thousand, then hangs up.
          yield* connection.sendPayload(Fs.createReadStream("/dev/zero", { end: 99_999 }), 1_000_000)
        }
        yield* connection.destroy
      }).pipe(Effect.ignore)
    )
  })

const events = Effect.gen(function* () {
  const seen = yield* Ref.make<ReadonlyArray<Client.ClientEvent>>([])
  return {
    record: (event: Client.ClientEvent) => Ref.update(seen, (all) => [...all, event]),
    rerouted: Effect.map(Ref.get(seen), (all) => all.filter((e) => e._tag === "Rerouted").map((e) => e.server))
  }
})

describe("Client re-routing (in memory)", () => {
  it.scopedLive("goes back to the balancer and on to another server when one refuses, hangs up or is busy", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const folder = yield* servedFolder(1024)
      const good = yield* startServer(folder.root)
      yield* misbehaving(50001, "hang up")
      yield* misbehaving(50002, "busy")
      // Round-robin: the refusing, hanging-up and busy servers come first.
      yield* registry.add(at("refuses", 50000))
      yield* registry.add(at("hangs-up", 50001))
      yield* registry.add(at("busy", 50002))
      yield* registry.add(at("good", good.address.port))
      const log = yield* events
      const answer = yield* (yield* client).list(log.record)
      expect(answer.server.id).toBe("good")
      expect(answer.attempts).toBe(4)
      expect(answer.value).toMatchObject({ "notes.txt": "txt" })
      expect(yield* log.rerouted).toEqual([
        "refuses (127.0.0.1:50000)",
        "hangs-up (127.0.0.1:50001)",
        "busy (127.0.0.1:50002)"
      ])
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("gives up with one clear reason when every server is dead", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* registry.add(at("a", 50010))
      yield* registry.add(at("b", 50011))
      const exit = yield* Effect.exit((yield* client).compute(1))
      expect(exit).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "GaveUp", attempts: 6 })))
      if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain("no server could serve the request")
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("says so when the balancer has no server at all, or cannot be reached", () =>
    Effect.gen(function* () {
      const none = yield* Effect.exit((yield* client).list())
      expect(none).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "GaveUp" })))
      if (Exit.isFailure(none)) expect(String(none.cause)).toContain("no live server is available")
      const context = yield* Layer.build(
        Client.layer({ ...Client.defaults, balancer: { host: "127.0.0.1", port: 1 }, backoff: "1 millis" }).pipe(
          Layer.provide(NodeContext.layer)
        )
      )
      const unreachable = yield* Effect.exit(Effect.flatMap(Effect.provide(Client.Client, context), (c) => c.list()))
      expect(unreachable).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "BalancerUnavailable" })))
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("does not retry what no server can do: a missing file, a bad computation", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const folder = yield* servedFolder(1024)
      const good = yield* startServer(folder.root)
      yield* registry.add(at("good", good.address.port))
      const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-out-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(out, { recursive: true, force: true })))
      const c = yield* client
      expect(yield* Effect.exit(c.download("missing.txt", out))).toStrictEqual(
        Exit.fail(expect.objectContaining({ _tag: "FileNotFound" }))
      )
      expect(yield* Effect.exit(c.compute(61))).toStrictEqual(
        Exit.fail(expect.objectContaining({ _tag: "InvalidRequest" }))
      )
      expect(yield* Effect.exit(c.download("../escape", out))).toStrictEqual(
        Exit.fail(expect.objectContaining({ _tag: "InvalidRequest" }))
      )
      const servers = yield* registry.list
      expect(servers[0]?.located).toBe(2)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("never saves over a file already in the folder, even one that appears meanwhile, unless told to", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const folder = yield* servedFolder(1_000_000)
      const good = yield* startServer(folder.root)
      yield* registry.add(at("good", good.address.port))
      const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-out-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(out, { recursive: true, force: true })))
      Fs.writeFileSync(Path.join(out, "notes.txt"), "mine")
      const c = yield* client
      const refused = yield* Effect.flip(c.download("notes.txt", out))
      expect(refused).toMatchObject({
        _tag: "FileExists",
        message: `notes.txt exists in ${out}; use --force to overwrite`
      })
      expect(Fs.readFileSync(Path.join(out, "notes.txt"), "utf8")).toBe("mine")
      // Refused before anything was asked of the balancer.
      expect((yield* registry.list)[0]?.located).toBe(0)

      // Another program writes big.bin while it downloads: the download does not replace it.
      const theirs = Path.join(out, "big.bin")
      const meanwhile = yield* Effect.flip(
        c.download("big.bin", out, (event) =>
          Effect.sync(() => {
            if (event._tag === "Progress" && !Fs.existsSync(theirs)) Fs.writeFileSync(theirs, "theirs")
          })
        )
      )
      expect(meanwhile._tag).toBe("FileExists")
      expect(Fs.readFileSync(theirs, "utf8")).toBe("theirs")
      expect(Fs.readdirSync(out).sort()).toEqual(["big.bin", "notes.txt"])

      yield* c.download("notes.txt", out, undefined, { overwrite: true })
      expect(Fs.readFileSync(Path.join(out, "notes.txt"), "utf8")).toBe("hello effect-lb\n")
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("lists each file's size, as the server says", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const folder = yield* servedFolder(2048)
      const good = yield* startServer(folder.root)
      yield* registry.add(at("good", good.address.port))
      const listed = yield* (yield* client).list()
      expect(listed.sizes).toEqual({ "alias.txt": 16, "big.bin": 2048, empty: 0, "notes.txt": 16 })
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("re-routes a download cut off mid-transfer, and leaves only the complete file", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const folder = yield* servedFolder(1_000_000)
      const good = yield* startServer(folder.root)
      yield* misbehaving(50020, "half a file")
      yield* registry.add(at("cut", 50020))
      yield* registry.add(at("good", good.address.port))
      const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-out-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(out, { recursive: true, force: true })))
      const log = yield* events
      const saved = yield* (yield* client).download("big.bin", out, log.record)
      expect(saved.server.id).toBe("good")
      expect(yield* log.rerouted).toEqual(["cut (127.0.0.1:50020)"])
      expect(Fs.readdirSync(out)).toEqual(["big.bin"])
      expect(Fs.readFileSync(Path.join(out, "big.bin")).equals(folder.big)).toBe(true)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )
})

/** A server that answers a Download after `headerAfter`, sends 100,000 bytes `bytesAfter` later, then nothing more. */
const stalling = (port: number, headerAfter: Duration.DurationInput, bytesAfter: Duration.DurationInput) =>
  Effect.gen(function* () {
    const wire = yield* Wire.Wire
    yield* wire.serve({ host: "127.0.0.1", port }, (connection) =>
      Effect.gen(function* () {
        const request = yield* connection.read(ServerRequest)
        if (Option.isNone(request)) return
        yield* Effect.sleep(headerAfter)
        yield* connection.send(ServerReply, new FileHeader({ name: "big.bin", size: 1_000_000 }))
        yield* Effect.sleep(bytesAfter)
        yield* connection.sendPayload(Fs.createReadStream("/dev/zero", { end: 99_999 }), 100_000)
        return yield* Effect.never
      }).pipe(Effect.ignore)
    )
  })

/** Waits, in real time, for the in-memory I/O (and the file system) to get somewhere: the TestClock stands still meanwhile. */
const until = (check: Effect.Effect<boolean>) =>
  TestServices.provideLive(
    Effect.gen(function* () {
      for (let i = 0; i < 400 && !(yield* check); i++) yield* Effect.sleep("5 millis")
    })
  )

/** Gives whatever the last clock move set off a moment of real time to happen. */
const settle = TestServices.provideLive(Effect.sleep("50 millis"))

/** A download from a stalling server first, then a good one (round-robin), on the TestClock. */
const stalledDownload = (headerAfter: Duration.DurationInput, bytesAfter: Duration.DurationInput) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const folder = yield* servedFolder(1_000_000)
    const good = yield* startServer(folder.root)
    yield* stalling(50030, headerAfter, bytesAfter)
    yield* registry.add(at("stalls", 50030))
    yield* registry.add(at("good", good.address.port))
    const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-out-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(out, { recursive: true, force: true })))
    const seen = yield* Ref.make<ReadonlyArray<Client.ClientEvent>>([])
    const download = yield* Effect.fork(
      (yield* client).download("big.bin", out, (event) => Ref.update(seen, (all) => [...all, event]))
    )
    const received = Effect.map(Ref.get(seen), (all) =>
      all.reduce((most, e) => (e._tag === "Progress" ? Math.max(most, e.received) : most), 0)
    )
    const rerouted = Effect.map(Ref.get(seen), (all) => all.filter((e) => e._tag === "Rerouted"))
    return { download, out, big: folder.big, received, rerouted }
  })

describe("Client download deadline (in memory, TestClock)", () => {
  it.scoped("a server that accepts a download and never answers has failed after 5 s of silence", () =>
    Effect.gen(function* () {
      const run = yield* stalledDownload("1 hour", "0 millis")
      yield* settle
      yield* TestClock.adjust("4999 millis")
      yield* settle
      expect(yield* run.rerouted).toEqual([])
      yield* TestClock.adjust("1 millis")
      yield* until(Effect.map(run.rerouted, (r) => r.length === 1))
      expect(yield* run.rerouted).toEqual([
        { _tag: "Rerouted", server: "stalls (127.0.0.1:50030)", reason: "sent nothing for 5s" }
      ])
      yield* TestClock.adjust("1 second")
      const saved = yield* Fiber.join(run.download)
      expect(saved.server.id).toBe("good")
      expect(Fs.readFileSync(Path.join(run.out, "big.bin")).equals(run.big)).toBe(true)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scoped("the deadline moves with each byte: a payload that stops for 5 s fails, the partial file goes", () =>
    Effect.gen(function* () {
      const run = yield* stalledDownload("1 second", "3 seconds")
      yield* TestClock.adjust("1 second")
      yield* TestClock.adjust("3 seconds")
      yield* until(Effect.map(run.received, (n) => n === 100_000))
      // Four seconds in, and the last byte came just now: not yet 5 s of silence, even at 8.999 s.
      yield* TestClock.adjust("4999 millis")
      yield* settle
      expect(yield* run.rerouted).toEqual([])
      yield* TestClock.adjust("1 millis")
      yield* until(Effect.map(run.rerouted, (r) => r.length === 1))
      yield* TestClock.adjust("1 second")
      const saved = yield* Fiber.join(run.download)
      expect(saved.server.id).toBe("good")
      expect(Fs.readdirSync(run.out)).toEqual(["big.bin"])
      expect(Fs.readFileSync(Path.join(run.out, "big.bin")).equals(run.big)).toBe(true)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )
})

describe("Client over loopback", () => {
  it.scopedLive(
    "completes a computation whose server is killed in the middle of it",
    () =>
      Effect.gen(function* () {
        const registry = yield* ServerRegistry
        const folder = yield* servedFolder(1024)
        const scopes = new Map<string, Scope.CloseableScope>()
        for (const id of ["first", "second"]) {
          const scope = yield* Scope.make()
          // No drain on close: closing its scope is a crash, not a graceful stop.
          const server = yield* startServer(folder.root, { drainTimeout: 0 }).pipe(Scope.extend(scope))
          scopes.set(String(server.address.port), scope)
          yield* registry.add(at(id, server.address.port))
        }
        const killed: Array<string> = []
        const answer = yield* (yield* client).compute(1, (event) =>
          event._tag === "Located" && event.attempt === 1
            ? Effect.gen(function* () {
                killed.push(event.server.id)
                const scope = scopes.get(String(event.server.port))
                // Killed a moment after the computation started there.
                if (scope !== undefined)
                  yield* Effect.forkDaemon(Effect.delay(Scope.close(scope, Exit.void), "300 millis"))
              })
            : Effect.void
        )
        expect(answer.value).toBe(1)
        expect(answer.attempts).toBe(2)
        expect(answer.server.id).not.toBe(killed[0])
      }).pipe(Effect.provide(plane), Effect.provide(Wire.layer)),
    15_000
  )
})
