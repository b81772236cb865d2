/// Appends the canonical encoding of values to a byte buffer.
///
/// The format, used for everything Calisson hashes, signs or sends:
/// - integers are fixed width, big-endian; booleans are one byte, 0 or 1;
/// - byte strings, strings (UTF-8) and arrays carry a `UInt32` big-endian count first;
/// - fixed-size values (digests, keys, signatures) are written raw, without a prefix;
/// - optionals are a presence byte (0 or 1) followed by the value when present.
/// There is no varint and no padding, so each value has exactly one encoding.
///
/// The writer does not enforce the maximum lengths: values are built by our own code,
/// and `WireReader` rejects anything over the field's maximum on the way in. Encoders
/// should check their own invariants before writing (see `precondition` uses).
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }

    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: UInt16) { writeBigEndian(value) }
    public mutating func write(_ value: UInt32) { writeBigEndian(value) }
    public mutating func write(_ value: UInt64) { writeBigEndian(value) }
    public mutating func write(_ value: Int64) { writeBigEndian(UInt64(bitPattern: value)) }
    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }

    mutating func writeBigEndian<T: FixedWidthInteger & UnsignedInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// Raw bytes of a fixed-size field; no length prefix.
    public mutating func writeFixed(_ raw: some Collection<UInt8>) {
        bytes.append(contentsOf: raw)
    }

    public mutating func writeFixed(_ raw: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: raw)
    }

    /// A length-prefixed byte string.
    public mutating func writeBytes(_ raw: some Collection<UInt8>) {
        writeCount(raw.count)
        bytes.append(contentsOf: raw)
    }

    /// A length-prefixed UTF-8 string.
    public mutating func writeString(_ string: String) {
        writeBytes(string.utf8)
    }

    /// A count-prefixed array of encodable values.
    public mutating func writeArray<T: WireEncodable>(_ values: some Collection<T>) {
        writeCount(values.count)
        for value in values { value.encode(to: &self) }
    }

    public mutating func writeOptional<T: WireEncodable>(_ value: T?) {
        if let value {
            write(true)
            value.encode(to: &self)
        } else {
            write(false)
        }
    }

    public mutating func write<T: WireEncodable>(_ value: T) {
        value.encode(to: &self)
    }

    private mutating func writeCount(_ count: Int) {
        precondition(count <= Int(UInt32.max), "a wire count must fit in UInt32")
        write(UInt32(count))
    }
}
