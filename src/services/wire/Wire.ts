/**
 * The wire: how any part of effect-lb listens for and opens framed connections. `layer` is TCP:
 * the request ports (the balancer's and the server's) on a `node:net` listener with a session on
 * each socket's callbacks (`serveRequests`); `serve`, a fiber per connection, through
 * `@effect/platform`'s `SocketServer` with I/O on the Node socket it hands over. `layerMemory` is an
 * in-process network for tests that are about logic, not sockets, and that must run on the `TestClock`.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import { Context, Duration, Effect, FiberSet, Layer, Option, Runtime, Schema, type Scope } from "effect"
import * as Net from "node:net"
import { Duplex } from "node:stream"
import * as NodeTls from "node:tls"
import { type Address, formatEndpoint } from "../../domain/Server.js"
import { type Connection, fromDuplex, peerOf } from "./Connection.js"
import { makeIdleSweeper } from "./Idle.js"
import { type RequestPort, runSession, session } from "./RequestPort.js"
import { type Place, Roster } from "./Roster.js"
import { clientOptions, describeTlsReason, type ListenerTls, type Trust } from "./Tls.js"
import { tlsServer } from "./TlsListener.js"

/** Where to listen or connect, and where a connection comes from (the domain's `Address`). */
export type { Address }

export class ConnectFailed extends Schema.TaggedError<ConnectFailed>()("ConnectFailed", {
  endpoint: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot connect to ${this.endpoint}: ${this.reason}`
  }
}

/** What the common reasons a connect fails mean, for a person: `connection refused (ECONNREFUSED)`. */
const connectReasons: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "host name lookup failed"
}

/** A connect failure's reason in words, its code kept in brackets for searching. */
export const describeConnectReason = (reason: string): string => {
  const words = connectReasons[reason]
  return words === undefined ? reason : `${words} (${reason})`
}

/** What the common reasons a listener fails mean, for a person. */
const listenReasons: Record<string, string> = {
  EADDRINUSE: "the address is in use (EADDRINUSE)",
  EACCES: "permission denied (EACCES)",
  EADDRNOTAVAIL: "no such address on this machine (EADDRNOTAVAIL)"
}

export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  endpoint: Schema.String,
  /** The system's error code (`EADDRINUSE`), or its message. */
  reason: Schema.String,
  /** What to do about it, when the program knows (`give --port 0 to let the system pick a free port`). */
  hint: Schema.optional(Schema.String)
}) {
  override get message(): string {
    const hint = this.hint === undefined ? "" : `; ${this.hint}`
    return `cannot listen on ${this.endpoint}: ${listenReasons[this.reason] ?? this.reason}${hint}`
  }
}

export interface ListenOptions extends Address {
  /** Serve TLS with this certificate (reloadable): a plain-text client is refused at its first bytes. */
  readonly tls?: ListenerTls | undefined
}

export interface ServeOptions extends ListenOptions {
  readonly maxLine?: number
}

export interface ConnectOptions {
  /** The whole connect, TLS handshake included. */
  readonly timeout?: Duration.DurationInput
  readonly maxLine?: number
  /** Speak TLS, accepting the peer's certificate from these CAs (and only for the host connected to). */
  readonly tls?: Trust | undefined
}

export type Handler<R> = (connection: Connection) => Effect.Effect<void, never, R>

export class Wire extends Context.Tag("effect-lb/Wire")<
  Wire,
  {
    /** Accepts connections until the scope closes, one fiber per connection; returns the bound address. */
    readonly serve: <R>(
      options: ServeOptions,
      handler: Handler<R>
    ) => Effect.Effect<Address, ListenFailed, Scope.Scope | R>
    /** Accepts connections and answers their requests through `port` (the hot path; see RequestPort). */
    readonly serveRequests: <Req, ReqI, Rep, RepI, R>(
      options: ListenOptions,
      port: RequestPort<Req, ReqI, Rep, RepI, R>
    ) => Effect.Effect<Address, ListenFailed, Scope.Scope | R>
    /** Opens a connection, closed when the scope closes. */
    readonly connect: (
      address: Address,
      options?: ConnectOptions
    ) => Effect.Effect<Connection, ConnectFailed, Scope.Scope>
  }
>() {}

export const defaultConnectTimeout = Duration.seconds(3)

/**
 * Connections the kernel may hold completed but not yet accepted. Node's default (511) drops the
 * handshakes of a burst beyond it, which then trickle in seconds later; like HAProxy, match it to
 * the connection limit (the kernel caps it at net.core.somaxconn).
 */
const backlog = 4096

export const reasonOf = (error: unknown): string =>
  error instanceof Error
    ? "code" in error && typeof error.code === "string"
      ? error.code
      : error.message
    : String(error)

/** Runs `handler` on a connection and always closes it afterwards, flushing what was written. */
const handle = <R>(
  socket: Duplex & { destroySoon?: () => void },
  peer: Address,
  maxLine: number | undefined,
  handler: Handler<R>
) =>
  Effect.acquireUseRelease(fromDuplex(socket, maxLine === undefined ? { peer } : { peer, maxLine }), handler, () =>
    Effect.sync(() => {
      if (socket.destroySoon !== undefined) socket.destroySoon()
      else socket.end(() => socket.destroy())
    })
  )

// ---- TCP -------------------------------------------------------------------------------------------

/** Listens through `@effect/platform`'s SocketServer, one fiber per connection, on the Node socket it hands over. */
const tcpListen = <R>(options: Address, onSocket: (socket: Net.Socket) => Effect.Effect<void, never, R>) =>
  Effect.gen(function* () {
    const server = yield* NodeSocketServer.make({
      host: options.host,
      port: options.port,
      allowHalfOpen: true,
      backlog
    }).pipe(
      Effect.mapError((error) => new ListenFailed({ endpoint: formatEndpoint(options), reason: reasonOf(error.cause) }))
    )
    yield* server
      .run(() =>
        Effect.serviceOption(NodeSocket.NetSocket).pipe(
          Effect.flatMap(
            Option.match({
              onNone: () => Effect.logError("a connection arrived without its Node socket"),
              onSome: (socket) => {
                socket.setNoDelay(true)
                return onSocket(socket)
              }
            })
          )
        )
      )
      .pipe(Effect.forkScoped)
    const address = server.address
    return address._tag === "TcpAddress" ? { host: address.hostname, port: address.port } : options
  })

const tcpServe = <R>(options: ServeOptions, handler: Handler<R>) => {
  const onSocket = (socket: Net.Socket) => handle(socket, peerOf(socket), options.maxLine, handler)
  return options.tls === undefined ? tcpListen(options, onSocket) : tlsListen(options, options.tls, onSocket)
}

/** `tcpListen` over TLS: one fiber per connection once its handshake is done. */
const tlsListen = <R>(
  options: Address,
  tls: ListenerTls,
  onSocket: (socket: Net.Socket) => Effect.Effect<void, never, R>
) =>
  Effect.gen(function* () {
    const fibers = yield* FiberSet.make()
    const run = yield* FiberSet.runtime(fibers)<R>()
    const open = new Roster<Net.Socket>()
    const server = yield* tlsServer(
      tls,
      (socket) => {
        run(onSocket(socket))
      },
      open
    )
    const address = yield* listenNet(server, options)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        server.close()
        for (const socket of open) socket.destroy()
      })
    )
    return address
  })

/**
 * Starts a `node:net` listener (with the backlog above) and returns where it listens. Errors after
 * that (say, out of file descriptors on accept) are logged, not fatal. Closing is the caller's.
 */
export const listenNet = (server: Net.Server, options: Address): Effect.Effect<Address, ListenFailed> =>
  Effect.flatMap(Effect.runtime<never>(), (runtime) =>
    Effect.async<Address, ListenFailed>((resume) => {
      const endpoint = formatEndpoint(options)
      const onError = (error: Error) => resume(Effect.fail(new ListenFailed({ endpoint, reason: reasonOf(error) })))
      server.once("error", onError)
      server.listen({ port: options.port, host: options.host, backlog }, () => {
        server.off("error", onError)
        server.on("error", (error) =>
          Runtime.runFork(runtime)(Effect.logWarning(`listener on ${endpoint}: ${reasonOf(error)}`))
        )
        const address = server.address()
        resume(
          Effect.succeed(
            address !== null && typeof address === "object" ? { host: address.address, port: address.port } : options
          )
        )
      })
    })
  )

/**
 * The request ports' listener is `node:net` itself, held as a scoped resource: measured on the
 * Locate path, SocketServer's fiber per connection costs about 47 µs of CPU per connection — more
 * than node's whole per-connection cost — while a request port needs no fiber per connection at all.
 * Idle, a connection then holds little more than plain Node's does: the server port went from
 * 17.5–27.8 KB to under 4 KB of RSS per idle connection, and the balancer port's live heap is
 * ~1.7 KB against a bare node:net socket's ~1.55 KB (`npm run bench:memory`).
 */
const tcpServeRequests = <Req, ReqI, Rep, RepI, R>(
  options: ListenOptions,
  port: RequestPort<Req, ReqI, Rep, RepI, R>
) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<R>()
    const sweeper = port.idle ?? (yield* makeIdleSweeper(port.idleTimeout))
    // A roster, not a Set: see Roster.ts.
    const sockets = new Roster<Net.Socket>()
    const leave = (place: Place<Net.Socket>) => sockets.leave(place)
    const onSocket = (socket: Net.Socket) =>
      runSession(socket, port, runtime, sweeper, peerOf, leave, sockets.join(socket))
    const server =
      options.tls === undefined
        ? Net.createServer({ noDelay: true, allowHalfOpen: true }, onSocket)
        : yield* tlsServer(options.tls, onSocket, sockets)
    const address = yield* listenNet(server, options)
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        for (const socket of sockets) socket.destroy()
      })
    )
    return address
  })

const ignoreError = () => undefined

/** A TCP connection, then (with `trust`) its TLS handshake: the socket to talk over once both are done. */
const openSocket = (address: Address, endpoint: string, trust: Trust | undefined) =>
  Effect.async<Net.Socket, ConnectFailed>((resume) => {
    const socket = Net.createConnection({ host: address.host, port: address.port, noDelay: true })
    let secure: NodeTls.TLSSocket | undefined
    const onError = (error: Error) => resume(Effect.fail(new ConnectFailed({ endpoint, reason: reasonOf(error) })))
    socket.once("error", onError)
    socket.once("connect", () => {
      socket.off("error", onError)
      if (trust === undefined) return resume(Effect.succeed(socket))
      const tls = NodeTls.connect(clientOptions(socket, address.host, trust))
      secure = tls
      // The raw socket's errors reach us through the TLS socket; its own listener only keeps them from being thrown.
      socket.on("error", ignoreError)
      const onTlsError = (error: Error) =>
        resume(Effect.fail(new ConnectFailed({ endpoint, reason: describeTlsReason(error, trust.option) })))
      tls.once("error", onTlsError)
      tls.once("secureConnect", () => {
        tls.off("error", onTlsError)
        tls.on("error", ignoreError)
        resume(Effect.succeed(tls))
      })
    })
    return Effect.sync(() => {
      secure?.destroy()
      socket.destroy()
    })
  })

const tcpConnect = (address: Address, options: ConnectOptions = {}) => {
  const endpoint = formatEndpoint(address)
  return Effect.acquireRelease(
    openSocket(address, endpoint, options.tls).pipe(
      Effect.timeoutFail({
        duration: options.timeout ?? defaultConnectTimeout,
        onTimeout: () => new ConnectFailed({ endpoint, reason: "timed out" })
      })
    ),
    (socket) => Effect.sync(() => socket.destroySoon())
  ).pipe(
    Effect.flatMap((socket) =>
      fromDuplex(socket, {
        peer: address,
        localHost: socket.localAddress,
        ...(options.maxLine === undefined ? {} : { maxLine: options.maxLine })
      })
    )
  )
}

/** TCP over Node sockets. */
export const layer: Layer.Layer<Wire> = Layer.succeed(
  Wire,
  Wire.of({ serve: tcpServe, serveRequests: tcpServeRequests, connect: tcpConnect })
)

// ---- in memory -------------------------------------------------------------------------------------

/** One end of an in-memory connection; destroying one end resets the other, as TCP would. */
class MemoryEnd extends Duplex {
  peer: MemoryEnd | undefined
  override _read(): void {}
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.peer?.push(chunk)
    callback()
  }
  override _final(callback: (error?: Error | null) => void): void {
    this.peer?.push(null)
    callback()
  }
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const peer = this.peer
    this.peer = undefined
    if (peer !== undefined && !peer.destroyed) {
      peer.peer = undefined
      peer.destroy(
        this.writableFinished ? undefined : Object.assign(new Error("connection reset"), { code: "ECONNRESET" })
      )
    }
    callback(error)
  }
}

/** Where an in-memory connection comes from, as its server sees it: memory has no addresses. */
const memoryClient: Address = { host: "memory-client", port: 0 }
const memoryClientOf = (): Address => memoryClient

/** An in-process network: `serve` registers a handler under an address, `connect` pairs two streams. */
export const layerMemory: Layer.Layer<Wire> = Layer.sync(Wire, () => {
  const listeners = new Map<string, (socket: MemoryEnd) => void>()
  let nextPort = 40000
  const listen = <R>(options: Address, onSocket: (socket: MemoryEnd) => Effect.Effect<void, never, R>) =>
    Effect.gen(function* () {
      const address = { host: options.host, port: options.port === 0 ? nextPort++ : options.port }
      const key = formatEndpoint(address)
      if (listeners.has(key)) return yield* new ListenFailed({ endpoint: key, reason: "EADDRINUSE" })
      const fibers = yield* FiberSet.make()
      const run = yield* FiberSet.runtime(fibers)<R>()
      listeners.set(key, (socket) => {
        run(onSocket(socket))
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => listeners.delete(key)))
      return address
    })
  return Wire.of({
    serve: <R>(options: ServeOptions, handler: Handler<R>) =>
      listen(options, (socket) => handle(socket, memoryClient, options.maxLine, handler)),
    serveRequests: <Req, ReqI, Rep, RepI, R>(options: ListenOptions, port: RequestPort<Req, ReqI, Rep, RepI, R>) =>
      Effect.gen(function* () {
        const runtime = yield* Effect.runtime<R>()
        const sweeper = port.idle ?? (yield* makeIdleSweeper(port.idleTimeout))
        return yield* listen(options, (socket) =>
          session(socket, port, runtime, sweeper, memoryClientOf).pipe(
            Effect.ensuring(Effect.sync(() => socket.destroy()))
          )
        )
      }),
    connect: (address: Address, options: ConnectOptions = {}) =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          const endpoint = formatEndpoint(address)
          const listener = listeners.get(endpoint)
          if (listener === undefined) return Effect.fail(new ConnectFailed({ endpoint, reason: "ECONNREFUSED" }))
          const client = new MemoryEnd()
          const server = new MemoryEnd()
          client.peer = server
          server.peer = client
          listener(server)
          return Effect.succeed(client)
        }),
        (socket) => Effect.sync(() => socket.end(() => socket.destroy()))
      ).pipe(
        Effect.flatMap((socket) =>
          fromDuplex(socket, {
            peer: address,
            ...(options.maxLine === undefined ? {} : { maxLine: options.maxLine })
          })
        )
      )
  })
})
