/**
 * The wire: how any part of effect-lb listens for and opens framed connections. `layer` is TCP
 * (accept through `@effect/platform` `SocketServer`, I/O on the Node socket it hands over);
 * `layerMemory` is an in-process network for tests that are about logic, not sockets, and that
 * must run on the `TestClock`.
 */
import { NodeSocket, NodeSocketServer } from "@effect/platform-node"
import { Context, Duration, Effect, FiberSet, Layer, Option, Schema, type Scope } from "effect"
import * as Net from "node:net"
import { Duplex } from "node:stream"
import { formatEndpoint } from "../domain/Server.js"
import { type Connection, fromDuplex } from "./Connection.js"

/** Where to listen or connect. `port: 0` when listening lets the system pick. */
export interface Address {
  readonly host: string
  readonly port: number
}

export class ConnectFailed extends Schema.TaggedError<ConnectFailed>()("ConnectFailed", {
  endpoint: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot connect to ${this.endpoint}: ${this.reason}`
  }
}

export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  endpoint: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot listen on ${this.endpoint}: ${this.reason}`
  }
}

export interface ServeOptions extends Address {
  readonly maxLine?: number
}

export interface ConnectOptions {
  readonly timeout?: Duration.DurationInput
  readonly maxLine?: number
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
    /** Opens a connection, closed when the scope closes. */
    readonly connect: (
      address: Address,
      options?: ConnectOptions
    ) => Effect.Effect<Connection, ConnectFailed, Scope.Scope>
  }
>() {}

export const defaultConnectTimeout = Duration.seconds(3)

const reasonOf = (error: unknown): string =>
  error instanceof Error
    ? "code" in error && typeof error.code === "string"
      ? error.code
      : error.message
    : String(error)

/** Runs `handler` on a connection and always closes it afterwards, flushing what was written. */
const handle = <R>(
  socket: Duplex & { destroySoon?: () => void },
  peer: string,
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

const tcpServe = <R>(options: ServeOptions, handler: Handler<R>) =>
  Effect.gen(function* () {
    const server = yield* NodeSocketServer.make({ host: options.host, port: options.port, allowHalfOpen: true }).pipe(
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
                const peer = formatEndpoint({ host: socket.remoteAddress ?? "?", port: socket.remotePort ?? 0 })
                return handle(socket, peer, options.maxLine, handler)
              }
            })
          )
        )
      )
      .pipe(Effect.forkScoped)
    const address = server.address
    return address._tag === "TcpAddress" ? { host: address.hostname, port: address.port } : options
  })

const tcpConnect = (address: Address, options: ConnectOptions = {}) => {
  const endpoint = formatEndpoint(address)
  return Effect.acquireRelease(
    Effect.async<Net.Socket, ConnectFailed>((resume) => {
      const socket = Net.createConnection({ host: address.host, port: address.port, noDelay: true })
      const onError = (error: Error) => resume(Effect.fail(new ConnectFailed({ endpoint, reason: reasonOf(error) })))
      socket.once("error", onError)
      socket.once("connect", () => {
        socket.off("error", onError)
        resume(Effect.succeed(socket))
      })
      return Effect.sync(() => socket.destroy())
    }).pipe(
      Effect.timeoutFail({
        duration: options.timeout ?? defaultConnectTimeout,
        onTimeout: () => new ConnectFailed({ endpoint, reason: "timed out" })
      })
    ),
    (socket) => Effect.sync(() => socket.destroySoon())
  ).pipe(
    Effect.flatMap((socket) =>
      fromDuplex(
        socket,
        options.maxLine === undefined ? { peer: endpoint } : { peer: endpoint, maxLine: options.maxLine }
      )
    )
  )
}

/** TCP over Node sockets. */
export const layer: Layer.Layer<Wire> = Layer.succeed(Wire, Wire.of({ serve: tcpServe, connect: tcpConnect }))

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

/** An in-process network: `serve` registers a handler under an address, `connect` pairs two streams. */
export const layerMemory: Layer.Layer<Wire> = Layer.sync(Wire, () => {
  const listeners = new Map<string, (socket: MemoryEnd) => void>()
  let nextPort = 40000
  return Wire.of({
    serve: <R>(options: ServeOptions, handler: Handler<R>) =>
      Effect.gen(function* () {
        const address = { host: options.host, port: options.port === 0 ? nextPort++ : options.port }
        const key = formatEndpoint(address)
        if (listeners.has(key)) return yield* new ListenFailed({ endpoint: key, reason: "EADDRINUSE" })
        const fibers = yield* FiberSet.make()
        const run = yield* FiberSet.runtime(fibers)<R>()
        listeners.set(key, (socket) => {
          run(handle(socket, "memory-client", options.maxLine, handler))
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => listeners.delete(key)))
        return address
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
            peer: formatEndpoint(address),
            ...(options.maxLine === undefined ? {} : { maxLine: options.maxLine })
          })
        )
      )
  })
})
