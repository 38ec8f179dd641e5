/** The `effect-lb` command line: one root command, a subcommand per program. */
import { Command } from "@effect/cli"
import { balancerCommand } from "./balancer.js"
import { clientCommand, clientRequests } from "./client.js"
import { statusCommand, strategyCommand } from "./operator.js"
import { playgroundCommand } from "./playground.js"
import { serverCommand } from "./server.js"
import { version } from "./version.js"

/** The version, kept in one place (the admin API reports it too). */
export { version }

const commands = [
  playgroundCommand,
  balancerCommand,
  serverCommand,
  clientCommand,
  statusCommand,
  strategyCommand
] as const

export const root = Command.make("effect-lb").pipe(
  Command.withDescription("a TCP load balancer you can read, test and extend"),
  Command.withSubcommands(commands)
)

/** The commands in the order the help lists them; `client` also runs alone (its interactive menu). */
export const helpTree = {
  command: root,
  runsAlone: false,
  children: commands.map((command) => ({
    command,
    runsAlone: command === clientCommand,
    children:
      command === clientCommand
        ? clientRequests.map((request) => ({ command: request, runsAlone: true, children: [] }))
        : []
  }))
}

export const run = Command.run(root, { name: "effect-lb", version })
