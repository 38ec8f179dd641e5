/**
 * weighted-response-time: the least expected response time per unit of weight. A server's response
 * time is its own smoothed, peak-sensitive report of how long requests take (the probe round trip
 * until it reports one), and it is multiplied by the requests it has in flight plus one — as
 * Finagle's and Linkerd's peak-EWMA balancers do — so a server that is slow *and* busy is avoided,
 * and a burst of clients does not all land on the one that measured fastest a moment ago.
 * A server not yet measured is tried first. Ties go to the heavier server, then rotate.
 */
import { Layer } from "effect"
import { leastBy } from "./Least.js"
import { type Candidate, Strategy, type StrategyModule } from "./Strategy.js"

const name = "weighted-response-time"

export const responseTime = (candidate: Candidate): number | null => candidate.latencyMs ?? candidate.responseTimeMs

/** Expected time to answer one more request, per unit of weight; -1 when unknown (try it). */
export const expectedCost = (candidate: Candidate): number => {
  const time = responseTime(candidate)
  return time === null ? -1 : (time * (candidate.active + 1)) / candidate.weight
}

export const makePicker = leastBy(expectedCost)

export const WeightedResponseTime: StrategyModule<typeof name> = {
  name,
  layer: Layer.succeed(Strategy, {
    name,
    summary: "least expected response time (latency x in-flight), per unit of weight",
    keyed: false,
    makePicker
  })
}
