/**
 * consistent-hash: the same key goes to the same server for as long as that server is eligible —
 * session affinity (HAProxy's `balance source`, nginx's `hash ... consistent`, Envoy's ring hash).
 * The key is what the caller gives: a Locate's `key`, else the client's address; the proxy uses the
 * client's address.
 *
 * A ring of points (Karger's consistent hashing, as in ketama): each server owns `pointsPerWeight ×
 * weight` points placed by hashing `id#n`; a key goes to the owner of the first point at or after
 * its hash. A server joining takes only the keys that now land on its points; one leaving hands
 * only its own keys to their next points — every other key stays where it was. A key whose server
 * is skipped (the client just failed there) walks on to the next server on the ring, the same one
 * every time. Lookup is a binary search, O(log points); the ring is rebuilt only when a server
 * joins, leaves or changes weight, not on load reports. Without a key, servers are taken in turn.
 */
import { Effect, Layer } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import { RoundRobin } from "./RoundRobin.js"
import { type Picker, Strategy, type StrategyModule } from "./Strategy.js"

const name = "consistent-hash"

/**
 * Points per unit of weight (as ketama's 160 a server). A ring hash is never exactly fair: with
 * this many, a server's share of keys comes within about 15% of its weight's share.
 */
export const pointsPerWeight = 160
/** Weights above this count as this much here: the ring stays bounded (5,120 points a server). */
export const weightCap = 32

/** FNV-1a over UTF-16 code units, then murmur3's finaliser so nearby keys land far apart. */
export const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

interface Ring {
  readonly points: Uint32Array
  readonly owners: ReadonlyArray<ServerId>
}

const emptyRing: Ring = { points: new Uint32Array(0), owners: [] }

/** Equal hashes (rare) are ordered by id, so the same servers always make the same ring. */
const before = (h1: number, id1: ServerId, h2: number, id2: ServerId) => h1 < h2 || (h1 === h2 && id1 < id2)

/**
 * The ring without the servers in `leaving`, with the points of `joining` merged in: one pass over
 * the ring plus a sort of the newcomers' points — O(points + new log new) for any batch of changes.
 */
const rebuilt = (ring: Ring, leaving: ReadonlySet<ServerId>, joining: ReadonlyMap<ServerId, number>): Ring => {
  const fresh: Array<[number, ServerId]> = []
  for (const [id, weight] of joining) {
    const count = pointsPerWeight * Math.min(weight, weightCap)
    for (let n = 0; n < count; n++) fresh.push([hash(`${id}#${n}`), id])
  }
  fresh.sort(([a, x], [b, y]) => (before(a, x, b, y) ? -1 : before(b, y, a, x) ? 1 : 0))
  const points: Array<number> = []
  const owners: Array<ServerId> = []
  let j = 0
  const takeFreshUpTo = (point: number, owner: ServerId) => {
    for (let next = fresh[j]; next !== undefined && before(next[0], next[1], point, owner); next = fresh[j]) {
      points.push(next[0])
      owners.push(next[1])
      j++
    }
  }
  ring.owners.forEach((owner, at) => {
    if (leaving.has(owner)) return
    const point = ring.points[at] ?? 0
    takeFreshUpTo(point, owner)
    points.push(point)
    owners.push(owner)
  })
  for (const [point, owner] of fresh.slice(j)) {
    points.push(point)
    owners.push(owner)
  }
  return { points: Uint32Array.from(points), owners }
}

/** Index of the first point at or after `h`, wrapping to 0. */
const firstAtOrAfter = (points: Uint32Array, h: number) => {
  let low = 0
  let high = points.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if ((points[middle] ?? 0) < h) low = middle + 1
    else high = middle
  }
  return low === points.length ? 0 : low
}

/** `unkeyed` serves picks without a key: there is nothing to be faithful to, so each server in turn. */
export const makeRingPicker = (unkeyed: Picker): Picker => {
  const weights = new Map<ServerId, number>()
  let ring = emptyRing
  // Changes are batched and applied at the next keyed pick: a hundred servers joining at start
  // cost one pass over the ring, not a hundred.
  const leaving = new Set<ServerId>()
  const joining = new Map<ServerId, number>()
  const current = () => {
    if (leaving.size > 0 || joining.size > 0) {
      ring = rebuilt(ring, leaving, joining)
      leaving.clear()
      joining.clear()
    }
    return ring
  }
  return {
    upsert: (candidate) => {
      // Load reports come often and change nothing here: only joining or a new weight does.
      const known = weights.get(candidate.id)
      if (known === candidate.weight) return
      unkeyed.upsert(candidate)
      if (known !== undefined) leaving.add(candidate.id)
      weights.set(candidate.id, candidate.weight)
      joining.set(candidate.id, candidate.weight)
    },
    remove: (id) => {
      if (!weights.delete(id)) return
      unkeyed.remove(id)
      leaving.add(id)
      joining.delete(id)
    },
    pick: (skip, key) => {
      if (key === undefined) return unkeyed.pick(skip)
      let skipped = 0
      for (const id of skip) if (weights.has(id)) skipped++
      if (skipped >= weights.size) return undefined
      const { points, owners } = current()
      const start = firstAtOrAfter(points, hash(key))
      // Walk on past skipped servers: the next one on the ring, the same one every time.
      for (let step = 0; step < points.length; step++) {
        const owner = owners[(start + step) % points.length]
        if (owner !== undefined && !skip.has(owner)) return owner
      }
      return undefined
    }
  }
}

/** Built on round-robin's layer, which serves the picks that come without a key. */
export const ConsistentHash: StrategyModule<typeof name> = {
  name,
  layer: Layer.effect(
    Strategy,
    Effect.map(Strategy, (roundRobin) => ({
      name,
      summary: "the same client (or key) to the same server while it is live; a change moves only its share",
      keyed: true,
      makePicker: () => makeRingPicker(roundRobin.makePicker())
    }))
  ).pipe(Layer.provide(RoundRobin.layer))
}
