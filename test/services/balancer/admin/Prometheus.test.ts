import { describe, expect, it } from "@effect/vitest"
import {
  Effect,
  FastCheck,
  Metric,
  MetricBoundaries,
  MetricKey,
  MetricLabel,
  MetricPair,
  MetricState,
  Option
} from "effect"
import { encode } from "../../../../src/services/balancer/admin/Prometheus.js"
import { parse, valueOf } from "../../../support/prometheus.js"

const pair = (key: MetricKey.MetricKey.Untyped, state: MetricState.MetricState.Untyped) =>
  MetricPair.unsafeMake(key, state)

describe("Prometheus exposition", () => {
  it("writes counters, gauges, summaries and frequencies with HELP and TYPE, one block per name", () => {
    const text = encode([
      pair(
        MetricKey.counter("jobs_total", { description: "Jobs done", incremental: true }).pipe(
          MetricKey.tagged("queue", "a")
        ),
        MetricState.counter(3)
      ),
      pair(MetricKey.gauge("temperature", { description: "Now" }), MetricState.gauge(-1.5)),
      pair(
        MetricKey.counter("jobs_total", { description: "Jobs done", incremental: true }).pipe(
          MetricKey.tagged("queue", "b")
        ),
        MetricState.counter(4)
      ),
      pair(
        MetricKey.summary({ name: "wait", maxAge: "1 minute", maxSize: 10, error: 0.01, quantiles: [0.5, 0.99] }),
        MetricState.summary({
          error: 0.01,
          quantiles: [
            [0.5, Option.some(2)],
            [0.99, Option.none()]
          ],
          count: 3,
          min: 1,
          max: 3,
          sum: 6
        })
      ),
      pair(MetricKey.frequency("colors"), MetricState.frequency(new Map([["red", 2]])))
    ])
    const families = parse(text)
    expect(families.get("jobs_total")).toMatchObject({ type: "counter", help: "Jobs done" })
    expect(valueOf(families, "jobs_total", { queue: "a" })).toBe(3)
    expect(valueOf(families, "jobs_total", { queue: "b" })).toBe(4)
    expect(valueOf(families, "temperature")).toBe(-1.5)
    expect(families.get("wait")?.type).toBe("summary")
    expect(valueOf(families, "wait", { quantile: "0.5" })).toBe(2)
    expect(valueOf(families, "wait", { quantile: "0.99" })).toBeUndefined()
    expect(valueOf(families, "wait_count")).toBe(3)
    // Counters are named *_total, as Prometheus expects, even when the Effect metric is not.
    expect(valueOf(families, "colors_total", { key: "red" })).toBe(2)
    // One HELP/TYPE per name, and its samples together.
    expect(text.match(/# TYPE jobs_total/g)).toHaveLength(1)
  })

  it.effect("writes an Effect histogram as cumulative buckets ending at +Inf, with _sum and _count", () =>
    Effect.gen(function* () {
      const histogram = Metric.histogram(
        "test_prometheus_histogram_seconds",
        MetricBoundaries.fromIterable([0.1, 1, 10]),
        "A histogram"
      ).pipe(Metric.tagged("server", "s1"))
      for (const value of [0.05, 0.5, 0.7, 5, 50]) yield* Metric.update(histogram, value)
      const pairs = (yield* Metric.snapshot).filter((p) => p.metricKey.name === "test_prometheus_histogram_seconds")
      const families = parse(encode(pairs))
      const bucket = (le: string) => valueOf(families, "test_prometheus_histogram_seconds_bucket", { server: "s1", le })
      expect([bucket("0.1"), bucket("1"), bucket("10"), bucket("+Inf")]).toEqual([1, 3, 4, 5])
      expect(valueOf(families, "test_prometheus_histogram_seconds_count")).toBe(5)
      expect(valueOf(families, "test_prometheus_histogram_seconds_sum")).toBeCloseTo(56.25)
    })
  )

  it("writes a counter that may fall (not incremental) as a gauge", () => {
    const families = parse(encode([pair(MetricKey.counter("fibers_active"), MetricState.counter(2))]))
    expect(families.get("fibers_active")?.type).toBe("gauge")
  })

  it("keeps one type per name and one sample per series, whatever the metrics clash on", () => {
    const text = encode([
      pair(MetricKey.gauge("clash", { description: "first" }), MetricState.gauge(1)),
      pair(MetricKey.gauge("clash", { description: "second" }), MetricState.gauge(2)),
      pair(MetricKey.gauge("clash"), MetricState.counter(3)),
      pair(
        MetricKey.histogram("clash", MetricBoundaries.fromIterable([1])),
        MetricState.histogram({ buckets: [[1, 1]], count: 1, min: 1, max: 1, sum: 1 })
      )
    ])
    const families = parse(text)
    expect(families.get("clash")?.samples).toHaveLength(1)
    expect(valueOf(families, "clash")).toBe(1)
  })

  it("leaves out the series the filter refuses", () => {
    const key = (server: string) => MetricKey.gauge("active").pipe(MetricKey.tagged("server", server))
    const text = encode(
      [pair(key("kept"), MetricState.gauge(1)), pair(key("gone"), MetricState.gauge(2))],
      (_, labels) => labels.get("server") !== "gone"
    )
    const families = parse(text)
    expect(valueOf(families, "active", { server: "kept" })).toBe(1)
    expect(valueOf(families, "active", { server: "gone" })).toBeUndefined()
  })

  it("writes NaN and infinities as Prometheus spells them", () => {
    const text = encode([
      pair(MetricKey.gauge("a"), MetricState.gauge(NaN)),
      pair(MetricKey.gauge("b"), MetricState.gauge(Infinity)),
      pair(MetricKey.gauge("c"), MetricState.gauge(-Infinity))
    ])
    expect(text).toContain("a NaN\n")
    expect(text).toContain("b +Inf\n")
    expect(text).toContain("c -Inf\n")
    expect(Number.isNaN(valueOf(parse(text), "a"))).toBe(true)
  })

  it.prop(
    "any metric name, label name and label value comes out parseable, values intact",
    [FastCheck.string({ minLength: 1 }), FastCheck.string({ minLength: 1 }), FastCheck.string(), FastCheck.double()],
    ([name, label, value, number]) => {
      const text = encode([
        pair(
          MetricKey.gauge(name, { description: `help for ${name}\\\n` }).pipe(
            MetricKey.taggedWithLabels([MetricLabel.make(label, value)])
          ),
          MetricState.gauge(number)
        )
      ])
      const families = parse(text)
      expect(families.size).toBe(1)
      const [family] = [...families.values()]
      expect(family?.help).toBe(`help for ${name}\\\n`)
      const [sample] = family?.samples ?? []
      expect([...(sample?.labels.values() ?? [])]).toEqual([value])
      if (Number.isNaN(number)) expect(sample?.value).toBeNaN()
      // === on purpose: -0 is written "0", which is the same number to Prometheus.
      else expect(sample?.value === number).toBe(true)
    }
  )
})
