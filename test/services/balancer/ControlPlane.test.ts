import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Fiber, Layer, Option, Scope, Stream, TestClock, TestServices } from "effect"
import {
  BalancerReply,
  BalancerRequest,
  Compute,
  Deregister,
  Load,
  Locate,
  Register,
  SetStrategy,
  Status
} from "../../../src/domain/Protocol.js"
import { Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as BalancerLink from "../../../src/services/server/BalancerLink.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import * as FileServer from "../../../src/services/server/FileServer.js"
import * as FileStore from "../../../src/services/server/FileStore.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer, spec } from "../../support/balancer.js"
import type { StrategyName } from "../../../src/services/balancer/strategies/Catalog.js"
import { servedFolder } from "../../support/fixtures.js"
import { eventually } from "../../support/eventually.js"
import { lines, raw } from "../../support/net.js"
import { connectTo } from "../../support/server.js"

const plane = (options: { token?: string; strategy?: StrategyName; drainTimeout?: Duration.DurationInput } = {}) =>
  ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(
    Layer.provideMerge(
      balancerLayer(options.strategy, {
        token: options.token,
        ...(options.drainTimeout === undefined ? {} : { drainTimeout: options.drainTimeout })
      })
    )
  )

/** A connection to the balancer port that asks and answers in turn. */
const operator = Effect.gen(function* () {
  const { address } = yield* ControlPlane.ControlPlane
  const wire = yield* Wire.Wire
  const connection = yield* wire.connect(address)
  const receive = connection.read(BalancerReply).pipe(Effect.map(Option.getOrThrow))
  return {
    connection,
    send: (request: BalancerRequest) => connection.send(BalancerRequest, request),
    receive,
    ask: (request: BalancerRequest) => Effect.zipRight(connection.send(BalancerRequest, request), receive)
  }
})

describe("ControlPlane", () => {
  it.scoped("registers servers, locates them, reports status", () =>
    Effect.gen(function* () {
      const server = yield* operator
      expect(yield* server.ask(new Register({ server: spec(1) }))).toMatchObject({ _tag: "Registered", id: "s1" })
      const client = yield* operator
      expect(yield* client.ask(new Locate({}))).toMatchObject({
        _tag: "Located",
        server: { id: "s1", host: "127.0.0.1", port: spec(1).port }
      })
      const status = yield* client.ask(new Status())
      expect(status).toMatchObject({
        _tag: "StatusReport",
        strategy: "round-robin",
        servers: [{ id: "s1", state: "live", weight: 1, active: 0, located: 1, responseTimeMs: null }]
      })
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layerMemory))
  )

  it.scoped("answers NoServerAvailable when there is nobody to send a client to", () =>
    Effect.gen(function* () {
      const client = yield* operator
      expect(yield* client.ask(new Locate({}))).toMatchObject({ _tag: "NoServerAvailable" })
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("consistent-hash keeps a key on one server; without a key, the client's address is the key", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      for (let n = 1; n <= 5; n++) yield* registry.add(spec(n))
      const { address } = yield* ControlPlane.ControlPlane
      const locate = (request: Locate) =>
        Effect.scoped(
          Effect.gen(function* () {
            // A connection of its own each time: the key, not the connection, must decide.
            const connection = yield* (yield* Wire.Wire).connect(address)
            yield* connection.send(BalancerRequest, request)
            const reply = Option.getOrThrow(yield* connection.read(BalancerReply))
            return reply._tag === "Located" ? reply.server.id : reply._tag
          })
        )
      const homes = yield* Effect.forEach(
        Array.from({ length: 40 }, (_, i) => `user-${i}`),
        (key) =>
          Effect.map(
            Effect.forEach([1, 2, 3], () => locate(new Locate({ key }))),
            (ids) => new Set(ids)
          )
      )
      for (const home of homes) expect(home.size).toBe(1)
      // Different keys do spread.
      expect(new Set(homes.flatMap((home) => [...home])).size).toBeGreaterThan(2)
      // The client's own address (127.0.0.1 over loopback) is the key when it gives none.
      const byAddress = yield* Effect.forEach([1, 2, 3, 4], () => locate(new Locate({})))
      expect(new Set(byAddress).size).toBe(1)
    }).pipe(Effect.provide(plane({ strategy: "consistent-hash" })), Effect.provide(Wire.layer))
  )

  it.scoped("steers least-connection by the load servers report", () =>
    Effect.gen(function* () {
      const first = yield* operator
      const second = yield* operator
      yield* first.ask(new Register({ server: spec(1) }))
      yield* second.ask(new Register({ server: spec(2) }))
      yield* first.send(new Load({ active: 9 }))
      yield* second.send(new Load({ active: 3 }))
      const client = yield* operator
      yield* client.ask(new Status())
      const picks = []
      for (let i = 0; i < 4; i++) picks.push(yield* client.ask(new Locate({})))
      expect(picks.map((reply) => (reply._tag === "Located" ? reply.server.id : reply._tag))).toEqual([
        "s2",
        "s2",
        "s2",
        "s2"
      ])
    }).pipe(Effect.provide(plane({ strategy: "weighted-least-connection" })), Effect.provide(Wire.layerMemory))
  )

  it.scoped("with a token, refuses Register, SetStrategy and Deregister without it, and changes nothing", () =>
    Effect.gen(function* () {
      const intruder = yield* operator
      expect(yield* intruder.ask(new Register({ server: spec(1) }))).toMatchObject({ _tag: "Unauthorized" })
      expect(yield* intruder.ask(new Register({ server: spec(1), token: "wrong" }))).toMatchObject({
        _tag: "Unauthorized"
      })
      expect(yield* intruder.ask(new SetStrategy({ strategy: "weighted-round-robin" }))).toMatchObject({
        _tag: "Unauthorized"
      })
      const server = yield* operator
      expect(yield* server.ask(new Register({ server: spec(2), token: "s3cret" }))).toMatchObject({
        _tag: "Registered"
      })
      expect(yield* intruder.ask(new Deregister({ id: ServerId.make("s2") }))).toMatchObject({ _tag: "Unauthorized" })
      const status = yield* intruder.ask(new Status())
      expect(status).toMatchObject({ strategy: "round-robin", servers: [{ id: "s2", state: "live" }] })
      expect(yield* intruder.ask(new SetStrategy({ strategy: "weighted-round-robin", token: "s3cret" }))).toMatchObject(
        { _tag: "StrategySet", strategy: "weighted-round-robin" }
      )
    }).pipe(Effect.provide(plane({ token: "s3cret" })), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("refuses an unknown strategy, a Load before Register, and malformed lines, and carries on", () =>
    Effect.gen(function* () {
      const peer = yield* operator
      expect(yield* peer.ask(new SetStrategy({ strategy: "fastest" }))).toMatchObject({
        _tag: "InvalidRequest",
        message: expect.stringContaining("unknown strategy")
      })
      expect(yield* peer.ask(new Load({ active: 2 }))).toMatchObject({ _tag: "InvalidRequest" })
      const { address } = yield* ControlPlane.ControlPlane
      // Lines that are not requests; each gets its own InvalidRequest, and the connection goes on.
      const deep = "[".repeat(8000) + "]".repeat(8000)
      const garbage = [
        '{"_tag":"Locate","exclude":"all"}',
        "{",
        '{"_tag":"Register","server":{}}',
        '"Locate"',
        "[]",
        // Once crashed the process: formatting the error message of a value nested 8,000 deep.
        `{"_tag":"SetStrategy","strategy":${deep}}`
      ]
      const { data } = yield* raw(address.port, [...garbage, '{"_tag":"Status"}', ""].join("\n"), {
        expectLines: garbage.length + 1
      })
      expect(lines(data).map((reply) => reply._tag)).toEqual([...garbage.map(() => "InvalidRequest"), "StatusReport"])
      const huge = yield* raw(address.port, "x".repeat(100 * 1024))
      expect(lines(huge.data)).toEqual([{ _tag: "InvalidRequest", message: "line longer than 65536 bytes" }])
      expect(huge.closedByServer).toBe(true)
      expect(yield* peer.ask(new Status())).toMatchObject({ strategy: "round-robin" })
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layer))
  )

  it.scoped("drains a server that deregisters, and removes it when it hangs up", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const server = yield* operator
      yield* server.ask(new Register({ server: spec(1) }))
      yield* server.send(new Load({ active: 2 }))
      expect(yield* server.ask(new Deregister({}))).toMatchObject({ _tag: "Deregistered", id: "s1" })
      const client = yield* operator
      expect(yield* client.ask(new Locate({}))).toMatchObject({ _tag: "NoServerAvailable" })
      expect(Option.map(yield* registry.get(spec(1).id), (s) => s.state)).toEqual(Option.some("draining"))
      yield* server.connection.destroy
      // Gone within a deadline on the live clock: a removal that never comes fails the test in 2 s
      // (the test clock stands still, so a timeout on it would only hang).
      const remaining = yield* eventually(registry.list, (servers) => servers.length === 0, "2 seconds").pipe(
        TestServices.provideLive
      )
      expect(remaining).toEqual([])
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layerMemory))
  )
})

describe("ControlPlane: a registration belongs to the connection that made it", () => {
  /** s1 again, at another address: the same server restarted on another port (a rolling restart). */
  const restarted = { ...spec(1), port: Port.make(spec(1).port + 100) }
  const whereIs = (id: string) =>
    Effect.map(
      Effect.flatMap(ServerRegistry, (registry) => registry.get(ServerId.make(id))),
      (server) => Option.map(server, ({ port, state, active }) => ({ port, state, active }))
    )

  it.scopedLive("a superseded connection's Load, Deregister and close change nothing", () =>
    Effect.gen(function* () {
      const old = yield* operator
      expect(yield* old.ask(new Register({ server: spec(1) }))).toMatchObject({ _tag: "Registered", id: "s1" })
      const fresh = yield* operator
      expect(yield* fresh.ask(new Register({ server: restarted }))).toMatchObject({ _tag: "Registered", id: "s1" })
      yield* fresh.send(new Load({ active: 1 }))

      // The old process, shutting down: a last load report, its goodbye, and it hangs up.
      // (Before, a Load was taken silently, for whichever s1 was registered: no answer came.)
      expect(yield* old.ask(new Load({ active: 7 })).pipe(Effect.timeout("2 seconds"))).toMatchObject({
        _tag: "InvalidRequest"
      })
      expect(yield* old.ask(new Deregister({}))).toMatchObject({ _tag: "Deregistered", id: "s1" })
      yield* old.connection.destroy
      yield* Effect.sleep("100 millis")

      expect(yield* whereIs("s1")).toEqual(Option.some({ port: restarted.port, state: "live", active: 1 }))
      const client = yield* operator
      expect(yield* client.ask(new Locate({}))).toMatchObject({ server: { id: "s1", port: restarted.port } })
      // The new connection owns the registration: its own goodbye still works.
      expect(yield* fresh.ask(new Deregister({}))).toMatchObject({ _tag: "Deregistered", id: "s1" })
      expect(yield* client.ask(new Locate({}))).toMatchObject({ _tag: "NoServerAvailable" })
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layerMemory))
  )

  it.scopedLive("a drain under way never removes the server that registered again meanwhile", () =>
    Effect.gen(function* () {
      const old = yield* operator
      yield* old.ask(new Register({ server: spec(1) }))
      yield* old.send(new Load({ active: 2 }))
      expect(yield* old.ask(new Deregister({}))).toMatchObject({ _tag: "Deregistered", id: "s1" })
      expect(Option.map(yield* whereIs("s1"), (s) => s.state)).toEqual(Option.some("draining"))
      const fresh = yield* operator
      yield* fresh.ask(new Register({ server: restarted }))
      // The old one finishes its requests (which would end its drain), and hangs up.
      yield* old.send(new Load({ active: 0 }))
      yield* old.connection.destroy
      // Past the drain timeout too.
      yield* Effect.sleep("400 millis")
      expect(yield* whereIs("s1")).toEqual(Option.some({ port: restarted.port, state: "live", active: 2 }))
    }).pipe(Effect.provide(plane({ drainTimeout: "200 millis" })), Effect.provide(Wire.layerMemory))
  )

  it.scoped("Deregister naming another server on a control connection is an operator's: it needs the token", () =>
    Effect.gen(function* () {
      const one = yield* operator
      const two = yield* operator
      yield* one.ask(new Register({ server: spec(1), token: "s3cret" }))
      yield* two.ask(new Register({ server: spec(2), token: "s3cret" }))
      expect(yield* one.ask(new Deregister({ id: ServerId.make("s2") }))).toMatchObject({ _tag: "Unauthorized" })
      expect(Option.map(yield* whereIs("s1"), (s) => s.state)).toEqual(Option.some("live"))
      expect(Option.map(yield* whereIs("s2"), (s) => s.state)).toEqual(Option.some("live"))
      expect(yield* one.ask(new Deregister({ id: ServerId.make("s2"), token: "s3cret" }))).toMatchObject({
        _tag: "Deregistered",
        id: "s2"
      })
      expect(Option.map(yield* whereIs("s1"), (s) => s.state)).toEqual(Option.some("live"))
      expect(yield* one.ask(new Deregister({ id: ServerId.make("s9"), token: "s3cret" }))).toMatchObject({
        _tag: "InvalidRequest"
      })
      // Its own id, or none: its own server, without the token.
      expect(yield* one.ask(new Deregister({ id: ServerId.make("s1") }))).toMatchObject({
        _tag: "Deregistered",
        id: "s1"
      })
      expect(Option.map(yield* whereIs("s1"), (s) => s.state)).toEqual(Option.some("draining"))
    }).pipe(Effect.provide(plane({ token: "s3cret" })), Effect.provide(Wire.layerMemory))
  )
})

describe("ControlPlane connections", () => {
  it.scopedLive("answers pipelined requests in order, quick ones and those that take an effect alike", () =>
    Effect.gen(function* () {
      const { address } = yield* ControlPlane.ControlPlane
      const register = JSON.stringify({ _tag: "Register", server: { ...spec(1) } })
      const requests = [register, '{"_tag":"Locate"}', '{"_tag":"Status"}', '{"_tag":"Locate"}', "nonsense"]
      const { data } = yield* raw(address.port, requests.join("\n") + "\n", { expectLines: requests.length })
      expect(lines(data).map((reply) => reply._tag)).toEqual([
        "Registered",
        "Located",
        "StatusReport",
        "Located",
        "InvalidRequest"
      ])
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layer))
  )

  it.scoped("closes a connection idle for 30 seconds, but never a registered server's", () =>
    Effect.gen(function* () {
      const server = yield* operator
      yield* server.ask(new Register({ server: spec(1) }))
      const client = yield* operator
      yield* client.ask(new Locate({}))
      const clientClosed = yield* Effect.fork(client.connection.closed)
      const serverClosed = yield* Effect.fork(server.connection.closed)
      yield* TestClock.adjust("29 seconds")
      expect(Option.isNone(yield* Fiber.poll(clientClosed))).toBe(true)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(clientClosed)
      yield* TestClock.adjust("2 minutes")
      expect(Option.isNone(yield* Fiber.poll(serverClosed))).toBe(true)
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layerMemory))
  )

  it.scoped("keeps a registered server's control connection open after its Load, however quiet it then stays", () =>
    Effect.gen(function* () {
      const server = yield* operator
      yield* server.ask(new Register({ server: spec(1) }))
      yield* server.send(new Load({ active: 1 }))
      const quiet = yield* operator
      yield* quiet.ask(new Status())
      // The Load has been taken when a later request on the same connection is answered.
      yield* server.ask(new Status())
      const serverClosed = yield* Effect.fork(server.connection.closed)
      const quietClosed = yield* Effect.fork(quiet.connection.closed)
      yield* TestClock.adjust("31 seconds")
      yield* Fiber.join(quietClosed)
      yield* TestClock.adjust("3 minutes")
      expect(Option.isNone(yield* Fiber.poll(serverClosed))).toBe(true)
      expect(yield* server.ask(new Status())).toMatchObject({ servers: [{ id: "s1", active: 1 }] })
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layerMemory))
  )
})

describe("A server linked to a balancer, over loopback", () => {
  const linkedServer = (folder: string, balancer: { host: string; port: number }, weight = 1, host = "127.0.0.1") =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        BalancerLink.layer({ balancer, weight: Weight.make(weight) }).pipe(
          Layer.provideMerge(FileServer.layer({ ...FileServer.defaults, host, port: 0 })),
          Layer.provide(FileStore.layer(folder)),
          Layer.provide(NodeContext.layer)
        )
      )
      return yield* Effect.provide(Effect.all([FileServer.FileServer, BalancerLink.BalancerLink]), context)
    })

  it.scopedLive("registers by itself and reports its load, which steers least-connection", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const { address } = yield* ControlPlane.ControlPlane
      const folder = yield* servedFolder(1024)
      const [busy] = yield* linkedServer(folder.root, address)
      const [idle] = yield* linkedServer(folder.root, address)
      yield* eventually(registry.list, (servers) => servers.length === 2)
      const user = yield* connectTo(busy.address)
      yield* Effect.fork(user.ask(new Compute({ seconds: 5 })))
      yield* busy.active.changes.pipe(
        Stream.takeUntil((n) => n === 1),
        Stream.runDrain
      )
      yield* eventually(registry.get(busy.id), (server) => Option.isSome(server) && server.value.active === 1)
      const client = yield* operator
      expect(yield* client.ask(new Locate({}))).toMatchObject({ server: { id: idle.id } })
      yield* user.connection.destroy
    }).pipe(Effect.provide(plane({ strategy: "weighted-least-connection" })), Effect.provide(Wire.layer))
  )

  it.scopedLive("a server listening on every interface advertises the address it reaches the balancer from", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const { address } = yield* ControlPlane.ControlPlane
      const folder = yield* servedFolder(1024)
      // Listening on "::" (every interface), reaching the balancer over ::1: clients are sent to
      // ::1 — the interface the balancer can reach — not a made-up 127.0.0.1.
      const [server] = yield* linkedServer(folder.root, { host: "::1", port: address.port }, 1, "::")
      const registered = yield* eventually(registry.get(server.id), Option.isSome)
      expect(Option.map(registered, (s) => s.host)).toEqual(Option.some("::1"))
      const located = yield* (yield* operator).ask(new Locate({}))
      expect(located).toMatchObject({ server: { host: "::1", port: server.address.port } })
    }).pipe(
      Effect.provide(
        ControlPlane.layer({ ...ControlPlane.defaults, host: "::", port: 0 }).pipe(Layer.provideMerge(balancerLayer()))
      ),
      Effect.provide(Wire.layer)
    )
  )

  it.scopedLive("leaves the rotation at once when it shuts down", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const { address } = yield* ControlPlane.ControlPlane
      const folder = yield* servedFolder(1024)
      const serverScope = yield* Scope.make()
      yield* linkedServer(folder.root, address).pipe(Scope.extend(serverScope))
      yield* eventually(registry.list, (servers) => servers.length === 1)
      const started = Date.now()
      yield* Scope.close(serverScope, Exit.void)
      yield* eventually(registry.list, (servers) => servers.length === 0)
      expect(Date.now() - started).toBeLessThan(2000)
    }).pipe(Effect.provide(plane()), Effect.provide(Wire.layer))
  )

  it.scopedLive("registers again by itself when the balancer restarts", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const firstScope = yield* Scope.make()
      const first = yield* Layer.buildWithScope(plane(), firstScope)
      const { address } = Context.get(first, ControlPlane.ControlPlane)
      const [server] = yield* linkedServer(folder.root, address)
      yield* eventually(
        Effect.provide(ServerRegistry, first).pipe(Effect.flatMap((r) => r.list)),
        (s) => s.length === 1
      )
      yield* Scope.close(firstScope, Exit.void)
      // A new balancer on the same port knows nobody, until the server comes back by itself.
      const second = yield* Layer.build(
        ControlPlane.layer({ ...ControlPlane.defaults, port: address.port }).pipe(Layer.provideMerge(balancerLayer()))
      )
      const servers = yield* eventually(
        Effect.provide(ServerRegistry, second).pipe(Effect.flatMap((r) => r.list)),
        (s) => s.length === 1
      )
      expect(servers.map((s) => s.id)).toEqual([server.id])
    }).pipe(Effect.provide(Wire.layer))
  )
})
