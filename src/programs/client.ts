/**
 * `effect-lb client`: one request from the command line (`list`, `download NAME`, `compute SECONDS`),
 * or, with none, the interactive menu. Either way it finds a server through the balancer and
 * re-routes by itself when one fails.
 */
import { Command } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Console, type Duration, Effect, Layer, Option } from "effect"
import { formatEndpoint } from "../domain/Server.js"
import * as Client from "../services/client/Client.js"
import * as Wire from "../services/wire/Wire.js"
import { interactive, megabytes, output } from "./interactive.js"
import {
  balancer,
  computeSecondsRule,
  duration,
  folderRule,
  json,
  type Rule,
  ruledArg,
  withDefault
} from "./options.js"
import * as Terminal from "@effect/platform/Terminal"

const out = withDefault("out", folderRule, ".", "folder to save downloads in", "the current folder")

const readTimeout = duration(
  "read-timeout",
  Client.defaults.readTimeout,
  "a download that receives nothing for this long has failed on its server: the client goes on to another",
  "100 millis",
  "1 hour"
)

/** A name a folder can hold, checked before anything is sent. */
const fileNameRule: Rule<string> = {
  says: "a plain file name (not empty, . or .., no / or \\)",
  placeholder: "NAME",
  decode: (name) =>
    name.length === 0 || name === "." || name === ".." || /[/\\\0]/.test(name) ? Option.none() : Option.some(name)
}

const root = Command.make("client", { balancer, json, readTimeout }, ({ balancer, readTimeout }) =>
  Effect.gen(function* () {
    if (process.stdin.isTTY !== true) {
      return yield* Effect.fail(
        new Error(
          "the interactive client needs a terminal; give it a request instead: effect-lb client list | download NAME | compute SECONDS"
        )
      )
    }
    yield* interactive({ balancer, out: "." })
  }).pipe(Effect.provide(clientLayer(balancer, readTimeout)))
)

const clientLayer = (address: Wire.Address, readTimeout: Duration.Duration) =>
  Client.layer({ ...Client.defaults, balancer: address, readTimeout }).pipe(
    Layer.provideMerge(Wire.layer),
    Layer.provide(NodeContext.layer)
  )

/** Runs one request; re-routes are told on stderr so stdout holds only the answer. */
const once = <A>(
  request: (
    client: Client.Client["Type"],
    onEvent: (event: Client.ClientEvent) => Effect.Effect<void>
  ) => Effect.Effect<A, Client.ClientError>,
  print: (answer: A, asJson: boolean) => string
) =>
  Effect.flatMap(root, ({ balancer, json, readTimeout }) =>
    Effect.gen(function* () {
      const client = yield* Client.Client
      const { progress } = yield* output(yield* Terminal.Terminal)
      const showProgress = yield* progress
      const answer = yield* request(client, (event) =>
        event._tag === "Rerouted"
          ? Console.error(`effect-lb: ${event.server} failed (${event.reason}); trying another server`)
          : event._tag === "Progress" && !json && process.stdout.isTTY === true
            ? showProgress(event)
            : Effect.void
      )
      yield* Console.log(print(answer, json))
    }).pipe(Effect.provide(clientLayer(balancer, readTimeout)))
  )

const where = (served: Client.Served<unknown>) =>
  `${served.server.id} (${formatEndpoint(served.server)})${served.attempts > 1 ? ` after ${served.attempts} attempts` : ""}`

const asJson = (served: Client.Served<unknown>, fields: Record<string, unknown>) =>
  JSON.stringify({ ...fields, server: served.server, attempts: served.attempts })

const list = Command.make("list", {}, () =>
  once(
    (client, onEvent) => client.list(onEvent),
    (served, json) =>
      json
        ? asJson(served, { files: served.value })
        : [
            ...Object.entries(served.value).map(([name, type]) => `${name}\t${type || "-"}`),
            `(${Object.keys(served.value).length} files, from ${where(served)})`
          ].join("\n")
  )
).pipe(Command.withDescription("list the files a server offers"))

const download = Command.make(
  "download",
  { name: ruledArg("NAME", fileNameRule, "the file to download, as the list shows it"), out },
  ({ name, out }) =>
    once(
      (client, onEvent) => client.download(name, out, onEvent),
      (served, json) =>
        json
          ? asJson(served, { path: served.value.path, size: served.value.size })
          : `saved ${served.value.path} (${megabytes(served.value.size)}) from ${where(served)}`
    )
).pipe(Command.withDescription("download a file (saved whole, or not at all)"))

const compute = Command.make(
  "compute",
  { seconds: ruledArg("SECONDS", computeSecondsRule, "how long the server computes") },
  ({ seconds }) =>
    once(
      (client, onEvent) => client.compute(seconds, onEvent),
      (served, json) =>
        json ? asJson(served, { seconds: served.value }) : `computed ${served.value} s on ${where(served)}`
    )
).pipe(Command.withDescription("have a server compute (sleep) for SECONDS"))

export const clientRequests = [list, download, compute] as const

export const clientCommand = root.pipe(
  Command.withDescription("ask the balancer for a server and make a request; with no request, an interactive menu"),
  Command.withSubcommands(clientRequests)
)
