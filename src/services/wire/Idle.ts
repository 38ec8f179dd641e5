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
import { Duration, Effect, Schedule, type Scope } from "effect"
import { type Place, Roster } from "./Roster.js"

/**
 * A connection under an idle timeout. A connection's own object extends it (so tracking one costs
 * no object and no closure of its own), is handed to `IdleSweeper.unsafeTrack`, and calls these as
 * it goes. Listed in a `Roster` rather than a `Set` (a `Set` gaining and losing one per connection
 * kept closed connections alive through the scavenges; see `Roster.ts`).
 */
export abstract class Idler {
  /** When it went idle, in ms since its sweeper started (small enough to be stored inline). */
  idleSince = 0
  /** Between requests, answering one that is never idle, or sending a reply that is idle once its bytes stop. */
  answering: "no" | "busy" | "sending" = "no"
  /** The activity counter at the last sweep. */
  activitySeen = 0
  /** Its place in its sweeper's list, while tracked. */
  idlePlace: Place<Idler> | undefined = undefined
  sweeper: Sweeper | undefined = undefined

  /** It has idled out: close it. */
  abstract idleOut(): void
  /**
   * A counter that moves when the connection does (bytes carried): read at each sweep, so a busy
   * connection costs nothing per chunk. One that never moves leaves only the request times to go by.
   */
  abstract activity(): number

  /** A request is being answered: not idle, however long that takes. */
  idleBusy(): void {
    this.answering = "busy"
  }

  /**
   * A request is being answered by sending bytes: idle once the activity counter has not moved for
   * the timeout (the peer stopped reading), however long the reply. Draining lets it finish.
   */
  idleSending(): void {
    this.answering = "sending"
    if (this.sweeper !== undefined) this.idleSince = this.sweeper.now()
  }

  /** Activity: the idle time counts from now. */
  idleFromNow(): void {
    this.answering = "no"
    if (this.sweeper !== undefined) this.idleSince = this.sweeper.now()
  }

  /** Stops tracking it (at its close, or for good). */
  untrack(): void {
    if (this.idlePlace !== undefined) this.sweeper?.entries.leave(this.idlePlace)
    this.idlePlace = undefined
  }
}

/** What a sweeper's connections share: the list they are in and the time. */
interface Sweeper {
  readonly entries: Roster<Idler>
  readonly now: () => number
}

export interface IdleSweeper {
  /** Tracks one connection from now: `idleOut` is called once it idles out; `untrack` stops it. */
  readonly unsafeTrack: (connection: Idler) => void
  /** Closes every tracked connection that is between requests right now (a server draining). */
  readonly closeIdle: Effect.Effect<void>
}

export const sweepInterval = (timeout: Duration.DurationInput): Duration.Duration =>
  Duration.millis(Math.min(1000, Math.max(10, Duration.toMillis(timeout) / 4)))

export const makeIdleSweeper = (timeout: Duration.DurationInput): Effect.Effect<IdleSweeper, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Effect.clock
    const limit = Duration.toMillis(timeout)
    const started = clock.unsafeCurrentTimeMillis()
    const sweeper: Sweeper = {
      entries: new Roster<Idler>(),
      now: () => clock.unsafeCurrentTimeMillis() - started
    }
    const closeWhere = (idle: (entry: Idler) => boolean) =>
      Effect.sync(() => {
        for (const entry of sweeper.entries) {
          if (entry.answering !== "busy" && idle(entry)) {
            entry.untrack()
            entry.idleOut()
          }
        }
      })
    const sweep = Effect.suspend(() => {
      const now = sweeper.now()
      return closeWhere((entry) => {
        const seen = entry.activity()
        if (seen !== entry.activitySeen) {
          entry.activitySeen = seen
          entry.idleSince = now
          return false
        }
        return now - entry.idleSince >= limit
      })
    })
    yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(sweepInterval(timeout))))
    const unsafeTrack = (connection: Idler): void => {
      connection.sweeper = sweeper
      connection.idleSince = sweeper.now()
      connection.idlePlace = sweeper.entries.join(connection)
    }
    return {
      unsafeTrack,
      closeIdle: closeWhere((entry) => entry.answering === "no")
    }
  })
