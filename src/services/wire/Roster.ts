/**
 * The open connections of a listener (or anything that joins and leaves as often): a doubly linked
 * list in which joining and leaving are O(1) and nothing is ever reallocated.
 *
 * Why not a `Set`: a `Set` that gains and loses an entry per connection rebuilds its table every
 * few dozen connections, and the old table, by then promoted to V8's old generation, still points at
 * the connections that were open when it was dropped. Until the next full collection every
 * scavenge takes those pointers as roots, so those connections — their sockets, buffers and
 * closures, long closed — are copied and promoted with them. Measured with `--trace-gc-nvp` on the
 * proxy under a connection per request: 6.4 KB survived scavenges per connection with a `Set`, 2.4
 * KB with this list (a plain Node proxy: 2.4 KB), and the scavenge pauses halved (DESIGN.md, "Where
 * the tail came from"). A member that leaves lets go of its neighbours and its value, so a departed
 * member in the old generation holds nothing young.
 */

/** A member's place in its roster: what it gives back to leave. Its fields are the roster's. */
export class Place<T> {
  before: Place<T> | undefined = undefined
  after: Place<T> | undefined = undefined
  constructor(public value: T | undefined) {}

  /** Listed now (false once it has left). */
  get listed(): boolean {
    return this.value !== undefined
  }
}

export class Roster<T> {
  private first: Place<T> | undefined = undefined
  private last: Place<T> | undefined = undefined
  private count = 0

  /** Members listed now. */
  get size(): number {
    return this.count
  }

  /** Lists `value` (last, so the roster is in joining order); its place is how it leaves. */
  join(value: T): Place<T> {
    const node = new Place(value)
    node.before = this.last
    if (this.last === undefined) this.first = node
    else this.last.after = node
    this.last = node
    this.count += 1
    return node
  }

  /** The member at `node`, a place in this roster, leaves (nothing, if it has already). */
  leave(node: Place<T>): void {
    if (!node.listed) return
    if (node.before === undefined) this.first = node.after
    else node.before.after = node.after
    if (node.after === undefined) this.last = node.before
    else node.after.before = node.before
    node.before = undefined
    node.after = undefined
    node.value = undefined
    this.count -= 1
  }

  /** The members in joining order; the one just handed out may leave meanwhile. */
  *[Symbol.iterator](): Iterator<T> {
    let node = this.first
    while (node !== undefined) {
      const value = node.value
      // Read before handing out the member: the next is its neighbour now, even if it leaves.
      const next = node.after
      if (value !== undefined) yield value
      node = next
    }
  }
}
