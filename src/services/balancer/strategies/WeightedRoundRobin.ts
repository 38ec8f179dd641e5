/**
 * weighted-round-robin: picks in proportion to weight, smoothly interleaved rather than in bursts.
 *
 * Earliest-deadline-first over a virtual clock (Envoy's scheduler): server i is due at
 * `start + (k + 1/2) / weight` for its k-th pick, and the earliest due server is picked. Over each
 * cycle of `sum(weights)` picks every server gets exactly its weight, spread out (weights 1:2:3 give
 * C B A C B C: no server three times in a row) — what nginx's smooth weighted round-robin gives, at
 * O(log n) per pick instead of O(n).
 */
import { Layer } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import { IndexedHeap, pickSkipping } from "./Heap.js"
import { type Picker, Strategy, type StrategyModule } from "./Strategy.js"

const name = "weighted-round-robin"

interface Slot {
  readonly weight: number
  readonly start: number
  readonly picks: number
  readonly due: number
  /** Join order, so ties break the same way every cycle. */
  readonly order: number
}

const slot = (weight: number, start: number, picks: number, order: number): Slot => ({
  weight,
  start,
  picks,
  due: start + (picks + 0.5) / weight,
  order
})

export const makePicker = (): Picker => {
  const heap = new IndexedHeap<ServerId, Slot>((a, b) => a.due < b.due || (a.due === b.due && a.order < b.order))
  let now = 0
  let joined = 0
  return {
    upsert: (candidate) => {
      const current = heap.get(candidate.id)
      if (current?.weight === candidate.weight) return
      heap.set(candidate.id, slot(candidate.weight, now, 0, current?.order ?? joined++))
    },
    remove: (id) => heap.remove(id),
    pick: (skip) => {
      const id = pickSkipping(heap, skip)
      const current = id === undefined ? undefined : heap.get(id)
      if (id === undefined || current === undefined) return undefined
      now = Math.max(now, current.due)
      const next = slot(current.weight, current.start, current.picks + 1, current.order)
      // A server left behind (skipped by clients for a while) rejoins at the present instead of
      // catching up in a burst.
      heap.set(id, next.due < now ? slot(current.weight, now, 0, current.order) : next)
      return id
    }
  }
}

export const WeightedRoundRobin: StrategyModule<typeof name> = {
  name,
  layer: Layer.succeed(Strategy, {
    name,
    summary: "in proportion to weights, smoothly interleaved",
    keyed: false,
    makePicker
  })
}
