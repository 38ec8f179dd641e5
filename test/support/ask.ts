/** Asking a real balancer process over loopback, for the e2e tests. */
import { Effect } from "effect"
import { type BalancerReply, Locate, Status } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"

/** What every effect-lb listener prints once it is bound: the port is the first group. */
export const listening = /listening on 127\.0\.0\.1:(\d+)/

/** The servers a balancer on 127.0.0.1:`port` reports. */
export const statusOf = (port: number) =>
  ask({ host: "127.0.0.1", port }, new Status()).pipe(
    Effect.map((reply: BalancerReply) => (reply._tag === "StatusReport" ? reply.servers : []))
  )

/** One Locate: the server's id (and its port, with `withPort`), or the error's tag. */
export const locate = (port: number, withPort = false) =>
  ask({ host: "127.0.0.1", port }, new Locate({})).pipe(
    Effect.map((reply) =>
      reply._tag === "Located" ? (withPort ? `${reply.server.id}@${reply.server.port}` : reply.server.id) : reply._tag
    )
  )
