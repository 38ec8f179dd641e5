/**
 * The backend server: answers ListFiles, Download, Compute and Ping on its port, several requests
 * per connection. Its port is a request port (`wire/RequestPort.ts`), as the balancer's is: an idle
 * connection is a session on the socket's callbacks, with no fiber; a request runs as an Effect
 * (a `Later`) while it is answered — a download streamed with the socket's backpressure, a
 * computation a sleep. It keeps its count of active connections in a `SubscriptionRef` so other
 * services (the balancer link) can follow it, and on shutdown it stops taking new work and lets
 * what is in flight finish, for a bounded time.
 */
import { Clock, Context, Deferred, Duration, Effect, Layer, SubscriptionRef } from "effect"
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
import { ServerId } from "../../domain/Server.js"
import type { ConnectionClosed, PayloadFailed } from "../wire/Connection.js"
import { FileStore } from "./FileStore.js"
import { type IdleSweeper, makeIdleSweeper } from "../wire/Idle.js"
import { lineEncoder } from "../wire/LineCodec.js"
import { LineBudget } from "../wire/Pages.js"
import { Later, Refused, type RequestSession, type SessionControl } from "../wire/RequestPort.js"
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
  /** Connections accepted and not yet closed, counted or not; drain waits for it to reach 0. */
  open: number
  /** Shutdown has begun: no new connection, no new request. */
  draining: boolean
  /** Done once draining with no connection left open. */
  readonly drained: Deferred.Deferred<void>
  readonly sweeper: IdleSweeper
}

type Control = SessionControl<ServerReplyType>
type Answer = Effect.Effect<ServerReplyType | undefined, ConnectionClosed | PayloadFailed>

const answerPing = (server: Serving): Answer =>
  Effect.map(
    SubscriptionRef.get(server.active),
    (count) => new Pong({ id: server.id, active: count, latencyMs: server.latency.ms })
  )

const answerListFiles = (server: Serving, request: ListFiles): Answer => {
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
      Effect.merge
    )
}

/** A `FileList` with no files (nor sizes) and the longest cursor it could carry (255 characters, each escaped to 6 bytes). */
const emptyFileList = lineEncoder(ServerReply)(new FileList({ files: {}, sizes: {}, next: "\u0000".repeat(255) }))

/** The header, then the file as a payload with the socket's backpressure: memory stays flat whatever the reader's pace. */
const answerDownload = (server: Serving, control: Control, request: Download): Answer =>
  Effect.scoped(
    server.store.open(request.name).pipe(
      Effect.matchEffect({
        onFailure: (error) => Effect.succeed(error),
        onSuccess: (file) =>
          control
            .send(new FileHeader({ name: file.name, size: file.size }))
            .pipe(Effect.zipRight(control.sendFile(file)), Effect.as(undefined))
      })
    )
  )

const answerCompute = (server: Serving, control: Control, request: Compute): Answer => {
  const { maxCompute, computeScale } = server.config
  if (request.seconds > maxCompute) {
    return Effect.succeed(
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
      Effect.as(new Computed({ seconds: request.seconds }))
    ),
    Effect.as(control.hangup(), undefined)
  )
}

const answer = (server: Serving, control: Control, request: ServerRequest): Answer => {
  switch (request._tag) {
    case "Ping":
      return answerPing(server)
    case "ListFiles":
      return answerListFiles(server, request)
    case "Download":
      return answerDownload(server, control, request)
    case "Compute":
      return answerCompute(server, control, request)
  }
}

/**
 * One connection to the server port. Between requests it is this object and the port's session on
 * the socket's callbacks — no fiber; each request is answered by an Effect, a fiber while it runs.
 */
class Exchange implements RequestSession<ServerRequest, ServerReplyType, never> {
  /** It has made a request other than Ping: it counts among the active connections. */
  counted = false

  constructor(
    readonly server: Serving,
    readonly control: Control
  ) {}

  /**
   * Every answer is a `Later`. Draining does not cut a request that started: it ends, or the drain
   * timeout cuts it. A computation is never idle; a reply being sent is, once the peer takes none
   * of it for the idle timeout.
   */
  answer(request: ServerRequest): Later<ServerReplyType> {
    const server = this.server
    const idle = request._tag === "Compute" ? "busy" : "sending"
    if (request._tag === "Ping") return new Later(answerPing(server), idle)
    const reply = timed(server, answer(server, this.control, request))
    if (this.counted) return new Later(reply, idle)
    this.counted = true
    return new Later(
      Effect.zipRight(
        SubscriptionRef.update(server.active, (n) => n + 1),
        reply
      ),
      idle
    )
  }

  /** A draining server closes each connection after the answer it is giving. */
  keepOpen(): boolean {
    return !this.server.draining
  }

  closed(): Effect.Effect<void> {
    const server = this.server
    server.open -= 1
    if (server.draining && server.open === 0) Deferred.unsafeDone(server.drained, Effect.void)
    return this.counted ? SubscriptionRef.update(server.active, (n) => n - 1) : Effect.void
  }
}

/** An answer, its time recorded in the server's latency. */
const timed = (server: Serving, reply: Answer): Answer =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const result = yield* reply
    server.latency.record((yield* Clock.currentTimeMillis) - started)
    return result
  }).pipe(
    Effect.tapError((error) =>
      Effect.logDebug("a request ended with its connection", error).pipe(Effect.annotateLogs({ server: server.id }))
    )
  )

/** Takes a connection, or answers `Busy` when at the connection limit or draining. */
const accept = (server: Serving, control: Control): Exchange | Refused<ServerReplyType> => {
  const { maxConnections } = server.config
  if (server.open >= maxConnections)
    return new Refused(new Busy({ message: `the server is at its limit of ${maxConnections} connections` }))
  if (server.draining) return new Refused(new Busy({ message: "the server is shutting down" }))
  server.open += 1
  return new Exchange(server, control)
}

/** Stops taking work, closes idle connections, and waits (up to the drain timeout) for the others. */
const drain = (server: Serving) =>
  Effect.gen(function* () {
    yield* Effect.sync(() => {
      server.draining = true
      if (server.open === 0) Deferred.unsafeDone(server.drained, Effect.void)
    })
    // Connections between requests close now; the others after the request they are answering.
    yield* server.sweeper.closeIdle
    // Interruptible, so the timeout can cut the wait even when this runs as a finalizer.
    yield* Deferred.await(server.drained).pipe(
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
      open: 0,
      draining: false,
      drained: yield* Deferred.make<void>(),
      slots: config.computeSlots === undefined ? undefined : yield* Effect.makeSemaphore(config.computeSlots),
      sweeper: yield* makeIdleSweeper(config.idleTimeout)
    }
    const address = yield* wire.serveRequests(
      { host: config.host, port: config.port, tls: config.tls },
      {
        request: ServerRequest,
        reply: ServerReply,
        idleTimeout: config.idleTimeout,
        idle: server.sweeper,
        maxLine: config.maxLine,
        invalid: (error): ServerReplyType =>
          error._tag === "LineTooLong" ? new InvalidRequest({ message: error.message }) : error,
        open: (control) => accept(server, control)
      }
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
