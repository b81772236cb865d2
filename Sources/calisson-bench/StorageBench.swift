import ArgumentParser
import CalissonCrypto
import Fixtures
import Foundation
import Ledger
import LightClient
import Node
import Storage
import Wire

struct StorageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Blocks of signed transactions executed and committed to SQLite per second, and bytes on disk per transaction.",
        discussion: """
            The same blocks run on two ledgers side by side: one on the SQLite node store \
            (WAL, synchronous=FULL: one fsync per block; history pruned every 8 blocks, as at \
            checkpoints) and one in memory. The ratio is what durability costs; bytes on disk \
            are the database after a WAL checkpoint.
            """)

    @Option(help: "Transactions per block.")
    var blockSize = 1_000

    @Option(help: "Blocks.")
    var blocks = 30

    @Option(help: "Directory for the database (default: a fresh temporary one).")
    var directory: String?

    @Option(help: "Citizen accounts the attributions go to, round robin.")
    var accounts = 50_000

    @Option(help: "SQLite's memory map window, MiB (the node's storageMapMegabytes).")
    var mapMegabytes = NodeStore.Tuning.default.mapBytes >> 20

    @Option(help: "SQLite's page cache, MiB (the node's storageCacheMegabytes).")
    var cacheMegabytes = NodeStore.Tuning.default.cacheBytes >> 20

    func validate() throws {
        guard (1...10_000).contains(blockSize) else { throw ValidationError("--block-size: 1 to 10000 (a node's blockCommandsMax), not \(blockSize)") }
        guard (1...1_000_000).contains(blocks) else { throw ValidationError("--blocks: 1 to 1000000, not \(blocks)") }
        guard (1...1_000_000_000).contains(accounts) else { throw ValidationError("--accounts: 1 to 1000000000, not \(accounts)") }
        // The node's bounds for storageMapMegabytes and storageCacheMegabytes.
        guard (0...4_096).contains(mapMegabytes) else { throw ValidationError("--map-megabytes: 0 to 4096, not \(mapMegabytes)") }
        guard (1...4_096).contains(cacheMegabytes) else { throw ValidationError("--cache-megabytes: 1 to 4096, not \(cacheMegabytes)") }
    }

    func run() throws {
        let folder = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("calisson-bench-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let file = folder + "/node.db"
        print("calisson-bench storage: \(blocks) blocks of \(blockSize) Attribute transactions to \(accounts) accounts, map \(mapMegabytes) MiB, cache \(cacheMegabytes) MiB, \(file)")
        let issuer = Ed25519PrivateKey(seed: SHA256.hash("bench issuer").bytes)!
        let genesis = try StorageCommand.genesis(issuer.publicKey).validated()
        let tuning = NodeStore.Tuning(mapBytes: mapMegabytes << 20, cacheBytes: cacheMegabytes << 20)
        let state = StoredState(store: try NodeStore(file: file, create: true, tuning: tuning))
        var durable = try Ledger.create(genesis, in: state)
        try state.persistGenesis()
        var memory = try Ledger.create(genesis, in: MemoryStateStore())

        let clock = ContinuousClock()
        var durableTime = Duration.zero, memoryTime = Duration.zero
        var nonce: UInt64 = 0
        for height in 1...UInt64(blocks) {
            let commands = (0..<blockSize).map { index -> [UInt8] in
                nonce += 1
                return Self.attribution(genesis, key: issuer, nonce: nonce, expiry: height + 10, account: nonce % UInt64(accounts))
            }
            var start = clock.now
            _ = memory.execute(commands, verify: { _ in true })
            memoryTime += clock.now - start

            start = clock.now
            // In one read transaction, as the node executes a block.
            let outcome = try state.store.reading { durable.execute(commands, verify: { _ in true }) }
            var body = WireWriter()
            for command in commands { body.writeBytes(command) }
            let record = BlockRecord(
                height: height, digest: SHA256.hash(body.bytes), body: body.bytes, certificate: [UInt8](repeating: 7, count: 3 * 96 + 16),
                stateRoot: outcome.stateRoot,
                transactions: commands.enumerated().map { index, command in
                    TransactionRecord(id: SignedTransaction.idTag.hash(command), result: StoreAnswers.result(outcome.results[index], committed: outcome.resultsCommitted),
                                      accounts: [SHA256.hash("account \((nonce - UInt64(blockSize) + UInt64(index) + 1) % UInt64(accounts))")])
                })
            try state.persist(record)
            // As a node does when a checkpoint (every 8 blocks by default) is served.
            if height % 8 == 0 { try state.store.pruneHistory(through: height) }
            durableTime += clock.now - start
        }
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        let store = state.store
        try store.checkpointWAL()
        let bytes = store.fileBytes
        let transactions = Double(blocks * blockSize)
        print(String(format: "  SQLite, durable:  %6.2f blocks/s, %8.0f tx/s", Double(blocks) / seconds(durableTime), transactions / seconds(durableTime)))
        print(String(format: "  in memory:        %6.2f blocks/s, %8.0f tx/s", Double(blocks) / seconds(memoryTime), transactions / seconds(memoryTime)))
        print(String(format: "  durable / memory time: %.2f", seconds(durableTime) / seconds(memoryTime)))
        print(String(format: "  on disk: %.1f MB, %.0f bytes per transaction", Double(bytes) / 1e6, Double(bytes) / transactions))
        if directory == nil { try? FileManager.default.removeItem(atPath: folder) }
    }

    /// A signed attribution of the bench programme by the Métropole to citizen `account`.
    static func attribution(_ genesis: Genesis, key: Ed25519PrivateKey, nonce: UInt64, expiry: UInt64, account: UInt64) -> [UInt8] {
        Transaction.attribution(
            chainId: genesis.chainId, by: "metropole", nonce: nonce, expiry: expiry, programme: "bench",
            to: Ed25519PublicKey(SHA256.hash("account \(account)")), evidence: SHA256.hash("evidence \(nonce)")
        ).signed(with: key).wireBytes
    }

    static func genesis(_ key: Ed25519PublicKey) -> GenesisFile {
        var file = Fixture.solo(chainId: "calisson-bench", key: key, programme: "bench")
        file.parameters = .init(epochLength: 1_000_000, blocksPerDay: 1_000_000, transactionLifetimeMax: 100, sink: "metropole")
        return file
    }
}
