/** weighted-least-connection: the fewest active connections per unit of weight; ties rotate. */
import { leastBy } from "./Least.js"

export const weightedLeastConnection = leastBy(
  "weighted-least-connection",
  "fewest active connections per unit of weight",
  (candidate) => candidate.active / candidate.weight
)
