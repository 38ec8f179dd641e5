/**
 * L4 proxy mode: effect-lb in front of any TCP service, where HAProxy's `mode tcp` or nginx's
 * `stream` stands. Each accepted connection is paired with a backend chosen by the current
 * strategy; bytes flow both ways with the streams' own backpressure until both sides are done
 * (a half-close is passed on, not treated as the end; a reset is passed on as a reset). The proxy counts each backend's open
 * connections itself, exactly, for least-connection.
 *
 * A backend that refuses or does not answer the connect is skipped for the next one before a
 * single byte reached the client, and is marked dead until its health probe answers again.
 *
 * The PROXY protocol (`wire/ProxyProtocol.ts`) on either side, each off by default: `sendProxy`
 * starts every backend connection with a header naming the client; `acceptProxy` requires one from
 * every client and takes the client's address from it.
 *
 * TLS on either side, each off by default (`wire/Tls.ts`): `tls` terminates it on the listener (the
 * handshake, after the PROXY header if one is required, within the connect timeout, before any
 * backend is picked); a server whose location says `tls: true` is spoken to in TLS (after the PROXY
 * header, as HAProxy's `send-proxy` with `ssl` does). A TLS socket only carries the bytes: the TCP
 * socket under it is the one watched for the close and reset to pass a reset on.
 *
 * Connections live on socket callbacks, not fibers (as on the Locate path): per connection the
 * proxy keeps two sockets, a few closures and one entry that a single sweep checks for the connect
 * deadline and the idle timeout.
 */
import { type Clock, Context, Duration, Effect, Either, Layer, type MetricLabel, Runtime } from "effect"
import * as Net from "node:net"
import * as NodeTls from "node:tls"
import { formatEndpoint, type ServerId, type ServerLocation } from "../../domain/Server.js"
import * as AccessLog from "./AccessLog.js"
import { Balancer } from "./Balancer.js"
import { ConnectionTable, type Entry, type SweepActions } from "./ConnectionTable.js"
import * as Metrics from "./Metrics.js"
import { ServerRegistry } from "./ServerRegistry.js"
import * as PP from "../wire/ProxyProtocol.js"
import {
  clientOptions,
  describeTlsReason,
  type ListenerTls,
  systemTrust,
  type Trust,
  type TrustRef
} from "../wire/Tls.js"
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
  /** One access-log line per client connection (`--access-log`). */
  readonly accessLog?: boolean
  /** Each backend connection starts with a PROXY protocol header of this version (`--send-proxy`). */
  readonly sendProxy?: PP.Version
  /**
   * Each client connection must start with a PROXY protocol header, v1 or v2, within the connect
   * timeout (`--accept-proxy`); its client address is the connection's.
   */
  readonly acceptProxy?: boolean
  /** Terminate TLS on the listener with this certificate (`--tls-cert`, `--tls-key`). */
  readonly tls?: ListenerTls | undefined
  /** The CAs a backend that speaks TLS is checked against (`--backend-ca`); default: the system's. */
  readonly backendTrust?: TrustRef | undefined
}

/** What the proxy has done since it started, as the admin API reports it. */
export interface ProxyFigures {
  /** Client connections open now. */
  readonly open: number
  /** Client connections accepted in all. */
  readonly accepted: number
  /** Bytes from clients, and to them (connections still open included). */
  readonly bytesIn: number
  readonly bytesOut: number
  /** Client connections closed unserved, by reason. */
  readonly turnedAway: {
    readonly limit: number
    readonly noServer: number
    readonly backendsFailed: number
    /** With `--accept-proxy` only: no valid PROXY protocol header in time. */
    readonly proxyHeader?: number
    /** With TLS only: the handshake failed or did not finish in time. */
    readonly tlsHandshake?: number
  }
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
    readonly figures: Effect.Effect<ProxyFigures>
    /** A reload's PROXY protocol settings, for the connections accepted from now on. */
    readonly reconfigure: (change: ProxyProtocolSettings) => Effect.Effect<void>
  }
>() {}

/** The PROXY protocol on either side: what a reload changes in place. */
export type ProxyProtocolSettings = Pick<ProxyConfig, "sendProxy" | "acceptProxy">

/** One client and the backend it is paired with (or being connected to), from accept to close. */
interface Pair extends Entry {
  /** The accepted TCP socket: its close and reset are the client's. */
  readonly raw: Net.Socket
  /** What the client's bytes are read from and written to: `raw`, or the TLS socket over it. */
  client: Net.Socket
  /** With TLS on the listener: the handshake is under way. */
  handshaking: boolean
  /** The backend's TCP socket, being connected to, or connected; undefined between attempts. */
  backend: Net.Socket | undefined
  server: ServerLocation | undefined
  /** Sockets of the open pair that have closed. */
  closed: number
  /** Backends that turned this client away: shared and empty on the happy path. */
  tried: ReadonlyArray<ServerLocation>
  /** With an access log only: the client's address and when it was accepted (Clock milliseconds). */
  peer: string
  accepted: number
  /** With `--accept-proxy` only: the header being read (until it is complete), and what it said. */
  reader: PP.HeaderReader | undefined
  origin: PP.Header | undefined
  /** The client's first bytes, read with its header: the backend gets them first. */
  early: Buffer | undefined
}

const ignore = () => undefined
const noLabels: ReadonlyArray<MetricLabel.MetricLabel> = []
const nothingTried: ReadonlyArray<ServerLocation> = []

const newPair = (client: Net.Socket): Pair => ({
  raw: client,
  client,
  handshaking: false,
  backend: undefined,
  server: undefined,
  open: false,
  since: 0,
  seen: 0,
  place: undefined,
  closed: 0,
  tried: nothingTried,
  peer: "",
  accepted: 0,
  reader: undefined,
  origin: undefined,
  early: undefined
})

/** The proxy's running totals (counted on its paths: an increment each, no allocation). */
interface Totals {
  accepted: number
  /** Bytes of the connections already closed. */
  bytesIn: number
  bytesOut: number
  limit: number
  noServer: number
  backendsFailed: number
  proxyHeader: number
  tlsHandshake: number
}

/** What every connection's callbacks share: made once per proxy, never per connection. */
interface Shared {
  /** Read per connection: a reload replaces it whole. */
  config: ProxyConfig
  readonly balancer: Balancer["Type"]
  readonly registry: ServerRegistry["Type"]
  readonly clock: Clock.Clock
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => unknown
  /**
   * Every client, paired or still connecting. One entry per connection serves the connection
   * limit, the drain, and both timeouts: no timer, sweeper entry or closure set apart for each.
   */
  readonly pairs: ConnectionTable<Pair>
  /** Open pairs per backend, counted here exactly (least-connection reads them). */
  readonly perBackend: Map<ServerId, number>
  readonly totals: Totals
  /** Present only with `--access-log`. */
  readonly accessLog: AccessLog.AccessLog | undefined
  /** With TLS on the listener: the server that runs the handshakes (it does not listen), and the pairs in one by peer address. */
  tlsServer: NodeTls.Server | undefined
  readonly handshakes: Map<string, Pair>
  readonly backendTrust: TrustRef
  /** The last TLS session with each backend that speaks TLS, to resume (bounded: see `rememberSession`). */
  readonly sessions: Map<ServerId, { readonly trust: Trust; readonly session: Buffer }>
}

/** Sessions kept, at most; past it the map starts over (a resumption lost costs one full handshake). */
const maxSessions = 10_000

const rememberSession = (
  shared: Shared,
  id: ServerId,
  session: { readonly trust: Trust; readonly session: Buffer }
) => {
  if (shared.sessions.size >= maxSessions && !shared.sessions.has(id)) shared.sessions.clear()
  shared.sessions.set(id, session)
}

/** The access-log line of a connection that ends now (with an access log only). */
const logged = (shared: Shared, pair: Pair, outcome: AccessLog.AccessOutcome) => {
  const now = shared.clock.unsafeCurrentTimeMillis()
  shared.accessLog?.unsafeWrite({
    kind: "proxy",
    client: pair.peer,
    server: pair.server,
    durationMs: now - pair.accepted,
    bytesIn: pair.client.bytesRead,
    bytesOut: pair.client.bytesWritten,
    outcome,
    at: now
  })
}

const forget = (shared: Shared, pair: Pair) => {
  shared.pairs.leave(pair)
  Metrics.proxyOpen.unsafeUpdate(shared.pairs.size, noLabels)
}

const count = (shared: Shared, id: ServerId, delta: number) => {
  const now = (shared.perBackend.get(id) ?? 0) + delta
  if (now === 0) shared.perBackend.delete(id)
  else shared.perBackend.set(id, now)
  shared.registry.unsafeSetActive(id, now)
}

/** A new client: admitted under the connection limit, then paired with a backend. */
const accept = (shared: Shared, client: Net.Socket) => {
  client.on("error", ignore)
  Metrics.proxyAccepted.unsafeUpdate(1, noLabels)
  shared.totals.accepted += 1
  const pair = shared.pairs.admit(client, newPair)
  if (pair === undefined) {
    Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.limit)
    shared.totals.limit += 1
    if (shared.accessLog !== undefined) logTurnedAway(shared, client)
    return client.destroy()
  }
  if (shared.accessLog !== undefined) {
    pair.peer = `${formatEndpoint({ host: client.remoteAddress ?? "?", port: client.remotePort ?? 0 })}`
    pair.accepted = shared.clock.unsafeCurrentTimeMillis()
  }
  Metrics.proxyOpen.unsafeUpdate(shared.pairs.size, noLabels)
  client.on("close", (hadError) => {
    const backend = pair.backend
    const server = pair.server
    // The client went away, or was closed, before its TLS handshake was done.
    if (pair.handshaking) handshakeFailed(shared, pair, { code: "ECONNRESET" })
    if (!pair.open || backend === undefined || server === undefined) {
      // Still connecting (or turned away): drop the attempt.
      forget(shared, pair)
      backend?.destroy()
      return
    }
    // As for the backend: a reset is passed on as a reset, a clean close lets the backend's side flush.
    if (hadError) reset(backend)
    closedOne(shared, pair, server)
  })
  if (shared.config.acceptProxy === true) awaitHeader(shared, pair)
  else secureThenConnect(shared, pair)
}

/**
 * `--accept-proxy`: reads the client's PROXY protocol header, then connects as for any client. The
 * connect deadline covers the wait (the sweep finds a pair still reading); a header that is
 * malformed or cut short by the client's FIN turns the client away, counted; nothing is passed on.
 */
const awaitHeader = (shared: Shared, pair: Pair) => {
  const client = pair.client
  const reader = new PP.HeaderReader()
  pair.reader = reader
  pair.since = shared.clock.unsafeCurrentTimeMillis()
  const done = () => {
    client.pause()
    client.removeListener("data", onData)
    client.removeListener("end", onEnd)
    pair.reader = undefined
  }
  const onData = (chunk: Buffer) => {
    const decoded = reader.push(chunk)
    if (decoded._tag === "Incomplete") return
    done()
    if (decoded._tag === "Refused") return refuseHeader(shared, pair, decoded.reason)
    if (reader.rest.length > 0) pair.early = reader.rest
    if (decoded.header._tag === "Proxied") {
      pair.origin = decoded.header
      if (shared.accessLog !== undefined) pair.peer = formatEndpoint(decoded.header.source)
    }
    secureThenConnect(shared, pair)
  }
  // A connect and a close with no byte (a TCP health check) is not a refusal; a header cut short is.
  const onEnd = () => {
    done()
    if (reader.pending === 0) return pair.client.destroy()
    refuseHeader(shared, pair, "the client closed before its header was complete")
  }
  client.on("data", onData)
  client.on("end", onEnd)
  client.resume()
}

/** A client without a valid PROXY protocol header: closed, counted and logged. */
const refuseHeader = (shared: Shared, pair: Pair, reason: string) => {
  Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.proxyHeader)
  shared.totals.proxyHeader += 1
  if (shared.accessLog !== undefined) logged(shared, pair, "bad proxy header")
  const from = formatEndpoint({ host: pair.client.remoteAddress ?? "?", port: pair.client.remotePort ?? 0 })
  shared.runFork(
    Effect.logWarning(`proxy: refused a connection from ${from}: no valid PROXY protocol header (${reason})`)
  )
  pair.client.destroy()
}

/** The peer address a TCP socket and the TLS socket over it share: how a finished handshake finds its pair. */
const peerKey = (socket: Net.Socket) => `${socket.remoteAddress ?? ""}|${socket.remotePort ?? 0}`

/** With TLS on the listener, the handshake first (within the connect deadline), then a backend. */
const secureThenConnect = (shared: Shared, pair: Pair) => {
  const tlsServer = shared.tlsServer
  if (tlsServer === undefined) return connect(shared, pair)
  const raw = pair.raw
  pair.handshaking = true
  pair.since = shared.clock.unsafeCurrentTimeMillis()
  // What came after a PROXY header is the start of the handshake: the TLS socket reads it first.
  if (pair.early !== undefined) raw.unshift(pair.early)
  pair.early = undefined
  shared.handshakes.set(peerKey(raw), pair)
  tlsServer.emit("connection", raw)
}

/** A client's handshake is done: its bytes now come through the TLS socket. */
const secured = (shared: Shared, socket: NodeTls.TLSSocket) => {
  const key = peerKey(socket)
  const pair = shared.handshakes.get(key)
  if (pair === undefined || !pair.handshaking) return socket.destroy()
  shared.handshakes.delete(key)
  pair.handshaking = false
  pair.client = socket
  socket.on("error", ignore)
  connect(shared, pair)
}

/** A handshake failed, or the client left or ran out of time during it: counted, logged (at most every 10 s), closed. */
const handshakeFailed = (shared: Shared, pair: Pair, error: unknown) => {
  const raw = pair.raw
  shared.handshakes.delete(peerKey(raw))
  pair.handshaking = false
  Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.tlsHandshake)
  shared.totals.tlsHandshake += 1
  shared.config.tls?.failed(error, formatEndpoint({ host: raw.remoteAddress ?? "?", port: raw.remotePort ?? 0 }))
  if (shared.accessLog !== undefined) logged(shared, pair, "tls handshake failed")
  raw.destroy()
}

/** The server that runs the listener's handshakes: it does not listen, the proxy hands it each client. */
const handshaker = (shared: Shared, tls: ListenerTls) => {
  const server = NodeTls.createServer({
    ...tls.options(),
    allowHalfOpen: true,
    // A backstop only: the sweep's connect deadline comes first.
    handshakeTimeout: Duration.toMillis(shared.config.connectTimeout) + 5_000
  })
  server.on("secureConnection", (socket) => secured(shared, socket))
  server.on("tlsClientError", (error, socket) => {
    // No address: a socket the proxy itself closed, already counted.
    if (socket.remoteAddress === undefined) return
    const pair = shared.handshakes.get(peerKey(socket))
    if (pair !== undefined && pair.handshaking) handshakeFailed(shared, pair, error)
  })
  tls.attach(server)
  return server
}

/** Finds a backend that accepts the connection; skips, and marks dead, those that do not. */
const connect = (shared: Shared, pair: Pair) => {
  const client = pair.client
  // The client's address is its key (consistent-hash); asked for only then (it is a getpeername call).
  // With `--accept-proxy`, the address the header gave.
  const key = shared.balancer.unsafeKeyed()
    ? pair.origin?._tag === "Proxied"
      ? pair.origin.source.host
      : client.remoteAddress
    : undefined
  const location = shared.balancer.unsafeDetermineServer(pair.tried, key)
  if (Either.isLeft(location) || client.destroyed) {
    if (Either.isLeft(location)) {
      Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.noServer)
      shared.totals.noServer += 1
      if (shared.accessLog !== undefined) logged(shared, pair, "no server")
    }
    return pair.raw.destroy()
  }
  const server = location.right
  const backend = Net.connect({ host: server.host, port: server.port, allowHalfOpen: true, noDelay: true })
  pair.backend = backend
  pair.server = server
  pair.since = shared.clock.unsafeCurrentTimeMillis()
  // One error listener for the socket's whole life: before the connect an error fails the
  // attempt; after it, the close that follows ends the pair.
  backend.on("error", (error) => {
    if (pair.backend === backend && !pair.open) failed(shared, pair, backend, reasonOf(error))
  })
  backend.on("connect", () => {
    if (client.destroyed) return backend.destroy()
    if (server.tls !== true) return splice(shared, pair, backend, server)
    // The PROXY protocol header goes first, in clear, as HAProxy sends it before its own TLS.
    if (shared.config.sendProxy !== undefined) backend.write(proxyHeader(shared.config.sendProxy, pair))
    secureBackend(shared, pair, backend, server)
  })
}

/** A backend that speaks TLS: the handshake, within the same connect deadline, then the pair is spliced. */
const secureBackend = (shared: Shared, pair: Pair, backend: Net.Socket, server: ServerLocation) => {
  const trust = shared.backendTrust.current
  // A session made under another trust (before a reload changed the CA) is not resumed.
  const known = shared.sessions.get(server.id)
  const secure = NodeTls.connect(
    clientOptions(backend, server.host, trust, known?.trust === trust ? known.session : undefined)
  )
  secure.once("session", (session: Buffer) => rememberSession(shared, server.id, { trust, session }))
  const onError = (error: Error) => {
    if (pair.backend === backend && !pair.open)
      failed(shared, pair, backend, describeTlsReason(error, shared.backendTrust.current.option ?? "--backend-ca"))
  }
  secure.once("error", onError)
  secure.once("secureConnect", () => {
    secure.off("error", onError)
    secure.on("error", ignore)
    if (pair.client.destroyed || pair.backend !== backend) return backend.destroy()
    splice(shared, pair, secure, server)
  })
}

/** The attempt on `backend` failed: mark its server dead and try the next, or give up. */
const failed = (shared: Shared, pair: Pair, backend: Net.Socket, reason: string) => {
  const server = pair.server
  pair.backend = undefined
  backend.destroy()
  if (server === undefined) return
  shared.registry.unsafeSetActive(server.id, shared.perBackend.get(server.id) ?? 0)
  Metrics.unsafeConnectFailed(server.id)
  shared.registry.unsafeFailed(server.id, "connect")
  shared.runFork(shared.registry.setState(server.id, "dead"))
  shared.runFork(Effect.logWarning(`proxy: backend ${backendName(server)} failed to connect: ${reason}`))
  pair.tried = [...pair.tried, server]
  if (pair.tried.length < shared.config.attempts) connect(shared, pair)
  else {
    Metrics.proxyTurnedAway.unsafeUpdate(1, Metrics.turnedAwayLabels.backendsFailed)
    shared.totals.backendsFailed += 1
    if (shared.accessLog !== undefined) logged(shared, pair, "backend failed")
    pair.raw.destroy()
  }
}

/**
 * Pairs the client with its now connected backend until both directions are done. `backend` carries
 * the bytes (the TLS socket, with TLS); `pair.backend`, the TCP socket, is watched for the close.
 */
const splice = (shared: Shared, pair: Pair, backend: Net.Socket, server: ServerLocation) => {
  const client = pair.client
  count(shared, server.id, 1)
  pair.open = true
  pair.since = shared.clock.unsafeCurrentTimeMillis()
  // Over plain TCP, the PROXY protocol header and what the client sent with its own header, in one
  // write before anything the client sends next (over TLS the header went before the handshake).
  const header =
    shared.config.sendProxy === undefined || backend !== pair.backend
      ? undefined
      : proxyHeader(shared.config.sendProxy, pair)
  const early = pair.early
  pair.early = undefined
  const first = header === undefined ? early : early === undefined ? header : Buffer.concat([header, early])
  if (first !== undefined) backend.write(first)
  forward(client, backend)
  forward(backend, client)
  // With --accept-proxy the client was read before the pair was made (a paused socket still reads):
  // a FIN that came meanwhile has already been seen, so it is passed on here.
  if (shared.config.acceptProxy === true && client.readableEnded) backend.end()
  pair.backend?.on("close", (hadError) => {
    // A reset or error ends both, and the client is told with a reset: a clean FIN would make an
    // aborted stream look complete. A clean close means both ways are done here, and the client's
    // side closes by itself once its last bytes are flushed — destroying it now would drop what a
    // slow client has not yet taken.
    if (hadError) reset(pair.raw)
    // Passive health: a reset counts against the backend, a clean end ends its run of failures.
    if (hadError) shared.registry.unsafeFailed(server.id, "reset")
    else shared.registry.unsafeSucceeded(server.id)
    closedOne(shared, pair, server)
  })
  client.resume()
}

/** The PROXY protocol header (`--send-proxy`) naming the client: the one it came with, or its own address. */
const proxyHeader = (version: PP.Version, pair: Pair): Buffer => {
  const client = pair.raw
  return PP.encode(
    version,
    pair.origin ??
      PP.headerOf(
        { host: client.remoteAddress ?? "", port: client.remotePort ?? 0 },
        { host: client.localAddress ?? "", port: client.localPort ?? 0 }
      )
  )
}

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

/**
 * Closes `socket` with an RST rather than a FIN: its peer sees ECONNRESET, as it would have without
 * the proxy between them (what it had not yet read is dropped, as a reset drops it).
 */
const reset = (socket: Net.Socket) => {
  if (!socket.destroyed) socket.resetAndDestroy()
}

/** One socket of an open pair has closed; at the second the pair is gone and counted out. */
const closedOne = (shared: Shared, pair: Pair, server: ServerLocation) => {
  if (++pair.closed < 2) return
  forget(shared, pair)
  count(shared, server.id, -1)
  shared.totals.bytesIn += pair.client.bytesRead
  shared.totals.bytesOut += pair.client.bytesWritten
  if (shared.accessLog !== undefined) logged(shared, pair, "proxied")
}

/** A backend in a log line: its id, and its address when the id is not already that. */
const backendName = (server: ServerLocation) => {
  const address = formatEndpoint(server)
  return server.id === address ? address : `${server.id} at ${address}`
}

/** A client turned away at the connection limit: never paired, so no record of it is kept. */
const logTurnedAway = (shared: Shared, client: Net.Socket) =>
  shared.accessLog?.unsafeWrite({
    kind: "proxy",
    client: formatEndpoint({ host: client.remoteAddress ?? "?", port: client.remotePort ?? 0 }),
    server: undefined,
    durationMs: 0,
    bytesIn: 0,
    bytesOut: 0,
    outcome: "turned away",
    at: shared.clock.unsafeCurrentTimeMillis()
  })

/** The totals, with the bytes of the connections still open added in. */
const figuresOf = (shared: Shared): ProxyFigures => {
  const { totals } = shared
  let bytesIn = totals.bytesIn
  let bytesOut = totals.bytesOut
  for (const pair of shared.pairs) {
    if (!pair.open) continue
    bytesIn += pair.client.bytesRead
    bytesOut += pair.client.bytesWritten
  }
  return {
    open: shared.pairs.size,
    accepted: totals.accepted,
    bytesIn,
    bytesOut,
    turnedAway: {
      limit: totals.limit,
      noServer: totals.noServer,
      backendsFailed: totals.backendsFailed,
      ...(shared.config.acceptProxy === true ? { proxyHeader: totals.proxyHeader } : {}),
      ...(shared.config.tls === undefined ? {} : { tlsHandshake: totals.tlsHandshake })
    }
  }
}

/** What the sweep does with a pair: idle means no byte either way, read off the sockets' own counters. */
const sweepActions = (shared: Shared): SweepActions<Pair> => ({
  activity: (pair) => pair.client.bytesRead + (pair.backend?.bytesRead ?? 0),
  timedOut: (pair) => {
    // Between attempts (turned away, its close still to come) there is no attempt to time out.
    if (pair.backend !== undefined) failed(shared, pair, pair.backend, "timed out")
    else if (pair.handshaking) handshakeFailed(shared, pair, { code: "ERR_TLS_HANDSHAKE_TIMEOUT" })
    else if (pair.reader !== undefined) {
      pair.client.pause()
      pair.reader = undefined
      refuseHeader(shared, pair, "none complete within the connect timeout")
    }
  },
  idle: (pair) => {
    pair.raw.destroy()
    pair.backend?.destroy()
  }
})

/** Stops accepting at once; lets open connections finish, up to the drain timeout, then closes the rest. */
const drain = (server: Net.Server, pairs: ConnectionTable<Pair>, drainTimeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    server.close()
    // Interruptible, so the timeout can cut the wait inside this finalizer.
    yield* pairs.drained.pipe(Effect.interruptible, Effect.timeout(drainTimeout), Effect.ignore)
    for (const pair of pairs) {
      pair.raw.destroy()
      pair.backend?.destroy()
    }
  })

export const make = (config: ProxyConfig) =>
  Effect.gen(function* () {
    const shared: Shared = {
      config,
      balancer: yield* Balancer,
      registry: yield* ServerRegistry,
      clock: yield* Effect.clock,
      runFork: Runtime.runFork(yield* Effect.runtime<never>()),
      pairs: new ConnectionTable<Pair>({
        limit: config.maxConnections,
        connectTimeout: config.connectTimeout,
        idleTimeout: config.idleTimeout
      }),
      perBackend: new Map(),
      totals: {
        accepted: 0,
        bytesIn: 0,
        bytesOut: 0,
        limit: 0,
        noServer: 0,
        backendsFailed: 0,
        proxyHeader: 0,
        tlsHandshake: 0
      },
      accessLog: config.accessLog === true ? yield* AccessLog.make() : undefined,
      tlsServer: undefined,
      handshakes: new Map(),
      backendTrust: config.backendTrust ?? { current: systemTrust },
      sessions: new Map()
    }
    const tls = config.tls
    if (tls !== undefined) {
      const handshakes = handshaker(shared, tls)
      shared.tlsServer = handshakes
      yield* Effect.addFinalizer(() => Effect.sync(() => tls.forget(handshakes)))
    }
    yield* shared.pairs.sweeping(sweepActions(shared))
    const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) =>
      accept(shared, client)
    )
    const address = yield* listenNet(server, config)
    yield* Effect.addFinalizer(() => drain(server, shared.pairs, config.drainTimeout))
    return Proxy.of({
      address,
      open: Effect.sync(() => shared.pairs.size),
      figures: Effect.sync(() => figuresOf(shared)),
      reconfigure: (change) =>
        Effect.sync(() => {
          const { sendProxy: _send, acceptProxy: _accept, ...rest } = shared.config
          shared.config = { ...rest, ...change }
        })
    })
  })

export const layer = (config: ProxyConfig): Layer.Layer<Proxy, ListenFailed, Balancer | ServerRegistry> =>
  Layer.scoped(Proxy, make(config))
