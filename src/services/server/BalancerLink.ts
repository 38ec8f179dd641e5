/**
 * A backend server's tie to its balancer: registers over a control connection it keeps open, reports
 * `Load` whenever its active-connection count changes, registers again by itself whenever the
 * connection is lost or the balancer is full (`Busy`), backing off up to 5 s between attempts, and
 * deregisters on shutdown so it leaves the rotation at once rather than after the balancer's
 * dead-after. Given several balancers, it is registered with one at a time: the first that takes
 * it, then, when that link is lost, the next; the backoff applies to whole rounds of them.
 */
import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Ref, Schedule, Schema, Stream } from "effect"
import { BalancerReply, BalancerRequest, Deregister, Load, Register } from "../../domain/Protocol.js"
import { formatEndpoint, Host, Port, type ServerSpec, type Weight } from "../../domain/Server.js"
import type { Connection } from "../wire/Connection.js"
import { balancerReply, confirmBalancer, noAnswerWithin, notABalancer } from "../wire/Peer.js"
import { FileServer } from "./FileServer.js"
import { type Address, Wire } from "../wire/Wire.js"

/** The one balancer, or several, as a list. */
const addresses = (balancer: Address | ReadonlyArray<Address>): ReadonlyArray<Address> =>
  "host" in balancer ? [balancer] : balancer
import type { Trust } from "../wire/Tls.js"

export interface LinkConfig {
  /**
   * The balancer, or several: the server registers with the first of them that takes it, in order,
   * and when that link is lost moves on to the next (the last wraps to the first).
   */
  readonly balancer: Address | ReadonlyArray<Address>
  readonly token?: string | undefined
  readonly weight: Weight
  /** The host the balancer should hand to clients (default: the host the server listens on). */
  readonly advertiseHost?: string | undefined
  /** Speak TLS to the balancer, accepting its certificate from these CAs (`--tls`, `--ca`). */
  readonly tls?: Trust | undefined
}

/** The balancer will not take this server (wrong token, or it rejected the registration). */
export class RegistrationRefused extends Schema.TaggedError<RegistrationRefused>()("RegistrationRefused", {
  /** The balancer's address, `host:port`. */
  balancer: Schema.String,
  /** Its reply, `TAG: message`. */
  reason: Schema.String,
  /** Whether this server sent a token. */
  withToken: Schema.Boolean
}) {
  override get message(): string {
    const at = `the balancer at ${this.balancer}`
    if (!this.reason.startsWith("Unauthorized")) return `${at} refused to register this server: ${this.reason}`
    return this.withToken ? `${at} refused the token: ${this.reason}` : `${at} needs a token (--token): ${this.reason}`
  }
}

class LinkLost extends Schema.TaggedError<LinkLost>()("LinkLost", { reason: Schema.String }) {
  override get message(): string {
    return this.reason
  }
}

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
    weight: config.weight,
    ...(server.tls ? { tls: true } : {})
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

/** How long the balancer has to answer `Register`. */
const registerTimeout = Duration.seconds(5)

/**
 * Asks the balancer to take the server; fails unless it answers `Registered`. Something that is not
 * a balancer (it answers nothing, or what no balancer sends) may be replaced by one: not a refusal.
 */
const register = (connection: Connection, spec: ServerSpec, token: string | undefined, balancer: string) =>
  Effect.gen(function* () {
    yield* connection.send(BalancerRequest, new Register({ server: spec, token }))
    const reply = yield* balancerReply(connection, balancer).pipe(
      Effect.timeoutFail({
        duration: registerTimeout,
        onTimeout: () => notABalancer(balancer, noAnswerWithin(registerTimeout))
      })
    )
    // The balancer is full for now (its --max-servers): worth asking again, later.
    if (reply._tag === "Busy") return yield* new LinkLost({ reason: `it answered Busy: ${reply.message}` })
    if (reply._tag === "InvalidRequest") yield* confirmBalancer(connection, balancer, reply)
    if (reply._tag !== "Registered") {
      const said = "message" in reply ? `: ${reply.message}` : ""
      return yield* new RegistrationRefused({
        balancer,
        reason: `${reply._tag}${said}`,
        withToken: token !== undefined
      })
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

/** Failures in a row before the first warning: a balancer starting at the same moment is not trouble yet. */
const warnAfter = 3
/** While the reason stays the same, a warning at most this often. */
const repeatEvery = 30_000

/**
 * When failing to register is worth a warning: at the third failure in a row (a balancer starting at
 * the same moment is not trouble), then whenever the reason changes, and every 30 s while it does
 * not. Plain state; the time is given.
 */
export class RegistrationTrouble {
  private failures = 0
  private warnedAt: number | undefined = undefined
  private warnedReason: string | undefined = undefined

  /** One more failed attempt, at `now` (ms): the warning to log, when one is due. */
  failed(reason: string, now: number): string | undefined {
    this.failures += 1
    if (this.failures < warnAfter) return undefined
    const repeat = reason === this.warnedReason && this.warnedAt !== undefined && now - this.warnedAt < repeatEvery
    if (repeat) return undefined
    this.warnedAt = now
    this.warnedReason = reason
    return `${reason} (${this.failures} failed attempts); trying again`
  }

  /** Registered at last: the attempts that failed before, and the count starts over. */
  succeeded(): number {
    const failures = this.failures
    this.failures = 0
    this.warnedAt = undefined
    this.warnedReason = undefined
    return failures
  }
}

/** An attempt to register failed: always in the debug log, and as a warning when `trouble` says one is due. */
const failed = (trouble: RegistrationTrouble, balancer: string, error: { readonly message: string }) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const warning = trouble.failed(error.message, now)
    return Effect.zipRight(
      Effect.logDebug("cannot register with the balancer", error.message),
      warning === undefined
        ? Effect.void
        : Effect.logWarning(
            // Most reasons name the balancer's address already.
            `cannot register${error.message.includes(balancer) ? "" : ` with the balancer at ${balancer}`}: ${warning}`
          )
    )
  })

/**
 * One registration on one connection, held (reporting load) until the connection is lost. Succeeds
 * with whether it registered; fails only when the balancer refuses the server.
 */
const session = (
  config: LinkConfig,
  address: Address,
  current: Ref.Ref<Option.Option<Registration>>,
  trouble: RegistrationTrouble
) => {
  const balancer = formatEndpoint(address)
  return Effect.gen(function* () {
    const wire = yield* Wire
    const server = yield* FileServer
    const connection = yield* wire.connect(address, { tls: config.tls })
    const spec = advertisedSpec(server, config, connection)
    yield* register(connection, spec, config.token, balancer)
    const registration: Registration = { connection, deregistered: yield* Deferred.make<void>() }
    yield* Ref.set(current, Option.some(registration))
    const before = trouble.succeeded()
    yield* Effect.logInfo(
      `registered as ${spec.id} with the balancer at ${balancer}${before > 0 ? ` after ${before} failed attempts` : ""}`
    )
    // How the held link ended is kept as a value, and logged once the connection is closed.
    return yield* Effect.exit(Effect.raceFirst(reportLoad(server, connection), listen(registration)))
  }).pipe(
    Effect.scoped,
    Effect.ensuring(Ref.set(current, Option.none())),
    Effect.flatMap((held) =>
      Effect.as(
        Effect.catchAll(held, (error) =>
          Effect.logWarning(`lost the balancer at ${balancer} (${error.message}); registering again`)
        ),
        true
      )
    ),
    Effect.catchIf(
      (error) => error._tag !== "RegistrationRefused",
      (error) => Effect.as(failed(trouble, balancer, error), false)
    )
  )
}

/**
 * One round over the balancers, from `next.at`: each tried in turn until one registers the server;
 * once that link is lost, the next one is where the following round starts. Succeeds with whether
 * it registered (the reconnect backoff starts over then); fails only when a balancer refuses the
 * server, which ends every round: a wrong token or spec is wrong for every balancer.
 */
const round = (
  config: LinkConfig,
  balancers: ReadonlyArray<Address>,
  next: { at: number },
  current: Ref.Ref<Option.Option<Registration>>,
  trouble: RegistrationTrouble
) => {
  const from = (tried: number): Effect.Effect<boolean, RegistrationRefused, Wire | FileServer> => {
    const index = (next.at + tried) % balancers.length
    const address = balancers[index]
    if (tried >= balancers.length || address === undefined) return Effect.succeed(false)
    return Effect.flatMap(session(config, address, current, trouble), (registered) => {
      if (!registered) return from(tried + 1)
      next.at = (index + 1) % balancers.length
      return Effect.succeed(true)
    })
  }
  return Effect.suspend(() => from(0))
}

export const make = (config: LinkConfig) =>
  Effect.gen(function* () {
    const current = yield* Ref.make(Option.none<Registration>())
    const refused = yield* Deferred.make<never, RegistrationRefused>()
    // Registers again whenever the link drops, until the balancer refuses the server.
    const trouble = new RegistrationTrouble()
    const next = { at: 0 }
    yield* round(config, addresses(config.balancer), next, current, trouble).pipe(
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
