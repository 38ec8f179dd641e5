/** The `effect-lb` command line: one root command, a subcommand per program. */
import { Command } from "@effect/cli"
import { balancerCommand } from "./balancer.js"
import { clientCommand } from "./client.js"
import { statusCommand, strategyCommand } from "./operator.js"
import { playgroundCommand } from "./playground.js"
import { serverCommand } from "./server.js"

export const root = Command.make("effect-lb").pipe(
  Command.withDescription("a TCP load balancer you can read, test and extend"),
  Command.withSubcommands([
    playgroundCommand,
    balancerCommand,
    serverCommand,
    clientCommand,
    statusCommand,
    strategyCommand
  ])
)

export const run = Command.run(root, { name: "effect-lb", version: "0.1.0" })
