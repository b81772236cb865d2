import ArgumentParser
import CalissonCrypto
import Foundation
import Gateway
import Ledger
import LightClient
import Logging
import Settlement
import Transport

struct CalissonGateway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calisson-gateway",
        abstract: "The partners' door: verified HTTP/JSON answers from the nodes of a Calisson chain (Docs/API.md).",
        subcommands: [Run.self, Key.self])
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the API (Sources/Gateway/openapi.yaml) as a light client of the given nodes.")

    @Option(name: .customLong("node"), help: ArgumentHelp("A node's client address (repeatable: the gateway fails over between them).", valueName: "host:port"))
    var nodes: [String] = []
    @Option(help: "The consortium CA certificate (PEM) the nodes' certificates chain to.") var ca: String
    @Option(help: "The chain's genesis file: every answer is checked against the validators followed from it.") var genesis: String
    @Option(help: "The API key file (JSON; `calisson-gateway key` makes an entry).") var apiKeys: String
    @Option(help: "Where to listen, host:port (plain HTTP: loopback only; with --tls-certificate, any address).") var listen = "127.0.0.1:8080"
    @Option(help: "HTTPS: the gateway's certificate chain (PEM).") var tlsCertificate: String?
    @Option(help: "HTTPS: the key of that certificate (PEM).") var tlsKey: String?
    @Option(help: "HTTPS: accept client certificates issued by this CA (PEM) in place of an API key (key file entries with certificateSha256).")
    var clientCa: String?
    @Option(help: "Refuse answers certified more than this many blocks behind the newest certified checkpoint known.")
    var maxLag: UInt64 = Freshness.lagMaxDefault
    @Option(help: "Seconds to wait for each answer of a node (0.001 to 60).") var requestTimeout = 5.0
    @Option(help: ArgumentHelp(
        "Tree pages the verified copy of the state may hold (0 to \(StateMirror.pagesMaxLimit); 0: no copy, every read asks a node). Docs/API.md, \"The verified copy\".",
        valueName: "pages"))
    var mirrorPagesMax = StateMirror.pagesMaxDefault
    @Option(help: "The partner this gateway signs rewards for (with --signing-key).") var partner: String?
    @Option(help: "That partner's signing key (PEM, 0600).") var signingKey: String?
    @Option(help: "That partner's evidence key (PEM, 0600; default: evidence.key beside --signing-key).") var evidenceKey: String?
    @Option(help: "Where the gateway keeps what it signed per Idempotency-Key (with --signing-key).") var stateDir: String?
    @Option(help: "The treasury's settlement register (JSON; Docs/SETTLEMENT.md): serves the settlement files to govern-scope keys.")
    var settlementRegister: String?
    @Option(help: "Close a connection with no request (or an unfinished request head) for this many seconds (1 to 3600).")
    var idleTimeout: Int64 = 60
    @Option(help: "Seconds a request's body may take to arrive whole (1 to 600): past it, 408.")
    var bodySeconds: Int64 = 10
    @Option(help: "Connections open at once from one client address (an IPv4 address or an IPv6 /64), at most (1 to 65536): past it a new one is closed when accepted.")
    var connectionsPerAddress = 256
    @Option(help: "Connections open at once in all, at most (16 to 1048576; the gateway raises its open files limit to fit): past it a new one is closed when accepted.")
    var connectionsMax = 4_096

    func validate() throws {
        guard !nodes.isEmpty else { throw ValidationError("at least one --node") }
        for node in nodes where Self.hostAndPort(node) == nil { throw ValidationError("--node \(node): expected host:port, the port 1 to 65535") }
        guard Self.hostAndPort(listen) != nil else { throw ValidationError("--listen \(listen): expected host:port, the port 1 to 65535") }
        guard maxLag <= LedgerLimits.blockSpanMax else { throw ValidationError("--max-lag must be at most \(LedgerLimits.blockSpanMax)") }
        guard requestTimeout.isFinite, requestTimeout >= 0.001, requestTimeout <= 60 else {
            throw ValidationError("--request-timeout must be from 0.001 to 60 seconds, not \(requestTimeout)")
        }
        guard (1...65_536).contains(connectionsPerAddress) else {
            throw ValidationError("--connections-per-address must be from 1 to 65536, not \(connectionsPerAddress)")
        }
        guard (16...1_048_576).contains(connectionsMax) else {
            throw ValidationError("--connections-max must be from 16 to 1048576, not \(connectionsMax)")
        }
        guard (0...StateMirror.pagesMaxLimit).contains(mirrorPagesMax) else {
            throw ValidationError("--mirror-pages-max must be from 0 to \(StateMirror.pagesMaxLimit), not \(mirrorPagesMax)")
        }
        guard (1...600).contains(bodySeconds) else { throw ValidationError("--body-seconds must be from 1 to 600, not \(bodySeconds)") }
        guard (1...3_600).contains(idleTimeout) else { throw ValidationError("--idle-timeout must be from 1 to 3600 seconds, not \(idleTimeout)") }
        guard (partner == nil) == (signingKey == nil), (signingKey == nil) == (stateDir == nil) else {
            throw ValidationError("--partner, --signing-key and --state-dir go together")
        }
        // Given without a signer, it would be ignored: an operator would think it used.
        guard evidenceKey == nil || signingKey != nil else { throw ValidationError("--evidence-key is the signing partner's: give --partner, --signing-key and --state-dir with it") }
        if let partner, Identifier(partner) == nil { throw ValidationError("--partner '\(partner)' is not a partner id") }
        guard (tlsCertificate == nil) == (tlsKey == nil) else { throw ValidationError("--tls-certificate and --tls-key go together") }
        guard clientCa == nil || tlsCertificate != nil else { throw ValidationError("--client-ca needs HTTPS (--tls-certificate, --tls-key)") }
    }

    /// The partner signer, when --partner is given.
    /// `sharers`: the clients that may sign (the API keys and certificate entries with the
    /// submit or govern scope), who share the idempotency log's room.
    func signer(sharers: Int) throws -> PartnerSigner? {
        guard let partner = partner.flatMap(Identifier.init), let signingKey, let stateDir else { return nil }
        let key: Ed25519PrivateKey
        do { key = try KeyFile.readPrivateKey(at: signingKey) } catch { throw GatewayError("--signing-key \(error)") }
        let evidencePath = evidenceKey ?? ((signingKey as NSString).deletingLastPathComponent as NSString).appendingPathComponent("evidence.key")
        var evidence: EvidenceKey?
        if evidenceKey != nil || FileManager.default.fileExists(atPath: evidencePath) {
            do { evidence = try EvidenceKey.read(at: evidencePath) } catch { throw GatewayError("--evidence-key \(error)") }
        }
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        return PartnerSigner(partner: partner, key: key, evidence: evidence, log: try IdempotencyLog(path: "\(stateDir)/idempotency.log", sharers: sharers))
    }

    static func hostAndPort(_ text: String) -> (String, UInt16)? {
        // Port 0 is none to dial, and listening on it the gateway would not say where.
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port > 0, colon > text.startIndex else { return nil }
        return (String(text[..<colon]), port)
    }

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let authority: Certificate
        do { authority = try Certificate(file: ca) } catch { throw GatewayError("--ca \(error)") }
        let checked: Genesis
        do { checked = try JSONFile.decode(GenesisFile.self, path: genesis).validated() } catch { throw GatewayError("--genesis \(genesis): \(error)") }
        let keys: [APIKey]
        do { keys = try APIKeyFile.load(apiKeys) } catch { throw GatewayError("--api-keys \(error)") }
        let addresses = nodes.compactMap(Self.hostAndPort).map { NodeAddress(host: $0.0, port: $0.1) }
        let pool = NodePool(nodes: addresses, ca: authority, genesis: checked, lagMax: maxLag, timeoutMilliseconds: Int((requestTimeout * 1_000).rounded(.up)),
            mirrorPagesMax: mirrorPagesMax)
        var configuration = GatewayConfiguration(pool: pool, keys: keys)
        configuration.signer = try signer(sharers: keys.count { !Set($0.scopes).isDisjoint(with: [.submit, .govern]) })
        if let settlementRegister {
            do { configuration.settlementRegister = try RegisterFile.load(settlementRegister) } catch { throw GatewayError("--settlement-register \(error)") }
        }
        if let tlsCertificate, let tlsKey {
            configuration.tls = GatewayTLS(certificateFile: tlsCertificate, keyFile: tlsKey, clientCAFile: clientCa)
        }
        let (host, port) = Self.hostAndPort(listen)!
        configuration.host = host
        configuration.port = Int(port)
        configuration.idleTimeoutSeconds = idleTimeout
        configuration.bodySeconds = bodySeconds
        configuration.connectionsPerAddressMax = connectionsPerAddress
        configuration.connectionsMax = connectionsMax
        Self.raiseOpenFilesLimit(to: connectionsMax + 1_024)
        try await GatewayServer(configuration: configuration).run()
    }

    /// Raises the soft limit of open files towards `wanted` (the connections allowed, and
    /// room for the node connections and files), as far as the hard limit lets it; says so
    /// when it cannot reach it (the connections then fail to be accepted before the cap).
    static func raiseOpenFilesLimit(to wanted: Int) {
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return }
        let target = rlim_t(wanted)
        if limit.rlim_cur < target {
            limit.rlim_cur = min(target, limit.rlim_max)
            _ = setrlimit(resource, &limit)
        }
        if limit.rlim_cur < target {
            Logger(label: "calisson.gateway").warning(
                "the open files limit is below what --connections-max needs: connections past it will fail when accepted",
                metadata: ["limit": "\(limit.rlim_cur)", "needed": "\(wanted)"])
        }
    }
}

struct Key: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an API key: prints the key (give it to the client, once) and its entry for the key file (only its hash).")
    @Option(help: "A name for the key (logs, metrics).") var name: String
    @Option(help: "Comma-separated: read, submit, govern.") var scopes = "read"
    @Option(help: "Instead of a key: the entry for this client certificate (PEM), which the client presents over HTTPS.") var certificate: String?
    func run() throws {
        // What the key file accepts (`run --api-keys`): never an entry it then refuses.
        guard APIKey.isValidName(name) else { throw ValidationError("--name must be 1 to \(APIKey.nameBytesMax) bytes") }
        let parsed = try scopes.split(separator: ",").map { raw in
            guard let scope = Scope(rawValue: String(raw)) else { throw ValidationError("--scopes: '\(raw)' is not read, submit or govern") }
            return scope
        }
        guard !parsed.isEmpty else { throw ValidationError("--scopes must name at least one of read, submit, govern") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let certificate {
            let entry = try APIKey.forCertificate(name: name, file: certificate, scopes: parsed)
            print("entry  \(String(decoding: try encoder.encode(entry), as: UTF8.self))")
            return
        }
        let (secret, entry) = APIKey.generate(name: name, scopes: parsed)
        print("key    \(secret)")
        print("entry  \(String(decoding: try encoder.encode(entry), as: UTF8.self))")
    }
}
