/**
 * Talking to a peer that may not be what it was said to be: an HTTP server, another program's port,
 * something that accepts and never answers. A reply is read as text and decoded here, so what came
 * back instead of a message can be told to a person in a few words (`it answered: HTTP/1.1 400 Bad
 * Request`) instead of a parser's `malformed JSON`.
 */
import { Duration, Effect, Either, Option, Schema } from "effect"
import type { InvalidRequest } from "../../domain/Errors.js"
import { BalancerReply, BalancerRequest, Status } from "../../domain/Protocol.js"
import type { Connection, ConnectionClosed, LineTooLong } from "./Connection.js"
import { lineDecoder } from "./LineCodec.js"

/**
 * What was at `peer` did not answer as an effect-lb balancer. `silent`: it gave no answer at all (no
 * reply in time, or it hung up), which a balancer too busy to answer would do too; otherwise it
 * answered something a balancer never sends.
 */
export class NotABalancer extends Schema.TaggedError<NotABalancer>()("NotABalancer", {
  peer: Schema.String,
  reason: Schema.String,
  silent: Schema.Boolean
}) {
  override get message(): string {
    return `${this.peer} did not answer as an effect-lb balancer (${this.reason})`
  }
}

/** Why a reply could not be had, before knowing who was asked. */
interface Unanswered {
  readonly reason: string
  readonly silent: boolean
}

const longest = 100

/** A line a peer sent, as a short printable excerpt (control characters shown as `?`). */
export const excerpt = (line: string): string => {
  const printable = line.trim().replace(/\p{Cc}/gu, "?")
  return printable.length > longest ? `${printable.slice(0, longest - 1)}…` : printable
}

/** `5 s`, `2 s`, `0.5 s`: a deadline as a person reads it. */
export const seconds = (duration: Duration.DurationInput): string =>
  `${Number((Duration.toMillis(duration) / 1000).toFixed(3))} s`

/** The reason given when a peer let `timeout` pass without a reply. */
export const noAnswerWithin = (timeout: Duration.DurationInput): Unanswered => ({
  reason: `no answer within ${seconds(timeout)}`,
  silent: true
})

/**
 * The peer's next line decoded with `schema`. Anything else (not a line of that schema, a line too
 * long, the connection closing first) fails with what the peer did instead. No deadline of its own:
 * the caller sets one (`noAnswerWithin`).
 */
export const readAnswer = <A, I>(connection: Connection, schema: Schema.Schema<A, I>): Effect.Effect<A, Unanswered> =>
  connection.readLine.pipe(
    Effect.mapError((error: LineTooLong | ConnectionClosed | InvalidRequest): Unanswered => {
      switch (error._tag) {
        case "LineTooLong":
          return { reason: `it sent a ${error.message}`, silent: false }
        case "ConnectionClosed":
          return { reason: `the connection closed: ${error.reason}`, silent: true }
        case "InvalidRequest":
          return { reason: `it sent a line that ${error.message.replace(/^the line /, "")}`, silent: false }
      }
    }),
    Effect.flatMap(
      Option.match({
        onNone: () => Effect.fail<Unanswered>({ reason: "it closed the connection without answering", silent: true }),
        onSome: (line) =>
          Either.match(lineDecoder(schema)(line), {
            onLeft: () => Effect.fail<Unanswered>({ reason: `it answered: ${excerpt(line)}`, silent: false }),
            onRight: (answer) => Effect.succeed(answer)
          })
      })
    )
  )

/** `unanswered` as the balancer at `peer`'s failure. */
export const notABalancer = (peer: string, unanswered: Unanswered): NotABalancer =>
  new NotABalancer({ peer, reason: unanswered.reason, silent: unanswered.silent })

/** The balancer's reply to what was just sent; anything a balancer would not send is `NotABalancer`. */
export const balancerReply = (connection: Connection, peer: string) =>
  Effect.mapError(readAnswer(connection, BalancerReply), (unanswered) => notABalancer(peer, unanswered))

/** An error reply in a few words, for a person. */
export const answered = (refusal: { readonly _tag: string; readonly message: string }) => {
  const text = `it answered ${refusal._tag}: ${refusal.message}`
  return text.length > 120 ? `${text.slice(0, 119)}…` : text
}

/**
 * A balancer answers `InvalidRequest` only to a request it cannot take. Whatever else answers that
 * way (an effect-lb server's port, which does not know the balancer's requests) is told apart by a
 * `Status`, which every balancer answers with its report. Succeeds when it is a balancer.
 */
export const confirmBalancer = (
  connection: Connection,
  peer: string,
  refusal: { readonly _tag: string; readonly message: string }
): Effect.Effect<void, NotABalancer> => {
  const not = new NotABalancer({ peer, reason: answered(refusal), silent: false })
  return connection.send(BalancerRequest, new Status({})).pipe(
    Effect.zipRight(balancerReply(connection, peer)),
    Effect.flatMap((status) => (status._tag === "StatusReport" ? Effect.void : Effect.fail(not))),
    // No answer to the Status either (it closed, as a TLS port does after saying so): its refusal is what it said.
    Effect.mapError(() => not)
  )
}
