/**
 * A load-balancing strategy: given the eligible servers, pick one. Each strategy is one small file in
 * `strategies/`, listed once in `all` below; the balancer never knows which one it runs.
 *
 * A strategy keeps its own index of the servers it is given (`upsert`/`remove`), so a pick costs
 * O(1) or O(log n) instead of a scan, and it sees only those figures — never the registry, never a
 * socket — so it can be property-tested as a plain object.
 */
import { Context, Layer } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import { consistentHash } from "./ConsistentHash.js"
import { roundRobin } from "./RoundRobin.js"
import { weightedLeastConnection } from "./WeightedLeastConnection.js"
import { weightedResponseTime } from "./WeightedResponseTime.js"
import { weightedRoundRobin } from "./WeightedRoundRobin.js"

/** What a strategy knows of a server. */
export interface Candidate {
  readonly id: ServerId
  readonly weight: number
  /** Active connections: the server's last report plus clients located to it since. */
  readonly active: number
  /** Smoothed probe round trip, `null` until first measured. */
  readonly responseTimeMs: number | null
  /** The server's own smoothed request latency (peak-sensitive), `null` until it reports one. */
  readonly latencyMs: number | null
}

export interface Strategy {
  /** Adds an eligible server, or refreshes its figures. */
  readonly upsert: (candidate: Candidate) => void
  /** The server is no longer eligible (dead, draining, removed). */
  readonly remove: (id: ServerId) => void
  /**
   * One eligible server not in `skip`, or `undefined` when there is none. `key` names the client
   * (a Locate's key, or its address) for strategies that keep a client on one server; others ignore it.
   */
  readonly pick: (skip: ReadonlySet<ServerId>, key?: string) => ServerId | undefined
}

export interface StrategyDefinition {
  /** kebab-case, as on the wire and the command line. */
  readonly name: string
  readonly summary: string
  /** Picks by the client's key: callers work the key out only for such a strategy. */
  readonly keyed?: boolean
  /** A fresh instance with no servers. */
  readonly make: () => Strategy
}

/** Every strategy effect-lb knows. Adding one: a new file in strategies/, and one line here. */
export const all: ReadonlyArray<StrategyDefinition> = [
  roundRobin,
  weightedRoundRobin,
  weightedResponseTime,
  weightedLeastConnection,
  consistentHash
]

export const names = all.map((definition) => definition.name)

/** The strategies a balancer may switch between, by name. Tests can provide their own table. */
export class Strategies extends Context.Tag("effect-lb/Strategies")<
  Strategies,
  ReadonlyMap<string, StrategyDefinition>
>() {
  static readonly layer = Layer.succeed(Strategies, new Map(all.map((definition) => [definition.name, definition])))
}
