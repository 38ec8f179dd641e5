/** `effect-lb server`: a backend server serving a folder, computing, and answering probes. */
import { Command, Options } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Console, Context, Effect, Layer, Option, Schema } from "effect"
import { ServerId, Weight } from "../domain/Server.js"
import * as FileServer from "../services/server/FileServer.js"
import * as FileStore from "../services/server/FileStore.js"
import * as Wire from "../services/wire/Wire.js"
import { ignoringHangup } from "./hangup.js"
import * as BalancerLink from "../services/server/BalancerLink.js"
import { balancerAddress, checkedToken, duration, host, port, positiveInt, sampleFolder, token } from "./options.js"

const options = {
  port: port(FileServer.defaults.port, "port to serve on (0 picks a free port)"),
  host,
  id: Options.text("id").pipe(
    Options.withSchema(ServerId),
    Options.optional,
    Options.withDescription("name of this server (default: s<port>)")
  ),
  weight: positiveInt("weight", 1, 1000, "share of traffic relative to other servers (1..1000)"),
  files: Options.directory("files", { exists: "yes" }).pipe(
    Options.optional,
    Options.withDescription("folder to serve (default: the sample folder shipped with effect-lb)")
  ),
  maxCompute: Options.integer("max-compute").pipe(
    Options.withSchema(Schema.Int.pipe(Schema.between(0, 86_400))),
    Options.withDefault(FileServer.defaults.maxCompute),
    Options.withDescription("longest Compute accepted, in seconds")
  ),
  computeScale: Options.float("compute-scale").pipe(
    Options.withSchema(Schema.Number.pipe(Schema.between(0.001, 1000))),
    Options.withDefault(1),
    Options.withDescription("how long a second of Compute really takes (0.01: 10 ms; for benchmarks and demos)")
  ),
  computeSlots: Options.integer("compute-slots").pipe(
    Options.withSchema(Schema.Int.pipe(Schema.between(1, 100_000))),
    Options.optional,
    Options.withDescription("computations that run at once, like a machine's cores; the rest queue (default: no limit)")
  ),
  maxConnections: positiveInt(
    "max-connections",
    FileServer.defaults.maxConnections,
    1_000_000,
    "connections past this many are answered Busy"
  ),
  idleTimeout: duration("idle-timeout", FileServer.defaults.idleTimeout, "close a connection idle this long"),
  drainTimeout: duration(
    "drain-timeout",
    FileServer.defaults.drainTimeout,
    "on SIGINT/SIGTERM, wait this long for requests in flight"
  ),
  balancer: balancerAddress.pipe(
    Options.optional,
    Options.withDescription("register with the balancer at host:port and report load to it")
  ),
  token,
  advertiseHost: Options.text("advertise-host").pipe(
    Options.optional,
    Options.withDescription(
      "host the balancer hands to clients (default: --host; listening on 0.0.0.0 or ::, the address this server reaches the balancer from)"
    )
  )
}

export const serverCommand = Command.make("server", options, (flags) =>
  Effect.gen(function* () {
    const token = yield* checkedToken(flags.token)
    const folder = yield* Option.match(Option.orElse(flags.files, sampleFolder), {
      onNone: () =>
        Effect.fail(
          new FileStore.FolderUnavailable({ folder: "samples", reason: "the sample folder is missing; pass --files" })
        ),
      onSome: Effect.succeed
    })
    const config: FileServer.FileServerConfig = {
      ...Option.match(flags.id, { onNone: () => ({}), onSome: (id) => ({ id }) }),
      host: flags.host,
      port: flags.port,
      maxCompute: flags.maxCompute,
      computeScale: flags.computeScale,
      ...Option.match(flags.computeSlots, { onNone: () => ({}), onSome: (computeSlots) => ({ computeSlots }) }),
      idleTimeout: flags.idleTimeout,
      maxConnections: flags.maxConnections,
      drainTimeout: flags.drainTimeout,
      maxLine: FileServer.defaults.maxLine
    }
    const announce = Layer.effectDiscard(
      Effect.gen(function* () {
        const server = yield* FileServer.FileServer
        const store = yield* FileStore.FileStore
        yield* Console.log(
          `effect-lb server ${server.id} listening on ${server.address.host}:${server.address.port}, serving ${store.folder}`
        )
      })
    )
    const link = Option.match(flags.balancer, {
      onNone: () => Layer.empty,
      onSome: (address) =>
        BalancerLink.layer({
          balancer: address,
          token: Option.getOrUndefined(token),
          weight: Weight.make(flags.weight),
          advertiseHost: Option.getOrUndefined(flags.advertiseHost)
        })
    })
    // Serves until stopped; a server the balancer refuses to register stops (drained) and exits 1
    // rather than serve forever outside the rotation.
    yield* Layer.build(
      Layer.merge(announce, link).pipe(
        Layer.provideMerge(FileServer.layer(config)),
        Layer.provide(Wire.layer),
        Layer.provideMerge(FileStore.layer(folder)),
        Layer.provide(NodeContext.layer)
      )
    ).pipe(
      Effect.flatMap((context) =>
        Option.match(Context.getOption(context, BalancerLink.BalancerLink), {
          onNone: () => Effect.never,
          onSome: (linked) => linked.refused
        })
      ),
      Effect.scoped,
      ignoringHangup
    )
  })
).pipe(Command.withDescription("run a backend server: file list, downloads, computations, health probes"))
