/**
 * The balancer's settings in force, merged: a flag given on the command line, else the settings
 * file's value, else the default; and, on a reload, what of them can change in place.
 */
import { Duration, type Effect, Option } from "effect"
import { Host } from "../domain/Server.js"
import * as Admin from "../services/balancer/admin/AdminConfig.js"
import * as ControlPlane from "../services/balancer/ControlPlane.js"
import * as HealthMonitor from "../services/balancer/HealthMonitor.js"
import * as Proxy from "../services/balancer/Proxy.js"
import * as Reaper from "../services/balancer/Reaper.js"
import type * as Reload from "../services/balancer/Reload.js"
import * as ServerRegistry from "../services/balancer/ServerRegistry.js"
import * as RedisStore from "../services/balancer/shared/RedisStore.js"
import type { StrategyName } from "../services/balancer/strategies/Catalog.js"
import type { ListenerTls } from "../services/wire/Tls.js"
import type { ConfigFile, rules } from "./configFile.js"
import type { Rule, ServerAddressFromText, TlsListener } from "./options.js"

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
  /** What the settings say of TLS (the command makes the listeners' TLS from it). */
  readonly tls?: TlsSettings
  /** TLS on the balancer port, with its certificate (made from `tls`). */
  readonly balancerTls?: ListenerTls | undefined
  /** With `--registry`: the shared registry's store, and this balancer's id in it. */
  readonly registry?: { readonly store: RedisStore.RedisStoreConfig; readonly balancerId: string } | undefined
}

/** TLS as the settings give it: the certificate, where it is served, and TLS to the servers. */
export interface TlsSettings {
  readonly cert: string | undefined
  readonly key: string | undefined
  readonly listeners: ReadonlyArray<TlsListener>
  /** The configured servers' ports speak TLS (`--backend-tls`). */
  readonly backend: boolean
  /** The CAs their certificates are checked against (`--backend-ca`); none: the system's. */
  readonly backendCa: string | undefined
}

/** The shared registry as the settings give it (the command adds the password, from the environment). */
export interface RegistrySettings {
  readonly target: RedisStore.RegistryTarget
  readonly namespace: string
  /** `--balancer-id`; none: the command's default (this host and the balancer port). */
  readonly balancerId: string | undefined
}

export const allTlsListeners: ReadonlyArray<TlsListener> = ["balancer", "proxy"]

/**
 * Passive health's defaults on the command line: off, as HAProxy's `observe` and Envoy's outlier
 * detection are until configured (so a server back from a restart returns at its first answered
 * probe, as it always has); `--eject-after 5` turns on Envoy's usual 5 in a row, 30 s, 50%.
 */
export const passiveDefaults = { ejectAfter: 0, ejectTime: Duration.seconds(30), maxEjectedPercent: 50 }

/** Slow start and passive health as the registry takes them (at start, and on a reload). */
export const tunablesOf = (
  options: Pick<BalancerOptions, "slowStart" | "ejectAfter" | "ejectTime" | "maxEjectedPercent">
): ServerRegistry.Tunables => ({
  slowStartMs: options.slowStart === undefined ? 0 : Duration.toMillis(options.slowStart),
  ejectAfter: options.ejectAfter ?? passiveDefaults.ejectAfter,
  ejectTimeMs: Duration.toMillis(options.ejectTime ?? passiveDefaults.ejectTime),
  maxEjectedPercent: options.maxEjectedPercent ?? passiveDefaults.maxEjectedPercent
})

/** A flag left out (`None`) lets the file, else the default, decide. */
type Given<R> = Option.Option<R extends Rule<infer A> ? A : never>

/** The balancer's flags as parsed (balancer.ts's options). */
export interface BalancerFlags {
  readonly host: Given<typeof rules.host>
  readonly port: Given<typeof rules.port>
  readonly strategy: Given<typeof rules.strategy>
  readonly servers: ReadonlyArray<typeof ServerAddressFromText.Type>
  readonly probeInterval: Given<typeof rules.probeInterval>
  readonly deadAfter: Given<typeof rules.deadAfter>
  readonly rise: Given<typeof rules.rise>
  readonly fall: Given<typeof rules.fall>
  readonly health: Given<typeof rules.health>
  readonly proxyPort: Option.Option<number>
  readonly maxConnections: Given<typeof rules.maxConnections>
  readonly connectTimeout: Given<typeof rules.connectTimeout>
  readonly proxyIdleTimeout: Given<typeof rules.proxyIdleTimeout>
  readonly drainTimeout: Given<typeof rules.drainTimeout>
  readonly sendProxy: Given<typeof rules.sendProxy>
  readonly acceptProxy: boolean
  readonly adminPort: Option.Option<number>
  readonly adminHost: Given<typeof rules.host>
  readonly idleTimeout: Given<typeof rules.idleTimeout>
  readonly maxServers: Given<typeof rules.maxServers>
  readonly removeDeadAfter: Given<typeof rules.removeDeadAfter>
  readonly slowStart: Given<typeof rules.slowStart>
  readonly ejectAfter: Given<typeof rules.ejectAfter>
  readonly ejectTime: Given<typeof rules.ejectTime>
  readonly maxEjectedPercent: Given<typeof rules.maxEjectedPercent>
  readonly accessLog: boolean
  readonly token: Option.Option<string>
  readonly tlsCert: Option.Option<string>
  readonly tlsKey: Option.Option<string>
  readonly tlsListeners: Given<typeof rules.tlsListeners>
  readonly backendTls: boolean
  readonly backendCa: Option.Option<string>
  readonly registry: Given<typeof rules.registry>
  readonly registryNamespace: Given<typeof rules.registryNamespace>
  readonly balancerId: Given<typeof rules.balancerId>
}

const given = <A>(flag: Option.Option<A>, file: A | undefined, fallback: A): A =>
  Option.getOrElse(flag, () => (file === undefined ? fallback : file))

/** The shared registry, if a flag or the file names one. */
const registryFrom = (flags: BalancerFlags, file: ConfigFile): RegistrySettings | undefined =>
  Option.getOrUndefined(
    Option.map(
      Option.orElse(flags.registry, () => Option.fromNullable(file.registry?.url)),
      (target) => ({
        target,
        namespace: given(flags.registryNamespace, file.registry?.namespace, RedisStore.defaultNamespace),
        balancerId: Option.getOrUndefined(
          Option.orElse(flags.balancerId, () => Option.fromNullable(file.registry?.["balancer-id"]))
        )
      })
    )
  )

/** The settings in force: a flag given on the command line, else the file's value, else the default. */
export const settingsFrom = (
  flags: BalancerFlags,
  file: ConfigFile
): Omit<BalancerOptions, "token" | "tls" | "registry"> & {
  readonly token: Option.Option<string>
  readonly tls: TlsSettings
  readonly registry: RegistrySettings | undefined
} => {
  const host = given(flags.host, file.host, Host.make(ControlPlane.defaults.host))
  const proxyPort = Option.orElse(flags.proxyPort, () => Option.fromNullable(file.proxy?.port))
  const adminPort = Option.orElse(flags.adminPort, () => Option.fromNullable(file.admin?.port))
  const accessLog = flags.accessLog || file["access-log"] === true
  const passive = file["passive-health"]
  const sendProxy = given(flags.sendProxy, file.proxy?.["send-proxy"], "off")
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
    slowStart: given(flags.slowStart, file["slow-start"], Duration.zero),
    ejectAfter: given(flags.ejectAfter, passive?.["eject-after"], passiveDefaults.ejectAfter),
    ejectTime: given(flags.ejectTime, passive?.["eject-time"], passiveDefaults.ejectTime),
    maxEjectedPercent: given(
      flags.maxEjectedPercent,
      passive?.["max-ejected-percent"],
      passiveDefaults.maxEjectedPercent
    ),
    accessLog,
    registry: registryFrom(flags, file),
    tls: {
      cert: Option.getOrUndefined(Option.orElse(flags.tlsCert, () => Option.fromNullable(file.tls?.cert))),
      key: Option.getOrUndefined(Option.orElse(flags.tlsKey, () => Option.fromNullable(file.tls?.key))),
      listeners: given(flags.tlsListeners, file.tls?.listeners, allTlsListeners),
      backend: flags.backendTls || file.tls?.backend === true,
      backendCa: Option.getOrUndefined(
        Option.orElse(flags.backendCa, () => Option.fromNullable(file.tls?.["backend-ca"]))
      )
    },
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
        ...(sendProxy === "off" ? {} : { sendProxy }),
        acceptProxy: flags.acceptProxy || file.proxy?.["accept-proxy"] === true
      })
    })
  }
}

export type Settings = ReturnType<typeof settingsFrom>

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
    "access-log": String(settings.accessLog),
    // Where TLS is served, and whether the configured servers speak it (the files are read again instead).
    "tls.listeners": settings.tls.cert === undefined ? "" : settings.tls.listeners.join(","),
    "tls.backend": String(settings.tls.backend),
    "registry.url": settings.registry === undefined ? "" : RedisStore.formatTarget(settings.registry.target),
    "registry.namespace": settings.registry?.namespace ?? "",
    "registry.balancer-id": settings.registry?.balancerId ?? ""
  }
}

/** What a reload applies, from the settings read again; `running` are those the balancer started with. */
export const desiredFrom = (next: Settings, running: Settings, serversFromFile: boolean): Reload.Desired => {
  const before = fixedAt(running)
  const after = fixedAt(next)
  return {
    strategy: next.strategy,
    servers: serversFromFile
      ? next.servers.map((server) => (next.tls.backend ? { ...server, tls: true } : server))
      : undefined,
    monitor: next.monitor,
    tunables: tunablesOf(next),
    proxyProtocol: {
      ...(next.proxy?.sendProxy === undefined ? {} : { sendProxy: next.proxy.sendProxy }),
      acceptProxy: next.proxy?.acceptProxy === true
    },
    restartNeeded: Object.keys(after).filter((key) => after[key] !== before[key])
  }
}
