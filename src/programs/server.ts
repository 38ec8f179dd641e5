/** `effect-lb server`: a backend server serving a folder, computing, and answering probes. */
import { Command, Options } from "@effect/cli"
import { Console, Context, Effect, Layer, Option } from "effect"
import { ServerId, Weight } from "../domain/Server.js"
import * as FileServer from "../services/server/FileServer.js"
import * as FileStore from "../services/server/FileStore.js"
import * as Wire from "../services/wire/Wire.js"
import { ignoringHangup, reloadingCertificatesOnHangup } from "./hangup.js"
import { makeListenerTls } from "../services/wire/Tls.js"
import { certificateOptions, identityFrom, trustFrom, trustOptions } from "./tlsOptions.js"
import { hintBusyPort } from "./listen.js"
import * as BalancerLink from "../services/server/BalancerLink.js"
import {
  balancerList,
  balancerListSays,
  checkedToken,
  decimal,
  duration,
  folderRule,
  fromSchema,
  host,
  hostRule,
  integer,
  maxComputeLimit,
  optional,
  port,
  positiveInt,
  sampleFolder,
  token,
  withDefault
} from "./options.js"

const options = {
  port: port(FileServer.defaults.port, "port to serve on (0 picks a free port)"),
  host,
  id: optional(
    "id",
    fromSchema(ServerId, "1 to 128 letters, digits and . _ : - [ ]", "ID"),
    "name of this server",
    "s<port>"
  ),
  weight: positiveInt("weight", 1, 1000, "share of traffic relative to other servers"),
  files: optional("files", folderRule, "folder to serve", "the sample folder shipped with effect-lb"),
  maxCompute: withDefault(
    "max-compute",
    integer(0, maxComputeLimit, "SECONDS"),
    FileServer.defaults.maxCompute,
    "longest Compute accepted, in seconds (0: none longer than 0)"
  ),
  computeScale: withDefault(
    "compute-scale",
    decimal(0.001, 1000),
    1,
    "how long a second of Compute really takes (0.01: 10 ms; for benchmarks and demos)"
  ),
  computeSlots: optional(
    "compute-slots",
    integer(1, 100_000),
    "computations that run at once, like a machine's cores; the rest queue",
    "no limit"
  ),
  maxConnections: positiveInt(
    "max-connections",
    FileServer.defaults.maxConnections,
    1_000_000,
    "connections past this many are answered Busy"
  ),
  idleTimeout: duration(
    "idle-timeout",
    FileServer.defaults.idleTimeout,
    "close a connection idle this long",
    "100 millis"
  ),
  drainTimeout: duration(
    "drain-timeout",
    FileServer.defaults.drainTimeout,
    "on SIGINT/SIGTERM, wait this long for requests in flight (0: stop at once)",
    0,
    "1 hour"
  ),
  balancer: balancerList.pipe(
    Options.withDescription(
      `register with the balancer at host:port and report load to it; given several, with the first that takes it, moving to the next when the link is lost [default: not registered; ${balancerListSays}]`
    )
  ),
  token,
  advertiseHost: optional(
    "advertise-host",
    hostRule,
    "host the balancer hands to clients",
    "--host; listening on 0.0.0.0 or ::, the address this server reaches the balancer from"
  ),
  ...certificateOptions("its port (it registers saying so: clients and probes then speak TLS to it)"),
  ...trustOptions
}

export const serverCommand = Command.make("server", options, (flags) =>
  Effect.gen(function* () {
    const token = yield* checkedToken(flags.token)
    const identity = yield* identityFrom(flags.tlsCert, flags.tlsKey)
    const tls = Option.isSome(identity) ? yield* makeListenerTls("server", identity.value) : undefined
    const balancerTls = yield* trustFrom(flags.tls, flags.ca)
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
      maxLine: FileServer.defaults.maxLine,
      tls
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
    const link = Option.match(
      Option.liftPredicate(flags.balancer, (list) => list.length > 0),
      {
        onNone: () => Layer.empty,
        onSome: (addresses) =>
          BalancerLink.layer({
            balancer: addresses,
            token: Option.getOrUndefined(token),
            weight: Weight.make(flags.weight),
            advertiseHost: Option.getOrUndefined(flags.advertiseHost),
            tls: balancerTls
          })
      }
    )
    // Serves until stopped; a server the balancer refuses to register stops (drained) and exits 1
    // rather than serve forever outside the rotation.
    yield* Layer.build(
      Layer.merge(announce, link).pipe(
        Layer.provideMerge(FileServer.layer(config)),
        Layer.provide(Wire.layer),
        Layer.provideMerge(FileStore.layer(folder))
      )
    ).pipe(
      Effect.flatMap((context) =>
        Option.match(Context.getOption(context, BalancerLink.BalancerLink), {
          onNone: () => Effect.never,
          onSome: (linked) => linked.refused
        })
      ),
      Effect.scoped,
      hintBusyPort([{ flag: "--port", port: flags.port, fallback: FileServer.defaults.port }]),
      // With a certificate, SIGHUP reads it again (a renewed certificate, no connection dropped).
      (effect) =>
        Option.isSome(identity) && tls !== undefined
          ? reloadingCertificatesOnHangup([tls], identity.value)(effect)
          : ignoringHangup(effect)
    )
  })
).pipe(Command.withDescription("run a backend server: file list, downloads, computations, health probes"))
