/**
 * The client: asks the balancer for a server, makes the request there, and — on any failure of that
 * server (refused, reset, timed out, gone mid-transfer or mid-computation, `Busy`) — goes back to
 * the balancer by itself with the failed server excluded, backing off between attempts, until a
 * server answers or the attempts run out. Typed errors decide what is retried: a server's failure
 * is, a refusal of the request itself (`FileNotFound`, `InvalidRequest`) is not.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Context, Duration, Effect, Layer, Option, Random, Schedule, Stream } from "effect"
import * as Crypto from "node:crypto"
import { FileNotFound, InvalidRequest, NoServerAvailable } from "../../domain/Errors.js"
import {
  Compute,
  Download,
  ListFiles,
  Locate,
  ServerReply,
  type ServerReply as ServerReplyType,
  ServerRequest,
  type ServerRequest as ServerRequestType
} from "../../domain/Protocol.js"
import { type Endpoint, formatEndpoint, type ServerLocation } from "../../domain/Server.js"
import { addresses, ask, firstAnswering, type NotABalancer, unreachable } from "./BalancerClient.js"
import type { Connection, ConnectionClosed, LineTooLong } from "../wire/Connection.js"
import { type Address, describeConnectReason, Wire } from "../wire/Wire.js"
import { systemTrust, type Trust } from "../wire/Tls.js"
import { BalancerUnavailable, FileExists, GaveUp, type NoBalancerAnswered, SaveFailed, ServerFailed } from "./Errors.js"

export { BalancerUnavailable, FileExists, GaveUp, NoBalancerAnswered, SaveFailed, ServerFailed } from "./Errors.js"

export type ClientError =
  | FileNotFound
  | InvalidRequest
  | GaveUp
  | BalancerUnavailable
  | NoBalancerAnswered
  | NotABalancer
  | SaveFailed
  | FileExists

/** How one attempt on one server can end: the server's fault (retried), or the request's (not). */
type Attempt = ServerFailed | FileNotFound | InvalidRequest | SaveFailed | FileExists | ConnectionClosed | LineTooLong

/** What happened on the way to an answer, for people watching. */
export type ClientEvent =
  | { readonly _tag: "Located"; readonly server: ServerLocation; readonly attempt: number }
  | { readonly _tag: "Rerouted"; readonly server: string; readonly reason: string }
  | { readonly _tag: "Progress"; readonly received: number; readonly total: number }

/** An answer and the server that gave it. */
export interface Served<A> {
  readonly value: A
  readonly server: ServerLocation
  readonly attempts: number
}

export interface ClientConfig {
  /**
   * The balancer, or several: the client starts at a random one, keeps to the one that answers, and
   * moves to the next at once when one cannot be reached (no server attempt spent on it).
   */
  readonly balancer: Address | ReadonlyArray<Address>
  /** Servers tried before giving up. */
  readonly attempts: number
  /** First wait between attempts; it doubles, with jitter, up to 2 s. */
  readonly backoff: Duration.DurationInput
  readonly connectTimeout: Duration.DurationInput
  /** How long a server may take to answer, beyond what a computation itself takes. */
  readonly replyTimeout: Duration.DurationInput
  /** The longest a download may go without a byte arriving (its header, then its payload): past it, the server failed. */
  readonly readTimeout: Duration.DurationInput
  /**
   * Names this client to strategies that keep a client on one server (consistent-hash); without
   * it the balancer uses the client's address.
   */
  readonly key?: string | undefined
  /** Speak TLS to the balancer, accepting its certificate from these CAs (`--tls`, `--ca`). */
  readonly balancerTls?: Trust | undefined
  /** The CAs a server that speaks TLS (its location says `tls: true`) is checked against; default: the system's. */
  readonly trust?: Trust | undefined
}

export const defaults: Omit<ClientConfig, "balancer"> = {
  attempts: 6,
  backoff: Duration.millis(100),
  connectTimeout: Duration.seconds(2),
  replyTimeout: Duration.seconds(10),
  readTimeout: Duration.seconds(5)
}

export interface Saved {
  readonly path: string
  readonly size: number
}

/** A server's files, `{name: type}`, with the size of each in bytes where the server said (older ones do not). */
export interface Listed extends Served<Record<string, string>> {
  readonly sizes: Readonly<Record<string, number>>
}

export interface DownloadOptions {
  /** Replace a file of the same name in the folder; without it such a download fails with `FileExists`. */
  readonly overwrite?: boolean
}

export class Client extends Context.Tag("effect-lb/Client")<
  Client,
  {
    readonly list: (onEvent?: (event: ClientEvent) => Effect.Effect<void>) => Effect.Effect<Listed, ClientError>
    /**
     * Saves the file into `folder` under its own name: complete and of the announced size, or not at
     * all; never over a file already there unless `overwrite`.
     */
    readonly download: (
      name: string,
      folder: string,
      onEvent?: (event: ClientEvent) => Effect.Effect<void>,
      options?: DownloadOptions
    ) => Effect.Effect<Served<Saved>, ClientError>
    readonly compute: (
      seconds: number,
      onEvent?: (event: ClientEvent) => Effect.Effect<void>
    ) => Effect.Effect<Served<number>, ClientError>
  }
>() {}

const ignore = () => Effect.void

export const make = (config: ClientConfig) =>
  Effect.gen(function* () {
    const balancers = addresses(config.balancer)
    const setup: Setup = {
      config,
      balancers,
      names: balancers.map(formatEndpoint),
      // A random start spreads clients given the same list over every balancer.
      sticky: { index: balancers.length > 1 ? yield* Random.nextIntBetween(0, balancers.length) : 0 },
      wire: yield* Wire,
      fs: yield* FileSystem.FileSystem,
      path: yield* Path.Path
    }
    return Client.of({
      list: (onEvent = ignore) => list(setup, onEvent),
      download: (name, folder, onEvent = ignore, options = {}) => download(setup, name, folder, onEvent, options),
      compute: (seconds, onEvent = ignore) => compute(setup, seconds, onEvent)
    })
  })

export const layer = (config: ClientConfig): Layer.Layer<Client, never, Wire | FileSystem.FileSystem | Path.Path> =>
  Layer.effect(Client, make(config))

/**
 * When to go back to the balancer after a failure: first after `backoff`, then doubling with
 * jitter but never more than 2 s apart; `attempts - 1` times at most.
 */
export const reroutePolicy = (config: Pick<ClientConfig, "attempts" | "backoff">) =>
  Schedule.exponential(config.backoff).pipe(
    Schedule.jittered,
    Schedule.either(Schedule.spaced("2 seconds")),
    Schedule.intersect(Schedule.recurs(config.attempts - 1))
  )

/** What the client was made with: its configuration and the services it uses. */
interface Setup {
  readonly config: ClientConfig
  readonly balancers: ReadonlyArray<Address>
  /** Each balancer's `host:port`, for people. */
  readonly names: ReadonlyArray<string>
  /** The balancer asked first: the last one that answered. */
  readonly sticky: { index: number }
  readonly wire: Wire["Type"]
  readonly fs: FileSystem.FileSystem
  readonly path: Path.Path
}

type OnEvent = (event: ClientEvent) => Effect.Effect<void>

/** What a request does on the server it reached. It turns that server's trouble into `ServerFailed`. */
type Exchange<A> = (connection: Connection, server: ServerLocation) => Effect.Effect<A, Attempt>

const list = (setup: Setup, onEvent: OnEvent): Effect.Effect<Listed, ClientError> =>
  Effect.map(onSomeServer(setup, listAll, setup.config.replyTimeout, onEvent), ({ value, server, attempts }) => ({
    value: value.files,
    sizes: value.sizes,
    server,
    attempts
  }))

/** Files a client takes from one list before it calls the server's list endless. */
const maxListed = 1_000_000

/** Every page of a server's file list, on one connection: the next asked for as long as a page names one. */
const listAll: Exchange<{ files: Record<string, string>; sizes: Record<string, number> }> = (connection, server) =>
  Effect.gen(function* () {
    const files: Array<[string, string]> = []
    const sizes: Array<[string, number]> = []
    let after: string | undefined = undefined
    while (true) {
      const reply: ServerReplyType = yield* askServer(
        connection,
        server,
        new ListFiles(after === undefined ? {} : { after })
      )
      if (reply._tag !== "FileList") return yield* unexpected(server, reply)
      files.push(...Object.entries(reply.files))
      if (reply.sizes !== undefined) sizes.push(...Object.entries(reply.sizes))
      // Built as entries, so a file named `__proto__` is a name like any other.
      if (reply.next === undefined) return { files: Object.fromEntries(files), sizes: Object.fromEntries(sizes) }
      // Pages move forward and end: a server that says otherwise has failed.
      if ((after !== undefined && reply.next <= after) || files.length > maxListed) {
        return yield* new ServerFailed({ server: server.id, reason: "sent a file list that does not end" })
      }
      after = reply.next
    }
  })

const compute = (setup: Setup, seconds: number, onEvent: OnEvent) =>
  onSomeServer(
    setup,
    (connection, server) =>
      Effect.flatMap(
        askServer(connection, server, new Compute({ seconds })),
        (reply): Effect.Effect<number, ServerFailed | InvalidRequest> =>
          reply._tag === "Computed"
            ? Effect.succeed(reply.seconds)
            : reply._tag === "InvalidRequest"
              ? Effect.fail(reply)
              : Effect.fail(unexpected(server, reply))
      ),
    Duration.sum(Duration.seconds(seconds), setup.config.replyTimeout),
    onEvent
  )

const download = (setup: Setup, name: string, folder: string, onEvent: OnEvent, options: DownloadOptions) =>
  Effect.gen(function* () {
    if (name.length === 0 || setup.path.basename(name) !== name || name === "." || name === "..") {
      return yield* new InvalidRequest({ message: `"${name}" is not a plain file name` })
    }
    const destination: Destination = {
      folder,
      name,
      path: setup.path.join(folder, name),
      overwrite: options.overwrite === true
    }
    // Refused before anything is asked of anyone; checked again, atomically, when the file is saved.
    if (!destination.overwrite && (yield* Effect.orElseSucceed(setup.fs.exists(destination.path), () => false))) {
      return yield* exists(setup, destination)
    }
    return yield* onSomeServer<Saved>(
      setup,
      (connection, server) =>
        withReadDeadline(setup.config.readTimeout, server, (arrived) =>
          Effect.gen(function* () {
            const header = yield* askServer(connection, server, new Download({ name }))
            if (header._tag === "FileNotFound") return yield* header
            if (header._tag !== "FileHeader") return yield* unexpected(server, header)
            arrived()
            // Each chunk received is told as Progress: the deadline moves with it.
            const onChunk = (event: ClientEvent) => Effect.zipRight(Effect.sync(arrived), onEvent(event))
            return yield* receiveFile(setup, connection, server, header.size, destination, onChunk)
          })
        ),
      Duration.hours(24),
      onEvent
    )
  })

/**
 * Runs `transfer` under a deadline that moves: it fails as the server's failure once `timeout`
 * passes with no call to `arrived` (nor since the start). One watching fiber for the whole
 * transfer, not a timer per chunk; interrupted, the transfer cleans up after itself.
 */
const withReadDeadline = <A, E>(
  timeout: Duration.DurationInput,
  server: ServerLocation,
  transfer: (arrived: () => void) => Effect.Effect<A, E>
): Effect.Effect<A, E | ServerFailed> =>
  Effect.flatMap(Effect.clock, (clock) => {
    const limit = Duration.toMillis(timeout)
    let last = clock.unsafeCurrentTimeMillis()
    const stalled = (): Effect.Effect<never, ServerFailed> =>
      Effect.suspend(() => {
        const left = last + limit - clock.unsafeCurrentTimeMillis()
        return left > 0
          ? Effect.zipRight(Effect.sleep(Duration.millis(left)), stalled())
          : Effect.fail(
              new ServerFailed({
                server: server.id,
                reason: `sent nothing for ${Duration.format(Duration.millis(limit))}`
              })
            )
      })
    return Effect.raceFirst(
      transfer(() => {
        last = clock.unsafeCurrentTimeMillis()
      }),
      stalled()
    )
  })

/** Where a download goes: `path`, a plain `name` inside `folder`; whether it may replace a file there. */
interface Destination {
  readonly folder: string
  readonly name: string
  readonly path: string
  readonly overwrite: boolean
}

const exists = ({ path }: Setup, destination: Destination) =>
  new FileExists({ name: destination.name, folder: path.resolve(destination.folder) })

/**
 * Gives the complete `partial` file its real name. Replacing: a rename. Otherwise a hard link, which
 * fails if the name is taken (nothing is ever replaced, even by a file that appeared meanwhile), then
 * the temporary name is dropped; where links are not supported, a check and a rename.
 */
const commit = (
  setup: Setup,
  partial: string,
  destination: Destination
): Effect.Effect<void, SaveFailed | FileExists> => {
  const { fs } = setup
  const saveFailed = (error: { message: string }) => new SaveFailed({ path: destination.path, reason: error.message })
  const rename: Effect.Effect<void, SaveFailed | FileExists> = Effect.mapError(
    fs.rename(partial, destination.path),
    saveFailed
  )
  if (destination.overwrite) return rename
  const taken = Effect.orElseSucceed(fs.exists(destination.path), () => false)
  return fs.link(partial, destination.path).pipe(
    Effect.zipRight(Effect.ignore(fs.remove(partial))),
    Effect.catchAll((error) =>
      error._tag === "SystemError" && error.reason === "AlreadyExists"
        ? Effect.fail(exists(setup, destination))
        : Effect.flatMap(taken, (yes) => (yes ? Effect.fail(exists(setup, destination)) : rename))
    )
  )
}

/**
 * Receives the file's `size` bytes into `destination`. A cut-off transfer or a file of the wrong
 * size is the server's failure; a file that cannot be written is the request's.
 */
const receiveFile = (
  setup: Setup,
  connection: Connection,
  server: ServerLocation,
  size: number,
  destination: Destination,
  onEvent: OnEvent
): Effect.Effect<Saved, ServerFailed | SaveFailed | FileExists> =>
  Effect.suspend(() => {
    const { fs, path } = setup
    // Written beside the target and renamed only when complete: never a truncated file under the real name.
    // The temporary name does not grow with the file's: a served name may be 255 bytes, a folder's limit.
    const partial = path.join(destination.folder, `.effect-lb-${Crypto.randomBytes(8).toString("hex")}.part`)
    const saveFailed = (error: { message: string }) => new SaveFailed({ path: destination.path, reason: error.message })
    let received = 0
    return connection.readPayload(size).pipe(
      Stream.tap((chunk) => {
        received += chunk.length
        return onEvent({ _tag: "Progress", received, total: size })
      }),
      Stream.run(fs.sink(partial)),
      Effect.mapError((error) =>
        error._tag === "ConnectionClosed"
          ? new ServerFailed({ server: server.id, reason: `${error.reason} (mid-download)` })
          : saveFailed(error)
      ),
      Effect.zipRight(Effect.mapError(fs.stat(partial), saveFailed)),
      Effect.flatMap((info): Effect.Effect<void, ServerFailed | SaveFailed | FileExists> =>
        Number(info.size) === size
          ? commit(setup, partial, destination)
          : Effect.fail(new ServerFailed({ server: server.id, reason: "sent a file of the wrong size" }))
      ),
      Effect.onError(() => Effect.ignore(fs.remove(partial))),
      Effect.as({ path: destination.path, size })
    )
  })

/** One request's way between servers: how many were tried, which failed, and why the last one did. */
interface Journey {
  attempts: number
  readonly failed: Array<Endpoint>
  lastReason: string
}

/**
 * Runs `exchange` on some server: located, connected, asked; re-routed, by `reroutePolicy`, on any
 * server failure and while the balancer cannot be reached or has no server. Anything else ends the
 * request, and so does a server failure once the attempts run out.
 */
const onSomeServer = <A>(
  setup: Setup,
  exchange: Exchange<A>,
  timeout: Duration.DurationInput,
  onEvent: OnEvent
): Effect.Effect<Served<A>, ClientError> =>
  Effect.suspend(() => {
    const journey: Journey = { attempts: 0, failed: [], lastReason: "" }
    return attempt(setup, journey, exchange, timeout, onEvent).pipe(
      Effect.retry({ schedule: reroutePolicy(setup.config), while: reroutable }),
      Effect.catchTags({
        ServerFailed: (error) => Effect.fail(gaveUp(journey, error)),
        NoServerAvailable: (error) => Effect.fail(gaveUp(journey, error))
      })
    )
  })

/**
 * A failure that another server, or another try at the balancer, may get past. A balancer that gave
 * no answer may be busy; one that answered as no balancer does will not turn into one.
 */
const reroutable = (error: ClientError | ServerFailed | NoServerAvailable) =>
  error._tag === "ServerFailed" ||
  error._tag === "BalancerUnavailable" ||
  error._tag === "NoServerAvailable" ||
  (error._tag === "NotABalancer" && error.silent) ||
  (error._tag === "NoBalancerAnswered" && error.silent)

/** The one reason a person is given: the last failure, or why the balancer had none left and what failed before. */
const gaveUp = (journey: Journey, error: ServerFailed | NoServerAvailable) =>
  new GaveUp({
    attempts: journey.attempts,
    reason:
      error._tag === "NoServerAvailable"
        ? `${error.message}${journey.lastReason ? `; ${journey.lastReason}` : ""}`
        : error.message
  })

/**
 * One try: a server from the balancer (none that failed before), then `exchange` there. A server
 * that fails is remembered for the next try and reported as re-routed to whoever watches.
 */
const attempt = <A>(
  setup: Setup,
  journey: Journey,
  exchange: Exchange<A>,
  timeout: Duration.DurationInput,
  onEvent: OnEvent
) =>
  Effect.gen(function* () {
    journey.attempts += 1
    const server = yield* locate(setup, journey.failed)
    yield* onEvent({ _tag: "Located", server, attempt: journey.attempts })
    const name = `${server.id} (${formatEndpoint(server)})`
    const value = yield* onServer(setup, server, name, exchange, timeout).pipe(
      Effect.tapError((error) =>
        error._tag === "ServerFailed"
          ? Effect.suspend(() => {
              journey.failed.push(server)
              journey.lastReason = error.message
              return onEvent({ _tag: "Rerouted", server: name, reason: error.reason })
            })
          : Effect.void
      )
    )
    return { value, server, attempts: journey.attempts }
  })

/** Connects to `server` and runs `exchange` there within `timeout`; trouble with the connection is the server's failure. */
const onServer = <A>(
  { config, wire }: Setup,
  server: ServerLocation,
  name: string,
  exchange: Exchange<A>,
  timeout: Duration.DurationInput
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const connection = yield* wire.connect(server, {
        timeout: config.connectTimeout,
        tls: server.tls === true ? (config.trust ?? systemTrust) : undefined
      })
      return yield* exchange(connection, server)
    })
  ).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new ServerFailed({ server: name, reason: "timed out" })
    }),
    Effect.catchTags({
      ConnectFailed: (error) => Effect.fail(new ServerFailed({ server: name, reason: error.reason })),
      ConnectionClosed: (error) => Effect.fail(new ServerFailed({ server: name, reason: error.reason })),
      LineTooLong: (error) => Effect.fail(new ServerFailed({ server: name, reason: error.message }))
    })
  )

/**
 * Asks a balancer for a server other than those in `exclude`: the one that answered last, else the
 * next in the list, at once. One that cannot be reached, or has no server for us (it may not be the
 * one our servers registered with), is passed over; only a whole round of them failing fails the
 * attempt (and the client backs off): with `NoServerAvailable` if one said so.
 */
const locate = (
  setup: Setup,
  exclude: ReadonlyArray<Endpoint>
): Effect.Effect<ServerLocation, NoServerAvailable | BalancerUnavailable | NotABalancer | NoBalancerAnswered> =>
  firstAnswering(setup.balancers, setup.sticky.index, (balancer) => locateAt(setup, balancer, exclude), {
    passOver: (error) =>
      error._tag === "NoServerAvailable" ? { reason: error.message, silent: true } : unreachable(error),
    prevails: (error) => error._tag === "NoServerAvailable"
  }).pipe(
    Effect.map(({ value, index }) => {
      setup.sticky.index = index
      return value
    })
  )

/** Asks the balancer at `balancer` for a server other than those in `exclude`. */
const locateAt = (
  { config, wire }: Setup,
  balancer: Address,
  exclude: ReadonlyArray<Endpoint>
): Effect.Effect<ServerLocation, NoServerAvailable | BalancerUnavailable | NotABalancer> => {
  const balancerName = formatEndpoint(balancer)
  return ask(
    balancer,
    new Locate(config.key === undefined ? { exclude } : { exclude, key: config.key }),
    config.connectTimeout,
    config.balancerTls
  ).pipe(
    Effect.provideService(Wire, wire),
    Effect.catchTags({
      ConnectFailed: (error) =>
        Effect.fail(new BalancerUnavailable({ balancer: balancerName, reason: describeConnectReason(error.reason) })),
      ConnectionClosed: (error) =>
        Effect.fail(new BalancerUnavailable({ balancer: balancerName, reason: error.message }))
    }),
    Effect.flatMap((reply): Effect.Effect<ServerLocation, NoServerAvailable | BalancerUnavailable> => {
      switch (reply._tag) {
        case "Located":
          return Effect.succeed(reply.server)
        case "NoServerAvailable":
          return Effect.fail(reply)
        default:
          return Effect.fail(new BalancerUnavailable({ balancer: balancerName, reason: `answered ${reply._tag}` }))
      }
    })
  )
}

/** Sends one request and reads the reply; the server's own error replies pass through as values. */
const askServer = (
  connection: Connection,
  server: ServerLocation,
  request: ServerRequestType
): Effect.Effect<ServerReplyType, ServerFailed | ConnectionClosed | LineTooLong> =>
  connection.send(ServerRequest, request).pipe(
    Effect.zipRight(connection.read(ServerReply)),
    Effect.flatMap(
      Option.match({
        onNone: () => Effect.fail(new ServerFailed({ server: server.id, reason: "closed without answering" })),
        onSome: (reply: ServerReplyType) =>
          reply._tag === "Busy"
            ? Effect.fail(new ServerFailed({ server: server.id, reason: `busy: ${reply.message}` }))
            : Effect.succeed(reply)
      })
    ),
    Effect.catchTag("InvalidRequest", (error) =>
      Effect.fail(new ServerFailed({ server: server.id, reason: `sent something unreadable: ${error.message}` }))
    )
  )

const unexpected = (server: ServerLocation, reply: ServerReplyType) =>
  new ServerFailed({ server: server.id, reason: `answered ${reply._tag}` })
