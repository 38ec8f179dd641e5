/**
 * How a client's request can fail, beyond the errors a server or balancer sends back: the client
 * re-routes on `ServerFailed`, `BalancerUnavailable` and `NoBalancerAnswered`, and ends with `GaveUp` or `SaveFailed`.
 */
import { Schema } from "effect"

/** One server failed us; another may do. */
export class ServerFailed extends Schema.TaggedError<ServerFailed>()("ServerFailed", {
  server: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.server} failed: ${this.reason}`
  }
}

/** The balancer cannot be reached or does not answer. */
export class BalancerUnavailable extends Schema.TaggedError<BalancerUnavailable>()("BalancerUnavailable", {
  balancer: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot reach the balancer at ${this.balancer}: ${this.reason}`
  }
}

/** A balancer of several that could not be asked, and why. */
export const Unanswered = Schema.Struct({ balancer: Schema.String, reason: Schema.String })

/**
 * A round of several balancers: none could be reached or answered as a balancer. `silent`: some gave
 * no answer at all (down, starting, too busy), so asking again later may help.
 */
export class NoBalancerAnswered extends Schema.TaggedError<NoBalancerAnswered>()("NoBalancerAnswered", {
  balancers: Schema.Array(Unanswered),
  silent: Schema.Boolean
}) {
  override get message(): string {
    return `no balancer answered: ${this.balancers.map(({ balancer, reason }) => `${balancer} (${reason})`).join(", ")}`
  }
}

/** Every attempt failed: no server could serve the request. */
export class GaveUp extends Schema.TaggedError<GaveUp>()("GaveUp", {
  attempts: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `no server could serve the request after ${this.attempts} attempts (last: ${this.reason})`
  }
}

/** The download could not be written where it was asked to go. */
export class SaveFailed extends Schema.TaggedError<SaveFailed>()("SaveFailed", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot save ${this.path}: ${this.reason}`
  }
}

/** A file of that name is already in the folder, and the download was not told to replace it. */
export class FileExists extends Schema.TaggedError<FileExists>()("FileExists", {
  name: Schema.String,
  folder: Schema.String
}) {
  override get message(): string {
    return `${this.name} exists in ${this.folder}; use --force to overwrite`
  }
}
