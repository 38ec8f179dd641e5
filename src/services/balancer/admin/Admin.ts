/**
 * The operators' view: an `@effect/platform` HTTP server beside the balancer port, where HAProxy
 * has its stats page and Envoy its admin API.
 *
 *   GET  /                     the live dashboard (one page, updated by server-sent events)
 *   GET  /api/status           StatusReport as JSON: the strategy and every server
 *   GET  /api/servers[/:id]    the servers (or one)
 *   GET  /api/strategies       the strategies this balancer can switch to
 *   POST /api/strategy         {"strategy": NAME}                        guarded
 *   POST /api/servers          {"host", "port", "id"?, "weight"?}        guarded
 *   PATCH /api/servers/:id     {"weight": N}: a new weight, at once        guarded
 *   DELETE /api/servers/:id    drain, then remove (`?now=true`: at once)  guarded
 *   GET  /api/events           server-sent events: a status at each change (at most 4 a second)
 *                              and every second, with the time it was taken
 *   GET  /metrics              Prometheus text exposition of the balancer's Effect metrics
 *   GET  /healthz, /readyz     alive; ready when at least one server is live
 *
 * Guarded routes need `Authorization: Bearer TOKEN` when the balancer has a token. Bodies are
 * decoded with Schema at the edge (at most 64 KB); every failure is a JSON `{_tag, message}` with
 * its 4xx status.
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Clock, Context, Effect, Either, Layer, Metric, Option, Schema, Stream } from "effect"
import * as Http from "node:http"
import { InvalidRequest, type ServerNotFound, type Unauthorized } from "../../../domain/Errors.js"
import { NewServer, StatusReport, StrategyChange, WeightChange } from "../../../domain/Protocol.js"
import { formatEndpoint, ServerId, Weight } from "../../../domain/Server.js"
import { page } from "./Dashboard.js"
import { describeParseError } from "../../wire/LineCodec.js"
import * as Metrics from "../Metrics.js"
import { Operator } from "../Operator.js"
import * as Prometheus from "./Prometheus.js"
import { ServerRegistry } from "../ServerRegistry.js"
import { Strategies } from "../strategies/Catalog.js"
import { type Address, ListenFailed } from "../../wire/Wire.js"

export interface AdminConfig {
  /** 127.0.0.1 unless told otherwise: the admin API can change the rotation. */
  readonly host: string
  /** 0 lets the system pick. */
  readonly port: number
}

export const defaults = { host: "127.0.0.1" } as const

export class Admin extends Context.Tag("effect-lb/Admin")<Admin, { readonly address: Address }>() {}

type AdminError = InvalidRequest | Unauthorized | ServerNotFound

const statusOf: Record<AdminError["_tag"], number> = { InvalidRequest: 400, Unauthorized: 401, ServerNotFound: 404 }

const failure = (error: AdminError) =>
  HttpServerResponse.unsafeJson({ _tag: error._tag, message: error.message }, { status: statusOf[error._tag] })

const maxBody = 64 * 1024

/** The request body as a value of `schema`, or one short `InvalidRequest` saying why not. */
const body = <A, I>(schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknownEither(schema)
  const tooLarge = new InvalidRequest({ message: `the body is larger than ${maxBody} bytes` })
  return HttpServerRequest.HttpServerRequest.pipe(
    // Refused before reading when the length is announced: the answer then still reaches the
    // client (an over-long body cut off mid-read takes the connection with it).
    Effect.filterOrFail(
      (request) => Number(request.headers["content-length"] ?? 0) <= maxBody,
      () => tooLarge
    ),
    Effect.flatMap((request) =>
      Effect.mapError(
        request.text,
        () => new InvalidRequest({ message: `the body could not be read (at most ${maxBody} bytes)` })
      )
    ),
    HttpIncomingMessage.withMaxBodySize(Option.some(maxBody)),
    Effect.flatMap((text) => {
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch {
        return Effect.fail(new InvalidRequest({ message: "the body is not JSON" }))
      }
      try {
        return Either.mapLeft(decode(json), (error) => new InvalidRequest({ message: describeParseError(error) }))
      } catch {
        // Hostile enough to break the decoder (nesting thousands deep): still only a bad request.
        return Effect.fail(new InvalidRequest({ message: "the body is not a valid request" }))
      }
    })
  )
}

const bearer = /^Bearer\s+(\S+)\s*$/i

export const make = (config: AdminConfig) =>
  Effect.gen(function* () {
    const operator = yield* Operator
    const registry = yield* ServerRegistry
    const strategies = yield* Strategies

    /** Runs `change` once the request's bearer token is right (or none is needed). */
    const guarded = <A, E, R>(what: string, change: Effect.Effect<A, E, R>) =>
      HttpServerRequest.HttpServerRequest.pipe(
        Effect.flatMap((request) => {
          const header = request.headers["authorization"]
          return operator.authorize(header === undefined ? undefined : bearer.exec(header)?.[1], what)
        }),
        Effect.zipRight(change)
      )

    const serverId = HttpRouter.params.pipe(
      Effect.flatMap((params) =>
        Schema.decodeUnknown(ServerId)(params["id"]).pipe(
          Effect.mapError(() => new InvalidRequest({ message: "not a server id" }))
        )
      )
    )

    const status = Effect.map(operator.status, (report) => Schema.encodeSync(StatusReport)(report))

    const events = Stream.merge(
      Stream.tick("1 second"),
      registry.changes.pipe(
        Stream.throttle({ cost: () => 1, units: 4, duration: "1 second", strategy: "enforce" }),
        Stream.map(() => undefined)
      )
    ).pipe(
      Stream.mapEffect(() =>
        Effect.all({ status, at: Clock.currentTimeMillis }).pipe(
          Effect.map(({ at, status }) => `data: ${JSON.stringify({ ...status, at })}\n\n`)
        )
      ),
      Stream.encodeText
    )

    const metrics = Effect.gen(function* () {
      const servers = yield* registry.list
      Metrics.unsafeRecordServers(servers)
      const present = new Set<string>(servers.map((server) => server.id))
      const pairs = yield* Metric.snapshot
      // A server that left takes its series with it: a balancer with churning servers must not
      // grow its scrape forever.
      const text = Prometheus.encode(pairs, (_, labels) => {
        const server = labels.get("server")
        return server === undefined || present.has(server)
      })
      return HttpServerResponse.text(text, { contentType: Prometheus.contentType })
    })

    const router = HttpRouter.empty.pipe(
      HttpRouter.get("/", Effect.succeed(HttpServerResponse.html(page))),
      HttpRouter.get("/healthz", Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))),
      HttpRouter.get(
        "/readyz",
        Effect.map(registry.list, (servers) => {
          const live = servers.filter((server) => server.state === "live").length
          return HttpServerResponse.unsafeJson({ ready: live > 0, live }, { status: live > 0 ? 200 : 503 })
        })
      ),
      HttpRouter.get("/metrics", metrics),
      HttpRouter.get(
        "/api/status",
        Effect.map(status, (report) => HttpServerResponse.unsafeJson(report))
      ),
      HttpRouter.get("/api/strategies", Effect.succeed(HttpServerResponse.unsafeJson([...strategies.keys()]))),
      HttpRouter.get(
        "/api/servers",
        Effect.map(registry.list, (servers) => HttpServerResponse.unsafeJson(servers))
      ),
      HttpRouter.get(
        "/api/servers/:id",
        serverId.pipe(
          Effect.flatMap(operator.get),
          Effect.map((server) => HttpServerResponse.unsafeJson(server))
        )
      ),
      HttpRouter.get(
        "/api/events",
        Effect.succeed(
          HttpServerResponse.stream(events, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-store" }
          })
        )
      ),
      HttpRouter.post(
        "/api/strategy",
        guarded(
          "changing the strategy",
          body(StrategyChange).pipe(
            Effect.tap(({ strategy }) => operator.setStrategy(strategy)),
            Effect.map(({ strategy }) => HttpServerResponse.unsafeJson({ strategy }))
          )
        )
      ),
      HttpRouter.post(
        "/api/servers",
        guarded(
          "adding a server",
          body(NewServer).pipe(
            Effect.flatMap((server) =>
              operator.add({
                id: server.id ?? ServerId.make(formatEndpoint(server)),
                host: server.host,
                port: server.port,
                weight: server.weight ?? Weight.make(1)
              })
            ),
            Effect.map((server) => HttpServerResponse.unsafeJson(server, { status: 201 }))
          )
        )
      ),
      HttpRouter.patch(
        "/api/servers/:id",
        guarded(
          "changing a weight",
          Effect.all([serverId, body(WeightChange)]).pipe(
            Effect.flatMap(([id, { weight }]) => operator.setWeight(id, weight)),
            Effect.map((server) => HttpServerResponse.unsafeJson(server))
          )
        )
      ),
      HttpRouter.del(
        "/api/servers/:id",
        guarded(
          "removing a server",
          Effect.all([serverId, HttpServerRequest.ParsedSearchParams]).pipe(
            Effect.flatMap(([id, search]) =>
              search["now"] === "true"
                ? Effect.as(operator.remove(id), HttpServerResponse.unsafeJson({ id, state: "removed" }))
                : Effect.as(
                    operator.drain(id),
                    HttpServerResponse.unsafeJson({ id, state: "draining" }, { status: 202 })
                  )
            )
          )
        )
      )
    )

    const app = router.pipe(
      Effect.catchTags({
        InvalidRequest: failure,
        Unauthorized: failure,
        ServerNotFound: failure,
        RouteNotFound: () =>
          Effect.succeed(HttpServerResponse.unsafeJson({ _tag: "NotFound", message: "no such route" }, { status: 404 }))
      })
    )

    let node: Http.Server | undefined
    const endpoint = formatEndpoint(config)
    const server = yield* NodeHttpServer.make(
      () => {
        // A client that dribbles its request in is cut off in seconds, not Node's minutes.
        node = Http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 })
        return node
      },
      { host: config.host, port: config.port }
    ).pipe(Effect.mapError((error) => new ListenFailed({ endpoint, reason: String(error.cause) })))
    // Event streams never end by themselves: cut every connection so the server can close.
    yield* Effect.addFinalizer(() => Effect.sync(() => node?.closeAllConnections()))
    yield* server.serve(app)
    const address =
      server.address._tag === "TcpAddress"
        ? { host: server.address.hostname, port: server.address.port }
        : { host: config.host, port: config.port }
    return Admin.of({ address })
  })

export const layer = (config: AdminConfig): Layer.Layer<Admin, ListenFailed, Operator | ServerRegistry | Strategies> =>
  Layer.scoped(Admin, make(config))
