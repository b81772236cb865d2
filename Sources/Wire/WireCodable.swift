/// A value with one canonical byte encoding.
public protocol WireEncodable {
    func encode(to writer: inout WireWriter)
}

/// A value decodable from untrusted bytes; `init(from:)` must accept exactly the
/// encodings that `encode(to:)` produces.
public protocol WireDecodable {
    init(from reader: inout WireReader) throws(WireError)
    /// The fewest bytes one encoded value can take; lets array decoding reject a
    /// count that cannot fit in what remains before allocating.
    static var wireSizeMin: Int { get }
}

extension WireDecodable {
    public static var wireSizeMin: Int { 1 }
}

public typealias WireCodable = WireEncodable & WireDecodable

extension WireEncodable {
    /// The canonical encoding of this value.
    public var wireBytes: [UInt8] {
        var writer = WireWriter()
        encode(to: &writer)
        return writer.bytes
    }
}

extension WireDecodable {
    /// Decodes a whole byte string: trailing bytes are an error.
    public init(wireBytes bytes: [UInt8]) throws(WireError) {
        var reader = WireReader(bytes)
        self = try Self(from: &reader)
        try reader.expectEnd()
    }

    /// Decodes a whole byte string as a reader of `formatVersion` would (`WireReader.formatVersion`).
    public init(wireBytes bytes: [UInt8], formatVersion: UInt32) throws(WireError) {
        var reader = WireReader(bytes, formatVersion: formatVersion)
        self = try Self(from: &reader)
        try reader.expectEnd()
    }
}

extension UInt8: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readUInt8("UInt8") }
}

extension UInt16: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readUInt16("UInt16") }
    public static var wireSizeMin: Int { 2 }
}

extension UInt32: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readUInt32("UInt32") }
    public static var wireSizeMin: Int { 4 }
}

extension UInt64: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readUInt64("UInt64") }
    public static var wireSizeMin: Int { 8 }
}

extension Int64: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readInt64("Int64") }
    public static var wireSizeMin: Int { 8 }
}

extension Bool: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readBool("Bool") }
}
