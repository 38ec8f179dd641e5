/**
 * The client: asks the balancer for a server, makes the request there, and — on any failure of that
 * server (refused, reset, timed out, gone mid-transfer or mid-computation, `Busy`) — goes back to
 * the balancer by itself with the failed server excluded, backing off between attempts, until a
 * server answers or the attempts run out. Typed errors decide what is retried: a server's failure
 * is, a refusal of the request itself (`FileNotFound`, `InvalidRequest`) is not.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Context, Duration, Effect, Layer, Option, Schedule, Schema, Stream } from "effect"
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
import { ask } from "./BalancerClient.js"
import type { Connection, ConnectionClosed, LineTooLong } from "../wire/Connection.js"
import { type Address, Wire } from "../wire/Wire.js"

/** One server failed us; another may do. */
export class ServerFailed extends Schema.TaggedError<ServerFailed>()("ServerFailed", {
  server: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.server} failed: ${this.reason}`
  }
}

/** The balancer cannot be reached or does not answer. */
export class BalancerUnavailable extends Schema.TaggedError<BalancerUnavailable>()("BalancerUnavailable", {
  balancer: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot reach the balancer at ${this.balancer}: ${this.reason}`
  }
}

/** Every attempt failed: no server could serve the request. */
export class GaveUp extends Schema.TaggedError<GaveUp>()("GaveUp", {
  attempts: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `no server could serve the request after ${this.attempts} attempts (last: ${this.reason})`
  }
}

/** The download could not be written where it was asked to go. */
export class SaveFailed extends Schema.TaggedError<SaveFailed>()("SaveFailed", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot save ${this.path}: ${this.reason}`
  }
}

export type ClientError = FileNotFound | InvalidRequest | GaveUp | BalancerUnavailable | SaveFailed

/** How one attempt on one server can end: the server's fault (retried), or the request's (not). */
type Attempt = ServerFailed | FileNotFound | InvalidRequest | SaveFailed | ConnectionClosed | LineTooLong

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
  readonly balancer: Address
  /** Servers tried before giving up. */
  readonly attempts: number
  /** First wait between attempts; it doubles, with jitter, up to 2 s. */
  readonly backoff: Duration.DurationInput
  readonly connectTimeout: Duration.DurationInput
  /** How long a server may take to answer, beyond what a computation itself takes. */
  readonly replyTimeout: Duration.DurationInput
}

export const defaults: Omit<ClientConfig, "balancer"> = {
  attempts: 6,
  backoff: Duration.millis(100),
  connectTimeout: Duration.seconds(2),
  replyTimeout: Duration.seconds(10)
}

export interface Saved {
  readonly path: string
  readonly size: number
}

export class Client extends Context.Tag("effect-lb/Client")<
  Client,
  {
    readonly list: (
      onEvent?: (event: ClientEvent) => Effect.Effect<void>
    ) => Effect.Effect<Served<Record<string, string>>, ClientError>
    /** Saves the file into `folder` under its own name: complete and of the announced size, or not at all. */
    readonly download: (
      name: string,
      folder: string,
      onEvent?: (event: ClientEvent) => Effect.Effect<void>
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
    const wire = yield* Wire
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const balancerName = formatEndpoint(config.balancer)

    const locate = (
      exclude: ReadonlyArray<Endpoint>
    ): Effect.Effect<ServerLocation, NoServerAvailable | BalancerUnavailable> =>
      ask(config.balancer, new Locate({ exclude }), config.connectTimeout).pipe(
        Effect.provideService(Wire, wire),
        Effect.mapError((error) => new BalancerUnavailable({ balancer: balancerName, reason: error.message })),
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

    /**
     * Runs `exchange` on some server: located, connected, asked; re-routed on any server failure.
     * `exchange` turns a server's trouble into `ServerFailed`; anything else ends the request.
     */
    const onSomeServer = <A>(
      exchange: (connection: Connection, server: ServerLocation) => Effect.Effect<A, Attempt>,
      timeout: Duration.DurationInput,
      onEvent: (event: ClientEvent) => Effect.Effect<void>
    ): Effect.Effect<Served<A>, ClientError> =>
      Effect.gen(function* () {
        const failed: Array<Endpoint> = []
        let attempt = 0
        let lastReason = ""
        const once = Effect.gen(function* () {
          attempt += 1
          const server = yield* locate(failed)
          yield* onEvent({ _tag: "Located", server, attempt })
          const name = `${server.id} (${formatEndpoint(server)})`
          const value: A = yield* Effect.scoped(
            Effect.gen(function* () {
              const connection = yield* wire.connect(server, { timeout: config.connectTimeout })
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
            }),
            Effect.tapError((error) =>
              error instanceof ServerFailed
                ? Effect.suspend(() => {
                    failed.push(server)
                    lastReason = error.message
                    return onEvent({ _tag: "Rerouted", server: name, reason: error.reason })
                  })
                : Effect.void
            )
          )
          return { value, server, attempts: attempt }
        })
        const retryable = (error: unknown) =>
          error instanceof ServerFailed || error instanceof BalancerUnavailable || error instanceof NoServerAvailable
        return yield* once.pipe(
          Effect.retry({
            schedule: Schedule.exponential(config.backoff).pipe(
              Schedule.jittered,
              Schedule.either(Schedule.spaced("2 seconds")),
              Schedule.intersect(Schedule.recurs(config.attempts - 1))
            ),
            while: retryable
          }),
          Effect.catchIf(
            (error) => error instanceof ServerFailed || error instanceof NoServerAvailable,
            (error) =>
              Effect.fail(
                new GaveUp({
                  attempts: attempt,
                  reason:
                    error instanceof NoServerAvailable
                      ? `${error.message}${lastReason ? `; ${lastReason}` : ""}`
                      : error.message
                })
              )
          )
        )
      })

    /** Sends one request and reads the reply; the server's own error replies pass through as values. */
    const exchange = (
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

    const list: Client["Type"]["list"] = (onEvent = ignore) =>
      onSomeServer(
        (connection, server) =>
          Effect.flatMap(
            exchange(connection, server, new ListFiles()),
            (reply): Effect.Effect<Record<string, string>, ServerFailed> =>
              reply._tag === "FileList" ? Effect.succeed(reply.files) : Effect.fail(unexpected(server, reply))
          ),
        config.replyTimeout,
        onEvent
      )

    const compute: Client["Type"]["compute"] = (seconds, onEvent = ignore) =>
      onSomeServer(
        (connection, server) =>
          Effect.flatMap(
            exchange(connection, server, new Compute({ seconds })),
            (reply): Effect.Effect<number, ServerFailed | InvalidRequest> =>
              reply._tag === "Computed"
                ? Effect.succeed(reply.seconds)
                : reply._tag === "InvalidRequest"
                  ? Effect.fail(reply)
                  : Effect.fail(unexpected(server, reply))
          ),
        Duration.sum(Duration.seconds(seconds), config.replyTimeout),
        onEvent
      )

    const download: Client["Type"]["download"] = (name, folder, onEvent = ignore) =>
      Effect.gen(function* () {
        if (name.length === 0 || path.basename(name) !== name || name === "." || name === "..") {
          return yield* new InvalidRequest({ message: `"${name}" is not a plain file name` })
        }
        const target = path.join(folder, name)
        const saveFailed = (error: { message: string }) => new SaveFailed({ path: target, reason: error.message })
        return yield* onSomeServer<Saved>(
          (connection, server) =>
            Effect.gen(function* () {
              const header = yield* exchange(connection, server, new Download({ name }))
              if (header._tag === "FileNotFound") return yield* header
              if (header._tag !== "FileHeader") return yield* unexpected(server, header)
              // Written beside the target and renamed only when complete: never a truncated file under the real name.
              const partial = path.join(folder, `.${name}.${Crypto.randomBytes(4).toString("hex")}.part`)
              let received = 0
              const saved = connection.readPayload(header.size).pipe(
                Stream.tap((chunk) => {
                  received += chunk.length
                  return onEvent({ _tag: "Progress", received, total: header.size })
                }),
                Stream.run(fs.sink(partial)),
                Effect.mapError((error) =>
                  error._tag === "ConnectionClosed"
                    ? new ServerFailed({ server: server.id, reason: `${error.reason} (mid-download)` })
                    : saveFailed(error)
                ),
                Effect.zipRight(Effect.mapError(fs.stat(partial), saveFailed)),
                Effect.flatMap((info): Effect.Effect<void, ServerFailed | SaveFailed> =>
                  Number(info.size) === header.size
                    ? Effect.mapError(fs.rename(partial, target), saveFailed)
                    : Effect.fail(new ServerFailed({ server: server.id, reason: "sent a file of the wrong size" }))
                ),
                Effect.onError(() => Effect.ignore(fs.remove(partial)))
              )
              yield* saved
              return { path: target, size: header.size }
            }),
          Duration.hours(24),
          onEvent
        )
      })

    return Client.of({ list, download, compute })
  })

export const layer = (config: ClientConfig): Layer.Layer<Client, never, Wire | FileSystem.FileSystem | Path.Path> =>
  Layer.effect(Client, make(config))
