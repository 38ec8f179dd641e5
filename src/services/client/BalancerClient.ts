/** Asking a balancer one thing: a request, its reply, within a deadline. For operators and clients. */
import { type Duration, Effect } from "effect"
import {
  type BalancerReply as BalancerReplyType,
  type BalancerRequest as BalancerRequestType,
  BalancerRequest,
  type ClusterView,
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
import { type Address, describeConnectReason, Wire } from "../wire/Wire.js"
import { NoBalancerAnswered } from "./Errors.js"

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
    // With `--registry`, the first page has the cluster too.
    let cluster: ClusterView | undefined = undefined
    while (true) {
      const answer: BalancerReplyType = yield* page(after)
      if (answer._tag !== "StatusReport") return answer
      servers.push(...answer.servers)
      if (after === undefined) cluster = answer.cluster
      if (answer.next === undefined) {
        return new StatusReport(
          { strategy: answer.strategy, servers, ...(cluster === undefined ? {} : { cluster }) },
          true
        )
      }
      // Pages move forward and end: a balancer that says otherwise is not answering.
      if ((after !== undefined && answer.next <= after) || servers.length > maxServers) {
        return yield* new NotABalancer({ peer, reason: "its status report does not end", silent: false })
      }
      after = answer.next
    }
  }).pipe(Effect.scoped)

/** The one balancer, or several, as a list. */
export const addresses = (balancer: Address | ReadonlyArray<Address>): ReadonlyArray<Address> =>
  "host" in balancer ? [balancer] : balancer

/** Why a balancer was passed over, in a few words; `silent`: it gave no answer at all. */
export interface PassedOver {
  readonly reason: string
  readonly silent: boolean
}

/** A balancer that cannot be reached, hangs up or does not answer as one: the next one is asked. */
export const unreachable = (error: {
  readonly _tag: string
  readonly message: string
  readonly reason?: string
  readonly silent?: boolean
}): PassedOver | undefined => {
  switch (error._tag) {
    case "ConnectFailed":
      return { reason: describeConnectReason(error.reason ?? error.message), silent: true }
    case "NotABalancer":
      return { reason: error.reason ?? error.message, silent: error.silent === true }
    case "BalancerUnavailable":
      return { reason: error.reason ?? error.message, silent: true }
    case "ConnectionClosed":
    case "LineTooLong":
      return { reason: error.message, silent: error._tag === "ConnectionClosed" }
    default:
      return undefined
  }
}

/** How a round over several balancers treats a failure. */
export interface Round<E> {
  /** Why the balancer that failed so is passed over for the next; `undefined`: its failure ends the round. */
  readonly passOver: (error: E) => PassedOver | undefined
  /** A failure that, once every balancer was passed over, is the round's rather than `NoBalancerAnswered`. */
  readonly prevails?: (error: E) => boolean
}

/**
 * Asks `balancers` in turn, from the one at `start`, until one answers: its answer and its place in
 * the list. One that `round` passes over costs nothing more than its own try: the next is asked at
 * once. When every one was passed over: with one balancer, its own failure, as it has always been;
 * with several, one that `prevails`, else `NoBalancerAnswered` naming each and why.
 */
export const firstAnswering = <A, E, R>(
  balancers: ReadonlyArray<Address>,
  start: number,
  askOne: (balancer: Address) => Effect.Effect<A, E, R>,
  round: Round<E>
): Effect.Effect<{ readonly value: A; readonly index: number }, E | NoBalancerAnswered, R> =>
  Effect.suspend(() => {
    const count = balancers.length
    const passed: Array<{ readonly balancer: string; readonly reason: string; readonly silent: boolean }> = []
    const errors: Array<E> = []
    const roundFailed = (): E | NoBalancerAnswered => {
      const only = errors[0]
      if (count === 1 && only !== undefined) return only
      const prevailing = round.prevails === undefined ? undefined : errors.find(round.prevails)
      return (
        prevailing ??
        new NoBalancerAnswered({
          balancers: passed.map(({ balancer, reason }) => ({ balancer, reason })),
          silent: passed.some((one) => one.silent)
        })
      )
    }
    const at = (
      tried: number
    ): Effect.Effect<{ readonly value: A; readonly index: number }, E | NoBalancerAnswered, R> => {
      const index = (start + tried) % count
      const balancer = balancers[index]
      if (balancer === undefined) return Effect.fail(roundFailed())
      return Effect.matchEffect(askOne(balancer), {
        onSuccess: (value) => Effect.succeed({ value, index }),
        onFailure: (error) => {
          const why = round.passOver(error)
          if (why === undefined) return Effect.fail(error)
          passed.push({ balancer: formatEndpoint(balancer), ...why })
          errors.push(error)
          return tried + 1 < count ? at(tried + 1) : Effect.fail(roundFailed())
        }
      })
    }
    return at(0)
  })

const nameAt = (list: ReadonlyArray<Address>, index: number) => {
  const balancer = list[index]
  return balancer === undefined ? "" : formatEndpoint(balancer)
}

/** `ask`, of the first of `balancers` that answers (in order): the answer and which balancer gave it. */
export const askFirst = (
  balancers: Address | ReadonlyArray<Address>,
  request: BalancerRequestType,
  timeout: Duration.DurationInput = "5 seconds",
  tls?: Trust
) => {
  const list = addresses(balancers)
  return Effect.map(
    firstAnswering(list, 0, (balancer) => ask(balancer, request, timeout, tls), { passOver: unreachable }),
    ({ value, index }) => ({ reply: value, balancer: nameAt(list, index) })
  )
}

/** `status`, of the first of `balancers` that answers (in order): the report and which balancer gave it. */
export const statusOfFirst = (
  balancers: Address | ReadonlyArray<Address>,
  timeout: Duration.DurationInput = "5 seconds",
  tls?: Trust
) => {
  const list = addresses(balancers)
  return Effect.map(
    firstAnswering(list, 0, (balancer) => status(balancer, timeout, tls), { passOver: unreachable }),
    ({ value, index }) => ({ reply: value, balancer: nameAt(list, index) })
  )
}
