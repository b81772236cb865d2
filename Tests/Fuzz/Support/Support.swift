// What every fuzz target shares: the input as bytes, a reader that splits it into the
// pieces a target needs, the canonical-encoding check, and seed writing.
#if canImport(Glibc)
import Glibc
#endif
import Wire

/// The fuzzer's input as an array.
public func fuzzInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
    Array(UnsafeBufferPointer(start: data, count: size))
}

/// A decoded value must re-encode to exactly the bytes it came from (the codec is
/// canonical: one value, one encoding), and those bytes must decode to the same value.
/// A difference is a bug: it stops the fuzzer with the value's type and both encodings.
public func requireCanonical<T: WireCodable & Equatable>(_ value: T, from bytes: [UInt8]) {
    let encoded = value.wireBytes
    guard encoded == bytes else {
        fatalError("\(T.self): \(bytes.count) bytes decoded, re-encoded as \(encoded.count) different bytes\n in  \(Hex.encode(bytes))\n out \(Hex.encode(encoded))")
    }
    guard (try? T(wireBytes: encoded)) == value else { fatalError("\(T.self): re-encoding does not decode to the same value") }
}

/// Decodes `bytes` as `T` and checks the result is canonical; nil when it does not decode.
@discardableResult
public func decodeCanonical<T: WireCodable & Equatable>(_: T.Type, _ bytes: [UInt8]) -> T? {
    guard let value = try? T(wireBytes: bytes) else { return nil }
    requireCanonical(value, from: bytes)
    return value
}

/// Splits an input into length-prefixed pieces (a 2-byte big-endian length, then that
/// many bytes, the last piece taking what is left), so that one input can carry several
/// messages, and a leading selector byte.
public struct Pieces: Sequence, IteratorProtocol {
    private let bytes: [UInt8]
    private var offset: Int

    public init(_ bytes: [UInt8], from offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public mutating func next() -> [UInt8]? {
        guard offset < bytes.count else { return nil }
        guard offset + 2 <= bytes.count else {
            defer { offset = bytes.count }
            return Array(bytes[offset...])
        }
        let length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
        let start = offset + 2
        let end = Swift.min(bytes.count, start + length)
        offset = end
        return Array(bytes[start..<end])
    }

    /// The pieces' encoding: what `Pieces` splits back.
    public static func join(_ pieces: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        for piece in pieces {
            precondition(piece.count <= 0xFFFF)
            out += [UInt8(piece.count >> 8), UInt8(piece.count & 0xFF)] + piece
        }
        return out
    }
}

/// When `CALISSON_FUZZ_SEEDS` names a directory, writes `seeds` there (one file each) and
/// exits: `Tests/Fuzz/run --seeds` makes the committed corpus this way.
public func writeSeedsIfAsked(_ seeds: () -> [[UInt8]]) {
    guard let directory = getenv("CALISSON_FUZZ_SEEDS").map({ String(cString: $0) }) else { return }
    for (index, seed) in seeds().enumerated() {
        let path = "\(directory)/seed-\(index)"
        guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
        _ = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
    }
    exit(0)
}
