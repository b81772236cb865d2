/// Reads canonical encodings from untrusted bytes. Never traps: every failure is a
/// `WireError` naming the field and the offset.
public struct WireReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    private let end: Int
    /// The newest version of a versioned format that this reading accepts: a decoder of a
    /// value whose later versions added kinds refuses those kinds below their version,
    /// exactly as a decoder written before them did (the ledger's rules in force at a
    /// height: `LedgerRules`). `.max`: every version.
    public let formatVersion: UInt32

    public init(_ bytes: [UInt8], formatVersion: UInt32 = .max) {
        self.bytes = bytes
        self.offset = 0
        self.end = bytes.count
        self.formatVersion = formatVersion
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    private mutating func take(_ count: Int, field: String) throws(WireError) -> Range<Int> {
        guard count <= remaining else {
            throw .truncated(field: field, offset: offset, needed: count, available: remaining)
        }
        let range = offset..<(offset + count)
        offset += count
        return range
    }

    mutating func readBigEndian<T: FixedWidthInteger & UnsignedInteger>(
        _: T.Type, field: String
    ) throws(WireError) -> T {
        let range = try take(MemoryLayout<T>.size, field: field)
        var value: T = 0
        for index in range { value = value << 8 | T(bytes[index]) }
        return value
    }

    public mutating func readUInt8(_ field: String) throws(WireError) -> UInt8 {
        let range = try take(1, field: field)
        return bytes[range.lowerBound]
    }

    public mutating func readUInt16(_ field: String) throws(WireError) -> UInt16 {
        try readBigEndian(UInt16.self, field: field)
    }

    public mutating func readUInt32(_ field: String) throws(WireError) -> UInt32 {
        try readBigEndian(UInt32.self, field: field)
    }

    public mutating func readUInt64(_ field: String) throws(WireError) -> UInt64 {
        try readBigEndian(UInt64.self, field: field)
    }

    public mutating func readInt64(_ field: String) throws(WireError) -> Int64 {
        Int64(bitPattern: try readBigEndian(UInt64.self, field: field))
    }

    public mutating func readBool(_ field: String) throws(WireError) -> Bool {
        let at = offset
        switch try readUInt8(field) {
        case 0: return false
        case 1: return true
        case let other:
            throw .invalidValue(field: field, offset: at, reason: "boolean byte \(other) is neither 0 nor 1")
        }
    }

    /// `count` raw bytes of a fixed-size field.
    public mutating func readFixed(_ count: Int, _ field: String) throws(WireError) -> ArraySlice<UInt8> {
        bytes[try take(count, field: field)]
    }

    /// Calls `body` with `count` raw bytes in place, without copying.
    public mutating func withFixed<R>(
        _ count: Int, _ field: String, _ body: (UnsafeRawBufferPointer) -> R
    ) throws(WireError) -> R {
        let range = try take(count, field: field)
        return bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    /// A count prefix, checked against `maximum` before anything is allocated.
    public mutating func readCount(_ field: String, maximum: Int) throws(WireError) -> Int {
        let at = offset
        let count = try readUInt32(field)
        guard Int(count) <= maximum else {
            throw .lengthExceedsMaximum(field: field, offset: at, length: UInt64(count), maximum: maximum)
        }
        return Int(count)
    }

    public mutating func readBytes(_ field: String, maximum: Int) throws(WireError) -> [UInt8] {
        let count = try readCount(field, maximum: maximum)
        return Array(bytes[try take(count, field: field)])
    }

    /// A length-prefixed string; `maximum` counts UTF-8 bytes. Invalid UTF-8 is rejected.
    public mutating func readString(_ field: String, maximumBytes: Int) throws(WireError) -> String {
        let at = offset
        let raw = try readBytes(field, maximum: maximumBytes)
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw .invalidValue(field: field, offset: at, reason: "not valid UTF-8")
        }
        return string
    }

    public mutating func readArray<T: WireDecodable>(
        _ field: String, maximum: Int, of _: T.Type = T.self
    ) throws(WireError) -> [T] {
        let count = try readCount(field, maximum: maximum)
        // Each element takes at least wireSizeMin bytes: a count that cannot fit in what
        // remains is truncation, caught before a hostile count can reserve a huge array.
        // count <= UInt32.max and wireSizeMin is small, so the product cannot overflow.
        let needed = count * T.wireSizeMin
        guard needed <= remaining else {
            throw .truncated(field: field, offset: offset, needed: needed, available: remaining)
        }
        var values: [T] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try T(from: &self)) }
        return values
    }

    public mutating func readOptional<T: WireDecodable>(
        _ field: String, of _: T.Type = T.self
    ) throws(WireError) -> T? {
        try readBool(field) ? try T(from: &self) : nil
    }

    public mutating func read<T: WireDecodable>(_: T.Type = T.self) throws(WireError) -> T {
        try T(from: &self)
    }

    /// Fails unless every byte was consumed: trailing bytes would give a value two encodings.
    public func expectEnd() throws(WireError) {
        guard isAtEnd else { throw .trailingBytes(offset: offset, count: remaining) }
    }
}
