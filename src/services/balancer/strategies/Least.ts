/**
 * The shape shared by the "least something" strategies: the eligible server with the lowest score,
 * kept in a heap (O(log n) per pick and per update); among equal scores the strategy's tie-break,
 * then the heavier server (at no load, the one meant to take most), then the one picked longest
 * ago, so ties rotate instead of always hitting the same server.
 */
import type { ServerId } from "../../../domain/Server.js"
import type { Candidate, Picker } from "./Strategy.js"
import { IndexedHeap, pickSkipping } from "./Heap.js"

interface Ranked {
  readonly score: number
  readonly tieBreak: number
  readonly weight: number
  readonly lastPicked: number
}

const before = (a: Ranked, b: Ranked) =>
  a.score !== b.score
    ? a.score < b.score
    : a.tieBreak !== b.tieBreak
      ? a.tieBreak < b.tieBreak
      : a.weight !== b.weight
        ? a.weight > b.weight
        : a.lastPicked < b.lastPicked

/** A picker by lowest `score`; `tieBreak`: among equal scores, the lower wins (before weight and rotation). */
export const leastBy =
  (score: (candidate: Candidate) => number, tieBreak: (candidate: Candidate) => number = () => 0) =>
  (): Picker => {
    const heap = new IndexedHeap<ServerId, Ranked>(before)
    let picks = 0
    return {
      upsert: (candidate) => {
        const current = heap.get(candidate.id)
        const value = score(candidate)
        const secondary = tieBreak(candidate)
        if (current?.score === value && current.tieBreak === secondary && current.weight === candidate.weight) return
        heap.set(candidate.id, {
          score: value,
          tieBreak: secondary,
          weight: candidate.weight,
          lastPicked: current?.lastPicked ?? 0
        })
      },
      remove: (id) => heap.remove(id),
      pick: (skip) => {
        const id = pickSkipping(heap, skip)
        const current = id === undefined ? undefined : heap.get(id)
        if (id !== undefined && current !== undefined) {
          // Same shape as every other entry, so the heap's comparisons stay monomorphic.
          heap.set(id, {
            score: current.score,
            tieBreak: current.tieBreak,
            weight: current.weight,
            lastPicked: ++picks
          })
        }
        return id
      }
    }
  }
