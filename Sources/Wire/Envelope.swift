/// A message kind: the discriminant of a versioned message. Each protocol (consensus,
/// gossip, client API) declares its kinds as an enum with `UInt16` raw values.
public protocol WireMessageKind: RawRepresentable, Hashable, Sendable where RawValue == UInt16 {}

/// Limits shared by every Calisson encoding.
public enum WireLimits {
    /// The largest payload an envelope may carry. A block of transactions must fit, so
    /// it bounds block size too; Transport's frame limit is this plus the envelope header.
    public static let envelopePayloadSizeMax = 8 * 1024 * 1024
    /// Bytes an envelope adds before its payload: version, kind, payload length.
    public static let envelopeHeaderSize = 2 + 2 + 4
}

/// A versioned message: `version: UInt16`, `kind: UInt16`, then the payload as a
/// length-prefixed byte string. The payload is the canonical encoding of the value the
/// kind names; the receiver decodes it only after checking version and kind.
public struct Envelope<Kind: WireMessageKind>: Sendable, Equatable {
    public var version: UInt16
    public var kind: Kind
    public var payload: [UInt8]

    public init(version: UInt16, kind: Kind, payload: [UInt8]) {
        self.version = version
        self.kind = kind
        self.payload = payload
    }

    public init(version: UInt16, kind: Kind, message: some WireEncodable) {
        self.init(version: version, kind: kind, payload: message.wireBytes)
    }

    public func encode(to writer: inout WireWriter) {
        precondition(payload.count <= WireLimits.envelopePayloadSizeMax, "envelope payload over its limit")
        writer.write(version)
        writer.write(kind.rawValue)
        writer.writeBytes(payload)
    }

    public var wireBytes: [UInt8] {
        var writer = WireWriter(reservingCapacity: WireLimits.envelopeHeaderSize + payload.count)
        encode(to: &writer)
        return writer.bytes
    }

    /// Decodes an envelope, refusing versions outside `supportedVersions`, unknown kinds
    /// and payloads over `payloadSizeMax`.
    public static func decode(
        from reader: inout WireReader,
        supportedVersions: ClosedRange<UInt16>,
        payloadSizeMax: Int = WireLimits.envelopePayloadSizeMax
    ) throws(WireError) -> Envelope {
        let versionOffset = reader.offset
        let version = try reader.readUInt16("envelope.version")
        guard supportedVersions.contains(version) else {
            throw .unsupportedVersion(
                field: "envelope.version", offset: versionOffset, version: UInt64(version),
                supported: UInt64(supportedVersions.lowerBound)...UInt64(supportedVersions.upperBound))
        }
        let kind: Kind = try reader.readKind("envelope.kind")
        let payload = try reader.readBytes("envelope.payload", maximum: payloadSizeMax)
        return Envelope(version: version, kind: kind, payload: payload)
    }

    /// Decodes a whole byte string as one envelope; trailing bytes are an error.
    public static func decode(
        wireBytes bytes: [UInt8],
        supportedVersions: ClosedRange<UInt16>,
        payloadSizeMax: Int = WireLimits.envelopePayloadSizeMax
    ) throws(WireError) -> Envelope {
        var reader = WireReader(bytes)
        let envelope = try decode(from: &reader, supportedVersions: supportedVersions, payloadSizeMax: payloadSizeMax)
        try reader.expectEnd()
        return envelope
    }

    /// The payload decoded as `T`, which must consume it exactly.
    public func decodePayload<T: WireDecodable>(as _: T.Type = T.self) throws(WireError) -> T {
        try T(wireBytes: payload)
    }
}

extension WireReader {
    /// A discriminant (`UInt8` or `UInt16` raw value) that must be one of `Kind`'s cases.
    public mutating func readKind<Kind: RawRepresentable>(_ field: String) throws(WireError) -> Kind
    where Kind.RawValue: FixedWidthInteger & UnsignedInteger {
        let at = offset
        let raw = try readBigEndian(Kind.RawValue.self, field: field)
        guard let kind = Kind(rawValue: raw) else {
            throw .unknownKind(field: field, offset: at, raw: UInt64(raw))
        }
        return kind
    }
}
