/**
 * The flags that mean the same on every command, taken from anywhere on the line before
 * `@effect/cli` parses the rest: `--log-level`, `--log-format` and `--json`. Also puts a
 * subcommand's option given before the subcommand's name after it (`client --out DIR download X`).
 */
import { Either, LogLevel, Option } from "effect"
import { type LogFormat, logFormats, oneOf, type Rule } from "./options.js"

export interface Globals {
  readonly logLevel: Option.Option<LogLevel.LogLevel>
  readonly logFormat: LogFormat
  readonly json: boolean
}

/** A global flag with a bad value or none: the same one-line shape as every other option. */
export interface GlobalRefused {
  readonly option: string
  readonly message: string
}

const logLevelRule: Rule<LogLevel.LogLevel> = {
  ...oneOf(LogLevel.allLevels.map((level) => level._tag.toLowerCase())),
  placeholder: "LEVEL",
  decode: (text) => Option.fromNullable(LogLevel.allLevels.find((level) => level._tag.toLowerCase() === text))
}

export const globalRules = { "--log-level": logLevelRule, "--log-format": oneOf(logFormats, "FORMAT") } as const

/**
 * `--balancer`, which may be repeated: the parser of a repeated option reads only `--balancer VALUE`,
 * so `--balancer=VALUE` is given to it in that form.
 */
const repeatable = "--balancer"

/** Commands that take `--json`: it is put back right after their name, wherever it was given. */
const withJson = new Set(["client", "status", "strategy"])

/** Options of a subcommand that may be given before its name: `client --out DIR download X`. */
const subcommandOptions: Record<string, { readonly subcommand: string; readonly options: ReadonlyArray<string> }> = {
  client: { subcommand: "download", options: ["--out"] }
}

const valueOf = (args: ReadonlyArray<string>, i: number, name: string) => {
  const arg = args[i] ?? ""
  return arg.startsWith(`${name}=`) ? { value: arg.slice(name.length + 1), used: 1 } : { value: args[i + 1], used: 2 }
}

const refused = (option: string, says: string, got: string): GlobalRefused => ({
  option,
  message: `${option} must be ${says} (got ${got})`
})

/** A command's own options that may also be given after its subcommand: `client list --balancer H:P`. */
const parentOptions: Record<
  string,
  {
    readonly subcommands: ReadonlyArray<string>
    readonly options: ReadonlyArray<string>
    /** Options that take no value. */
    readonly switches: ReadonlyArray<string>
  }
> = {
  client: {
    subcommands: ["list", "download", "compute"],
    options: ["--balancer", "--read-timeout", "--ca"],
    switches: ["--tls"]
  }
}

/** Moves `client list --balancer H:P` to `client --balancer H:P list`, where the parser reads it (and its errors name it). */
const raiseParentOptions = (args: ReadonlyArray<string>): ReadonlyArray<string> => {
  const command = args[0]
  const parent = command === undefined ? undefined : parentOptions[command]
  const at = parent === undefined ? -1 : args.findIndex((arg) => parent.subcommands.includes(arg))
  if (parent === undefined || at < 0) return args
  const moved: Array<string> = []
  const kept: Array<string> = []
  for (let i = at; i < args.length; i++) {
    const arg = args[i] ?? ""
    if (parent.switches.includes(arg)) {
      moved.push(arg)
      continue
    }
    const name = parent.options.find((option) => arg === option || arg.startsWith(`${option}=`))
    if (name === undefined) {
      kept.push(arg)
      continue
    }
    const { value, used } = valueOf(args, i, name)
    if (value === undefined) {
      kept.push(arg) // no value: left where it is, for the parser to say so
      continue
    }
    moved.push(...args.slice(i, i + used))
    i += used - 1
  }
  return [...args.slice(0, at), ...moved, ...kept]
}

/** Moves `client --out DIR download X` to `client download X --out DIR` (only when `download` follows). */
const sinkSubcommandOptions = (args: ReadonlyArray<string>): ReadonlyArray<string> => {
  const command = args[0]
  const sink = command === undefined ? undefined : subcommandOptions[command]
  const at = sink === undefined ? -1 : args.indexOf(sink.subcommand)
  if (sink === undefined || at < 0) return args
  const moved: Array<string> = []
  const kept: Array<string> = []
  for (let i = 0; i < at; i++) {
    const arg = args[i] ?? ""
    const name = sink.options.find((option) => arg === option || arg.startsWith(`${option}=`))
    if (name === undefined) {
      kept.push(arg)
      continue
    }
    const { used } = valueOf(args, i, name)
    moved.push(...args.slice(i, i + used))
    i += used - 1
  }
  return [...kept, ...args.slice(at, at + 1), ...moved, ...args.slice(at + 1)]
}

/**
 * Takes the global flags out of `args` (the words after `effect-lb`), up to a `--`: what they
 * say, and the words left for the parser (`--json` put back after a command that takes it).
 */
export const splitGlobals = (
  args: ReadonlyArray<string>
): Either.Either<{ readonly globals: Globals; readonly args: ReadonlyArray<string> }, GlobalRefused> => {
  let logLevel: Option.Option<LogLevel.LogLevel> = Option.none()
  let logFormat: LogFormat = "pretty"
  let json = false
  const rest: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? ""
    if (arg === "--") {
      rest.push(...args.slice(i))
      break
    }
    if (arg === "--json") {
      json = true
      continue
    }
    if (arg === repeatable || arg.startsWith(`${repeatable}=`)) {
      const { value, used } = valueOf(args, i, repeatable)
      if (value === undefined)
        return Either.left({ option: repeatable, message: `${repeatable} needs a value: host:port` })
      // The parser drops an empty value of a repeated option; "," is refused, as "" would be, by its rule.
      rest.push(repeatable, value === "" ? "," : value)
      i += used - 1
      continue
    }
    const name = (Object.keys(globalRules) as Array<keyof typeof globalRules>).find(
      (option) => arg === option || arg.startsWith(`${option}=`)
    )
    if (name === undefined) {
      rest.push(arg)
      continue
    }
    const { value, used } = valueOf(args, i, name)
    const rule = globalRules[name]
    if (value === undefined) return Either.left({ option: name, message: `${name} needs a value: ${rule.says}` })
    const bad = Either.left(refused(name, rule.says, value === "" ? '""' : value))
    if (name === "--log-level") {
      logLevel = globalRules[name].decode(value)
      if (Option.isNone(logLevel)) return bad
    } else {
      const format = globalRules[name].decode(value)
      if (Option.isNone(format)) return bad
      logFormat = format.value
    }
    i += used - 1
  }
  const command = rest[0]
  const words =
    json && command !== undefined
      ? withJson.has(command)
        ? [command, "--json", ...rest.slice(1)]
        : [...rest, "--json"]
      : rest
  return Either.right({
    globals: { logLevel, logFormat, json },
    args: sinkSubcommandOptions(raiseParentOptions(words))
  })
}
