/**
 * The `effect-lb` command line: one root command, a subcommand per program. A program's module (and
 * the services it stands on) is loaded only when the line names its command, so a one-shot command
 * starts without evaluating the rest (docs/DESIGN.md, "How the command line is built").
 */
import { Command } from "@effect/cli"
import { Effect } from "effect"
import { type HelpNode, runLine } from "./frontDoor.js"
import { holdHangups } from "./hangup.js"
import { version } from "./version.js"

/** The version, kept in one place (the admin API reports it too). */
export { version }

const alone = <C extends HelpNode["command"]>(command: C) => ({
  command,
  node: { command, runsAlone: false, children: [] }
})

/** The programs in the order the help lists them; `client` also runs alone (its interactive menu). */
const programs = {
  playground: () => import("./playground.js").then((module) => alone(module.playgroundCommand)),
  balancer: () => import("./balancer.js").then((module) => alone(module.balancerCommand)),
  server: () => import("./server.js").then((module) => alone(module.serverCommand)),
  client: () =>
    import("./client.js").then(({ clientCommand, clientRequests }) => ({
      command: clientCommand,
      node: {
        command: clientCommand,
        runsAlone: true,
        children: clientRequests.map((request) => ({ command: request, runsAlone: true, children: [] }))
      }
    })),
  status: () => import("./operator.js").then((module) => alone(module.statusCommand)),
  strategy: () => import("./operator.js").then((module) => alone(module.strategyCommand)),
  "check-config": () => import("./checkConfig.js").then((module) => alone(module.checkConfigCommand))
}

type Program = keyof typeof programs
type Loaded = Awaited<ReturnType<(typeof programs)[Program]>>

const everyProgram = Object.keys(programs) as ReadonlyArray<Program>

const isProgram = (word: string | undefined): word is Program => word !== undefined && word in programs

/**
 * The programs a command line (the words after `effect-lb`) may run: the one its first word that is
 * not a flag names; all of them when that word names none (help, a typo, a global flag's value, no
 * arguments); none for a bare `--version`.
 */
export const named = (args: ReadonlyArray<string>): ReadonlyArray<Program> => {
  const first = args.find((arg) => !arg.startsWith("-"))
  if (isProgram(first)) return [first]
  return args.length === 1 && args[0] === "--version" ? [] : everyProgram
}

const root = Command.make("effect-lb").pipe(
  Command.withDescription("a TCP load balancer you can read, test and extend")
)

const withPrograms = ([head, ...tail]: readonly [Loaded, ...Array<Loaded>]) => {
  const command = root.pipe(Command.withSubcommands([head.command, ...tail.map((program) => program.command)]))
  const helpTree: HelpNode = { command, runsAlone: false, children: [head, ...tail].map((program) => program.node) }
  return { root: command, helpTree }
}

/** The whole command line, every program loaded (what the help shows). */
export const everything = () =>
  Promise.all([
    programs.playground(),
    programs.balancer(),
    programs.server(),
    programs.client(),
    programs.status(),
    programs.strategy(),
    programs["check-config"]()
  ]).then(([head, ...tail]) => withPrograms([head, ...tail]))

/** The long-running programs: a SIGHUP reaching one while it starts is held, never its end (hangup.ts). */
const daemons: ReadonlyArray<Program> = ["balancer", "server"]

/** Parses and runs `args` (the words after `effect-lb`), with the programs they may run loaded. */
export const run = (args: ReadonlyArray<string>) =>
  Effect.promise(() => {
    const toRun = named(args)
    if (toRun.length === 1 && toRun.some((program) => daemons.includes(program))) holdHangups()
    return Promise.all(toRun.map((program) => programs[program]()))
  }).pipe(
    Effect.flatMap(([head, ...tail]) => {
      if (head === undefined) return runLine(root, { command: root, runsAlone: false, children: [] }, version, args)
      const line = withPrograms([head, ...tail])
      return runLine(line.root, line.helpTree, version, args)
    })
  )
