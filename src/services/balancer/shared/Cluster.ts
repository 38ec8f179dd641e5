/**
 * The cluster as operators see it: each balancer with `--registry` announces itself in the store
 * (its id, addresses, version, start time) and renews that every heartbeat; the announcement expires
 * a few seconds after the last one, so a balancer that died leaves the list by itself, and one that
 * stops cleanly takes its entry away. The list is read from the store when asked, within a deadline;
 * when the store does not answer, the last list read is shown, marked stale.
 *
 * Nothing here is on the Locate path or the proxy's: only the admin API asks.
 */
import { Clock, Context, Duration, Effect, Layer, Option, Schedule, type Scope } from "effect"
import type { ClusterView } from "../../../domain/Protocol.js"
import { RegistrySync } from "./SharedRegistry.js"
import { type MemberRecord, SharedStore, StoreUnavailable } from "./Store.js"

export interface ClusterConfig {
  readonly balancerId: string
  readonly version: string
  /** The store, as a person may see it (no password). */
  readonly url: string
  readonly namespace: string
  /** How often this balancer renews its announcement. */
  readonly heartbeat: Duration.DurationInput
  /** How long an announcement stands without a renewal. */
  readonly expireAfter: Duration.DurationInput
  /** Each announcement, each reading of the list, and the clean stop's removal, within this long. */
  readonly timeout: Duration.DurationInput
}

export const defaults = {
  heartbeat: Duration.seconds(1),
  expireAfter: Duration.seconds(5),
  timeout: Duration.seconds(1)
} as const

export type Addresses = MemberRecord["addresses"]

export class Cluster extends Context.Tag("effect-lb/Cluster")<
  Cluster,
  {
    /** Announces this balancer, at `addresses`, every heartbeat for the scope's life; removes it at the end. */
    readonly announce: (addresses: Addresses) => Effect.Effect<void, never, Scope.Scope>
    /** The registry's state and the balancers in the cluster, as of now. */
    readonly view: Effect.Effect<ClusterView>
  }
>() {}

const bounded = <A>(effect: Effect.Effect<A, StoreUnavailable>, timeout: Duration.DurationInput, what: string) =>
  Effect.timeoutFail(effect, {
    duration: timeout,
    onTimeout: () => new StoreUnavailable({ message: `no answer to ${what} within the deadline` })
  })

/**
 * Renews the announcement each heartbeat. A failure is logged once its announcement has lapsed (the
 * other balancers no longer list this one), and once until it works again: a beat that fails while
 * the connection is still opening, or while Redis is down (which the shared registry says already),
 * is not news.
 */
const heartbeat = (store: SharedStore["Type"], config: ClusterConfig, record: (now: number) => MemberRecord) =>
  Effect.gen(function* () {
    const expireAfter = Duration.decode(config.expireAfter)
    let failingSince: number | undefined
    let told = false
    const beat = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      bounded(store.announce(record(now), expireAfter), config.timeout, "an announcement").pipe(
        Effect.matchEffect({
          onSuccess: () =>
            Effect.sync(() => {
              failingSince = undefined
              told = false
            }),
          onFailure: (error) => {
            failingSince ??= now
            if (told || now - failingSince < Duration.toMillis(expireAfter)) return Effect.void
            told = true
            return Effect.logWarning(
              `this balancer has not been announced to the cluster for ${Duration.format(expireAfter)}, so the others no longer list it: ${error.message}`
            )
          }
        })
      )
    )
    yield* Effect.repeat(beat, Schedule.spaced(config.heartbeat))
  })

export const make = (config: ClusterConfig) =>
  Effect.gen(function* () {
    const store = yield* SharedStore
    const sync = yield* RegistrySync
    // The run the shared registry signs with: the leases of its servers last as long as this announcement.
    const instance = sync.instance
    const startedAt = yield* Clock.currentTimeMillis
    let known: ReadonlyArray<MemberRecord> = []
    const announce = (addresses: Addresses) =>
      Effect.gen(function* () {
        const record = (now: number): MemberRecord => ({
          id: config.balancerId,
          instance,
          addresses,
          version: config.version,
          startedAt,
          lastSeenAt: now
        })
        yield* Effect.addFinalizer(() =>
          bounded(store.withdraw({ id: config.balancerId, instance }), config.timeout, "the removal").pipe(
            Effect.catchAll((error) => Effect.logWarning(`left the cluster without saying so: ${error.message}`))
          )
        )
        yield* Effect.forkScoped(heartbeat(store, config, record))
      })
    const view = Effect.gen(function* () {
      const status = yield* sync.status
      const read = yield* Effect.either(bounded(store.members, config.timeout, "the list of balancers"))
      if (read._tag === "Right") known = [...read.right].sort((a, b) => a.id.localeCompare(b.id))
      const stale = read._tag === "Left"
      return {
        registry: {
          connected: status.connected && !stale,
          revision: status.revision,
          namespace: config.namespace,
          url: config.url,
          ...(status.lagSeconds === undefined ? {} : { syncLagSeconds: status.lagSeconds })
        },
        balancers: known.map((member) => ({
          id: member.id,
          addresses: member.addresses,
          version: member.version,
          startedAt: Math.max(0, Math.round(member.startedAt)),
          lastSeenAt: Math.max(0, Math.round(member.lastSeenAt)),
          self: member.id === config.balancerId && member.instance === instance
        })),
        ...(stale ? { stale: true } : {})
      } satisfies ClusterView
    })
    return Cluster.of({ announce, view })
  })

export const layer = (config: ClusterConfig): Layer.Layer<Cluster, never, SharedStore | RegistrySync> =>
  Layer.effect(Cluster, make(config))

/** A balancer's cluster view, if it has a shared registry. */
export const viewIfAny = Effect.flatMap(Effect.serviceOption(Cluster), (cluster) =>
  Option.isSome(cluster) ? Effect.map(cluster.value.view, Option.some) : Effect.succeed(Option.none<ClusterView>())
)
