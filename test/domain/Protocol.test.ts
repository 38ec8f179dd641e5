import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { BalancerReply, BalancerRequest, FileList, ServerReply, ServerRequest } from "../../src/domain/Protocol.js"
import { EndpointFromString } from "../../src/domain/Server.js"

const roundTrip = <A, I>(schema: Schema.Schema<A, I>, message: A) => {
  const codec = Schema.parseJson(schema)
  const line = Schema.encodeSync(codec)(message)
  const decoded = Schema.decodeUnknownSync(codec)(line)
  // Compare encoded forms: error replies decode to Error instances, whose equality is by message only.
  expect(Schema.encodeSync(codec)(decoded)).toEqual(line)
  expect(line).not.toContain("\n")
}

describe("Protocol", () => {
  it.prop("every balancer request survives encode then decode", [BalancerRequest], ([message]) =>
    roundTrip(BalancerRequest, message)
  )
  it.prop("every balancer reply survives encode then decode", [BalancerReply], ([message]) =>
    roundTrip(BalancerReply, message)
  )
  it.prop("every server request survives encode then decode", [ServerRequest], ([message]) =>
    roundTrip(ServerRequest, message)
  )
  it.prop("every server reply survives encode then decode", [ServerReply], ([message]) =>
    roundTrip(ServerReply, message)
  )

  it("reads the messages exactly as PROTOCOL.md writes them", () => {
    const decode = Schema.decodeUnknownSync(Schema.parseJson(BalancerRequest))
    expect(decode('{"_tag":"Locate","exclude":["127.0.0.1:4003"]}')).toMatchObject({
      _tag: "Locate",
      exclude: [{ host: "127.0.0.1", port: 4003 }]
    })
    expect(
      decode('{"_tag":"Register","server":{"id":"s2","host":"127.0.0.1","port":4002,"weight":3},"token":"t"}')
    ).toMatchObject({ _tag: "Register", server: { id: "s2", port: 4002, weight: 3 }, token: "t" })
    const reply = Schema.decodeUnknownSync(Schema.parseJson(ServerReply))
    expect(reply('{"_tag":"FileList","files":{"notes.txt":"txt","photo.png":"png"}}')).toMatchObject({
      files: { "notes.txt": "txt" }
    })
    expect(reply('{"_tag":"Busy","message":"full"}')).toMatchObject({ _tag: "Busy", message: "full" })
  })

  it("ignores unknown fields and rejects unknown tags", () => {
    const decode = Schema.decodeUnknownEither(Schema.parseJson(ServerRequest))
    expect(decode('{"_tag":"Ping","extra":[1,2]}')._tag).toBe("Right")
    expect(decode('{"_tag":"Format"}')._tag).toBe("Left")
  })

  it("rejects out-of-range values at the edge", () => {
    const decode = Schema.decodeUnknownEither(Schema.parseJson(Schema.Union(ServerRequest, BalancerRequest)))
    for (const bad of [
      '{"_tag":"Compute","seconds":-1}',
      '{"_tag":"Compute","seconds":1.5}',
      '{"_tag":"Compute","seconds":"3"}',
      '{"_tag":"Compute","seconds":1e300}',
      '{"_tag":"Register","server":{"id":"s1","host":"h","port":70000,"weight":1}}',
      '{"_tag":"Register","server":{"id":"s1","host":"h","port":1,"weight":0}}',
      '{"_tag":"Register","server":{"id":"","host":"h","port":1,"weight":1}}',
      '{"_tag":"Load","active":-2}',
      '{"_tag":"Locate","exclude":["nonsense"]}'
    ]) {
      expect(decode(bad)._tag, bad).toBe("Left")
    }
  })

  it("writes and reads IPv6 endpoints without ambiguity", () => {
    const codec = EndpointFromString
    expect(Schema.decodeUnknownSync(codec)("[::1]:4001")).toEqual({ host: "::1", port: 4001 })
    expect(Schema.decodeUnknownSync(codec)("::1:4001")).toEqual({ host: "::1", port: 4001 })
    expect(Schema.encodeSync(codec)(Schema.decodeUnknownSync(codec)("[::1]:4001"))).toBe("[::1]:4001")
  })

  it("a FileList's sizes are optional both ways: an older client ignores them, a newer one does without", () => {
    // FileList as it was before `sizes`.
    const OldFileList = Schema.TaggedStruct("FileList", {
      files: Schema.Record({ key: Schema.String, value: Schema.String }),
      next: Schema.optional(Schema.String)
    })
    const newLine = '{"_tag":"FileList","files":{"a.txt":"txt"},"sizes":{"a.txt":5}}'
    expect(Schema.decodeUnknownSync(Schema.parseJson(OldFileList))(newLine)).toEqual({
      _tag: "FileList",
      files: { "a.txt": "txt" }
    })
    const oldLine = '{"_tag":"FileList","files":{"a.txt":"txt"}}'
    expect(Schema.decodeUnknownSync(Schema.parseJson(ServerReply))(oldLine)).toEqual(
      new FileList({ files: { "a.txt": "txt" } })
    )
    expect(Schema.decodeUnknownSync(Schema.parseJson(ServerReply))(newLine)).toEqual(
      new FileList({ files: { "a.txt": "txt" }, sizes: { "a.txt": 5 } })
    )
  })
})
