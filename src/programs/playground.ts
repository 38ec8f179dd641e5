/**
 * `effect-lb playground`: a balancer (with its admin server and dashboard; or, with `--balancers N`,
 * several sharing a private Redis: playgroundBalancers.ts), 1–50 servers, background
 * clients and the interactive client in one process, as fibers — or, with `--demo N`, scripted
 * traffic and a table of what each server got (the scripted clients are in traffic.ts). Servers can
 * be killed and revived from the menu to watch re-routing and health checks.
 */
import { Command, Prompt } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Console, Context, Effect, Exit, Layer, LogLevel, Logger, Option, Schedule, Scope } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { formatEndpoint, ServerId, Weight } from "../domain/Server.js"
import * as BalancerLink from "../services/server/BalancerLink.js"
import * as Client from "../services/client/Client.js"
import * as ControlPlane from "../services/balancer/ControlPlane.js"
import * as FileServer from "../services/server/FileServer.js"
import * as FileStore from "../services/server/FileStore.js"
import * as HealthMonitor from "../services/balancer/HealthMonitor.js"
import * as LocalRedis from "../services/balancer/shared/LocalRedis.js"
import { ServerRegistry } from "../services/balancer/ServerRegistry.js"
import { names, type StrategyName } from "../services/balancer/strategies/Catalog.js"
import * as Wire from "../services/wire/Wire.js"
import { interactive, type ServerControls } from "./interactive.js"
import { type BalancerFleet, startBalancers } from "./playgroundBalancers.js"
import { demo, traffic } from "./traffic.js"
import {
  accessLog,
  duration,
  fall,
  folderRule,
  integer,
  InvalidOption,
  oneOf,
  optional,
  port,
  rise,
  type Rule,
  sampleFolder,
  withDefault
} from "./options.js"

export interface Settings {
  readonly servers: number
  readonly strategy: StrategyName
}

/** Asks for what the flags leave out; without a terminal, takes defaults and says so. */
export const askSettings = (
  flags: { servers: Option.Option<number>; strategy: Option.Option<StrategyName> },
  canAsk: boolean
) =>
  Effect.gen(function* () {
    const servers = Option.isSome(flags.servers)
      ? flags.servers.value
      : canAsk
        ? yield* Prompt.integer({ message: "How many servers? (1-50)", min: 1, max: 50 })
        : 3
    const strategy = Option.isSome(flags.strategy)
      ? flags.strategy.value
      : canAsk
        ? yield* Prompt.select({
            message: "Which strategy?",
            choices: names.map((name) => ({ title: name, value: name }))
          })
        : "round-robin"
    if (!canAsk && (Option.isNone(flags.servers) || Option.isNone(flags.strategy))) {
      yield* Console.log(
        `no terminal to ask on: ${servers} servers, ${strategy} (set them with --servers and --strategy)`
      )
    }
    return { servers, strategy } satisfies Settings
  })

/** `--weights 1,2,3`, repeated over the servers; by default 1 each, or 1,2,3 over and over for weighted strategies. */
export const weightsFor = (settings: Settings, given: Option.Option<ReadonlyArray<number>>) => {
  const pattern = Option.getOrElse(given, () => (settings.strategy.startsWith("weighted") ? [1, 2, 3] : [1]))
  return Array.from({ length: settings.servers }, (_, i) => pattern[i % pattern.length] ?? 1)
}

const weightRule = integer(1, 1000)

/** `--weights 1,2,3`: each an integer from 1 to 1000. */
const weightListRule: Rule<ReadonlyArray<number>> = {
  says: "a comma-separated list of integers from 1 to 1000, like 1,2,3",
  placeholder: "W,W,...",
  decode: (text) => Option.all(text.split(",").map(weightRule.decode))
}

/** More weights than servers means a mistake (a weight meant for a server that is not there). */
export const checkWeights = (settings: Settings, given: Option.Option<ReadonlyArray<number>>) =>
  Option.isSome(given) && given.value.length > settings.servers
    ? Effect.fail(
        new InvalidOption({
          option: "--weights",
          rule: `at most one weight per server, ${settings.servers} here`,
          got: given.value.join(",")
        })
      )
    : Effect.void

/** `--balancers`: enough to watch failover, few enough for one machine. */
const maxBalancers = 5

interface PlaygroundServer {
  readonly id: string
  readonly port: number
  readonly weight: number
  readonly folder: string
}

/** Starts one server with its link to the balancers, in its own scope, so it can be killed alone. */
const startServer = (server: PlaygroundServer, balancer: ReadonlyArray<Wire.Address>) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      BalancerLink.layer({ balancer, weight: Weight.make(server.weight) }).pipe(
        Layer.provideMerge(
          FileServer.layer({
            ...FileServer.defaults,
            id: ServerId.make(server.id),
            port: server.port,
            // Killed means killed: requests in flight are cut, and their clients re-route.
            drainTimeout: 0
          })
        ),
        Layer.provide(FileStore.layer(server.folder)),
        Layer.provide(Wire.layer),
        Layer.provide(NodeContext.layer)
      ),
      scope
    ).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
    const running = Context.get(context, FileServer.FileServer)
    return { scope, port: running.address.port, link: Context.get(context, BalancerLink.BalancerLink) }
  })

/**
 * Each server's own folder: the samples, plus `whoami.txt` naming the server — the same name on
 * every server (so any of them can serve it) with different contents, so a download shows who answered.
 */
const makeFolders = (count: number, files: Option.Option<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      if (Option.isSome(files)) return { base: undefined, folders: Array.from({ length: count }, () => files.value) }
      const base = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-playground-"))
      const samples = Option.getOrUndefined(sampleFolder())
      const folders = Array.from({ length: count }, (_, i) => {
        const folder = Path.join(base, `s${i + 1}`)
        Fs.mkdirSync(folder)
        if (samples !== undefined) Fs.cpSync(samples, folder, { recursive: true })
        Fs.writeFileSync(Path.join(folder, "whoami.txt"), `This copy was served by server s${i + 1}.\n`)
        return folder
      })
      return { base, folders }
    }),
    ({ base }) =>
      Effect.sync(() => (base === undefined ? undefined : Fs.rmSync(base, { recursive: true, force: true })))
  )

const options = {
  servers: optional("servers", integer(1, 50), "how many servers", "asked; 3 without a terminal"),
  strategy: optional("strategy", oneOf(names), "how servers are picked", "asked; round-robin without a terminal"),
  weights: optional(
    "weights",
    weightListRule,
    "server weights, repeated over the servers; no more weights than servers",
    "1 each; 1,2,3 repeated for weighted-*"
  ),
  files: optional("files", folderRule, "one folder for every server to serve", "a copy of the samples each"),
  balancers: withDefault(
    "balancers",
    integer(1, maxBalancers),
    1,
    "balancers sharing one registry on a private redis-server (2 or more need redis-server installed)"
  ),
  port: port(ControlPlane.defaults.port, "the (first) balancer's port (0 picks a free port)"),
  adminPort: port(0, "the (first) balancer's admin API and dashboard port (0 picks a free port)", "admin-port"),
  traffic: withDefault(
    "traffic",
    integer(0, 100),
    4,
    "background clients sending requests, for the dashboard to show (0 for none)"
  ),
  demo: optional(
    "demo",
    integer(1, 100_000),
    "run N scripted requests instead of the interactive client, then print a table",
    "off"
  ),
  probeInterval: duration(
    "probe-interval",
    HealthMonitor.defaults.probeInterval,
    "how often servers are probed",
    "10 millis",
    "1 hour"
  ),
  deadAfter: duration(
    "dead-after",
    HealthMonitor.defaults.deadAfter,
    "each probe's time limit, and how long a live server's probes must fail before it is dead",
    "10 millis",
    "1 hour"
  ),
  rise: rise(HealthMonitor.defaults.rise),
  fall: fall(HealthMonitor.defaults.fall),
  accessLog
}

type Flags = Command.Command.ParseConfig<typeof options>

/** The playground's servers: every one it started, and those running now (each in its own scope). */
interface Fleet {
  readonly balancer: ReadonlyArray<Wire.Address>
  readonly known: Map<string, PlaygroundServer>
  readonly running: Map<string, { scope: Scope.CloseableScope; link: BalancerLink.BalancerLink["Type"] }>
}

/** Starts the servers, each with its folder and weight, and stops those still running with the playground. */
export const startServers = (
  balancer: ReadonlyArray<Wire.Address>,
  weights: ReadonlyArray<number>,
  files: Option.Option<string>
) =>
  Effect.gen(function* () {
    const { folders } = yield* makeFolders(weights.length, files)
    const fleet: Fleet = { balancer, known: new Map(), running: new Map() }
    for (const [i, folder] of folders.entries()) {
      const server: PlaygroundServer = { id: `s${i + 1}`, port: 0, weight: weights[i] ?? 1, folder }
      const started = yield* startServer(server, balancer)
      fleet.known.set(server.id, { ...server, port: started.port })
      fleet.running.set(server.id, started)
      yield* Console.log(`server    127.0.0.1:${started.port}  ${server.id}  weight ${server.weight}  ${folder}`)
    }
    yield* Effect.addFinalizer(() =>
      Effect.forEach(fleet.running.values(), ({ scope }) => Scope.close(scope, Exit.void), { discard: true })
    )
    return fleet
  })

/** Waits, up to 10 s, until every balancer has every server live. */
const awaitLive = (registries: ReadonlyArray<ServerRegistry["Type"]>, servers: number) =>
  Effect.forEach(registries, (registry) => registry.list).pipe(
    Effect.filterOrFail((each) => each.every((all) => all.filter((s) => s.state === "live").length >= servers)),
    Effect.retry(Schedule.spaced("50 millis")),
    Effect.timeout("10 seconds"),
    Effect.ignore
  )

/** The menu's hold on the servers: which run, which do not, kill one, revive one. */
const controlsFor = ({ balancer, known, running }: Fleet): ServerControls => ({
  running: Effect.sync(() => [...running.keys()].sort()),
  stopped: Effect.sync(() => [...known.keys()].filter((id) => !running.has(id)).sort()),
  kill: (id) =>
    Effect.gen(function* () {
      const server = running.get(id)
      if (server === undefined) return
      running.delete(id)
      yield* server.link.abandon
      yield* Scope.close(server.scope, Exit.void)
    }),
  revive: (id) =>
    Effect.gen(function* () {
      const server = known.get(id)
      if (server === undefined || running.has(id)) return
      running.set(id, yield* startServer(server, balancer).pipe(Effect.orDie))
    })
})

/**
 * Background clients sending requests, for the dashboard to show. Their downloads go to a folder of
 * their own, gone with the playground.
 */
const startTraffic = (clients: number, balancer: ReadonlyArray<Wire.Address>) =>
  Effect.gen(function* () {
    const scratch = yield* Effect.acquireRelease(
      Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-traffic-"))),
      (folder) => Effect.sync(() => Fs.rmSync(folder, { recursive: true, force: true }))
    )
    yield* traffic(clients, balancer, scratch)
    yield* Console.log(
      `traffic   ${clients} background client${clients === 1 ? "" : "s"} (list, download, compute 1 s; --traffic 0 for none)`
    )
  })

/**
 * The people's side: the scripted demo; or background traffic, then the interactive client (without
 * a terminal, serving until Ctrl-C).
 */
const runClients = (flags: Flags, canAsk: boolean, fleet: Fleet, balancers: BalancerFleet) =>
  Effect.gen(function* () {
    const downloads = Path.join(Os.tmpdir(), "effect-lb-downloads")
    Fs.mkdirSync(downloads, { recursive: true })
    // Built once for the playground's life: the background clients outlive any one call.
    const client = yield* Layer.build(
      Client.layer({ ...Client.defaults, balancer: fleet.balancer }).pipe(
        Layer.provideMerge(Wire.layer),
        Layer.provideMerge(NodeContext.layer)
      )
    )
    if (Option.isSome(flags.demo)) {
      return yield* demo(flags.demo.value, fleet.balancer, [...fleet.known.keys()], downloads).pipe(
        Effect.provide(client)
      )
    }
    if (flags.traffic > 0) yield* startTraffic(flags.traffic, fleet.balancer).pipe(Effect.provide(client))
    if (!canAsk) {
      yield* Console.log("no terminal for the interactive client: serving until Ctrl-C")
      return yield* Effect.never
    }
    yield* Console.log(`downloads go to ${downloads}\n`)
    yield* interactive({
      balancer: fleet.balancer,
      out: downloads,
      controls: controlsFor(fleet),
      balancers: balancers.controls
    }).pipe(Effect.provide(client))
  })

export const playgroundCommand = Command.make("playground", options, (flags) =>
  Effect.gen(function* () {
    const canAsk = process.stdin.isTTY === true && Option.isNone(flags.demo)
    const settings = yield* askSettings(flags, canAsk)
    yield* checkWeights(settings, flags.weights)
    const weights = weightsFor(settings, flags.weights)
    if (Option.isNone(flags.weights)) {
      yield* Console.log(`weights: ${[...new Set(weights)].join(", ")} (set them with --weights 1,2,3)`)
    }
    const balancers = yield* startBalancers({
      count: flags.balancers,
      strategy: settings.strategy,
      port: flags.port,
      adminPort: flags.adminPort,
      monitor: {
        ...HealthMonitor.defaults,
        probeInterval: flags.probeInterval,
        deadAfter: flags.deadAfter,
        rise: flags.rise,
        fall: flags.fall
      },
      accessLog: flags.accessLog,
      redis: LocalRedis.defaults
    })
    const fleet = yield* startServers(balancers.addresses, weights, flags.files)
    yield* awaitLive(yield* balancers.registries, settings.servers)
    const list = balancers.addresses.map(formatEndpoint).join(",")
    yield* Console.log(
      `more clients: npx effect-lb client --balancer ${list}   status: npx effect-lb status --balancer ${list}`
    )
    yield* runClients(flags, canAsk, fleet, balancers)
  }).pipe(
    Effect.scoped,
    // The menu and the tables are the playground's voice; service logs would scribble over the prompts.
    Logger.withMinimumLogLevel(LogLevel.Error)
  )
).pipe(
  Command.withDescription(
    "a balancer (or 2-5 sharing a private Redis), 1-50 servers and an interactive client in one process"
  )
)
