/**
 * The last two minutes of picks, per server and per second, so a dashboard opened now draws a chart
 * that does not start empty (`GET /api/history`). One fiber samples the registry's pick counts once
 * a second into a ring of fixed length; each sample keeps only the servers picked in that second,
 * one number each, so the ring is bounded by its length times the servers picked.
 *
 * The same sampler times the proxy's accepted connections: connections per second over the last
 * sample.
 */
import { Clock, Effect, type Scope } from "effect"
import type { ServerId, ServerView } from "../../../domain/Server.js"

/** Samples kept: two minutes at one a second. */
export const length = 120

export const intervalMs = 1000

/** One second of picks: when it ended, and who was picked how often in it (nobody else). */
export interface Sample {
  readonly at: number
  readonly ids: ReadonlyArray<ServerId>
  readonly picks: Uint32Array
}

/** A ring of samples, oldest first when read; and the cumulative counts the next sample is taken against. */
export class Ring {
  private readonly samples: Array<Sample> = []
  private next = 0
  private last: Map<ServerId, number> | undefined

  constructor(private readonly size: number = length) {}

  /**
   * Takes a sample from the servers' cumulative counts at `at`: the picks since the last sample.
   * The first call only sets where counting starts.
   */
  record(at: number, servers: ReadonlyArray<Pick<ServerView, "id" | "located">>): void {
    const now = new Map<ServerId, number>()
    const ids: Array<ServerId> = []
    const picks: Array<number> = []
    for (const server of servers) {
      now.set(server.id, server.located)
      // A server new since the last sample counts from zero; one re-added with fewer picks, from now.
      const before = this.last?.get(server.id) ?? 0
      const delta = server.located - before
      if (delta > 0) {
        ids.push(server.id)
        picks.push(delta)
      }
    }
    const first = this.last === undefined
    this.last = now
    if (first) return
    const sample: Sample = { at, ids, picks: Uint32Array.from(picks) }
    if (this.samples.length < this.size) this.samples.push(sample)
    else this.samples[this.next] = sample
    this.next = (this.next + 1) % this.size
  }

  /** The samples, oldest first. */
  read(): ReadonlyArray<Sample> {
    return this.samples.length < this.size
      ? [...this.samples]
      : [...this.samples.slice(this.next), ...this.samples.slice(0, this.next)]
  }
}

/** A sample as JSON: `{at, picks: {id: n}}`. */
export const toJson = (sample: Sample) => {
  const picks: Record<string, number> = {}
  sample.ids.forEach((id, i) => {
    picks[id] = sample.picks[i] ?? 0
  })
  return { at: sample.at, picks }
}

export interface History {
  readonly samples: Effect.Effect<ReadonlyArray<Sample>>
  /** The proxy's connections per second over the last sample (0 before there is one, or without a proxy). */
  readonly connectionsPerSecond: Effect.Effect<number>
}

/** Starts the sampler for the scope's life: `servers` read once a second, and `accepted` (the proxy's count) if given. */
export const make = (
  servers: Effect.Effect<ReadonlyArray<ServerView>>,
  accepted: Effect.Effect<number> | undefined
): Effect.Effect<History, never, Scope.Scope> =>
  Effect.gen(function* () {
    const ring = new Ring()
    let rate = 0
    let lastAccepted: { at: number; count: number } | undefined
    const sample = Effect.gen(function* () {
      const at = yield* Clock.currentTimeMillis
      ring.record(at, yield* servers)
      if (accepted === undefined) return
      const count = yield* accepted
      if (lastAccepted !== undefined && at > lastAccepted.at) {
        rate = ((count - lastAccepted.count) * 1000) / (at - lastAccepted.at)
      }
      lastAccepted = { at, count }
    })
    // Counting starts now, not when the sampler fiber first runs: picks from here on are in the first sample.
    yield* sample
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(intervalMs), sample)))
    return {
      samples: Effect.sync(() => ring.read()),
      connectionsPerSecond: Effect.sync(() => Math.round(rate * 10) / 10)
    }
  })
