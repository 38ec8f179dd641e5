/**
 * How sizes and a download's progress are shown to a person: one unit convention everywhere (IEC:
 * B, KiB, MiB, GiB), a bar with percentage, rate and time left on a terminal, and plain lines
 * elsewhere. Pure: the caller gives the time and writes what comes back.
 */

const units = ["KiB", "MiB", "GiB", "TiB"] as const

/** `512 B`, `1.5 KiB`, `12 KiB`, `3.4 MiB`: whole bytes below 1 KiB, then 2–3 significant digits. */
export const formatBytes = (bytes: number): string => {
  if (bytes < 1024) return `${Math.round(bytes)} B`
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit += 1
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`
}

/** `0:05`, `12:30`, `1:02:03`; `--:--` when it cannot be known. */
export const formatTimeLeft = (seconds: number): string => {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--"
  const whole = Math.ceil(seconds)
  const h = Math.floor(whole / 3600)
  const m = Math.floor((whole % 3600) / 60)
  const s = String(whole % 60).padStart(2, "0")
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`
}

/** Where a transfer stands: bytes received of `total`, over `elapsedMs`. */
export interface Transfer {
  readonly name: string
  readonly received: number
  readonly total: number
  readonly elapsedMs: number
}

/** Below this much time a rate says nothing (a small file arrives in a few ms): it shows as `--`. */
const rateAfterMs = 100

const figures = ({ received, total, elapsedMs }: Transfer) => {
  const percent = total === 0 ? 100 : Math.floor((100 * received) / total)
  const rate = elapsedMs >= rateAfterMs ? (received * 1000) / elapsedMs : Number.NaN
  const left = received >= total ? 0 : rate > 0 ? (total - received) / rate : Number.NaN
  return { percent, rate: Number.isFinite(rate) ? `${formatBytes(rate)}/s` : "--/s", left }
}

/** `notes.txt  [#####.....]  50%  1.2 MiB/s  0:03 left`, fitting `columns`. */
export const barLine = (transfer: Transfer, columns: number): string => {
  const { percent, rate, left } = figures(transfer)
  const tail = `${String(percent).padStart(3)}%  ${formatBytes(transfer.received)} / ${formatBytes(transfer.total)}  ${rate}  ${formatTimeLeft(left)} left`
  const room = columns - tail.length - 7 // the bar's brackets and gaps, and the last column left free
  const name =
    transfer.name.length > Math.max(room - 10, 8) ? `${transfer.name.slice(0, Math.max(room - 11, 7))}…` : transfer.name
  const width = Math.max(0, Math.min(30, room - name.length))
  const filled = Math.round((width * percent) / 100)
  const bar = width >= 5 ? `[${"#".repeat(filled)}${".".repeat(width - filled)}]  ` : ""
  return `${name}  ${bar}${tail}`.slice(0, Math.max(columns - 1, 1))
}

/** `notes.txt: 50% (1.2 MiB of 2.4 MiB, 1.2 MiB/s, 0:01 left)`. */
export const plainLine = (transfer: Transfer): string => {
  const { percent, rate, left } = figures(transfer)
  return `${transfer.name}: ${percent}% (${formatBytes(transfer.received)} of ${formatBytes(transfer.total)}, ${rate}, ${formatTimeLeft(left)} left)`
}

/** Redraws on a terminal at most this often. */
const redrawMs = 100
/** Without a terminal, a line at each tenth done, or after this long without one. */
const plainEveryMs = 5000

/**
 * When to show a transfer's progress, and what: on a terminal the bar, redrawn in place (`\r`) at
 * most 10 times a second and once at the end; elsewhere a line per tenth done (or every 5 s).
 * A transfer that starts over (its server failed, another sends it) starts the figures over.
 */
export class ProgressMeter {
  private startedAt: number | undefined = undefined
  private received = 0
  private shownAt = 0
  private shownStep = 0
  private drawn = 0

  private readonly columns: number

  /** `columns`: the terminal's width; 0 or less (a terminal that does not say, e.g. under `script`) means 80. */
  constructor(
    private readonly name: string,
    private readonly tty: boolean,
    columns: number = 80
  ) {
    this.columns = columns > 0 ? columns : 80
  }

  /** `received` of `total` bytes at `now` (ms): the text to write, if any is due. */
  update(received: number, total: number, now: number): string | undefined {
    if (this.startedAt === undefined || received < this.received) {
      this.startedAt = now
      // A bar shows at once; plain lines wait for their first tenth.
      this.shownAt = this.tty ? Number.NEGATIVE_INFINITY : now
      this.shownStep = 0
    }
    this.received = received
    const done = received >= total
    const transfer = { name: this.name, received, total, elapsedMs: now - this.startedAt }
    if (this.tty) {
      if (!done && now - this.shownAt < redrawMs) return undefined
      this.shownAt = now
      const line = barLine(transfer, this.columns)
      const padded = line.padEnd(this.drawn)
      this.drawn = done ? 0 : line.length
      return `\r${padded}${done ? "\n" : ""}`
    }
    const step = total === 0 ? 10 : Math.floor((10 * received) / total)
    if (step <= this.shownStep && now - this.shownAt < plainEveryMs) return undefined
    this.shownStep = step
    this.shownAt = now
    return `${plainLine(transfer)}\n`
  }

  /** Something else is about to be written: on a terminal, the bar's line is ended first. */
  interrupt(): string {
    if (!this.tty || this.drawn === 0) return ""
    this.drawn = 0
    return "\n"
  }
}
