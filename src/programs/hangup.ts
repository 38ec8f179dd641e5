/**
 * SIGHUP, which by default ends a node process (a closed terminal, a careless `kill -HUP`, a
 * supervisor's reload), is ignored by the long-running commands, with a log line — except by a
 * balancer started with `--config`, for which it has its usual meaning for daemons: reload.
 * From the moment the command line names one of them, before it has started, a SIGHUP is held
 * (`holdHangups`) and handed over once the command takes SIGHUP over: none ends it while it starts.
 */
import { Effect, Runtime } from "effect"
import type { Identity, ListenerTls } from "../services/wire/Tls.js"

/** SIGHUPs held since `holdHangups`, not yet handed over. */
let held = 0
const hold = () => {
  held += 1
}

/** From now until a command takes SIGHUP over, a SIGHUP is held instead of ending the process. */
export const holdHangups = (): void => {
  if (!process.listeners("SIGHUP").includes(hold)) process.on("SIGHUP", hold)
}

/**
 * `onHangup` takes SIGHUP over from `holdHangups`, in one step (no SIGHUP is missed or counted twice)
 * until the scope ends; returns how many SIGHUPs were held until now.
 */
const takeOver = (onHangup: () => void) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      process.on("SIGHUP", onHangup)
      process.off("SIGHUP", hold)
      const count = held
      held = 0
      return count
    }),
    () => Effect.sync(() => process.off("SIGHUP", onHangup))
  )

const ignoredMessage =
  "SIGHUP received and ignored (a balancer started with --config reloads on it; with --tls-cert, a balancer or server reads its certificate again)"

const ignored = Effect.gen(function* () {
  const runtime = yield* Effect.runtime<never>()
  const onHangup = () => {
    Runtime.runFork(runtime)(Effect.logWarning(ignoredMessage))
  }
  if ((yield* takeOver(onHangup)) > 0) yield* Effect.logWarning(`while starting: ${ignoredMessage}`)
})

/** Runs `effect` with SIGHUP ignored (logged) until it ends. */
export const ignoringHangup = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.scoped(Effect.zipRight(ignored, effect))

/**
 * Runs `reload` at each SIGHUP, for the scope's lifetime (its outcome is logged by `reload` itself);
 * SIGHUPs held while the balancer was starting make one reload, now.
 */
export const reloadingOnHangup = <A, E>(reload: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>()
    const onHangup = () => {
      Runtime.runFork(runtime)(Effect.ignore(reload))
    }
    if ((yield* takeOver(onHangup)) > 0) {
      yield* Effect.logInfo("SIGHUP received while the balancer was starting: reloading now that it has started")
      Runtime.runFork(runtime)(Effect.ignore(reload))
    }
  })

/**
 * Runs `effect` reading the certificate files again at each SIGHUP for `listeners` (a renewed
 * certificate: new handshakes get it, open connections keep theirs). A file that cannot serve
 * changes nothing and is logged.
 */
export const reloadingCertificatesOnHangup =
  (listeners: ReadonlyArray<ListenerTls>, files: Identity) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.scoped(
      Effect.zipRight(
        reloadingOnHangup(
          Effect.forEach(listeners, (listener) => listener.reload(files), { discard: true }).pipe(
            Effect.tapError((refused) =>
              Effect.logError(`certificate reload refused, the running one stays: ${refused.message}`)
            )
          )
        ),
        effect
      )
    )
