/**
 * This balancer's local changes, written to the store (see `SharedRegistry.ts`): one at a time and in
 * order, by one fiber (`writer`); those that cannot be written yet (before it joins, or while the
 * store is unreachable) kept to be written when it answers (`park`); and the registry's gauges
 * (`reporter`).
 */
import { type Duration, Effect, Metric } from "effect"
import * as Metrics from "../Metrics.js"
import { type SharedChange, type SharedStore, type Signer, StoreUnavailable } from "./Store.js"
import { describeChange, keyOf, type SyncState } from "./SyncState.js"

/** A local change on its way to the store, with its number in this run. */
export interface Outgoing {
  readonly change: SharedChange
  readonly sequence: number
}

/** What the writer needs of the shared registry's config (`SharedConfig`). */
interface WriterConfig {
  readonly timeout: Duration.DurationInput
  readonly maxPending: number
}

/** The registry's gauges (`/metrics`), as of now: joined or not, the revision, what waits to be written, the lag. */
export const reporter = () => {
  const gauges = [Metrics.registryConnected, Metrics.registryRevision, Metrics.registryPending, Metrics.registrySyncLag]
  // Each set only when it changed: this runs after every batch of remote changes.
  const last: Array<number | undefined> = gauges.map(() => undefined)
  return (state: SyncState, waiting: number) =>
    Effect.suspend(() => {
      const now = [
        state.connected && state.synced ? 1 : 0,
        state.revision,
        state.unshared.size + waiting,
        state.lagSeconds
      ]
      const changed: Array<Effect.Effect<void>> = []
      gauges.forEach((gauge, i) => {
        const value = now[i]
        if (value === undefined || value === last[i]) return
        last[i] = value
        changed.push(Metric.set(gauge, value))
      })
      return changed.length === 0 ? Effect.void : Effect.all(changed, { discard: true })
    })
}

/** Keeps a change that could not be written, to be written when the store answers (false: too many). */
export const park = (state: SyncState, config: WriterConfig, change: SharedChange) => {
  const kept = state.unshared.has(keyOf(change)) || state.unshared.size < config.maxPending
  if (kept) state.unshared.set(keyOf(change), change)
  return kept
}

/**
 * Writes one local change, within the deadline. Until it has joined (read a snapshot), a balancer's
 * changes wait, to be written when it does; so does one whose write fails.
 */
export const writer =
  (
    state: SyncState,
    store: SharedStore["Type"],
    config: WriterConfig,
    signer: Omit<Signer, "sequence">,
    resync: () => void
  ) =>
  ({ change, sequence }: Outgoing) =>
    Effect.suspend(() =>
      state.synced
        ? store.write({ ...signer, sequence }, change)
        : Effect.sync(() => void park(state, config, change)).pipe(Effect.as(0))
    ).pipe(
      Effect.timeoutFail({
        duration: config.timeout,
        onTimeout: () => new StoreUnavailable({ message: "no answer within the deadline" })
      }),
      Effect.matchEffect({
        // 0: parked, not written (it has not joined); -1: written as not needed (an `ifUnset` strategy).
        onSuccess: (revision) => Effect.sync(() => revision !== 0 && state.unshared.delete(keyOf(change))),
        // Kept, and written after the next snapshot: read now (retried while the connection is up).
        onFailure: (error) => {
          const kept = park(state, config, change)
          if (state.synced) {
            state.synced = false
            resync()
          }
          return Effect.logWarning(
            `${describeChange(change)} not shared yet (${error.message}): ${kept ? "written when the shared registry answers" : "too many waiting, kept here only"}`
          )
        }
      })
    )
