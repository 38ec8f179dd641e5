/**
 * A backend server's tie to its balancer: registers over a control connection it keeps open, reports
 * `Load` whenever its active-connection count changes, registers again by itself whenever the
 * connection is lost (backing off, up to 5 s between attempts), and deregisters on shutdown so it
 * leaves the rotation at once rather than after the balancer's dead-after.
 */
import { Context, Deferred, Duration, Effect, Layer, Option, Random, Ref, Schema, Stream } from "effect"
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
}) {}

class LinkLost extends Schema.TaggedError<LinkLost>()("LinkLost", { reason: Schema.String }) {}

export class BalancerLink extends Context.Tag("effect-lb/BalancerLink")<
  BalancerLink,
  {
    /** Whether the server is registered right now. */
    readonly registered: Effect.Effect<boolean>
    /** Leave without a word when the scope closes, as a crashed server would (the playground's "kill"). */
    readonly abandon: Effect.Effect<void>
  }
>() {}

const wildcard = new Set(["0.0.0.0", "::", ""])
/** `::ffff:10.0.0.7` (an IPv4 peer on a dual-stack socket) as plain `10.0.0.7`. */
const unmapped = (host: string) => (host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host)

export const make = (config: LinkConfig) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const server = yield* FileServer
    const listenHost = server.address.host
    /**
     * Where clients should go: as told; else where the server listens; else, listening on every
     * interface, the address it reaches the balancer from — the one interface surely routable
     * from there (a balancer on another machine must not be told 127.0.0.1).
     */
    const specFor = (connection: Connection): ServerSpec => ({
      id: server.id,
      host: Host.make(
        config.advertiseHost ?? (wildcard.has(listenHost) ? unmapped(connection.localHost ?? "127.0.0.1") : listenHost)
      ),
      port: Port.make(server.address.port),
      weight: config.weight
    })
    const current = yield* Ref.make(Option.none<{ connection: Connection; deregistered: Deferred.Deferred<void> }>())

    let registeredThisTime = false
    /** One registration, held until the connection is lost. */
    const session = Effect.gen(function* () {
      const connection = yield* wire.connect(config.balancer)
      const spec = specFor(connection)
      yield* connection.send(BalancerRequest, new Register({ server: spec, token: config.token }))
      const reply = yield* connection.read(BalancerReply)
      if (Option.isNone(reply)) return yield* new LinkLost({ reason: "closed before answering Register" })
      if (reply.value._tag === "Unauthorized") return yield* new RegistrationRefused({ reason: reply.value.message })
      if (reply.value._tag !== "Registered") {
        return yield* new RegistrationRefused({ reason: `answered ${reply.value._tag} to Register` })
      }
      const deregistered = yield* Deferred.make<void>()
      yield* Ref.set(current, Option.some({ connection, deregistered }))
      registeredThisTime = true
      yield* Effect.logInfo(
        `registered as ${spec.id} with the balancer at ${config.balancer.host}:${config.balancer.port}`
      )
      const report = server.active.changes.pipe(
        Stream.runForEach((active) =>
          Effect.flatMap(server.latencyMs, (latencyMs) =>
            connection.send(BalancerRequest, new Load({ active, latencyMs }))
          )
        )
      )
      const listen = Effect.gen(function* () {
        while (true) {
          const message = yield* connection.read(BalancerReply)
          if (Option.isNone(message)) return yield* new LinkLost({ reason: "the balancer closed the connection" })
          if (message.value._tag === "Deregistered") yield* Deferred.succeed(deregistered, undefined)
        }
      })
      yield* Effect.raceFirst(report, listen)
    }).pipe(
      Effect.scoped,
      Effect.ensuring(Ref.set(current, Option.none())),
      Effect.catchIf(
        (error) => error._tag !== "RegistrationRefused",
        (error) => Effect.logDebug("balancer link lost", error.message)
      )
    )

    // Registers again whenever the link drops; the wait doubles up to 5 s and resets after success.
    const keepRegistered = Effect.gen(function* () {
      let wait = 100
      while (true) {
        registeredThisTime = false
        yield* session
        const jitter = yield* Random.nextRange(0.8, 1.2)
        if (registeredThisTime) wait = 100
        yield* Effect.sleep(Duration.millis(wait * jitter))
        wait = Math.min(wait * 2, 5000)
      }
    }).pipe(
      Effect.catchTag("RegistrationRefused", (error) =>
        Effect.logError(`the balancer refused to register this server: ${error.reason}`)
      )
    )
    yield* Effect.forkScoped(keepRegistered)

    let abandoned = false
    // Runs before the server drains: leave the rotation first, then finish the work in flight.
    yield* Effect.addFinalizer(() =>
      Ref.get(current).pipe(
        Effect.map((link) => (abandoned ? Option.none() : link)),
        Effect.flatMap(
          Option.match({
            onNone: () => Effect.void,
            onSome: ({ connection, deregistered }) =>
              connection.send(BalancerRequest, new Deregister({})).pipe(
                // Interruptible, so the timeout works inside this finalizer.
                Effect.zipRight(
                  Effect.interruptible(Effect.raceFirst(Deferred.await(deregistered), connection.closed))
                ),
                Effect.timeout("2 seconds"),
                Effect.tap(() => Effect.logInfo("deregistered from the balancer")),
                Effect.ignore
              )
          })
        )
      )
    )

    return BalancerLink.of({
      registered: Effect.map(Ref.get(current), Option.isSome),
      abandon: Effect.sync(() => {
        abandoned = true
      })
    })
  })

export const layer = (config: LinkConfig): Layer.Layer<BalancerLink, never, Wire | FileServer> =>
  Layer.scoped(BalancerLink, make(config))
