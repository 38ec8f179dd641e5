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
import * as ServerRegistry from "../services/balancer/ServerRegistry.js"
import { names, Strategies, type StrategyName } from "../services/balancer/strategies/Catalog.js"
import * as Wire from "../services/wire/Wire.js"
import { ignoringHangup } from "./hangup.js"
import { hintBusyPort } from "./listen.js"
import { version } from "./version.js"
import {
  accessLog,
  checked,
  checkedToken,
  duration,
  fall,
  host,
  hostRule,
  integer,
  oneOf,
  optional,
  optionalPort,
  port,
  positiveInt,
  rise,
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
        registry.add({ ...server, id: ServerId.make(formatEndpoint(server)) }, "configured")
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
  // The admin server is built after the listeners, so its status can say where they listen.
  return admin.pipe(
    Layer.provideMerge(Layer.mergeAll(plane, proxy)),
    Layer.provideMerge(
      Layer.mergeAll(HealthMonitor.layer(options.monitor), seed, reaper).pipe(Layer.provideMerge(core))
    ),
    Layer.provideMerge(Wire.layer)
  )
}

export const strategyRule = oneOf(names)

export const strategyOption = withDefault("strategy", strategyRule, "round-robin", "how servers are picked")

const options = {
  port: port(ControlPlane.defaults.port, "port of the balancer (0 picks a free port)"),
  host,
  strategy: strategyOption,
  servers: Options.text("server").pipe(
    Options.withPseudoName(serverRule.placeholder),
    Options.repeated,
    Options.mapEffect((texts) => Effect.forEach(texts, checked("--server", serverRule))),
    Options.withDescription(
      `a backend server, repeatable; servers may also register themselves [default: none; ${serverRule.says}]`
    )
  ),
  probeInterval: duration(
    "probe-interval",
    HealthMonitor.defaults.probeInterval,
    "how often each server is probed",
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
  proxyPort: optionalPort(
    "proxy-port",
    "also proxy TCP connections on this port to the servers (L4, like HAProxy's mode tcp)"
  ),
  health: withDefault(
    "health",
    oneOf(["ping", "tcp"], "KIND"),
    "ping",
    "how servers are probed: the effect-lb Ping, or a bare TCP connect (any TCP service)"
  ),
  maxConnections: positiveInt(
    "max-connections",
    Proxy.defaults.maxConnections,
    1_000_000,
    "proxy: client connections past this many are closed at once"
  ),
  connectTimeout: duration(
    "connect-timeout",
    Proxy.defaults.connectTimeout,
    "proxy: skip a backend that has not accepted in this long",
    "10 millis",
    "10 minutes"
  ),
  proxyIdleTimeout: duration(
    "proxy-idle-timeout",
    Proxy.defaults.idleTimeout,
    "proxy: close a connection idle both ways this long",
    "100 millis"
  ),
  drainTimeout: duration(
    "drain-timeout",
    Proxy.defaults.drainTimeout,
    "proxy: on SIGINT/SIGTERM, let open connections finish this long (0: close them at once)",
    0,
    "1 hour"
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
  adminHost: withDefault(
    "admin-host",
    hostRule,
    Host.make(Admin.defaults.host),
    "address the admin server binds (it can change the rotation: keep it private)"
  ),
  idleTimeout: duration(
    "idle-timeout",
    ControlPlane.defaults.idleTimeout,
    "close a connection that has not registered after this long without a request",
    "100 millis"
  ),
  maxServers: positiveInt(
    "max-servers",
    ServerRegistry.defaultConfig.maxServers,
    1_000_000,
    "servers known at once, at most: a Register past this is answered Busy"
  ),
  removeDeadAfter: duration(
    "remove-dead-after",
    Reaper.defaults.removeDeadAfter,
    "remove a server that registered itself once it has been dead this long (--server ones stay)",
    "1 second",
    "168 hours"
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

export const balancerCommand = Command.make("balancer", options, (flags) =>
  Effect.gen(function* () {
    const token = yield* checkedToken(flags.token)
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
    yield* Layer.launch(
      announce.pipe(
        Layer.provide(
          balancerLayer({
            host: flags.host,
            port: flags.port,
            strategy: flags.strategy,
            servers: flags.servers,
            monitor: {
              ...HealthMonitor.defaults,
              probeInterval: flags.probeInterval,
              deadAfter: flags.deadAfter,
              rise: flags.rise,
              fall: flags.fall,
              health: flags.health
            },
            token,
            idleTimeout: flags.idleTimeout,
            maxServers: flags.maxServers,
            removeDeadAfter: flags.removeDeadAfter,
            slowStart: flags.slowStart,
            ejectAfter: flags.ejectAfter,
            ejectTime: flags.ejectTime,
            maxEjectedPercent: flags.maxEjectedPercent,
            accessLog: flags.accessLog,
            admin: Option.match(flags.adminPort, {
              onNone: () => undefined,
              onSome: (adminPort) => ({ host: flags.adminHost, port: adminPort })
            }),
            proxy: Option.match(flags.proxyPort, {
              onNone: () => undefined,
              onSome: (proxyPort) => ({
                ...Proxy.defaults,
                host: flags.host,
                port: proxyPort,
                maxConnections: flags.maxConnections,
                connectTimeout: flags.connectTimeout,
                idleTimeout: flags.proxyIdleTimeout,
                drainTimeout: flags.drainTimeout,
                accessLog: flags.accessLog,
                ...Option.match(flags.sendProxy, { onNone: () => ({}), onSome: (sendProxy) => ({ sendProxy }) }),
                acceptProxy: flags.acceptProxy
              })
            })
          })
        )
      )
    ).pipe(hintBusyPort([{ flag: "--port", port: flags.port, fallback: ControlPlane.defaults.port }]), ignoringHangup)
  })
).pipe(Command.withDescription("run the balancer: hands clients the location of a server"))
