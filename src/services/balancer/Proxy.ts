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
 * proxy keeps two sockets, a few closures and one entry that a single sweep checks for the connect
 * deadline and the idle timeout.
 */
import { Context, Duration, Effect, Either, Layer, type MetricLabel, Runtime, Schedule } from "effect"
import * as Net from "node:net"
import { formatEndpoint, type ServerId, type ServerLocation } from "../../domain/Server.js"
import { Balancer } from "./Balancer.js"
import * as Metrics from "./Metrics.js"
import { sweepInterval } from "../wire/Idle.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { type Address, type ListenFailed, listenNet, reasonOf } from "../wire/Wire.js"

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

/** One client and the backend it is paired with (or being connected to), from accept to close. */
interface Pair {
  readonly client: Net.Socket
  /** The backend being connected to, or connected; undefined between attempts. */
  backend: Net.Socket | undefined
  server: ServerLocation | undefined
  /** Both sockets connected and carrying bytes. */
  open: boolean
  /** Connecting: when this attempt began. Open: when bytes last moved (as of a sweep). */
  since: number
  /** Bytes read on both sides, as of the last sweep. */
  seen: number
  /** Sockets of the open pair that have closed. */
  closed: number
  /** Backends that turned this client away: shared and empty on the happy path. */
  tried: ReadonlyArray<ServerLocation>
}

const ignore = () => undefined
const noLabels: ReadonlyArray<MetricLabel.MetricLabel> = []
const nothingTried: ReadonlyArray<ServerLocation> = []

export const make = (config: ProxyConfig) =>
  Effect.gen(function* () {
    const balancer = yield* Balancer
    const registry = yield* ServerRegistry
    const runtime = yield* Effect.runtime<never>()
    const clock = yield* Effect.clock
    const log = (message: string) => Runtime.runFork(runtime)(Effect.logWarning(message))
    const connectMs = Duration.toMillis(config.connectTimeout)
    const idleMs = Duration.toMillis(config.idleTimeout)
    const perBackend = new Map<ServerId, number>()
    // Every client, paired or still connecting. One entry per connection serves the connection
    // limit, the drain, and both timeouts: no timer, sweeper entry or closure set apart for each.
    const pairs = new Set<Pair>()
    /** Told when the last pair is gone (the drain waits on it). */
    let whenEmpty: (() => void) | undefined
    const forget = (pair: Pair) => {
      pairs.delete(pair)
      Metrics.proxyOpen.unsafeUpdate(pairs.size, noLabels)
      if (pairs.size > 0 || whenEmpty === undefined) return
      const told = whenEmpty
      whenEmpty = undefined
      told()
    }

    const count = (id: ServerId, delta: number) => {
      const now = (perBackend.get(id) ?? 0) + delta
      if (now === 0) perBackend.delete(id)
      else perBackend.set(id, now)
      registry.unsafeSetActive(id, now)
    }

    // One sweep, Clock-driven, for connect deadlines and idle pairs alike. Idle means no byte either
    // way between two sweeps: read off the sockets' own counters, so carrying data costs nothing.
    const sweep = () => {
      const now = clock.unsafeCurrentTimeMillis()
      for (const pair of pairs) {
        const backend = pair.backend
        if (backend === undefined) continue
        if (!pair.open) {
          if (now - pair.since >= connectMs) failed(pair, backend, "timed out")
          continue
        }
        const seen = pair.client.bytesRead + backend.bytesRead
        if (seen !== pair.seen) {
          pair.seen = seen
          pair.since = now
        } else if (now - pair.since >= idleMs) {
          pair.client.destroy()
          backend.destroy()
        }
      }
    }
    const interval = Duration.min(sweepInterval(config.connectTimeout), sweepInterval(config.idleTimeout))
    yield* Effect.forkScoped(Effect.repeat(Effect.sync(sweep), Schedule.spaced(interval)))

    /** `from`'s bytes to `to`, pausing while `to` is full; a FIN is passed on (half-close). */
    const forward = (from: Net.Socket, to: Net.Socket) => {
      // By hand rather than `pipe`: three listeners instead of the seven `pipe` adds and later removes.
      from.on("data", (chunk: Buffer) => {
        if (!to.write(chunk)) from.pause()
      })
      to.on("drain", () => from.resume())
      from.on("end", () => {
        // Both ways done and every byte handed to the kernel (the usual close): close at once, not
        // shutdown then close — a syscall and an event-loop turn less. The close sends the FIN.
        if (to.readableEnded && to.writableLength === 0 && from.writableLength === 0) to.destroy()
        else to.end()
      })
    }

    /** One socket of an open pair has closed; at the second the pair is gone and counted out. */
    const closedOne = (pair: Pair, server: ServerLocation) => {
      if (++pair.closed < 2) return
      forget(pair)
      count(server.id, -1)
    }

    /** Pairs the client with its now connected backend until both directions are done. */
    const splice = (pair: Pair, backend: Net.Socket, server: ServerLocation) => {
      const client = pair.client
      count(server.id, 1)
      pair.open = true
      pair.since = clock.unsafeCurrentTimeMillis()
      forward(client, backend)
      forward(backend, client)
      backend.on("close", (hadError) => {
        // A reset or error ends both: nothing waits on a dead peer. A clean close means both ways
        // are done here, and the client's side closes by itself once its last bytes are flushed —
        // destroying it now would drop what a slow client has not yet taken.
        if (hadError) client.destroy()
        closedOne(pair, server)
      })
      client.resume()
    }

    /** The attempt on `backend` failed: mark its server dead and try the next, or give up. */
    const failed = (pair: Pair, backend: Net.Socket, reason: string) => {
      const server = pair.server
      pair.backend = undefined
      backend.destroy()
      if (server === undefined) return
      registry.unsafeSetActive(server.id, perBackend.get(server.id) ?? 0)
      Runtime.runFork(runtime)(registry.setState(server.id, "dead"))
      log(`proxy: backend ${server.id} (${formatEndpoint(server)}) failed to connect: ${reason}`)
      pair.tried = [...pair.tried, server]
      if (pair.tried.length < config.attempts) connect(pair)
      else {
        Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.backendsFailed)
        pair.client.destroy()
      }
    }

    /** Finds a backend that accepts the connection; skips, and marks dead, those that do not. */
    const connect = (pair: Pair) => {
      const client = pair.client
      // The client's address is its key (consistent-hash); asked for only then (it is a getpeername call).
      const key = balancer.unsafeKeyed() ? client.remoteAddress : undefined
      const location = balancer.unsafeDetermineServer(pair.tried, key)
      if (Either.isLeft(location) || client.destroyed) {
        if (Either.isLeft(location)) Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.noServer)
        return client.destroy()
      }
      const server = location.right
      const backend = Net.connect({ host: server.host, port: server.port, allowHalfOpen: true, noDelay: true })
      pair.backend = backend
      pair.server = server
      pair.since = clock.unsafeCurrentTimeMillis()
      // One error listener for the socket's whole life: before the connect an error fails the
      // attempt; after it, the close that follows ends the pair.
      backend.on("error", (error) => {
        if (pair.backend === backend && !pair.open) failed(pair, backend, reasonOf(error))
      })
      backend.on("connect", () => {
        if (client.destroyed) return backend.destroy()
        splice(pair, backend, server)
      })
    }

    const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
      client.on("error", ignore)
      Metrics.proxyAccepted.unsafeUpdate(1, noLabels)
      if (pairs.size >= config.maxConnections) {
        Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.limit)
        return client.destroy()
      }
      const pair: Pair = {
        client,
        backend: undefined,
        server: undefined,
        open: false,
        since: 0,
        seen: 0,
        closed: 0,
        tried: nothingTried
      }
      pairs.add(pair)
      Metrics.proxyOpen.unsafeUpdate(pairs.size, noLabels)
      client.on("close", (hadError) => {
        const backend = pair.backend
        const server = pair.server
        if (!pair.open || backend === undefined || server === undefined) {
          // Still connecting (or turned away): drop the attempt.
          forget(pair)
          backend?.destroy()
          return
        }
        // As for the backend: an error ends both, a clean close lets the backend's side flush.
        if (hadError) backend.destroy()
        closedOne(pair, server)
      })
      connect(pair)
    })

    const address = yield* listenNet(server, config)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        // Stop accepting at once; let open connections finish, up to the drain timeout.
        server.close()
        const allClosed = Effect.async<void>((resume) => {
          if (pairs.size === 0) return resume(Effect.void)
          whenEmpty = () => resume(Effect.void)
        })
        // Interruptible, so the timeout can cut the wait inside this finalizer.
        yield* allClosed.pipe(Effect.interruptible, Effect.timeout(config.drainTimeout), Effect.ignore)
        for (const pair of pairs) {
          pair.client.destroy()
          pair.backend?.destroy()
        }
      })
    )
    return Proxy.of({ address, open: Effect.sync(() => pairs.size) })
  })

export const layer = (config: ProxyConfig): Layer.Layer<Proxy, ListenFailed, Balancer | ServerRegistry> =>
  Layer.scoped(Proxy, make(config))
