/**
 * What a load-balancing strategy is: given the eligible servers, pick one. `Strategy` is one
 * service with an implementation per file in this folder, each a `Layer` (as a platform service has
 * a layer per platform); `Catalog.ts` lists them and the balancer never knows which one it runs.
 *
 * A strategy hands out pickers. A picker keeps its own index of the servers it is given
 * (`upsert`/`remove`), so a pick costs O(1) or O(log n) instead of a scan, and it sees only those
 * figures — never the registry, never a socket — so property tests can drive it as a plain object.
 * Making a picker is synchronous, so the balancer switches strategy in one step. A strategy that
 * needs time or randomness takes `Clock`/`Random` from the environment when its layer is built, so
 * tests can make it deterministic.
 */
import { Context, type Layer } from "effect"
import type { ServerId } from "../../../domain/Server.js"

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

/** One strategy's live index of the eligible servers: the hot path of every pick. */
export interface Picker {
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

/** A strategy: the service each file in this folder implements. */
export class Strategy extends Context.Tag("effect-lb/Strategy")<
  Strategy,
  {
    /** kebab-case, as on the wire and the command line. */
    readonly name: string
    readonly summary: string
    /** Picks by the client's key: callers work the key out only for such a strategy. */
    readonly keyed: boolean
    /** A fresh picker with no servers. */
    readonly makePicker: () => Picker
  }
>() {}

/** What each strategy file exports: its name (known before any layer is built) and its layer. */
export interface StrategyModule<Name extends string = string> {
  readonly name: Name
  readonly layer: Layer.Layer<Strategy>
}
