/**
 * Balancer processes sharing a registry on Redis, seen through their admin API: start one, read its
 * strategy and servers, wait until every one says something.
 */
import { type Duration, Effect } from "effect"
import { eventually } from "./eventually.js"
import { spawn } from "./process.js"

export interface Shown {
  readonly id: string
  readonly weight: number
  readonly state: string
  readonly active?: number
  readonly latencyMs?: number | null
}

/** An HTTP request to the admin API on 127.0.0.1: its status and its JSON body. */
export const request = (port: number, path: string, init: RequestInit = {}) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}${path}`, { ...init, signal: AbortSignal.timeout(3000) }).then(async (response) => ({
      status: response.status,
      body: (await response.json()) as unknown
    }))
  )

/** What the balancer's admin API says: its strategy and its servers, by id. */
export const statusOf = (adminPort: number) =>
  Effect.map(request(adminPort, "/api/status"), ({ body }) => {
    const status = body as { strategy: string; servers: ReadonlyArray<Shown> }
    return { strategy: status.strategy, servers: new Map(status.servers.map((server) => [server.id, server])) }
  })

export type Status = Effect.Effect.Success<ReturnType<typeof statusOf>>

/** Every balancer says `holds` within `within`. */
export const allSee = (
  admins: ReadonlyArray<number>,
  holds: (status: Status) => boolean,
  within: Duration.DurationInput = "1 second"
) => Effect.forEach(admins, (admin) => eventually(statusOf(admin), holds, within), { concurrency: "unbounded" })

/** An `effect-lb balancer` on the registry at `url`, with an admin port: its ports once it listens. */
export const balancer = (url: string, namespace: string, more: ReadonlyArray<string> = []) =>
  Effect.gen(function* () {
    const running = yield* spawn([
      "balancer",
      "--port",
      "0",
      "--admin-port",
      "0",
      "--registry",
      url,
      "--registry-namespace",
      namespace,
      ...more
    ])
    const port = Number((yield* running.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))[1])
    const admin = Number((yield* running.waitFor(/admin and dashboard on http:\/\/127\.0\.0\.1:(\d+)\//))[1])
    return { port, admin, running }
  })
