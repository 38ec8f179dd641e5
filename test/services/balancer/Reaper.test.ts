import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Ref, TestClock } from "effect"
import { BalancerReply, BalancerRequest, Register } from "../../../src/domain/Protocol.js"
import { ServerId, type ServerSpec } from "../../../src/domain/Server.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import * as HealthMonitor from "../../../src/services/balancer/HealthMonitor.js"
import { Operator } from "../../../src/services/balancer/Operator.js"
import * as Reaper from "../../../src/services/balancer/Reaper.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { type Behaviour, balancerLayer, fakeServer, spec } from "../../support/balancer.js"

/**
 * A balancer on the in-memory wire: its port, health monitor and reaper (dead after 5 s, removed
 * 60 s later). Probes every 5 s rather than every second: the same verdicts in fewer clock steps.
 */
const monitor = HealthMonitor.layer({ ...HealthMonitor.defaults, probeInterval: "5 seconds" })
const balancer = ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(
  Layer.provideMerge(Layer.mergeAll(monitor, Reaper.layer())),
  Layer.provideMerge(balancerLayer()),
  Layer.provideMerge(Wire.layerMemory)
)

/** Registers `server` over a new control connection, held open; returns that connection. */
const registerOver = (server: ServerSpec) =>
  Effect.gen(function* () {
    const { address } = yield* ControlPlane.ControlPlane
    const connection = yield* (yield* Wire.Wire).connect(address)
    yield* connection.send(BalancerRequest, new Register({ server }))
    expect(Option.map(yield* connection.read(BalancerReply), (reply) => reply._tag)).toEqual(Option.some("Registered"))
    return connection
  })

const stateOf = (id: string) =>
  Effect.flatMap(ServerRegistry, (registry) => registry.get(ServerId.make(id))).pipe(
    Effect.map(Option.match({ onNone: () => "removed", onSome: (server) => server.state }))
  )

describe("removing servers that registered and went away", () => {
  it.scoped("a registered server dead for 60 s is removed; a configured one, and a live one, stay", () =>
    Effect.gen(function* () {
      // s1 registers and hangs up; s2 registers and keeps its control connection open; neither answers.
      const first = yield* registerOver(spec(1))
      yield* first.destroy
      yield* registerOver(spec(2))
      // s3 is configured by an operator and never answers; s4 registered and answers its probes.
      yield* (yield* Operator).add(spec(3))
      yield* fakeServer(spec(4), yield* Ref.make<Behaviour>("healthy"))
      const fourth = yield* registerOver(spec(4))
      yield* fourth.destroy
      yield* TestClock.adjust("5 seconds")
      expect(yield* Effect.all(["s1", "s2", "s3", "s4"].map(stateOf))).toEqual(["dead", "dead", "dead", "live"])
      // Dead since they registered (no probe ever answered): still listed at 59.9 s, gone by 60 s plus one sweep.
      yield* TestClock.adjust("54900 millis")
      expect(yield* Effect.all(["s1", "s2", "s3"].map(stateOf))).toEqual(["dead", "dead", "dead"])
      yield* TestClock.adjust(Reaper.sweepInterval(Reaper.defaults.removeDeadAfter))
      expect(yield* Effect.all(["s1", "s2", "s3", "s4"].map(stateOf))).toEqual(["removed", "removed", "dead", "live"])
    }).pipe(Effect.provide(balancer))
  )

  it.scoped("a server that answers again within the grace period stays, and its dead time starts over", () =>
    Effect.gen(function* () {
      const behaviour = yield* Ref.make<Behaviour>("stalled")
      yield* fakeServer(spec(1), behaviour)
      yield* registerOver(spec(1))
      // Dead from the start (it never answered), so due for removal at 60 s.
      yield* TestClock.adjust("40 seconds")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* Ref.set(behaviour, "healthy")
      yield* TestClock.adjust("12 seconds")
      expect(yield* stateOf("s1")).toBe("live")
      yield* Ref.set(behaviour, "stalled")
      // Dead again from about 62 s: still listed at 90 s, where the first death (0 s) had long expired.
      yield* TestClock.adjust("38 seconds")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* TestClock.adjust("50 seconds")
      expect(yield* stateOf("s1")).toBe("removed")
    }).pipe(Effect.provide(balancer))
  )
})
