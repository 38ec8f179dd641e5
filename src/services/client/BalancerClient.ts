/** Asking a balancer one thing: a request, its reply, within a deadline. For operators and clients. */
import { type Duration, Effect } from "effect"
import {
  type BalancerReply as BalancerReplyType,
  type BalancerRequest as BalancerRequestType,
  BalancerRequest,
  Status,
  StatusReport
} from "../../domain/Protocol.js"
import { formatEndpoint, type ServerId, type ServerView } from "../../domain/Server.js"
import {
  answered,
  balancerReply as reply,
  confirmBalancer as confirm,
  NotABalancer,
  noAnswerWithin,
  notABalancer
} from "../wire/Peer.js"
import type { Trust } from "../wire/Tls.js"
import { type Address, Wire } from "../wire/Wire.js"

export { NotABalancer } from "../wire/Peer.js"

/** `tls`: speak TLS to the balancer, accepting its certificate from these CAs. */
export const ask = (
  balancer: Address,
  request: BalancerRequestType,
  timeout: Duration.DurationInput = "5 seconds",
  tls?: Trust
) => {
  const peer = formatEndpoint(balancer)
  return Effect.gen(function* () {
    const wire = yield* Wire
    const connection = yield* wire.connect(balancer, { timeout, tls })
    yield* connection.send(BalancerRequest, request)
    const answer = yield* reply(connection, peer)
    if (answer._tag === "InvalidRequest") {
      if (request._tag === "Status") return yield* new NotABalancer({ peer, reason: answered(answer), silent: false })
      yield* confirm(connection, peer, answer)
    }
    return answer
  }).pipe(
    Effect.scoped,
    Effect.timeoutFail({ duration: timeout, onTimeout: () => notABalancer(peer, noAnswerWithin(timeout)) })
  )
}

/** Servers an operator's view takes from one balancer before it calls the report endless. */
const maxServers = 1_000_000

/**
 * The balancer's whole `StatusReport` (or its error reply), asked for page after page on one
 * connection: a report too long for one line comes in pages, each naming the `next`. The balancer
 * has `timeout` to answer each page.
 */
export const status = (balancer: Address, timeout: Duration.DurationInput = "5 seconds", tls?: Trust) =>
  Effect.gen(function* () {
    const peer = formatEndpoint(balancer)
    const wire = yield* Wire
    const connection = yield* wire.connect(balancer, { timeout, tls })
    const page = (after: ServerId | undefined) =>
      connection.send(BalancerRequest, new Status(after === undefined ? {} : { after })).pipe(
        Effect.zipRight(reply(connection, peer)),
        Effect.flatMap((answer) =>
          // Every balancer answers Status with its report; an InvalidRequest is a port that does not know it.
          answer._tag === "InvalidRequest"
            ? Effect.fail(new NotABalancer({ peer, reason: answered(answer), silent: false }))
            : Effect.succeed(answer)
        ),
        Effect.timeoutFail({ duration: timeout, onTimeout: () => notABalancer(peer, noAnswerWithin(timeout)) })
      )
    const servers: Array<ServerView> = []
    let after: ServerId | undefined = undefined
    while (true) {
      const answer: BalancerReplyType = yield* page(after)
      if (answer._tag !== "StatusReport") return answer
      servers.push(...answer.servers)
      if (answer.next === undefined) return new StatusReport({ strategy: answer.strategy, servers }, true)
      // Pages move forward and end: a balancer that says otherwise is not answering.
      if ((after !== undefined && answer.next <= after) || servers.length > maxServers) {
        return yield* new NotABalancer({ peer, reason: "its status report does not end", silent: false })
      }
      after = answer.next
    }
  }).pipe(Effect.scoped)
