/**
 * The access log (`--access-log`): one line per Locate and per proxied connection — who asked,
 * which server they got, how long it took, the bytes carried, and how it ended — as nginx's
 * `access_log` and HAProxy's `option tcplog` give one line per request or session.
 *
 * Each line is an Info line in the shape the program's logger gives every other line (see
 * `LogOutput`): pretty, one line whose message carries every figure; or, with `--log-format json`,
 * one object with every figure as an annotation. The Locate
 * and proxy paths only append a record, with its time, to a bounded buffer (no fiber, no effect per
 * line); one fiber per log lets lines gather for a moment, renders them itself and writes the batch
 * to stdout in one write, as nginx's `access_log ... buffer= flush=` does. Going through Effect's
 * logger line by line cost ~70 µs a line (its fiber machinery, then five console.log calls per
 * pretty line); this costs ~3. A slow stdout is waited for: meanwhile the buffer fills, and past
 * its capacity lines are counted and dropped, and the count is logged — a flood or a stuck reader
 * cannot grow the balancer's memory through its log.
 */
import { Duration, Effect, FiberId, LogLevel, Logger, Queue, type Scope } from "effect"
import { formatEndpoint, type ServerLocation } from "../../domain/Server.js"
import { LogOutput, type Output, prettyLine } from "../LogOutput.js"

/** How a Locate or a proxied connection ended. */
export type AccessOutcome =
  "located" | "no server" | "proxied" | "backend failed" | "turned away" | "bad proxy header" | "tls handshake failed"

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
  /** When it happened (ms since the epoch, from the Clock): a batch written later keeps each line's time. */
  readonly at: number
}

export interface AccessLog {
  /** Adds a line; synchronous and cheap, for the Locate and proxy paths. */
  readonly unsafeWrite: (entry: AccessEntry) => void
}

/** Lines waiting to be written, at most: past it, lines are dropped (and counted). */
export const defaultCapacity = 8192

/** How long the writer lets lines gather once the first arrives (nginx's `access_log ... flush=`). */
export const gatherFor = Duration.millis(10)

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
export const annotations = (entry: AccessEntry): Record<string, string | number> => {
  const fields: Record<string, string | number> = { access: entry.kind, client: entry.client }
  if (entry.server !== undefined) {
    fields["server"] = entry.server.id
    fields["serverAddress"] = formatEndpoint(entry.server)
  }
  fields["durationMs"] = round(entry.durationMs)
  if (entry.bytesIn !== undefined) {
    fields["bytesIn"] = entry.bytesIn
    fields["bytesOut"] = entry.bytesOut ?? 0
  }
  fields["outcome"] = entry.outcome
  return fields
}

const pad = (n: number, width: number) => n.toString().padStart(width, "0")

/**
 * When a line happened, as the logger of `format` writes it: `HH:MM:SS.mmm` in local time (pretty)
 * or ISO 8601 (JSON). The date and the clock face are worked out once a second, not once a line.
 */
export const timestamps = (format: Output["format"]): ((at: number) => string) => {
  let second = Number.NaN
  let prefix = ""
  return (at) => {
    const now = Math.floor(at / 1000)
    if (now !== second) {
      second = now
      const date = new Date(now * 1000)
      prefix =
        format === "json"
          ? date.toISOString().slice(0, -4)
          : `${pad(date.getHours(), 2)}:${pad(date.getMinutes(), 2)}:${pad(date.getSeconds(), 2)}.`
    }
    const millis = pad(Math.floor(at) - now * 1000, 3)
    return format === "json" ? `${prefix}${millis}Z` : prefix + millis
  }
}

/** Whether JSON writes `text` as it is: no control character, quote, backslash or surrogate. */
const jsonPlain = (text: string) => {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x20 || code === 0x22 || code === 0x5c || (code >= 0xd800 && code <= 0xdfff)) return false
  }
  return true
}
/** A JSON string: most texts here (addresses, ids, outcomes) need no escaping. */
const quote = (text: string) => (jsonPlain(text) ? `"${text}"` : JSON.stringify(text))
const jsonValue = (value: string | number) => (typeof value === "string" ? quote(value) : String(value))

/**
 * One line as `Logger.jsonLogger` writes an Info line with these annotations: the same keys in the
 * same order (`cause` is absent when there is none; no spans are open).
 */
const jsonLine = (entry: AccessEntry, timestamp: string, fiber: string): string => {
  const fields = annotations(entry)
  let object = ""
  for (const key in fields) {
    const value = fields[key]
    if (value !== undefined) object += `${object === "" ? "" : ","}"${key}":${jsonValue(value)}`
  }
  return `{"message":${quote(describe(entry))},"logLevel":"INFO","timestamp":"${timestamp}","annotations":{${object}},"spans":{},"fiberId":"${fiber}"}\n`
}

/**
 * The lines of a batch, each ending in a newline, in the shape the program's logger gives every
 * other line (see `LogOutput`). `fiber` is the writer's id, as a logger would show it.
 */
export const render = (output: Output, fiber: string): ((entries: ReadonlyArray<AccessEntry>) => string) => {
  const time = timestamps(output.format)
  return (entries) => {
    let text = ""
    for (const entry of entries) {
      text +=
        output.format === "json"
          ? jsonLine(entry, time(entry.at), fiber)
          : // Pretty: the message alone, which carries every figure (the annotations would repeat it).
            prettyLine(time(entry.at), "INFO", describe(entry), [], output.colors)
    }
    return text
  }
}

/**
 * Writes a batch in one write. When the stream asks to wait (a slow pipe), waits for it to drain
 * before the next batch: meanwhile lines gather in the bounded buffer, and past it are dropped.
 */
const writeBatch = (stream: NodeJS.WritableStream, text: string): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (!stream.writable || stream.write(text)) return resume(Effect.void)
    const drained = () => {
      stream.removeListener("drain", drained)
      stream.removeListener("close", drained)
      resume(Effect.void)
    }
    stream.on("drain", drained)
    stream.on("close", drained)
    return Effect.sync(() => {
      stream.removeListener("drain", drained)
      stream.removeListener("close", drained)
    })
  })

/**
 * An access log whose writer fiber lives as long as the scope. Its lines are written at Info level
 * whatever `--log-level` says: asking for an access log is asking for its lines.
 */
export const make = (capacity: number = defaultCapacity): Effect.Effect<AccessLog, never, Scope.Scope> =>
  Effect.gen(function* () {
    const output = yield* LogOutput
    let pending: Array<AccessEntry> = []
    let dropped = 0
    // Told once when the buffer stops being empty: the writer then takes everything gathered.
    const wake = yield* Queue.sliding<void>(1)
    // A broken stdout (EPIPE) is no reason to stop the balancer: console.log ignores it too.
    const ignore = () => undefined
    yield* Effect.acquireRelease(
      Effect.sync(() => output.stream.on("error", ignore)),
      () => Effect.sync(() => output.stream.removeListener("error", ignore))
    )
    // Lines name the writer fiber, as a logger's lines name the fiber that logged; set once it is forked.
    let lines = render(output, "#0")
    const flush = Effect.gen(function* () {
      yield* Queue.take(wake)
      // Lines come one per Locate; gathering them for a moment makes one write of many lines.
      yield* Effect.sleep(gatherFor)
      const batch = pending
      const lost = dropped
      pending = []
      dropped = 0
      yield* writeBatch(output.stream, lines(batch))
      if (lost > 0) yield* Effect.logWarning(`access log: ${lost} line(s) dropped (more than ${capacity} waiting)`)
    })
    const writer = yield* flush.pipe(Effect.forever, Logger.withMinimumLogLevel(LogLevel.Info), Effect.forkScoped)
    lines = render(output, FiberId.threadName(writer.id()))
    // What gathered since the writer last woke still goes out when the log closes.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (pending.length > 0 && output.stream.writable) output.stream.write(lines(pending.splice(0)))
      })
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
