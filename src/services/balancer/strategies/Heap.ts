/**
 * An indexed binary min-heap: O(log n) push, pop, update and remove by key. The ordered structure
 * behind the weighted strategies (as Envoy's EDF scheduler and least-request balancer use one).
 */
export class IndexedHeap<K, V> {
  private readonly items: Array<{ key: K; value: V }> = []
  private readonly positions = new Map<K, number>()

  /** `before(a, b)`: a must come out before b. */
  constructor(private readonly before: (a: V, b: V) => boolean) {}

  get size(): number {
    return this.items.length
  }

  has(key: K): boolean {
    return this.positions.has(key)
  }

  get(key: K): V | undefined {
    const at = this.positions.get(key)
    return at === undefined ? undefined : this.items[at]?.value
  }

  peek(): { readonly key: K; readonly value: V } | undefined {
    return this.items[0]
  }

  /** Inserts, or replaces the value of an existing key, and restores the order. */
  set(key: K, value: V): void {
    const at = this.positions.get(key)
    if (at === undefined) {
      this.items.push({ key, value })
      this.positions.set(key, this.items.length - 1)
      this.up(this.items.length - 1)
    } else {
      const item = this.items[at]
      if (item !== undefined) item.value = value
      this.down(this.up(at))
    }
  }

  remove(key: K): void {
    const at = this.positions.get(key)
    if (at === undefined) return
    this.positions.delete(key)
    const last = this.items.pop()
    if (last === undefined || at === this.items.length) return
    this.items[at] = last
    this.positions.set(last.key, at)
    this.down(this.up(at))
  }

  pop(): { readonly key: K; readonly value: V } | undefined {
    const top = this.items[0]
    if (top !== undefined) this.remove(top.key)
    return top
  }

  values(): IterableIterator<V> {
    return this.items.map((item) => item.value)[Symbol.iterator]()
  }

  private swap(i: number, j: number): void {
    const a = this.items[i]
    const b = this.items[j]
    if (a === undefined || b === undefined) return
    this.items[i] = b
    this.items[j] = a
    this.positions.set(b.key, i)
    this.positions.set(a.key, j)
  }

  private up(at: number): number {
    let i = at
    while (i > 0) {
      const parent = (i - 1) >> 1
      const child = this.items[i]
      const above = this.items[parent]
      if (child === undefined || above === undefined || !this.before(child.value, above.value)) break
      this.swap(i, parent)
      i = parent
    }
    return i
  }

  private down(at: number): void {
    let i = at
    for (;;) {
      let first = i
      const left = this.items[2 * i + 1]
      const right = this.items[2 * i + 2]
      if (left !== undefined && this.beats(left.value, first)) first = 2 * i + 1
      if (right !== undefined && this.beats(right.value, first)) first = 2 * i + 2
      if (first === i) return
      this.swap(i, first)
      i = first
    }
  }

  private beats(value: V, at: number): boolean {
    const other = this.items[at]
    return other !== undefined && this.before(value, other.value)
  }
}

/**
 * Picks from a heap while honouring `skip`: pops skipped tops aside (the skip set is a client's few
 * recent failures, so this stays O(k log n)), then puts them back unchanged.
 */
export const pickSkipping = <K, V>(heap: IndexedHeap<K, V>, skip: ReadonlySet<K>): K | undefined => {
  if (skip.size === 0) return heap.peek()?.key
  const aside: Array<{ key: K; value: V }> = []
  let found: K | undefined
  for (let top = heap.peek(); top !== undefined; top = heap.peek()) {
    if (!skip.has(top.key)) {
      found = top.key
      break
    }
    aside.push(top)
    heap.remove(top.key)
  }
  for (const item of aside) heap.set(item.key, item.value)
  return found
}
