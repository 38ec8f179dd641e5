/**
 * The PROXY protocol (HAProxy's specification, versions 1 and 2): the header a proxy puts before a
 * connection's first byte so that the server behind it learns the real client's address. nginx
 * (`proxy_protocol`), HAProxy (`send-proxy`, `accept-proxy`), Envoy (its proxy_protocol listener
 * filter), AWS NLB and most servers speak it.
 *
 * Version 1 is one text line, at most 107 bytes: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`
 * (`TCP6`, or `UNKNOWN` when the sender does not know). Version 2 is binary: a 12-byte signature,
 * a version/command byte (0x21 PROXY, 0x20 LOCAL), a family/protocol byte (0x11 TCP over IPv4,
 * 0x21 TCP over IPv6), a 2-byte length, the addresses and ports, then optional TLVs.
 *
 * Encoding and decoding are pure; `HeaderReader` decodes from chunks as they come off a socket,
 * keeping at most one header's worth of bytes.
 */
import * as Net from "node:net"

export type Version = "v1" | "v2"

export interface Address {
  readonly host: string
  readonly port: number
}

/** What a header says: the connection's real ends, or that the sender did not give them. */
export type Header =
  | {
      readonly _tag: "Proxied"
      readonly family: "TCP4" | "TCP6"
      /** The client. */
      readonly source: Address
      /** The address the client connected to. */
      readonly destination: Address
    }
  /** A v2 LOCAL command, a v1 UNKNOWN, or a family other than TCP: the socket's own addresses stand. */
  | { readonly _tag: "Unknown" }

export type Decoded =
  | { readonly _tag: "Incomplete" }
  | { readonly _tag: "Refused"; readonly reason: string }
  /** `length` is the header's size in bytes: what follows it is the connection's own data. */
  | { readonly _tag: "Decoded"; readonly header: Header; readonly length: number }

/** A v1 line is at most this long, CRLF included. */
export const maxV1Length = 107
/** A v2 header (16 bytes, the addresses and the TLVs) past this is refused: every peer's buffer has a cap. */
export const maxV2Length = 4096

export const v2Signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const v1Prefix = Buffer.from("PROXY ", "latin1")

const unknown: Header = { _tag: "Unknown" }
const incomplete: Decoded = { _tag: "Incomplete" }
const refused = (reason: string): Decoded => ({ _tag: "Refused", reason })

// ---- addresses ----

/** `::ffff:a.b.c.d` as `a.b.c.d`; any other address as it is. */
export const unmapped = (host: string): string =>
  host.startsWith("::ffff:") && Net.isIPv4(host.slice(7)) ? host.slice(7) : host

/**
 * The header for a connection from `source` to `destination`: TCP4 or TCP6 when both are addresses
 * of the same family (IPv4-mapped IPv6 counts as IPv4), else Unknown.
 */
export const headerOf = (source: Address, destination: Address): Header => {
  const from = unmapped(source.host)
  const to = unmapped(destination.host)
  if (Net.isIPv4(from) && Net.isIPv4(to))
    return {
      _tag: "Proxied",
      family: "TCP4",
      source: { host: from, port: source.port },
      destination: { host: to, port: destination.port }
    }
  if (isIPv6(source.host) && isIPv6(destination.host)) return { _tag: "Proxied", family: "TCP6", source, destination }
  return unknown
}

/** An IPv6 address without a zone (`%eth0` has no place in a header). */
const isIPv6 = (host: string) => !host.includes("%") && Net.isIPv6(host)

const ipv4Bytes = (host: string, into: Buffer, at: number) => {
  const parts = host.split(".")
  for (let i = 0; i < 4; i++) into[at + i] = Number(parts[i])
}

/** The 16 bytes of an IPv6 address in text (`::` compression and a dotted IPv4 tail allowed). */
const ipv6Bytes = (host: string, into: Buffer, at: number) => {
  const groups = (text: string): Array<number> => {
    if (text === "") return []
    const out: Array<number> = []
    for (const part of text.split(":")) {
      if (part.includes(".")) {
        const [a = 0, b = 0, c = 0, d = 0] = part.split(".").map(Number)
        out.push((a << 8) | b, (c << 8) | d)
      } else out.push(parseInt(part, 16))
    }
    return out
  }
  const gap = host.indexOf("::")
  const head = groups(gap < 0 ? host : host.slice(0, gap))
  const tail = gap < 0 ? [] : groups(host.slice(gap + 2))
  const all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
  for (let i = 0; i < 8; i++) into.writeUInt16BE(all[i] ?? 0, at + 2 * i)
}

/** IPv6 text as RFC 5952 writes it: lower case, the longest run of two or more zero groups as `::`. */
export const formatIPv6 = (bytes: Buffer, at: number): string => {
  const groups: Array<number> = []
  for (let i = 0; i < 8; i++) groups.push(bytes.readUInt16BE(at + 2 * i))
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff)
    return `::ffff:${bytes[at + 12]}.${bytes[at + 13]}.${bytes[at + 14]}.${bytes[at + 15]}`
  let best = -1
  let bestLength = 1
  for (let i = 0; i < 8;) {
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) [best, bestLength] = [i, j - i]
    i = j === i ? i + 1 : j
  }
  const hex = (list: Array<number>) => list.map((g) => g.toString(16)).join(":")
  return best < 0 ? hex(groups) : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLength))}`
}

// ---- encoding ----

export const encode = (version: Version, header: Header): Buffer =>
  version === "v1" ? encodeV1(header) : encodeV2(header)

export const encodeV1 = (header: Header): Buffer =>
  Buffer.from(
    header._tag === "Unknown"
      ? "PROXY UNKNOWN\r\n"
      : `PROXY ${header.family} ${header.source.host} ${header.destination.host} ${header.source.port} ${header.destination.port}\r\n`,
    "latin1"
  )

/** A v2 header: PROXY with the addresses, or, when they are unknown, PROXY with the UNSPEC family. */
export const encodeV2 = (header: Header): Buffer => {
  const addresses = header._tag === "Unknown" ? 0 : header.family === "TCP4" ? 12 : 36
  const out = Buffer.alloc(16 + addresses)
  v2Signature.copy(out, 0)
  out[12] = 0x21
  out[13] = header._tag === "Unknown" ? 0x00 : header.family === "TCP4" ? 0x11 : 0x21
  out.writeUInt16BE(addresses, 14)
  if (header._tag === "Unknown") return out
  if (header.family === "TCP4") {
    ipv4Bytes(header.source.host, out, 16)
    ipv4Bytes(header.destination.host, out, 20)
  } else {
    ipv6Bytes(header.source.host, out, 16)
    ipv6Bytes(header.destination.host, out, 32)
  }
  out.writeUInt16BE(header.source.port, 16 + addresses - 4)
  out.writeUInt16BE(header.destination.port, 16 + addresses - 2)
  return out
}

// ---- decoding ----

/** Whether `bytes` agrees with `prefix` as far as both go. */
const agrees = (bytes: Buffer, prefix: Buffer) => {
  const n = Math.min(bytes.length, prefix.length)
  return bytes.subarray(0, n).equals(prefix.subarray(0, n))
}

/** A header at the start of `bytes`, version 1 or 2 by its first bytes; Incomplete until all of it is there. */
export const decode = (bytes: Buffer): Decoded => {
  if (bytes.length === 0) return incomplete
  if (bytes[0] === 0x0d) return agrees(bytes, v2Signature) ? decodeV2(bytes) : refused("not a PROXY protocol header")
  if (bytes[0] === 0x50) return agrees(bytes, v1Prefix) ? decodeV1(bytes) : refused("not a PROXY protocol header")
  return refused("not a PROXY protocol header")
}

const port = (text: string | undefined) =>
  text !== undefined && /^[0-9]{1,5}$/.test(text) && Number(text) <= 65535 ? Number(text) : undefined

const decodeV1 = (bytes: Buffer): Decoded => {
  const lf = bytes.subarray(0, maxV1Length).indexOf(0x0a)
  if (lf < 0) return bytes.length >= maxV1Length ? refused("v1 header longer than 107 bytes") : incomplete
  if (bytes[lf - 1] !== 0x0d) return refused("v1 header ending in a bare LF")
  const end = lf - 1
  const line = bytes.toString("latin1", 0, end)
  const length = end + 2
  if (line === "PROXY UNKNOWN" || line.startsWith("PROXY UNKNOWN ")) return { _tag: "Decoded", header: unknown, length }
  const [, family, from, to, sourcePort, destinationPort, ...rest] = line.split(" ")
  if (family !== "TCP4" && family !== "TCP6")
    return refused(`v1 header with an unknown family: ${JSON.stringify(line)}`)
  const valid = family === "TCP4" ? Net.isIPv4 : isIPv6
  const sport = port(sourcePort)
  const dport = port(destinationPort)
  if (from === undefined || to === undefined || !valid(from) || !valid(to) || sport === undefined)
    return refused(`malformed v1 header: ${JSON.stringify(line)}`)
  if (dport === undefined || rest.length > 0) return refused(`malformed v1 header: ${JSON.stringify(line)}`)
  return {
    _tag: "Decoded",
    header: { _tag: "Proxied", family, source: { host: from, port: sport }, destination: { host: to, port: dport } },
    length
  }
}

const decodeV2 = (bytes: Buffer): Decoded => {
  if (bytes.length < 16) return incomplete
  const versionCommand = bytes[12] ?? 0
  const familyProtocol = bytes[13] ?? 0
  const length = 16 + bytes.readUInt16BE(14)
  if (versionCommand >> 4 !== 2) return refused(`v2 header with version ${versionCommand >> 4}`)
  const command = versionCommand & 0x0f
  if (command > 1) return refused(`v2 header with an unknown command ${command}`)
  if (familyProtocol >> 4 > 3 || (familyProtocol & 0x0f) > 2)
    return refused(`v2 header with an unknown family/protocol 0x${familyProtocol.toString(16)}`)
  if (length > maxV2Length) return refused(`v2 header of ${length} bytes, more than ${maxV2Length}`)
  if (bytes.length < length) return incomplete
  // LOCAL (a health check from the sending proxy itself): its address block, whatever it is, is skipped.
  if (command === 0) return { _tag: "Decoded", header: unknown, length }
  const block = addressBlock[familyProtocol >> 4] ?? 0
  if (length - 16 < block) return refused(`v2 header too short for its addresses (${length - 16} bytes)`)
  if (!tlvsFit(bytes, 16 + block, length)) return refused("v2 header with a malformed TLV")
  // UNSPEC, UNIX, or UDP: not a TCP connection's ends, so the socket's addresses stand.
  const addresses = familyProtocol === 0x11 ? 12 : familyProtocol === 0x21 ? 36 : 0
  if (addresses === 0) return { _tag: "Decoded", header: unknown, length }
  const v4 = addresses === 12
  const header: Header = {
    _tag: "Proxied",
    family: v4 ? "TCP4" : "TCP6",
    source: {
      host: v4 ? bytes.subarray(16, 20).join(".") : formatIPv6(bytes, 16),
      port: bytes.readUInt16BE(16 + addresses - 4)
    },
    destination: {
      host: v4 ? bytes.subarray(20, 24).join(".") : formatIPv6(bytes, 32),
      port: bytes.readUInt16BE(16 + addresses - 2)
    }
  }
  return { _tag: "Decoded", header, length }
}

/** The size of the address block by family (the high nibble): UNSPEC, INET, INET6, UNIX. */
const addressBlock: ReadonlyArray<number> = [0, 12, 36, 216]

/** TLVs (type, 2-byte length, value) exactly fill `from` to `to`. */
const tlvsFit = (bytes: Buffer, from: number, to: number) => {
  let at = from
  while (at < to) {
    if (to - at < 3) return false
    at += 3 + bytes.readUInt16BE(at + 1)
  }
  return at === to
}

/**
 * Decodes a header from chunks as they arrive. Keeps only the bytes of a header not yet complete
 * (at most `maxV2Length`); once decoded, `rest` holds what came after it in the last chunk.
 */
export class HeaderReader {
  private buffered: Buffer | undefined = undefined
  /** The connection's own bytes that came with the header's last chunk (empty when none). */
  rest: Buffer = Buffer.alloc(0)

  /** Bytes held, waiting for the rest of the header. */
  get pending(): number {
    return this.buffered?.length ?? 0
  }

  push(chunk: Buffer): Decoded {
    const bytes = this.buffered === undefined ? chunk : Buffer.concat([this.buffered, chunk])
    const decoded = decode(bytes)
    if (decoded._tag === "Incomplete") this.buffered = bytes
    else this.buffered = undefined
    if (decoded._tag === "Decoded") this.rest = bytes.subarray(decoded.length)
    return decoded
  }
}
