/// 32 bytes held inline (no heap allocation): digests, public keys, commitments.
/// Ordered lexicographically by byte, which is the order used wherever Calisson sorts keys.
public struct Bytes32: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    // Raw memory order: byte i of the value is byte i of this tuple's storage.
    @usableFromInline var storage: (UInt64, UInt64, UInt64, UInt64)

    public static let byteCount = 32
    public static let zero = Bytes32(storage: (0, 0, 0, 0))

    @inlinable init(storage: (UInt64, UInt64, UInt64, UInt64)) { self.storage = storage }

    /// Exactly 32 bytes, or nil.
    /// Inlinable, so that callers get it specialized: one copy from contiguous bytes
    /// (arrays, slices of them) rather than a generic walk.
    @inlinable public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        var value = Bytes32.zero
        let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
            value.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(source)) }
        }
        if copied == nil {
            value.withUnsafeMutableBytes { buffer in
                for (index, byte) in bytes.enumerated() { buffer[index] = byte }
            }
        }
        self = value
    }

    /// Fills the 32 bytes through a pointer, e.g. from a C function's output.
    @inlinable public static func filling(_ body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Bytes32 {
        var value = Bytes32.zero
        try value.withUnsafeMutableBytes(body)
        return value
    }

    @inlinable public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage, body)
    }

    @inlinable public mutating func withUnsafeMutableBytes<R>(
        _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) rethrows -> R {
        try Swift.withUnsafeMutableBytes(of: &storage, body)
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    @inlinable public static func == (lhs: Bytes32, rhs: Bytes32) -> Bool {
        lhs.storage.0 == rhs.storage.0 && lhs.storage.1 == rhs.storage.1
            && lhs.storage.2 == rhs.storage.2 && lhs.storage.3 == rhs.storage.3
    }

    /// All 32 bytes, as four words (inlined: `combine(bytes:)` is a call through the
    /// standard library's byte buffering). Every byte counts: account ids and evidence are
    /// chosen by clients, and a hash of fewer bytes would let them collide on purpose.
    @inlinable public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.0)
        hasher.combine(storage.1)
        hasher.combine(storage.2)
        hasher.combine(storage.3)
    }

    @inlinable public static func < (lhs: Bytes32, rhs: Bytes32) -> Bool {
        // Big-endian reading of each word compares bytes in order.
        let l = (lhs.storage.0.bigEndian, lhs.storage.1.bigEndian, lhs.storage.2.bigEndian, lhs.storage.3.bigEndian)
        let r = (rhs.storage.0.bigEndian, rhs.storage.1.bigEndian, rhs.storage.2.bigEndian, rhs.storage.3.bigEndian)
        return l < r
    }

    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }

    public init?(hex: String) {
        guard let raw = Hex.decode(hex) else { return nil }
        self.init(raw)
    }

    public func encode(to writer: inout WireWriter) {
        withUnsafeBytes { writer.writeFixed($0) }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let raw = try reader.readFixed(Self.byteCount, "Bytes32")
        self = .zero
        withUnsafeMutableBytes { target in raw.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    public static var wireSizeMin: Int { byteCount }
}

/// 64 bytes held inline: Ed25519 signatures.
public struct Bytes64: Hashable, Sendable, WireCodable, CustomStringConvertible {
    @usableFromInline var low: Bytes32
    @usableFromInline var high: Bytes32

    public static let byteCount = 64
    public static let zero = Bytes64(low: .zero, high: .zero)

    @inlinable init(low: Bytes32, high: Bytes32) {
        self.low = low
        self.high = high
    }

    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        let array = Array(bytes)
        guard let low = Bytes32(array[0..<32]), let high = Bytes32(array[32..<64]) else { return nil }
        self.init(low: low, high: high)
    }

    @inlinable public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: self, body)
    }

    @inlinable public static func filling(_ body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Bytes64 {
        var value = Bytes64.zero
        try Swift.withUnsafeMutableBytes(of: &value, body)
        return value
    }

    public var bytes: [UInt8] { low.bytes + high.bytes }
    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }

    public init?(hex: String) {
        guard let raw = Hex.decode(hex) else { return nil }
        self.init(raw)
    }

    public func encode(to writer: inout WireWriter) {
        low.encode(to: &writer)
        high.encode(to: &writer)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        low = try Bytes32(from: &reader)
        high = try Bytes32(from: &reader)
    }

    public static var wireSizeMin: Int { byteCount }
}

/// Lower-case hexadecimal, for logs, CLIs and test vectors.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes an even number of hex digits (either case); nil for anything else.
    public static func decode(_ string: String) -> [UInt8]? {
        let utf8 = Array(string.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
