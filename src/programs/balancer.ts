/** `effect-lb balancer`: the balancer port, its registry, strategies and health monitor. */
import { Command, Options } from "@effect/cli"
import { Console, Duration, Effect, Layer, Option } from "effect"
import { formatEndpoint, Host, ServerId } from "../domain/Server.js"
import * as Admin from "../services/balancer/admin/Admin.js"
import * as Balancer from "../services/balancer/Balancer.js"
import * as ControlPlane from "../services/balancer/ControlPlane.js"
import * as HealthMonitor from "../services/balancer/HealthMonitor.js"
import * as Operator from "../services/balancer/Operator.js"
import * as Proxy from "../services/balancer/Proxy.js"
import * as Reaper from "../services/balancer/Reaper.js"
import * as Reload from "../services/balancer/Reload.js"
import * as ServerRegistry from "../services/balancer/ServerRegistry.js"
import { Strategies, type StrategyName } from "../services/balancer/strategies/Catalog.js"
import * as Wire from "../services/wire/Wire.js"
import { ignoringHangup, reloadingOnHangup } from "./hangup.js"
import { hintBusyPort } from "./listen.js"
import { version } from "./version.js"
import { type ConfigFile, loadConfig, rules } from "./configFile.js"
import {
  accessLog,
  checked,
  checkedToken,
  duration,
  durationText,
  integer,
  oneOf,
  optional,
  optionalPort,
  type Rule,
  ServerAddressFromText,
  serverRule,
  token,
  withDefault
} from "./options.js"

export interface BalancerOptions {
  readonly host: string
  readonly port: number
  readonly strategy: StrategyName
  readonly servers: ReadonlyArray<typeof ServerAddressFromText.Type>
  readonly monitor: HealthMonitor.MonitorConfig
  readonly token: Option.Option<string>
  readonly idleTimeout?: Duration.Duration
  /** Servers known at once, at most (default 10,000). */
  readonly maxServers?: number
  /** A registered server dead this long is removed (default 60 s). */
  readonly removeDeadAfter?: Duration.Duration
  /** When set, also proxy TCP connections to the servers (L4, like HAProxy's mode tcp). */
  readonly proxy?: Proxy.ProxyConfig | undefined
  /** When set, also serve the admin HTTP API, /metrics and the dashboard. */
  readonly admin?: Admin.AdminConfig | undefined
  /** One access-log line per Locate (and per proxied connection: see `proxy.accessLog`). */
  readonly accessLog?: boolean
  /** A server that becomes live ramps up to its full weight over this long (default 0: off). */
  readonly slowStart?: Duration.Duration
  /** Passive health: failures in traffic in a row that eject a server (0: off), for how long, how many at most. */
  readonly ejectAfter?: number
  readonly ejectTime?: Duration.Duration
  readonly maxEjectedPercent?: number
  /** Where `servers` come from: `--server` flags (`configured`, the default) or the settings `file`. */
  readonly serversOrigin?: "configured" | "file"
  /** When set, the settings can be reloaded (SIGHUP, POST /api/reload): this reads them again. */
  readonly reload?: Effect.Effect<Reload.Desired, Reload.ReloadFailed> | undefined
}

/**
 * Passive health's defaults on the command line: off, as HAProxy's `observe` and Envoy's outlier
 * detection are until configured (so a server back from a restart returns at its first answered
 * probe, as it always has); `--eject-after 5` turns on Envoy's usual 5 in a row, 30 s, 50%.
 */
export const passiveDefaults = { ejectAfter: 0, ejectTime: Duration.seconds(30), maxEjectedPercent: 50 }

/** Everything a balancer is, as one layer: used by this command and by the playground. */
export const balancerLayer = (options: BalancerOptions) => {
  const seed = Layer.effectDiscard(
    Effect.flatMap(ServerRegistry.ServerRegistry, (registry) =>
      Effect.forEach(options.servers, (server) =>
        registry.add({ ...server, id: ServerId.make(formatEndpoint(server)) }, options.serversOrigin ?? "configured")
      )
    )
  )
  const reaper = Reaper.layer({ removeDeadAfter: options.removeDeadAfter ?? Reaper.defaults.removeDeadAfter })
  const core = Operator.layer({ ...Operator.defaults, token: Option.getOrUndefined(options.token) }).pipe(
    Layer.provideMerge(Balancer.layer(options.strategy)),
    Layer.provideMerge(
      ServerRegistry.layer({
        ...ServerRegistry.defaultConfig,
        maxServers: options.maxServers ?? ServerRegistry.defaultConfig.maxServers,
        slowStartMs: options.slowStart === undefined ? 0 : Duration.toMillis(options.slowStart),
        ejectAfter: options.ejectAfter ?? 0,
        ejectTimeMs: Duration.toMillis(options.ejectTime ?? passiveDefaults.ejectTime),
        maxEjectedPercent: options.maxEjectedPercent ?? passiveDefaults.maxEjectedPercent
      })
    ),
    Layer.provideMerge(Strategies.layer)
  )
  const plane = ControlPlane.layer({
    ...ControlPlane.defaults,
    host: options.host,
    port: options.port,
    idleTimeout: options.idleTimeout ?? ControlPlane.defaults.idleTimeout,
    accessLog: options.accessLog === true
  })
  const proxy:
    | Layer.Layer<never, Wire.ListenFailed, Balancer.Balancer | ServerRegistry.ServerRegistry>
    | Layer.Layer<Proxy.Proxy, Wire.ListenFailed, Balancer.Balancer | ServerRegistry.ServerRegistry> =
    options.proxy === undefined ? Layer.empty : Proxy.layer(options.proxy)
  const admin:
    | Layer.Layer<never, Wire.ListenFailed, Operator.Operator | ServerRegistry.ServerRegistry | Strategies>
    | Layer.Layer<Admin.Admin, Wire.ListenFailed, Operator.Operator | ServerRegistry.ServerRegistry | Strategies> =
    options.admin === undefined ? Layer.empty : Admin.layer({ version, ...options.admin })
  const reloader:
    | Layer.Layer<never>
    | Layer.Layer<
        Reload.Reloader,
        never,
        ServerRegistry.ServerRegistry | Operator.Operator | Balancer.Balancer | HealthMonitor.HealthMonitor
      > = options.reload === undefined ? Layer.empty : Reload.layer(options.reload)
  // The admin server is built after the listeners, so its status can say where they listen.
  return admin.pipe(
    Layer.provideMerge(Layer.mergeAll(plane, proxy, reloader)),
    Layer.provideMerge(
      Layer.mergeAll(HealthMonitor.layer(options.monitor), seed, reaper).pipe(Layer.provideMerge(core))
    ),
    Layer.provideMerge(Wire.layer)
  )
}

export const strategyRule = rules.strategy

export const strategyOption = withDefault("strategy", strategyRule, "round-robin", "how servers are picked")

/** An option that may be left out for the settings file (or the default, `fallback`) to decide. */
const setting = <A>(name: string, rule: Rule<A>, fallback: NoInfer<A>, description: string) =>
  optional(name, rule, description, Duration.isDuration(fallback) ? durationText(fallback) : String(fallback))

const options = {
  config: optional(
    "config",
    { says: "a file name", placeholder: "FILE", decode: (text) => (text === "" ? Option.none() : Option.some(text)) },
    "read the settings from this YAML or JSON file (reloaded on SIGHUP); a flag given wins over it",
    "none"
  ),
  port: setting("port", rules.port, ControlPlane.defaults.port, "port of the balancer (0 picks a free port)"),
  host: setting("host", rules.host, Host.make(ControlPlane.defaults.host), "address to listen on"),
  strategy: setting("strategy", rules.strategy, "round-robin", "how servers are picked"),
  servers: Options.text("server").pipe(
    Options.withPseudoName(serverRule.placeholder),
    Options.repeated,
    Options.mapEffect((texts) => Effect.forEach(texts, checked("--server", serverRule))),
    Options.withDescription(
      `a backend server, repeatable; servers may also register themselves [default: none; ${serverRule.says}]`
    )
  ),
  probeInterval: setting(
    "probe-interval",
    rules.probeInterval,
    HealthMonitor.defaults.probeInterval,
    "how often each server is probed"
  ),
  deadAfter: setting(
    "dead-after",
    rules.deadAfter,
    HealthMonitor.defaults.deadAfter,
    "each probe's time limit, and how long a live server's probes must fail before it is dead"
  ),
  rise: setting(
    "rise",
    rules.rise,
    HealthMonitor.defaults.rise,
    "answered probes in a row that make a dead server live"
  ),
  fall: setting(
    "fall",
    rules.fall,
    HealthMonitor.defaults.fall,
    "failed probes in a row (spanning dead-after) that make a live server dead"
  ),
  proxyPort: optionalPort(
    "proxy-port",
    "also proxy TCP connections on this port to the servers (L4, like HAProxy's mode tcp)"
  ),
  health: setting(
    "health",
    rules.health,
    "ping",
    "how servers are probed: the effect-lb Ping, or a bare TCP connect (any TCP service)"
  ),
  maxConnections: setting(
    "max-connections",
    rules.maxConnections,
    Proxy.defaults.maxConnections,
    "proxy: client connections past this many are closed at once"
  ),
  connectTimeout: setting(
    "connect-timeout",
    rules.connectTimeout,
    Proxy.defaults.connectTimeout,
    "proxy: skip a backend that has not accepted in this long"
  ),
  proxyIdleTimeout: setting(
    "proxy-idle-timeout",
    rules.proxyIdleTimeout,
    Proxy.defaults.idleTimeout,
    "proxy: close a connection idle both ways this long"
  ),
  drainTimeout: setting(
    "drain-timeout",
    rules.drainTimeout,
    Proxy.defaults.drainTimeout,
    "proxy: on SIGINT/SIGTERM, let open connections finish this long (0: close them at once)"
  ),
  sendProxy: optional(
    "send-proxy",
    oneOf(["v1", "v2"], "VERSION"),
    "proxy: start each backend connection with a PROXY protocol header carrying the client's address",
    "off"
  ),
  acceptProxy: Options.boolean("accept-proxy").pipe(
    Options.withDescription(
      "proxy: each client connection must start with a PROXY protocol header (v1 or v2) within --connect-timeout; its address is the client's [default: off]"
    )
  ),
  adminPort: optionalPort("admin-port", "also serve the admin HTTP API, /metrics and the live dashboard on this port"),
  adminHost: setting(
    "admin-host",
    rules.host,
    Host.make(Admin.defaults.host),
    "address the admin server binds (it can change the rotation: keep it private)"
  ),
  idleTimeout: setting(
    "idle-timeout",
    rules.idleTimeout,
    ControlPlane.defaults.idleTimeout,
    "close a connection that has not registered after this long without a request"
  ),
  maxServers: setting(
    "max-servers",
    rules.maxServers,
    ServerRegistry.defaultConfig.maxServers,
    "servers known at once, at most: a Register past this is answered Busy"
  ),
  removeDeadAfter: setting(
    "remove-dead-after",
    rules.removeDeadAfter,
    Duration.decode(Reaper.defaults.removeDeadAfter),
    "remove a server that registered itself once it has been dead this long (--server ones stay)"
  ),
  slowStart: duration(
    "slow-start",
    0,
    "a server that becomes live (new, or back from dead) ramps up from 10% to its full weight over this long (0: off)",
    0,
    "1 hour"
  ),
  ejectAfter: withDefault(
    "eject-after",
    integer(0, 1000),
    passiveDefaults.ejectAfter,
    "passive health: eject a server after this many failures in a row seen in traffic (excluded by a client, proxied connect failed or reset; 0: off)"
  ),
  ejectTime: duration(
    "eject-time",
    passiveDefaults.ejectTime,
    "passive health: how long the first ejection lasts; each repeat lasts one more of this (up to 10)",
    "100 millis",
    "1 hour"
  ),
  maxEjectedPercent: withDefault(
    "max-ejected-percent",
    integer(0, 100),
    passiveDefaults.maxEjectedPercent,
    "passive health: never eject more than this percentage of the servers at once"
  ),
  accessLog,
  token
}

type Flags = Command.Command.ParseConfig<typeof options>

const given = <A>(flag: Option.Option<A>, file: A | undefined, fallback: A): A =>
  Option.getOrElse(flag, () => (file === undefined ? fallback : file))

/** The settings in force: a flag given on the command line, else the file's value, else the default. */
export const settingsFrom = (
  flags: Flags,
  file: ConfigFile
): Omit<BalancerOptions, "token"> & { readonly token: Option.Option<string> } => {
  const host = given(flags.host, file.host, Host.make(ControlPlane.defaults.host))
  const proxyPort = Option.orElse(flags.proxyPort, () => Option.fromNullable(file.proxy?.port))
  const adminPort = Option.orElse(flags.adminPort, () => Option.fromNullable(file.admin?.port))
  const accessLog = flags.accessLog || file["access-log"] === true
  return {
    host,
    port: given(flags.port, file.port, ControlPlane.defaults.port),
    strategy: given(flags.strategy, file.strategy, "round-robin"),
    servers: flags.servers.length > 0 ? flags.servers : (file.servers ?? []),
    monitor: {
      ...HealthMonitor.defaults,
      probeInterval: given(flags.probeInterval, file.health?.interval, HealthMonitor.defaults.probeInterval),
      deadAfter: given(flags.deadAfter, file.health?.["dead-after"], HealthMonitor.defaults.deadAfter),
      rise: given(flags.rise, file.health?.rise, HealthMonitor.defaults.rise),
      fall: given(flags.fall, file.health?.fall, HealthMonitor.defaults.fall),
      health: given<"ping" | "tcp">(flags.health, file.health?.check, "ping")
    },
    token: Option.orElse(flags.token, () => Option.fromNullable(file.token)),
    idleTimeout: given(flags.idleTimeout, file["idle-timeout"], ControlPlane.defaults.idleTimeout),
    maxServers: given(flags.maxServers, file["max-servers"], ServerRegistry.defaultConfig.maxServers),
    removeDeadAfter: given(
      flags.removeDeadAfter,
      file["remove-dead-after"],
      Duration.decode(Reaper.defaults.removeDeadAfter)
    ),
    slowStart: flags.slowStart,
    ejectAfter: flags.ejectAfter,
    ejectTime: flags.ejectTime,
    maxEjectedPercent: flags.maxEjectedPercent,
    accessLog,
    admin: Option.match(adminPort, {
      onNone: () => undefined,
      onSome: (port) => ({ host: given(flags.adminHost, file.admin?.host, Host.make(Admin.defaults.host)), port })
    }),
    proxy: Option.match(proxyPort, {
      onNone: () => undefined,
      onSome: (port) => ({
        ...Proxy.defaults,
        host,
        port,
        maxConnections: given(flags.maxConnections, file.proxy?.["max-connections"], Proxy.defaults.maxConnections),
        connectTimeout: given(flags.connectTimeout, file.proxy?.["connect-timeout"], Proxy.defaults.connectTimeout),
        idleTimeout: given(flags.proxyIdleTimeout, file.proxy?.["idle-timeout"], Proxy.defaults.idleTimeout),
        drainTimeout: given(flags.drainTimeout, file.proxy?.["drain-timeout"], Proxy.defaults.drainTimeout),
        accessLog,
        ...Option.match(flags.sendProxy, { onNone: () => ({}), onSome: (sendProxy) => ({ sendProxy }) }),
        acceptProxy: flags.acceptProxy
      })
    })
  }
}

type Settings = ReturnType<typeof settingsFrom>

/** The settings a reload cannot change in place (listening addresses, limits fixed at start), as text. */
const fixedAt = (settings: Settings): Record<string, string> => {
  const millis = (duration: Duration.DurationInput | undefined) =>
    duration === undefined ? "" : String(Duration.toMillis(duration))
  return {
    host: settings.host,
    port: String(settings.port),
    "proxy.port": String(settings.proxy?.port ?? ""),
    "proxy.max-connections": String(settings.proxy?.maxConnections ?? ""),
    "proxy.connect-timeout": millis(settings.proxy?.connectTimeout),
    "proxy.idle-timeout": millis(settings.proxy?.idleTimeout),
    "proxy.drain-timeout": millis(settings.proxy?.drainTimeout),
    "admin.host": settings.admin?.host ?? "",
    "admin.port": String(settings.admin?.port ?? ""),
    token: Option.getOrElse(settings.token, () => ""),
    "idle-timeout": millis(settings.idleTimeout),
    "max-servers": String(settings.maxServers),
    "remove-dead-after": millis(settings.removeDeadAfter),
    "access-log": String(settings.accessLog)
  }
}

/** What a reload applies, from the settings read again; `running` are those the balancer started with. */
export const desiredFrom = (next: Settings, running: Settings, serversFromFile: boolean): Reload.Desired => {
  const before = fixedAt(running)
  const after = fixedAt(next)
  return {
    strategy: next.strategy,
    servers: serversFromFile ? next.servers : undefined,
    monitor: next.monitor,
    restartNeeded: Object.keys(after).filter((key) => after[key] !== before[key])
  }
}

export const balancerCommand = Command.make("balancer", options, (flags) =>
  Effect.gen(function* () {
    const announce = Layer.effectDiscard(
      Effect.gen(function* () {
        const plane = yield* ControlPlane.ControlPlane
        const balancer = yield* Balancer.Balancer
        const registry = yield* ServerRegistry.ServerRegistry
        const servers = yield* registry.list
        const proxy = yield* Effect.serviceOption(Proxy.Proxy)
        if (Option.isSome(proxy))
          yield* Console.log(`effect-lb proxy listening on ${formatEndpoint(proxy.value.address)}`)
        yield* Console.log(
          `effect-lb balancer listening on ${formatEndpoint(plane.address)}, strategy ${yield* balancer.strategy}, ` +
            `${servers.length} server${servers.length === 1 ? "" : "s"}`
        )
        const admin = yield* Effect.serviceOption(Admin.Admin)
        if (Option.isSome(admin))
          yield* Console.log(`effect-lb admin and dashboard on http://${formatEndpoint(admin.value.address)}/`)
      })
    )
    const file = Option.isSome(flags.config) ? yield* loadConfig(flags.config.value) : {}
    const settings = settingsFrom(flags, file)
    const token = yield* checkedToken(settings.token)
    const reload = Option.map(flags.config, (path) =>
      loadConfig(path).pipe(
        Effect.map((next) => desiredFrom(settingsFrom(flags, next), settings, flags.servers.length === 0)),
        Effect.mapError((refused) => new Reload.ReloadFailed({ message: refused.message }))
      )
    )
    const hangups = Layer.scopedDiscard(
      Effect.flatMap(Effect.serviceOption(Reload.Reloader), (reloader) =>
        Option.isSome(reloader) ? reloadingOnHangup(reloader.value.reload) : Effect.void
      )
    )
    const balancer = balancerLayer({
      ...settings,
      token,
      serversOrigin: Option.isSome(flags.config) && flags.servers.length === 0 ? "file" : "configured",
      reload: Option.getOrUndefined(reload)
    })
    yield* Layer.launch(Layer.merge(announce, hangups).pipe(Layer.provide(balancer))).pipe(
      hintBusyPort([{ flag: "--port", port: settings.port, fallback: ControlPlane.defaults.port }]),
      Option.isSome(flags.config) ? (effect) => effect : ignoringHangup
    )
  })
).pipe(Command.withDescription("run the balancer: hands clients the location of a server"))
