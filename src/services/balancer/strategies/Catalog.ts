/**
 * Every strategy effect-lb knows, and the one place their names are listed: the command line's
 * choices, the admin API's list and the balancer's switch all read `names` / `Strategies`, so they
 * cannot disagree. Adding a strategy: a new file in this folder providing its layer, and one line
 * in `catalog` below.
 */
import { Context, Effect, Layer } from "effect"
import { ConsistentHash } from "./ConsistentHash.js"
import { RoundRobin } from "./RoundRobin.js"
import { Strategy } from "./Strategy.js"
import { WeightedLeastConnection } from "./WeightedLeastConnection.js"
import { WeightedResponseTime } from "./WeightedResponseTime.js"
import { WeightedRoundRobin } from "./WeightedRoundRobin.js"

/** In the order people see them (help, menus, the dashboard); the first is the default. */
export const catalog = [
  RoundRobin,
  WeightedRoundRobin,
  WeightedResponseTime,
  WeightedLeastConnection,
  ConsistentHash
] as const

type Member = (typeof catalog)[number]

export type StrategyName = Member["name"]

export const names: ReadonlyArray<StrategyName> = catalog.map((member) => member.name)

export const isStrategyName = (name: string): name is StrategyName => (names as ReadonlyArray<string>).includes(name)

/** The strategies a balancer may switch between, by name, each built from its own layer. */
export class Strategies extends Context.Tag("effect-lb/Strategies")<
  Strategies,
  ReadonlyMap<StrategyName, Context.Tag.Service<Strategy>>
>() {
  static readonly layer = Layer.effect(
    Strategies,
    Effect.forEach(catalog, (member) =>
      Effect.map(Effect.provide(Strategy, member.layer), (strategy) => [member.name, strategy] as const)
    ).pipe(Effect.map((entries) => new Map(entries)))
  )
}
