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
import type { Duplex, Readable } from "node:stream"
import { InvalidRequest } from "../../domain/Errors.js"
import type { Address } from "../../domain/Server.js"
import { defaultMaxLine, FrameDecoder } from "./Frames.js"
import { lineDecoder, lineEncoder } from "./LineCodec.js"

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

export type ReadError = LineTooLong | ConnectionClosed

export interface Connection {
  /** Where the peer is, for logs and messages (`formatEndpoint` makes it text). */
  readonly peer: Address
  /** This end's own address, when the transport has one (TCP: the interface the peer is reached through). */
  readonly localHost: string | undefined
  /** The next line decoded with `schema`; a line that is not valid JSON or not a valid message is `InvalidRequest`. */
  readonly read: <A, I>(schema: Schema.Schema<A, I>) => Effect.Effect<Option.Option<A>, ReadError | InvalidRequest>
  /** Sends one message as a JSON line. */
  readonly send: <A, I>(schema: Schema.Schema<A, I>, message: A) => Effect.Effect<void, ConnectionClosed>
  /** Sends exactly `size` bytes from `source` with the stream's backpressure; closes the source. */
  readonly sendPayload: (source: Readable, size: number) => Effect.Effect<void, ConnectionClosed | PayloadFailed>
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

/** Bytes read ahead of the consumer before the socket is paused. */
const readAhead = 256 * 1024

export interface ConnectionOptions {
  readonly peer: Address
  readonly maxLine?: number
  readonly localHost?: string | undefined
}

/** Wraps a connected Duplex. The caller owns its lifetime (see `Wire`). */
export const fromDuplex = (socket: Duplex, options: ConnectionOptions): Effect.Effect<Connection> =>
  Effect.gen(function* () {
    const decoder = new FrameDecoder(options.maxLine ?? defaultMaxLine)
    const closedSignal = yield* Deferred.make<void>()
    const hangupSignal = yield* Deferred.make<void>()
    let ended = false
    let closed = false
    let failure: string | undefined
    let wake: (() => void) | undefined

    const notify = () => {
      const waiter = wake
      if (waiter !== undefined) {
        wake = undefined
        waiter()
      }
    }
    socket.on("data", (chunk: Buffer) => {
      decoder.push(chunk)
      if (decoder.buffered >= readAhead) socket.pause()
      notify()
    })
    socket.on("end", () => {
      ended = true
      Deferred.unsafeDone(hangupSignal, Effect.void)
      notify()
    })
    socket.on("error", (error: Error) => {
      failure ??= "code" in error && typeof error.code === "string" ? error.code : error.message
    })
    socket.on("close", () => {
      closed = true
      ended = true
      Deferred.unsafeDone(closedSignal, Effect.void)
      Deferred.unsafeDone(hangupSignal, Effect.void)
      notify()
    })

    const drained = () => {
      if (decoder.buffered < readAhead && socket.isPaused() && !closed) socket.resume()
    }
    const gone = (what: string) => new ConnectionClosed({ reason: failure ?? what })

    /** Runs `attempt` now and again on every socket event until it yields a result. */
    const awaitReadable = <A, E>(attempt: () => Effect.Effect<A, E> | undefined): Effect.Effect<A, E> =>
      Effect.async<A, E>((resume) => {
        const tryNow = () => {
          const result = attempt()
          if (result === undefined) wake = tryNow
          else resume(result)
        }
        tryNow()
        return Effect.sync(() => {
          wake = undefined
        })
      })

    /** The next frame turned into a result by `onLine`; `None` at a clean end of stream. */
    const nextFrame = <A>(onLine: (text: string) => Effect.Effect<A, InvalidRequest>) =>
      awaitReadable<Option.Option<A>, ReadError | InvalidRequest>(() => {
        const frame = decoder.nextLine()
        drained()
        if (frame === undefined) {
          if (!ended) return undefined
          return decoder.buffered === 0 && failure === undefined
            ? Effect.succeed(Option.none())
            : Effect.fail(gone(decoder.buffered === 0 ? "closed" : "closed in the middle of a line"))
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

    const read: Connection["read"] = (schema) => {
      const decode = lineDecoder(schema)
      return nextFrame((text) => decode(text))
    }

    const waitDrain: Effect.Effect<void, ConnectionClosed> = Effect.async((resume) => {
      const onDrain = () => {
        cleanup()
        resume(Effect.void)
      }
      const onClose = () => {
        cleanup()
        resume(Effect.fail(gone("closed while writing")))
      }
      const cleanup = () => {
        socket.off("drain", onDrain)
        socket.off("close", onClose)
      }
      socket.on("drain", onDrain)
      socket.on("close", onClose)
      return Effect.sync(cleanup)
    })

    const writeLine = (line: string): Effect.Effect<void, ConnectionClosed> =>
      Effect.suspend(() => {
        if (closed || socket.writableEnded) return Effect.fail(gone("closed before the reply"))
        return socket.write(line + "\n") ? Effect.void : waitDrain
      })

    const send: Connection["send"] = (schema, message) => {
      const encode = lineEncoder(schema)
      return Effect.suspend(() => writeLine(encode(message)))
    }

    const sendPayload: Connection["sendPayload"] = (source, size) =>
      Effect.async<void, ConnectionClosed | PayloadFailed>((resume) => {
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
        const onClose = () => finish(Effect.fail(gone(`closed after ${sent} of ${size} bytes`)))
        if (closed) return finish(Effect.fail(gone("closed before the payload")))
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

    const readPayload: Connection["readPayload"] = (size) => {
      let remaining = size
      const nextChunk = awaitReadable<Option.Option<Uint8Array>, ConnectionClosed>(() => {
        if (remaining === 0) return Effect.succeed(Option.none())
        const chunk = decoder.takeBytes(remaining)
        drained()
        if (chunk !== undefined) {
          remaining -= chunk.length
          return Effect.succeed(Option.some(chunk))
        }
        return ended ? Effect.fail(gone(`closed with ${remaining} of ${size} bytes still to come`)) : undefined
      })
      return Stream.repeatEffectOption(
        Effect.flatMap(nextChunk, (chunk) =>
          Option.isSome(chunk) ? Effect.succeed(chunk.value) : Effect.fail(Option.none())
        ).pipe(Effect.mapError((error) => (Option.isOption(error) ? error : Option.some(error))))
      )
    }

    return {
      peer: options.peer,
      localHost: options.localHost,
      read,
      send,
      sendPayload,
      readPayload,
      closed: Deferred.await(closedSignal),
      hangup: Deferred.await(hangupSignal),
      end: Effect.sync(() => {
        if (!closed) socket.end()
      }),
      destroy: Effect.sync(() => {
        socket.destroy()
      })
    } satisfies Connection
  })
