import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Logging
import Node
import Settlement
import Storage
import Transport

@main
struct CalissonNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calisson-node",
        abstract: "Run a Calisson validator node, or prepare a local test network.",
        version: "\(Release.version) (ledger rules \(LedgerRules.newest))",
        subcommands: [Keys.self, CA.self, Init.self, Testnet.self, Run.self, Status.self, Backup.self, Restore.self, Prune.self, Sync.self])
}

/// Writes a node's configuration and data directory from a genesis file and the keys
/// `keys generate` made (with the certificate `ca sign` returned), and checks it.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a node's config.json and data directory from a genesis file and a keys directory.")

    @Option(help: "The chain's genesis file (copied into --out).") var genesis: String
    @Option(help: "This node's partner id.") var partner: String
    @Option(help: "Directory with node.key, tls.key and tls.crt (from keys generate and ca sign).") var keys: String
    @Option(help: "The consortium CA certificate (copied into --out).") var ca: String
    @Option(help: "Directory to write.") var out: String
    @Option(help: "Listening address.") var host = "127.0.0.1"
    @Option(help: "Validator port.") var peerPort: UInt16
    @Option(help: "Client port.") var clientPort: UInt16?
    @Option(help: "Local HTTP port for /metrics and /health.") var metricsPort: UInt16?
    @Option(help: "Another validator, as id@host:port (repeat for each); a partner of the genesis.") var peer: [String] = []
    @Option(help: "A validator admitted by governance after the genesis, as id@host:port (not checked against the genesis).")
    var admittedPeer: [String] = []

    /// `id@host:port`, checked for form.
    static func peerAddress(_ entry: String, _ option: String) throws -> NodeConfigFile.Peer {
        let parts = entry.split(separator: "@", omittingEmptySubsequences: false)
        let address = parts.count == 2 ? parts[1].split(separator: ":", omittingEmptySubsequences: false) : []
        guard parts.count == 2, address.count == 2, !address[0].isEmpty, let port = UInt16(address[1]), port > 0, Identifier(String(parts[0])) != nil else {
            throw ValidationError("\(option) \(entry): expected id@host:port, the id 1-32 of a-z, 0-9, '-', the port 1 to 65535")
        }
        return NodeConfigFile.Peer(id: String(parts[0]), host: String(address[0]), port: port)
    }

    func run() throws {
        let fileManager = FileManager.default
        // Everything is checked before anything is written in --out: a missing key or a
        // mistyped peer leaves no half-written node behind.
        let genesisFile: GenesisFile
        do { genesisFile = try JSONFile.decode(GenesisFile.self, path: genesis) } catch { throw ValidationError("--genesis \(genesis): \(error)") }
        let known = Set(genesisFile.partners.map(\.id))
        guard Identifier(partner) != nil else { throw ValidationError("--partner \(partner): 1-32 of a-z, 0-9, '-'") }
        if !known.contains(partner) {
            print("note: \(partner) is not in the genesis: its node links once governance has admitted it (Docs/OPERATIONS.md)")
        }
        var peers = try peer.map { try Self.peerAddress($0, "--peer") }
        for entry in peers where !known.contains(entry.id) {
            throw ValidationError(
                "--peer \(entry.id) is no partner of the genesis (\(known.sorted().joined(separator: ", "))); a partner admitted since: --admitted-peer")
        }
        peers += try admittedPeer.map { try Self.peerAddress($0, "--admitted-peer") }
        let keyDirectory = URL(fileURLWithPath: keys).standardizedFileURL.path
        for name in ["node.key", "tls.key", "tls.crt"] where !fileManager.fileExists(atPath: "\(keyDirectory)/\(name)") {
            throw ValidationError("--keys \(keyDirectory) has no \(name) (keys generate writes the keys, ca sign the certificate)")
        }
        // A node's directory is made once: its files are never replaced (its database beside them).
        for name in ["config.json", "genesis.json", "ca.crt", "data/node.db"] where fileManager.fileExists(atPath: "\(out)/\(name)") {
            throw ValidationError("--out \(out) already holds \(name): a node's directory is made once (choose another, or remove it yourself)")
        }
        let outExisted = fileManager.fileExists(atPath: out)
        let staging = "\(out)/.init-\(getpid())"
        try fileManager.createDirectory(atPath: staging, withIntermediateDirectories: true)
        var done = false
        defer {
            try? fileManager.removeItem(atPath: staging)
            if !done, !outExisted { try? fileManager.removeItem(atPath: out) }
        }
        // Each file synced in the staging directory, then renamed, then the directory synced:
        // a crash leaves a node's files whole or absent.
        for (option, source, name) in [("--genesis", genesis, "genesis.json"), ("--ca", ca, "ca.crt")] {
            let bytes: [UInt8]
            do { bytes = try InputFile.read(source, byteCountMax: JSONFile.byteCountMax) } catch { throw ValidationError("\(option) \(error)") }
            try DurableFile.write(bytes: bytes, to: "\(staging)/\(name)")
        }
        let config = NodeConfigFile(
            partner: partner, genesis: "genesis.json", database: "data/node.db", nodeKey: "\(keyDirectory)/node.key",
            tlsKey: "\(keyDirectory)/tls.key", tlsCertificate: "\(keyDirectory)/tls.crt", ca: "ca.crt", host: host, peerPort: peerPort,
            clientPort: clientPort, peers: peers, metricsPort: metricsPort)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try DurableFile.write(bytes: Array(try encoder.encode(config)), to: "\(staging)/config.json")
        _ = try NodeConfigFile.load("\(staging)/config.json")  // every check a start makes, on the files as they will be
        // The database first (its directory may be a volume of its own that cannot take it),
        // then the files: a refusal leaves neither behind.
        let database = "\(out)/data/node.db"
        try NodeMaintenance.createDatabase(database)
        for name in ["genesis.json", "ca.crt", "config.json"] {
            guard rename("\(staging)/\(name)", "\(out)/\(name)") == 0 else {
                let reason = String(cString: strerror(errno))
                for suffix in ["", "-wal", "-shm"] { try? fileManager.removeItem(atPath: database + suffix) }
                throw ValidationError("cannot move \(name) into \(out): \(reason)")
            }
        }
        DurableFile.syncDirectory(of: "\(out)/config.json")
        done = true
        print("node \(partner) ready in \(out): calisson-node run --config \(out)/config.json")
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage a partner's keys.", subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate a partner's node key, signing key and TLS key (PEM, 0600), and a certificate signing request for the CA.")

        @Option(help: "The partner id (the certificate's common name).")
        var partner: String

        @Option(help: "Directory to write node.key, signing.key, tls.key, evidence.key, tls.csr and the public keys.")
        var out: String

        func run() throws {
            guard Identifier(partner) != nil else { throw ValidationError("--partner must be 1-32 characters of a-z, 0-9, '-'") }
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let keys = [("node", Ed25519PrivateKey()), ("signing", Ed25519PrivateKey()), ("tls", Ed25519PrivateKey())]
            for (name, key) in keys {
                try KeyFile.write(key, to: "\(out)/\(name).key")
                try KeyFile.write(key.publicKey, to: "\(out)/\(name).pub")
            }
            try EvidenceKey.generate().write(to: "\(out)/evidence.key")
            let request = try CertificateRequest.make(commonName: partner, key: keys[2].1)
            try request.pem.write(toFile: "\(out)/tls.csr", atomically: true, encoding: .utf8)
            print("keys for \(partner) in \(out): node.key, signing.key, tls.key, evidence.key (secret, 0600), their .pub, and tls.csr for the CA")
            print("genesis entry: nodeKey \(keys[0].1.publicKey.bytes.hex), signingKey \(keys[1].1.publicKey.bytes.hex)")
        }
    }
}

struct CA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "The consortium CA, held by the Métropole.", subcommands: [Init.self, Sign.self])

    /// A hundred years: X.509's dates end in 9999, and `days * 86_400` seconds trapped past Int's range.
    static let daysMax = 36_500

    static func checkDays(_ days: Int) throws {
        guard (1...daysMax).contains(days) else { throw ValidationError("--days must be from 1 to \(daysMax), not \(days)") }
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create the CA: ca.key (0600) and ca.crt.")
        @Option(help: "Directory to write.") var out: String
        @Option(help: "The CA's name.") var name = "Calisson consortium CA"
        @Option(help: "Validity in days (1 to \(CA.daysMax)).") var days = 3_650

        func validate() throws { try CA.checkDays(days) }

        func run() throws {
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let key = Ed25519PrivateKey()
            let certificate = try CertificateAuthority.makeRoot(name: name, key: key, notAfter: days * 86_400)
            try KeyFile.write(key, to: "\(out)/ca.key")
            try DurableFile.write(certificate.pem, to: "\(out)/ca.crt")
            print("CA '\(name)' in \(out): ca.key (secret), ca.crt")
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Certify a partner's TLS key from its request; prints the tlsKeyHash for the genesis or a rotateKeys proposal.")
        @Option(help: "Directory holding ca.key and ca.crt.") var ca: String
        @Option(help: "The partner's tls.csr.") var request: String
        @Option(help: "The certificate's serial number (unique in the consortium; revocation names it).") var serial: UInt64
        @Option(help: "Validity in days (1 to \(CA.daysMax)).") var days = 365
        @Option(help: "Where to write the certificate.") var out: String

        func validate() throws { try CA.checkDays(days) }

        func run() throws {
            guard serial > 0 else { throw ValidationError("--serial must be positive (X.509)") }
            let key = try KeyFile.readPrivateKey(at: "\(ca)/ca.key")
            func text(_ path: String, _ option: String) throws -> String {
                do { return String(decoding: try InputFile.read(path, byteCountMax: 1 << 20), as: UTF8.self) } catch { throw ValidationError("\(option) \(error)") }
            }
            let authority = try Certificate(pem: try text("\(ca)/ca.crt", "--ca"))
            let csr = try CertificateRequest(pem: try text(request, "--request"))
            guard Identifier(csr.commonName) != nil else { throw ValidationError("the request names '\(csr.commonName)', not a partner id") }
            // The register of what this CA issued (serial, partner, tlsKeyHash): a serial is
            // issued once, since revocation names certificates by serial.
            let register = "\(ca)/issued.tsv"
            // Only a register that does not exist yet is empty: one that cannot be read is never
            // replaced by this one line (it is the history revocation relies on).
            var issued = ""
            if FileManager.default.fileExists(atPath: register) {
                do { issued = try String(contentsOfFile: register, encoding: .utf8) } catch {
                    throw ValidationError("\(register): cannot read the register of issued serials (\(error.localizedDescription)): nothing issued")
                }
            }
            if let line = issued.split(separator: "\n").first(where: { $0.split(separator: "\t").first == Substring("\(serial)") }) {
                throw ValidationError("serial \(serial) was already issued by this CA (\(register): \(line.replacingOccurrences(of: "\t", with: " "))): choose another")
            }
            let certificate = try CertificateAuthority.issue(
                commonName: csr.commonName, subjectKey: csr.publicKey, ca: authority, caKey: key, serial: serial, notAfter: days * 86_400)
            // Durable before the certificate is handed out: a serial issued is never issued again.
            try DurableFile.write(issued + "\(serial)\t\(csr.commonName)\t\(certificate.publicKeyHash.hex)\n", to: register)
            try DurableFile.write(certificate.pem, to: out)
            print("certificate for \(csr.commonName), serial \(serial), in \(out); tlsKeyHash \(certificate.publicKeyHash.hex)")
        }
    }
}

/// An online copy of a node's database, checked by opening it as the node would.
struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a node's database while it runs (a consistent snapshot), then check the copy.")
    @Option(help: "The node's configuration file.") var config: String
    @Option(help: "The copy to write (must not exist).") var out: String

    func run() throws {
        let configuration: NodeConfiguration
        configuration = try NodeConfigFile.load(config)
        guard !FileManager.default.fileExists(atPath: out) else { throw ValidationError("--out \(out) exists") }
        // Written under another name, checked, then linked as `out` (never over a file that
        // appeared meanwhile) and its directory synced: a backup stopped half way is never
        // found at `out`, where a restore would take it.
        let staging = "\(out).partial-\(getpid())"
        defer { for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: staging + suffix) } }
        let source = try NodeStore(file: configuration.databaseFile, readOnly: true)
        try source.backup(to: staging)
        let copy = try NodeStore(file: staging, readOnly: true)  // the same checks as at a node's start
        defer { copy.close() }
        guard link(staging, out) == 0 else {
            throw ValidationError("--out \(out): cannot put the checked copy there (\(String(cString: strerror(errno))))")
        }
        DurableFile.syncDirectory(of: out)
        print("backup of \(configuration.databaseFile) in \(out): height \(copy.height), state at \(copy.stateHeight) with root \(copy.stateRoot.hex)")
    }
}

/// A backup put in place of a stopped node's database (Docs/OPERATIONS.md, "Backups").
struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a backup in place of a stopped node's database; the files it replaces are moved aside, not deleted.")
    @Option(help: "The node's configuration file.") var config: String
    @Option(help: "The backup to restore (from `calisson-node backup`); it is only read.") var from: String

    func run() throws {
        let configuration = try NodeConfigFile.load(config)
        let report = try NodeMaintenance.restore(databaseFile: configuration.databaseFile, from: from, genesis: configuration.genesis)
        print("restored \(from) as \(configuration.databaseFile): height \(report.height), state at \(report.stateHeight) with root \(report.stateRoot.hex)")
        for file in report.movedAside { print("moved aside: \(file)") }
        switch report.safetyLog {
        case .noDatabase: print("no database was in place: the node knows the votes the backup holds only (if it voted since, it may vote twice: Docs/OPERATIONS.md, \"Backups\")")
        case let .carried(records): print("the votes recorded by the database replaced are kept (its safety log, \(records) records)")
        case let .behindTheBackup(height): print("the database replaced was behind the backup (height \(height)): the backup's safety log is kept")
        case let .unreadable(reason):
            print("warning: the safety log of the database replaced could not be read (\(reason)): the node knows the votes the backup holds only; "
                + "if it voted since, it may vote twice (Docs/OPERATIONS.md, \"Backups\")")
        }
        print("start the node: it fetches the blocks since the backup from its peers")
    }
}

/// Joining from a snapshot: a new node's database written at the chain's latest stable
/// checkpoint instead of replayed from the genesis (Docs/OPERATIONS.md).
struct Sync: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new node's database from the latest certified checkpoint of running nodes, then start it with `run`.",
        discussion: """
            Every page and value of the state is checked against the checkpoint's certificate, \
            itself checked against the validator sets followed from the genesis. The node has \
            no history before the checkpoint (Docs/OPERATIONS.md, "Joining from a snapshot").
            """)
    @Option(help: "The new node's configuration file (from `calisson-node init`).") var config: String
    @Option(help: "A running node's client port, as host:port (repeat: the next is asked when one fails or lies).") var from: [String] = []

    func run() throws {
        guard !from.isEmpty else { throw ValidationError("--from: give the client port of at least one running node (host:port)") }
        let sources = try from.map { (text: String) throws -> NetworkEndpoint in
            guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port > 0,
                !text[..<colon].isEmpty
            else { throw ValidationError("--from \(text): expected host:port with a port from 1 to 65535") }
            return NetworkEndpoint(host: String(text[..<colon]), port: port)
        }
        let configuration = try NodeConfigFile.load(config)
        let started = Date()
        let report = try NodeMaintenance.syncFromSnapshot(configuration: configuration, sources: sources) { line in
            FileHandle.standardError.write(Data("calisson-node sync: \(line)\n".utf8))
        }
        let seconds = Date().timeIntervalSince(started)
        print("\(configuration.databaseFile): checkpoint \(report.height), state root \(report.root.hex), from \(report.source)")
        print("state: \(report.records) records in \(report.pages) tree pages; fetched \(report.pagesFetched) pages and \(report.valuesFetched) values "
            + "(\(report.bytesFetched) bytes), reused \(report.pagesReused + report.valuesReused) fetched before; "
            + "\(report.restarts) restarts from a newer checkpoint; \(String(format: "%.1f", seconds)) s")
        print("start the node (calisson-node run --config \(config)): it follows the blocks after \(report.height) from its peers")
    }
}

/// Retention, once, on a stopped node (a running node prunes itself with `retainBlocks`).
struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop old block bodies from a stopped node's database (headers, certificates, results and the state stay).",
        discussion: """
            A running node prunes itself at its checkpoints when its configuration sets \
            retainBlocks. What a pruned node can no longer serve is in Docs/OPERATIONS.md, "Retention".
            """)
    @Option(help: "The node's configuration file.") var config: String
    @Option(help: "Keep the bodies of this many latest blocks (at least \(NodeConfiguration.retainBlocksMin)).") var keepBlocks: UInt64
    @Flag(help: "Then rebuild the file without its free pages (needs as much free disk as the database).") var vacuum = false

    func run() throws {
        guard keepBlocks >= NodeConfiguration.retainBlocksMin else {
            throw ValidationError("--keep-blocks \(keepBlocks) is below \(NodeConfiguration.retainBlocksMin): peers that were down catch up from these blocks")
        }
        let configuration = try NodeConfigFile.load(config)
        let report = try NodeMaintenance.prune(databaseFile: configuration.databaseFile, keep: keepBlocks, vacuum: vacuum)
        print("\(configuration.databaseFile): height \(report.height); bodies dropped for \(report.pruned) blocks this run, kept from height \(report.keptFrom)")
        print("file \(report.bytesBefore) bytes before, \(report.bytesAfter) after; \(report.freeBytes) bytes free inside it\(vacuum ? "" : " (reused by later blocks; --vacuum gives them back)")")
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ask a running node (from its configuration file) for its status.")
    @Option(help: "The node's configuration file.") var config: String

    func run() throws {
        let configuration: NodeConfiguration
        configuration = try NodeConfigFile.load(config)
        guard let port = configuration.transport.clientPort else { throw ValidationError("the configuration has no clientPort") }
        let client = try TransportClient(host: configuration.transport.host, port: port, ca: configuration.transport.ca, chainId: configuration.genesis.chainId)
        defer { client.close() }
        guard case let .status(status) = try ClientResponse(wireBytes: try client.request(ClientRequest.status.wireBytes)) else {
            throw ValidationError("unexpected answer")
        }
        print("partner \(status.partner), height \(status.height), state root \(status.stateRoot.hex), view \(status.view), epoch from \(status.epochFirstSeq)")
        print("linked to: \(status.peers.joined(separator: ", ")); mempool \(status.mempool)")
        for (name, value) in status.operatorFields { print("\(name): \(value)") }
    }
}

/// Writes a ready local cluster: CA, keys, certificates, genesis, one config per node.
struct Testnet: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a local cluster on loopback: CA, keys, TLS certificates, genesis and one config per node.",
        discussion: """
            The Métropole (authority, central counterparty) and N-1 partners — a transit operator, \
            a waste service, a cultural venue, an energy supplier, then generic partners — each \
            running a validator. Sample programmes: waste-sorting rewards, a transit bonus, a \
            transferable culture pass with demurrage. Ports: base-port + 2i (validators) and \
            base-port + 2i + 1 (clients) and base-port + 1000 + i (HTTP /metrics and /health) for node i.
            """)

    @Option(help: "Validators (1...64).")
    var validators = 4

    @Option(help: "Directory to write (must not exist or be empty).")
    var out: String

    @Option(help: "First port.")
    var basePort: UInt16 = 7100

    @Option(help: "Chain id.")
    var chainId = "calisson-local"

    @Option(help: "Blocks per ledger epoch (each ends with expiry and clearing). Blocks are made for transactions, and up to 7 empty ones after each idle spell to complete a checkpoint.")
    var epochLength: UInt64 = 500

    @Option(help: "How far above the current height a transaction's expiry may be, in blocks (benchmarks pre-sign far ahead).")
    var transactionLifetime: UInt64 = 600

    @Option(help: "Each node's blockWaitMilliseconds (0...1000; absent: the node's default, Docs/NODE.md).")
    var blockWaitMs: UInt64?

    @Option(help: "Each node's blockCommandsMax, transactions per block at most (1...10000; absent: the node's default, 1000).")
    var blockCommandsMax: Int?

    @Option(help: "Each node's stateWriteCheckpoints, checkpoints per write of the state (1...64; absent: the node's default, 4).")
    var stateWriteCheckpoints: UInt64?

    @Option(help: "The ledger rules the chain starts with (1 up to this release's newest; from \(LedgerRules.endpoints) on, the genesis lists each node's endpoint).")
    var rules: UInt32 = LedgerRules.newest

    @Flag(help: "List no endpoints in the genesis: the nodes find each other by their configurations' peers (tests that route links through relays or namespaces).")
    var noEndpoints = false

    static let names: [(String, String, [String])] = [
        ("metropole", "Métropole Aix-Marseille-Provence", ["authority", "issuer", "acceptor", "validator"]),
        ("rtm", "Régie des transports métropolitains", ["issuer", "acceptor", "validator"]),
        ("tri-metropole", "Service déchets et tri", ["issuer", "validator"]),
        ("friche", "La Friche la Belle de Mai", ["issuer", "acceptor", "validator"]),
        ("energie", "Fournisseur d'énergie local", ["issuer", "acceptor", "validator"]),
    ]

    func run() throws {
        guard (1...64).contains(validators) else { throw ValidationError("--validators must be 1...64") }
        // What every tool and log shows as it is: printable ASCII (a byte that is not UTF-8
        // came through as U+FFFD and was written into the genesis).
        guard (1...SigningDomain.chainIdByteCountMax).contains(chainId.utf8.count), chainId.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw ValidationError("--chain-id must be 1 to \(SigningDomain.chainIdByteCountMax) printable ASCII characters, no space")
        }
        guard epochLength > 0 else { throw ValidationError("--epoch-length must be positive") }
        guard (LedgerRules.initial...LedgerRules.newest).contains(rules) else {
            throw ValidationError("--rules must be \(LedgerRules.initial)...\(LedgerRules.newest), the ledger rules this release implements")
        }
        if let blockWaitMs, blockWaitMs > 1_000 { throw ValidationError("--block-wait-ms must be 0...1000, not \(blockWaitMs)") }
        if let blockCommandsMax, !(1...10_000).contains(blockCommandsMax) {
            throw ValidationError("--block-commands-max must be 1...10000, not \(blockCommandsMax)")
        }
        if let stateWriteCheckpoints, !(1...NodeConfiguration.stateWriteCheckpointsMax).contains(stateWriteCheckpoints) {
            throw ValidationError("--state-write-checkpoints must be 1...\(NodeConfiguration.stateWriteCheckpointsMax), not \(stateWriteCheckpoints)")
        }
        guard Int(basePort) + 1_000 + validators < 65_536 else { throw ValidationError("--base-port too high for \(validators) validators") }
        let fileManager = FileManager.default
        if let existing = try? fileManager.contentsOfDirectory(atPath: out), !existing.isEmpty {
            throw ValidationError("\(out) is not empty")
        }
        try fileManager.createDirectory(atPath: out, withIntermediateDirectories: true)
        let caKey = Ed25519PrivateKey()
        let ca = try CertificateAuthority.makeRoot(name: "Calisson local CA", key: caKey)
        try KeyFile.write(caKey, to: "\(out)/ca.key")
        try ca.pem.write(toFile: "\(out)/ca.crt", atomically: true, encoding: .utf8)

        var partners: [GenesisFile.PartnerEntry] = []
        var ids: [String] = []
        for index in 0..<validators {
            let (id, name, roles) = index < Self.names.count ? Self.names[index] : ("partenaire-\(index)", "Partenaire \(index)", ["issuer", "acceptor", "validator"])
            ids.append(id)
            let directory = "\(out)/\(id)"
            try fileManager.createDirectory(atPath: "\(directory)/data", withIntermediateDirectories: true)
            let nodeKey = Ed25519PrivateKey(), signingKey = Ed25519PrivateKey(), tlsKey = Ed25519PrivateKey()
            try KeyFile.write(nodeKey, to: "\(directory)/node.key")
            try KeyFile.write(signingKey, to: "\(directory)/signing.key")
            try KeyFile.write(tlsKey, to: "\(directory)/tls.key")
            try EvidenceKey.generate().write(to: "\(directory)/evidence.key")
            let certificate = try CertificateAuthority.issue(commonName: id, subjectKey: tlsKey.publicKey, ca: ca, caKey: caKey, serial: UInt64(index + 2))
            try certificate.pem.write(toFile: "\(directory)/tls.crt", atomically: true, encoding: .utf8)
            partners.append(GenesisFile.PartnerEntry(
                id: id, name: name, roles: roles, signingKey: signingKey.publicKey.bytes.hex, nodeKey: nodeKey.publicKey.bytes.hex,
                tlsKeyHash: certificate.publicKeyHash.hex,
                endpoints: rules >= LedgerRules.endpoints && !noEndpoints ? ["127.0.0.1:\(basePort + UInt16(2 * index))"] : nil))
        }
        let has = { (id: String) in ids.contains(id) }
        var programmes: [GenesisFile.ProgrammeEntry] = [
            .init(id: "recyclage", name: "Tri sélectif", category: "wasteSorting", rewardPerUnit: 10,
                  issuers: has("tri-metropole") ? ["tri-metropole", "metropole"] : ["metropole"], sponsor: "metropole",
                  capPerAccount: 2_000, capPeriod: "month", walletCeiling: 5_000, budget: 100_000_000, expiryEpochs: 12),
        ]
        if has("rtm") {
            programmes.append(.init(id: "mobilite", name: "Bonus mobilité douce", category: "transit", rewardPerUnit: 5, issuers: ["rtm"], sponsor: "rtm",
                                    capPerAccount: 500, capPeriod: "week", walletCeiling: 3_000, budget: 5_000_000, expiryEpochs: 6, acceptors: ["rtm"]))
        }
        if has("friche") {
            programmes.append(.init(id: "culture", name: "Pass culture", category: "event", rewardPerUnit: 100, issuers: ["friche", "metropole"], sponsor: "friche",
                                    capPerAccount: 1_000, capPeriod: "month", walletCeiling: 2_000, budget: 2_000_000, demurrageBasisPoints: 200,
                                    transferable: true))
        }
        let genesis = GenesisFile(
            chainId: chainId, parameters: .init(epochLength: epochLength, blocksPerDay: 8_640, transactionLifetimeMax: transactionLifetime, sink: "metropole",
                               tokenValueMicroEuros: 10_000), partners: partners,
            validators: ids, programmes: programmes, rules: rules == LedgerRules.initial ? nil : rules)
        _ = try genesis.validated()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(genesis).write(to: URL(fileURLWithPath: "\(out)/genesis.json"))
        try encoder.encode(Self.exampleRegister(partners)).write(to: URL(fileURLWithPath: "\(out)/settlement-register.json"))
        for (index, id) in ids.enumerated() {
            let peers = ids.enumerated().filter { $0.offset != index }.map {
                NodeConfigFile.Peer(id: $0.element, host: "127.0.0.1", port: basePort + UInt16(2 * $0.offset))
            }
            var config = NodeConfigFile(
                partner: id, genesis: "../genesis.json", database: "data/node.db", nodeKey: "node.key", tlsKey: "tls.key", tlsCertificate: "tls.crt",
                ca: "../ca.crt", host: "127.0.0.1", peerPort: basePort + UInt16(2 * index), clientPort: basePort + UInt16(2 * index + 1), peers: peers,
                metricsPort: basePort + 1_000 + UInt16(index))
            config.blockWaitMilliseconds = blockWaitMs
            config.blockCommandsMax = blockCommandsMax
            config.stateWriteCheckpoints = stateWriteCheckpoints
            try encoder.encode(config).write(to: URL(fileURLWithPath: "\(out)/\(id)/config.json"))
            try NodeMaintenance.createDatabase("\(out)/\(id)/data/node.db")
        }
        print("testnet: \(validators) validators in \(out) (\(ids.joined(separator: ", "))); client ports \(basePort + 1)...\(basePort + UInt16(2 * validators - 1)) step 2")
    }
}

extension Testnet {
    /// A settlement register for the testnet's partners, fictitious but valid: French
    /// IBANs of a bank code no bank has (99999) with correct RIB keys and check digits,
    /// a creditor identifier for the Métropole, and a direct-debit mandate for every
    /// other partner from the second on (so `make run` shows both kinds of collection).
    static func exampleRegister(_ partners: [GenesisFile.PartnerEntry]) -> RegisterFile {
        func iban(_ index: Int) -> String {
            let branch = String(repeating: "0", count: 5 - "\(index + 1)".count) + "\(index + 1)"
            return IBAN.french(bank: "99999", branch: branch, account: "0000000\(1_000 + index)")
        }
        let payer = partners.first { $0.roles.contains("authority") } ?? partners[0]
        var entries: [RegisterFile.Entry] = []
        for (index, partner) in partners.enumerated() where partner.id != payer.id {
            entries.append(RegisterFile.Entry(
                partner: partner.id, legalName: partner.name, iban: iban(index), bic: "CALSFRPPXXX",
                mandate: entries.count % 2 == 1 ? RegisterFile.Mandate(id: "CAL-\(partner.id.uppercased())-2026", signedOn: "2026-01-15") : nil))
        }
        return RegisterFile(
            payer: .init(partner: payer.id, legalName: payer.name, iban: iban(0), bic: "CALSFRPPXXX",
                         creditorId: CreditorIdentifier.make(country: "FR", business: "ZZZ", national: "999999")),
            partners: entries)
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a validator node until SIGTERM or SIGINT.")

    @Option(help: "The node's configuration file (JSON).")
    var config: String

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Flag(help: "Stop, as on SIGTERM, when the process that started the node ends (for tools and tests that start nodes: one that crashes leaves none running).")
    var exitWithParent = false

    #if CALISSON_FAULTS
    @Option(help: "Test builds only (absent from release builds): misbehave towards the other validators: equivocate, garbage, replay or withhold.")
    var byzantine: String?
    @Option(help: "Test builds only: the seed of the Byzantine mode's choices (default: from the clock; logged either way, to replay a run).")
    var byzantineSeed: UInt64?
    @Option(help: "Test builds only: execute ledger rules up to this version, as a binary built before a later upgrade would.")
    var rulesNewest: UInt32?
    #endif

    /// The exit status of a node that stopped for an upgrade it lacks (a supervisor swaps
    /// the binary on it; any other failure is 1).
    static let upgradeNeededStatus: Int32 = 3

    func run() throws {
        // Read first, before anything slow: the process that started this one.
        let parent = getppid()
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level '\(logLevel)'") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        // SIGTERM and SIGINT are blocked in every thread (threads inherit this mask) and
        // taken with sigtimedwait below: the node then stops cleanly (links closed, the
        // store consistent: every block is one SQL transaction) and the process exits.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        var configuration = try NodeConfigFile.load(config)
        #if CALISSON_FAULTS
        if let byzantine {
            guard let mode = ByzantineMode(rawValue: byzantine) else {
                throw ValidationError("--byzantine: one of \(ByzantineMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            configuration.byzantine = mode
            configuration.byzantineSeed = byzantineSeed ?? UInt64(truncatingIfNeeded: Date().timeIntervalSince1970.bitPattern)
        }
        if let rulesNewest {
            guard (LedgerRules.initial...LedgerRules.newest).contains(rulesNewest) else {
                throw ValidationError("--rules-newest must be from \(LedgerRules.initial) to \(LedgerRules.newest)")
            }
            configuration.rulesNewest = rulesNewest
        }
        #endif
        if let missing = NodeMaintenance.missingDatabase(configuration.databaseFile) {
            FileHandle.standardError.write(Data("calisson-node: not started: \(missing)\n".utf8))
            throw ExitCode.failure
        }
        let dataDirectory = URL(fileURLWithPath: configuration.databaseFile).deletingLastPathComponent().path
        // SQLite needs to create its -wal and -shm files next to the database: say so plainly
        // rather than "unable to open database file".
        guard access(dataDirectory, W_OK) == 0 else {
            let reason = String(cString: strerror(errno))
            FileHandle.standardError.write(Data("calisson-node: the data directory \(dataDirectory) is not writable: \(reason)\n".utf8))
            throw ExitCode.failure
        }
        let node: NodeRuntime
        do { node = try NodeRuntime(configuration: configuration) } catch let NodeError.upgradeNeeded(reason) {
            FileHandle.standardError.write(Data("calisson-node: not started: \(reason)\n".utf8))
            throw ExitCode(Self.upgradeNeededStatus)
        }
        try node.start()
        var second = timespec(tv_sec: 1, tv_nsec: 0)
        while node.failure == nil {
            let received = sigtimedwait(&signals, nil, &second)
            if received == SIGTERM || received == SIGINT { break }
            // An orphan is adopted by another process: its parent changes.
            if exitWithParent && getppid() != parent {
                Logger(label: "calisson.node").notice("the process that started the node ended: stopping", metadata: ["parent": "\(parent)"])
                break
            }
        }
        node.stop()
        if node.missingUpgrade != nil, let reason = node.failure {
            FileHandle.standardError.write(Data("calisson-node: stopped: \(reason)\n".utf8))
            throw ExitCode(Self.upgradeNeededStatus)
        }
        if let failure = node.failure {
            FileHandle.standardError.write(Data("calisson-node: stopped on failure: \(failure)\n".utf8))
            throw ExitCode.failure
        }
    }
}
