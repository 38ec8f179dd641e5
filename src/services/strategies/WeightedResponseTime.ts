/**
 * weighted-response-time: the least smoothed probe round trip, divided by weight (a server of weight
 * 2 counts as twice as fast); a server not yet measured is tried first. Ties rotate.
 */
import { leastBy } from "./Least.js"

export const weightedResponseTime = leastBy(
  "weighted-response-time",
  "least measured response time, scaled by weight",
  (candidate) => (candidate.responseTimeMs === null ? -1 : candidate.responseTimeMs / candidate.weight)
)
