/**
 * A preload for the benchmarks' `--probe` mode, never part of the product: loaded into a measured
 * process with `node --import probe.js`, it watches that process's event loop
 * (`perf_hooks.monitorEventLoopDelay`) and its garbage collections (`PerformanceObserver`, "gc").
 * Each SIGUSR2 appends what it saw since the last one to `<pid>.jsonl` in the folder named by
 * `EFFECT_LB_BENCH_PROBE` (one JSON line, a `ProbeFigures`) and starts again; the bench harness
 * signals before and after a round (see `Probe` in support.ts).
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { monitorEventLoopDelay, type PerformanceEntry, PerformanceObserver } from "node:perf_hooks"
import type { ProbeFigures } from "./support.js"

const folder = process.env["EFFECT_LB_BENCH_PROBE"]
if (folder !== undefined) {
  const out = Path.join(folder, `${process.pid}.jsonl`)
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  let gc = { minor: 0, major: 0, pausedMs: 0, maxPauseMs: 0 }
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      // NODE_PERFORMANCE_GC_MAJOR is 4; the others are scavenges, incremental marking steps and weak callbacks.
      const kind = (entry as PerformanceEntry & { readonly detail?: { readonly kind?: number } }).detail?.kind
      if (kind === 4) gc.major += 1
      else gc.minor += 1
      gc.pausedMs += entry.duration
      gc.maxPauseMs = Math.max(gc.maxPauseMs, entry.duration)
    }
  })
  observer.observe({ entryTypes: ["gc"] })
  process.on("SIGUSR2", () => {
    const figures: ProbeFigures = {
      loopP50Ms: delay.percentile(50) / 1e6,
      loopP99Ms: delay.percentile(99) / 1e6,
      loopMaxMs: delay.max / 1e6,
      ...gc
    }
    Fs.appendFileSync(out, JSON.stringify(figures) + "\n")
    delay.reset()
    gc = { minor: 0, major: 0, pausedMs: 0, maxPauseMs: 0 }
  })
}
