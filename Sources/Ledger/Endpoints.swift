import Wire

/// Where a partner's node takes validator links (ledger rules 4): a host, as a DNS name or
/// an IPv4 address, and a port. Nodes dial the endpoints the ledger gives; their
/// configuration's peers only bootstrap (Docs/OPERATIONS.md, "Peers found in the ledger").
public struct PeerEndpoint: Hashable, Sendable, Comparable, CustomStringConvertible, WireCodable {
    /// A DNS name's limit (RFC 1035).
    public static let hostBytesMax = 253
    /// A partner lists at most this many (a node tries them in turn).
    public static let countMax = 4

    public let host: String
    public let port: UInt16

    /// Nil when `host` is no lowercase DNS name nor IPv4 address, or `port` is 0
    /// (`problem` says which).
    public init?(host: String, port: UInt16) {
        guard Self.problem(host: host, port: port) == nil else { return nil }
        self.host = host
        self.port = port
    }

    /// `host:port`.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        self.init(host: String(text[..<colon]), port: port)
    }

    public var description: String { "\(host):\(port)" }

    public static func < (a: PeerEndpoint, b: PeerEndpoint) -> Bool {
        a.host == b.host ? a.port < b.port : Array(a.host.utf8).lexicographicallyPrecedes(b.host.utf8)
    }

    /// What is wrong with an endpoint, or nil. A host is labels of 1 to 63 of a-z, 0-9
    /// and '-' (not first nor last), joined by dots, at most 253 bytes: a lowercase DNS
    /// name, which an IPv4 address also is. Lowercase only, so that one endpoint has one
    /// spelling in the state. IPv6 is not supported (nor by the transport).
    public static func problem(host: String, port: UInt16) -> String? {
        if port == 0 { return "port 0" }
        let bytes = Array(host.utf8)
        if bytes.isEmpty || bytes.count > hostBytesMax { return "host of 1 to \(hostBytesMax) bytes" }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            let allowed = label.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
            guard !label.isEmpty, label.count <= 63, allowed, label.first != 0x2D, label.last != 0x2D else {
                return "host '\(String(decoding: bytes.prefix(64), as: UTF8.self))' is no lowercase DNS name nor IPv4 address"
            }
        }
        return nil
    }

    /// What is wrong with a partner's list of endpoints, or nil: at most `countMax`, sorted
    /// and distinct (one list, one encoding).
    public static func problem(_ endpoints: [PeerEndpoint]) -> String? {
        if endpoints.count > countMax { return "at most \(countMax) endpoints" }
        if zip(endpoints, endpoints.dropFirst()).contains(where: { !($0 < $1) }) { return "endpoints must be sorted and distinct" }
        return nil
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeString(host)
        writer.write(port)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let host = try reader.readString("endpoint.host", maximumBytes: Self.hostBytesMax)
        let port = try reader.readUInt16("endpoint.port")
        if let problem = Self.problem(host: host, port: port) { throw .invalidValue(field: "endpoint", offset: offset, reason: problem) }
        self.host = host
        self.port = port
    }
}

/// A partner's endpoints, sorted and distinct (`StateKeys.partnerEndpoints`, and in the
/// actions that set them).
public struct EndpointList: Hashable, Sendable, WireCodable {
    public let endpoints: [PeerEndpoint]

    public init(_ endpoints: [PeerEndpoint]) { self.endpoints = endpoints }

    public func encode(to writer: inout WireWriter) { writer.writeArray(endpoints) }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        endpoints = try reader.readArray("endpoints", maximum: PeerEndpoint.countMax, of: PeerEndpoint.self)
        if let problem = PeerEndpoint.problem(endpoints) { throw .invalidValue(field: "endpoints", offset: offset, reason: problem) }
    }
}

extension Ledger {
    /// Where a partner's node takes validator links, as the ledger has them (rules 4): set
    /// at its admission, by the partner itself (`setEndpoints`) or by governance.
    public func endpoints(_ id: Identifier) -> [PeerEndpoint] {
        read(StateKeys.partnerEndpoints(id), as: EndpointList.self)?.endpoints ?? []
    }

    /// A partner's endpoints replaced (empty: removed); the node's dialling follows.
    mutating func setEndpoints(_ id: Identifier, _ endpoints: [PeerEndpoint]) {
        write(StateKeys.partnerEndpoints(id), endpoints.isEmpty ? nil : EndpointList(endpoints))
        directoryChanged = true
    }

    /// A partner sets its own endpoints (rules 4): it must be active (its signature was
    /// checked), and the list valid.
    mutating func setOwnEndpoints(by partner: Partner, _ endpoints: [PeerEndpoint]) -> Result<Void, LedgerRejection> {
        if let problem = PeerEndpoint.problem(endpoints) { return .failure(.invalidEndpoints(problem)) }
        setEndpoints(partner.id, endpoints)
        return .success(())
    }
}
