/**
 * L4 proxy mode: effect-lb in front of any TCP service, where HAProxy's `mode tcp` or nginx's
 * `stream` stands. Each accepted connection is paired with a backend chosen by the current
 * strategy; bytes flow both ways with the streams' own backpressure until both sides are done
 * (a half-close is passed on, not treated as the end). The proxy counts each backend's open
 * connections itself, exactly, for least-connection.
 *
 * A backend that refuses or does not answer the connect is skipped for the next one before a
 * single byte reached the client, and is marked dead until its health probe answers again.
 *
 * Connections live on socket callbacks, not fibers (as on the Locate path): per connection the
 * proxy keeps two sockets, a few closures and an idle-sweeper entry.
 */
import { Context, Duration, Effect, Either, Layer, Runtime } from "effect"
import * as Net from "node:net"
import { formatEndpoint, type ServerId, type ServerLocation } from "../domain/Server.js"
import { Balancer } from "./Balancer.js"
import { makeIdleSweeper } from "./Idle.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { type Address, type ListenFailed, listenNet, reasonOf } from "./Wire.js"

export interface ProxyConfig {
  readonly host: string
  /** 0 lets the system pick. */
  readonly port: number
  /** Client connections past this many are closed at once. */
  readonly maxConnections: number
  /** A backend that has not accepted the connection in this long is skipped. */
  readonly connectTimeout: Duration.DurationInput
  /** Backends tried for one client before it is turned away. */
  readonly attempts: number
  /** A pair with no byte either way for this long is closed. */
  readonly idleTimeout: Duration.DurationInput
  /** On shutdown, open connections may finish for this long. */
  readonly drainTimeout: Duration.DurationInput
}

export const defaults = {
  host: "127.0.0.1",
  maxConnections: 10_000,
  connectTimeout: Duration.seconds(3),
  attempts: 3,
  idleTimeout: Duration.minutes(5),
  drainTimeout: Duration.seconds(10)
} as const

export class Proxy extends Context.Tag("effect-lb/Proxy")<
  Proxy,
  {
    readonly address: Address
    /** Client connections open right now. */
    readonly open: Effect.Effect<number>
  }
>() {}

export const make = (config: ProxyConfig) =>
  Effect.gen(function* () {
    const balancer = yield* Balancer
    const registry = yield* ServerRegistry
    const runtime = yield* Effect.runtime<never>()
    const log = (message: string) => Runtime.runFork(runtime)(Effect.logWarning(message))
    const sweeper = yield* makeIdleSweeper(config.idleTimeout)
    // Connect deadlines ride on a sweeper too: Clock-driven, and no timer per connection.
    const connecting = yield* makeIdleSweeper(config.connectTimeout)
    const perBackend = new Map<ServerId, number>()
    const clients = new Set<Net.Socket>()

    const count = (id: ServerId, delta: number) => {
      const now = (perBackend.get(id) ?? 0) + delta
      if (now === 0) perBackend.delete(id)
      else perBackend.set(id, now)
      registry.unsafeSetActive(id, now)
    }

    /** Pairs two connected sockets until both directions are done. */
    const splice = (client: Net.Socket, backend: Net.Socket, server: ServerLocation) => {
      count(server.id, 1)
      // Idle means no byte either way between two sweeps: read off the sockets' own counters,
      // so carrying data costs nothing extra per chunk.
      const idle = sweeper.unsafeTrack(
        () => {
          client.destroy()
          backend.destroy()
        },
        () => client.bytesRead + backend.bytesRead
      )
      // `end: true`: a FIN from one side is passed on as a FIN to the other (half-close);
      // the other direction keeps flowing until it ends too.
      client.pipe(backend)
      backend.pipe(client)
      let closed = 0
      const onClose = () => {
        // A reset or error on either side ends both: nothing waits on a dead peer.
        client.destroy()
        backend.destroy()
        if (++closed === 2) {
          idle.release()
          count(server.id, -1)
        }
      }
      client.once("close", onClose)
      backend.once("close", onClose)
      client.resume()
    }

    /** Finds a backend that accepts the connection; skips, and marks dead, those that do not. */
    const connect = (client: Net.Socket, tried: Array<ServerLocation>) => {
      const location = balancer.unsafeDetermineServer(tried)
      if (Either.isLeft(location) || client.destroyed) return client.destroy()
      const server = location.right
      const backend = Net.connect({ host: server.host, port: server.port, allowHalfOpen: true, noDelay: true })
      const failed = (reason: string) => {
        backend.destroy()
        registry.unsafeSetActive(server.id, perBackend.get(server.id) ?? 0)
        Runtime.runFork(runtime)(registry.setState(server.id, "dead"))
        log(`proxy: backend ${server.id} (${formatEndpoint(server)}) failed to connect: ${reason}`)
        if (tried.length + 1 < config.attempts) connect(client, [...tried, server])
        else client.destroy()
      }
      const deadline = connecting.unsafeTrack(() => {
        backend.removeAllListeners("error")
        backend.on("error", () => undefined)
        failed("timed out")
      })
      backend.once("error", (error) => {
        deadline.release()
        failed(reasonOf(error))
      })
      backend.once("connect", () => {
        deadline.release()
        backend.removeAllListeners("error")
        backend.on("error", () => undefined)
        if (client.destroyed) return backend.destroy()
        splice(client, backend, server)
      })
    }

    const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
      client.on("error", () => undefined)
      if (clients.size >= config.maxConnections) return client.destroy()
      clients.add(client)
      client.once("close", () => clients.delete(client))
      connect(client, [])
    })

    const address = yield* listenNet(server, config)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        // Stop accepting at once; let open connections finish, up to the drain timeout.
        server.close()
        const allClosed = Effect.async<void>((resume) => {
          const check = () => {
            if (clients.size === 0) resume(Effect.void)
          }
          for (const client of clients) client.once("close", () => setImmediate(check))
          check()
        })
        // Interruptible, so the timeout can cut the wait inside this finalizer.
        yield* allClosed.pipe(Effect.interruptible, Effect.timeout(config.drainTimeout), Effect.ignore)
        for (const client of clients) client.destroy()
      })
    )
    return Proxy.of({ address, open: Effect.sync(() => clients.size) })
  })

export const layer = (config: ProxyConfig): Layer.Layer<Proxy, ListenFailed, Balancer | ServerRegistry> =>
  Layer.scoped(Proxy, make(config))
