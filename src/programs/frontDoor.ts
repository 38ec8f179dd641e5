/**
 * The front door: runs the command line with our own voice. `@effect/cli` parses; we print its help
 * (plain text, wrapped to the terminal) and every mistake as one line, `effect-lb: …` (or one JSON
 * object with `--json`), and apply the global flags (`--log-level`, `--log-format`) wherever given.
 */
import { CliConfig, Command, HelpDoc, ValidationError } from "@effect/cli"
import type * as BuiltInOptions from "@effect/cli/BuiltInOptions"
import type * as CliApp from "@effect/cli/CliApp"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import { Cause, Console, Effect, Either, HashSet, Logger, Option } from "effect"
import { LogOutput, prettyLogger } from "../services/LogOutput.js"
import { type Globals, splitGlobals } from "./globals.js"
import { descriptionOf, errorLine, renderHelp } from "./help.js"

/** Help lists the command's own options; the global ones are listed once, by `renderHelp`. */
const helpConfig = CliConfig.make({ showBuiltIns: false })

/** A command, the order of its subcommands, and whether it runs without one (for the help). */
export interface HelpNode {
  readonly command: { readonly descriptor: Descriptor.Command<unknown> }
  readonly runsAlone: boolean
  readonly children: ReadonlyArray<HelpNode>
}

/** What a failed command line says: the shape of `{"error": …}` with `--json`. */
export interface Failure {
  readonly _tag: string
  readonly option?: string
  readonly argument?: string
  readonly message: string
}

const nameOf = (node: HelpNode) => HashSet.values(Descriptor.getNames(node.command.descriptor)).next().value ?? ""

/** The command a line names (`client download …` → client, download), as far as it names one. */
const pathOf = (tree: HelpNode, args: ReadonlyArray<string>) => {
  const path: Array<HelpNode> = [tree]
  for (const arg of args) {
    const node = path[path.length - 1]
    const next = node?.children.find((child) => nameOf(child) === arg)
    if (next !== undefined) path.push(next)
  }
  return path
}

/** The help for the command `args` name, every line at most `width` characters. */
export const helpFor = (tree: HelpNode, args: ReadonlyArray<string>, version: string, width: number): string => {
  const path = pathOf(tree, args)
  const node = path[path.length - 1] ?? tree
  return renderHelp({
    path: path.map(nameOf),
    doc: Descriptor.getHelp(node.command.descriptor, helpConfig),
    commands: node.children.map((child) => ({
      name: nameOf(child),
      description: descriptionOf(Descriptor.getHelp(child.command.descriptor, helpConfig))
    })),
    runsAlone: node.runsAlone,
    version,
    width
  })
}

/** Options of a command that take a value (`--port PORT`), from its help. */
const valueOptions = (node: HelpNode): ReadonlyArray<string> =>
  [...helpFor(node, [], "", 1000).matchAll(/^ {2}(--[a-z-]+) [A-Z]/gm)].map((match) => match[1] ?? "")

/** @effect/cli's parse errors, said as one line each, with the way to the help. */
const usageMessage = (tree: HelpNode, args: ReadonlyArray<string>, text: string): string => {
  const path = pathOf(tree, args)
  const node = path[path.length - 1] ?? tree
  const command = path.map(nameOf).join(" ")
  const see = `(see ${command} --help)`
  const unknown = /^Received unknown argument: '(.*)'$/.exec(text)?.[1]
  if (unknown !== undefined) {
    if (unknown === args[args.length - 1] && path.some((n) => valueOptions(n).includes(unknown)))
      return `${unknown} needs a value ${see}`
    return unknown.startsWith("-")
      ? `unknown option ${unknown} for ${command} ${see}`
      : `unexpected argument "${unknown}" ${see}`
  }
  if (/^Invalid subcommand/.test(text) || /^Missing command name/.test(text)) {
    const given = args.find((arg, i) => i >= path.length - 1 && !arg.startsWith("-"))
    const names = node.children.map(nameOf).join(", ")
    return given === undefined
      ? `${command} needs a command: ${names} ${see}`
      : `unknown command "${given}" for ${command}; commands: ${names} ${see}`
  }
  const missing = /^Missing argument <(.*)>$/.exec(text)?.[1]
  if (missing !== undefined) return `${missing} is missing ${see}`
  return `${text} ${see}`
}

/** A parse error as one Failure. */
const fromValidation = (
  tree: HelpNode,
  args: ReadonlyArray<string>,
  error: ValidationError.ValidationError
): Failure => {
  const { text, names } = ValidationError.isHelpRequested(error)
    ? { text: "help requested", names: undefined }
    : errorLine(error.error)
  if (names !== undefined && names.startsWith("--")) return { _tag: "InvalidOption", option: names, message: text }
  if (names !== undefined) return { _tag: "InvalidArgument", argument: names, message: text }
  return { _tag: "UsageError", message: usageMessage(tree, args, text) }
}

const fromError = (error: unknown): Failure => {
  const fields = typeof error === "object" && error !== null ? error : {}
  return {
    _tag: "_tag" in fields && typeof fields._tag === "string" ? fields._tag : "Error",
    ...("option" in fields && typeof fields.option === "string" ? { option: fields.option } : {}),
    message: error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error)
  }
}

/** Prints a failure: `effect-lb: MESSAGE`, or with `--json` `{"error":{…}}`, one line on stderr. */
export const printFailure = (failure: Failure, json: boolean) =>
  Console.error(json ? JSON.stringify({ error: failure }) : `effect-lb: ${failure.message}`)

/** The width help is wrapped to: COLUMNS when set, the terminal's when there is one, else 80. */
export const terminalWidth = (): number => {
  const columns = Number(process.env["COLUMNS"])
  if (Number.isInteger(columns) && columns > 0) return columns
  return process.stdout.isTTY === true && process.stdout.columns > 0 ? process.stdout.columns : 80
}

/** One line per event (colours only on a terminal, never with NO_COLOR) or `Logger.json`, at the level asked for. */
const logged = (globals: Globals) => {
  const colors = process.stdout.isTTY === true && (process.env["NO_COLOR"] ?? "") === ""
  const logger = globals.logFormat === "json" ? Logger.withConsoleLog(Logger.jsonLogger) : prettyLogger(colors)
  // Lines the program renders itself (the access log) take the same shape, to the same stdout.
  const output = { format: globals.logFormat, colors, stream: process.stdout }
  return <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
      Effect.provideService(LogOutput, output),
      (inner) =>
        Option.match(globals.logLevel, {
          onNone: () => inner,
          onSome: (level) => Logger.withMinimumLogLevel(inner, level)
        })
    )
}

/** Parses and runs `args` (the words after `effect-lb`); every failure printed as one line. */
export const runLine = <Name extends string, R, E, A>(
  root: Command.Command<Name, R, E, A>,
  tree: HelpNode,
  version: string,
  argv: ReadonlyArray<string>
): Effect.Effect<void, unknown, R | CliApp.CliApp.Environment> =>
  Either.match(splitGlobals(argv), {
    onLeft: (refused) =>
      Effect.zipRight(
        printFailure(
          { _tag: "InvalidOption", option: refused.option, message: refused.message },
          argv.includes("--json")
        ),
        Effect.fail(refused)
      ),
    onRight: ({ globals, args }) => {
      const help = Console.log(helpFor(tree, args, version, terminalWidth()))
      const builtIn = (option: BuiltInOptions.BuiltInOptions) =>
        option._tag === "ShowHelp"
          ? help
          : option._tag === "ShowVersion"
            ? Console.log(version)
            : Command.run(root, { name: "effect-lb", version })(["node", "effect-lb", ...args])
      return Descriptor.parse(root.descriptor, ["effect-lb", ...args], CliConfig.defaultConfig).pipe(
        Effect.flatMap((directive) => {
          if (directive._tag === "BuiltIn") return builtIn(directive.option)
          const [extra] = directive.leftover
          if (extra !== undefined)
            return Effect.fail(ValidationError.invalidValue(HelpDoc.p(`Received unknown argument: '${extra}'`)))
          return root.transform(root.handler(directive.value), directive.value)
        }),
        Effect.catchIf(
          (error): error is ValidationError.ValidationError =>
            ValidationError.isValidationError(error) && ValidationError.isHelpRequested(error),
          () => help
        ),
        Effect.tapErrorCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.void
            : Effect.forEach(
                [...Cause.failures(cause), ...Cause.defects(cause)],
                (error) =>
                  printFailure(
                    ValidationError.isValidationError(error) ? fromValidation(tree, args, error) : fromError(error),
                    globals.json
                  ),
                { discard: true }
              )
        ),
        logged(globals)
      )
    }
  })
