/** Entry point: runs the command line, turning any failure into one line on stderr and exit code 1. */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import { helpTree, root, version } from "./cli.js"
import { runLine } from "./frontDoor.js"

runLine(root, helpTree, version, process.argv.slice(2)).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
