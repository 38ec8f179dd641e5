/** Asking a balancer one thing: a request, its reply, within a deadline. For operators and clients. */
import { Duration, Effect, Option, Schema } from "effect"
import {
  type BalancerReply as BalancerReplyType,
  BalancerReply,
  type BalancerRequest as BalancerRequestType,
  BalancerRequest,
  Status,
  StatusReport
} from "../../domain/Protocol.js"
import type { ServerId, ServerView } from "../../domain/Server.js"
import { type Address, Wire } from "../wire/Wire.js"

/** The balancer did not answer in time, or hung up without answering. */
export class NoAnswer extends Schema.TaggedError<NoAnswer>()("NoAnswer", { reason: Schema.String }) {
  override get message(): string {
    return `the balancer did not answer: ${this.reason}`
  }
}

export const ask = (balancer: Address, request: BalancerRequestType, timeout: Duration.DurationInput = "5 seconds") =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const connection = yield* wire.connect(balancer, { timeout })
    yield* connection.send(BalancerRequest, request)
    const reply = yield* connection.read(BalancerReply)
    return yield* Option.match(reply, {
      onNone: () => Effect.fail(new NoAnswer({ reason: "it closed the connection" })),
      onSome: (value: BalancerReplyType) => Effect.succeed(value)
    })
  }).pipe(
    Effect.scoped,
    Effect.timeoutFail({ duration: timeout, onTimeout: () => new NoAnswer({ reason: "timed out" }) })
  )

/** Servers an operator's view takes from one balancer before it calls the report endless. */
const maxServers = 1_000_000

/**
 * The balancer's whole `StatusReport` (or its error reply), asked for page after page on one
 * connection: a report too long for one line comes in pages, each naming the `next`. The balancer
 * has `timeout` to answer each page.
 */
export const status = (balancer: Address, timeout: Duration.DurationInput = "5 seconds") =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const connection = yield* wire.connect(balancer, { timeout })
    const page = (after: ServerId | undefined) =>
      connection.send(BalancerRequest, new Status(after === undefined ? {} : { after })).pipe(
        Effect.zipRight(connection.read(BalancerReply)),
        Effect.flatMap(
          Option.match({
            onNone: () => Effect.fail(new NoAnswer({ reason: "it closed the connection" })),
            onSome: (reply: BalancerReplyType) => Effect.succeed(reply)
          })
        ),
        Effect.timeoutFail({ duration: timeout, onTimeout: () => new NoAnswer({ reason: "timed out" }) })
      )
    const servers: Array<ServerView> = []
    let after: ServerId | undefined = undefined
    while (true) {
      const reply: BalancerReplyType = yield* page(after)
      if (reply._tag !== "StatusReport") return reply
      servers.push(...reply.servers)
      if (reply.next === undefined) return new StatusReport({ strategy: reply.strategy, servers }, true)
      // Pages move forward and end: a balancer that says otherwise is not answering.
      if ((after !== undefined && reply.next <= after) || servers.length > maxServers) {
        return yield* new NoAnswer({ reason: "its status report does not end" })
      }
      after = reply.next
    }
  }).pipe(Effect.scoped)
