/** Asking a balancer one thing: a request, its reply, within a deadline. For operators and clients. */
import { Duration, Effect, Option, Schema } from "effect"
import {
  type BalancerReply as BalancerReplyType,
  BalancerReply,
  type BalancerRequest as BalancerRequestType,
  BalancerRequest
} from "../../domain/Protocol.js"
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
