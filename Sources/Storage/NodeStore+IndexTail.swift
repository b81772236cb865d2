import Wire

/// The transactions of the last blocks, not yet in the per-transaction indexes
/// (`transactions` by id, `account_transactions` by account): Docs/STORAGE.md, "The
/// indexes written every few blocks".
///
/// Both indexes are keyed by hashes (a transaction's id, an account), so each row lands
/// on a leaf page of its B-tree at random; once the tables outgrow a block, every row of a
/// block is a descent to a page of its own, written to the WAL at the block's commit and
/// copied into the file later. Written for many blocks at once in each table's key order,
/// the rows walk each B-tree once, from its first page to its last (measured: written in
/// blocks' order, the batches gained nothing; Docs/BENCHMARKS.md, "The indexes every few
/// blocks"). Nothing durable depends on them: a block's row keeps its
/// transactions' ids and results (`results`), and the blocks not yet indexed keep their
/// transactions' accounts in `index_tail`, in the block's own commit. So a block is as
/// durable as before, and the indexes are written once the tail holds
/// `Tuning.indexBatchTransactions` transactions or `Tuning.indexBatchBlocks` blocks, in
/// that block's commit, where `index_tail` is emptied.
///
/// Reads answer from the tables and from this tail together, so that what they see does
/// not depend on when the indexes were last written. A writing store keeps the tail in
/// memory as it appends (loaded again from `index_tail` after a failed transaction); a
/// read-only store, whose file another process writes, loads it again whenever
/// `index_tail` changed, in the snapshot of the read it serves.
struct IndexTail {
    /// One transaction of a block not yet indexed: its place, id, result and accounts.
    struct Entry {
        let height: UInt64
        let position: Int
        let id: Bytes32
        let result: [UInt8]
        let accounts: [Bytes32]
    }

    private(set) var entries: [Entry] = []
    /// The blocks in the tail (those with transactions), in height order.
    private(set) var heights: [UInt64] = []
    /// Per id, the entry that is its place as `transactions` would have it (the rule of
    /// `NodeStore.insertPlace`: a copy that applied is not moved by a later one).
    private var byID: [Bytes32: Int] = [:]
    /// Per account, its entries in height order.
    private var byAccount: [Bytes32: [Int]] = [:]
    /// A read-only store's tail: the rows of `index_tail` it was loaded from (count and
    /// highest height: the table only grows upward, or is emptied).
    var loadedFrom: (count: UInt64, highest: UInt64)?

    var isEmpty: Bool { heights.isEmpty }

    /// Adds a block's transactions, after those already in the tail.
    mutating func add(height: UInt64, transactions: [TransactionRecord]) {
        guard !transactions.isEmpty else { return }
        heights.append(height)
        for (position, transaction) in transactions.enumerated() {
            let index = entries.count
            entries.append(Entry(height: height, position: position, id: transaction.id, result: transaction.result, accounts: transaction.accounts))
            if let held = byID[transaction.id], entries[held].result == StoredResult.applied {} else { byID[transaction.id] = index }
            for account in transaction.accounts where byAccount[account]?.last != index { byAccount[account, default: []].append(index) }
        }
    }

    /// The tail's place of `id`, if it has one.
    func place(of id: Bytes32) -> Entry? { byID[id].map { entries[$0] } }

    /// `account`'s entries at or below `height`, newest first, at most `limit` (none when
    /// `limit` is 0 or less).
    func entries(of account: Bytes32, atMost height: UInt64, limit: Int) -> [Entry] {
        guard let indexes = byAccount[account] else { return [] }
        var found: [Entry] = []
        for index in indexes.reversed() where entries[index].height <= height {
            guard found.count < limit else { break }
            found.append(entries[index])
        }
        return found
    }
}

/// How the ledger encodes an applied transaction's result (`StoreAnswers.result`): the
/// index's rule on copies reads it.
enum StoredResult {
    static let applied: [UInt8] = [0]
}

extension NodeStore {
    /// The tail as it stands: loaded on first use (a writing store), or again whenever
    /// `index_tail` changed (a read-only one). Call it in the snapshot of the read it serves.
    func currentIndexTail() throws(StorageError) -> IndexTail {
        if isReadOnly {
            let shape = try database.statement("SELECT count(*), coalesce(max(height), 0) FROM index_tail").first { ($0.uint64(0), $0.uint64(1)) }
            let now = shape ?? (0, 0)
            if let held = indexTail, let from = held.loadedFrom, from == now { return held }
            var loaded = try loadIndexTail()
            loaded.loadedFrom = now
            indexTail = loaded
            return loaded
        }
        if let held = indexTail { return held }
        let loaded = try loadIndexTail()
        indexTail = loaded
        return loaded
    }

    /// The tail read from `index_tail` and the blocks' results.
    private func loadIndexTail() throws(StorageError) -> IndexTail {
        let file = self.file
        let rows = try database.statement(
            "SELECT t.height, t.accounts, b.results FROM index_tail t LEFT JOIN blocks b ON b.height = t.height ORDER BY t.height")
            .all { ($0.uint64(0), $0.blob(1) ?? [], $0.blob(2)) }
        var tail = IndexTail()
        // Every block in the tail is above every indexed one (a damaged file could list one
        // again, and its rows would be counted twice).
        let indexed = try database.integer("SELECT coalesce(max(height), 0) FROM transactions") ?? 0
        if let lowest = rows.first?.0, Int64(clamping: lowest) <= indexed {
            throw .corrupt(file: file, reason: "block \(lowest) is listed as not yet indexed, and blocks up to \(indexed) are")
        }
        for (height, accounts, results) in rows {
            guard let results, var records = Self.decodeResults(results) else {
                throw .corrupt(file: file, reason: "block \(height), not yet indexed, has no readable results")
            }
            guard let lists = Self.decodeAccounts(accounts), lists.count == records.count else {
                throw .corrupt(file: file, reason: "block \(height)'s accounts, kept until it is indexed, do not decode to its \(records.count) transactions")
            }
            for index in records.indices { records[index].accounts = lists[index] }
            tail.add(height: height, transactions: records)
        }
        return tail
    }

    /// A block's transactions into the indexes now, or into the tail (inside the caller's
    /// SQL transaction). When the tail is full, the tail's blocks and this one are written
    /// to the indexes, each table's rows in its key order, and the tail emptied.
    func index(_ block: BlockRecord) throws(StorageError) {
        guard !block.transactions.isEmpty else { return }
        var tail = try currentIndexTail()
        indexTail = nil  // `tail` its only reference: added to in place, not copied at every block
        let transactions = tail.entries.count + block.transactions.count
        guard transactions >= max(1, tuning.indexBatchTransactions) || tail.heights.count + 1 >= max(1, tuning.indexBatchBlocks) else {
            try database.statement("INSERT INTO index_tail (height, accounts) VALUES (?, ?)")
                .bind(1, block.height).bind(2, Self.encodeAccounts(block.transactions)).run()
            tail.add(height: block.height, transactions: block.transactions)
            indexTail = tail
            return
        }
        // Each index's rows in its key order, so that the inserts walk each B-tree once
        // from its first page to its last; copies of one id in their blocks' order (the
        // index's rule on copies depends on it).
        var rows = tail.entries
        for (position, transaction) in block.transactions.enumerated() {
            rows.append(IndexTail.Entry(height: block.height, position: position, id: transaction.id, result: transaction.result, accounts: transaction.accounts))
        }
        let byID = rows.indices.sorted { rows[$0].id != rows[$1].id ? rows[$0].id < rows[$1].id : $0 < $1 }
        for index in byID {
            let row = rows[index]
            try insertPlace(row.id, height: row.height, position: row.position, result: row.result)
        }
        var places: [(account: Bytes32, height: UInt64, position: Int)] = []
        for row in rows { for account in row.accounts { places.append((account, row.height, row.position)) } }
        places.sort { ($0.account, $0.height, $0.position) < ($1.account, $1.height, $1.position) }
        for place in places { try insertAccountPlace(place.account, height: place.height, position: place.position) }
        if !tail.isEmpty { try database.execute("DELETE FROM index_tail") }
        indexTail = IndexTail()
    }

    /// A transaction's place in `transactions`. It is where it applied, if it did: a later
    /// copy (rejected) does not move it; one that was not applied yet is moved by a later copy.
    private func insertPlace(_ id: Bytes32, height: UInt64, position: Int, result: [UInt8]) throws(StorageError) {
        try database.statement(
            """
            INSERT INTO transactions (id, height, position, result) VALUES (?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET height = excluded.height, position = excluded.position, result = excluded.result
            WHERE transactions.result != X'00'
            """)
            .bind(1, id).bind(2, height).bind(3, position).bind(4, result).run()
    }

    private func insertAccountPlace(_ account: Bytes32, height: UInt64, position: Int) throws(StorageError) {
        try database.statement("INSERT OR IGNORE INTO account_transactions (account, height, position) VALUES (?, ?, ?)")
            .bind(1, account.bytes).bind(2, height).bind(3, position).run()
    }

    /// Each transaction's accounts: their count, then each transaction's count and accounts.
    static func encodeAccounts(_ transactions: [TransactionRecord]) -> [UInt8] {
        var writer = WireWriter()
        writer.write(UInt32(transactions.count))
        for transaction in transactions {
            writer.write(UInt32(transaction.accounts.count))
            for account in transaction.accounts { account.encode(to: &writer) }
        }
        return writer.bytes
    }

    static func decodeAccounts(_ bytes: [UInt8]) -> [[Bytes32]]? {
        var reader = WireReader(bytes)
        guard let count = try? reader.readCount("accounts", maximum: 1 << 20) else { return nil }
        var lists: [[Bytes32]] = []
        for _ in 0..<count {
            guard let each = try? reader.readCount("accounts.each", maximum: 1 << 16) else { return nil }
            var list: [Bytes32] = []
            for _ in 0..<each {
                guard let account = try? Bytes32(from: &reader) else { return nil }
                list.append(account)
            }
            lists.append(list)
        }
        guard (try? reader.expectEnd()) != nil else { return nil }
        return lists
    }
}
