// Retention, the database lock, and restoring a backup (Docs/OPERATIONS.md, "Retention"
// and "Backups"), on a lone validator in this process.
import CalissonTestKit
import Foundation
import LightClient
@testable import Node
@testable import Storage
import Testing
import Transport
import Wire

@Suite(.serialized, .onOwnThreads) struct MaintenanceTests {
    /// A lone validator with a client-free configuration, blocks cut at once.
    func node(_ cluster: TestCluster, retainBlocks: UInt64? = nil) throws -> NodeRuntime {
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        configuration.blockWaitMilliseconds = 0
        configuration.checkpointFillMilliseconds = 0  // blocks of one transaction each, none empty: the tests count them
        configuration.retainBlocks = retainBlocks
        return try NodeRuntime(configuration: configuration)
    }

    /// With `retainBlocks`, a running node drops old bodies at its checkpoints and keeps
    /// the latest ones, the headers, the results and everything above its last checkpoint.
    @Test func aNodeWithRetentionPrunesItselfAtItsCheckpoints() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let running = try node(cluster, retainBlocks: 10)
        try running.start()
        defer { running.stop() }
        var nonce: UInt64 = 1
        cluster.advance([running], to: 40, issuers: 1, nonce: &nonce)
        #expect(running.height >= 40)
        let reader = try NodeStore(file: cluster.configuration(0).databaseFile, readOnly: true)
        let height = reader.height
        let checkpoint = try #require(try reader.checkpoint(atOrBelow: height)?.height)
        #expect(reader.bodiesKeptFrom > 1 && reader.bodiesKeptFrom <= min(checkpoint, height - 10) + 1, "kept from \(reader.bodiesKeptFrom), height \(height)")
        #expect(reader.bodiesKeptFrom + 10 + 8 >= height, "pruned at each checkpoint (every 8 blocks): kept from \(reader.bodiesKeptFrom), height \(height)")
        for h in 1..<reader.bodiesKeptFrom {
            let block = try #require(try reader.block(at: h))
            #expect(block.body == nil && !block.certificate.isEmpty && block.transactions.count == 1, "block \(h)")
        }
        for h in reader.bodiesKeptFrom...height { #expect(try reader.block(at: h)?.body != nil, "block \(h) kept") }
        // A transaction of a pruned block is still found, with its result; its inclusion
        // proof needs the body, which is gone.
        let old = try #require(try reader.block(at: 1)?.transactions.first?.id)
        #expect(try StoreAnswers(store: reader).transaction(old)?.applied == true)
        #expect(try StoreAnswers(store: reader).blockContents(1) == nil)
        let client = try TransportClient(host: "127.0.0.1", port: running.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        let answer = try ClientResponse(wireBytes: try client.request(ClientRequest.transactionProof(old).wireBytes))
        guard case let .error(reason) = answer else {
            Issue.record("an inclusion proof from a pruned block: \(answer)")
            return
        }
        #expect(reason.contains("final at height 1, but this node pruned that block's body"), "\(reason)")
        let ids = try ClientResponse(wireBytes: try client.request(ClientRequest.blockTransactions(1).wireBytes))
        #expect(ids == .blockTransactions([old]), "a pruned block's transaction ids are still answered")
    }

    /// A writing store holds the database's lock: a second node on the same database, and
    /// the maintenance commands under a running node, are refused by name.
    @Test func aSecondWriterIsRefusedAndNamesTheHolder() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let file = cluster.configuration(0).databaseFile
        do {
            let running = try node(cluster)
            try running.start()
            defer { running.stop() }
            #expect(throws: StorageError.inUse(file: file, holder: "process \(getpid())")) { _ = try node(cluster) }
            #expect(throws: StorageError.inUse(file: file, holder: "process \(getpid())")) {
                _ = try NodeMaintenance.prune(databaseFile: file, keep: 1, vacuum: false)
            }
            #expect(throws: StorageError.inUse(file: file, holder: "process \(getpid())")) {
                _ = try NodeMaintenance.restore(databaseFile: file, from: file, genesis: cluster.genesis)
            }
            let error = StorageError.inUse(file: file, holder: "process 42")
            #expect("\(error)" == "\(file): in use by process 42, which holds \(file).lock: stop it first")
            _ = try NodeStore(file: file, readOnly: true)  // readers take no lock
        }
        // Released when the node stops: it starts again on the same database.
        let again = try node(cluster)
        try again.start()
        again.stop()
    }

    /// `calisson-node prune`'s work on a stopped node: old bodies dropped (never above the
    /// last checkpoint, nor above the stored state: executed again at start), the file shrunk by `vacuum`, and the node starts on it again.
    @Test func pruningAStoppedNodeKeepsItStartable() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let file = cluster.configuration(0).databaseFile
        var nonce: UInt64 = 1
        do {
            let running = try node(cluster)
            try running.start()
            defer { running.stop() }
            cluster.advance([running], to: 30, issuers: 1, nonce: &nonce)
        }
        let (height, stateHeight) = try { let store = try NodeStore(file: file, readOnly: true); return (store.height, store.stateHeight) }()
        let checkpoint = try #require(try NodeStore(file: file, readOnly: true).checkpoint(atOrBelow: height)?.height)
        let report = try NodeMaintenance.prune(databaseFile: file, keep: 4, vacuum: true)
        #expect(report.height == height && report.keptFrom == min(checkpoint, stateHeight, height - 4) + 1 && report.pruned == report.keptFrom - 1, "\(report)")
        #expect(report.bytesAfter <= report.bytesBefore && report.freeBytes == 0, "\(report)")
        #expect(try NodeMaintenance.prune(databaseFile: file, keep: 4, vacuum: false).pruned == 0, "a second run has nothing to do")
        #expect(throws: NodeMaintenance.Failure.self) { _ = try NodeMaintenance.prune(databaseFile: file + ".missing", keep: 4, vacuum: false) }
        let restarted = try node(cluster)
        try restarted.start()
        defer { restarted.stop() }
        let before = restarted.height
        cluster.advance([restarted], to: before + 2, issuers: 1, nonce: &nonce)
        #expect(restarted.height >= before + 2, "the pruned node goes on making blocks")
    }

    /// A block above the stored state is executed again at start from its stored body: a
    /// body damaged and still decodable (another block's, here) is refused, named, rather
    /// than executed (its certificate names another block; only the last 8 are checked whole).
    @Test func aDamagedBodyAboveTheStoredStateIsNotExecutedAgain() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let file = cluster.configuration(0).databaseFile
        var nonce: UInt64 = 1
        var heights = (top: UInt64(0), state: UInt64(0))
        do {
            let running = try node(cluster)
            try running.start()
            defer { running.stop() }
            // Until some block above the stored state lies below the last 8.
            var target: UInt64 = 20
            while heights.top < 200 {
                cluster.advance([running], to: target, issuers: 1, nonce: &nonce)
                let store = try NodeStore(file: file, readOnly: true)
                heights = (store.height, store.stateHeight)
                store.close()
                if heights.state + 1 + NodeRuntime.startupCheckedBlocks <= heights.top { break }
                target = heights.top + 3
            }
        }
        let damaged = heights.state + 1
        try #require(damaged + NodeRuntime.startupCheckedBlocks <= heights.top, "\(heights)")
        let database = try Database(file: file, mode: .readWrite, create: false)
        try database.statement("UPDATE blocks SET body = (SELECT body FROM blocks WHERE height = ?) WHERE height = ?").bind(1, damaged + 1).bind(2, damaged).run()
        database.close()
        #expect { _ = try node(cluster) } throws: { error in
            "\(error)".contains("block \(damaged)'s stored body is not the block its commit certificate names")
        }
    }

    /// A backup restored over a node that stopped with -wal and -shm files beside its
    /// database: they are moved aside with it (SQLite would apply them to the copy), and
    /// the node starts at the backup's height. A backup of another chain, or one with a
    /// WAL of its own, is refused.
    @Test func aRestoredBackupReplacesTheDatabaseAndItsWAL() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let file = cluster.configuration(0).databaseFile
        let backup = "\(cluster.directory)/backup.db"
        var nonce: UInt64 = 1
        let backedUp: (height: UInt64, root: Bytes32)
        do {
            let running = try node(cluster)
            try running.start()
            defer { running.stop() }
            cluster.advance([running], to: 5, issuers: 1, nonce: &nonce)
            let reader = try NodeStore(file: file, readOnly: true)
            try reader.backup(to: backup)
            let copy = try NodeStore(file: backup, readOnly: true)
            backedUp = (copy.height, copy.stateRoot)
            cluster.advance([running], to: backedUp.height + 5, issuers: 1, nonce: &nonce)
        }
        // What a crash leaves: a WAL and its index beside the database.
        try Data(repeating: 7, count: 4_096).write(to: URL(fileURLWithPath: file + "-wal"))
        try Data(repeating: 0, count: 32_768).write(to: URL(fileURLWithPath: file + "-shm"))
        let stamp = Date(timeIntervalSince1970: 1_796_300_000)
        let report = try NodeMaintenance.restore(databaseFile: file, from: backup, genesis: cluster.genesis, now: stamp)
        #expect(report.height == backedUp.height && report.stateRoot == backedUp.root, "\(report)")
        let aside = "\(file).replaced-\(NodeMaintenance.timestamp(stamp))"
        #expect(report.movedAside == [aside, aside + "-wal", aside + "-shm"])
        #expect(report.movedAside.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "nothing replaced is deleted")
        // The database replaced, read past its damaged WAL, was ahead of the backup: its votes are kept.
        if case .carried = report.safetyLog {} else { Issue.record("safety log: \(report.safetyLog)") }
        do {
            let restarted = try node(cluster)
            #expect(restarted.height == backedUp.height)
            try restarted.start()
            restarted.stop()
        }

        let other = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: other.directory) }
        var otherGenesis = cluster.genesisFile
        otherGenesis.chainId = "another-chain"
        #expect(throws: NodeMaintenance.Failure.self) {
            _ = try NodeMaintenance.restore(databaseFile: other.configuration(0).databaseFile, from: backup, genesis: try otherGenesis.validated())
        }
        try Data(repeating: 1, count: 100).write(to: URL(fileURLWithPath: backup + "-wal"))
        #expect(throws: NodeMaintenance.Failure.self) { _ = try NodeMaintenance.restore(databaseFile: file, from: backup, genesis: cluster.genesis) }
        #expect(throws: NodeMaintenance.Failure.self) {
            _ = try NodeMaintenance.restore(databaseFile: file, from: backup + ".missing", genesis: cluster.genesis)
        }
    }

    /// The votes the node signed since its backup are in the database a restore replaces,
    /// not in the backup: its safety log is carried into the restored file (the node then
    /// starts and goes on), unless that database is behind the backup.
    @Test func aRestoreKeepsTheVotesSignedSinceTheBackup() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let file = cluster.configuration(0).databaseFile
        let early = "\(cluster.directory)/early.db", late = "\(cluster.directory)/late.db"
        var nonce: UInt64 = 1
        do {
            let running = try node(cluster)
            try running.start()
            defer { running.stop() }
            cluster.advance([running], to: 5, issuers: 1, nonce: &nonce)
            try NodeStore(file: file, readOnly: true).backup(to: early)
            cluster.advance([running], to: running.height + 12, issuers: 1, nonce: &nonce)
            try NodeStore(file: file, readOnly: true).backup(to: late)
            cluster.advance([running], to: running.height + 3, issuers: 1, nonce: &nonce)
        }
        let latest = try NodeStore(file: file, readOnly: true).safetyRecords()
        let inEarly = try NodeStore(file: early, readOnly: true).safetyRecords()
        #expect(latest != inEarly, "the node voted after its backup")
        let report = try NodeMaintenance.restore(databaseFile: file, from: early, genesis: cluster.genesis)
        #expect(report.safetyLog == .carried(records: latest.count), "\(report)")
        #expect(try NodeStore(file: file, readOnly: true).safetyRecords() == latest)
        // The later backup over the restored (earlier) database: the backup's log is kept.
        let restoredHeight = report.height
        let second = try NodeMaintenance.restore(databaseFile: file, from: late, genesis: cluster.genesis)
        #expect(second.safetyLog == .behindTheBackup(height: restoredHeight), "\(second)")
        #expect(try NodeStore(file: file, readOnly: true).safetyRecords() == NodeStore(file: late, readOnly: true).safetyRecords())
        // Nothing in place: nothing to carry. Then the node starts and goes on.
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: file + suffix) }
        #expect(try NodeMaintenance.restore(databaseFile: file, from: early, genesis: cluster.genesis).safetyLog == .noDatabase)
        let restarted = try node(cluster)
        try restarted.start()
        defer { restarted.stop() }
        let before = restarted.height
        cluster.advance([restarted], to: before + 2, issuers: 1, nonce: &nonce)
        #expect(restarted.height >= before + 2)
    }
}
