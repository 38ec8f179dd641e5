/**
 * The balancer's decision: which server a client gets. Eligible servers are the live ones minus
 * those the client excluded (its recent failures) — excluded ones are used only when nothing else
 * is live — and the current strategy picks among them. The strategy can be switched at run time;
 * the switch and every pick are single synchronous steps, so no pick ever sees half a switch.
 */
import { Context, Effect, Either, Layer, MetricLabel } from "effect"
import { InvalidRequest, NoServerAvailable } from "../../domain/Errors.js"
import type { Endpoint, ServerId, ServerLocation } from "../../domain/Server.js"
import * as Metrics from "./Metrics.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { isStrategyName, Strategies, type StrategyName } from "./strategies/Catalog.js"
import type { Candidate, Picker, Strategy } from "./strategies/Strategy.js"

export class Balancer extends Context.Tag("effect-lb/Balancer")<
  Balancer,
  {
    /** Where the next client goes; `key` names the client, for strategies that keep it on one server. */
    readonly determineServer: (
      exclude?: ReadonlyArray<Endpoint>,
      key?: string
    ) => Effect.Effect<ServerLocation, NoServerAvailable>
    /** The same decision as a plain synchronous call, for the Locate hot path. */
    readonly unsafeDetermineServer: (
      exclude?: ReadonlyArray<Endpoint>,
      key?: string
    ) => Either.Either<ServerLocation, NoServerAvailable>
    /** Whether the current strategy picks by the client's key (so the caller should find one). */
    readonly unsafeKeyed: () => boolean
    readonly strategy: Effect.Effect<StrategyName>
    /** Switches strategy at once; an unknown name is `InvalidRequest` and changes nothing. */
    readonly setStrategy: (name: string) => Effect.Effect<void, InvalidRequest>
  }
>() {}

const nothingExcluded: ReadonlySet<ServerId> = new Set()

export const make = (initialStrategy: StrategyName) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const strategies = yield* Strategies

    const find = (name: string) =>
      Effect.suspend(() => {
        const definition = isStrategyName(name) ? strategies.get(name) : undefined
        if (isStrategyName(name) && definition !== undefined) return Effect.succeed({ name, definition })
        return Effect.fail(
          new InvalidRequest({ message: `unknown strategy "${name}"; known: ${[...strategies.keys()].join(", ")}` })
        )
      })

    const initial = yield* find(initialStrategy).pipe(Effect.orDie)
    let current: {
      name: StrategyName
      definition: Context.Tag.Service<Strategy>
      instance: Picker
    } = {
      ...initial,
      instance: { upsert: () => undefined, remove: () => undefined, pick: () => undefined }
    }
    // The strategy's index follows the registry: a server enters when live, leaves otherwise.
    const live = yield* registry.observe((id, candidate) => {
      if (candidate === undefined) current.instance.remove(id)
      else current.instance.upsert(candidate)
    })
    const seeded = (
      { name, definition }: { name: StrategyName; definition: Context.Tag.Service<Strategy> },
      candidates: ReadonlyArray<Candidate>
    ) => {
      const instance = definition.makePicker()
      for (const candidate of candidates) instance.upsert(candidate)
      return { name, definition, instance }
    }
    current = seeded(initial, live)

    const noServer = new NoServerAvailable({ message: "no live server is available" })
    const strategyLabels = Metrics.labelCache((strategy: string) => [MetricLabel.make("strategy", strategy)])
    Metrics.unsafeStrategyIs(current.name, strategies.keys())

    const unsafeDetermineServer = (exclude: ReadonlyArray<Endpoint> = [], key?: string) => {
      let skip = nothingExcluded
      if (exclude.length > 0) {
        skip = new Set(exclude.flatMap((endpoint) => registry.unsafeIdAt(endpoint) ?? []))
        // A client that excludes a server failed on it: a re-route, counted against that server.
        // With passive health on, it counts towards ejecting it too.
        for (const id of skip) {
          Metrics.unsafeRerouted(id)
          registry.unsafeFailed(id, "excluded")
        }
      }
      const id =
        current.instance.pick(skip, key) ?? (skip.size > 0 ? current.instance.pick(nothingExcluded, key) : undefined)
      const location = id === undefined ? undefined : registry.unsafeLocated(id)
      if (location === undefined) {
        Metrics.picksFailed.unsafeUpdate(1, strategyLabels(current.name))
        return Either.left(noServer)
      }
      Metrics.unsafeLocated(location.id, current.name)
      return Either.right(location)
    }

    return Balancer.of({
      determineServer: (exclude, key) => Effect.suspend(() => unsafeDetermineServer(exclude, key)),
      unsafeDetermineServer,
      unsafeKeyed: () => current.definition.keyed === true,
      strategy: Effect.sync(() => current.name),
      setStrategy: (name) =>
        Effect.flatMap(find(name), (found) =>
          Effect.sync(() => {
            current = seeded(found, registry.unsafeLive())
            Metrics.unsafeStrategyIs(found.name, strategies.keys())
          })
        )
    })
  })

export const layer = (initialStrategy: StrategyName): Layer.Layer<Balancer, never, ServerRegistry | Strategies> =>
  Layer.scoped(Balancer, make(initialStrategy))
