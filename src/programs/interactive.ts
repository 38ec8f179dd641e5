/**
 * The interactive client: a menu of the three requests (and, in the playground, of the balancer's
 * controls), looping until Quit. Everything it says goes through the `Terminal`, so a test can
 * drive it with scripted keys and read what a person would see.
 */
import { Prompt } from "@effect/cli"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Terminal from "@effect/platform/Terminal"
import { Clock, Duration, Effect, FiberHandle, Option, Schedule } from "effect"
import { SetStrategy } from "../domain/Protocol.js"
import { formatEndpoint } from "../domain/Server.js"
import { askFirst, statusOfFirst } from "../services/client/BalancerClient.js"
import { Client, type ClientEvent } from "../services/client/Client.js"
import { names } from "../services/balancer/strategies/Catalog.js"
import type { Trust } from "../services/wire/Tls.js"
import type { Address } from "../services/wire/Wire.js"
import { Wire } from "../services/wire/Wire.js"
import { statusTable } from "./operator.js"
import { formatBytes, ProgressMeter } from "./progress.js"

/** What the playground adds to the menu: servers (or balancers) a person can kill and bring back. */
export interface Controls {
  readonly running: Effect.Effect<ReadonlyArray<string>>
  readonly stopped: Effect.Effect<ReadonlyArray<string>>
  readonly kill: (id: string) => Effect.Effect<void>
  /** Fails, saying why, when it cannot start again (its port taken meanwhile). */
  readonly revive: (id: string) => Effect.Effect<void, { readonly message: string }>
}

export type ServerControls = Controls

export interface InteractiveOptions {
  /** The balancer, or several: the menu's status and strategy go to the first that answers. */
  readonly balancer: Address | ReadonlyArray<Address>
  /** Where downloads are saved. */
  readonly out: string
  readonly token?: string | undefined
  readonly controls?: ServerControls | undefined
  /** The playground's balancers, when it runs several (`--balancers N`). */
  readonly balancers?: Controls | undefined
  /** Speak TLS to the balancer, trusting these CAs (`--tls`, `--ca`). */
  readonly tls?: Trust | undefined
}

type Action =
  | "list"
  | "download"
  | "compute"
  | "status"
  | "strategy"
  | "kill"
  | "revive"
  | "killBalancer"
  | "reviveBalancer"
  | "quit"

/** How the client talks to a person: lines, its journey between servers, progress of long work. */
export const output = (terminal: Terminal.Terminal) =>
  Effect.gen(function* () {
    const tty = yield* terminal.isTTY
    const write = (text: string) => Effect.ignore(terminal.display(text))
    const say = (text: string) => write(text + "\n")

    /** Which server, and each re-route. */
    const narrate = (event: ClientEvent): Effect.Effect<void> => {
      switch (event._tag) {
        case "Located":
          return event.attempt === 1
            ? Effect.void
            : say(`  → trying ${event.server.id} (${formatEndpoint(event.server)})`)
        case "Rerouted":
          return say(`  ↻ ${event.server} failed (${event.reason}); asking the balancer for another server`)
        case "Progress":
          return Effect.void
      }
    }

    /** A download's bar (percentage, rate, time left), redrawn in place on a terminal; a line a tenth elsewhere. */
    const progress = (name: string) =>
      Effect.gen(function* () {
        const meter = new ProgressMeter(`  ${name}`, tty, process.stdout.columns ?? 80)
        return (event: ClientEvent): Effect.Effect<void> => {
          if (event._tag !== "Progress") return Effect.zipRight(write(meter.interrupt()), narrate(event))
          return Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const text = meter.update(event.received, event.total, now)
            return text === undefined ? Effect.void : write(text)
          })
        }
      })

    /**
     * The seconds going by while a computation runs on one server, until interrupted: they count
     * from its start there (a re-route starts them again, and says which attempt) and stop at the
     * computation's length, so they never show more than 100%.
     */
    const ticking = (seconds: number, attempt = 1) => {
      let elapsed = 0
      const which = attempt > 1 ? ` (attempt ${attempt})` : ""
      return Effect.repeat(
        Effect.suspend(() => {
          elapsed = Math.min(elapsed + 1, seconds)
          const line = `  computing… ${elapsed} s / ${seconds} s${which}`
          return write(tty ? `\r${line}` : `${line}\n`)
        }),
        Schedule.spaced(Duration.seconds(1)).pipe(Schedule.whileOutput(() => elapsed < seconds))
      ).pipe(
        Effect.zipRight(Effect.never),
        Effect.delay(Duration.seconds(1)),
        Effect.onInterrupt(() => (tty && elapsed > 0 ? write("\n") : Effect.void))
      )
    }

    /**
     * Narrates a computation's journey with its seconds ticking: a ticker per server tried, stopped
     * when that server fails and started afresh on the next. Stopped for good with the scope.
     */
    const computing = (seconds: number) =>
      Effect.map(FiberHandle.make<void>(), (ticker) => ({
        onEvent: (event: ClientEvent): Effect.Effect<void> => {
          switch (event._tag) {
            case "Located":
              return Effect.zipRight(narrate(event), FiberHandle.run(ticker, ticking(seconds, event.attempt)))
            case "Rerouted":
              return Effect.zipRight(FiberHandle.clear(ticker), narrate(event))
            case "Progress":
              return Effect.void
          }
        },
        stop: FiberHandle.clear(ticker)
      }))
    return { tty, say, narrate, progress, ticking, computing }
  })

const served = (server: { id: string; host: string; port: number }, attempts: number) =>
  `${server.id} (${formatEndpoint(server)})${attempts > 1 ? ` after ${attempts} attempts` : ""}`

/** What every entry of the menu works with: the client, the wire to the balancer, and the terminal. */
interface Session extends Effect.Effect.Success<ReturnType<typeof output>> {
  readonly client: Client["Type"]
  readonly wire: Wire["Type"]
  readonly options: InteractiveOptions
  /** Tells the person why a request did not succeed; the menu goes on. */
  readonly fail: (error: { message: string }) => Effect.Effect<void>
}

/** One entry of the menu, run each time it is picked. */
type Step = Effect.Effect<void, Terminal.QuitException, Prompt.Prompt.Environment>

export const interactive = (options: InteractiveOptions) =>
  Effect.gen(function* () {
    const client = yield* Client
    const wire = yield* Wire
    const voice = yield* output(yield* Terminal.Terminal)
    const session: Session = { ...voice, client, wire, options, fail: (error) => voice.say(`  ✗ ${error.message}`) }
    const actions = steps(session)
    const choices = menu(options.controls, options.balancers)
    while (true) {
      const action = yield* Prompt.select({ message: "What next?", choices })
      if (action === "quit") return
      yield* actions[action]
    }
  }).pipe(
    // Ctrl-C (or the end of input) at a prompt is a way to quit, not an error.
    Effect.catchTag("QuitException", () => Effect.void)
  )

/** The menu: the three requests, the balancer's controls, the servers' in the playground, and Quit. */
const menu = (
  controls: ServerControls | undefined,
  balancers: Controls | undefined
): Array<{ title: string; value: Action }> => [
  { title: "List files", value: "list" },
  { title: "Download a file", value: "download" },
  { title: "Compute for N seconds", value: "compute" },
  { title: "Balancer status", value: "status" },
  { title: "Switch strategy", value: "strategy" },
  ...(controls === undefined
    ? []
    : [
        { title: "Kill a server", value: "kill" as const },
        { title: "Revive a server", value: "revive" as const }
      ]),
  ...(balancers === undefined
    ? []
    : [
        { title: "Kill a balancer", value: "killBalancer" as const },
        { title: "Revive a balancer", value: "reviveBalancer" as const }
      ]),
  { title: "Quit", value: "quit" }
]

/** What each entry of the menu does. */
const steps = (session: Session): Record<Action, Step> => ({
  list: listFiles(session),
  download: downloadFile(session),
  compute: computeFor(session),
  status: showStatus(session),
  strategy: switchStrategy(session),
  kill: pick(session.options.controls, "running", serverTexts, session),
  revive: pick(session.options.controls, "stopped", serverTexts, session),
  killBalancer: pick(session.options.balancers, "running", balancerTexts, session),
  reviveBalancer: pick(session.options.balancers, "stopped", balancerTexts, session),
  quit: Effect.void
})

const listFiles = ({ client, narrate, say, fail }: Session): Step =>
  client.list(narrate).pipe(
    Effect.flatMap(({ value, sizes, server, attempts }) => {
      const names = Object.keys(value)
      const sized = (name: string) => {
        const size = sizes[name]
        return size === undefined ? "" : `, ${formatBytes(size)}`
      }
      return say(
        [
          `  ${names.length} files on ${served(server, attempts)}:`,
          ...names.map((n) => `    ${n}  (${value[n] || "-"}${sized(n)})`)
        ].join("\n")
      )
    }),
    Effect.catchAll(fail)
  )

/**
 * Offers the files the servers have (or asks for a name if it cannot list them), then downloads with
 * progress. A file of that name already in the folder is replaced only if the person says so.
 */
const downloadFile = ({ client, options, progress, say, fail }: Session): Step =>
  Effect.gen(function* () {
    const listed = yield* Effect.option(client.list())
    const known = Option.match(listed, { onNone: () => [], onSome: ({ value }) => Object.keys(value) })
    const name =
      known.length > 0
        ? yield* Prompt.select({ message: "Which file?", choices: known.map((n) => ({ title: n, value: n })) })
        : yield* Prompt.text({ message: "File name" })
    const path = yield* Path.Path
    const fs = yield* FileSystem.FileSystem
    const taken = yield* Effect.orElseSucceed(fs.exists(path.join(options.out, name)), () => false)
    const overwrite = taken
      ? yield* Prompt.confirm({
          message: `${name} exists in ${path.resolve(options.out)}; overwrite it?`,
          initial: false
        })
      : false
    if (taken && !overwrite) return yield* say(`  kept the existing ${name}; nothing downloaded`)
    const onEvent = yield* progress(name)
    yield* client.download(name, options.out, onEvent, { overwrite }).pipe(
      Effect.flatMap(({ value, server, attempts }) =>
        say(`  ✓ saved ${value.path} (${formatBytes(value.size)}) from ${served(server, attempts)}`)
      ),
      Effect.catchAll(fail)
    )
  })

/** Computes for the seconds asked, showing them tick by (on each server it tries) while it waits. */
const computeFor = ({ client, computing, say, fail }: Session): Step =>
  Effect.gen(function* () {
    const seconds = yield* Prompt.integer({ message: "Compute for how many seconds? (0-60)", min: 0, max: 60 })
    const progress = yield* computing(seconds)
    const result = yield* Effect.either(client.compute(seconds, progress.onEvent))
    yield* progress.stop
    if (result._tag === "Left") return yield* fail(result.left)
    yield* say(`  ✓ computed ${result.right.value} s on ${served(result.right.server, result.right.attempts)}`)
  }).pipe(Effect.scoped)

/** One request to the balancer's own port. */
const askBalancer = ({ options, wire }: Session, request: SetStrategy) =>
  askFirst(options.balancer, request, "5 seconds", options.tls).pipe(
    Effect.map(({ reply }) => reply),
    Effect.provideService(Wire, wire)
  )

/** The balancer's strategy and its servers, as a table. */
const showStatus = (session: Session): Step =>
  statusOfFirst(session.options.balancer, "5 seconds", session.options.tls).pipe(
    Effect.provideService(Wire, session.wire),
    Effect.flatMap(({ reply }) =>
      reply._tag === "StatusReport"
        ? session.say(statusTable(reply.strategy, reply.servers))
        : session.say(`  ✗ ${reply._tag}`)
    ),
    Effect.catchAll(session.fail)
  )

/** Asks the balancer to pick servers by another strategy (with the operator's token, if given). */
const switchStrategy = (session: Session): Step =>
  Effect.gen(function* () {
    const strategy = yield* Prompt.select({
      message: "Strategy",
      choices: names.map((name) => ({ title: name, value: name }))
    })
    const reply = yield* askBalancer(session, new SetStrategy({ strategy, token: session.options.token })).pipe(
      Effect.either
    )
    if (reply._tag === "Left") return yield* session.fail(reply.left)
    yield* session.say(
      reply.right._tag === "StrategySet"
        ? `  ✓ strategy is now ${reply.right.strategy}`
        : `  ✗ ${"message" in reply.right ? reply.right.message : reply.right._tag}`
    )
  })

/** What the menu says when it kills or revives one of a kind. */
interface Texts {
  readonly noun: string
  readonly killed: string
  readonly revived: string
}

const serverTexts: Texts = {
  noun: "server",
  killed: "the balancer will find it dead within its dead-after",
  revived: "it registers again by itself"
}

const balancerTexts: Texts = {
  noun: "balancer",
  killed: "its servers register with another, and clients ask the next one",
  revived: "it reads the shared registry and takes clients again"
}

/** Kills a running one, or revives a stopped one, of those `controls` hold, picked from a list. */
const pick = (controls: Controls | undefined, which: "running" | "stopped", texts: Texts, session: Session) =>
  Effect.gen(function* () {
    if (controls === undefined) return
    const ids = yield* controls[which]
    if (ids.length === 0) return yield* session.say(`  no ${texts.noun} is ${which}`)
    const id = yield* Prompt.select({
      message: `${which === "running" ? "Kill" : "Revive"} which ${texts.noun}?`,
      choices: ids.map((value) => ({ title: value, value }))
    })
    if (which === "running") {
      yield* controls.kill(id)
      return yield* session.say(`  ✓ killed ${id}: ${texts.killed}`)
    }
    yield* controls.revive(id).pipe(
      Effect.matchEffect({
        onFailure: session.fail,
        onSuccess: () => session.say(`  ✓ revived ${id}: ${texts.revived}`)
      })
    )
  })
