import CalissonCrypto
import Foundation
import Testing
import Wire

@testable import Storage

/// The per-transaction indexes written every few blocks (`IndexTail`): whatever the blocks
/// not yet in the tables, every read answers what an index written at every block would,
/// on the writing store, on a read-only one following it, after a reopen and after a
/// failed batch.
struct IndexTailTests {
    /// What the indexes would hold with every block written to them at once.
    struct Model {
        var blocks: [(height: UInt64, transactions: [TransactionRecord])] = []

        func place(of id: Bytes32) -> (height: UInt64, position: Int, result: [UInt8])? {
            var place: (height: UInt64, position: Int, result: [UInt8])?
            for (height, transactions) in blocks {
                for (position, transaction) in transactions.enumerated() where transaction.id == id {
                    if place == nil || place?.result != [0] { place = (height, position, transaction.result) }
                }
            }
            return place
        }

        func concerning(_ account: Bytes32, limit: Int, atMost: UInt64) -> [(UInt64, Int, Bytes32, [UInt8])] {
            var found: [(UInt64, Int, Bytes32, [UInt8])] = []
            for (height, transactions) in blocks.reversed() where height <= atMost {
                for (position, transaction) in transactions.enumerated().reversed() where transaction.accounts.contains(account) {
                    found.append((height, position, transaction.id, transaction.result))
                }
            }
            return Array(found.prefix(limit))
        }
    }

    static let ids = (0..<40).map { SHA256.hash("transaction \($0)") }
    static let accounts = (0..<6).map { SHA256.hash("account \($0)") }
    static let applied: [UInt8] = [0]
    static let rejected: [UInt8] = [1] + Array("nonceUsed(1)".utf8)

    /// A block of pseudo-random transactions: ids drawn from a small set (so that copies
    /// of one transaction meet, applied or not, in the tail and across it), each with up
    /// to three accounts (one sometimes twice).
    static func transactions(height: UInt64, generator: inout some RandomNumberGenerator) -> [TransactionRecord] {
        (0..<Int.random(in: 0...4, using: &generator)).map { _ in
            var accounts = (0..<Int.random(in: 0...3, using: &generator)).map { _ in Self.accounts.randomElement(using: &generator)! }
            if let first = accounts.first, Bool.random(using: &generator) { accounts.append(first) }
            return TransactionRecord(
                id: ids.randomElement(using: &generator)!, result: Bool.random(using: &generator) ? applied : rejected, accounts: accounts)
        }
    }

    func expectModel(_ store: NodeStore, _ model: Model, _ comment: Comment) throws {
        for id in Self.ids {
            let found = try store.transaction(id), expected = model.place(of: id)
            #expect(found?.height == expected?.height && found?.position == expected?.position && found?.result == expected?.result, "\(comment): \(id)")
        }
        let top = model.blocks.last?.height ?? 0
        for account in Self.accounts {
            for (limit, atMost) in [(100, UInt64.max), (3, UInt64.max), (1, UInt64.max), (5, top / 2), (0, UInt64.max)] {
                let found = try store.accountTransactions(of: account, limit: limit, atMost: atMost)
                let expected = model.concerning(account, limit: limit, atMost: atMost)
                #expect(found.map(\.height) == expected.map(\.0) && found.map(\.position) == expected.map(\.1), "\(comment): \(account) \(limit) \(atMost)")
                #expect(found.map(\.transaction.id) == expected.map(\.2) && found.map(\.transaction.result) == expected.map(\.3), "\(comment): \(account)")
                let places = try store.transactions(of: account, limit: limit, atMost: atMost)
                #expect(places.map(\.height) == expected.map(\.0) && places.map(\.position) == expected.map(\.1), "\(comment): \(account)")
            }
        }
    }

    func block(_ height: UInt64, _ transactions: [TransactionRecord]) -> BlockRecord {
        BlockRecord(height: height, digest: SHA256.hash("block \(height)"), body: [1], certificate: [], stateRoot: .zero, transactions: transactions)
    }

    @Test(arguments: [(1, 1), (7, 3), (4_096, 64)])
    func readsAnswerAsIfEveryBlockWereIndexed(batchTransactions: Int, batchBlocks: Int) throws {
        let file = temporaryFile("index-tail-\(batchTransactions).db")
        var tuning = NodeStore.Tuning()
        tuning.indexBatchTransactions = batchTransactions
        tuning.indexBatchBlocks = batchBlocks
        var store = try NodeStore(file: file, create: true, tuning: tuning)
        let root = SHA256.hash("genesis")
        try store.writeGenesis(StateChanges(values: [], createdPages: [(root, [1])], removedPages: [], root: root))
        var generator = SplitMix64(seed: UInt64(batchTransactions))
        var model = Model()
        for height in UInt64(1)...60 {
            let transactions = Self.transactions(height: height, generator: &generator)
            try store.append(block(height, transactions), state: nil)
            model.blocks.append((height, transactions))
            if height % 7 == 0 {
                try expectModel(store, model, "writer at \(height)")
                let reader = try NodeStore(file: file, readOnly: true)
                try expectModel(reader, model, "reader at \(height)")
            }
        }
        // A batch that fails leaves the tail as the file has it.
        try store.beginBatch()
        try store.append(block(61, [TransactionRecord(id: Self.ids[0], result: Self.applied, accounts: [Self.accounts[0]])]), state: nil)
        try store.append(block(62, Self.transactions(height: 62, generator: &generator)), state: nil)
        store.rollbackBatch()
        try expectModel(store, model, "after a batch rolled back")
        // The tail read again from the file by the next writer.
        store.close()
        store = try NodeStore(file: file, tuning: tuning)
        try expectModel(store, model, "reopened")
        let tail = try store.database.integer("SELECT count(*) FROM index_tail") ?? -1
        let inTail = try store.currentIndexTail().heights.count
        #expect(Int(tail) == inTail && inTail < batchBlocks, "the tail's blocks are those of index_tail")
        if batchTransactions == 1 { #expect(tail == 0, "with batches of one transaction every block is indexed at once") }
        // Then written: a reader that had loaded the tail sees it emptied.
        let reader = try NodeStore(file: file, readOnly: true)
        try expectModel(reader, model, "reader before the last blocks")
        for height in UInt64(61)...(61 + UInt64(batchBlocks)) {
            let transactions = [TransactionRecord(id: Self.ids[height % 40 == 0 ? 1 : 2], result: Self.rejected, accounts: [Self.accounts[1]])]
            try store.append(block(height, transactions), state: nil)
            model.blocks.append((height, transactions))
        }
        try expectModel(store, model, "writer after the last blocks")
        try expectModel(reader, model, "reader after the last blocks")
        #expect(try store.currentIndexTail().heights.count < batchBlocks)
    }

    /// The accounts kept for a block not yet indexed must decode to its transactions: a
    /// damaged row is named, not read as no transactions.
    @Test func aDamagedTailIsNamed() throws {
        let file = temporaryFile("index-tail-damaged.db")
        let store = try NodeStore(file: file, create: true)
        let root = SHA256.hash("genesis")
        try store.writeGenesis(StateChanges(values: [], createdPages: [(root, [1])], removedPages: [], root: root))
        try store.append(block(1, [TransactionRecord(id: Self.ids[0], result: Self.applied, accounts: [Self.accounts[0]])]), state: nil)
        try store.database.execute("UPDATE index_tail SET accounts = x'00000002'")
        store.close()
        let reopened = try NodeStore(file: file)
        #expect(throws: StorageError.corrupt(
            file: file, reason: "block 1's accounts, kept until it is indexed, do not decode to its 1 transactions")) {
            _ = try reopened.transaction(Self.ids[0])
        }
        // A block listed as not yet indexed, and indexed: its rows would count twice.
        var tuning = NodeStore.Tuning()
        tuning.indexBatchTransactions = 1
        let indexedFile = temporaryFile("index-tail-twice.db")
        let indexing = try NodeStore(file: indexedFile, create: true, tuning: tuning)
        try indexing.writeGenesis(StateChanges(values: [], createdPages: [(root, [1])], removedPages: [], root: root))
        let transactions = [TransactionRecord(id: Self.ids[0], result: Self.applied, accounts: [Self.accounts[0]])]
        try indexing.append(block(1, transactions), state: nil)
        #expect(try indexing.accountTransactions(of: Self.accounts[0], limit: 10).count == 1)
        try indexing.database.statement("INSERT INTO index_tail (height, accounts) VALUES (1, ?)").bind(1, NodeStore.encodeAccounts(transactions)).run()
        indexing.close()
        #expect(throws: StorageError.corrupt(file: indexedFile, reason: "block 1 is listed as not yet indexed, and blocks up to 1 are")) {
            _ = try NodeStore(file: indexedFile, readOnly: true).accountTransactions(of: Self.accounts[0], limit: 10)
        }
    }
}
