/**
 * One framed connection: NDJSON lines both ways and raw byte payloads after a `FileHeader`, over a
 * Node `Duplex` (a `net.Socket`, or an in-memory pair in tests). Every port, client and server side
 * alike, talks through this one implementation.
 *
 * It drives the Node stream directly rather than through `Socket.run`/`writer`: per short connection
 * that path costs several times more CPU (see EFFECT-NOTES.md), and a file transfer needs the
 * stream's own backpressure (`pipe`) to keep memory flat whatever the peer's speed.
 */
import { Deferred, Effect, Option, Schema, Stream } from "effect"
import type * as Net from "node:net"
import type { Duplex, Readable } from "node:stream"
import { InvalidRequest } from "../../domain/Errors.js"
import type { Address } from "../../domain/Server.js"
import { defaultMaxLine, FrameDecoder, readAhead } from "./Frames.js"
import { lineDecoder, lineEncoder } from "./LineCodec.js"
import { utf8Length } from "./Pages.js"

/** The peer sent more than the line limit without a newline. The connection cannot go on. */
export class LineTooLong extends Schema.TaggedError<LineTooLong>()("LineTooLong", {
  limit: Schema.Number
}) {
  override get message(): string {
    return `line longer than ${this.limit} bytes`
  }
}

/** The connection ended under us: reset, closed mid-line or mid-payload, or gone while we wrote. */
export class ConnectionClosed extends Schema.TaggedError<ConnectionClosed>()("ConnectionClosed", {
  reason: Schema.String
}) {
  override get message(): string {
    return `connection closed: ${this.reason}`
  }
}

/** A local source of payload bytes failed (a file that cannot be read to its announced end). */
export class PayloadFailed extends Schema.TaggedError<PayloadFailed>()("PayloadFailed", {
  reason: Schema.String
}) {}

/** Where a TCP connection comes from (a getpeername call). */
export const peerOf = (socket: Net.Socket): Address => ({
  host: socket.remoteAddress ?? "?",
  port: socket.remotePort ?? 0
})

export type ReadError = LineTooLong | ConnectionClosed

export interface Connection {
  /** Where the peer is, for logs and messages (`formatEndpoint` makes it text). */
  readonly peer: Address
  /** This end's own address, when the transport has one (TCP: the interface the peer is reached through). */
  readonly localHost: string | undefined
  /** The next line decoded with `schema`; a line that is not valid JSON or not a valid message is `InvalidRequest`. */
  readonly read: <A, I>(schema: Schema.Schema<A, I>) => Effect.Effect<Option.Option<A>, ReadError | InvalidRequest>
  /** The next line as text, undecoded (to say what a peer that does not speak the protocol sent); not valid UTF-8 is `InvalidRequest`. */
  readonly readLine: Effect.Effect<Option.Option<string>, ReadError | InvalidRequest>
  /** Sends one message as a JSON line. */
  readonly send: <A, I>(schema: Schema.Schema<A, I>, message: A) => Effect.Effect<void, ConnectionClosed>
  /** Sends exactly `size` bytes from `source` with the stream's backpressure; closes the source. */
  readonly sendPayload: (source: Readable, size: number) => Effect.Effect<void, ConnectionClosed | PayloadFailed>
  /**
   * Payload bytes handed to the transport so far, over the connection's life. With backpressure it
   * stops moving when the peer stops reading: an idle timer's activity counter.
   */
  readonly payloadSent: () => number
  /** Exactly `size` raw bytes from the peer, in chunks, read only as fast as they are consumed. */
  readonly readPayload: (size: number) => Stream.Stream<Uint8Array, ConnectionClosed>
  /** Completes when the connection is closed (by either side). */
  readonly closed: Effect.Effect<void>
  /** Completes when the peer stops sending (it ended its side, or the connection closed). */
  readonly hangup: Effect.Effect<void>
  /** Flushes what was written, then closes. */
  readonly end: Effect.Effect<void>
  /** Closes at once, dropping anything unsent. */
  readonly destroy: Effect.Effect<void>
}

export interface ConnectionOptions {
  readonly peer: Address
  readonly maxLine?: number
  readonly localHost?: string | undefined
}

/** Wraps a connected Duplex. The caller owns its lifetime (see `Wire`). */
export const fromDuplex = (socket: Duplex, options: ConnectionOptions): Effect.Effect<Connection> =>
  Effect.gen(function* () {
    const state = new SocketState(
      socket,
      options.maxLine ?? defaultMaxLine,
      yield* Deferred.make<void>(),
      yield* Deferred.make<void>()
    )
    listen(state)
    return {
      peer: options.peer,
      localHost: options.localHost,
      read: (schema) => nextFrame(state, lineDecoder(schema)),
      readLine: nextFrame(state, Effect.succeed),
      send: (schema, message) => writeLine(state, lineEncoder(schema), message),
      sendPayload: (source, size) => pipePayload(state, source, size),
      readPayload: (size) => payloadStream(state, size),
      payloadSent: () => state.payloadSent,
      closed: Deferred.await(state.closedSignal),
      hangup: Deferred.await(state.hangupSignal),
      end: Effect.sync(() => {
        if (!state.closed) socket.end()
      }),
      destroy: Effect.sync(() => {
        socket.destroy()
      })
    } satisfies Connection
  })

/**
 * What the socket has told one connection so far: the bytes not yet taken, whether the peer or the
 * connection has ended, its first error, and the one read waiting for the next event.
 */
class SocketState implements PayloadSink {
  readonly decoder: FrameDecoder
  /** The peer sends nothing more: it ended its side, or the connection closed. */
  ended = false
  closed = false
  /** The socket's first error, reported as the reason when the connection turns out closed. */
  failure: string | undefined = undefined
  /** Payload bytes piped into the socket so far (see `Connection.payloadSent`). */
  payloadSent = 0
  /** The read to try again at the next socket event. */
  wake: (() => void) | undefined = undefined

  constructor(
    readonly socket: Duplex,
    maxLine: number,
    readonly closedSignal: Deferred.Deferred<void>,
    readonly hangupSignal: Deferred.Deferred<void>
  ) {
    this.decoder = new FrameDecoder(maxLine)
  }

  /** Something happened: the waiting read, if any, tries again. */
  notify(): void {
    const waiter = this.wake
    if (waiter !== undefined) {
      this.wake = undefined
      waiter()
    }
  }

  /** Bytes were taken: a socket paused for read-ahead goes on once below it. */
  drained(): void {
    if (this.decoder.buffered < readAhead && this.socket.isPaused() && !this.closed) this.socket.resume()
  }

  gone(what: string): ConnectionClosed {
    return new ConnectionClosed({ reason: this.failure ?? what })
  }

  /** Runs `attempt` now and again on every socket event until it yields a result. */
  awaitReadable<A, E>(attempt: () => Effect.Effect<A, E> | undefined): Effect.Effect<A, E> {
    return Effect.async<A, E>((resume) => {
      const tryNow = () => {
        const result = attempt()
        if (result === undefined) this.wake = tryNow
        else resume(result)
      }
      tryNow()
      return Effect.sync(() => {
        this.wake = undefined
      })
    })
  }
}

/** The socket's listeners, for the connection's whole life: they fill `state` and wake a waiting read. */
const listen = (state: SocketState): void => {
  const socket = state.socket
  socket.on("data", (chunk: Buffer) => {
    state.decoder.push(chunk)
    if (state.decoder.buffered >= readAhead) socket.pause()
    state.notify()
  })
  socket.on("end", () => {
    state.ended = true
    Deferred.unsafeDone(state.hangupSignal, Effect.void)
    state.notify()
  })
  socket.on("error", (error: Error) => {
    state.failure ??= "code" in error && typeof error.code === "string" ? error.code : error.message
  })
  socket.on("close", () => {
    state.closed = true
    state.ended = true
    Deferred.unsafeDone(state.closedSignal, Effect.void)
    Deferred.unsafeDone(state.hangupSignal, Effect.void)
    state.notify()
  })
}

// ---- lines -------------------------------------------------------------------------------------------

/** The next frame turned into a result by `onLine`; `None` at a clean end of stream. */
const nextFrame = <A>(state: SocketState, onLine: (text: string) => Effect.Effect<A, InvalidRequest>) =>
  state.awaitReadable<Option.Option<A>, ReadError | InvalidRequest>(() => {
    const decoder = state.decoder
    const frame = decoder.nextLine()
    state.drained()
    if (frame === undefined) {
      if (!state.ended) return undefined
      return decoder.buffered === 0 && state.failure === undefined
        ? Effect.succeed(Option.none())
        : Effect.fail(state.gone(decoder.buffered === 0 ? "closed" : "closed in the middle of a line"))
    }
    switch (frame._tag) {
      case "Line":
        return Effect.map(onLine(frame.text), Option.some)
      case "BadLine":
        return Effect.fail(new InvalidRequest({ message: frame.reason }))
      case "TooLong":
        return Effect.fail(new LineTooLong({ limit: frame.limit }))
    }
  })

const writeLine = <A>(
  state: SocketState,
  encode: (message: A) => string,
  message: A
): Effect.Effect<void, ConnectionClosed> =>
  Effect.suspend(() => {
    const line = encode(message)
    if (state.closed || state.socket.writableEnded) return Effect.fail(state.gone("closed before the reply"))
    const limit = state.decoder.maxLine
    if (line.length * 3 > limit && utf8Length(line) > limit) {
      // Never a line the peer has to refuse: a reply too long to send (a bug; lists come in pages) ends the connection.
      state.socket.destroy()
      return Effect.fail(
        new ConnectionClosed({ reason: `a line of ${utf8Length(line)} bytes is over the ${limit}-byte limit` })
      )
    }
    return state.socket.write(line + "\n") ? Effect.void : awaitDrain(state)
  })

/** Waits for a full write buffer to drain (asked for only when a write finds it full). */
const awaitDrain = (state: SocketState): Effect.Effect<void, ConnectionClosed> =>
  Effect.async((resume) => {
    const socket = state.socket
    const onDrain = () => {
      cleanup()
      resume(Effect.void)
    }
    const onClose = () => {
      cleanup()
      resume(Effect.fail(state.gone("closed while writing")))
    }
    const cleanup = () => {
      socket.off("drain", onDrain)
      socket.off("close", onClose)
    }
    socket.on("drain", onDrain)
    socket.on("close", onClose)
    return Effect.sync(cleanup)
  })

// ---- payloads ----------------------------------------------------------------------------------------

/**
 * Where a payload goes: a socket, and what its owner knows of it. `Connection` pipes a stream
 * through `pipePayload` below; the request ports' sessions (`RequestPort`) send a file through
 * `FilePayload.ts`.
 */
export interface PayloadSink {
  readonly socket: Duplex
  /** The connection has closed. */
  readonly closed: boolean
  /** Payload bytes handed to the socket so far, over the connection's life (an idle timer's activity counter). */
  payloadSent: number
  /** The error to report when the connection turns out closed, `what` saying when. */
  gone(what: string): ConnectionClosed
}

/** Pipes exactly `size` bytes from `source` into the socket, with the stream's backpressure; closes the source. */
export const pipePayload = (
  sink: PayloadSink,
  source: Readable,
  size: number
): Effect.Effect<void, ConnectionClosed | PayloadFailed> =>
  Effect.async<void, ConnectionClosed | PayloadFailed>((resume) => {
    const socket = sink.socket
    let sent = 0
    let done = false
    const finish = (result: Effect.Effect<void, ConnectionClosed | PayloadFailed>) => {
      if (done) return
      done = true
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onError)
      socket.off("close", onClose)
      source.unpipe(socket)
      source.destroy()
      resume(result)
    }
    const onData = (chunk: Buffer) => {
      sent += chunk.length
      sink.payloadSent += chunk.length
    }
    const onEnd = () => {
      if (sent === size) finish(Effect.void)
      else {
        // The peer was promised `size` bytes: a short payload must not look like a complete one.
        socket.destroy()
        finish(Effect.fail(new PayloadFailed({ reason: `source ended after ${sent} of ${size} bytes` })))
      }
    }
    const onError = (error: Error) => {
      socket.destroy()
      finish(Effect.fail(new PayloadFailed({ reason: error.message })))
    }
    const onClose = () => finish(Effect.fail(sink.gone(`closed after ${sent} of ${size} bytes`)))
    if (sink.closed) return finish(Effect.fail(sink.gone("closed before the payload")))
    source.on("data", onData)
    source.once("end", onEnd)
    source.once("error", onError)
    socket.once("close", onClose)
    source.pipe(socket, { end: false })
    return Effect.sync(() => {
      if (!done) {
        done = true
        source.unpipe(socket)
        source.destroy()
      }
    })
  })

/** Exactly `size` raw bytes from the peer as they arrive, taken only as fast as the stream is pulled. */
const payloadStream = (state: SocketState, size: number): Stream.Stream<Uint8Array, ConnectionClosed> => {
  let remaining = size
  const nextChunk = state.awaitReadable<Option.Option<Uint8Array>, ConnectionClosed>(() => {
    if (remaining === 0) return Effect.succeed(Option.none())
    const chunk = state.decoder.takeBytes(remaining)
    state.drained()
    if (chunk !== undefined) {
      remaining -= chunk.length
      return Effect.succeed(Option.some(chunk))
    }
    return state.ended ? Effect.fail(state.gone(`closed with ${remaining} of ${size} bytes still to come`)) : undefined
  })
  return Stream.repeatEffectOption(
    Effect.flatMap(nextChunk, (chunk) =>
      Option.isSome(chunk) ? Effect.succeed(chunk.value) : Effect.fail(Option.none())
    ).pipe(Effect.mapError((error) => (Option.isOption(error) ? error : Option.some(error))))
  )
}
