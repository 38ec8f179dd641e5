/**
 * The access log (`--access-log`): one line per Locate and per proxied connection — who asked,
 * which server they got, how long it took, the bytes carried, and how it ended — as nginx's
 * `access_log` and HAProxy's `option tcplog` give one line per request or session.
 *
 * Lines go through Effect's logger, with every figure as an annotation, so whatever logger the
 * program runs (pretty, or JSON with `--log-format json`) writes them as it writes everything else.
 * The Locate and proxy paths only append a record to a bounded buffer (no fiber, no effect per
 * line); one fiber per log writes what has gathered. Past the buffer's capacity, lines are counted
 * and dropped, and the count is logged: a flood cannot grow the balancer's memory through its log.
 */
import { Effect, LogLevel, Logger, Queue, type Scope } from "effect"
import { formatEndpoint, type ServerLocation } from "../../domain/Server.js"

/** How a Locate or a proxied connection ended. */
export type AccessOutcome = "located" | "no server" | "proxied" | "backend failed" | "turned away"

export interface AccessEntry {
  readonly kind: "locate" | "proxy"
  /** The client's address, `host:port`. */
  readonly client: string
  /** The server it was sent to (the last one tried, for a proxied connection whose backends failed). */
  readonly server: ServerLocation | undefined
  readonly durationMs: number
  /** Proxied connections: bytes from the client, and bytes to it. */
  readonly bytesIn?: number
  readonly bytesOut?: number
  readonly outcome: AccessOutcome
}

export interface AccessLog {
  /** Adds a line; synchronous and cheap, for the Locate and proxy paths. */
  readonly unsafeWrite: (entry: AccessEntry) => void
}

/** Lines waiting to be written, at most: past it, lines are dropped (and counted). */
export const defaultCapacity = 8192

const round = (ms: number) => Math.round(ms * 1000) / 1000

/** The line's text: short, for people; the figures are in the annotations as well. */
export const describe = (entry: AccessEntry): string => {
  const server =
    entry.server === undefined
      ? ""
      : entry.server.id === formatEndpoint(entry.server)
        ? ` -> ${entry.server.id}`
        : ` -> ${entry.server.id} ${formatEndpoint(entry.server)}`
  const bytes = entry.bytesIn === undefined ? "" : ` in ${entry.bytesIn} B out ${entry.bytesOut ?? 0} B`
  return `${entry.kind} ${entry.client}${server} ${entry.outcome} ${round(entry.durationMs)} ms${bytes}`
}

/** The line's figures, as log annotations (fields in JSON). */
export const annotations = (entry: AccessEntry): Record<string, unknown> => ({
  access: entry.kind,
  client: entry.client,
  ...(entry.server === undefined ? {} : { server: entry.server.id, serverAddress: formatEndpoint(entry.server) }),
  durationMs: round(entry.durationMs),
  ...(entry.bytesIn === undefined ? {} : { bytesIn: entry.bytesIn, bytesOut: entry.bytesOut ?? 0 }),
  outcome: entry.outcome
})

const writeOne = (entry: AccessEntry) => Effect.annotateLogs(Effect.logInfo(describe(entry)), annotations(entry))

/**
 * An access log whose writer fiber lives as long as the scope. Its lines are written at Info level
 * whatever `--log-level` says: asking for an access log is asking for its lines.
 */
export const make = (capacity: number = defaultCapacity): Effect.Effect<AccessLog, never, Scope.Scope> =>
  Effect.gen(function* () {
    let pending: Array<AccessEntry> = []
    let dropped = 0
    // Told once when the buffer stops being empty: the writer then takes everything gathered.
    const wake = yield* Queue.sliding<void>(1)
    const flush = Effect.gen(function* () {
      yield* Queue.take(wake)
      const lines = pending
      const lost = dropped
      pending = []
      dropped = 0
      for (const entry of lines) yield* writeOne(entry)
      if (lost > 0) yield* Effect.logWarning(`access log: ${lost} line(s) dropped (more than ${capacity} waiting)`)
    })
    yield* flush.pipe(Effect.forever, Logger.withMinimumLogLevel(LogLevel.Info), Effect.forkScoped)
    // What gathered since the writer last woke still goes out when the log closes.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => Effect.forEach(pending.splice(0), writeOne, { discard: true })).pipe(
        Logger.withMinimumLogLevel(LogLevel.Info)
      )
    )
    return {
      unsafeWrite: (entry) => {
        if (pending.length >= capacity) {
          dropped += 1
          return
        }
        pending.push(entry)
        if (pending.length === 1) wake.unsafeOffer(undefined)
      }
    }
  })
