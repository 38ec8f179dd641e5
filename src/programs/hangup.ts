/**
 * SIGHUP, which by default ends a node process (a closed terminal, a careless `kill -HUP`, a
 * supervisor's reload), is ignored by the long-running commands, with a log line — except by a
 * balancer started with `--config`, for which it has its usual meaning for daemons: reload.
 */
import { Effect, Runtime } from "effect"

const ignored = Effect.gen(function* () {
  const runtime = yield* Effect.runtime<never>()
  const onHangup = () => {
    Runtime.runFork(runtime)(
      Effect.logWarning("SIGHUP received and ignored (only a balancer started with --config reloads on it)")
    )
  }
  yield* Effect.acquireRelease(
    Effect.sync(() => process.on("SIGHUP", onHangup)),
    () => Effect.sync(() => process.off("SIGHUP", onHangup))
  )
})

/** Runs `effect` with SIGHUP ignored (logged) until it ends. */
export const ignoringHangup = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.scoped(Effect.zipRight(ignored, effect))

/** Runs `reload` at each SIGHUP, for the scope's lifetime (its outcome is logged by `reload` itself). */
export const reloadingOnHangup = <A, E>(reload: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>()
    const onHangup = () => {
      Runtime.runFork(runtime)(Effect.ignore(reload))
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => process.on("SIGHUP", onHangup)),
      () => Effect.sync(() => process.off("SIGHUP", onHangup))
    )
  })
