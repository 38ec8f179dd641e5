/**
 * Replies that must fit one line. A list that could grow past the line limit (a balancer's servers,
 * a server's files) is sent a page at a time: as many entries as fit, in a fixed order, and a
 * cursor (`next`, the last one sent) that the peer sends back as `after` for the rest.
 */

/** Bytes of `text` in UTF-8, as it goes on the wire. */
export const utf8Length = (text: string): number => Buffer.byteLength(text, "utf8")

/** The bytes left for a page's entries, counted as they are added: each entry's JSON and its separator. */
export class LineBudget {
  private left: number

  /** `envelope`: the reply's line with no entries and the longest cursor it could carry. */
  constructor(maxLine: number, envelope: string) {
    this.left = maxLine - utf8Length(envelope)
  }

  /** Counts an entry whose JSON is `json` when it still fits; `false` (and nothing counted) when not. */
  take(json: string): boolean {
    const cost = utf8Length(json) + 1
    if (cost > this.left) return false
    this.left -= cost
    return true
  }
}

/**
 * The first entries of `sorted` (those after the peer's cursor, ascending by `key`), as many as
 * `budget` takes, and the cursor for the next page when some were left over.
 */
export const pageOf = <A, K>(
  sorted: ReadonlyArray<A>,
  key: (entry: A) => K,
  json: (entry: A) => string,
  budget: LineBudget
): { readonly entries: ReadonlyArray<A>; readonly next: K | undefined } => {
  const entries: Array<A> = []
  for (const entry of sorted) {
    if (!budget.take(json(entry))) break
    entries.push(entry)
  }
  const last = entries.at(-1)
  return { entries, next: entries.length < sorted.length && last !== undefined ? key(last) : undefined }
}
