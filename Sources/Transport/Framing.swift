import CalissonCrypto
import Wire

/// What a frame carries: the kinds of the transport's envelopes.
public enum TransportKind: UInt16, WireMessageKind, CaseIterable {
    /// First frame on every link, both ways: protocol versions, chain id, partner id.
    case hello = 1
    /// Liveness: sent every heartbeat interval on idle and busy links alike.
    case heartbeat = 2
    /// A consensus message (Consensus.Message wire form).
    case consensus = 3
    /// A transaction being flooded to every validator.
    case gossip = 4
    /// A client's request and the node's response, on the client port.
    case request = 5
    case response = 6
    /// Why a link is refused, sent by the refusing side before it closes (UTF-8, at most
    /// `TransportLimits.refusalBytesMax`), so that both sides log who refused whom and why.
    /// A build without it counts it as a malformed frame on a link that closes anyway.
    case refusal = 7
}

public enum TransportLimits {
    /// The longest refusal reason sent (`TransportKind.refusal`), in bytes.
    public static let refusalBytesMax = 256
    /// The protocol versions this build speaks (exchanged in the hello).
    public static let protocolVersions: ClosedRange<UInt16> = 1...1
    /// The largest frame: a full envelope. A length prefix above it closes the link.
    public static let frameSizeMax = WireLimits.envelopePayloadSizeMax + WireLimits.envelopeHeaderSize
    /// The largest frame a client sends to a node's client port: a request (a signed
    /// transaction is at most 16 KiB, a request for snapshot items some 16 KiB). A larger
    /// length prefix closes the connection, so that the client port's connections (256 at
    /// most) hold at most this much each of frames not yet whole, not 8 MiB.
    public static let clientFrameSizeMax = 1 << 20
    /// Bytes of a frame's length prefix.
    public static let framePrefixSize = 4
}

/// Why a link was closed because of what the peer sent.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case oversized(length: Int, maximum: Int)
    case malformed(WireError)
    case unexpected(TransportKind)

    public var description: String {
        switch self {
        case let .oversized(length, maximum): return "frame of \(length) bytes over the limit of \(maximum)"
        case let .malformed(error): return "malformed frame: \(error)"
        case let .unexpected(kind): return "unexpected \(kind) frame"
        }
    }
}

/// Splits a byte stream into frames: a 4-byte big-endian length, then that many bytes
/// (an `Envelope<TransportKind>`). The length is checked before anything is buffered.
struct FrameDecoder {
    private var buffer: [UInt8] = []
    private var start = 0
    /// The largest frame taken.
    let maximum: Int

    init(maximum: Int = TransportLimits.frameSizeMax) { self.maximum = maximum }

    mutating func append(_ bytes: [UInt8]) { buffer += bytes }

    /// Bytes buffered and not yet taken as frames (a frame still arriving, most often).
    var buffered: Int { buffer.count - start }

    /// A whole frame (or one over the maximum, which `next` throws for) is buffered.
    var hasWholeFrame: Bool {
        let available = buffer.count - start
        guard available >= TransportLimits.framePrefixSize else { return false }
        var length = 0
        for index in 0..<TransportLimits.framePrefixSize { length = length << 8 | Int(buffer[start + index]) }
        return length > maximum || available >= TransportLimits.framePrefixSize + length
    }

    /// The next whole frame's envelope, nil if more bytes are needed.
    mutating func next() throws(FrameError) -> Envelope<TransportKind>? {
        let available = buffer.count - start
        guard available >= TransportLimits.framePrefixSize else { return compact() }
        var length = 0
        for index in 0..<TransportLimits.framePrefixSize { length = length << 8 | Int(buffer[start + index]) }
        guard length <= maximum else { throw .oversized(length: length, maximum: maximum) }
        guard available >= TransportLimits.framePrefixSize + length else { return compact() }
        let body = Array(buffer[(start + TransportLimits.framePrefixSize)..<(start + TransportLimits.framePrefixSize + length)])
        start += TransportLimits.framePrefixSize + length
        do {
            return try Envelope<TransportKind>.decode(wireBytes: body, supportedVersions: TransportLimits.protocolVersions)
        } catch {
            throw .malformed(error)
        }
    }

    /// Room kept for the next frames once the buffered ones are taken: past it, a large
    /// frame's room is given back (a peer sending one large frame on each of many
    /// connections would otherwise leave its size reserved on each, buffering nothing).
    static let keptCapacityMax = 256 << 10

    private mutating func compact() -> Envelope<TransportKind>? {
        guard start > 0 else { return nil }
        if start == buffer.count {
            if buffer.capacity > Self.keptCapacityMax { buffer = [] } else { buffer.removeAll(keepingCapacity: true) }
            start = 0
        } else if start * 2 >= buffer.count {
            if buffer.capacity > Self.keptCapacityMax { buffer = Array(buffer[start...]) } else { buffer.removeFirst(start) }
            start = 0
        }
        return nil
    }

    /// The room the buffer holds (for tests).
    var capacity: Int { buffer.capacity }

    static func frame(_ kind: TransportKind, _ payload: [UInt8]) -> [UInt8] {
        let body = Envelope(version: TransportLimits.protocolVersions.upperBound, kind: kind, payload: payload).wireBytes
        var writer = WireWriter(reservingCapacity: body.count + 4)
        writer.write(UInt32(body.count))
        writer.writeFixed(body)
        return writer.bytes
    }
}

/// The first frame each side sends after the TLS handshake.
struct Hello: WireCodable, Equatable {
    static let partnerIDBytesMax = 64
    static let softwareBytesMax = 64
    var versions: ClosedRange<UInt16>
    var chainId: String
    var partnerID: String
    /// What the node says of itself (`PeerVersion`): absent from a client's hello, and
    /// from a node built before it. Encoded after the fields above, when present; a hello
    /// may end before it.
    var about: PeerVersion?

    init(versions: ClosedRange<UInt16>, chainId: String, partnerID: String, about: PeerVersion? = nil) {
        self.versions = versions
        self.chainId = chainId
        self.partnerID = partnerID
        self.about = about
    }

    func encode(to writer: inout WireWriter) {
        writer.write(versions.lowerBound)
        writer.write(versions.upperBound)
        writer.writeString(chainId)
        writer.writeString(partnerID)
        if let about {
            writer.writeString(about.software)
            writer.write(about.rules)
        }
    }

    init(from reader: inout WireReader) throws(WireError) {
        let low = try reader.readUInt16("hello.versionMin")
        let high = try reader.readUInt16("hello.versionMax")
        guard low <= high else { throw .invalidValue(field: "hello.versions", offset: reader.offset, reason: "empty range") }
        versions = low...high
        chainId = try reader.readString("hello.chainId", maximumBytes: SigningDomain.chainIdByteCountMax)
        partnerID = try reader.readString("hello.partnerID", maximumBytes: Self.partnerIDBytesMax)
        guard !reader.isAtEnd else { return }
        let software = try reader.readString("hello.software", maximumBytes: Self.softwareBytesMax)
        about = PeerVersion(software: software, rules: try reader.readUInt32("hello.rules"))
    }
}

/// A node's release and the newest ledger rules it executes, as its hello says them
/// (`TransportConfiguration.about`; Docs/OPERATIONS.md, "Upgrades").
public struct PeerVersion: Hashable, Sendable, CustomStringConvertible {
    public let software: String
    public let rules: UInt32

    public init(software: String, rules: UInt32) {
        self.software = software
        self.rules = rules
    }

    public var description: String { "\(software) (ledger rules \(rules))" }
}

/// What a validator says of its own links, in the payload of its heartbeats (a heartbeat
/// of an earlier release is empty, and an earlier release ignores the payload): the
/// validators it is linked to now. A node relays a transaction that validator gossips only
/// to the peers it is not linked to (Docs/TRANSPORT.md, "Gossip"). A tag byte first, so
/// that a later release can say something else there; the ids in increasing order, each
/// once (one encoding for one set: any other is refused).
struct LinkedPeers: Equatable {
    static let tag: UInt8 = 1
    /// More validators than a consortium has: a longer list is refused as malformed.
    static let countMax = 1_024
    let peers: Set<String>

    init(peers: Set<String>) { self.peers = peers }

    init(payload: [UInt8]) throws(WireError) {
        var reader = WireReader(payload)
        let tag = try reader.readUInt8("linkedPeers.tag")
        guard tag == Self.tag else { throw .invalidValue(field: "linkedPeers.tag", offset: 0, reason: "tag \(tag) is not \(Self.tag) (linked peers)") }
        let count = try reader.readCount("linkedPeers.peers", maximum: Self.countMax)
        var peers: [String] = []
        for _ in 0..<count {
            let at = payload.count - reader.remaining
            let peer = try reader.readString("linkedPeers.peer", maximumBytes: Hello.partnerIDBytesMax)
            // (The ids are not quoted in the error: it is logged, and they are the peer's bytes.)
            if let last = peers.last, !(last < peer) {
                throw .invalidValue(field: "linkedPeers.peer", offset: at, reason: "id \(peers.count) is not after id \(peers.count - 1): the ids go in increasing order, each once")
            }
            peers.append(peer)
        }
        try reader.expectEnd()
        self.peers = Set(peers)
    }

    /// Sorted, so that the same links always make the same bytes.
    var payload: [UInt8] {
        var writer = WireWriter()
        writer.write(Self.tag)
        writer.write(UInt32(truncatingIfNeeded: peers.count))
        for peer in peers.sorted() { writer.writeString(peer) }
        return writer.bytes
    }
}
