/** round-robin: each server in turn, a fixed cycle in the order they joined. O(1) per pick. */
import { Layer } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import { type Picker, Strategy, type StrategyModule } from "./Strategy.js"

const name = "round-robin"

export const makePicker = (): Picker => {
  const ring: Array<ServerId> = []
  const members = new Set<ServerId>()
  let next = 0
  return {
    upsert: (candidate) => {
      if (members.has(candidate.id)) return
      members.add(candidate.id)
      ring.push(candidate.id)
    },
    remove: (id) => {
      if (!members.delete(id)) return
      const at = ring.indexOf(id)
      ring.splice(at, 1)
      if (at < next) next -= 1
    },
    pick: (skip) => {
      for (let tried = 0; tried < ring.length; tried++) {
        const at = (next + tried) % ring.length
        const id = ring[at]
        if (id !== undefined && !skip.has(id)) {
          next = (at + 1) % ring.length
          return id
        }
      }
      return undefined
    }
  }
}

export const RoundRobin: StrategyModule<typeof name> = {
  name,
  layer: Layer.succeed(Strategy, { name, summary: "each server in turn", keyed: false, makePicker })
}
