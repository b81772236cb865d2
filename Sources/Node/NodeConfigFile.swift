import CalissonCrypto
import Foundation
import Ledger
import Storage
import Transport
import Wire

/// A node's configuration file (JSON; Docs/NODE.md lists every field, its default and
/// limits). Paths are relative to the file's directory.
public struct NodeConfigFile: Codable, Sendable, Equatable {
    public struct Peer: Codable, Sendable, Equatable {
        public var id: String
        public var host: String
        public var port: UInt16
        public init(id: String, host: String, port: UInt16) {
            self.id = id
            self.host = host
            self.port = port
        }
        public init(from decoder: any Decoder) throws {
            try decoder.refuseUnknownMembers(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            host = try c.decode(String.self, forKey: .host)
            port = try c.integer(.port)
        }
    }

    /// This node's partner id (the common name of its TLS certificate).
    public var partner: String
    public var genesis: String
    public var database: String
    /// The consensus key (PEM, PKCS#8, 0600).
    public var nodeKey: String
    public var tlsKey: String
    public var tlsCertificate: String
    public var ca: String
    /// Listening address: loopback by default.
    public var host: String?
    public var peerPort: UInt16
    public var clientPort: UInt16?
    public var peers: [Peer]
    /// Consensus tick (default 20 ms, 1...1000).
    public var tickMilliseconds: UInt64?
    /// How long transactions gather before a block that is not full is cut (default 60
    /// ms, 0...1000; rounded up to whole ticks, at least one).
    public var blockWaitMilliseconds: UInt64?
    /// Transactions per block, at most (default 1000, 1...10000).
    public var blockCommandsMax: Int?
    /// How long the primary waits, with no transaction to order, before it completes the
    /// checkpoint interval with empty blocks so that the last transactions' state is
    /// certified (default 500 ms, 0...600000; 0: never; rounded up to whole ticks).
    public var checkpointFillMilliseconds: UInt64?
    /// Mempool bound (default 100,000, 1...10,000,000).
    public var mempoolMax: Int?
    /// Local HTTP port for /metrics and /health (127.0.0.1); absent: none.
    public var metricsPort: UInt16?
    /// The database's memory map window, MiB (default 32, 0...4096; 0: no map).
    public var storageMapMegabytes: Int?
    /// The database's page cache, MiB (default 16, 1...4096).
    public var storageCacheMegabytes: Int?
    /// WAL size past which it is copied into the main file, MiB (default 40, 1...1024).
    public var storageWALMegabytes: Int?
    /// The state is written at every this many checkpoints (default 4, 1...64).
    public var stateWriteCheckpoints: UInt64?
    /// Client port limits (Docs/SECURITY.md): connections at once (default 256, 1...65536),
    /// per IP address (default 64, 1...65536), requests per second per connection (default
    /// 2000, 1...1000000), seconds a client may idle (default 30, 1...86400).
    public var clientConnectionsMax: Int?
    public var clientConnectionsPerAddressMax: Int?
    public var clientRequestsPerSecondMax: Int?
    public var clientIdleSeconds: Int?
    /// New connections one IP address may open per second, and at once, on the client port
    /// (default 64 and 256) and on the peer port (default 8 and 32): `AcceptRate`.
    public var clientAcceptsPerSecond: Int?
    public var clientAcceptsBurst: Int?
    public var peerAcceptsPerSecond: Int?
    public var peerAcceptsBurst: Int?
    /// The loop's time for clients' requests between two of its sleeps, in microseconds
    /// (default 10000, 100...1000000): `ClientTurns`.
    public var clientWorkMicrosecondsPerTurn: Int?
    /// Retention: keep the bodies of this many latest blocks (at least 1,000); absent: all.
    public var retainBlocks: UInt64?
    /// Serial numbers of TLS certificates this node refuses on its peer port and when it
    /// dials, whatever the registry says (a stolen key, before governance rotates it): at
    /// most 10,000.
    public var revokedCertificateSerials: [UInt64]?
    /// The most serials `revokedCertificateSerials` lists.
    public static let revokedCertificateSerialsMax = 10_000

    public init(partner: String, genesis: String, database: String, nodeKey: String, tlsKey: String, tlsCertificate: String, ca: String,
                host: String? = nil, peerPort: UInt16, clientPort: UInt16?, peers: [Peer], tickMilliseconds: UInt64? = nil, mempoolMax: Int? = nil,
                metricsPort: UInt16? = nil) {
        self.partner = partner
        self.genesis = genesis
        self.database = database
        self.nodeKey = nodeKey
        self.tlsKey = tlsKey
        self.tlsCertificate = tlsCertificate
        self.ca = ca
        self.host = host
        self.peerPort = peerPort
        self.clientPort = clientPort
        self.peers = peers
        self.tickMilliseconds = tickMilliseconds
        self.mempoolMax = mempoolMax
        self.metricsPort = metricsPort
    }
}

/// A configuration problem, naming the field (or the file) at fault.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let reason: String
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }
    public var description: String { "configuration: \(field): \(reason)" }
}

extension NodeConfigFile {
    /// Reads and checks a configuration file, and everything it points to.
    public static func load(_ path: String) throws(ConfigError) -> NodeConfiguration {
        let url = URL(fileURLWithPath: path)
        let file: NodeConfigFile
        do { file = try JSONFile.decode(NodeConfigFile.self, path: path) } catch {
            throw ConfigError(field: error.field.isEmpty ? path : error.field, reason: error.field.isEmpty ? error.reason : "\(error.reason) (in \(path))")
        }
        return try file.resolve(relativeTo: url.deletingLastPathComponent())
    }

    public init(from decoder: any Decoder) throws {
        try decoder.refuseUnknownMembers(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        partner = try c.decode(String.self, forKey: .partner)
        genesis = try c.decode(String.self, forKey: .genesis)
        database = try c.decode(String.self, forKey: .database)
        nodeKey = try c.decode(String.self, forKey: .nodeKey)
        tlsKey = try c.decode(String.self, forKey: .tlsKey)
        tlsCertificate = try c.decode(String.self, forKey: .tlsCertificate)
        ca = try c.decode(String.self, forKey: .ca)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        peerPort = try c.integer(.peerPort)
        clientPort = try c.integerIfPresent(.clientPort)
        peers = try c.list(Peer.self, .peers, countMax: LedgerLimits.listCountMax)
        tickMilliseconds = try c.integerIfPresent(.tickMilliseconds)
        blockWaitMilliseconds = try c.integerIfPresent(.blockWaitMilliseconds)
        blockCommandsMax = try c.integerIfPresent(.blockCommandsMax)
        checkpointFillMilliseconds = try c.integerIfPresent(.checkpointFillMilliseconds)
        mempoolMax = try c.integerIfPresent(.mempoolMax)
        metricsPort = try c.integerIfPresent(.metricsPort)
        storageMapMegabytes = try c.integerIfPresent(.storageMapMegabytes)
        storageCacheMegabytes = try c.integerIfPresent(.storageCacheMegabytes)
        storageWALMegabytes = try c.integerIfPresent(.storageWALMegabytes)
        stateWriteCheckpoints = try c.integerIfPresent(.stateWriteCheckpoints)
        clientConnectionsMax = try c.integerIfPresent(.clientConnectionsMax)
        clientConnectionsPerAddressMax = try c.integerIfPresent(.clientConnectionsPerAddressMax)
        clientRequestsPerSecondMax = try c.integerIfPresent(.clientRequestsPerSecondMax)
        clientIdleSeconds = try c.integerIfPresent(.clientIdleSeconds)
        clientAcceptsPerSecond = try c.integerIfPresent(.clientAcceptsPerSecond)
        clientAcceptsBurst = try c.integerIfPresent(.clientAcceptsBurst)
        peerAcceptsPerSecond = try c.integerIfPresent(.peerAcceptsPerSecond)
        peerAcceptsBurst = try c.integerIfPresent(.peerAcceptsBurst)
        clientWorkMicrosecondsPerTurn = try c.integerIfPresent(.clientWorkMicrosecondsPerTurn)
        retainBlocks = try c.integerIfPresent(.retainBlocks)
        revokedCertificateSerials = try c.listIfPresent(Serial.self, .revokedCertificateSerials, countMax: Self.revokedCertificateSerialsMax)?.map(\.value)
    }

    /// A serial number in a list, decoded as the other integers are (out of range named).
    private struct Serial: Decodable {
        let value: UInt64
        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            do { value = try container.decode(UInt64.self) } catch {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a whole number from 0 to \(UInt64.max)"))
            }
        }
    }

    public func resolve(relativeTo directory: URL) throws(ConfigError) -> NodeConfiguration {
        func path(_ value: String) -> String {
            value.hasPrefix("/") ? value : directory.appendingPathComponent(value).path
        }
        let genesisFile: GenesisFile
        do { genesisFile = try JSONFile.decode(GenesisFile.self, path: path(genesis)) } catch { throw ConfigError(field: "genesis", reason: "\(error)") }
        let genesis: Genesis
        do { genesis = try genesisFile.validated() } catch { throw ConfigError(field: "genesis", reason: "\(path(self.genesis)): \(error.field): \(error.reason)") }
        // A partner admitted by governance after the genesis is not in it: ids are checked
        // for form here; whether they may link is the ledger's registry to say at run time.
        guard Identifier(partner) != nil else { throw ConfigError(field: "partner", reason: "'\(partner)' is not a partner id (1-32 of a-z, 0-9, '-')") }
        let consensusKey: Ed25519PrivateKey, tlsPrivateKey: Ed25519PrivateKey
        do { consensusKey = try KeyFile.readPrivateKey(at: path(nodeKey)) } catch { throw ConfigError(field: "nodeKey", reason: "\(error)") }
        do { tlsPrivateKey = try KeyFile.readPrivateKey(at: path(tlsKey)) } catch { throw ConfigError(field: "tlsKey", reason: "\(error)") }
        let certificate: Certificate, authority: Certificate
        do { certificate = try Certificate(file: path(tlsCertificate)) } catch { throw ConfigError(field: "tlsCertificate", reason: "\(error)") }
        do { authority = try Certificate(file: path(ca)) } catch { throw ConfigError(field: "ca", reason: "\(error)") }
        guard certificate.commonName == partner else {
            throw ConfigError(field: "tlsCertificate", reason: "issued to '\(certificate.commonName)', not '\(partner)'")
        }
        let tick = tickMilliseconds ?? 20
        guard (1...1_000).contains(tick) else { throw ConfigError(field: "tickMilliseconds", reason: "\(tick) is outside 1...1000") }
        let blockWait = blockWaitMilliseconds ?? NodeConfiguration.blockWaitMillisecondsDefault
        guard (0...1_000).contains(blockWait) else { throw ConfigError(field: "blockWaitMilliseconds", reason: "\(blockWait) is outside 0...1000") }
        let blockCommands = blockCommandsMax ?? NodeConfiguration.blockCommandsMaxDefault
        guard (1...10_000).contains(blockCommands) else { throw ConfigError(field: "blockCommandsMax", reason: "\(blockCommands) is outside 1...10000") }
        let checkpointFill = checkpointFillMilliseconds ?? NodeConfiguration.checkpointFillMillisecondsDefault
        guard (0...600_000).contains(checkpointFill) else {
            throw ConfigError(field: "checkpointFillMilliseconds", reason: "\(checkpointFill) is outside 0...600000")
        }
        let mapMegabytes = storageMapMegabytes ?? NodeStore.Tuning.default.mapBytes >> 20
        guard (0...4_096).contains(mapMegabytes) else {
            throw ConfigError(field: "storageMapMegabytes", reason: "\(mapMegabytes) is outside 0...4096")
        }
        let cacheMegabytes = storageCacheMegabytes ?? NodeStore.Tuning.default.cacheBytes >> 20
        guard (1...4_096).contains(cacheMegabytes) else {
            throw ConfigError(field: "storageCacheMegabytes", reason: "\(cacheMegabytes) is outside 1...4096")
        }
        let walMegabytes = storageWALMegabytes ?? Int(NodeStore.Tuning.default.walCheckpointPages) / 256
        guard (1...1_024).contains(walMegabytes) else {
            throw ConfigError(field: "storageWALMegabytes", reason: "\(walMegabytes) is outside 1...1024")
        }
        let stateWrite = stateWriteCheckpoints ?? NodeConfiguration.stateWriteCheckpointsDefault
        guard (1...NodeConfiguration.stateWriteCheckpointsMax).contains(stateWrite) else {
            throw ConfigError(field: "stateWriteCheckpoints", reason: "\(stateWrite) is outside 1...\(NodeConfiguration.stateWriteCheckpointsMax)")
        }
        let mempool = mempoolMax ?? 100_000
        guard (1...10_000_000).contains(mempool) else { throw ConfigError(field: "mempoolMax", reason: "\(mempool) is outside 1...10000000") }
        if let retainBlocks, retainBlocks < NodeConfiguration.retainBlocksMin {
            throw ConfigError(field: "retainBlocks", reason: "\(retainBlocks) is below \(NodeConfiguration.retainBlocksMin): peers that were down catch up from these blocks")
        }
        if let host, !Self.isIPv4(host) {
            throw ConfigError(field: "host", reason: "'\(host.prefix(80))' is not an IPv4 address to listen on (as 127.0.0.1, or 0.0.0.0 for every interface)")
        }
        // Port 0 would listen on a port the system picks, which no peer or client is told.
        guard peerPort != 0 else { throw ConfigError(field: "peerPort", reason: "0 is no port peers can be told (1...65535)") }
        if clientPort == 0 { throw ConfigError(field: "clientPort", reason: "0 is no port clients can be told (1...65535)") }
        if metricsPort == 0 { throw ConfigError(field: "metricsPort", reason: "0 is no port a scraper can be told (1...65535)") }
        for (index, peer) in peers.enumerated() {
            guard peer.port != 0 else { throw ConfigError(field: "peers[\(index)].port", reason: "0 is no port to dial (1...65535)") }
            guard !peer.host.isEmpty, peer.host.utf8.count <= 253, !peer.host.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 } == true }) else {
                throw ConfigError(field: "peers[\(index)].host", reason: "'\(peer.host.prefix(80))' is no host name or address")
            }
            guard Identifier(peer.id) != nil else { throw ConfigError(field: "peers[\(index)].id", reason: "'\(peer.id)' is not a partner id") }
            guard peer.id != partner else { throw ConfigError(field: "peers[\(index)].id", reason: "this node itself") }
            guard !peers[..<index].contains(where: { $0.id == peer.id }) else { throw ConfigError(field: "peers[\(index)].id", reason: "'\(peer.id)' is listed twice") }
        }

        var transport = TransportConfiguration(
            chainId: genesis.chainId, selfID: partner, identity: TLSIdentity(certificate: certificate, key: tlsPrivateKey), ca: authority)
        transport.host = host ?? "127.0.0.1"
        transport.peerPort = peerPort
        transport.clientPort = clientPort
        transport.peers = peers.map { PeerAddress(id: $0.id, host: $0.host, port: $0.port) }
        transport.registry = Dictionary(uniqueKeysWithValues: genesis.partners.compactMap { partner in
            partner.tlsKeyHash.map { (partner.id.rawValue, $0) }
        })
        transport.revokedSerials = Set(revokedCertificateSerials ?? [])
        try applyClientLimits(to: &transport)
        var configuration = NodeConfiguration(genesis: genesis, databaseFile: path(database), consensusKey: consensusKey, transport: transport)
        configuration.tickMilliseconds = tick
        configuration.blockWaitMilliseconds = blockWait
        configuration.blockCommandsMax = blockCommands
        configuration.checkpointFillMilliseconds = checkpointFill
        configuration.mempoolCountMax = mempool
        configuration.metricsPort = metricsPort
        configuration.storage = NodeStore.Tuning(mapBytes: mapMegabytes << 20, cacheBytes: cacheMegabytes << 20)
        configuration.storage.walCheckpointPages = Int32(walMegabytes * 256)  // 4 KiB pages
        configuration.retainBlocks = retainBlocks
        configuration.stateWriteCheckpoints = stateWrite
        return configuration
    }

    /// Four decimal numbers from 0 to 255, dot-separated, without leading zeros: what the
    /// node can listen on.
    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } && UInt8(part) != nil
                && (part.count == 1 || part.first != "0")  // no leading zero: the listener's parser refuses it
        }
    }

    /// The client and peer ports' limits, each range-checked by name.
    private func applyClientLimits(to transport: inout TransportConfiguration) throws(ConfigError) {
        func checked(_ value: Int?, _ field: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int? {
            guard let value else { return nil }
            guard range.contains(value) else { throw ConfigError(field: field, reason: "\(value) is outside \(range.lowerBound)...\(range.upperBound)") }
            return value
        }
        if let value = try checked(clientConnectionsMax, "clientConnectionsMax", 1...65_536) { transport.clientConnectionsMax = value }
        if let value = try checked(clientConnectionsPerAddressMax, "clientConnectionsPerAddressMax", 1...65_536) {
            transport.clientConnectionsPerAddressMax = value
        }
        if let value = try checked(clientRequestsPerSecondMax, "clientRequestsPerSecondMax", 1...1_000_000) { transport.clientRequestsPerSecondMax = value }
        if let value = try checked(clientIdleSeconds, "clientIdleSeconds", 1...86_400) { transport.clientIdleMilliseconds = UInt64(value) * 1_000 }
        if let value = try checked(clientAcceptsPerSecond, "clientAcceptsPerSecond", 1...1_000_000) { transport.clientAcceptsPerSecond = value }
        if let value = try checked(clientAcceptsBurst, "clientAcceptsBurst", 1...1_000_000) { transport.clientAcceptsBurst = value }
        if let value = try checked(peerAcceptsPerSecond, "peerAcceptsPerSecond", 1...1_000_000) { transport.peerAcceptsPerSecond = value }
        if let value = try checked(peerAcceptsBurst, "peerAcceptsBurst", 1...1_000_000) { transport.peerAcceptsBurst = value }
        if let value = try checked(clientWorkMicrosecondsPerTurn, "clientWorkMicrosecondsPerTurn", 100...1_000_000) {
            transport.clientWorkMicrosecondsPerTurn = UInt64(clamping: value)
        }
    }
}
