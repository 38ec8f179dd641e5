/**
 * SIGHUP, which by default ends a node process (a closed terminal, a careless `kill -HUP`, a
 * supervisor's reload), is ignored by the long-running commands for now, with a log line. A later
 * release gives it its usual meaning for daemons: reload.
 */
import { Effect, Runtime } from "effect"

const ignored = Effect.gen(function* () {
  const runtime = yield* Effect.runtime<never>()
  const onHangup = () => {
    Runtime.runFork(runtime)(Effect.logWarning("SIGHUP received and ignored (reloading is not supported yet)"))
  }
  yield* Effect.acquireRelease(
    Effect.sync(() => process.on("SIGHUP", onHangup)),
    () => Effect.sync(() => process.off("SIGHUP", onHangup))
  )
})

/** Runs `effect` with SIGHUP ignored (logged) until it ends. */
export const ignoringHangup = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.scoped(Effect.zipRight(ignored, effect))
