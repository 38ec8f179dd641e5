import { describe, expect, it } from "@effect/vitest"
import { barLine, formatBytes, formatTimeLeft, plainLine, ProgressMeter } from "../../src/programs/progress.js"

describe("sizes and progress for a person", () => {
  it("sizes: whole bytes below 1 KiB, then IEC units with two or three digits; never 0.00 MB", () => {
    expect(
      [0, 6, 1023, 1024, 1536, 12 * 1024 + 300, 4 * 1024 * 1024, 67_108_864, 3 * 1024 ** 3].map(formatBytes)
    ).toEqual(["0 B", "6 B", "1023 B", "1.0 KiB", "1.5 KiB", "12 KiB", "4.0 MiB", "64 MiB", "3.0 GiB"])
  })

  it("time left: m:ss, h:mm:ss, or --:-- when unknown", () => {
    expect([0, 4.2, 75, 3723, Number.NaN].map(formatTimeLeft)).toEqual(["0:00", "0:05", "1:15", "1:02:03", "--:--"])
  })

  it("a bar line has the name, a bar, the percentage, rate and time left, and fits the width", () => {
    const transfer = { name: "big.bin", received: 5 * 1024 * 1024, total: 10 * 1024 * 1024, elapsedMs: 1000 }
    const line = barLine(transfer, 100)
    expect(line).toMatch(/^big\.bin {2}\[#+\.+\] {3}50% {2}5\.0 MiB \/ 10 MiB {2}5\.0 MiB\/s {2}0:01 left$/)
    expect(line.length).toBeLessThan(100)
    expect(barLine(transfer, 40).length).toBeLessThan(40)
    expect(plainLine(transfer)).toBe("big.bin: 50% (5.0 MiB of 10 MiB, 5.0 MiB/s, 0:01 left)")
    // A small file done in a few milliseconds has no meaningful rate: `--/s`, not `0 B/s` or a wild figure.
    expect(plainLine({ name: "notes.txt", received: 84, total: 84, elapsedMs: 3 })).toBe(
      "notes.txt: 100% (84 B of 84 B, --/s, 0:00 left)"
    )
  })

  it("on a terminal: redrawn in place at most every 100 ms, and always at the end", () => {
    const meter = new ProgressMeter("f", true, 80)
    const total = 1000
    const shown = [0, 50, 99, 100, 150, 260, 270].map((ms, i) => meter.update((i + 1) * 100, total, ms))
    expect(shown.map((text) => text !== undefined)).toEqual([true, false, false, true, false, true, false])
    expect(shown[0]?.startsWith("\r")).toBe(true)
    const end = meter.update(total, total, 280)
    expect(end?.endsWith("\n")).toBe(true)
    expect(meter.interrupt()).toBe("")
  })

  it("without a terminal: a line a tenth done (or every 5 s), each its own line", () => {
    const meter = new ProgressMeter("f", false)
    const lines: Array<string> = []
    for (let received = 0; received <= 1000; received += 25) {
      const text = meter.update(received, 1000, received)
      if (text !== undefined) lines.push(text)
    }
    expect(lines.map((line) => /(\d+)%/.exec(line)?.[1])).toEqual([
      "10",
      "20",
      "30",
      "40",
      "50",
      "60",
      "70",
      "80",
      "90",
      "100"
    ])
    expect(lines.every((line) => line.endsWith(")\n") && !line.includes("\r"))).toBe(true)
    // Slow: after 5 s without a tenth, a line anyway.
    const slow = new ProgressMeter("f", false)
    expect(slow.update(1, 1000, 0)).toBeUndefined()
    expect(slow.update(2, 1000, 4999)).toBeUndefined()
    expect(slow.update(3, 1000, 5000)).toMatch(/^f: 0% /)
  })

  it("a terminal that does not say its width (columns 0, as under `script`) gets a whole bar, not one character", () => {
    const meter = new ProgressMeter("big.bin", true, 0)
    const text = meter.update(512, 1024, 0) ?? ""
    expect(text).toMatch(/^\rbig\.bin {2}\[#+\.+\] {3}50% /)
    expect(text.length).toBeLessThanOrEqual(80)
    expect(text.endsWith(" left")).toBe(true) // nothing cut off at the edge
  })

  it("a transfer that starts over (another server) starts its figures over", () => {
    const meter = new ProgressMeter("f", false)
    meter.update(900, 1000, 0)
    expect(meter.update(100, 1000, 10_000)).toMatch(/^f: 10% /)
  })
})
