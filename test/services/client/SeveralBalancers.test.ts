/**
 * A client given several balancers: it keeps to the one that answers, passes over one that cannot be
 * reached at once and without spending a server attempt, and backs off only after a whole round of
 * them failed. Over the in-memory wire, on the TestClock, with balancers that answer as told.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Option, Random, Schema, Scope, TestClock } from "effect"
import { NoServerAvailable } from "../../../src/domain/Errors.js"
import {
  BalancerReply,
  BalancerRequest,
  Computed,
  Located,
  ServerReply,
  ServerRequest
} from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId } from "../../../src/domain/Server.js"
import { statusOfFirst } from "../../../src/services/client/BalancerClient.js"
import * as Client from "../../../src/services/client/Client.js"
import * as Wire from "../../../src/services/wire/Wire.js"

const address = (port: number) => ({ host: "127.0.0.1", port })
const serverPort = 5000

type Answer = "locate" | "no server" | "hang up"

/** A balancer on `port` that answers every request as told, counting them; closing `scope` kills it. */
const fakeBalancer = (port: number, answer: Answer, scope?: Scope.Scope) =>
  Effect.gen(function* () {
    const wire = yield* Wire.Wire
    const asked = { count: 0 }
    const serving = wire.serve(address(port), (connection) =>
      Effect.gen(function* () {
        const request = yield* connection.read(BalancerRequest)
        if (Option.isNone(request)) return
        asked.count += 1
        if (answer === "hang up") return yield* connection.destroy
        const server = { id: ServerId.make("s1"), host: Host.make("127.0.0.1"), port: Port.make(serverPort) }
        yield* connection.send(
          BalancerReply,
          answer === "locate"
            ? new Located({ server })
            : new NoServerAvailable({ message: "no live server is available" })
        )
      }).pipe(Effect.ignore)
    )
    yield* scope === undefined ? serving : Scope.extend(serving, scope)
    return asked
  })

/** The one server every fake balancer hands out: it computes at once. */
const server = Effect.gen(function* () {
  const wire = yield* Wire.Wire
  yield* wire.serve(address(serverPort), (connection) =>
    Effect.gen(function* () {
      const request = yield* connection.read(ServerRequest)
      if (Option.isSome(request) && request.value._tag === "Compute") {
        yield* connection.send(ServerReply, new Computed({ seconds: request.value.seconds }))
      }
    }).pipe(Effect.ignore)
  )
})

/** A client of `ports`, starting at the balancer at `start` in the list. */
const client = (ports: ReadonlyArray<number>, start: number) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(
      Layer.effect(
        Client.Client,
        Client.make({ ...Client.defaults, balancer: ports.map(address) }).pipe(Effect.withRandom(Random.fixed([start])))
      ).pipe(Layer.provide(NodeContext.layer))
    )
    return Effect.runSync(Effect.provide(Client.Client, context))
  })

describe("a client given several balancers", () => {
  it.scoped("passes over a dead balancer at once, without spending a server attempt", () =>
    Effect.gen(function* () {
      yield* server
      const live = yield* fakeBalancer(4010, "locate")
      // 4000 has nothing listening; the client starts there.
      const served = yield* (yield* client([4000, 4010], 0)).compute(1)
      expect(served.attempts).toBe(1)
      expect(served.value).toBe(1)
      expect(live.count).toBe(1)
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("keeps to the balancer that answered, and moves on only when it goes", () =>
    Effect.gen(function* () {
      yield* server
      const firstScope = yield* Scope.make()
      const first = yield* fakeBalancer(4000, "locate", firstScope)
      const second = yield* fakeBalancer(4010, "locate")
      const asking = yield* client([4000, 4010], 0)
      for (let i = 0; i < 5; i++) expect((yield* asking.compute(0)).attempts).toBe(1)
      expect([first.count, second.count]).toEqual([5, 0])
      yield* Scope.close(firstScope, Exit.void)
      for (let i = 0; i < 5; i++) expect((yield* asking.compute(0)).attempts).toBe(1)
      expect([first.count, second.count]).toEqual([5, 5])
      // Back again, the first one is not asked: the client keeps to the one that answers.
      const revived = yield* fakeBalancer(4000, "locate")
      for (let i = 0; i < 3; i++) expect((yield* asking.compute(0)).attempts).toBe(1)
      expect([revived.count, second.count]).toEqual([0, 8])
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("passes over one that hangs up or has no server for it; the one that located is kept", () =>
    Effect.gen(function* () {
      yield* server
      const hangsUp = yield* fakeBalancer(4000, "hang up")
      const empty = yield* fakeBalancer(4010, "no server")
      const good = yield* fakeBalancer(4020, "locate")
      const asking = yield* client([4000, 4010, 4020], 0)
      expect((yield* asking.compute(0)).attempts).toBe(1)
      expect((yield* asking.compute(0)).attempts).toBe(1)
      expect([hangsUp.count, empty.count, good.count]).toEqual([1, 1, 2])
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("backs off only after a whole round failed, and then names every balancer in one line", () =>
    Effect.gen(function* () {
      const first = yield* fakeBalancer(4000, "hang up")
      const second = yield* fakeBalancer(4010, "hang up")
      const asking = yield* client([4000, 4010], 1)
      const request = yield* Effect.fork(asking.compute(0))
      yield* TestClock.adjust("1 millis")
      // One round: each balancer asked once, and nothing more until the backoff (100 ms ±20%) passes.
      expect([first.count, second.count]).toEqual([1, 1])
      yield* TestClock.adjust("70 millis")
      expect([first.count, second.count]).toEqual([1, 1])
      yield* TestClock.adjust("60 millis")
      expect([first.count, second.count]).toEqual([2, 2])
      yield* TestClock.adjust("30 seconds")
      const exit = yield* Fiber.await(request)
      // Six attempts, each a round of both.
      expect([first.count, second.count]).toEqual([6, 6])
      expect(exit).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "NoBalancerAnswered", silent: true })))
      if (Exit.isFailure(exit)) {
        expect(String(exit.cause)).toContain(
          "no balancer answered: 127.0.0.1:4010 (the connection closed: ECONNRESET), 127.0.0.1:4000 (the connection closed: ECONNRESET)"
        )
      }
    }).pipe(Effect.provide(Wire.layerMemory))
  )

  it.scoped("does not ask again when every balancer answered as no balancer does", () =>
    Effect.gen(function* () {
      const wire = yield* Wire.Wire
      // Ports that answer every line with nonsense.
      for (const port of [4000, 4010]) {
        yield* wire.serve(address(port), (connection) =>
          Effect.zipRight(connection.readLine, connection.send(Schema.String, "HTTP/1.1 400 Bad Request")).pipe(
            Effect.ignore
          )
        )
      }
      const exit = yield* Effect.exit((yield* client([4000, 4010], 0)).compute(0))
      expect(exit).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "NoBalancerAnswered", silent: false })))
    }).pipe(Effect.provide(Wire.layerMemory))
  )
})

describe("status and strategy given several balancers", () => {
  it.scoped("ask the first that answers, in order, and name every one when none does", () =>
    Effect.gen(function* () {
      const none = yield* Effect.exit(statusOfFirst([address(4000), address(4010)]))
      expect(none).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "NoBalancerAnswered" })))
      if (Exit.isFailure(none)) {
        expect(String(none.cause)).toContain(
          "no balancer answered: 127.0.0.1:4000 (connection refused (ECONNREFUSED)), 127.0.0.1:4010 (connection refused (ECONNREFUSED))"
        )
      }
      yield* fakeBalancer(4010, "locate")
      expect((yield* statusOfFirst([address(4000), address(4010)])).balancer).toBe("127.0.0.1:4010")
      // One balancer: its own error, as always.
      const one = yield* Effect.exit(statusOfFirst([address(4000)]))
      expect(one).toStrictEqual(Exit.fail(expect.objectContaining({ _tag: "ConnectFailed" })))
    }).pipe(Effect.provide(Wire.layerMemory))
  )
})
