/**
 * Idle timeouts for many connections at once: one sweeper fiber per listener wakes on a `Schedule`
 * and closes the connections that have been idle too long — no timer and no fiber per connection
 * or per request (the Locate path cannot afford either), much as HAProxy and nginx keep their
 * timeouts in one timer structure. A connection is closed between `timeout` and `timeout` plus
 * one sweep interval (a quarter of the timeout, at most a second) after its last activity.
 *
 * A connection sending a reply is idle when its bytes stop moving: a peer that does not read holds
 * a connection as surely as one that does not write.
 */
import { type Clock, Duration, Effect, Schedule, type Scope } from "effect"
import { type Place, Roster } from "./Roster.js"

export interface IdleTracker {
  /** A request is being answered: not idle, however long that takes. */
  busy(): void
  /**
   * A request is being answered by sending bytes: idle once the activity counter has not moved for
   * the timeout (the peer stopped reading), however long the reply. Draining lets it finish.
   */
  sending(): void
  /** Activity: the idle time counts from now. */
  done(): void
}

/** One tracked connection: call its methods on it, not detached. */
export interface TrackedConnection extends IdleTracker {
  /** Stops tracking it (at its close, or for good). */
  release(): void
}

/** What the sweeper needs of a connection it tracks: the connection object itself, so tracking costs no closure. */
export interface Idler {
  /** It has idled out: close it. */
  idleOut(): void
  /**
   * A counter that moves when the connection does (bytes carried): read at each sweep, so a busy
   * connection costs nothing per chunk. One that never moves leaves only the request times to go by.
   */
  activity(): number
}

export interface IdleSweeper {
  /** Tracks one connection; `idleOut` is called once it idles out, `release` stops tracking. */
  readonly unsafeTrack: (connection: Idler) => TrackedConnection
  /** Closes every tracked connection that is between requests right now (a server draining). */
  readonly closeIdle: Effect.Effect<void>
}

/**
 * A tracked connection: one object per connection, its own tracker (no closures), listed in a
 * `Roster` rather than a `Set` (a `Set` gaining and losing one per connection kept closed
 * connections alive through the scavenges; see `Roster.ts`).
 */
class Entry implements TrackedConnection {
  since: number
  /** Between requests, answering one that is never idle, or sending a reply that is idle once its bytes stop. */
  answering: "no" | "busy" | "sending" = "no"
  seen = 0
  place: Place<Entry> | undefined = undefined

  constructor(
    private readonly entries: Roster<Entry>,
    private readonly clock: Clock.Clock,
    readonly connection: Idler
  ) {
    this.since = clock.unsafeCurrentTimeMillis()
  }

  busy(): void {
    this.answering = "busy"
  }

  sending(): void {
    this.answering = "sending"
    this.since = this.clock.unsafeCurrentTimeMillis()
  }

  done(): void {
    this.answering = "no"
    this.since = this.clock.unsafeCurrentTimeMillis()
  }

  release(): void {
    if (this.place !== undefined) this.entries.leave(this.place)
    this.place = undefined
  }
}

export const sweepInterval = (timeout: Duration.DurationInput): Duration.Duration =>
  Duration.millis(Math.min(1000, Math.max(10, Duration.toMillis(timeout) / 4)))

export const makeIdleSweeper = (timeout: Duration.DurationInput): Effect.Effect<IdleSweeper, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Effect.clock
    const limit = Duration.toMillis(timeout)
    const entries = new Roster<Entry>()
    const closeWhere = (idle: (entry: Entry) => boolean) =>
      Effect.sync(() => {
        for (const entry of entries) {
          if (entry.answering !== "busy" && idle(entry)) {
            entry.release()
            entry.connection.idleOut()
          }
        }
      })
    const sweep = Effect.suspend(() => {
      const now = clock.unsafeCurrentTimeMillis()
      return closeWhere((entry) => {
        const seen = entry.connection.activity()
        if (seen !== entry.seen) {
          entry.seen = seen
          entry.since = now
          return false
        }
        return now - entry.since >= limit
      })
    })
    yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(sweepInterval(timeout))))
    const unsafeTrack = (connection: Idler): TrackedConnection => {
      const entry = new Entry(entries, clock, connection)
      entry.place = entries.join(entry)
      return entry
    }
    return {
      unsafeTrack,
      closeIdle: closeWhere((entry) => entry.answering === "no")
    }
  })
