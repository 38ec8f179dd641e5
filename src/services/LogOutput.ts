/**
 * How this process writes its log lines, as the front door chose them: the format (`--log-format`),
 * colours, and the stream; and the `pretty` format itself.
 *
 * `pretty` is one line per event, for a person reading a terminal or a file:
 * `[14:03:07.123] WARN proxy: backend s1 at 127.0.0.1:4001 failed to connect: ECONNREFUSED server=s1`
 * — time, level, message, then the annotations as `key=value`. Effect's own `Logger.prettyLogger`
 * names the fiber on every line (an internal id no operator can use) and puts each annotation on a
 * line of its own; `Logger.logfmtLogger` names the fiber too. `json` is Effect's `Logger.jsonLogger`.
 *
 * The access log writes its lines this way, in batches, rather than one by one through Effect's
 * logger (which costs tens of µs a line). Without the front door (tests, embedding), lines are
 * pretty, without colours, on stdout.
 */
import { Cause, Context, HashMap, Logger, type LogLevel } from "effect"
import * as Util from "node:util"

export interface Output {
  /** `pretty`: one line as `prettyLine` makes it; `json`: one object per line, as `Logger.jsonLogger`. */
  readonly format: "pretty" | "json"
  /** Pretty lines only: ANSI colours (on a terminal, without NO_COLOR). */
  readonly colors: boolean
  readonly stream: NodeJS.WritableStream
}

export class LogOutput extends Context.Reference<LogOutput>()("effect-lb/LogOutput", {
  defaultValue: (): Output => ({ format: "pretty", colors: false, stream: process.stdout })
}) {}

const levelColors: Record<LogLevel.LogLevel["label"], string> = {
  ALL: "37",
  TRACE: "90",
  DEBUG: "34",
  INFO: "32",
  WARN: "33",
  ERROR: "31",
  FATAL: "41;37",
  OFF: "37"
}

const paint = (text: string, code: string) => `\x1b[${code}m${text}\x1b[0m`

/** A value as `key=value` shows it: bare when it has no space, quote or `=`, else JSON-quoted. */
const shown = (value: unknown): string => {
  const text = typeof value === "string" ? value : typeof value === "number" ? String(value) : Util.inspect(value)
  return text !== "" && !/[\s"=\\]/.test(text) ? text : JSON.stringify(text)
}

const pad = (n: number, width: number) => n.toString().padStart(width, "0")

/** `HH:MM:SS.mmm`, local time. */
export const clockFace = (date: Date): string =>
  `${pad(date.getHours(), 2)}:${pad(date.getMinutes(), 2)}:${pad(date.getSeconds(), 2)}.${pad(date.getMilliseconds(), 3)}`

/** One pretty line, newline included: `[time] LEVEL message key=value …`. */
export const prettyLine = (
  time: string,
  level: LogLevel.LogLevel["label"],
  message: string,
  fields: Iterable<readonly [string, unknown]>,
  colors: boolean
): string => {
  let text = colors
    ? `${paint(`[${time}]`, "2")} ${paint(level, levelColors[level])} ${message}`
    : `[${time}] ${level} ${message}`
  for (const [key, value] of fields) text += ` ${colors ? paint(`${key}=`, "2") : `${key}=`}${shown(value)}`
  return `${text}\n`
}

const messageText = (message: unknown): string =>
  Array.isArray(message)
    ? message.map(messageText).join(" ")
    : typeof message === "string"
      ? message
      : message instanceof Error
        ? message.message
        : Util.inspect(message, { breakLength: Infinity })

/** A typed failure in a few words (its message); a defect, or an interruption, with its whole story. */
const causeText = (cause: Cause.Cause<unknown>): string | undefined => {
  if (Cause.isEmpty(cause)) return undefined
  if (!Cause.isFailType(cause)) return Cause.pretty(cause, { renderErrorCause: true })
  const error = cause.error
  return error instanceof Error ? error.message : messageText(error)
}

/** The `pretty` logger: one line per event; a failure's cause as `cause=…`, a defect's trace on indented lines. */
export const prettyLogger = (colors: boolean, stream: NodeJS.WritableStream = process.stdout) =>
  Logger.make(({ annotations, cause, date, logLevel, message }) => {
    const fields: Array<readonly [string, unknown]> = HashMap.toEntries(annotations)
    const why = causeText(cause)
    const multiline = why !== undefined && why.includes("\n")
    if (why !== undefined && !multiline) fields.push(["cause", why])
    let text = prettyLine(clockFace(date), logLevel.label, messageText(message), fields, colors)
    if (multiline) text += `${why.replace(/^/gm, "  ")}\n`
    stream.write(text)
  })
