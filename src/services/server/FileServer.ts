/**
 * The backend server: answers ListFiles, Download, Compute and Ping on its port, one fiber per
 * connection, several requests per connection. It keeps its count of active connections in a
 * `SubscriptionRef` so other services (the balancer link) can follow it, and on shutdown it stops
 * taking new work and lets what is in flight finish, for a bounded time.
 */
import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Ref, Stream, SubscriptionRef } from "effect"
import { Busy, InvalidRequest } from "../../domain/Errors.js"
import {
  type Compute,
  Computed,
  type Download,
  FileHeader,
  FileList,
  type ListFiles,
  Pong,
  type ServerReply as ServerReplyType,
  ServerReply,
  ServerRequest
} from "../../domain/Protocol.js"
import { formatEndpoint, ServerId } from "../../domain/Server.js"
import type { Connection, ConnectionClosed, PayloadFailed } from "../wire/Connection.js"
import { FileStore } from "./FileStore.js"
import { type IdleSweeper, makeIdleSweeper } from "../wire/Idle.js"
import { lineEncoder } from "../wire/LineCodec.js"
import { LineBudget } from "../wire/Pages.js"
import { type Address, Wire } from "../wire/Wire.js"
import type { ListenerTls } from "../wire/Tls.js"

export interface FileServerConfig {
  /** Default: `s<port>`, with the port actually bound. */
  readonly id?: ServerId
  readonly host: string
  /** 0 lets the system pick. */
  readonly port: number
  /** Longest `Compute` accepted, in seconds. */
  readonly maxCompute: number
  /** How long a second of `Compute` really takes (1 = a second; 0.01 = 10 ms, for benchmarks). */
  readonly computeScale?: number
  /** Computations that run at once, like a machine's cores; the rest wait their turn. Default: no limit. */
  readonly computeSlots?: number
  /** A connection with no request for this long is closed; so is one whose peer takes no byte of a reply for this long. */
  readonly idleTimeout: Duration.DurationInput
  /** Connections past this many are answered `Busy` and closed. */
  readonly maxConnections: number
  /** How long shutdown waits for requests in flight. */
  readonly drainTimeout: Duration.DurationInput
  readonly maxLine: number
  /** Serve TLS with this certificate (`--tls-cert`, `--tls-key`); the server registers saying so. */
  readonly tls?: ListenerTls | undefined
}

export const defaults = {
  host: "127.0.0.1",
  port: 4001,
  maxCompute: 60,
  idleTimeout: Duration.seconds(30),
  maxConnections: 4096,
  drainTimeout: Duration.seconds(5),
  maxLine: 64 * 1024
} as const

export class FileServer extends Context.Tag("effect-lb/FileServer")<
  FileServer,
  {
    readonly id: ServerId
    /** Where it listens (the real port when asked for 0). */
    readonly address: Address
    /** Whether its port speaks TLS. */
    readonly tls: boolean
    /** Connections that have made a request (probes that only ping are not counted); watchable. */
    readonly active: SubscriptionRef.SubscriptionRef<number>
    /** Smoothed time to answer a request, peak-sensitive (up at once, down slowly); `undefined` before the first. */
    readonly latencyMs: Effect.Effect<number | undefined>
    /** Stops taking new work and waits, up to the drain timeout, for what is in flight. */
    readonly drain: Effect.Effect<void>
  }
>() {}

/**
 * Peak-sensitive moving average of the time to answer (as Finagle's peak EWMA): a slower answer
 * counts at once, a faster one pulls the figure down gradually.
 */
class PeakLatency {
  ms: number | undefined = undefined
  record(ms: number) {
    this.ms = this.ms === undefined || ms > this.ms ? ms : this.ms + 0.2 * (ms - this.ms)
  }
}

/** What one server's connections share, built once when it starts. */
interface Serving {
  /** Known once the port is bound; no request can arrive before then. */
  id: ServerId
  readonly config: FileServerConfig
  readonly store: FileStore["Type"]
  readonly active: SubscriptionRef.SubscriptionRef<number>
  readonly latency: PeakLatency
  /** Computations allowed to run at once; `undefined` for no limit. */
  readonly slots: Effect.Semaphore | undefined
  /** Connections accepted and not yet ended, counted or not; drain waits for it to reach 0. */
  readonly open: SubscriptionRef.SubscriptionRef<number>
  readonly draining: Deferred.Deferred<void>
  readonly sweeper: IdleSweeper
}

type Answer = Effect.Effect<void, ConnectionClosed | PayloadFailed>

const reply = (connection: Connection, message: ServerReplyType) => connection.send(ServerReply, message)

const answerPing = (server: Serving, connection: Connection): Answer =>
  Effect.flatMap(SubscriptionRef.get(server.active), (count) =>
    reply(connection, new Pong({ id: server.id, active: count, latencyMs: server.latency.ms }))
  )

const answerListFiles = (server: Serving, connection: Connection, request: ListFiles): Answer => {
  // As many files as fit one line; when some are left, the last name sent is where the next page starts.
  const budget = new LineBudget(server.config.maxLine, emptyFileList)
  return server.store
    .entries(request.after, (name, type, size) => {
      // Each file costs its entry in `files` and its entry in `sizes`.
      const key = JSON.stringify(name)
      return budget.take(`${key}:${JSON.stringify(type)},${key}:${size}`)
    })
    .pipe(
      Effect.map(({ complete, entries }): ServerReplyType => {
        const files = Object.fromEntries(entries.map(([name, type]) => [name, type]))
        const sizes = Object.fromEntries(entries.map(([name, , size]) => [name, size]))
        const last = entries.at(-1)
        return new FileList(complete || last === undefined ? { files, sizes } : { files, sizes, next: last[0] })
      }),
      Effect.merge,
      Effect.flatMap((message) => reply(connection, message))
    )
}

/** A `FileList` with no files (nor sizes) and the longest cursor it could carry (255 characters, each escaped to 6 bytes). */
const emptyFileList = lineEncoder(ServerReply)(new FileList({ files: {}, sizes: {}, next: "\u0000".repeat(255) }))

/** The header, then the file streamed as a payload (the connection applies backpressure). */
const answerDownload = (server: Serving, connection: Connection, request: Download): Answer =>
  Effect.scoped(
    server.store.open(request.name).pipe(
      Effect.matchEffect({
        onFailure: (error) => reply(connection, error),
        onSuccess: (file) =>
          reply(connection, new FileHeader({ name: file.name, size: file.size })).pipe(
            Effect.zipRight(connection.sendPayload(file.stream, file.size))
          )
      })
    )
  )

const answerCompute = (server: Serving, connection: Connection, request: Compute): Answer => {
  const { maxCompute, computeScale } = server.config
  if (request.seconds > maxCompute) {
    return reply(
      connection,
      new InvalidRequest({
        message: `SECONDS must be an integer from 0 to the server's --max-compute, ${maxCompute} here (got ${request.seconds})`
      })
    )
  }
  // The work is a sleep on the Clock: it blocks no one. A client that hangs up meanwhile
  // has abandoned it (as nginx treats a client abort), so it stops and frees its slot.
  const work = Effect.sleep(Duration.millis(request.seconds * 1000 * (computeScale ?? 1)))
  return Effect.raceFirst(
    (server.slots === undefined ? work : server.slots.withPermits(1)(work)).pipe(
      Effect.zipRight(reply(connection, new Computed({ seconds: request.seconds })))
    ),
    connection.hangup
  )
}

const answer = (server: Serving, connection: Connection, request: ServerRequest): Answer => {
  switch (request._tag) {
    case "Ping":
      return answerPing(server, connection)
    case "ListFiles":
      return answerListFiles(server, connection, request)
    case "Download":
      return answerDownload(server, connection, request)
    case "Compute":
      return answerCompute(server, connection, request)
  }
}

/**
 * Serves requests on one connection until it ends, idles out, breaks, or the server drains.
 * Kept lean (no scope, no log annotations per connection): an idle connection holds this fiber.
 */
const serveConnection = (server: Serving, connection: Connection) => {
  let counted = false
  // A reply's payload moving is activity: a download is idle only once its peer stops reading.
  const idle = server.sweeper.unsafeTrack(() => Effect.runSync(connection.destroy), connection.payloadSent)
  return Effect.gen(function* () {
    while (true) {
      const next = yield* connection.read(ServerRequest).pipe(
        // A bad line does not spoil the connection: say why, and read the next one.
        Effect.catchTag("InvalidRequest", (error) => Effect.as(reply(connection, error), "skipped" as const))
      )
      if (next === "skipped") continue
      if (Option.isNone(next)) return
      if (!counted && next.value._tag !== "Ping") {
        counted = true
        yield* SubscriptionRef.update(server.active, (n) => n + 1)
      }
      // Draining does not cut a request that started: it ends, or the drain timeout cuts it. A
      // computation is never idle; a reply being sent is, once the peer takes none of it for the idle timeout.
      if (next.value._tag === "Compute") idle.busy()
      else idle.sending()
      const started = yield* Clock.currentTimeMillis
      yield* answer(server, connection, next.value)
      if (next.value._tag !== "Ping") server.latency.record((yield* Clock.currentTimeMillis) - started)
      idle.done()
      if (yield* Deferred.isDone(server.draining)) return
    }
  }).pipe(
    Effect.catchTag("LineTooLong", (error) => reply(connection, new InvalidRequest({ message: error.message }))),
    Effect.ensuring(
      Effect.suspend(() => {
        idle.release()
        return counted ? SubscriptionRef.update(server.active, (n) => n - 1) : Effect.void
      })
    )
  )
}

/** Takes a connection and serves it, or answers `Busy` when at the connection limit or draining. */
const accept = (server: Serving, connection: Connection) =>
  Effect.gen(function* () {
    const { maxConnections } = server.config
    const accepted = yield* Ref.modify(server.open, (n): [boolean, number] =>
      n >= maxConnections ? [false, n] : [true, n + 1]
    )
    if (!accepted || (yield* Deferred.isDone(server.draining))) {
      if (accepted) yield* SubscriptionRef.update(server.open, (n) => n - 1)
      const reason = accepted
        ? "the server is shutting down"
        : `the server is at its limit of ${maxConnections} connections`
      return yield* reply(connection, new Busy({ message: reason }))
    }
    yield* serveConnection(server, connection).pipe(Effect.ensuring(SubscriptionRef.update(server.open, (n) => n - 1)))
  }).pipe(
    Effect.catchAll((error) =>
      Effect.logDebug(`connection from ${formatEndpoint(connection.peer)} ended`, error).pipe(
        Effect.annotateLogs({ server: server.id })
      )
    )
  )

/** Stops taking work, closes idle connections, and waits (up to the drain timeout) for the others. */
const drain = (server: Serving) =>
  Effect.gen(function* () {
    yield* Deferred.succeed(server.draining, undefined)
    // Connections between requests close now; the others after the request they are answering.
    yield* server.sweeper.closeIdle
    // Interruptible, so the timeout can cut the wait even when this runs as a finalizer.
    yield* server.open.changes.pipe(
      Stream.takeUntil((n) => n === 0),
      Stream.runDrain,
      Effect.interruptible,
      Effect.timeout(server.config.drainTimeout),
      Effect.ignore
    )
  })

export const make = (config: FileServerConfig) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const server: Serving = {
      id: config.id ?? ServerId.make(`s${config.port}`),
      config,
      store: yield* FileStore,
      active: yield* SubscriptionRef.make(0),
      latency: new PeakLatency(),
      open: yield* SubscriptionRef.make(0),
      draining: yield* Deferred.make<void>(),
      slots: config.computeSlots === undefined ? undefined : yield* Effect.makeSemaphore(config.computeSlots),
      sweeper: yield* makeIdleSweeper(config.idleTimeout)
    }
    const address = yield* wire.serve(
      { host: config.host, port: config.port, maxLine: config.maxLine, tls: config.tls },
      (connection) => accept(server, connection)
    )
    server.id = config.id ?? ServerId.make(`s${address.port}`)
    const drainServer = drain(server)
    // Runs before the listener is closed: in-flight requests end first.
    yield* Effect.addFinalizer(() => drainServer)
    return FileServer.of({
      id: server.id,
      address,
      tls: config.tls !== undefined,
      active: server.active,
      latencyMs: Effect.sync(() => server.latency.ms),
      drain: drainServer
    })
  })

export const layer = (config: FileServerConfig) => Layer.scoped(FileServer, make(config))
