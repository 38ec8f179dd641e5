/**
 * A backend server's tie to its balancer: registers over a control connection it keeps open, reports
 * `Load` whenever its active-connection count changes, registers again by itself whenever the
 * connection is lost or the balancer is full (`Busy`), backing off up to 5 s between attempts, and
 * deregisters on shutdown so it leaves the rotation at once rather than after the balancer's
 * dead-after.
 */
import { Context, Deferred, Duration, Effect, Layer, Option, Ref, Schedule, Schema, Stream } from "effect"
import { BalancerReply, BalancerRequest, Deregister, Load, Register } from "../../domain/Protocol.js"
import { Host, Port, type ServerSpec, type Weight } from "../../domain/Server.js"
import type { Connection } from "../wire/Connection.js"
import { FileServer } from "./FileServer.js"
import { type Address, Wire } from "../wire/Wire.js"

export interface LinkConfig {
  readonly balancer: Address
  readonly token?: string | undefined
  readonly weight: Weight
  /** The host the balancer should hand to clients (default: the host the server listens on). */
  readonly advertiseHost?: string | undefined
}

/** The balancer will not take this server (wrong token, or it rejected the registration). */
export class RegistrationRefused extends Schema.TaggedError<RegistrationRefused>()("RegistrationRefused", {
  reason: Schema.String
}) {
  override get message(): string {
    return `the balancer refused to register this server: ${this.reason}`
  }
}

class LinkLost extends Schema.TaggedError<LinkLost>()("LinkLost", { reason: Schema.String }) {}

export class BalancerLink extends Context.Tag("effect-lb/BalancerLink")<
  BalancerLink,
  {
    /** Whether the server is registered right now. */
    readonly registered: Effect.Effect<boolean>
    /** Leave without a word when the scope closes, as a crashed server would (the playground's "kill"). */
    readonly abandon: Effect.Effect<void>
    /**
     * Fails when the balancer refuses the server (a wrong token, a spec it rejects): the link has
     * stopped trying, and a server that means to be in the rotation should stop too. Never succeeds.
     */
    readonly refused: Effect.Effect<never, RegistrationRefused>
  }
>() {}

const wildcard = new Set(["0.0.0.0", "::", ""])
/** `::ffff:10.0.0.7` (an IPv4 peer on a dual-stack socket) as plain `10.0.0.7`. */
const unmapped = (host: string) => (host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host)

/**
 * What the server registers as. Clients should go: as told; else where the server listens; else,
 * listening on every interface, the address it reaches the balancer from — the one interface surely
 * routable from there (a balancer on another machine must not be told 127.0.0.1).
 */
const advertisedSpec = (server: FileServer["Type"], config: LinkConfig, connection: Connection): ServerSpec => {
  const listenHost = server.address.host
  return {
    id: server.id,
    host: Host.make(
      config.advertiseHost ?? (wildcard.has(listenHost) ? unmapped(connection.localHost ?? "127.0.0.1") : listenHost)
    ),
    port: Port.make(server.address.port),
    weight: config.weight
  }
}

/** The wait between attempts to register: 100 ms, doubling up to 5 s, each jittered by ±20%. */
const backoff: Schedule.Schedule<Duration.Duration, boolean> = Schedule.exponential("100 millis").pipe(
  Schedule.modifyDelay((_, wait) => Duration.min(wait, Duration.seconds(5))),
  Schedule.jittered
)

/**
 * When to register again after the link drops. Its input is whether the session that ended had
 * registered: then the backoff starts over.
 */
const reconnect = Schedule.passthrough(backoff).pipe(Schedule.resetWhen((registered) => registered))

/** A registration in force: its connection, and word of the balancer's `Deregistered`. */
interface Registration {
  readonly connection: Connection
  readonly deregistered: Deferred.Deferred<void>
}

/** Asks the balancer to take the server; fails unless it answers `Registered`. */
const register = (connection: Connection, spec: ServerSpec, token: string | undefined) =>
  Effect.gen(function* () {
    yield* connection.send(BalancerRequest, new Register({ server: spec, token }))
    const reply = yield* connection.read(BalancerReply)
    if (Option.isNone(reply)) return yield* new LinkLost({ reason: "closed before answering Register" })
    if (reply.value._tag === "Busy") {
      // The balancer is full for now (its --max-servers): worth asking again, later.
      yield* Effect.logWarning(`the balancer cannot take this server now: ${reply.value.message}`)
      return yield* new LinkLost({ reason: `answered Busy to Register: ${reply.value.message}` })
    }
    if (reply.value._tag !== "Registered") {
      const said = "message" in reply.value ? `: ${reply.value.message}` : ""
      return yield* new RegistrationRefused({ reason: `${reply.value._tag}${said}` })
    }
  })

/** Sends `Load` whenever the server's count of active connections changes. */
const reportLoad = (server: FileServer["Type"], connection: Connection) =>
  server.active.changes.pipe(
    Stream.runForEach((active) =>
      Effect.flatMap(server.latencyMs, (latencyMs) => connection.send(BalancerRequest, new Load({ active, latencyMs })))
    )
  )

/** Reads what the balancer says until it hangs up, noting its `Deregistered`. */
const listen = ({ connection, deregistered }: Registration) =>
  Effect.gen(function* () {
    while (true) {
      const message = yield* connection.read(BalancerReply)
      if (Option.isNone(message)) return yield* new LinkLost({ reason: "the balancer closed the connection" })
      if (message.value._tag === "Deregistered") yield* Deferred.succeed(deregistered, undefined)
    }
  })

/** Leaves the rotation: `Deregister`, then waits up to 2 s for the balancer to confirm or hang up. */
const deregister = ({ connection, deregistered }: Registration) =>
  connection.send(BalancerRequest, new Deregister({})).pipe(
    // Interruptible, so the timeout works inside a finalizer.
    Effect.zipRight(Effect.interruptible(Effect.raceFirst(Deferred.await(deregistered), connection.closed))),
    Effect.timeout("2 seconds"),
    Effect.tap(() => Effect.logInfo("deregistered from the balancer")),
    Effect.ignore
  )

const linkLost = (error: { readonly message: string }) => Effect.logDebug("balancer link lost", error.message)

/**
 * One registration on one connection, held (reporting load) until the connection is lost. Succeeds
 * with whether it registered; fails only when the balancer refuses the server.
 */
const session = (config: LinkConfig, current: Ref.Ref<Option.Option<Registration>>) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const server = yield* FileServer
    const connection = yield* wire.connect(config.balancer)
    const spec = advertisedSpec(server, config, connection)
    yield* register(connection, spec, config.token)
    const registration: Registration = { connection, deregistered: yield* Deferred.make<void>() }
    yield* Ref.set(current, Option.some(registration))
    yield* Effect.logInfo(
      `registered as ${spec.id} with the balancer at ${config.balancer.host}:${config.balancer.port}`
    )
    // How the held link ended is kept as a value, and logged once the connection is closed.
    return yield* Effect.exit(Effect.raceFirst(reportLoad(server, connection), listen(registration)))
  }).pipe(
    Effect.scoped,
    Effect.ensuring(Ref.set(current, Option.none())),
    Effect.flatMap((held) => Effect.as(Effect.catchAll(held, linkLost), true)),
    Effect.catchIf(
      (error) => error._tag !== "RegistrationRefused",
      (error) => Effect.as(linkLost(error), false)
    )
  )

export const make = (config: LinkConfig) =>
  Effect.gen(function* () {
    const current = yield* Ref.make(Option.none<Registration>())
    const refused = yield* Deferred.make<never, RegistrationRefused>()
    // Registers again whenever the link drops, until the balancer refuses the server.
    yield* session(config, current).pipe(
      Effect.repeat(reconnect),
      Effect.catchTag("RegistrationRefused", (error) =>
        // Whoever runs the server says so (the server command exits with it); this is for the logs.
        Effect.zipRight(Effect.logDebug(error.message), Deferred.fail(refused, error))
      ),
      Effect.forkScoped
    )

    let abandoned = false
    // Runs before the server drains: leave the rotation first, then finish the work in flight.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(Ref.get(current), (registration) =>
        abandoned || Option.isNone(registration) ? Effect.void : deregister(registration.value)
      )
    )

    return BalancerLink.of({
      registered: Effect.map(Ref.get(current), Option.isSome),
      abandon: Effect.sync(() => {
        abandoned = true
      }),
      refused: Deferred.await(refused)
    })
  })

export const layer = (config: LinkConfig): Layer.Layer<BalancerLink, never, Wire | FileServer> =>
  Layer.scoped(BalancerLink, make(config))
