/** A port that cannot be listened on, said so a person knows which flag to change and how. */
import { Effect } from "effect"
import { ListenFailed } from "../services/wire/Wire.js"

/** A port-setting flag as given: its name, the port it came to, and its default (none for an off-by-default port). */
export interface PortFlag {
  readonly flag: string
  readonly port: number | undefined
  readonly fallback: number | undefined
}

/** The port of `host:port` or `[v6]:port`. */
const portOf = (endpoint: string): number => Number(endpoint.slice(endpoint.lastIndexOf(":") + 1))

/**
 * A listener that failed because its address is in use gets a hint: when the port was the default
 * one (the person asked for nothing in particular), to let the system pick a free one.
 */
export const hintBusyPort =
  (flags: ReadonlyArray<PortFlag>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | ListenFailed, R> =>
    Effect.mapError(effect, (error) => {
      if (!(error instanceof ListenFailed) || error.reason !== "EADDRINUSE" || error.hint !== undefined) return error
      const port = portOf(error.endpoint)
      const given = flags.find((entry) => entry.port === port)
      if (given === undefined || given.fallback !== port || port === 0) return error
      return new ListenFailed({
        endpoint: error.endpoint,
        reason: error.reason,
        hint: `give ${given.flag} 0 to let the system pick a free port`
      })
    })
