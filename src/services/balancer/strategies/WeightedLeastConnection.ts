/**
 * weighted-least-connection: the fewest active connections per unit of weight (the server's last
 * report plus the clients located to it since). Among equally loaded servers, the faster one by
 * measured response time, then the heavier, then in rotation.
 */
import { leastBy } from "./Least.js"
import { responseTime } from "./WeightedResponseTime.js"

export const weightedLeastConnection = leastBy(
  "weighted-least-connection",
  "fewest active connections per unit of weight",
  (candidate) => candidate.active / candidate.weight,
  (candidate) => responseTime(candidate) ?? 0
)
