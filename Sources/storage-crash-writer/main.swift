// Test helper for the storage crash test (Tests/StorageTests/CrashTests.swift): writes
// blocks of attributions and safety records into a node database in a loop, printing
// "durable H" after each block's commit returned and "persisted N" after each safety
// append, until it is killed. Restarted on the same file, it resumes where the file is.
// Heights 4k+1 to 4k+3 are written in one batch with their safety records (as the node
// groups a turn's writes), committed without a sync and synced by a `WALSyncer` before
// they are reported durable (as the node does), height 4k+4 on its own, synced in its
// commit: a file left at a height of the form 4k+1 or 4k+2 would be a batch half
// written. The state's root is computed at the multiples of `CrashWriter.stateInterval`
// and the state of every second one written with the next block (as the node writes it at
// every few checkpoints, once certified), in four slices, one after each block (as the
// node writes one at each tick of its clock: a kill may come between two); at start the
// blocks above it are executed again from their bodies, each checked against the root it
// recorded (as the node's core does).
import CalissonCrypto
import Fixtures
import Foundation
import Ledger
import Node
import Storage
import Synchronization
import Wire

/// Unbuffered: a line is out before the next write begins (the parent may kill us any time).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

let arguments = CommandLine.arguments
guard arguments.count == 3, let blockSize = Int(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: storage-crash-writer DATABASE TRANSACTIONS-PER-BLOCK\n".utf8))
    exit(2)
}

do {
    let store = try NodeStore(file: arguments[1], create: true)
    let state = StoredState(store: store, stateInterval: CrashWriter.stateInterval, writeEvery: CrashWriter.writeEvery)
    state.slicesPerWrite = 4
    state.sliceRowsMin = 1
    let issuer = Ed25519PrivateKey(seed: SHA256.hash("crash issuer").bytes)!
    var ledger: Ledger<StoredState>
    if try store.isInitialized {
        ledger = try Ledger(chainId: CrashWriter.chainId, store: state)
        while state.stateHeight < store.height {
            let height = state.stateHeight + 1
            guard let body = try store.block(at: height)?.body else { throw CrashWriter.Failure("block \(height) has no body to execute again") }
            var reader = WireReader(body)
            let commands = try reader.readArray("commands", maximum: 100_000, of: ByteString.self).map(\.bytes)
            _ = ledger.execute(commands, verify: { _ in true })
            try state.replayed(height)
        }
    } else {
        ledger = try Ledger.create(try CrashWriter.genesis(issuer.publicKey).validated(), in: state)
        try state.persistGenesis()
    }
    // The node's way with a batch: committed without a sync, reported once synced.
    let synced = DispatchSemaphore(value: 0)
    let syncFailure = Mutex<String?>(nil)
    let syncer = WALSyncer(databaseFile: arguments[1]) { _, failure in
        if let failure { syncFailure.withLock { $0 = "\(failure)" } }
        synced.signal()
    }
    syncer.start()
    var commits: UInt64 = 0
    var safetyCount = try store.safetyRecords().count
    func write(_ height: UInt64) throws {
        let commands = (0..<blockSize).map { index in
            let tx = Transaction.attribution(
                chainId: CrashWriter.chainId, by: "metropole", nonce: height * 100_000 + UInt64(index), expiry: height + 5, programme: "crash",
                to: Ed25519PublicKey(SHA256.hash("account \(index % 97)")), evidence: SHA256.hash("evidence \(height) \(index)"))
            return SignedTransaction(transaction: tx, signature: Ed25519Signature(.zero)).wireBytes
        }
        let outcome = ledger.execute(commands, verify: { _ in true })
        var body = WireWriter()
        body.writeArray(commands.map { $0 as [UInt8] }.map(ByteString.init))
        let block = BlockRecord(
            height: height, digest: SHA256.hash(body.bytes), body: body.bytes, certificate: CrashWriter.certificate(height),
            stateRoot: outcome.recordedStateRoot,
            transactions: commands.enumerated().map { TransactionRecord(id: SHA256.hash($0.element), result: [outcome.results[$0.offset] == .applied ? 1 : 0], accounts: []) })
        try state.persist(block)
        // The checkpoint before certified with this block, as a node's is a few blocks later:
        // every second one's state is written now.
        if height > CrashWriter.stateInterval, (height - 1) % CrashWriter.stateInterval == 0 { try state.serve(checkpoint: height - 1) }
        try state.advanceStateWrite()
        let records = (0..<3).map { Array("vote \(height) \($0)".utf8) }
        try store.appendSafety(records)
        safetyCount += records.count
    }
    while true {
        let first = ledger.height + 1
        let last = first % 4 == 1 ? first + 2 : first
        if last > first { try store.beginBatch(deferringSync: true) }
        for height in first...last { try write(height) }
        if last > first, try store.commitBatch() {
            commits += 1
            syncer.request(through: commits)
            synced.wait()
            if let failure = syncFailure.withLock({ $0 }) { throw CrashWriter.Failure(failure) }
        }
        say("durable \(last)")
        say("persisted \(safetyCount)")
    }
} catch {
    FileHandle.standardError.write(Data("storage-crash-writer: \(error)\n".utf8))
    exit(1)
}

struct ByteString: WireCodable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(from reader: inout WireReader) throws(WireError) { bytes = try reader.readBytes("command", maximum: 1 << 20) }
    static var wireSizeMin: Int { 4 }
    func encode(to writer: inout WireWriter) { writer.writeBytes(bytes) }
}

enum CrashWriter {
    static let chainId = "calisson-crash"
    /// The state's root is computed at its multiples (5: not aligned with the batches).
    static let stateInterval: UInt64 = 5
    /// The state is written at every this many of them (at the multiples of 10).
    static let writeEvery: UInt64 = 2

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func certificate(_ height: UInt64) -> [UInt8] { Array("certificate of \(height)".utf8) }

    static func genesis(_ key: Ed25519PublicKey) -> GenesisFile {
        var file = Fixture.solo(chainId: chainId, key: key, programme: "crash")
        file.parameters.epochLength = 50
        file.programmes[0].expiryEpochs = 2
        return file
    }
}
