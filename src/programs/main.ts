/** Entry point: runs the command line, turning any failure into one line on stderr and exit code 1. */
import { ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect } from "effect"
import { run } from "./cli.js"

const oneLine = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error)

run(process.argv).pipe(
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.forEach(Cause.failures(cause), (error) =>
          // @effect/cli prints its own validation errors; ours get one readable line.
          ValidationError.isValidationError(error) ? Effect.void : Console.error(`effect-lb: ${oneLine(error)}`)
        )
  ),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
