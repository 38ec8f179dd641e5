/**
 * A request/reply port's hot path: NDJSON requests answered in arrival order, synchronously
 * wherever the answer needs no effect, on plain socket callbacks. Per connection it costs one
 * object beside node's socket (the session: its own idle-timeout entry and its listeners' state),
 * no closure and no fiber; per request, no fiber, no timer and — for the repeated short lines a
 * balancer mostly sees — no parse (see `lineDecoder`). Answers that need an effect (`Later`) run on
 * the port's runtime, a fiber only while they run; the lines after them wait their turn. Such an
 * answer may send its own lines and a raw payload first (a server's download: a header, then the
 * file sent through buffers used again, with the socket's backpressure: `FilePayload.ts`).
 */
import { Duration, Effect, Either, Exit, Runtime, type Schema } from "effect"
import { Socket } from "node:net"
import type { Duplex } from "node:stream"
import { InvalidRequest } from "../../domain/Errors.js"
import type { Address } from "../../domain/Server.js"
import { ConnectionClosed, LineTooLong, type PayloadFailed, type PayloadSink } from "./Connection.js"
import { type PayloadFile, sendFile } from "./FilePayload.js"
import { lineDecoder, lineEncoder } from "./LineCodec.js"
import { FrameDecoder, readAhead } from "./Frames.js"
import { utf8Length } from "./Pages.js"
import { Idler, type IdleSweeper } from "./Idle.js"

/** An answer that needs an effect to be produced. A failure closes the connection (it cannot go on). */
export class Later<Rep, R = never> {
  constructor(
    readonly effect: Effect.Effect<Rep | undefined, ConnectionClosed | PayloadFailed, R>,
    /**
     * How the idle timeout sees the connection meanwhile: `busy`, never idle (a computation);
     * `sending`, idle once the peer takes none of what is sent for the timeout (a download). By
     * default its idle time runs on from its last request.
     */
    readonly idle?: "busy" | "sending"
  ) {}
}

/** A connection the port does not take (at its limit, shutting down): `reply` is sent, then it closes. */
export class Refused<Rep> {
  constructor(readonly reply: Rep) {}
}

/** What one connection may do about itself. Methods: call them on the control, not detached. */
export interface SessionControl<Rep = never> {
  /**
   * This connection may stay quiet indefinitely, whatever it sends later (a server's control
   * connection): it leaves the idle timeout for good. A TCP peer is still checked by TCP
   * keep-alive probes, so a peer whose host vanished does not hold it forever.
   */
  keepAlive(): void
  /** Where the peer is. A system call on TCP: asked for only when needed. */
  peer(): Address
  /** Sends a reply at once, from inside a `Later` (a header before its payload). */
  send(reply: Rep): Effect.Effect<void, ConnectionClosed>
  /** Sends a file, exactly its size, with the socket's backpressure and no allocation per chunk (`FilePayload.ts`). */
  sendFile(file: PayloadFile): Effect.Effect<void, ConnectionClosed | PayloadFailed>
  /** Completes when the peer stops sending: it ended its side, or the connection closed. */
  hangup(): Effect.Effect<void>
}

export interface RequestSession<Req, Rep, R> {
  /** The reply now, `undefined` for none, or a `Later`. Called in arrival order. */
  readonly answer: (request: Req) => Rep | undefined | Later<Rep, R>
  /** Asked after each answer: `false` closes the connection once it is written (a server draining). */
  readonly keepOpen?: () => boolean
  /**
   * Runs once the connection has closed; undefined when there is nothing to do (most connections:
   * no effect is run for them then).
   */
  readonly closed?: () => Effect.Effect<void, never, R> | undefined
}

export interface RequestPort<Req, ReqI, Rep, RepI, R> {
  readonly request: Schema.Schema<Req, ReqI>
  readonly reply: Schema.Schema<Rep, RepI>
  /** The reply to a line that is not a valid request (the connection goes on) or is too long (it closes). */
  readonly invalid: (error: InvalidRequest | LineTooLong) => Rep
  readonly idleTimeout: Duration.DurationInput
  /**
   * The port's own idle sweeper (made with `idleTimeout`), for a port that must reach its
   * connections: a server draining closes those between requests. By default the listener makes one.
   */
  readonly idle?: IdleSweeper
  readonly maxLine: number
  /** A new connection's session, or its refusal. */
  readonly open: (control: SessionControl<Rep>) => RequestSession<Req, Rep, R> | Refused<Rep>
}

/** Quiet time before TCP keep-alive probes start on a connection kept alive (it closes after a few unanswered ones). */
const tcpKeepAliveDelay = 60_000

/**
 * Serves one connection until it closes; then calls `done(token)` (a function shared by every
 * connection and a value of this one's, rather than a closure per connection). `peerOf` tells
 * where the socket's peer is.
 */
export const runSession = <Req, ReqI, Rep, RepI, R, S extends Duplex, T>(
  socket: S,
  port: RequestPort<Req, ReqI, Rep, RepI, R>,
  runtime: Runtime.Runtime<R>,
  sweeper: IdleSweeper,
  peerOf: (socket: S) => Address,
  done: (token: T) => void,
  token: T
): void => listen(new Session(socket, port, runtime, sweeper, peerOf, done, token))

/** Runs `runSession` as an effect: completes when the connection has closed; interrupting closes it. */
export const session = <Req, ReqI, Rep, RepI, R, S extends Duplex>(
  socket: S,
  port: RequestPort<Req, ReqI, Rep, RepI, R>,
  runtime: Runtime.Runtime<R>,
  sweeper: IdleSweeper,
  peerOf: (socket: S) => Address
): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    runSession(socket, port, runtime, sweeper, peerOf, resume, Effect.void)
    return Effect.sync(() => socket.destroy())
  })

/** The session of a connection that was refused: it answers nothing more. */
const refusedSession = { answer: () => undefined }

/**
 * One connection of a request port: the lines it has sent, where its answers stand, and the
 * session the port opened for it. It is that session's `SessionControl` and its own idle-timeout
 * entry too, so a connection costs one object here rather than a closure per job. Measured by heap
 * snapshots at 5,000 idle connections, this took the balancer port from 2,825 to 1,713 bytes of
 * live heap per connection (a bare node:net socket: 1,550).
 */
class Session<Req, ReqI, Rep, RepI, R, S extends Duplex, T = unknown>
  extends Idler
  implements SessionControl<Rep>, PayloadSink, Listened
{
  /** Made when the first bytes come: a connection that never sends costs none. */
  decoder: FrameDecoder | undefined = undefined
  readonly decode: (line: string) => Either.Either<Req, InvalidRequest>
  readonly encode: (reply: Rep) => string
  readonly answers: RequestSession<Req, Rep, R>
  /** A `Later` answer is being worked out: the lines after it wait. */
  waiting = false
  /** The peer does not read its replies: nothing more is read from it until they drain. */
  blocked = false
  /** The peer sends nothing more. */
  ended = false
  /** Nothing more is answered: the connection has closed, or is closing. */
  closed = false
  /** Payload bytes handed to the socket so far: the idle sweeper's activity counter. */
  payloadSent = 0
  /** Whoever waits for the peer to hang up (made when first asked for). */
  hangups: Set<() => void> | undefined = undefined

  constructor(
    readonly socket: S,
    readonly port: RequestPort<Req, ReqI, Rep, RepI, R>,
    readonly runtime: Runtime.Runtime<R>,
    sweeper: IdleSweeper,
    private readonly peerOf: (socket: S) => Address,
    private readonly done: (token: T) => void,
    private readonly token: T
  ) {
    super()
    this.decode = lineDecoder(port.request)
    this.encode = lineEncoder(port.reply)
    sweeper.unsafeTrack(this)
    const opened = port.open(this)
    if (opened instanceof Refused) {
      this.answers = refusedSession
      this.write(opened.reply)
      this.endAfterReplies()
    } else this.answers = opened
  }

  keepAlive(): void {
    // Untracked rather than marked busy: the next line it sends must not put it back under the timeout.
    this.untrack()
    if (this.socket instanceof Socket) this.socket.setKeepAlive(true, tcpKeepAliveDelay)
  }

  peer(): Address {
    return this.peerOf(this.socket)
  }

  idleOut(): void {
    this.socket.destroy()
  }

  activity(): number {
    return this.payloadSent
  }

  send(reply: Rep): Effect.Effect<void, ConnectionClosed> {
    return Effect.suspend(() => {
      if (this.closed || this.socket.writableEnded) return Effect.fail(this.gone("closed before the reply"))
      this.write(reply)
      return Effect.void
    })
  }

  sendFile(file: PayloadFile): Effect.Effect<void, ConnectionClosed | PayloadFailed> {
    return sendFile(this, file)
  }

  hangup(): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (this.ended) return resume(Effect.void)
      const hungUp = () => resume(Effect.void)
      const waiting = (this.hangups ??= new Set())
      waiting.add(hungUp)
      return Effect.sync(() => waiting.delete(hungUp))
    })
  }

  gone(what: string): ConnectionClosed {
    return new ConnectionClosed({ reason: what })
  }

  /** The peer sends nothing more: whoever waits for that is told. */
  hungUp(): void {
    this.ended = true
    const waiting = this.hangups
    this.hangups = undefined
    if (waiting !== undefined) for (const resume of waiting) resume()
  }

  write(reply: Rep | undefined): void {
    if (reply === undefined || this.closed || this.socket.writableEnded) return
    const line = this.encode(reply)
    // A peer that sends requests but does not read the replies stops being read from.
    if (!this.socket.write((line.length * 3 > this.port.maxLine ? this.fitted(line) : line) + "\n")) this.blocked = true
  }

  /** Writes an answer; closes the connection after it if the session takes no more. */
  answered(reply: Rep | undefined): void {
    this.write(reply)
    if (this.answers.keepOpen?.() === false) this.endAfterReplies()
  }

  /** `line`, or, when it is over the line limit (a bug: lists come in pages), an `InvalidRequest` saying so. */
  fitted(line: string): string {
    const bytes = utf8Length(line)
    if (bytes <= this.port.maxLine) return line
    const message = `the reply would be ${bytes} bytes, over the ${this.port.maxLine}-byte line limit`
    return this.encode(this.port.invalid(new InvalidRequest({ message })))
  }

  /** Answers the lines that have arrived, in order, until one needs an effect, the peer stops reading, or none is left. */
  step(): void {
    while (!this.waiting && !this.blocked && !this.closed) {
      const frame = this.decoder?.nextLine()
      if (frame === undefined) {
        if ((this.decoder?.buffered ?? 0) < readAhead && this.socket.isPaused()) this.socket.resume()
        if (this.ended && !this.socket.writableEnded) this.socket.end()
        return
      }
      this.idleFromNow()
      if (frame._tag === "TooLong") return this.closeTooLong(frame.limit)
      if (frame._tag === "BadLine") {
        this.write(this.port.invalid(new InvalidRequest({ message: frame.reason })))
        continue
      }
      const request = this.decode(frame.text)
      if (Either.isLeft(request)) {
        this.write(this.port.invalid(request.left))
        continue
      }
      const answer = this.answers.answer(request.right)
      if (answer instanceof Later) return this.awaitLater(answer)
      this.answered(answer)
    }
  }

  /** A line past the limit: the framing is lost, so the connection says why and closes. */
  closeTooLong(limit: number): void {
    this.write(this.port.invalid(new LineTooLong({ limit })))
    this.endAfterReplies()
  }

  /** Answers nothing more: what was written is flushed, then the connection closes. */
  endAfterReplies(): void {
    this.closed = true
    this.socket.end(() => this.socket.destroy())
  }

  /**
   * Works out `answer` on the port's runtime; the lines after it wait until it is written, and
   * until the event loop has turned once: Effect runs fibers on microtasks, so answering the next
   * `Later` straight away would chain a peer's pipelined Registers without ever letting another
   * connection's Locate in (10,000 of them stalled Locates for seconds).
   */
  awaitLater(answer: Later<Rep, R>): void {
    this.waiting = true
    if (answer.idle === "busy") this.idleBusy()
    else if (answer.idle === "sending") this.idleSending()
    Runtime.runFork(this.runtime)(answer.effect).addObserver((exit) => {
      this.idleFromNow()
      if (Exit.isSuccess(exit)) this.answered(exit.value)
      else this.socket.destroy()
      setImmediate(resumeAfterLater, this)
    })
  }

  /** Bytes from the peer: framed, and the lines answered. */
  received(chunk: Buffer): void {
    const decoder = (this.decoder ??= new FrameDecoder(this.port.maxLine))
    decoder.push(chunk)
    if (decoder.buffered >= readAhead) this.socket.pause()
    this.step()
  }

  /** The connection has closed: it stops being tracked, and the session's `closed` runs before `done`. */
  finish(): void {
    this.closed = true
    this.hungUp()
    this.untrack()
    const after = this.answers.closed?.()
    if (after === undefined) this.done(this.token)
    else Runtime.runFork(this.runtime)(after).addObserver(() => this.done(this.token))
  }
}

/** Carries on after a `Later` (a function shared by every session, not one per connection or answer). */
const resumeAfterLater = (session: Listened): void => {
  session.waiting = false
  session.step()
}

/**
 * The socket's listeners, for the connection's whole life: what arrives or drains moves the
 * session on. They are the same five functions for every connection — node calls a listener with
 * the socket as `this`, and the socket carries its session — so a connection costs no closures here.
 */
const listen = (session: Listened): void => {
  const socket: Carrier = session.socket
  socket[sessionKey] = session
  socket.on("data", onData)
  socket.on("end", onEnd)
  socket.on("drain", onDrain)
  // An error is followed by `close`, which is where the connection ends.
  socket.on("error", ignore)
  socket.on("close", onClose)
}

/** What the listeners need of a session, whatever its messages. */
interface Listened {
  readonly socket: Duplex
  blocked: boolean
  waiting: boolean
  received(chunk: Buffer): void
  step(): void
  hungUp(): void
  finish(): void
}
const sessionKey = Symbol("effect-lb.session")
type Carrier = Duplex & { [sessionKey]?: Listened | undefined }

function onData(this: Carrier, chunk: Buffer): void {
  const session = this[sessionKey]
  if (session === undefined) return
  session.received(chunk)
}

function onEnd(this: Carrier): void {
  const session = this[sessionKey]
  if (session === undefined) return
  session.hungUp()
  session.step()
}

function onDrain(this: Carrier): void {
  const session = this[sessionKey]
  if (session === undefined) return
  session.blocked = false
  session.step()
}

function onClose(this: Carrier): void {
  const session = this[sessionKey]
  this[sessionKey] = undefined
  session?.finish()
}

const ignore = (): void => undefined
