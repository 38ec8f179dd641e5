/**
 * The balancer port: clients `Locate` a server; servers `Register`, report `Load` and `Deregister`
 * over a control connection they keep open; operators ask for `Status` and `SetStrategy`. An
 * optional token guards the requests that change the rotation.
 *
 * A registration belongs to the connection that made it, and only while no newer `Register` for the
 * same id or address has superseded it (a rolling restart): a superseded connection's `Load`,
 * `Deregister` and close change nothing.
 */
import { type Clock, Context, Duration, Effect, Either, Layer, Option } from "effect"
import { Busy, InvalidRequest } from "../../domain/Errors.js"
import {
  BalancerReply,
  type BalancerReply as BalancerReplyType,
  BalancerRequest,
  Deregistered,
  Located,
  Registered,
  StatusReport,
  StrategySet
} from "../../domain/Protocol.js"
import { formatEndpoint, type ServerId, type ServerLocation, type ServerSpec } from "../../domain/Server.js"
import * as AccessLog from "./AccessLog.js"
import { Balancer } from "./Balancer.js"
import { Operator } from "./Operator.js"
import { type Registration, ServerRegistry } from "./ServerRegistry.js"
import { Cluster } from "./shared/Cluster.js"
import { statusPage } from "./StatusPages.js"
import { Later, type RequestSession, type SessionControl } from "../wire/RequestPort.js"
import type { ListenerTls } from "../wire/Tls.js"
import { type Address, type ListenFailed, Wire } from "../wire/Wire.js"

export interface ControlPlaneConfig {
  readonly host: string
  /** 0 lets the system pick. */
  readonly port: number
  /** A connection that has not registered and sends nothing for this long is closed. */
  readonly idleTimeout: Duration.DurationInput
  readonly maxLine: number
  /** One access-log line per Locate (`--access-log`). */
  readonly accessLog?: boolean
  /** Serve TLS with this certificate (`--tls-cert`, `--tls-key`). */
  readonly tls?: ListenerTls | undefined
}

export const defaults = {
  host: "127.0.0.1",
  port: 4000,
  idleTimeout: Duration.seconds(30),
  maxLine: 64 * 1024
} as const

export class ControlPlane extends Context.Tag("effect-lb/ControlPlane")<
  ControlPlane,
  {
    /** Where the balancer port listens (the real port when asked for 0). */
    readonly address: Address
  }
>() {}

export const make = (config: ControlPlaneConfig) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const services: Services = {
      balancer: yield* Balancer,
      registry: yield* ServerRegistry,
      operator: yield* Operator,
      cluster: yield* Effect.serviceOption(Cluster),
      located: locatedReplies(),
      maxLine: config.maxLine,
      accessLog: config.accessLog === true ? yield* AccessLog.make() : undefined,
      clock: yield* Effect.clock
    }
    const address = yield* wire.serveRequests(
      { host: config.host, port: config.port, tls: config.tls },
      {
        request: BalancerRequest,
        reply: BalancerReply,
        idleTimeout: config.idleTimeout,
        maxLine: config.maxLine,
        invalid: (error): BalancerReplyType =>
          error._tag === "LineTooLong" ? new InvalidRequest({ message: error.message }) : error,
        open: (control) => new Session(services, control)
      }
    )
    return ControlPlane.of({ address })
  })

/** What the balancer port answers with. */
interface Services {
  readonly balancer: Balancer["Type"]
  readonly registry: ServerRegistry["Type"]
  readonly operator: Operator["Type"]
  /** With `--registry`: the cluster, on the first page of a `StatusReport`. */
  readonly cluster: Option.Option<Cluster["Type"]>
  /** The `Located` reply for a server. */
  readonly located: (server: ServerLocation) => Located
  /** Every reply fits a line of this many bytes: a long `StatusReport` is sent a page at a time. */
  readonly maxLine: number
  /** Present only with `--access-log`: the Locate path then takes the logged way. */
  readonly accessLog: AccessLog.AccessLog | undefined
  readonly clock: Clock.Clock
}

type ControlRequest = Exclude<BalancerRequest, { _tag: "Locate" }>

/**
 * One connection to the balancer port: its Locates answered synchronously, everything else as an
 * effect. One object per connection (its methods on the prototype): most connections carry one Locate.
 */
class Session implements RequestSession<BalancerRequest, BalancerReplyType, never> {
  /** The registration made over this connection (its control connection), if one was. */
  registered: Registration | undefined = undefined
  /** The client's address without its port: a Locate's default key (worked out once). */
  key: string | undefined = undefined
  /** The client's address with its port, for the access log (worked out once). */
  peer: string | undefined = undefined

  constructor(
    readonly services: Services,
    readonly control: SessionControl
  ) {}

  answer(request: BalancerRequest): BalancerReplyType | Later<BalancerReplyType> {
    const services = this.services
    if (request._tag !== "Locate") return new Later(answerControl(services, request, this))
    if (services.accessLog !== undefined) return locateLogged(services, services.accessLog, this, request)
    // The hot path: decided and answered synchronously, no effect to run.
    const balancer = services.balancer
    const key = request.key ?? (balancer.unsafeKeyed() ? clientKey(this) : undefined)
    const location = balancer.unsafeDetermineServer(request.exclude, key)
    return Either.isRight(location) ? services.located(location.right) : location.left
  }

  /** Only a server's control connection has anything to do at its close: a Locate's runs no effect. */
  closed(): Effect.Effect<void> | undefined {
    return this.registered === undefined ? undefined : removeIfDrained(this.services, this)
  }
}

/** A Locate answered as on the hot path, and written to the access log. */
const locateLogged = (
  { balancer, clock, located }: Services,
  accessLog: AccessLog.AccessLog,
  session: Session,
  request: Extract<BalancerRequest, { _tag: "Locate" }>
): BalancerReplyType => {
  const started = clock.unsafeCurrentTimeNanos()
  const key = request.key ?? (balancer.unsafeKeyed() ? clientKey(session) : undefined)
  const location = balancer.unsafeDetermineServer(request.exclude, key)
  accessLog.unsafeWrite({
    kind: "locate",
    client: (session.peer ??= formatEndpoint(session.control.peer())),
    server: Either.getOrUndefined(location),
    durationMs: Number(clock.unsafeCurrentTimeNanos() - started) / 1e6,
    outcome: Either.isRight(location) ? "located" : "no server",
    at: clock.unsafeCurrentTimeMillis()
  })
  return Either.isRight(location) ? located(location.right) : location.left
}

/** The client's host, asked of the connection only the first time a keyed strategy needs it. */
const clientKey = (session: Session): string => (session.key ??= session.control.peer().host)

/**
 * One `Located` per server, reused while its address stays the same: encoded once, sent often.
 * Returns the function that hands them out.
 */
const locatedReplies = (): ((server: ServerLocation) => Located) => {
  const replies = new Map<ServerId, Located>()
  return (server) => {
    const known = replies.get(server.id)
    if (
      known !== undefined &&
      known.server.host === server.host &&
      known.server.port === server.port &&
      known.server.tls === server.tls
    )
      return known
    // Built from a location the registry holds valid: no need to validate it again.
    const reply = new Located({ server }, true)
    if (replies.size >= 65_536) replies.clear()
    replies.set(server.id, reply)
    return reply
  }
}

/** Everything but Locate: rare, and free to take an effect. */
const answerControl = (
  services: Services,
  request: ControlRequest,
  session: Session
): Effect.Effect<BalancerReplyType | undefined> => {
  switch (request._tag) {
    case "Register":
      return register(services, request, session)
    case "Load":
      return load(services.registry, request, session.registered)
    case "Deregister":
      return deregister(services, request, session)
    case "Status":
      return Effect.map(statusFor(services, request.after), (report) =>
        statusPage(report, request.after, services.maxLine)
      )
    case "SetStrategy":
      return services.operator
        .authorize(request.token, "SetStrategy")
        .pipe(
          Effect.zipRight(sharedChange(services.operator)),
          Effect.zipRight(services.operator.setStrategy(request.strategy)),
          Effect.as<BalancerReplyType>(new StrategySet({ strategy: request.strategy })),
          Effect.merge
        )
  }
}

/**
 * An operator's change while a shared registry does not answer: refused. On this port as `Busy` (with
 * the registry's words), which every client already reads; the admin API says `RegistryUnavailable`.
 */
const sharedChange = (operator: Operator["Type"]) =>
  Effect.mapError(operator.writable, (error) => new Busy({ message: error.message }))

/** The operator's report; for the first page, with the cluster's view when the balancer has one. */
const statusFor = ({ cluster, operator }: Services, after: ServerId | undefined): Effect.Effect<StatusReport> =>
  after !== undefined || Option.isNone(cluster)
    ? operator.status
    : Effect.zipWith(
        operator.status,
        cluster.value.view,
        (report, view) => new StatusReport({ ...report, cluster: view }, true),
        { concurrent: true }
      )

/** A server joins the rotation; this connection becomes its control connection. */
const register = (
  { operator, registry }: Services,
  request: Extract<ControlRequest, { _tag: "Register" }>,
  session: Session
): Effect.Effect<BalancerReplyType> =>
  operator.authorize(request.token, "Register").pipe(
    Effect.zipRight(Effect.sync(() => supersedes(registry, request.server))),
    Effect.flatMap((earlier) =>
      Effect.tap(registry.register(request.server), ({ server, registration }) => {
        session.registered = registration
        // A server's control connection may stay quiet for long; it is never idle.
        session.control.keepAlive()
        return Effect.logInfo(`server ${server.id} registered at ${formatEndpoint(server)}${earlier}`)
      })
    ),
    Effect.map(({ server }): BalancerReplyType => new Registered({ id: server.id })),
    Effect.merge
  )

/** What a new registration of `spec` replaces, for the log: the same id, or another at its address. */
const supersedes = (registry: ServerRegistry["Type"], spec: ServerSpec): string => {
  const atAddress = registry.unsafeIdAt(spec)
  const replaced = [
    ...(registry.unsafeRegistration(spec.id) === undefined ? [] : [spec.id]),
    ...(atAddress === undefined || atAddress === spec.id ? [] : [atAddress])
  ]
  return replaced.length === 0 ? "" : `, superseding the earlier registration of ${replaced.join(" and ")}`
}

/** Whether this connection still speaks for its server: registered, and not superseded since. */
const inForce = (registry: ServerRegistry["Type"], registration: Registration): boolean =>
  registry.unsafeRegistration(registration.id)?.generation === registration.generation

const superseded = (registration: Registration) =>
  new InvalidRequest({
    message: `${registration.id} is no longer registered by this connection (a newer Register replaced it, or it was removed)`
  })

/** A load report, for the connection's own registration only. */
const load = (
  registry: ServerRegistry["Type"],
  request: Extract<ControlRequest, { _tag: "Load" }>,
  registered: Registration | undefined
): Effect.Effect<BalancerReplyType | undefined> => {
  if (registered === undefined) {
    return Effect.succeed(new InvalidRequest({ message: "Load before Register on this connection" }))
  }
  return Effect.suspend(() =>
    // The report itself is guarded too: it changes nothing if the registration is superseded meanwhile.
    inForce(registry, registered)
      ? Effect.as(registry.reportLoad(registered, request.active, request.latencyMs), undefined)
      : Effect.succeed(superseded(registered))
  )
}

/**
 * A server is drained. On its control connection, without an id or with its own, the connection's
 * own registration; otherwise (an operator, or a control connection naming another server) the
 * server named by id, with the token.
 */
const deregister = (
  { operator }: Services,
  request: Extract<ControlRequest, { _tag: "Deregister" }>,
  session: Session
): Effect.Effect<BalancerReplyType> => {
  const own = session.registered
  if (own !== undefined && (request.id === undefined || request.id === own.id)) {
    // A superseded or removed registration is out of the rotation already: nothing left to do.
    return operator.drain(own).pipe(
      Effect.catchTag("ServerNotFound", () =>
        Effect.logInfo(`server ${own.id}: Deregister from a superseded control connection changes nothing`)
      ),
      Effect.as(new Deregistered({ id: own.id }))
    )
  }
  if (request.id === undefined) {
    return Effect.succeed(new InvalidRequest({ message: "Deregister needs the server's id" }))
  }
  return operator.authorize(request.token, "Deregister").pipe(
    Effect.zipRight(sharedChange(operator)),
    Effect.zipRight(operator.drain(request.id)),
    Effect.as<BalancerReplyType>(new Deregistered({ id: request.id })),
    Effect.catchTag("ServerNotFound", (error) =>
      Effect.succeed<BalancerReplyType>(new InvalidRequest({ message: error.message }))
    ),
    Effect.merge
  )
}

/**
 * A server that deregistered and then hung up has finished draining: it leaves the registry. Only
 * its own registration: a newer one (the server restarted under the same id) stays.
 */
const removeIfDrained = ({ registry }: Services, session: Session): Effect.Effect<void> => {
  const registration = session.registered
  return registration === undefined
    ? Effect.void
    : Effect.flatMap(registry.get(registration), (server) =>
        Option.isSome(server) && server.value.state === "draining"
          ? Effect.asVoid(registry.remove(registration))
          : Effect.void
      )
}

export const layer = (
  config: ControlPlaneConfig
): Layer.Layer<ControlPlane, ListenFailed, Wire | Balancer | ServerRegistry | Operator> =>
  Layer.scoped(ControlPlane, make(config))
