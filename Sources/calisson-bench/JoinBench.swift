import ArgumentParser
import CalissonCrypto
import Consensus
import Foundation
import Ledger
import LightClient
import Logging
import Node
import Storage
import Synchronization
import Transport
import Wire

/// How long a new node takes to join a chain of `accounts` citizen accounts: replaying
/// every block from the genesis against starting from a snapshot of the latest certified
/// checkpoint (Docs/OPERATIONS.md, "Joining from a snapshot"), side by side in one run.
struct JoinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join",
        abstract: "Time to join a chain of N accounts: replaying its blocks against a state sync from its latest checkpoint.",
        discussion: """
            First builds the chain: one validator's SQLite database, blocks of signed \
            attributions each to a new account, a commit certificate per block (signed) and a \
            checkpoint certificate at the last block (a multiple of 8). Then, timed: \
            (1) replay: every block read from that database, its certificate and every \
            transaction's signature checked, executed and persisted into a new database, as a \
            node catching up from the genesis does (without the network: a lower bound); \
            (2) snapshot: `StateSync` over TLS from a client port serving that database with \
            the node's own answers, into a new database. Both must reach the same state root.
            """)

    @Option(help: "Citizen accounts (one attribution each).") var accounts = 1_000_000
    @Option(help: "Transactions per block.") var blockSize = 1_000
    @Option(help: "Directory for the databases (default: a fresh temporary one, removed after).") var directory: String?

    func run() throws {
        guard accounts >= blockSize, blockSize > 0, accounts <= 100_000_000 else {
            throw ValidationError("--accounts must be at least --block-size (and at most 100,000,000), --block-size positive")
        }
        let blocks = UInt64(clamping: accounts / blockSize) / 8 * 8
        guard blocks >= 8 else { throw ValidationError("at least 8 blocks are needed (a checkpoint): raise --accounts or lower --block-size") }
        let folder = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("calisson-bench-join-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: folder) } }
        let key = Ed25519PrivateKey(seed: SHA256.hash("bench join validator").bytes)!
        let signer = NodeSigner(key: key)
        let file = StorageCommand.genesis(key.publicKey)
        let genesis = try file.validated()
        print("calisson-bench join: \(blocks) blocks of \(blockSize) attributions, each to a new account (\(blocks * UInt64(clamping: blockSize)) accounts), in \(folder)")

        // The chain.
        let clock = ContinuousClock()
        var start = clock.now
        let source = StoredState(store: try NodeStore(file: folder + "/source.db", create: true))
        var ledger = try Ledger.create(genesis, in: source)
        try source.persistGenesis(extras: ["genesis": genesis.digest.bytes])
        var nonce: UInt64 = 0
        for height in 1...blocks {
            let commands = (0..<blockSize).map { _ -> [UInt8] in
                nonce += 1
                return StorageCommand.attribution(genesis, key: key, nonce: nonce, expiry: height + 50, account: nonce)
            }
            let block = Block(seq: height, commands: commands)
            let outcome = try source.store.reading { ledger.execute(commands, verify: { _ in true }) }
            let certificate = CommitCertificate(commits: [Signed(Vote(kind: .commit, view: 0, seq: height, digest: block.digest), chainId: genesis.chainId, signer: signer)])
            try source.persist(BlockRecord(
                height: height, digest: block.digest, body: block.wireBytes, certificate: certificate.wireBytes, stateRoot: outcome.stateRoot,
                transactions: zip(block.commandIDs, outcome.results).map { TransactionRecord(id: $0, result: StoreAnswers.result($1, committed: outcome.resultsCommitted), accounts: []) }))
            if height % 8 == 0 { try source.store.pruneHistory(through: height) }
            if height % 100 == 0 { print("  built \(height) of \(blocks) blocks") }
        }
        let checkpoint = CheckpointCertificate(votes: [Signed(CheckpointVote(seq: blocks, stateRoot: ledger.stateRoot), chainId: genesis.chainId, signer: signer)])
        try source.store.putCheckpoint(height: blocks, certificate: checkpoint.wireBytes)
        try source.store.checkpointWAL()
        print(String(format: "  chain built in %.1f s: height %llu, root %@, %.0f MB", seconds(clock.now - start), blocks, ledger.stateRoot.hex,
                     Double(source.store.fileBytes) / 1e6))

        // (1) Replay.
        start = clock.now
        var cpu = ProcessUsage.cpuMilliseconds()
        let replayed = StoredState(store: try NodeStore(file: folder + "/replay.db", create: true))
        var replay = try Ledger.create(genesis, in: replayed)
        try replayed.persistGenesis()
        for height in 1...blocks {
            guard let record = try source.store.block(at: height), let body = record.body else { throw ValidationError("block \(height) is missing") }
            let block = try Block(wireBytes: body)
            try InclusionCheck.verifyCommit(digest: block.digest, height: height, certificate: record.certificate, validators: [key.publicKey], chainId: genesis.chainId)
            let commands = block.commands
            let outcome = try replayed.store.reading { replay.execute(commands, verify: { $0.verify() }) }
            guard outcome.stateRoot == record.stateRoot else { throw ValidationError("replay: block \(height) gives another state root") }
            try replayed.persist(BlockRecord(
                height: height, digest: block.digest, body: body, certificate: record.certificate, stateRoot: outcome.stateRoot,
                transactions: zip(block.commandIDs, outcome.results).map { TransactionRecord(id: $0, result: StoreAnswers.result($1, committed: outcome.resultsCommitted), accounts: []) }))
            if height % 8 == 0 { try replayed.store.pruneHistory(through: height) }
        }
        try replayed.store.checkpointWAL()
        let replaySeconds = seconds(clock.now - start)
        let replayCPU = Double(ProcessUsage.cpuMilliseconds() - cpu) / 1_000
        print(String(format: "  replay:   %7.1f s, %5.1f CPU-s, %6.0f tx/s, %.0f MB", replaySeconds, replayCPU, Double(blocks) * Double(blockSize) / replaySeconds,
                     Double(replayed.store.fileBytes) / 1e6))
        replayed.store.close()

        // (2) Snapshot, over TLS from a client port answering as a node does.
        let caKey = Ed25519PrivateKey(seed: SHA256.hash("bench join ca").bytes)!
        let ca = try CertificateAuthority.makeRoot(name: "bench CA", key: caKey)
        let tlsKey = Ed25519PrivateKey(seed: SHA256.hash("bench join tls").bytes)!
        let tls = try CertificateAuthority.issue(commonName: "metropole", subjectKey: tlsKey.publicKey, ca: ca, caKey: caKey, serial: 2)
        var configuration = TransportConfiguration(chainId: genesis.chainId, selfID: "metropole", identity: TLSIdentity(certificate: tls, key: tlsKey), ca: ca)
        configuration.clientPort = 0
        var logger = Logger(label: "bench-join")
        logger.logLevel = .warning
        let loop = EventLoop(name: "bench-join")
        let transport = try Transport(configuration: configuration, loop: loop, logger: logger)
        // Used on the transport's loop thread only, as the node uses its own.
        nonisolated(unsafe) let answers = ClientAnswers(store: source.store, ledger: ledger)
        transport.onClientRequest = { bytes, _, respond in
            guard let request = try? ClientRequest(wireBytes: bytes),
                case let .answer(response) = answers.outcome(of: request.bounded, status: { NodeStatus(partner: "metropole", height: blocks, stateRoot: .zero, view: 0, epochFirstSeq: 1, peers: [], mempool: 0) })
            else { return respond(ClientResponse.error("not served by this benchmark").wireBytes) }
            respond(response.wireBytes)
        }
        try transport.start()
        defer {
            transport.stop()
            loop.shutdown()
        }
        start = clock.now
        cpu = ProcessUsage.cpuMilliseconds()
        let synced = try NodeStore(file: folder + "/snapshot.db", create: true)
        let client = Mutex(try TransportClient(host: "127.0.0.1", port: transport.clientPort, ca: ca, chainId: genesis.chainId, timeoutMilliseconds: 60_000))
        defer { client.withLock { $0.close() } }
        let sync = StateSync(
            genesis: genesis, genesisSchedule: EpochSchedule(genesis: ValidatorSet([key.publicKey])!, checkpointInterval: 8, window: 32),
            nodeKey: Ed25519PrivateKey(seed: SHA256.hash("bench join newcomer").bytes)!.publicKey, store: synced,
            sources: [StateSync.Source(name: "127.0.0.1:\(transport.clientPort)") { requests in
                try client.withLock { client in
                    try client.pipeline(requests.map(\.wireBytes), timeoutMilliseconds: 60_000).map { try ClientResponse(wireBytes: $0.get()) }
                }
            }], log: { print("  sync: \($0)") })
        let report = try sync.run()
        try synced.checkpointWAL()
        let snapshotSeconds = seconds(clock.now - start)
        let snapshotCPU = Double(ProcessUsage.cpuMilliseconds() - cpu) / 1_000
        guard report.root == ledger.stateRoot, synced.stateRoot == ledger.stateRoot, report.height == blocks else {
            throw ValidationError("snapshot: reached \(report.root.hex) at \(report.height), the chain is at \(ledger.stateRoot.hex)")
        }
        print(String(format: "  snapshot: %7.1f s, %5.1f CPU-s (both ends), %d records, %d pages, %d values fetched, %.0f MB fetched, %.0f MB on disk",
                     snapshotSeconds, snapshotCPU, report.records, report.pages, report.valuesFetched, Double(report.bytesFetched) / 1e6,
                     Double(synced.fileBytes) / 1e6))
        print(String(format: "  replay / snapshot time: %.1f; CPU: %.1f", replaySeconds / snapshotSeconds, replayCPU / snapshotCPU))
    }

    func seconds(_ duration: Duration) -> Double { Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18 }
}
