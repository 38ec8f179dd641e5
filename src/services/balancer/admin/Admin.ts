/**
 * The operators' view: an `@effect/platform` HTTP server beside the balancer port, where HAProxy
 * has its stats page and Envoy its admin API.
 *
 *   GET  /                     the live dashboard (one page, updated by server-sent events)
 *   GET  /api/status           StatusReport as JSON: the strategy and every server, the balancer
 *                              itself (version, uptime, where it listens) and the proxy's figures
 *   GET  /api/history          picks per server per second over the last two minutes
 *   GET  /api/servers[/:id]    the servers (or one)
 *   GET  /api/strategies       the strategies this balancer can switch to
 *   POST /api/strategy         {"strategy": NAME}                        guarded
 *   POST /api/servers          {"host", "port", "id"?, "weight"?}        guarded (409 if already known)
 *   PATCH /api/servers/:id     {"weight": N}: a new weight, at once        guarded
 *   DELETE /api/servers/:id    drain, then remove (`?now=true`: at once)  guarded
 *   POST /api/reload           reload the --config file (400 if it is bad) guarded
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
import { ControlPlane } from "../ControlPlane.js"
import * as Cluster from "../shared/Cluster.js"
import * as History from "./History.js"
import { Proxy } from "../Proxy.js"
import * as Http from "node:http"
import {
  type Busy,
  InvalidRequest,
  type RegistryUnavailable,
  type ServerExists,
  type ServerNotFound,
  type Unauthorized
} from "../../../domain/Errors.js"
import {
  type BalancerInfo,
  NewServer,
  type ProxyFigures,
  StatusReport,
  StrategyChange,
  WeightChange
} from "../../../domain/Protocol.js"
import { formatEndpoint, ServerId, Weight } from "../../../domain/Server.js"
import { page } from "./Dashboard.js"
import { describeParseError } from "../../wire/LineCodec.js"
import * as Metrics from "../Metrics.js"
import { Operator } from "../Operator.js"
import { ReloadFailed, Reloader } from "../Reload.js"
import * as Prometheus from "./Prometheus.js"
import { ServerRegistry } from "../ServerRegistry.js"
import { Strategies } from "../strategies/Catalog.js"
import { type Address, ListenFailed } from "../../wire/Wire.js"
import { Admin, type AdminConfig } from "./AdminConfig.js"

export { Admin, type AdminConfig, defaults } from "./AdminConfig.js"

/**
 * What the status adds to the operator's report: the balancer itself and the proxy. The balancer
 * port and the proxy are found in the context the admin server is built in, when they are there.
 */
class Extras extends Context.Tag("effect-lb/Admin/Extras")<
  Extras,
  { readonly balancer: Effect.Effect<BalancerInfo>; readonly proxy: Effect.Effect<ProxyFigures | undefined> }
>() {}

class Recent extends Context.Tag("effect-lb/Admin/History")<Recent, History.History>() {}

type AdminError =
  InvalidRequest | Unauthorized | ServerNotFound | ServerExists | Busy | ReloadFailed | RegistryUnavailable

const statusOf: Record<AdminError["_tag"], number> = {
  InvalidRequest: 400,
  Unauthorized: 401,
  ServerNotFound: 404,
  ServerExists: 409,
  // The registry is at --max-servers: a condition of the balancer, not of the request.
  Busy: 503,
  ReloadFailed: 400,
  // With --registry, while it does not answer: try again when it does.
  RegistryUnavailable: 503
}

/** `{_tag, message}`, and the id of the server it is about when there is one. */
const failure = (error: AdminError) =>
  HttpServerResponse.unsafeJson(
    error._tag === "ServerExists"
      ? { _tag: error._tag, message: error.message, id: error.id }
      : { _tag: error._tag, message: error.message },
    {
      status: statusOf[error._tag],
      ...(error._tag === "RegistryUnavailable" ? { headers: { "retry-after": "1" } } : {})
    }
  )

// ---- the token check, the body, the server id ------------------------------------------------------

/** `Bearer`, then the token: all the rest of the header, spaces inside it included (a token has none at its ends). */
const bearer = /^Bearer[ \t]+(.*?)[ \t]*$/i

/**
 * What the token may be, as it arrived in the header: as is (ASCII, or Latin-1 as `fetch` sends
 * it), its bytes read as UTF-8 (how curl sends a non-ASCII token), or percent-decoded UTF-8 (how the
 * dashboard sends every token, and how any client can send one that is not ASCII).
 */
const tokenReadings = (carried: string): ReadonlyArray<string> => {
  const readings = [carried]
  // Node hands header bytes over one character per byte (Latin-1): this gets the bytes back.
  const utf8 = Buffer.from(carried, "latin1").toString("utf8")
  if (utf8 !== carried && !utf8.includes("\uFFFD")) readings.push(utf8)
  if (carried.includes("%")) {
    try {
      readings.push(decodeURIComponent(carried))
    } catch {
      // Not percent-encoding after all: the other readings stand.
    }
  }
  return readings
}

/** The request's bearer token, each way it may be read (`[undefined]` when it carries none). */
const bearerTokens = Effect.map(HttpServerRequest.HttpServerRequest, (request): ReadonlyArray<string | undefined> => {
  const header = request.headers["authorization"]
  const carried = header === undefined ? undefined : bearer.exec(header)?.[1]
  return carried === undefined ? [undefined] : tokenReadings(carried)
})

/** Runs `change` once the request's bearer token is right (or none is needed). */
const guarded = <A, E, R>(what: string, change: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Operator, (operator) =>
    bearerTokens.pipe(
      Effect.flatMap((tokens) => Effect.firstSuccessOf(tokens.map((token) => operator.authorize(token, what)))),
      Effect.zipRight(change)
    )
  )

/** An operator's change to what the balancers share: refused (503) while a shared registry does not answer. */
const guardedShared = <A, E, R>(what: string, change: Effect.Effect<A, E, R>) =>
  guarded(
    what,
    Effect.flatMap(Operator, (operator) => Effect.zipRight(operator.writable, change))
  )

const maxBody = 64 * 1024

/** The request body as text, at most `maxBody` bytes, or one short `InvalidRequest` saying why not. */
const bodyText = HttpServerRequest.HttpServerRequest.pipe(
  // Refused before reading when the length is announced: the answer then still reaches the
  // client (an over-long body cut off mid-read takes the connection with it).
  Effect.filterOrFail(
    (request) => Number(request.headers["content-length"] ?? 0) <= maxBody,
    () => new InvalidRequest({ message: `the body is larger than ${maxBody} bytes` })
  ),
  Effect.flatMap((request) =>
    Effect.mapError(
      request.text,
      () => new InvalidRequest({ message: `the body could not be read (at most ${maxBody} bytes)` })
    )
  ),
  HttpIncomingMessage.withMaxBodySize(Option.some(maxBody))
)

/** Decodes JSON text as a value of `schema`, or one short `InvalidRequest` saying why not. */
const decodeJson = <A, I>(schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknownEither(schema)
  return (text: string): Either.Either<A, InvalidRequest> => {
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      return Either.left(new InvalidRequest({ message: "the body is not JSON" }))
    }
    try {
      return Either.mapLeft(decode(json), (error) => new InvalidRequest({ message: describeParseError(error) }))
    } catch {
      // Hostile enough to break the decoder (nesting thousands deep): still only a bad request.
      return Either.left(new InvalidRequest({ message: "the body is not a valid request" }))
    }
  }
}

/** The request body as a value of `schema`, or one short `InvalidRequest` saying why not. */
const body = <A, I>(schema: Schema.Schema<A, I>) => Effect.flatMap(bodyText, decodeJson(schema))

/** The route's `:id` as a server id. */
const serverId = HttpRouter.params.pipe(
  Effect.flatMap((params) =>
    Schema.decodeUnknown(ServerId)(params["id"]).pipe(
      Effect.mapError(() => new InvalidRequest({ message: "not a server id" }))
    )
  )
)

// ---- handlers, one per route -----------------------------------------------------------------------

const dashboard = Effect.succeed(HttpServerResponse.html(page))

const healthz = Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))

const readyz = Effect.flatMap(ServerRegistry, (registry) =>
  Effect.map(registry.list, (servers) => {
    const live = servers.filter((server) => server.state === "live").length
    return HttpServerResponse.unsafeJson({ ready: live > 0, live }, { status: live > 0 ? 200 : 503 })
  })
)

const metrics = Effect.gen(function* () {
  const registry = yield* ServerRegistry
  const servers = yield* registry.list
  const present = new Set<string>(servers.map((server) => server.id))
  // Per-server series come from the balancer's own store (Effect's registry never frees one), for
  // the servers listed now: a server that left takes its series with it.
  const pairs = [...(yield* Metric.snapshot), ...Metrics.unsafeServerPairs(servers)]
  const text = Prometheus.encode(pairs, (_, labels) => {
    const server = labels.get("server")
    return server === undefined || present.has(server)
  })
  return HttpServerResponse.text(text, { contentType: Prometheus.contentType })
})

const encodeStatus = Schema.encodeSync(StatusReport)

/** The operator's report, with the balancer's own figures and the proxy's. */
const fullStatus = Effect.gen(function* () {
  const report = yield* Effect.flatMap(Operator, (operator) => operator.status)
  const extras = yield* Extras
  const proxy = yield* extras.proxy
  const cluster = yield* Cluster.viewIfAny
  return new StatusReport(
    {
      ...report,
      balancer: yield* extras.balancer,
      ...(proxy === undefined ? {} : { proxy }),
      ...(Option.isSome(cluster) ? { cluster: cluster.value } : {})
    },
    true
  )
})

const status = Effect.map(fullStatus, (report) => HttpServerResponse.unsafeJson(encodeStatus(report)))

const history = Effect.flatMap(Recent, (recent) =>
  Effect.map(recent.samples, (samples) =>
    HttpServerResponse.unsafeJson({ intervalMs: History.intervalMs, samples: samples.map(History.toJson) })
  )
)

/** A status at each change (at most 4 a second) and every second, with the time it was taken. */
const statusEvents = <R>(report: Effect.Effect<StatusReport, never, R>, registry: ServerRegistry["Type"]) =>
  Stream.merge(
    Stream.tick("1 second"),
    registry.changes.pipe(
      Stream.throttle({ cost: () => 1, units: 4, duration: "1 second", strategy: "enforce" }),
      Stream.map(() => undefined)
    )
  ).pipe(
    Stream.mapEffect(() =>
      Effect.all({ status: Effect.map(report, encodeStatus), at: Clock.currentTimeMillis }).pipe(
        Effect.map(({ at, status }) => `data: ${JSON.stringify({ ...status, at })}\n\n`)
      )
    ),
    Stream.encodeText
  )

const events = Effect.gen(function* () {
  const context = yield* Effect.context<Operator | Extras>()
  const stream = statusEvents(Effect.provide(fullStatus, context), yield* ServerRegistry)
  return HttpServerResponse.stream(stream, {
    contentType: "text/event-stream",
    headers: { "cache-control": "no-store" }
  })
})

// Strategies: the names to switch to, and the switch.
const strategyNames = Effect.map(Strategies, (strategies) => HttpServerResponse.unsafeJson([...strategies.keys()]))
const setStrategy = guardedShared(
  "changing the strategy",
  Effect.flatMap(Operator, (operator) =>
    body(StrategyChange).pipe(
      Effect.tap(({ strategy }) => operator.setStrategy(strategy)),
      Effect.map(({ strategy }) => HttpServerResponse.unsafeJson({ strategy }))
    )
  )
)

const listServers = Effect.flatMap(ServerRegistry, (registry) =>
  Effect.map(registry.list, (servers) => HttpServerResponse.unsafeJson(servers))
)

const getServer = Effect.flatMap(Operator, (operator) =>
  serverId.pipe(
    Effect.flatMap(operator.get),
    Effect.map((server) => HttpServerResponse.unsafeJson(server))
  )
)

const addServer = guardedShared(
  "adding a server",
  Effect.flatMap(Operator, (operator) =>
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
)

const setWeight = guardedShared(
  "changing a weight",
  Effect.flatMap(Operator, (operator) =>
    Effect.all([serverId, body(WeightChange)]).pipe(
      Effect.flatMap(([id, { weight }]) => operator.setWeight(id, weight)),
      Effect.map((server) => HttpServerResponse.unsafeJson(server))
    )
  )
)

/** Drains the server, then removes it (answered at once, 202); `?now=true` removes it at once. */
const removeServer = guardedShared(
  "removing a server",
  Effect.flatMap(Operator, (operator) =>
    Effect.all([serverId, HttpServerRequest.ParsedSearchParams]).pipe(
      Effect.flatMap(([id, search]) =>
        search["now"] === "true"
          ? Effect.as(operator.remove(id), HttpServerResponse.unsafeJson({ id, state: "removed" }))
          : Effect.as(operator.drain(id), HttpServerResponse.unsafeJson({ id, state: "draining" }, { status: 202 }))
      )
    )
  )
)

/** Reloads the settings file (400 with the file's one-line refusal, and nothing changed, when it is bad). */
const reload = guarded(
  "reloading the configuration",
  Effect.flatMap(
    Effect.serviceOption(Reloader),
    (reloader): Effect.Effect<HttpServerResponse.HttpServerResponse, InvalidRequest | ReloadFailed> =>
      Option.isNone(reloader)
        ? Effect.fail(new InvalidRequest({ message: "this balancer was started without --config: nothing to reload" }))
        : Effect.map(reloader.value.reload, (report) => HttpServerResponse.unsafeJson(report))
  )
)

// ---- the router ------------------------------------------------------------------------------------

const router = HttpRouter.empty.pipe(
  HttpRouter.get("/", dashboard),
  HttpRouter.get("/healthz", healthz),
  HttpRouter.get("/readyz", readyz),
  HttpRouter.get("/metrics", metrics),
  HttpRouter.get("/api/status", status),
  HttpRouter.get("/api/history", history),
  HttpRouter.get("/api/strategies", strategyNames),
  HttpRouter.get("/api/servers", listServers),
  HttpRouter.get("/api/servers/:id", getServer),
  HttpRouter.get("/api/events", events),
  HttpRouter.post("/api/strategy", setStrategy),
  HttpRouter.post("/api/servers", addServer),
  HttpRouter.patch("/api/servers/:id", setWeight),
  HttpRouter.del("/api/servers/:id", removeServer),
  HttpRouter.post("/api/reload", reload)
)

const app = router.pipe(
  Effect.catchTags({
    InvalidRequest: failure,
    Unauthorized: failure,
    ServerNotFound: failure,
    ServerExists: failure,
    Busy: failure,
    ReloadFailed: failure,
    RegistryUnavailable: failure,
    RouteNotFound: () =>
      Effect.succeed(HttpServerResponse.unsafeJson({ _tag: "NotFound", message: "no such route" }, { status: 404 }))
  })
)

/** The HTTP server, listening, with Node's slow-client deadlines cut down. */
const listen = (config: AdminConfig) =>
  Effect.gen(function* () {
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
    return server
  })

/** The balancer's own figures and the proxy's, and the history sampler (running for the scope's life). */
const extrasFor = (config: AdminConfig, admin: Address) =>
  Effect.gen(function* () {
    const startedAt = yield* Clock.currentTimeMillis
    const plane = yield* Effect.serviceOption(ControlPlane)
    const proxy = Option.getOrUndefined(yield* Effect.serviceOption(Proxy))
    const registry = yield* ServerRegistry
    const recent = yield* History.make(registry.list, proxy && Effect.map(proxy.figures, (figures) => figures.accepted))
    const listening = {
      ...(Option.isSome(plane) ? { balancer: formatEndpoint(plane.value.address) } : {}),
      ...(proxy === undefined ? {} : { proxy: formatEndpoint(proxy.address) }),
      admin: formatEndpoint(admin)
    }
    const extras = Extras.of({
      balancer: Effect.map(Clock.currentTimeMillis, (now) => ({
        version: config.version ?? "unknown",
        startedAt,
        uptimeSeconds: Math.max(0, Math.floor((now - startedAt) / 1000)),
        listening
      })),
      proxy:
        proxy === undefined
          ? Effect.succeed(undefined)
          : Effect.zipWith(proxy.figures, recent.connectionsPerSecond, (figures, connectionsPerSecond) => ({
              ...figures,
              connectionsPerSecond
            }))
    })
    return Context.make(Extras, extras).pipe(Context.add(Recent, recent))
  })

export const make = (config: AdminConfig) =>
  Effect.gen(function* () {
    const server = yield* listen(config)
    const address =
      server.address._tag === "TcpAddress"
        ? { host: server.address.hostname, port: server.address.port }
        : { host: config.host, port: config.port }
    const extras = yield* extrasFor(config, address)
    yield* server.serve(app.pipe(Effect.provide(extras)))
    return Admin.of({ address })
  })

export const layer = (config: AdminConfig): Layer.Layer<Admin, ListenFailed, Operator | ServerRegistry | Strategies> =>
  Layer.scoped(Admin, make(config))
