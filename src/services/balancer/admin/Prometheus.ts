/**
 * Effect `Metric`s as Prometheus text exposition (format 0.0.4), what `GET /metrics` serves.
 *
 * Pure: a snapshot in, text out. One `# HELP`/`# TYPE` block per metric name with all its series
 * together (Prometheus rejects a name split across blocks); counters, gauges, histograms (Effect's
 * buckets are already cumulative and already end at +Inf), summaries, and frequencies (one counter
 * series per occurrence, the occurrence as a label); a counter that may fall is a gauge. Names and label names are made legal, label
 * values and help text escaped, so whatever a metric is called the output parses.
 */
import { type MetricLabel, MetricKeyType, type MetricPair, MetricState, Option } from "effect"

export const contentType = "text/plain; version=0.0.4; charset=utf-8"

type Sample = readonly [suffix: string, labels: ReadonlyArray<readonly [string, string]>, value: number | bigint]

interface Family {
  readonly type: "counter" | "gauge" | "histogram" | "summary"
  readonly help: string
  readonly samples: Array<string>
  /** The label sets already written: the same series twice would make the whole scrape fail. */
  readonly series: Set<string>
}

/** A legal metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`. */
export const metricName = (name: string): string => {
  const legal = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[a-zA-Z_:]/.test(legal) ? legal : `_${legal}`
}

/** A legal label name: `[a-zA-Z_][a-zA-Z0-9_]*`, and not one of the reserved `__` names. */
export const labelName = (name: string): string => {
  const legal = name.replace(/[^a-zA-Z0-9_]/g, "_")
  const leading = /^[a-zA-Z_]/.test(legal) ? legal : `_${legal}`
  return leading.startsWith("__") ? `x${leading}` : leading
}

const escapeLabelValue = (value: string) => value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")
const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Infinity) return "+Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

const formatSample = (name: string, [suffix, labels, value]: Sample) => {
  const text = labels.map(([key, v]) => `${key}="${escapeLabelValue(v)}"`).join(",")
  return `${name}${suffix}${text === "" ? "" : `{${text}}`} ${formatValue(value)}`
}

const samplesOf = (
  pair: MetricPair.MetricPair.Untyped,
  labels: ReadonlyArray<readonly [string, string]>
): [Family["type"], Array<Sample>] | undefined => {
  const state = pair.metricState
  if (MetricState.isCounterState(state)) {
    // An Effect counter that is not `incremental` may go down (`effect_fiber_active`): to
    // Prometheus that is a gauge — a counter that falls reads as a process restart.
    const incremental = MetricKeyType.isCounterKey(pair.metricKey.keyType) && pair.metricKey.keyType.incremental
    return [incremental ? "counter" : "gauge", [["", labels, state.count]]]
  }
  if (MetricState.isGaugeState(state)) return ["gauge", [["", labels, state.value]]]
  if (MetricState.isHistogramState(state)) {
    const le = (bound: number): Array<readonly [string, string]> => [...labels, ["le", formatValue(bound)]]
    const buckets: Array<Sample> = state.buckets.map(([bound, count]) => ["_bucket", le(bound), count])
    // Effect's boundaries end with +Inf already; add it only if a hand-made state lacks it.
    if (state.buckets.at(-1)?.[0] !== Infinity) buckets.push(["_bucket", le(Infinity), state.count])
    return ["histogram", [...buckets, ["_sum", labels, state.sum], ["_count", labels, state.count]]]
  }
  if (MetricState.isSummaryState(state)) {
    const quantiles = state.quantiles.flatMap(([quantile, value]): Array<Sample> =>
      Option.isSome(value) ? [["", [...labels, ["quantile", formatValue(quantile)]], value.value]] : []
    )
    return ["summary", [...quantiles, ["_sum", labels, state.sum], ["_count", labels, state.count]]]
  }
  if (MetricState.isFrequencyState(state)) {
    const occurrences = [...state.occurrences].map(([key, count]): Sample => ["", [...labels, ["key", key]], count])
    return ["counter", occurrences]
  }
  return undefined
}

const labelPairs = (tags: ReadonlyArray<MetricLabel.MetricLabel>) => {
  const seen = new Map<string, string>()
  for (const tag of tags) seen.set(labelName(tag.key), tag.value)
  return [...seen].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
}

/** The text Prometheus scrapes, from `Metric.snapshot`'s pairs; `keep` filters series out. */
export const encode = (
  pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>,
  keep: (name: string, labels: ReadonlyMap<string, string>) => boolean = () => true
): string => {
  const families = new Map<string, Family>()
  for (const pair of pairs) {
    const name = metricName(pair.metricKey.name)
    const labels = labelPairs(pair.metricKey.tags)
    if (!keep(name, new Map(labels))) continue
    const described = samplesOf(pair, labels)
    if (described === undefined) continue
    const [type, samples] = described
    // Prometheus names counters `*_total`; Effect's own (`effect_fiber_started`) are not.
    const familyName = type === "counter" && !name.endsWith("_total") ? `${name}_total` : name
    let family = families.get(familyName)
    if (family === undefined) {
      family = {
        type,
        help: Option.getOrElse(pair.metricKey.description, () => pair.metricKey.name),
        samples: [],
        series: new Set()
      }
      families.set(familyName, family)
    }
    // One name, one type: a clash (two metrics of different kinds under one name) keeps the first.
    const identity = JSON.stringify(labels)
    if (family.type !== type || family.series.has(identity)) continue
    family.series.add(identity)
    for (const sample of samples) family.samples.push(formatSample(familyName, sample))
  }
  const lines: Array<string> = []
  for (const name of [...families.keys()].sort()) {
    const family = families.get(name)
    if (family === undefined || family.samples.length === 0) continue
    lines.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`, ...family.samples)
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}
