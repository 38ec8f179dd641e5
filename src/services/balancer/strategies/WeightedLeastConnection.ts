/**
 * weighted-least-connection: the fewest active connections per unit of weight (the server's last
 * report plus the clients located to it since). Among equally loaded servers, the faster one by
 * measured response time, then the heavier, then in rotation.
 */
import { Layer } from "effect"
import { leastBy } from "./Least.js"
import { Strategy, type StrategyModule } from "./Strategy.js"
import { responseTime } from "./WeightedResponseTime.js"

const name = "weighted-least-connection"

export const makePicker = leastBy(
  (candidate) => candidate.active / candidate.weight,
  (candidate) => responseTime(candidate) ?? 0
)

export const WeightedLeastConnection: StrategyModule<typeof name> = {
  name,
  layer: Layer.succeed(Strategy, {
    name,
    summary: "fewest active connections per unit of weight",
    keyed: false,
    makePicker
  })
}
