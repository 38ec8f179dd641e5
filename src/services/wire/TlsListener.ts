/**
 * A TLS listener of effect-lb's own ports (the balancer port, the server port): it accepts on
 * `node:net` and sorts each client by its first byte — a TLS handshake goes to a `tls.Server` that
 * does not listen itself (`emit("connection")`, as Node documents for injected connections); a
 * plain-text client is told, in the port's own protocol, that the port speaks TLS (as nginx answers
 * plain HTTP on an HTTPS port), then closed. `Wire` serves requests over it as over TCP.
 */
import { Duration, Effect } from "effect"
import * as Net from "node:net"
import * as NodeTls from "node:tls"
import { formatEndpoint } from "../../domain/Server.js"
import { peerOf } from "./Connection.js"
import type { Roster } from "./Roster.js"
import { handshakeTimeout, type ListenerTls } from "./Tls.js"

const ignoreError = () => undefined

/**
 * What a plain-text client on one of effect-lb's TLS ports is told, in its own protocol, before the
 * close (as nginx answers plain HTTP on an HTTPS port with a 400 saying so).
 */
const plainTextRefusal = Buffer.from(
  `${JSON.stringify({
    _tag: "InvalidRequest",
    message: "this port speaks TLS: connect with TLS (effect-lb: --tls, and --ca FILE for a private CA)"
  })}\n`
)

/** How long a refused plain-text client may take to read the refusal and close. */
const plainTextLinger = 2_000

/** A TLS record carrying a handshake (22) opens every TLS connection. */
const tlsHandshakeRecord = 0x16

/**
 * A client of a TLS listener, sorted out by its first byte: a TLS handshake goes to `handshakes`; a
 * plain-text client is told and closed; one that sends nothing within the handshake timeout is closed.
 */
const sortOut = (socket: Net.Socket, handshakes: NodeTls.Server, tls: ListenerTls) => {
  const peer = () => formatEndpoint(peerOf(socket))
  const timer = setTimeout(() => {
    tls.failed({ code: "ERR_TLS_HANDSHAKE_TIMEOUT" }, peer())
    socket.destroy()
  }, Duration.toMillis(handshakeTimeout))
  socket.on("error", ignoreError)
  socket.once("close", () => clearTimeout(timer))
  socket.once("data", (chunk: Buffer) => {
    clearTimeout(timer)
    socket.pause()
    socket.unshift(chunk)
    if (chunk[0] === tlsHandshakeRecord) return void handshakes.emit("connection", socket)
    tls.failed({ code: "PLAIN_TEXT" }, peer())
    // Read on (and drop) what it sends, so the close is a FIN after the line, not a reset that
    // could lose it; a peer that does not close by then is closed.
    socket.on("data", ignoreError)
    socket.resume()
    socket.end(plainTextRefusal)
    const linger = setTimeout(() => socket.destroy(), plainTextLinger)
    socket.once("close", () => clearTimeout(linger))
  })
  socket.resume()
}

/**
 * A listener serving TLS with `tls`'s certificate, following its reloads until the scope closes.
 * `track` holds every connection until it closes (the owner closes them at shutdown). A client whose
 * handshake fails (plain text, a certificate it refuses, too slow) is counted and logged by `tls`;
 * the listener goes on serving the others.
 */
export const tlsServer = (tls: ListenerTls, onSecure: (socket: NodeTls.TLSSocket) => void, track: Roster<Net.Socket>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const handshakes = NodeTls.createServer(
        { ...tls.options(), allowHalfOpen: true, handshakeTimeout: Duration.toMillis(handshakeTimeout) },
        onSecure
      )
      // No address: a socket closed under it (shutdown), not a client's failure.
      handshakes.on("tlsClientError", (error, socket) => {
        if (socket.remoteAddress !== undefined) tls.failed(error, formatEndpoint(peerOf(socket)))
      })
      tls.attach(handshakes)
      const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => {
        const place = track.join(socket)
        socket.once("close", () => track.leave(place))
        sortOut(socket, handshakes, tls)
      })
      return { server, handshakes }
    }),
    ({ handshakes }) => Effect.sync(() => tls.forget(handshakes))
  ).pipe(Effect.map(({ server }) => server))
