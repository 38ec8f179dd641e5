/**
 * The proxy's connections, one entry each from accept to close, and the one place that serves the
 * connection limit, the drain on shutdown, the connect deadline and the idle timeout. There is no
 * timer, fiber or closure per connection: one Clock-driven sweep looks at every entry, as HAProxy
 * and nginx keep their timeouts in one structure (see `wire/Idle.ts` for the same idea per listener).
 *
 * The table knows times, not sockets: its owner says what an entry's activity is and what to do
 * with one that timed out, so a test can drive it with plain records and made-up times.
 */
import { Duration, Effect, Schedule, type Scope } from "effect"
import { sweepInterval } from "../wire/Idle.js"
import { type Place, Roster } from "../wire/Roster.js"

/** What the table keeps of one connection; the owner's record extends it. */
export interface Entry {
  /** Connected: the idle timeout applies. Until then the connect deadline does. */
  open: boolean
  /** Connecting: when this attempt began. Open: when its activity last moved (as of a sweep). */
  since: number
  /** The entry's activity counter as of the last sweep. */
  seen: number
  /** Its place in the table while it is in (the table's own field: undefined when built). */
  place: Place<this> | undefined
}

export interface TableConfig {
  /** Entries past this many are not admitted. */
  readonly limit: number
  /** An entry not open this long after its attempt began has timed out. */
  readonly connectTimeout: Duration.DurationInput
  /** An open entry whose activity has not moved for this long is idle. */
  readonly idleTimeout: Duration.DurationInput
}

/** What a sweep does with the entries it finds: made once per table, never per entry. */
export interface SweepActions<E> {
  /** A counter that moves when the entry does (bytes carried): read at each sweep, so carrying data costs nothing. */
  readonly activity: (entry: E) => number
  /** Not open by the connect deadline. */
  readonly timedOut: (entry: E) => void
  /** Open, and no activity for the idle timeout. */
  readonly idle: (entry: E) => void
}

export class ConnectionTable<E extends Entry> {
  /** Not a `Set`: see `Roster` — a `Set` here doubled what each connection left for the scavenges. */
  private readonly entries = new Roster<E>()
  /** Told when the last entry is gone (the drain waits on it). */
  private readonly whenEmpty = new Set<() => void>()
  private readonly connectMs: number
  private readonly idleMs: number

  constructor(private readonly config: TableConfig) {
    this.connectMs = Duration.toMillis(config.connectTimeout)
    this.idleMs = Duration.toMillis(config.idleTimeout)
  }

  /** Entries in the table right now. */
  get size(): number {
    return this.entries.size
  }

  /**
   * The entry `make` builds from `from`, now in the table; undefined when the table is full. The
   * entry is built only once admitted: a connection turned away at the limit costs nothing more.
   */
  admit<A>(from: A, make: (from: A) => E): E | undefined {
    if (this.entries.size >= this.config.limit) return undefined
    const entry = make(from)
    entry.place = this.entries.join(entry)
    return entry
  }

  /** The entry's connection is gone. */
  leave(entry: E): void {
    if (entry.place === undefined) return
    this.entries.leave(entry.place)
    entry.place = undefined
    if (this.entries.size > 0 || this.whenEmpty.size === 0) return
    const told = [...this.whenEmpty]
    this.whenEmpty.clear()
    for (const tell of told) tell()
  }

  /** Succeeds once the table is empty (at once if it is). */
  readonly drained: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.entries.size === 0) return resume(Effect.void)
    const tell = () => resume(Effect.void)
    this.whenEmpty.add(tell)
    return Effect.sync(() => this.whenEmpty.delete(tell))
  })

  /**
   * One look at every entry as of `now`: a connecting entry past its deadline has timed out; an
   * open one is idle when its activity has not moved between sweeps for the idle timeout.
   */
  sweep(now: number, actions: SweepActions<E>): void {
    for (const entry of this.entries) {
      if (!entry.open) {
        if (now - entry.since >= this.connectMs) actions.timedOut(entry)
        continue
      }
      const seen = actions.activity(entry)
      if (seen !== entry.seen) {
        entry.seen = seen
        entry.since = now
      } else if (now - entry.since >= this.idleMs) actions.idle(entry)
    }
  }

  /**
   * The sweep, forked into the scope and run on the Clock often enough for both timeouts: an entry
   * is swept between its timeout and its timeout plus one interval.
   */
  sweeping(actions: SweepActions<E>): Effect.Effect<void, never, Scope.Scope> {
    const interval = Duration.min(sweepInterval(this.config.connectTimeout), sweepInterval(this.config.idleTimeout))
    return Effect.clockWith((clock) =>
      Effect.forkScoped(
        Effect.repeat(
          Effect.sync(() => this.sweep(clock.unsafeCurrentTimeMillis(), actions)),
          Schedule.spaced(interval)
        )
      )
    ).pipe(Effect.asVoid)
  }

  [Symbol.iterator](): Iterator<E> {
    return this.entries[Symbol.iterator]()
  }
}
