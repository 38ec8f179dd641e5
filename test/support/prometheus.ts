/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for tests: it throws on the
 * first thing Prometheus would reject, or a scrape would silently get wrong — bad names, bad
 * escapes, a family split in two, `# TYPE` after its samples, duplicate series, histogram buckets
 * out of order, not cumulative, without `+Inf`, or disagreeing with `_count`.
 */

export interface Sample {
  readonly name: string
  readonly labels: ReadonlyMap<string, string>
  readonly value: number
}

export interface Family {
  readonly name: string
  type: string
  help: string | undefined
  readonly samples: Array<Sample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*/
const types = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

const parseValue = (text: string, line: number): number => {
  if (text === "NaN") return NaN
  if (text === "+Inf" || text === "Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`line ${line}: bad value "${text}"`)
  return Number(text)
}

/** The family a sample belongs to: `x_bucket` etc. belong to histogram/summary `x`. */
const familyOf = (name: string, families: ReadonlyMap<string, Family>) => {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length)
      const family = families.get(base)
      if (family !== undefined && (family.type === "histogram" || family.type === "summary")) return base
    }
  }
  return name
}

const parseLabels = (text: string, line: number): [Map<string, string>, string] => {
  const labels = new Map<string, string>()
  let rest = text
  if (!rest.startsWith("{")) return [labels, rest]
  rest = rest.slice(1)
  while (!rest.startsWith("}")) {
    const name = labelName.exec(rest)?.[0]
    if (name === undefined) throw new Error(`line ${line}: bad label name in "${text}"`)
    rest = rest.slice(name.length)
    if (!rest.startsWith('="')) throw new Error(`line ${line}: expected =" after label ${name}`)
    rest = rest.slice(2)
    let value = ""
    for (;;) {
      const char = rest[0]
      if (char === undefined || char === "\n") throw new Error(`line ${line}: unterminated label value`)
      if (char === '"') break
      if (char === "\\") {
        const escaped = rest[1]
        if (escaped === "\\") value += "\\"
        else if (escaped === '"') value += '"'
        else if (escaped === "n") value += "\n"
        else throw new Error(`line ${line}: bad escape \\${escaped ?? ""} in a label value`)
        rest = rest.slice(2)
      } else {
        value += char
        rest = rest.slice(1)
      }
    }
    rest = rest.slice(1)
    if (labels.has(name)) throw new Error(`line ${line}: label ${name} twice`)
    labels.set(name, value)
    if (rest.startsWith(",")) rest = rest.slice(1)
    else if (!rest.startsWith("}")) throw new Error(`line ${line}: expected , or } after a label`)
  }
  return [labels, rest.slice(1)]
}

const unescapeHelp = (text: string, line: number) =>
  text.replace(/\\(.?)/g, (_, c: string) => {
    if (c === "\\") return "\\"
    if (c === "n") return "\n"
    throw new Error(`line ${line}: bad escape in HELP`)
  })

export const parse = (text: string): Map<string, Family> => {
  if (text !== "" && !text.endsWith("\n")) throw new Error("the exposition must end with a newline")
  const families = new Map<string, Family>()
  const finished = new Set<string>()
  const series = new Set<string>()
  let current: string | undefined
  const enter = (name: string, line: number) => {
    if (current !== name) {
      if (finished.has(name)) throw new Error(`line ${line}: family ${name} is split in two`)
      if (current !== undefined) finished.add(current)
      current = name
    }
    let family = families.get(name)
    if (family === undefined) {
      family = { name, type: "untyped", help: undefined, samples: [] }
      families.set(name, family)
    }
    return family
  }
  const lines = text.split("\n").slice(0, -1)
  lines.forEach((raw, index) => {
    const line = index + 1
    if (raw.trim() === "") return
    if (raw.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw)
      if (match === null) return // a comment
      const [, keyword, name = "", rest = ""] = match
      if (metricName.exec(name)?.[0] !== name) throw new Error(`line ${line}: bad metric name "${name}"`)
      const family = enter(name, line)
      if (keyword === "HELP") {
        if (family.help !== undefined) throw new Error(`line ${line}: second HELP for ${name}`)
        family.help = unescapeHelp(rest, line)
      } else {
        if (!types.has(rest)) throw new Error(`line ${line}: unknown type "${rest}"`)
        if (family.samples.length > 0) throw new Error(`line ${line}: TYPE for ${name} after its samples`)
        family.type = rest
      }
      return
    }
    const name = metricName.exec(raw)?.[0]
    if (name === undefined) throw new Error(`line ${line}: bad sample "${raw}"`)
    const [labels, after] = parseLabels(raw.slice(name.length), line)
    const fields = after.trim().split(/\s+/)
    if (!after.startsWith(" ") || fields.length < 1 || fields.length > 2) {
      throw new Error(`line ${line}: expected " value [timestamp]" in "${raw}"`)
    }
    const value = parseValue(fields[0] ?? "", line)
    const family = enter(familyOf(name, families), line)
    const identity = `${name}${JSON.stringify([...labels].sort())}`
    if (series.has(identity)) throw new Error(`line ${line}: duplicate series ${identity}`)
    series.add(identity)
    if (family.type === "counter" && !(value >= 0)) throw new Error(`line ${line}: counter ${name} is ${value}`)
    family.samples.push({ name, labels, value })
  })
  for (const family of families.values()) if (family.type === "histogram") checkHistogram(family)
  return families
}

const checkHistogram = (family: Family) => {
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>()
  for (const sample of family.samples) {
    const rest = [...sample.labels].filter(([key]) => key !== "le").sort()
    const key = JSON.stringify(rest)
    const group = groups.get(key) ?? { buckets: [] }
    groups.set(key, group)
    if (sample.name === `${family.name}_bucket`) {
      const le = sample.labels.get("le")
      if (le === undefined) throw new Error(`${family.name}: a bucket without le`)
      group.buckets.push([parseValue(le, 0), sample.value])
    } else if (sample.name === `${family.name}_count`) group.count = sample.value
    else if (sample.name === `${family.name}_sum`) group.sum = sample.value
    else throw new Error(`${family.name}: unexpected sample ${sample.name} in a histogram`)
  }
  for (const [key, group] of groups) {
    const last = group.buckets.at(-1)
    if (last === undefined || last[0] !== Infinity) throw new Error(`${family.name}${key}: no le="+Inf" bucket last`)
    for (let i = 1; i < group.buckets.length; i++) {
      const [before, after] = [group.buckets[i - 1], group.buckets[i]]
      if (before === undefined || after === undefined) continue
      if (!(after[0] > before[0])) throw new Error(`${family.name}${key}: buckets out of order`)
      if (after[1] < before[1]) throw new Error(`${family.name}${key}: buckets not cumulative`)
    }
    if (group.count !== last[1])
      throw new Error(`${family.name}${key}: _count ${group.count} != +Inf bucket ${last[1]}`)
    if (group.sum === undefined) throw new Error(`${family.name}${key}: no _sum`)
  }
}

/** The value of the one sample of `name` whose labels include `labels`, or undefined. */
export const valueOf = (
  families: ReadonlyMap<string, Family>,
  name: string,
  labels: Readonly<Record<string, string>> = {}
): number | undefined => {
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name !== name) continue
      if (Object.entries(labels).every(([key, value]) => sample.labels.get(key) === value)) return sample.value
    }
  }
  return undefined
}
