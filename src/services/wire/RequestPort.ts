/**
 * A request/reply port's hot path: NDJSON requests answered in arrival order, synchronously
 * wherever the answer needs no effect, on plain socket callbacks. Per connection it costs a few
 * closures and one waiting fiber (the accept loop's); per request, no fiber, no timer and — for the
 * repeated short lines a balancer mostly sees — no parse (see `lineDecoder`). Answers that need an
 * effect (`Later`) run on the port's runtime; the lines after them wait their turn.
 */
import { Duration, Effect, Either, Exit, Runtime, type Schema } from "effect"
import type { Duplex } from "node:stream"
import { InvalidRequest } from "../../domain/Errors.js"
import type { Address } from "../../domain/Server.js"
import { LineTooLong } from "./Connection.js"
import { lineDecoder, lineEncoder } from "./LineCodec.js"
import { FrameDecoder } from "./Frames.js"
import type { IdleSweeper } from "./Idle.js"

/** An answer that needs an effect to be produced. */
export class Later<Rep, R = never> {
  constructor(readonly effect: Effect.Effect<Rep | undefined, never, R>) {}
}

/** What one connection may do about itself. */
export interface SessionControl {
  /** This connection may stay quiet indefinitely (a server's control connection). */
  readonly keepAlive: () => void
  /** Where the peer is. A system call on TCP: asked for only when needed. */
  readonly peer: () => Address
}

export interface RequestSession<Req, Rep, R> {
  /** The reply now, `undefined` for none, or a `Later`. Called in arrival order. */
  readonly answer: (request: Req) => Rep | undefined | Later<Rep, R>
  /** Runs once the connection has closed. */
  readonly closed?: () => Effect.Effect<void, never, R>
}

export interface RequestPort<Req, ReqI, Rep, RepI, R> {
  readonly request: Schema.Schema<Req, ReqI>
  readonly reply: Schema.Schema<Rep, RepI>
  /** The reply to a line that is not a valid request (the connection goes on) or is too long (it closes). */
  readonly invalid: (error: InvalidRequest | LineTooLong) => Rep
  readonly idleTimeout: Duration.DurationInput
  readonly maxLine: number
  /** A new connection's session. */
  readonly open: (control: SessionControl) => RequestSession<Req, Rep, R>
}

/** Bytes read ahead of the answers before the socket is paused. */
const readAhead = 256 * 1024

/**
 * Serves one connection until it closes; calls `done` then. Returns a function that closes it at
 * once (for a listener that is shutting down).
 */
export const runSession = <Req, ReqI, Rep, RepI, R>(
  socket: Duplex,
  port: RequestPort<Req, ReqI, Rep, RepI, R>,
  runtime: Runtime.Runtime<R>,
  sweeper: IdleSweeper,
  peer: () => Address,
  done: () => void
): (() => void) => {
  const decoder = new FrameDecoder(port.maxLine)
  const decode = lineDecoder(port.request)
  const encode = lineEncoder(port.reply)
  const idle = sweeper.unsafeTrack(() => socket.destroy())
  const session = port.open({ keepAlive: idle.busy, peer })
  let waiting = false
  let blocked = false
  let ended = false
  let closed = false

  const write = (reply: Rep | undefined) => {
    if (reply === undefined || closed || socket.writableEnded) return
    // A peer that sends requests but does not read the replies stops being read from.
    if (!socket.write(encode(reply) + "\n")) blocked = true
  }
  const finish = () => {
    if (!socket.writableEnded) socket.end()
  }
  const step = (): void => {
    while (!waiting && !blocked && !closed) {
      const frame = decoder.nextLine()
      if (frame === undefined) {
        if (decoder.buffered < readAhead && socket.isPaused()) socket.resume()
        if (ended) finish()
        return
      }
      idle.done()
      if (frame._tag === "TooLong") {
        write(port.invalid(new LineTooLong({ limit: frame.limit })))
        closed = true
        socket.end(() => socket.destroy())
        return
      }
      if (frame._tag === "BadLine") {
        write(port.invalid(new InvalidRequest({ message: frame.reason })))
        continue
      }
      const request = decode(frame.text)
      if (Either.isLeft(request)) {
        write(port.invalid(request.left))
        continue
      }
      const answer = session.answer(request.right)
      if (!(answer instanceof Later)) {
        write(answer)
        continue
      }
      waiting = true
      Runtime.runFork(runtime)(answer.effect).addObserver((exit) => {
        waiting = false
        if (Exit.isSuccess(exit)) write(exit.value)
        else socket.destroy()
        step()
      })
      return
    }
  }

  socket.on("data", (chunk: Buffer) => {
    decoder.push(chunk)
    if (decoder.buffered >= readAhead) socket.pause()
    step()
  })
  socket.on("end", () => {
    ended = true
    step()
  })
  socket.on("drain", () => {
    blocked = false
    step()
  })
  socket.on("error", () => undefined)
  socket.once("close", () => {
    closed = true
    idle.release()
    const after = session.closed
    if (after === undefined) done()
    else Runtime.runFork(runtime)(after()).addObserver(done)
  })
  return () => socket.destroy()
}

/** Runs `runSession` as an effect: completes when the connection has closed; interrupting closes it. */
export const session = <Req, ReqI, Rep, RepI, R>(
  socket: Duplex,
  port: RequestPort<Req, ReqI, Rep, RepI, R>,
  runtime: Runtime.Runtime<R>,
  sweeper: IdleSweeper,
  peer: () => Address
): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const close = runSession(socket, port, runtime, sweeper, peer, () => resume(Effect.void))
    return Effect.sync(close)
  })
