/**
 * consistent-hash: the same key goes to the same server for as long as that server is eligible —
 * session affinity (HAProxy's `balance source`, nginx's `hash ... consistent`, Envoy's Maglev).
 * The key is what the caller gives: a Locate's `key`, else the client's address; the proxy uses the
 * client's address.
 *
 * A lookup table of `tableSize` slots, as Maglev (Eisenbud et al., NSDI 2016; Envoy's `MAGLEV`):
 * a fixed size, whatever the servers' number and weights, and a key goes to the owner of slot
 * `hash(key) mod tableSize` — one array read. Each server holds its weight's share of the slots
 * (largest remainders; at least one slot while there are fewer servers than slots), give or take a
 * slot: a change moves only the changed server's slots, so a rounding flip elsewhere waits for a
 * later change (at most 1.46 slots from the exact share over 120,000 random changes). Each server has its own order of preference over the slots (Maglev's permutation, from two
 * hashes of its id), and takes the slots it is owed in that order.
 *
 * Changes move only the slots they must, so the promise is exact, not approximate: a server
 * joining (or given more weight) takes slots only from servers holding more than their new share,
 * so keys move only to it; one leaving (or given less weight) frees only its own slots, each handed
 * to the owner of the next slot that holds less than its share, so only its keys move. A key whose
 * server is skipped (the client just failed there) walks on to the owner of the next slot that is not
 * skipped, the same one every time.
 *
 * Changes are batched and applied at the next keyed pick, never on load reports. Applying a batch
 * walks the table, not the weights: filling it from empty takes each slot once, through a
 * next-free index (a few ms at 10,000 servers, whatever their weights); a join or a leave walks
 * the table once or twice (about one ms at 10,000 servers) — so the Locate that applies it holds
 * up the others for no longer. The table built from
 * empty depends only on the servers and their weights, not on the order they came in; after that,
 * each change moves what it must from where the table stands.
 * Without a key, servers are taken in turn.
 */
import { Effect, Layer } from "effect"
import type { ServerId } from "../../../domain/Server.js"
import { RoundRobin } from "./RoundRobin.js"
import { type Picker, Strategy, type StrategyModule } from "./Strategy.js"

const name = "consistent-hash"

/**
 * Slots in the lookup table: a prime (each permutation then reaches every slot), Envoy's default
 * Maglev size. 256 KB whatever the servers; at 10,000 servers each holds 6 or 7 slots.
 */
export const tableSize = 65_537

/** FNV-1a over UTF-16 code units from `basis`, then murmur3's finaliser so nearby keys land far apart. */
export const hash = (text: string, basis = 0x811c9dc5): number => {
  let h = basis
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

/** A server in the table. */
interface Holder {
  readonly id: ServerId
  /** Where it stands in `holders` (and what its slots hold). */
  readonly index: number
  /** Order among servers (ties, rare, by id): neither joining order nor the Map's order matters. */
  readonly rank: number
  /** Its permutation: `offset, offset + step, offset + 2·step, … (mod tableSize)`. */
  readonly offset: number
  readonly step: number
  weight: number
  /** Slots it holds, and the share it is owed. */
  held: number
  owed: number
  /** In the batch being applied: it left, or takes slots (it joined or its weight changed). */
  leaving: boolean
  claiming: boolean
}

const free = -1
const byRank = (a: Holder, b: Holder) => a.rank - b.rank || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/**
 * Each server's share of the table: one slot each while there are fewer servers than slots, the
 * rest by weight, largest remainders first — adding up to exactly `tableSize`. Servers of one weight
 * have one remainder, so the remainders are ordered per weight (ties to the heavier), and within a
 * weight the extra slots go in rank order: O(servers + weights log weights), no sort of the servers.
 */
const setShares = (ranked: ReadonlyArray<Holder>) => {
  const base = ranked.length <= tableSize ? 1 : 0
  const rest = tableSize - base * ranked.length
  const perWeight = new Map<number, number>()
  let total = 0
  for (const holder of ranked) {
    total += holder.weight
    perWeight.set(holder.weight, (perWeight.get(holder.weight) ?? 0) + 1)
  }
  const quota = (weight: number) => (rest * weight) / total
  const remainder = (weight: number) => quota(weight) - Math.floor(quota(weight))
  let left = rest
  for (const [weight, count] of perWeight) left -= count * Math.floor(quota(weight))
  const extra = new Map<number, number>()
  const byRemainder = [...perWeight.keys()].sort((a, b) => remainder(b) - remainder(a) || b - a)
  for (const weight of byRemainder) {
    const given = Math.min(left, perWeight.get(weight) ?? 0)
    extra.set(weight, given)
    left -= given
  }
  for (const holder of ranked) {
    const more = extra.get(holder.weight) ?? 0
    holder.owed = base + Math.floor(quota(holder.weight)) + (more > 0 ? 1 : 0)
    if (more > 0) extra.set(holder.weight, more - 1)
  }
}

/**
 * `holders` in rank order: a native sort of `rank · 2^21 + position` (exact in a double), then runs
 * of equal rank (rare) put in id order. Far cheaper than a comparator sort of 10,000 objects.
 */
const inRankOrder = (holders: ReadonlyArray<Holder>): Array<Holder> => {
  const keys = new Float64Array(holders.length)
  for (let i = 0; i < holders.length; i++) keys[i] = (holders[i]?.rank ?? 0) * 2 ** 21 + i
  keys.sort()
  const sorted: Array<Holder> = []
  for (const key of keys) {
    const holder = holders[key % 2 ** 21]
    if (holder === undefined) continue
    // Equal ranks (rare): by id, by moving the newcomer back past larger ids.
    let at = sorted.length
    sorted.push(holder)
    for (let before = sorted[at - 1]; before !== undefined && byRank(before, holder) > 0; before = sorted[at - 1]) {
      sorted[at] = before
      sorted[--at] = holder
    }
  }
  return sorted
}

/** `sorted` without the servers leaving, with `joining` merged in: O(servers + joining log joining). */
const merged = (sorted: ReadonlyArray<Holder>, joining: ReadonlyArray<Holder>): Array<Holder> => {
  const fresh = inRankOrder(joining)
  const result: Array<Holder> = []
  let j = 0
  for (const holder of sorted) {
    if (holder.leaving) continue
    for (let next = fresh[j]; next !== undefined && byRank(next, holder) < 0; next = fresh[++j]) result.push(next)
    result.push(holder)
  }
  for (; j < fresh.length; j++) {
    const next = fresh[j]
    if (next !== undefined) result.push(next)
  }
  return result
}

/** Who holds each slot, kept up to date with the servers and their weights by `apply`. */
export class SlotTable {
  /** `owners[slot]` indexes `holders`. */
  readonly owners = new Int32Array(tableSize).fill(free)
  readonly holders: Array<Holder | undefined> = []
  private readonly byId = new Map<ServerId, Holder>()
  private readonly spare: Array<number> = []
  /** The servers in rank order (by a hash of the id; ties, rare, by id): joining order never matters. */
  private ranked: Array<Holder> = []
  private freeSlots = tableSize
  /** During `apply`: how many slots each server (by index) holds past its share and is not claiming. */
  private givable = new Int32Array(0)

  get size(): number {
    return this.byId.size
  }

  /** The server holding `slot`. */
  ownerOf(slot: number): ServerId | undefined {
    return this.holderAt(slot)?.id
  }

  /** Reads `owners` without indexing `holders` at -1 (a slow property lookup, not an element). */
  private holderAt(slot: number): Holder | undefined {
    const index = this.owners[slot] ?? free
    return index === free ? undefined : this.holders[index]
  }

  /** Slots each server holds and is owed (for tests and the benchmark). */
  shares(): ReadonlyMap<ServerId, { readonly held: number; readonly owed: number }> {
    return new Map([...this.byId].map(([id, { held, owed }]) => [id, { held, owed }]))
  }

  /** Brings the table to `weights`, given the servers whose weight or presence changed since the last call. */
  apply(weights: ReadonlyMap<ServerId, number>, changed: Iterable<ServerId>): void {
    const claiming: Array<Holder> = []
    const joining: Array<Holder> = []
    const leaving: Array<Holder> = []
    for (const id of changed) {
      const weight = weights.get(id)
      const known = this.byId.get(id)
      const holder = known ?? (weight === undefined ? undefined : this.admit(id, weight))
      if (holder === undefined) continue
      if (known === undefined) joining.push(holder)
      if (weight === undefined) {
        holder.leaving = true
        leaving.push(holder)
      } else if (holder.held === 0 || holder.weight !== weight) {
        holder.weight = weight
        holder.claiming = true
        claiming.push(holder)
      }
    }
    // Kept in rank order, so shares and claims go the same way whatever order the changes came in.
    this.ranked = merged(this.ranked, joining)
    setShares(this.ranked)
    const shrinking = claiming.some((holder) => holder.held > holder.owed)
    const freed = leaving.length > 0 || shrinking || this.freeSlots > 0 ? this.release() : []
    // What each server can give up to claims, in a typed array: read on every probe of a claim.
    this.givable = new Int32Array(this.holders.length)
    let givable = 0
    for (const holder of this.ranked) {
      if (holder.claiming) continue
      this.givable[holder.index] = holder.held - holder.owed
      givable += Math.max(0, holder.held - holder.owed)
    }
    // Only free slots to take (as from empty): the next free slot after each preferred one, found
    // in near-constant time, instead of probing a filling table (tableSize · ln tableSize probes).
    const nextFree = givable === 0 && this.freeSlots > 0 ? this.freeIndex() : undefined
    for (const holder of this.ranked) {
      if (!holder.claiming) continue
      if (nextFree === undefined) this.claim(holder)
      else this.claimFree(holder, nextFree)
    }
    this.handOn(freed)
    for (const holder of claiming) holder.claiming = false
    for (const holder of leaving) {
      this.byId.delete(holder.id)
      this.holders[holder.index] = undefined
      this.spare.push(holder.index)
    }
  }

  private admit(id: ServerId, weight: number): Holder {
    const index = this.spare.pop() ?? this.holders.length
    const rank = hash(id, 0x6c62272e)
    const holder: Holder = {
      id,
      index,
      rank,
      offset: rank % tableSize,
      step: (hash(id, 0x2545f491) % (tableSize - 1)) + 1,
      weight,
      held: 0,
      owed: 0,
      leaving: false,
      claiming: false
    }
    this.holders[index] = holder
    this.byId.set(id, holder)
    return holder
  }

  /** Frees the slots of servers leaving, and of servers whose weight fell, past their new share. */
  private release(): Array<number> {
    const freed: Array<number> = []
    for (let slot = 0; slot < tableSize; slot++) {
      const holder = this.holderAt(slot)
      if (holder === undefined) freed.push(slot)
      else if (holder.leaving || (holder.claiming && holder.held > holder.owed)) {
        holder.held--
        this.owners[slot] = free
        this.freeSlots++
        freed.push(slot)
      }
    }
    return freed
  }

  /**
   * A server owed more slots takes them in its order of preference: free ones, or ones held by a
   * server not itself claiming that holds more than its share. What is owed adds up to what can be
   * taken, so the walk ends; it is bounded by the table anyway.
   */
  private claim(holder: Holder) {
    const { owners, givable, holders } = this
    const { index, step } = holder
    let wanted = holder.owed - holder.held
    let slot = holder.offset
    for (let probe = 0; probe < tableSize && wanted > 0; probe++) {
      const owner = owners[slot] ?? free
      if (owner === free) {
        this.freeSlots--
        owners[slot] = index
        wanted--
      } else if ((givable[owner] ?? 0) > 0) {
        givable[owner] = (givable[owner] ?? 0) - 1
        const giver = holders[owner]
        if (giver !== undefined) giver.held--
        owners[slot] = index
        wanted--
      }
      slot += step
      if (slot >= tableSize) slot -= tableSize
    }
    holder.held = holder.owed - wanted
  }

  /** `nextFree[slot]` leads (with path halving) to the first free slot at or after it; `tableSize` for none. */
  private freeIndex(): Int32Array {
    const nextFree = new Int32Array(tableSize + 1)
    for (let slot = 0; slot <= tableSize; slot++) nextFree[slot] = this.owners[slot] === free ? slot : slot + 1
    nextFree[tableSize] = tableSize
    return nextFree
  }

  /** A claim when only free slots can be taken: its preferred slot, or the first free one after it. */
  private claimFree(holder: Holder, nextFree: Int32Array) {
    const found = (from: number) => {
      let at = from
      for (let next = nextFree[at] ?? tableSize; next !== at; next = nextFree[at] ?? tableSize) {
        const skip = nextFree[next] ?? tableSize
        nextFree[at] = skip
        at = skip
      }
      return at
    }
    let slot = holder.offset
    while (holder.held < holder.owed && this.freeSlots > 0) {
      let taken = found(slot)
      if (taken === tableSize) taken = found(0)
      this.owners[taken] = holder.index
      nextFree[taken] = taken + 1
      holder.held++
      this.freeSlots--
      slot += holder.step
      if (slot >= tableSize) slot -= tableSize
    }
  }

  /**
   * Slots still free go to the owner of the next slot that holds less than its share (else, with
   * more servers than slots, simply the next slot's owner): a leaving server's keys spread over the
   * others, and only its keys move.
   */
  private handOn(freed: ReadonlyArray<number>) {
    // Once a walk finds no server short of its share, none is: the rest go to the next owner.
    let searching = true
    for (const slot of freed) {
      if (this.owners[slot] !== free) continue
      let fallback: Holder | undefined
      let taker: Holder | undefined
      for (let step = 1; step < tableSize && taker === undefined; step++) {
        const owner = this.holderAt(slot + step < tableSize ? slot + step : slot + step - tableSize)
        if (owner === undefined) continue
        fallback ??= owner
        if (!searching || owner.held < owner.owed) taker = owner
      }
      if (taker === undefined) searching = false
      taker ??= fallback
      if (taker === undefined) return
      taker.held++
      this.owners[slot] = taker.index
      this.freeSlots--
    }
  }
}

/** `unkeyed` serves picks without a key: there is nothing to be faithful to, so each server in turn. */
export const makeTablePicker = (unkeyed: Picker): Picker => {
  const weights = new Map<ServerId, number>()
  const table = new SlotTable()
  // Changes are batched and applied at the next keyed pick: a hundred servers joining at start
  // cost one pass over the table, not a hundred.
  const changed = new Set<ServerId>()
  return {
    upsert: (candidate) => {
      // Load reports come often and change nothing here: only joining or a new weight does.
      if (weights.get(candidate.id) === candidate.weight) return
      unkeyed.upsert(candidate)
      weights.set(candidate.id, candidate.weight)
      changed.add(candidate.id)
    },
    remove: (id) => {
      if (!weights.delete(id)) return
      unkeyed.remove(id)
      changed.add(id)
    },
    pick: (skip, key) => {
      if (key === undefined) return unkeyed.pick(skip)
      let skipped = 0
      for (const id of skip) if (weights.has(id)) skipped++
      if (skipped >= weights.size) return undefined
      if (changed.size > 0) {
        table.apply(weights, changed)
        changed.clear()
      }
      const start = hash(key) % tableSize
      // Walk on past skipped servers: the next slot's owner, the same one every time.
      for (let step = 0; step < tableSize; step++) {
        const owner = table.ownerOf(start + step < tableSize ? start + step : start + step - tableSize)
        if (owner !== undefined && !skip.has(owner)) return owner
      }
      // Only with more servers than slots can an eligible server hold none.
      for (const id of weights.keys()) if (!skip.has(id)) return id
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
      makePicker: () => makeTablePicker(roundRobin.makePicker())
    }))
  ).pipe(Layer.provide(RoundRobin.layer))
}
