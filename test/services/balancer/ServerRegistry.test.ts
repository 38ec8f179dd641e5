import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option } from "effect"
import { BalancerReply, BalancerRequest, Locate, Register } from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as Admin from "../../../src/services/balancer/admin/Admin.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as BalancerLink from "../../../src/services/server/BalancerLink.js"
import * as FileServer from "../../../src/services/server/FileServer.js"
import * as FileStore from "../../../src/services/server/FileStore.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer, spec } from "../../support/balancer.js"
import { eventually } from "../../support/eventually.js"
import { servedFolder } from "../../support/fixtures.js"

/** A registry (with balancer and operator) that holds at most `maxServers`. */
const limited = (maxServers: number) => balancerLayer("round-robin", {}, { maxServers })

describe("the registry's limit (--max-servers)", () => {
  it.effect(
    "refuses a new server past the limit with Busy; a replacement still fits, and a removal frees a place",
    () =>
      Effect.gen(function* () {
        const registry = yield* ServerRegistry
        yield* registry.add(spec(1))
        yield* registry.add(spec(2))
        const refused = yield* Effect.exit(registry.add(spec(3)))
        expect(refused).toMatchObject(Exit.fail({ _tag: "Busy" }))
        expect(Exit.isFailure(refused) && JSON.stringify(refused.cause)).toContain("--max-servers 2")
        // The same id at a new address, and a new id at a known address, replace: the count stays.
        yield* registry.add({ ...spec(1), port: Port.make(42999), weight: Weight.make(2) })
        yield* registry.add({ ...spec(2), id: ServerId.make("s2-again") })
        expect((yield* registry.list).map((server) => server.id).sort()).toEqual(["s1", "s2-again"])
        yield* registry.remove(ServerId.make("s2-again"))
        expect((yield* registry.add(spec(3))).id).toBe("s3")
      }).pipe(Effect.provide(limited(2)))
  )

  it.scoped("over the balancer port, a Register past the limit is answered Busy and the connection goes on", () =>
    Effect.gen(function* () {
      const { address } = yield* ControlPlane.ControlPlane
      const connection = yield* (yield* Wire.Wire).connect(address)
      const ask = (request: BalancerRequest) =>
        Effect.zipRight(connection.send(BalancerRequest, request), connection.read(BalancerReply))
      expect(yield* ask(new Register({ server: spec(1) }))).toMatchObject(Option.some({ _tag: "Registered" }))
      const refused = yield* ask(new Register({ server: spec(2) }))
      expect(refused).toMatchObject(Option.some({ _tag: "Busy" }))
      expect(Option.map(refused, (reply) => ("message" in reply ? reply.message : ""))).toEqual(
        Option.some("the balancer is full (--max-servers 1): no more servers can join")
      )
      expect(yield* ask(new Locate({}))).toMatchObject(Option.some({ _tag: "Located", server: { id: "s1" } }))
      expect((yield* (yield* ServerRegistry).list).map((server) => server.id)).toEqual(["s1"])
    }).pipe(
      Effect.provide(ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(Layer.provideMerge(limited(1)))),
      Effect.provide(Wire.layerMemory)
    )
  )

  it.scopedLive("the admin API answers 503 Busy past the limit, in its JSON error shape", () =>
    Effect.gen(function* () {
      const { address } = yield* Admin.Admin
      const post = (port: number) =>
        Effect.promise(async () => {
          const response = await fetch(`http://127.0.0.1:${address.port}/api/servers`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ host: "127.0.0.1", port })
          })
          return { status: response.status, json: (await response.json()) as unknown }
        })
      expect((yield* post(42101)).status).toBe(201)
      const refused = yield* post(42102)
      expect(refused).toEqual({
        status: 503,
        json: { _tag: "Busy", message: "the balancer is full (--max-servers 1): no more servers can join" }
      })
    }).pipe(Effect.provide(Admin.layer({ host: "127.0.0.1", port: 0 }).pipe(Layer.provideMerge(limited(1)))))
  )

  it.scopedLive("a server answered Busy keeps asking, and registers once there is room", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const { address } = yield* ControlPlane.ControlPlane
      const taken = { ...spec(1), host: Host.make("127.0.0.1") }
      yield* registry.add(taken, "configured")
      const folder = yield* servedFolder(16)
      const linked = yield* Layer.build(
        BalancerLink.layer({ balancer: address, weight: Weight.make(1) }).pipe(
          Layer.provideMerge(FileServer.layer({ ...FileServer.defaults, port: 0 })),
          Layer.provide(FileStore.layer(folder.root)),
          Layer.provide(NodeContext.layer)
        )
      )
      const link = yield* Effect.provide(BalancerLink.BalancerLink, linked)
      // Refused for as long as the place is taken (it has been asking, backing off, for a while).
      yield* Effect.sleep("700 millis")
      expect(yield* link.registered).toBe(false)
      yield* registry.remove(taken.id)
      yield* eventually(link.registered, (registered) => registered, "6 seconds")
      expect((yield* registry.list).length).toBe(1)
    }).pipe(
      Effect.provide(ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(Layer.provideMerge(limited(1)))),
      Effect.provide(Wire.layer)
    )
  )
})

describe("a drain taken back (a reload listing the server again, or it registering again)", () => {
  const watcher = { added: () => {}, removed: () => {} }
  const check = (ok: boolean) => ({ at: 0, ok, result: ok ? "ping 1.0 ms ok" : "refused" })

  it.scoped("is live at once when its probes still answer, keeping its figures; dead until one does when not", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* registry.add(spec(1), "file")
      yield* registry.add(spec(2), "file")
      yield* registry.watch(watcher)
      for (const n of [1, 2]) {
        yield* registry.recordProbe(spec(n).id, 5, 3)
        yield* registry.recordCheck(spec(n).id, check(true))
        yield* registry.setState(spec(n).id, "live")
        yield* registry.setState(spec(n).id, "draining")
      }
      // Probes go on while it drains: s2's last one failed.
      yield* registry.recordCheck(spec(2).id, check(false))
      yield* registry.add(spec(1), "file")
      yield* registry.add(spec(2), "file")
      const s1 = Option.getOrThrow(yield* registry.get(spec(1).id))
      expect([s1.state, s1.active, s1.responseTimeMs]).toEqual(["live", 3, 5])
      expect(registry.unsafeLive().map((candidate) => candidate.id)).toEqual(["s1"])
      expect(Option.getOrThrow(yield* registry.get(spec(2).id)).state).toBe("dead")
    }).pipe(Effect.provide(balancerLayer()))
  )
})
