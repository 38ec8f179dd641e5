import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, Option, TestClock } from "effect"
import { ConnectionTable, type Entry, type SweepActions } from "../../../src/services/balancer/ConnectionTable.js"

/** A connection without sockets: a name and a byte counter the test moves by hand. */
interface Row extends Entry {
  readonly name: string
  bytes: number
}

const row = (name: string): Row => ({ name, bytes: 0, open: false, since: 0, seen: 0, place: undefined })

const table = (limit = 10) =>
  new ConnectionTable<Row>({ limit, connectTimeout: "3 seconds", idleTimeout: "10 seconds" })

/** Sweep actions that write down what they were told, by name; an idle entry is closed (it leaves). */
const recorder = (connections: ConnectionTable<Row>) => {
  const timedOut: Array<string> = []
  const idle: Array<string> = []
  const actions: SweepActions<Row> = {
    activity: (entry) => entry.bytes,
    timedOut: (entry) => {
      timedOut.push(entry.name)
    },
    idle: (entry) => {
      idle.push(entry.name)
      connections.leave(entry)
    }
  }
  return { timedOut, idle, actions }
}

/** Admits `name` (the table has room in these tests). */
const admitted = (connections: ConnectionTable<Row>, name: string) => {
  const entry = connections.admit(name, row)
  if (entry === undefined) throw new Error(`${name} was not admitted`)
  return entry
}

describe("ConnectionTable", () => {
  it("refuses an entry past the limit, and admits again once one has left", () => {
    const connections = table(2)
    const a = admitted(connections, "a")
    admitted(connections, "b")
    let built = 0
    const counted = (name: string) => {
      built += 1
      return row(name)
    }
    expect(connections.admit("c", counted)).toBeUndefined()
    // Turned away before anything was built for it.
    expect(built).toBe(0)
    expect(connections.size).toBe(2)
    connections.leave(a)
    expect(connections.admit("c", counted)?.name).toBe("c")
    expect([...connections].map((entry) => entry.name)).toEqual(["b", "c"])
  })

  it("times out an entry not open by the connect deadline, and only then", () => {
    const connections = table()
    const { actions, timedOut } = recorder(connections)
    const slow = admitted(connections, "slow")
    slow.since = 1_000
    const opened = admitted(connections, "opened")
    opened.since = 1_000
    opened.open = true
    connections.sweep(3_999, actions)
    expect(timedOut).toEqual([])
    connections.sweep(4_000, actions)
    expect(timedOut).toEqual(["slow"])
  })

  it("finds an open entry idle once its activity has not moved for the idle timeout", () => {
    const connections = table()
    const { actions, idle } = recorder(connections)
    const busy = admitted(connections, "busy")
    const quiet = admitted(connections, "quiet")
    for (const entry of [busy, quiet]) {
      entry.open = true
      entry.since = 0
    }
    busy.bytes = 10
    quiet.bytes = 10
    // The first sweep sees both move: their idle time counts from here.
    connections.sweep(1_000, actions)
    busy.bytes = 20
    connections.sweep(10_999, actions)
    expect(idle).toEqual([])
    connections.sweep(11_000, actions)
    expect(idle).toEqual(["quiet"])
    // The busy one moved at 10 999 (as of a sweep): idle only 10 seconds after that.
    connections.sweep(20_998, actions)
    expect(idle).toEqual(["quiet"])
    connections.sweep(20_999, actions)
    expect(idle).toEqual(["quiet", "busy"])
    expect(connections.size).toBe(0)
  })

  it.effect("sweeps on the Clock once started: an entry times out at the first sweep past its deadline", () =>
    Effect.gen(function* () {
      const connections = table()
      const { actions, timedOut } = recorder(connections)
      admitted(connections, "slow")
      yield* connections.sweeping(actions)
      // The sweep runs at once, then every quarter of the shorter timeout (750 ms here): 3 seconds is a sweep.
      yield* TestClock.adjust("2999 millis")
      expect(timedOut).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(timedOut).toEqual(["slow"])
    }).pipe(Effect.scoped)
  )

  it.effect("is drained at once when empty, else when its last entry leaves", () =>
    Effect.gen(function* () {
      const connections = table()
      yield* connections.drained
      const a = admitted(connections, "a")
      const b = admitted(connections, "b")
      const drain = yield* Effect.fork(connections.drained)
      connections.leave(a)
      yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(drain))).toBe(true)
      connections.leave(b)
      yield* Fiber.join(drain)
      expect(connections.size).toBe(0)
    })
  )

  it.effect("can be drained again after a wait was cut short", () =>
    Effect.gen(function* () {
      const connections = table()
      const a = admitted(connections, "a")
      const cut = yield* connections.drained.pipe(Effect.timeout("1 second"), Effect.either, Effect.fork)
      yield* TestClock.adjust("1 second")
      expect(Either.isLeft(yield* Fiber.join(cut))).toBe(true)
      const drain = yield* Effect.fork(connections.drained)
      connections.leave(a)
      yield* Fiber.join(drain)
    })
  )
})
