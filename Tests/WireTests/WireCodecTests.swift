// Proves the Wire codec is canonical and safe on hostile input: every value round-trips,
// every accepted byte string re-encodes to itself, and truncated, drip-fed, oversized,
// mutated or trailing input is refused with a typed error naming the field, never a trap.
import Testing
@testable import Wire

/// A message using every primitive the codec offers.
struct Sample: WireCodable, Equatable {
    enum Kind: UInt8 { case attribute = 1, redeem = 2, transfer = 3 }

    var kind: Kind
    var flag: Bool
    var small: UInt8
    var short: UInt16
    var word: UInt32
    var long: UInt64
    var signed: Int64
    var digest: Bytes32
    var signature: Bytes64
    var memo: String
    var blob: [UInt8]
    var amounts: [UInt64]
    var parent: Bytes32?

    static let memoBytesMax = 64
    static let blobBytesMax = 256
    static let amountsCountMax = 16

    func encode(to writer: inout WireWriter) {
        writer.write(kind.rawValue)
        writer.write(flag)
        writer.write(small)
        writer.write(short)
        writer.write(word)
        writer.write(long)
        writer.write(signed)
        writer.write(digest)
        writer.write(signature)
        writer.writeString(memo)
        writer.writeBytes(blob)
        writer.writeArray(amounts)
        writer.writeOptional(parent)
    }

    init(from reader: inout WireReader) throws(WireError) {
        kind = try reader.readKind("sample.kind")
        flag = try reader.readBool("sample.flag")
        small = try reader.readUInt8("sample.small")
        short = try reader.readUInt16("sample.short")
        word = try reader.readUInt32("sample.word")
        long = try reader.readUInt64("sample.long")
        signed = try reader.readInt64("sample.signed")
        digest = try reader.read()
        signature = try reader.read()
        memo = try reader.readString("sample.memo", maximumBytes: Self.memoBytesMax)
        blob = try reader.readBytes("sample.blob", maximum: Self.blobBytesMax)
        amounts = try reader.readArray("sample.amounts", maximum: Self.amountsCountMax)
        parent = try reader.readOptional("sample.parent")
    }

    init(kind: Kind, flag: Bool, small: UInt8, short: UInt16, word: UInt32, long: UInt64, signed: Int64,
         digest: Bytes32, signature: Bytes64, memo: String, blob: [UInt8], amounts: [UInt64], parent: Bytes32?) {
        (self.kind, self.flag, self.small, self.short, self.word, self.long, self.signed) =
            (kind, flag, small, short, word, long, signed)
        (self.digest, self.signature, self.memo, self.blob, self.amounts, self.parent) =
            (digest, signature, memo, blob, amounts, parent)
    }

    static func random(_ rng: inout SplitMix64) -> Sample {
        let memoChoices = ["", "ticket", "Musée Cantini", "tri sélectif ♻︎", String(repeating: "é", count: 32)]
        return Sample(
            kind: [.attribute, .redeem, .transfer][Int(rng.next() % 3)],
            flag: rng.next() & 1 == 1,
            small: UInt8(truncatingIfNeeded: rng.next()),
            short: UInt16(truncatingIfNeeded: rng.next()),
            word: UInt32(truncatingIfNeeded: rng.next()),
            long: rng.next(),
            signed: Int64(bitPattern: rng.next()),
            digest: rng.bytes32(),
            signature: Bytes64(rng.bytes(64))!,
            memo: memoChoices[Int(rng.next() % UInt64(memoChoices.count))],
            blob: rng.bytes(Int(rng.next() % 40)),
            amounts: (0..<Int(rng.next() % 5)).map { _ in rng.next() },
            parent: rng.next() & 1 == 1 ? rng.bytes32() : nil)
    }
}

@Suite struct WireCodecTests {
    @Test func randomValuesRoundTrip() throws {
        var rng = SplitMix64(seed: 1)
        for _ in 0..<2_000 {
            let value = Sample.random(&rng)
            let bytes = value.wireBytes
            #expect(try Sample(wireBytes: bytes) == value)
        }
    }

    @Test func integersAreBigEndianFixedWidth() {
        var writer = WireWriter()
        writer.write(UInt16(0x0102))
        writer.write(UInt32(0x0304_0506))
        writer.write(UInt64(0x0708_090a_0b0c_0d0e))
        writer.write(Int64(-2))
        #expect(writer.bytes == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe])
    }

    @Test func everyStrictPrefixIsTruncated() throws {
        var rng = SplitMix64(seed: 2)
        for _ in 0..<50 {
            let bytes = Sample.random(&rng).wireBytes
            // Drip-feed: the decoder sees the message one byte longer each time.
            for length in 0..<bytes.count {
                #expect(throws: WireError.self) { try Sample(wireBytes: Array(bytes[0..<length])) }
                do {
                    _ = try Sample(wireBytes: Array(bytes[0..<length]))
                } catch {
                    guard case .truncated = error else {
                        Issue.record("prefix of \(length) bytes gave \(error), not truncated")
                        continue
                    }
                }
            }
            #expect(throws: Never.self) { try Sample(wireBytes: bytes) }
        }
    }

    @Test func trailingBytesAreRejected() {
        var rng = SplitMix64(seed: 3)
        let bytes = Sample.random(&rng).wireBytes
        #expect(throws: WireError.trailingBytes(offset: bytes.count, count: 1)) { try Sample(wireBytes: bytes + [0]) }
    }

    @Test func lengthOverMaximumIsRejectedBeforeReading() {
        var writer = WireWriter()
        writer.write(UInt32(Sample.blobBytesMax + 1))
        var reader = WireReader(writer.bytes)
        #expect(throws: WireError.lengthExceedsMaximum(field: "blob", offset: 0, length: UInt64(Sample.blobBytesMax + 1),
                                                       maximum: Sample.blobBytesMax)) {
            try reader.readBytes("blob", maximum: Sample.blobBytesMax)
        }
    }

    @Test func hugeArrayCountCannotForceAllocation() {
        // A count within the maximum but far beyond the bytes present fails as truncation.
        var writer = WireWriter()
        writer.write(UInt32(1_000))
        writer.write(UInt64(7))
        var reader = WireReader(writer.bytes)
        #expect(throws: WireError.truncated(field: "amounts", offset: 4, needed: 8_000, available: 8)) {
            try reader.readArray("amounts", maximum: 1_000_000, of: UInt64.self)
        }
    }

    @Test func nonCanonicalBooleanIsRejected() {
        var reader = WireReader([2])
        #expect(throws: WireError.invalidValue(field: "flag", offset: 0, reason: "boolean byte 2 is neither 0 nor 1")) {
            try reader.readBool("flag")
        }
    }

    @Test func invalidUTF8IsRejected() {
        var writer = WireWriter()
        writer.writeBytes([0x66, 0xc3, 0x28])  // 0xc3 starts a two-byte sequence that 0x28 does not continue
        var reader = WireReader(writer.bytes)
        #expect(throws: WireError.invalidValue(field: "memo", offset: 0, reason: "not valid UTF-8")) {
            try reader.readString("memo", maximumBytes: 64)
        }
    }

    @Test func unknownKindIsRejectedWithItsOffset() {
        var rng = SplitMix64(seed: 4)
        var bytes = Sample.random(&rng).wireBytes
        bytes[0] = 9
        #expect(throws: WireError.unknownKind(field: "sample.kind", offset: 0, raw: 9)) { try Sample(wireBytes: bytes) }
    }

    /// Thousands of random mutations of valid encodings: nothing traps, and whatever still
    /// decodes re-encodes to exactly the bytes it came from (one encoding per value).
    @Test func mutatedInputNeverTrapsAndStaysCanonical() {
        var rng = SplitMix64(seed: 5)
        var accepted = 0, rejected = 0
        for _ in 0..<20_000 {
            var bytes = Sample.random(&rng).wireBytes
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let position = bytes.isEmpty ? 0 : Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 5 {
                case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1 << (rng.next() % 8))
                case 1 where !bytes.isEmpty: bytes[position] = UInt8(truncatingIfNeeded: rng.next())
                case 2: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: position)
                case 3 where !bytes.isEmpty: bytes.remove(at: position)
                default: bytes = Array(bytes.prefix(position))
                }
            }
            do {
                let value = try Sample(wireBytes: bytes)
                #expect(value.wireBytes == bytes)
                accepted += 1
            } catch {
                rejected += 1
            }
        }
        #expect(accepted > 0 && rejected > 0, "the mutations should produce both outcomes")
    }

    @Test func randomBytesNeverTrap() {
        var rng = SplitMix64(seed: 6)
        for _ in 0..<20_000 {
            let bytes = rng.bytes(Int(rng.next() % 200))
            if let value = try? Sample(wireBytes: bytes) { #expect(value.wireBytes == bytes) }
        }
    }
}
