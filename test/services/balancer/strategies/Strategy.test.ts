import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck } from "effect"
import { ServerId } from "../../../../src/domain/Server.js"
import { catalog, names, Strategies } from "../../../../src/services/balancer/strategies/Catalog.js"
import { ConsistentHash } from "../../../../src/services/balancer/strategies/ConsistentHash.js"
import { RoundRobin } from "../../../../src/services/balancer/strategies/RoundRobin.js"
import {
  type Candidate,
  type Picker,
  Strategy,
  type StrategyModule
} from "../../../../src/services/balancer/strategies/Strategy.js"
import { WeightedLeastConnection } from "../../../../src/services/balancer/strategies/WeightedLeastConnection.js"
import {
  expectedCost,
  responseTime,
  WeightedResponseTime
} from "../../../../src/services/balancer/strategies/WeightedResponseTime.js"
import { WeightedRoundRobin } from "../../../../src/services/balancer/strategies/WeightedRoundRobin.js"

/** A strategy from its own layer, as the balancer gets it. */
const load = (module: StrategyModule) => Effect.runSync(Effect.provide(Strategy, module.layer))
const roundRobin = load(RoundRobin)
const weightedRoundRobin = load(WeightedRoundRobin)
const weightedResponseTime = load(WeightedResponseTime)
const weightedLeastConnection = load(WeightedLeastConnection)
const consistentHash = load(ConsistentHash)

const id = (i: number) => ServerId.make(`s${i}`)
const none: ReadonlySet<ServerId> = new Set()

const candidate = (i: number, fields: Partial<Candidate> = {}): Candidate => ({
  id: id(i),
  weight: 1,
  active: 0,
  responseTimeMs: null,
  latencyMs: null,
  ...fields
})

const withServers = (strategy: Picker, candidates: ReadonlyArray<Candidate>) => {
  for (const c of candidates) strategy.upsert(c)
  return strategy
}

const picks = (strategy: Picker, count: number, skip = none) => Array.from({ length: count }, () => strategy.pick(skip))

const longestRun = (sequence: ReadonlyArray<ServerId | undefined>, target: ServerId) => {
  let longest = 0
  let run = 0
  for (const picked of sequence) {
    run = picked === target ? run + 1 : 0
    longest = Math.max(longest, run)
  }
  return longest
}

const weights = FastCheck.array(FastCheck.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 10 })

describe("round-robin", () => {
  it.prop(
    "gives each server in turn, in a fixed cycle",
    [FastCheck.integer({ min: 1, max: 40 }), FastCheck.integer({ min: 1, max: 5 })],
    ([n, cycles]) => {
      const strategy = withServers(
        roundRobin.makePicker(),
        Array.from({ length: n }, (_, i) => candidate(i))
      )
      const sequence = picks(strategy, n * cycles)
      const first = sequence.slice(0, n)
      expect(new Set(first).size).toBe(n)
      sequence.forEach((picked, at) => expect(picked).toBe(first[at % n]))
    }
  )
})

describe("weighted-round-robin", () => {
  it.prop("gives each server exactly its weight in every cycle, with short runs", [weights], ([ws]) => {
    const strategy = withServers(
      weightedRoundRobin.makePicker(),
      ws.map((weight, i) => candidate(i, { weight }))
    )
    const total = ws.reduce((a, b) => a + b, 0)
    const sequence = picks(strategy, total * 3)
    for (let cycle = 0; cycle < 3; cycle++) {
      const slice = sequence.slice(cycle * total, (cycle + 1) * total)
      ws.forEach((weight, i) => expect(slice.filter((picked) => picked === id(i)).length).toBe(weight))
    }
    if (ws.length > 1) {
      ws.forEach((weight, i) => {
        const heaviestOther = Math.max(...ws.filter((_, j) => j !== i))
        expect(longestRun(sequence, id(i))).toBeLessThanOrEqual(1 + Math.ceil(weight / heaviestOther))
      })
    }
  })

  it("interleaves weights 1:2:3 smoothly: 1, 2 and 3 picks per 6, never three in a row", () => {
    const strategy = withServers(
      weightedRoundRobin.makePicker(),
      [1, 2, 3].map((weight, i) => candidate(i, { weight }))
    )
    const sequence = picks(strategy, 60)
    for (let cycle = 0; cycle < 10; cycle++) {
      const slice = sequence.slice(cycle * 6, cycle * 6 + 6)
      expect([0, 1, 2].map((i) => slice.filter((picked) => picked === id(i)).length)).toEqual([1, 2, 3])
    }
    for (const i of [0, 1, 2]) expect(longestRun(sequence, id(i))).toBeLessThan(3)
  })

  it("does not burst a server that clients skipped for a while", () => {
    const strategy = withServers(weightedRoundRobin.makePicker(), [candidate(0), candidate(1)])
    picks(strategy, 100, new Set([id(0)]))
    expect(longestRun(picks(strategy, 20), id(0))).toBeLessThanOrEqual(2)
  })
})

describe("weighted-least-connection", () => {
  it.prop(
    "never picks a server with a higher load per weight than another eligible one",
    [
      FastCheck.array(FastCheck.record({ weight: FastCheck.integer({ min: 1, max: 10 }), active: FastCheck.nat(50) }), {
        minLength: 1,
        maxLength: 30
      }),
      FastCheck.array(FastCheck.tuple(FastCheck.nat(29), FastCheck.nat(50)), { maxLength: 60 })
    ],
    ([servers, updates]) => {
      const state = servers.map((s, i) => candidate(i, s))
      const strategy = withServers(weightedLeastConnection.makePicker(), state)
      for (const [which, active] of updates) {
        const at = which % state.length
        const current = state[at]
        if (current !== undefined) {
          state[at] = { ...current, active }
          strategy.upsert(state[at])
        }
        const pickedId = strategy.pick(none)
        const picked = state.find((c) => c.id === pickedId)
        expect(picked).toBeDefined()
        const best = Math.min(...state.map((c) => c.active / c.weight))
        expect((picked?.active ?? Infinity) / (picked?.weight ?? 1)).toBe(best)
      }
    }
  )

  it("at equal load sends the next client to the heavier server", () => {
    const strategy = withServers(
      weightedLeastConnection.makePicker(),
      [1, 3, 2].map((weight, i) => candidate(i, { weight }))
    )
    expect(strategy.pick(none)).toBe(id(1))
  })

  it("rotates among servers with equal load instead of always taking the first", () => {
    const strategy = withServers(
      weightedLeastConnection.makePicker(),
      [0, 1, 2, 3].map((i) => candidate(i, { active: 2 }))
    )
    expect(new Set(picks(strategy, 4))).toEqual(new Set([id(0), id(1), id(2), id(3)]))
  })
})

const measured = FastCheck.array(
  FastCheck.record({
    weight: FastCheck.integer({ min: 1, max: 10 }),
    active: FastCheck.nat(20),
    responseTimeMs: FastCheck.option(FastCheck.double({ min: 0.01, max: 5000, noNaN: true }), { nil: null }),
    latencyMs: FastCheck.option(FastCheck.double({ min: 0.01, max: 5000, noNaN: true }), { nil: null })
  }),
  { minLength: 1, maxLength: 30 }
)

describe("weighted-response-time", () => {
  it.prop(
    "picks the least expected response time (latency x in-flight, per weight), a server not yet measured first",
    [measured],
    ([servers]) => {
      const state = servers.map((s, i) => candidate(i, s))
      const pickedId = withServers(weightedResponseTime.makePicker(), state).pick(none)
      const picked = state.find((c) => c.id === pickedId)
      const unmeasured = state.filter((c) => responseTime(c) === null)
      if (unmeasured.length > 0) expect(picked === undefined ? undefined : responseTime(picked)).toBeNull()
      else {
        expect(picked).toBeDefined()
        if (picked !== undefined) expect(expectedCost(picked)).toBe(Math.min(...state.map(expectedCost)))
      }
    }
  )

  it("prefers the server's own latency report to the probe's round trip", () => {
    const strategy = withServers(weightedResponseTime.makePicker(), [
      candidate(0, { responseTimeMs: 0.2, latencyMs: 200 }),
      candidate(1, { responseTimeMs: 0.4, latencyMs: 40 })
    ])
    expect(strategy.pick(none)).toBe(id(1))
  })

  it("spreads a burst: each client located counts against the server's cost", () => {
    // Two equally fast servers; the registry raises `active` as it locates clients to one.
    const strategy = withServers(weightedResponseTime.makePicker(), [
      candidate(0, { latencyMs: 10 }),
      candidate(1, { latencyMs: 10 })
    ])
    const load = [0, 0]
    const picks = Array.from({ length: 6 }, () => {
      const picked = strategy.pick(none)
      const at = picked === id(0) ? 0 : 1
      load[at] = (load[at] ?? 0) + 1
      strategy.upsert(candidate(at, { latencyMs: 10, active: load[at] ?? 0 }))
      return picked
    })
    expect(picks.filter((p) => p === id(0)).length).toBe(3)
  })
})

describe("consistent-hash", () => {
  const keys = (n: number, seed: number) => Array.from({ length: n }, (_, i) => `10.${seed % 256}.${i >> 8}.${i & 255}`)
  const owners = (strategy: Picker, all: ReadonlyArray<string>, skip = none) =>
    new Map(all.map((key) => [key, strategy.pick(skip, key)]))

  it.prop(
    "keeps every key on its server, pick after pick, and load reports change nothing",
    [FastCheck.array(FastCheck.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 12 }), FastCheck.nat(1000)],
    ([ws, seed]) => {
      const strategy = withServers(
        consistentHash.makePicker(),
        ws.map((weight, i) => candidate(i, { weight }))
      )
      const all = keys(200, seed)
      const first = owners(strategy, all)
      // A load report is an upsert with the same weight: the ring must not move.
      ws.forEach((weight, i) => strategy.upsert(candidate(i, { weight, active: seed % 17 })))
      expect(owners(strategy, all)).toEqual(first)
    }
  )

  it.prop(
    "a server joining takes keys only for itself; one leaving hands on only its own",
    [FastCheck.integer({ min: 1, max: 12 }), FastCheck.nat(1000)],
    ([n, seed]) => {
      const strategy = withServers(
        consistentHash.makePicker(),
        Array.from({ length: n }, (_, i) => candidate(i))
      )
      const all = keys(500, seed)
      const before = owners(strategy, all)
      strategy.upsert(candidate(n))
      const joined = owners(strategy, all)
      for (const key of all) expect([before.get(key), id(n)]).toContain(joined.get(key))
      // About 1/(n+1) of the keys move to the newcomer, not a reshuffle.
      const moved = all.filter((key) => joined.get(key) !== before.get(key)).length
      expect(moved / all.length).toBeLessThan(Math.min(1, 2.5 / (n + 1)))
      strategy.remove(id(0))
      const left = owners(strategy, all)
      for (const key of all) if (joined.get(key) !== id(0)) expect(left.get(key)).toBe(joined.get(key))
    }
  )

  it("shares keys in proportion to weight", () => {
    const strategy = withServers(consistentHash.makePicker(), [
      candidate(1, { weight: 1 }),
      candidate(2, { weight: 3 }),
      candidate(3, { weight: 4 })
    ])
    const all = keys(40_000, 3).map((key, i) => `${key}/${i}`)
    const counts = new Map<ServerId | undefined, number>()
    for (const key of all) counts.set(strategy.pick(none, key), (counts.get(strategy.pick(none, key)) ?? 0) + 1)
    const share = (i: number) => (counts.get(id(i)) ?? 0) / all.length
    expect(share(1)).toBeCloseTo(1 / 8, 1)
    expect(share(2)).toBeCloseTo(3 / 8, 1)
    expect(share(3)).toBeCloseTo(4 / 8, 1)
  })

  it.prop(
    "a client whose server is skipped goes on to the same next server every time, never a skipped one",
    [FastCheck.integer({ min: 2, max: 10 }), FastCheck.string({ maxLength: 40 })],
    ([n, key]) => {
      const strategy = withServers(
        consistentHash.makePicker(),
        Array.from({ length: n }, (_, i) => candidate(i))
      )
      const home = strategy.pick(none, key)
      if (home === undefined) return expect.unreachable("no server for a key")
      const skip = new Set([home])
      const next = strategy.pick(skip, key)
      expect(next).not.toBe(home)
      expect(strategy.pick(skip, key)).toBe(next)
      // Skipping every server: nothing eligible.
      expect(strategy.pick(new Set(Array.from({ length: n }, (_, i) => id(i))), key)).toBeUndefined()
    }
  )
})

describe("every strategy", () => {
  const operation = FastCheck.oneof(
    FastCheck.record({
      kind: FastCheck.constant("upsert" as const),
      server: FastCheck.nat(15),
      weight: FastCheck.integer({ min: 1, max: 9 }),
      active: FastCheck.nat(20),
      rt: FastCheck.option(FastCheck.integer({ min: 1, max: 900 }), { nil: null })
    }),
    FastCheck.record({ kind: FastCheck.constant("remove" as const), server: FastCheck.nat(15) }),
    FastCheck.record({
      kind: FastCheck.constant("pick" as const),
      skip: FastCheck.array(FastCheck.nat(15), { maxLength: 4 }),
      key: FastCheck.option(FastCheck.string({ maxLength: 20 }), { nil: undefined })
    })
  )

  for (const member of catalog) {
    const definition = load(member)
    it.prop(
      `${definition.name}: never returns a skipped or removed server, and returns one whenever one is eligible`,
      [FastCheck.array(operation, { maxLength: 200 })],
      ([operations]) => {
        const strategy = definition.makePicker()
        const members = new Set<ServerId>()
        for (const op of operations) {
          if (op.kind === "upsert") {
            strategy.upsert(candidate(op.server, { weight: op.weight, active: op.active, responseTimeMs: op.rt }))
            members.add(id(op.server))
          } else if (op.kind === "remove") {
            strategy.remove(id(op.server))
            members.delete(id(op.server))
          } else {
            const skip = new Set(op.skip.map(id))
            const picked = strategy.pick(skip, op.key)
            const eligible = [...members].filter((m) => !skip.has(m))
            if (eligible.length === 0) expect(picked).toBeUndefined()
            else expect(eligible).toContain(picked)
          }
        }
      }
    )
  }
})

describe("the catalog", () => {
  it.effect("holds every strategy once, under the name its own layer gives it, in the order of `names`", () =>
    Effect.gen(function* () {
      const strategies = yield* Strategies
      expect([...strategies.keys()]).toEqual(names)
      expect(new Set(names).size).toBe(names.length)
      for (const [name, strategy] of strategies) expect(strategy.name).toBe(name)
      for (const member of catalog) expect(load(member).name).toBe(member.name)
      // Only consistent-hash picks by the client's key: callers work a key out only for it.
      expect([...strategies.values()].filter((strategy) => strategy.keyed).map((s) => s.name)).toEqual([
        "consistent-hash"
      ])
    }).pipe(Effect.provide(Strategies.layer))
  )

  it("consistent-hash takes its unkeyed picks from round-robin's layer: each server in turn", () => {
    const strategy = withServers(
      consistentHash.makePicker(),
      [0, 1, 2].map((i) => candidate(i))
    )
    expect(picks(strategy, 6)).toEqual([0, 1, 2, 0, 1, 2].map(id))
  })
})
