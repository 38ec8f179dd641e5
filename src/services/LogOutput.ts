/**
 * How this process writes the log lines it renders itself, as the front door chose them: the
 * format (`--log-format`), colours, and the stream. The access log writes its lines this way, in
 * batches, rather than one by one through Effect's logger (which costs tens of µs a line); the
 * lines have the shape the logger the front door installed gives every other line.
 *
 * Without the front door (tests, embedding), lines are pretty, without colours, on stdout.
 */
import { Context } from "effect"

export interface Output {
  /** `pretty`: as `Logger.prettyLogger`; `json`: one object per line, as `Logger.jsonLogger`. */
  readonly format: "pretty" | "json"
  /** Pretty lines only: ANSI colours, as the pretty logger uses them on a terminal. */
  readonly colors: boolean
  readonly stream: NodeJS.WritableStream
}

export class LogOutput extends Context.Reference<LogOutput>()("effect-lb/LogOutput", {
  defaultValue: (): Output => ({ format: "pretty", colors: false, stream: process.stdout })
}) {}
