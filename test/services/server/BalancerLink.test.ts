/**
 * A server that cannot register says so: a warning after its first few failures, then only on a new
 * reason or every 30 s, while it keeps trying; an info line once it registers. On the TestClock,
 * over the in-memory wire.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Logger, LogLevel, Option, Scope, TestClock } from "effect"
import { BalancerReply, BalancerRequest, Registered } from "../../../src/domain/Protocol.js"
import { ServerId, Weight } from "../../../src/domain/Server.js"
import * as BalancerLink from "../../../src/services/server/BalancerLink.js"
import * as FileServer from "../../../src/services/server/FileServer.js"
import * as FileStore from "../../../src/services/server/FileStore.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { servedFolder } from "../../support/fixtures.js"

const balancer = { host: "127.0.0.1", port: 4999 }

describe("RegistrationTrouble", () => {
  it("warns at the third failure in a row, then on a new reason or after 30 s, and starts over on success", () => {
    const trouble = new BalancerLink.RegistrationTrouble()
    expect(trouble.failed("refused", 0)).toBeUndefined()
    expect(trouble.failed("refused", 100)).toBeUndefined()
    expect(trouble.failed("refused", 300)).toBe("refused (3 failed attempts); trying again")
    expect(trouble.failed("refused", 5_000)).toBeUndefined()
    expect(trouble.failed("refused", 30_299)).toBeUndefined()
    expect(trouble.failed("refused", 30_300)).toBe("refused (6 failed attempts); trying again")
    expect(trouble.failed("not a balancer", 31_000)).toBe("not a balancer (7 failed attempts); trying again")
    expect(trouble.succeeded()).toBe(7)
    expect(trouble.failed("refused", 40_000)).toBeUndefined()
  })
})

describe("a server that cannot register", () => {
  it.scoped("keeps trying with back-off, warns now and then, and says when it registered", () =>
    Effect.gen(function* () {
      const logs: Array<{ readonly level: string; readonly text: string }> = []
      const logger = Logger.make(({ logLevel, message }) => {
        logs.push({ level: logLevel.label, text: (Array.isArray(message) ? message : [message]).join(" ") })
      })
      const folder = yield* servedFolder(16)
      yield* Layer.build(
        BalancerLink.layer({ balancer, weight: Weight.make(1) }).pipe(
          Layer.provideMerge(FileServer.layer({ ...FileServer.defaults, id: ServerId.make("s1"), port: 0 })),
          Layer.provide(FileStore.layer(folder.root)),
          Layer.provide(NodeContext.layer),
          Layer.provide(Logger.replace(Logger.defaultLogger, logger))
        )
      )
      const warnings = () => logs.filter((log) => log.level === "WARN").map((log) => log.text)
      const advance = (seconds: number) =>
        Effect.forEach(Array.from({ length: seconds * 5 }), () => TestClock.adjust("200 millis"), { discard: true })

      yield* advance(1)
      expect(warnings()).toEqual([
        "cannot register: cannot connect to 127.0.0.1:4999: ECONNREFUSED (3 failed attempts); trying again"
      ])
      // The same reason: not again before 30 s, though it keeps trying (every 5 s at most).
      yield* advance(25)
      expect(warnings()).toHaveLength(1)
      yield* advance(10)
      expect(warnings()).toHaveLength(2)
      expect(warnings()[1]).toMatch(
        /^cannot register: cannot connect to 127\.0\.0\.1:4999: ECONNREFUSED \(\d+ failed attempts\)/
      )

      // Something that is not a balancer takes the port (it hangs up on Register): a new reason, warned at once.
      const wire = yield* Wire.Wire
      const garbage = yield* Scope.make()
      yield* wire.serve(balancer, (connection) => Effect.ignore(connection.readLine)).pipe(Scope.extend(garbage))
      yield* advance(6)
      expect(warnings()[2]).toMatch(
        /^cannot register: 127\.0\.0\.1:4999 did not answer as an effect-lb balancer \(it closed the connection without answering\) \(\d+ failed attempts\); trying again$/
      )
      expect(warnings()).toHaveLength(3)
      yield* Scope.close(garbage, Exit.void)

      // A balancer at last: registered, and the info line says after how much trouble.
      yield* wire.serve(balancer, (connection) =>
        Effect.gen(function* () {
          const request = yield* connection.read(BalancerRequest)
          if (Option.isSome(request) && request.value._tag === "Register") {
            yield* connection.send(BalancerReply, new Registered({ id: request.value.server.id }))
          }
          yield* connection.closed
        }).pipe(Effect.ignore)
      )
      yield* advance(6)
      const info = logs.filter((log) => log.level === "INFO").map((log) => log.text)
      expect(info).toContainEqual(
        expect.stringMatching(/^registered as s1 with the balancer at 127\.0\.0\.1:4999 after \d+ failed attempts$/)
      )
      expect(warnings()).toHaveLength(3)
    }).pipe(Effect.provide(Wire.layerMemory), Logger.withMinimumLogLevel(LogLevel.Debug))
  )
})

describe("a server given several balancers", () => {
  it.scoped("registers with the first that takes it, and with the next when that link is lost", () =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel.label === "INFO") logs.push((Array.isArray(message) ? message : [message]).join(" "))
      })
      const wire = yield* Wire.Wire
      const taking = (port: number, scope: Scope.Scope) =>
        wire
          .serve({ host: "127.0.0.1", port }, (connection) =>
            Effect.gen(function* () {
              const request = yield* connection.read(BalancerRequest)
              if (Option.isSome(request) && request.value._tag === "Register") {
                yield* connection.send(BalancerReply, new Registered({ id: request.value.server.id }))
              }
              yield* connection.closed
            }).pipe(Effect.ignore)
          )
          .pipe(Scope.extend(scope))
      const second = yield* Scope.make()
      yield* taking(4992, second)
      const folder = yield* servedFolder(16)
      const balancers = [4991, 4992, 4993].map((port) => ({ host: "127.0.0.1", port }))
      yield* Layer.build(
        BalancerLink.layer({ balancer: balancers, weight: Weight.make(1) }).pipe(
          Layer.provideMerge(FileServer.layer({ ...FileServer.defaults, id: ServerId.make("s1"), port: 0 })),
          Layer.provide(FileStore.layer(folder.root)),
          Layer.provide(NodeContext.layer),
          Layer.provide(Logger.replace(Logger.defaultLogger, logger))
        )
      )
      // Closed before the link deregisters, should the test fail while the server is registered there.
      yield* Effect.addFinalizer(() => Scope.close(second, Exit.void))
      // The first has nothing listening: the second is asked at once, before any backoff.
      yield* TestClock.adjust("1 millis")
      expect(logs.filter((line) => line.startsWith("registered"))).toEqual([
        "registered as s1 with the balancer at 127.0.0.1:4992 after 1 failed attempts"
      ])
      // The second goes; the third takes it (the next in the list, not the first again).
      yield* taking(4991, yield* Effect.scope)
      yield* taking(4993, yield* Effect.scope)
      yield* Scope.close(second, Exit.void)
      yield* TestClock.adjust("1 second")
      expect(logs.filter((line) => line.startsWith("registered"))).toEqual([
        "registered as s1 with the balancer at 127.0.0.1:4992 after 1 failed attempts",
        "registered as s1 with the balancer at 127.0.0.1:4993"
      ])
    }).pipe(Effect.provide(Wire.layerMemory))
  )
})
