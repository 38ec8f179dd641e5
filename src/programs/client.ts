/**
 * `effect-lb client`: one request from the command line (`list`, `download NAME`, `compute SECONDS`),
 * or, with none, the interactive menu. Either way it finds a server through the balancer and
 * re-routes by itself when one fails.
 */
import { Command, Options } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Clock, Console, type Duration, Effect, Layer, Option } from "effect"
import { formatEndpoint } from "../domain/Server.js"
import * as Client from "../services/client/Client.js"
import { systemTrust } from "../services/wire/Tls.js"
import * as Wire from "../services/wire/Wire.js"
import { interactive } from "./interactive.js"
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
import { formatBytes, ProgressMeter } from "./progress.js"
import { trustFrom, trustOptions } from "./tlsOptions.js"

const out = withDefault("out", folderRule, ".", "folder to save downloads in", "the current folder")

const force = Options.boolean("force").pipe(
  Options.withDescription(
    "replace a file of the same name in the folder (without it, the download is refused) [default: off]"
  )
)

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

const root = Command.make("client", { balancer, json, readTimeout, ...trustOptions }, (flags) =>
  Effect.gen(function* () {
    if (process.stdin.isTTY !== true) {
      return yield* Effect.fail(
        new Error(
          "the interactive client needs a terminal; give it a request instead: effect-lb client list | download NAME | compute SECONDS"
        )
      )
    }
    const tls = yield* trustFrom(flags.tls, flags.ca)
    yield* interactive({ balancer: flags.balancer, out: ".", tls })
  }).pipe(Effect.provide(clientLayer(flags)))
)

/**
 * The client over TCP. `--tls`/`--ca` make its talk with the balancer TLS; a server the balancer
 * says speaks TLS is spoken to in TLS, its certificate checked against `--ca` (else the system's CAs).
 */
const clientLayer = (flags: {
  readonly balancer: ReadonlyArray<Wire.Address>
  readonly readTimeout: Duration.Duration
  readonly tls: boolean
  readonly ca: Option.Option<string>
}) =>
  Layer.unwrapEffect(
    Effect.map(trustFrom(flags.tls, flags.ca), (trust) =>
      Client.layer({
        ...Client.defaults,
        balancer: flags.balancer,
        readTimeout: flags.readTimeout,
        balancerTls: trust,
        trust: trust ?? systemTrust
      })
    )
  ).pipe(Layer.provideMerge(Wire.layer), Layer.provide(NodeContext.layer))

/**
 * Runs one request. Re-routes and a download's progress go to stderr, so stdout holds only the
 * answer: a bar on a terminal, plain lines elsewhere (none with `--json`, whose errors are JSON there).
 */
const once = <A>(
  request: (
    client: Client.Client["Type"],
    onEvent: (event: Client.ClientEvent) => Effect.Effect<void>
  ) => Effect.Effect<A, Client.ClientError>,
  print: (answer: A, asJson: boolean) => string,
  transfer = ""
) =>
  Effect.flatMap(root, (flags) =>
    Effect.gen(function* () {
      const client = yield* Client.Client
      const tty = process.stderr.isTTY === true
      const meter = tty || !flags.json ? new ProgressMeter(transfer, tty, process.stderr.columns ?? 80) : undefined
      const toStderr = (text: string) => Effect.sync(() => process.stderr.write(text))
      const answer = yield* request(client, (event) => {
        switch (event._tag) {
          case "Rerouted":
            return Effect.zipRight(
              toStderr(meter?.interrupt() ?? ""),
              Console.error(`effect-lb: ${event.server} failed (${event.reason}); trying another server`)
            )
          case "Progress":
            if (meter === undefined) return Effect.void
            return Effect.flatMap(Clock.currentTimeMillis, (now) => {
              const text = meter.update(event.received, event.total, now)
              return text === undefined ? Effect.void : toStderr(text)
            })
          case "Located":
            return Effect.void
        }
      }).pipe(Effect.onError(() => toStderr(meter?.interrupt() ?? "")))
      yield* Console.log(print(answer, flags.json))
    }).pipe(Effect.provide(clientLayer(flags)))
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
        ? asJson(served, { files: served.value, sizes: served.sizes })
        : [
            ...Object.entries(served.value).map(([name, type]) => {
              const size = served.sizes[name]
              return `${name}\t${type || "-"}\t${size === undefined ? "-" : formatBytes(size)}`
            }),
            `(${Object.keys(served.value).length} files, from ${where(served)})`
          ].join("\n")
  )
).pipe(Command.withDescription("list the files a server offers"))

const download = Command.make(
  "download",
  { name: ruledArg("NAME", fileNameRule, "the file to download, as the list shows it"), out, force },
  ({ name, out, force }) =>
    once(
      (client, onEvent) => client.download(name, out, onEvent, { overwrite: force }),
      (served, json) =>
        json
          ? asJson(served, { path: served.value.path, size: served.value.size })
          : `saved ${served.value.path} (${formatBytes(served.value.size)}) from ${where(served)}`,
      name
    )
).pipe(
  Command.withDescription(
    "download a file (saved whole, or not at all); a file of that name already in the folder is kept unless --force"
  )
)

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
