/** Polls `check` until `until` holds, for tests that wait on something real (a registration, a probe). */
import { type Duration, Effect, Schedule } from "effect"

export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  until: (a: A) => boolean,
  within: Duration.DurationInput = "10 seconds"
) =>
  check.pipe(
    Effect.filterOrFail(until, () => "not yet"),
    Effect.retry(Schedule.spaced("50 millis")),
    Effect.timeout(within)
  )
