/**
 * Forgets servers that registered themselves and then went away: a `registered` server that has
 * stayed dead for `removeDeadAfter` is removed from the registry, so servers that come and go (or
 * a peer that registers addresses nothing answers on) cannot fill it for good. Servers an operator
 * configured (`--server`, the admin API) stay, dead or not. One fiber sweeps the registry on a
 * schedule; nothing runs per server.
 */
import { Clock, Duration, Effect, Layer, Schedule } from "effect"
import { ServerRegistry } from "./ServerRegistry.js"

export interface ReaperConfig {
  /** How long a registered server may stay dead before it is removed. */
  readonly removeDeadAfter: Duration.DurationInput
}

export const defaults: ReaperConfig = { removeDeadAfter: Duration.seconds(60) }

/** How often the registry is swept: a tenth of the grace period, between 10 ms and 1 s. */
export const sweepInterval = (removeDeadAfter: Duration.DurationInput): Duration.Duration =>
  Duration.millis(Math.min(1000, Math.max(10, Duration.toMillis(removeDeadAfter) / 10)))

export const make = (config: ReaperConfig) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const grace = Duration.decode(config.removeDeadAfter)
    const sweep = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const removed = yield* registry.removeDeadSince(now - Duration.toMillis(grace))
      if (removed.length === 0) return
      const named = removed.slice(0, 5).join(", ") + (removed.length > 5 ? ", …" : "")
      yield* Effect.logInfo(
        `removed ${removed.length} registered server${removed.length === 1 ? "" : "s"} dead for ${Duration.format(grace)}: ${named}`
      )
    })
    yield* sweep.pipe(Effect.repeat(Schedule.spaced(sweepInterval(grace))), Effect.forkScoped)
  })

export const layer = (config: ReaperConfig = defaults): Layer.Layer<never, never, ServerRegistry> =>
  Layer.scopedDiscard(make(config))
