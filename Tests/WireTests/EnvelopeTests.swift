// Proves versioned envelopes round-trip and that unknown versions, unknown kinds and
// oversized payloads are refused with typed errors.
import Testing
@testable import Wire

enum TestKind: UInt16, WireMessageKind {
    case ping = 1
    case block = 2
}

@Suite struct EnvelopeTests {
    @Test func roundTrip() throws {
        let envelope = Envelope(version: 1, kind: TestKind.block, message: UInt64(42))
        let decoded = try Envelope<TestKind>.decode(wireBytes: envelope.wireBytes, supportedVersions: 1...1)
        #expect(decoded == envelope)
        #expect(try decoded.decodePayload(as: UInt64.self) == 42)
        #expect(envelope.wireBytes.count == WireLimits.envelopeHeaderSize + 8)
    }

    @Test func unsupportedVersionIsRejected() {
        let bytes = Envelope(version: 3, kind: TestKind.ping, payload: []).wireBytes
        #expect(throws: WireError.unsupportedVersion(field: "envelope.version", offset: 0, version: 3, supported: 1...2)) {
            try Envelope<TestKind>.decode(wireBytes: bytes, supportedVersions: 1...2)
        }
    }

    @Test func unknownKindIsRejected() {
        var writer = WireWriter()
        writer.write(UInt16(1))
        writer.write(UInt16(77))
        writer.writeBytes([UInt8]())
        #expect(throws: WireError.unknownKind(field: "envelope.kind", offset: 2, raw: 77)) {
            try Envelope<TestKind>.decode(wireBytes: writer.bytes, supportedVersions: 1...1)
        }
    }

    @Test func payloadOverLimitIsRejected() {
        let bytes = Envelope(version: 1, kind: TestKind.block, payload: [UInt8](repeating: 0, count: 100)).wireBytes
        #expect(throws: WireError.lengthExceedsMaximum(field: "envelope.payload", offset: 4, length: 100, maximum: 99)) {
            try Envelope<TestKind>.decode(wireBytes: bytes, supportedVersions: 1...1, payloadSizeMax: 99)
        }
    }

    @Test func payloadWithTrailingBytesIsRejected() {
        let envelope = Envelope(version: 1, kind: TestKind.ping, payload: UInt64(1).wireBytes + [0])
        #expect(throws: WireError.trailingBytes(offset: 8, count: 1)) { try envelope.decodePayload(as: UInt64.self) }
    }
}

@Suite struct FixedBytesTests {
    @Test func hexRoundTripAndRejection() {
        var rng = SplitMix64(seed: 7)
        let value = rng.bytes32()
        #expect(Bytes32(hex: value.hex) == value)
        #expect(Bytes32(hex: value.hex.uppercased()) == value)
        #expect(Bytes32(hex: "00") == nil)
        #expect(Bytes32(hex: String(repeating: "zz", count: 32)) == nil)
        #expect(Hex.decode("abc") == nil)
    }

    @Test func orderIsLexicographicByByte() {
        var rng = SplitMix64(seed: 8)
        let values = (0..<500).map { _ in rng.bytes32() }
        let sorted = values.sorted()
        let byBytes = values.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }
        #expect(sorted == byBytes)
    }

    @Test func equalityAndHashUseEveryByte() {
        var a = Bytes32.zero
        a.withUnsafeMutableBytes { $0[31] = 1 }
        #expect(a != .zero)
        #expect(Set([a, .zero]).count == 2)
    }
}
