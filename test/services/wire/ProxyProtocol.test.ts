import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as PP from "../../../src/services/wire/ProxyProtocol.js"

const ipv4 = FastCheck.tuple(FastCheck.nat(255), FastCheck.nat(255), FastCheck.nat(255), FastCheck.nat(255)).map(
  (parts) => parts.join(".")
)
/** Any IPv6 address, as RFC 5952 text (what the decoder gives back). */
const ipv6 = FastCheck.array(FastCheck.oneof(FastCheck.constant(0), FastCheck.nat(0xffff)), {
  minLength: 8,
  maxLength: 8
}).map((groups) => {
  const bytes = Buffer.alloc(16)
  groups.forEach((group, i) => bytes.writeUInt16BE(group, 2 * i))
  return PP.formatIPv6(bytes, 0)
})
const port = FastCheck.nat(65535)
const header: FastCheck.Arbitrary<PP.Header> = FastCheck.oneof(
  FastCheck.tuple(ipv4, ipv4, port, port).map(([from, to, sport, dport]) =>
    PP.headerOf({ host: from, port: sport }, { host: to, port: dport })
  ),
  FastCheck.tuple(ipv6, ipv6, port, port).map(([from, to, sport, dport]) =>
    PP.headerOf({ host: from, port: sport }, { host: to, port: dport })
  )
)
const version = FastCheck.constantFrom<PP.Version>("v1", "v2")

/** `bytes` cut at the given places. */
const split = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => {
  const at = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Buffer> = []
  let from = 0
  for (const cut of [...at, bytes.length]) {
    chunks.push(bytes.subarray(from, cut))
    from = cut
  }
  return chunks
}

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ""), "hex")
const v2 = (rest: string) => Buffer.concat([PP.v2Signature, hex(rest)])

describe("ProxyProtocol", () => {
  it.prop("decodes what it encodes, for any IPv4 or IPv6 addresses and ports", [version, header], ([v, h]) => {
    const bytes = PP.encode(v, h)
    expect(PP.decode(bytes)).toEqual({ _tag: "Decoded", header: h, length: bytes.length })
    if (v === "v1") expect(bytes.length).toBeLessThanOrEqual(PP.maxV1Length)
  })

  it.prop(
    "any split of a header and the data after it decodes the same, the data left intact",
    [version, header, FastCheck.uint8Array({ maxLength: 64 }), FastCheck.array(FastCheck.nat(), { maxLength: 8 })],
    ([v, h, data, cuts]) => {
      const encoded = PP.encode(v, h)
      const reader = new PP.HeaderReader()
      let decoded: PP.Decoded = { _tag: "Incomplete" }
      const chunks = split(Buffer.concat([encoded, data]), cuts)
      let i = 0
      for (; i < chunks.length && decoded._tag === "Incomplete"; i++)
        decoded = reader.push(chunks[i] ?? Buffer.alloc(0))
      expect(decoded).toEqual({ _tag: "Decoded", header: h, length: encoded.length })
      expect(reader.pending).toBe(0)
      const after = Buffer.concat([reader.rest, ...chunks.slice(i)])
      expect(after).toEqual(Buffer.from(data))
    }
  )

  it.prop(
    "random bytes never throw, are refused unless they could still become a header, and are never held past the cap",
    [FastCheck.uint8Array({ minLength: 1, maxLength: 300 }), FastCheck.array(FastCheck.nat(), { maxLength: 8 })],
    ([garbage, cuts]) => {
      const reader = new PP.HeaderReader()
      for (const chunk of split(Buffer.from(garbage), cuts)) {
        const decoded = reader.push(chunk)
        expect(reader.pending).toBeLessThanOrEqual(PP.maxV2Length)
        if (decoded._tag !== "Incomplete") {
          expect(decoded._tag).toBe("Refused")
          return
        }
      }
      // Still waiting: only while every byte so far agrees with a signature.
      const first = garbage[0]
      expect(first === 0x0d || first === 0x50).toBe(true)
    }
  )

  it.prop(
    "a v1 line without its CRLF is refused at 107 bytes, not held",
    [FastCheck.string({ maxLength: 120 })],
    ([text]) => {
      const bytes = Buffer.from(`PROXY TCP4 ${text}`.padEnd(PP.maxV1Length, " "), "latin1")
      expect(PP.decode(bytes)._tag).toBe("Refused")
    }
  )

  describe("byte-exact against the specification", () => {
    it("v1 TCP4, TCP6 and UNKNOWN", () => {
      const tcp4 = PP.headerOf({ host: "192.168.0.1", port: 56324 }, { host: "192.168.0.11", port: 443 })
      expect(PP.encodeV1(tcp4).toString("latin1")).toBe("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
      const tcp6 = PP.headerOf({ host: "2001:db8::1", port: 1 }, { host: "::1", port: 2 })
      expect(PP.encodeV1(tcp6).toString("latin1")).toBe("PROXY TCP6 2001:db8::1 ::1 1 2\r\n")
      expect(PP.encodeV1({ _tag: "Unknown" }).toString("latin1")).toBe("PROXY UNKNOWN\r\n")
      // The worst case the specification gives: exactly 104 bytes, under the 107 cap.
      const max = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
      const worst = Buffer.from(`PROXY TCP6 ${max} ${max} 65535 65535\r\n`, "latin1")
      expect(worst.length).toBe(104)
      expect(PP.decode(worst)).toMatchObject({ _tag: "Decoded", length: 104, header: { family: "TCP6" } })
      expect(PP.decode(Buffer.from("PROXY UNKNOWN ffff::1 ::1 1 2\r\nGET", "latin1"))).toEqual({
        _tag: "Decoded",
        header: { _tag: "Unknown" },
        length: 31
      })
    })

    it("v2 TCP4 and TCP6, PROXY and LOCAL", () => {
      const tcp4 = PP.headerOf({ host: "192.168.0.1", port: 56324 }, { host: "192.168.0.11", port: 443 })
      expect(PP.encodeV2(tcp4)).toEqual(v2("21 11 000c  c0a80001 c0a8000b  dc04 01bb"))
      const tcp6 = PP.headerOf({ host: "2001:db8::1", port: 1 }, { host: "::ffff:10.0.0.1", port: 2 })
      // Mixed: an IPv4-mapped destination with an IPv6 source stays TCP6.
      expect(PP.encodeV2(tcp6)).toEqual(
        v2("21 21 0024  20010db8000000000000000000000001 00000000000000000000ffff0a000001  0001 0002")
      )
      expect(PP.encodeV2({ _tag: "Unknown" })).toEqual(v2("21 00 0000"))
      expect(PP.decode(v2("20 00 0000"))).toEqual({ _tag: "Decoded", header: { _tag: "Unknown" }, length: 16 })
      // LOCAL with addresses: they are ignored.
      expect(PP.decode(v2("20 11 000c  c0a80001 c0a8000b  dc04 01bb"))).toMatchObject({ header: { _tag: "Unknown" } })
    })

    it("v2 UNIX and UDP headers are accepted with the socket's addresses standing, their TLVs checked", () => {
      const unix = v2(`21 31 00dc ${"61".repeat(108)} ${"62".repeat(108)} 04 0001 00`)
      expect(PP.decode(unix)).toEqual({ _tag: "Decoded", header: { _tag: "Unknown" }, length: 16 + 220 })
      const udp = v2("21 12 000c  c0a80001 c0a8000b  dc04 01bb")
      expect(PP.decode(udp)).toEqual({ _tag: "Decoded", header: { _tag: "Unknown" }, length: 28 })
      expect(PP.decode(v2(`21 31 00da ${"61".repeat(216)} 04 00`))._tag).toBe("Refused")
    })

    it("v2 TLVs are skipped, and the bytes after them are the connection's", () => {
      const bytes = v2("21 11 0013  7f000001 7f000002  0001 0002  04 0004 deadbeef  47")
      expect(PP.decode(bytes)).toEqual({
        _tag: "Decoded",
        header: {
          _tag: "Proxied",
          family: "TCP4",
          source: { host: "127.0.0.1", port: 1 },
          destination: { host: "127.0.0.2", port: 2 }
        },
        length: 35
      })
    })

    it("IPv4-mapped ends on both sides are sent as TCP4", () => {
      const header = PP.headerOf({ host: "::ffff:127.0.0.1", port: 5 }, { host: "::ffff:127.0.0.1", port: 6 })
      expect(PP.encodeV1(header).toString("latin1")).toBe("PROXY TCP4 127.0.0.1 127.0.0.1 5 6\r\n")
    })
  })

  describe("refuses", () => {
    const cases: ReadonlyArray<[string, Buffer]> = [
      ["plain data", Buffer.from("GET / HTTP/1.1\r\n\r\n")],
      ["a v1 family it does not know", Buffer.from("PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n")],
      ["v1 with an IPv6 address under TCP4", Buffer.from("PROXY TCP4 ::1 ::1 1 2\r\n")],
      ["v1 with a port past 65535", Buffer.from("PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n")],
      ["v1 with a field too many", Buffer.from("PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n")],
      ["v1 with a bare LF", Buffer.from("PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n")],
      ["v1 without CRLF in 107 bytes", Buffer.from("PROXY TCP4 " + "1".repeat(100))],
      ["v2 version 1", v2("11 11 000c  c0a80001 c0a8000b  dc04 01bb")],
      ["v2 command 2", v2("22 11 000c  c0a80001 c0a8000b  dc04 01bb")],
      ["v2 family 4", v2("21 41 0000")],
      ["v2 too short for its addresses", v2("21 21 000c  c0a80001 c0a8000b  dc04 01bb")],
      ["v2 with a TLV running past the header", v2("21 11 000f  7f000001 7f000002  0001 0002  04 0009 de")],
      ["v2 longer than the cap", v2("21 11 ffff")],
      ["a broken v2 signature", Buffer.from("\r\n\r\nX")]
    ]
    for (const [name, bytes] of cases)
      it(name, () => {
        expect(PP.decode(bytes)._tag).toBe("Refused")
      })

    it("and waits, without refusing, while the bytes may still become a header", () => {
      expect(PP.decode(Buffer.from("PROX"))._tag).toBe("Incomplete")
      expect(PP.decode(v2("21 11 000c c0a8"))._tag).toBe("Incomplete")
      expect(PP.decode(PP.v2Signature.subarray(0, 5))._tag).toBe("Incomplete")
    })
  })
})
