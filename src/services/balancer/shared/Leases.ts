/**
 * Leases: a self-registered server is listed for as long as the balancer run holding its control
 * connection (its record's `holder`) is announced in the store (`Cluster.ts` renews that every
 * heartbeat). A balancer that dies stops renewing; its announcement expires, and once every balancer
 * that reads the store has seen it absent for the lease time, the first to act removes that run's
 * servers, through one script that checks both facts again inside the store. A server that registered
 * again elsewhere meanwhile has another holder and stays; operator-added and file servers have none.
 *
 * Only what this balancer saw for itself counts, and only while its link to the store stayed up: a
 * link that went down or came back (a Redis restarted empty has no announcements for up to a
 * heartbeat), or a reading that failed, starts every absence again. While the store is down nothing
 * expires.
 */
import { Clock, Duration, Effect, Schedule } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import { type Holder, type ServerRecord, SharedStore, type Signer, StoreUnavailable } from "./Store.js"

export interface LeaseConfig {
  /** How long a holder must be seen unannounced, continuously, before its servers are removed. */
  readonly lease: Duration.DurationInput
  /** How often the announcements are read (only while other runs hold servers). */
  readonly interval: Duration.DurationInput
  /** Each reading and each removal within this long. */
  readonly timeout: Duration.DurationInput
}

export const defaults = {
  /** As long as an announcement stands without renewal (`Cluster.defaults.expireAfter`). */
  lease: Duration.seconds(5),
  interval: Duration.seconds(1)
} as const

/** What the lease keeper reads of the shared registry. */
export interface LeaseView {
  /** This run: its own leases are never ended here. */
  readonly self: Holder
  /** The store answers and its state has been read since it last (re)connected. */
  readonly synced: () => boolean
  /** How many times the store's link went down or came up. */
  readonly linkChanges: () => number
  /** The servers the store holds, as far as this balancer knows. */
  readonly records: () => Iterable<ServerRecord>
  /** Signs the next change of this run. */
  readonly sign: () => Signer
}

export interface Held {
  readonly holder: Holder
  readonly ids: ReadonlyArray<ServerId>
}

const keyOf = (holder: Holder) => `${holder.balancer}\u0000${holder.instance}`

/** The `registered` servers held by runs other than `self`, by holder. */
export const heldByOthers = (records: Iterable<ServerRecord>, self: Holder): Map<string, Held> => {
  const held = new Map<string, { holder: Holder; ids: Array<ServerId> }>()
  for (const record of records) {
    const holder = record.holder
    if (record.origin !== "registered" || holder === undefined) continue
    const key = keyOf(holder)
    if (key === keyOf(self)) continue
    const entry = held.get(key)
    if (entry === undefined) held.set(key, { holder, ids: [record.id] })
    else entry.ids.push(record.id)
  }
  return held
}

/**
 * When each holder was first seen unannounced: forgotten when it is announced again or holds nothing,
 * and all at once when the link changes or a reading fails. At most one entry per holder of a server.
 */
export class Absences {
  private readonly since = new Map<string, number>()

  clear(): void {
    this.since.clear()
  }

  get size(): number {
    return this.since.size
  }

  /** One reading at `now`: the holders unannounced for `leaseMs` or longer. */
  observe(now: number, held: ReadonlyMap<string, Held>, announced: ReadonlySet<string>, leaseMs: number) {
    for (const key of this.since.keys()) if (!held.has(key) || announced.has(key)) this.since.delete(key)
    const expired: Array<Held> = []
    for (const [key, entry] of held) {
      if (announced.has(key)) continue
      const since = this.since.get(key)
      if (since === undefined) this.since.set(key, now)
      else if (now - since >= leaseMs) expired.push(entry)
    }
    return expired
  }
}

const within = <A>(effect: Effect.Effect<A, StoreUnavailable>, timeout: Duration.DurationInput, what: string) =>
  Effect.timeoutFail(effect, {
    duration: timeout,
    onTimeout: () => new StoreUnavailable({ message: `no answer to ${what} within the deadline` })
  })

/** Ends one holder's leases (the store checks again); says what it removed. */
const expire = (store: SharedStore["Type"], view: LeaseView, config: LeaseConfig, { holder, ids }: Held) =>
  within(store.expireLeases(view.sign(), holder, ids), config.timeout, "a lease's end").pipe(
    Effect.matchEffect({
      onSuccess: (removed) =>
        removed.length === 0
          ? Effect.void
          : Effect.logInfo(
              `balancer ${holder.balancer} (run ${holder.instance.slice(0, 8)}) is gone: its lease${removed.length === 1 ? "" : "s"} expired, removed ${removed.join(", ")}`
            ),
      onFailure: (error) =>
        Effect.logWarning(`could not end the leases of balancer ${holder.balancer}: ${error.message}`)
    })
  )

/** Reads the announcements every `interval` and ends the leases of runs absent for `lease`; runs until interrupted. */
export const keep = (view: LeaseView, config: LeaseConfig) =>
  Effect.gen(function* () {
    const store = yield* SharedStore
    const leaseMs = Duration.toMillis(config.lease)
    const absences = new Absences()
    let link = view.linkChanges()
    const check = Effect.gen(function* () {
      if (view.linkChanges() !== link) {
        link = view.linkChanges()
        absences.clear()
      }
      const held = heldByOthers(view.records(), view.self)
      if (!view.synced() || held.size === 0) return absences.clear()
      const read = yield* Effect.either(within(store.members, config.timeout, "the list of balancers"))
      if (read._tag === "Left" || view.linkChanges() !== link) return absences.clear()
      const announced = new Set(read.right.map((member) => keyOf({ balancer: member.id, instance: member.instance })))
      const now = yield* Clock.currentTimeMillis
      for (const entry of absences.observe(now, held, announced, leaseMs)) yield* expire(store, view, config, entry)
    })
    return yield* Effect.repeat(check, Schedule.spaced(config.interval))
  })
