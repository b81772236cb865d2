import Wire

/// Writing a node's database from a certified checkpoint rather than from the genesis (a
/// node joining from a snapshot, `Node.StateSync`). The joining node fetches the
/// checkpoint's tree pages and values, each checked against the certified root, into a
/// database of its own that stays uninitialized (no height recorded) until the last step:
/// - `importPages` keeps pages (in `tree_pages`, as the node does) and values by their
///   hash (in `snapshot_values`, a table only such a file has): both are content-addressed,
///   so what was fetched for one checkpoint serves the next when the walk has to start
///   again from a newer one, and an interrupted import resumes;
/// - `beginStateImport`, `importState` then fill the `state` table from the leaves of
///   the final tree, `dropPages(keeping:)` drops the pages of the trees left behind;
/// - `completeImport` records the checkpoint's block, certificate, the validator-set
///   handovers and the node's extras, and the height: from then on the file is a node's
///   database at that height, which `checkConsistency` accepts as any other.
extension NodeStore {
    /// Values fetched for an import, by the hash of their bytes.
    static let importValuesTable = "CREATE TABLE IF NOT EXISTS snapshot_values (hash BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"

    private func requireImport() throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        guard try !isInitialized else { throw .invalid(file: file, reason: "this database already holds a chain (height \(height)): a snapshot is imported into a new one") }
    }

    /// Before the other calls: checks the database holds no chain and makes the table
    /// where fetched values wait (kept from an interrupted import).
    public func beginImport() throws(StorageError) {
        try requireImport()
        try database.execute(Self.importValuesTable)
    }

    /// Stores fetched pages (each under the hash of its root node, already checked) and
    /// values (under the hash of their bytes), in one SQL transaction.
    public func importPages(_ pages: [(hash: Bytes32, page: [UInt8])], values: [(hash: Bytes32, value: [UInt8])]) throws(StorageError) {
        try requireImport()
        try database.transaction { () throws(StorageError) in
            for (hash, page) in pages {
                try database.statement("INSERT OR IGNORE INTO tree_pages (hash, page) VALUES (?, ?)").bind(1, hash).bind(2, page).run()
            }
            for (hash, value) in values {
                try database.statement("INSERT OR IGNORE INTO snapshot_values (hash, value) VALUES (?, ?)").bind(1, hash).bind(2, value).run()
            }
        }
    }

    /// Whether a value with this hash was fetched already.
    public func hasImportedValue(_ hash: Bytes32) throws(StorageError) -> Bool {
        try database.statement("SELECT 1 FROM snapshot_values WHERE hash = ?").bind(1, hash).first { _ in true } ?? false
    }

    /// The value fetched with this hash (checked against its leaf when it was), if any.
    public func importedValue(_ hash: Bytes32) throws(StorageError) -> [UInt8]? {
        try database.statement("SELECT value FROM snapshot_values WHERE hash = ?").bind(1, hash).first { $0.blob(0) } ?? nil
    }

    /// Empties the state table (an earlier, interrupted fill may have left rows of another tree).
    public func beginStateImport() throws(StorageError) {
        try requireImport()
        try database.transaction { () throws(StorageError) in try database.execute("DELETE FROM state") }
    }

    /// Writes the state records of these leaves (key, hash of the value) from the fetched
    /// values, in one SQL transaction. A value not fetched is an error naming its key.
    public func importState(_ leaves: [(key: Bytes32, valueHash: Bytes32)]) throws(StorageError) {
        try requireImport()
        try database.transaction { () throws(StorageError) in
            for (key, valueHash) in leaves {
                storedKeys.written(key)
                try database.statement("INSERT OR REPLACE INTO state (key, value) SELECT ?, value FROM snapshot_values WHERE hash = ?")
                    .bind(1, key).bind(2, valueHash).run()
                guard database.changes == 1 else {
                    throw .invalid(file: file, reason: "the value of state key \(key.hex) (hash \(valueHash.hex)) was not fetched")
                }
            }
        }
    }

    /// Deletes the pages that are not in `reached` (those of trees an import walked before
    /// it moved to a newer checkpoint). Returns how many went.
    @discardableResult
    public func dropPages(keeping reached: Set<Bytes32>) throws(StorageError) -> Int {
        try requireImport()
        let stored = try database.statement("SELECT hash FROM tree_pages").all { $0.blob(0).flatMap { Bytes32($0) } }
        let unreached = stored.compactMap { $0 }.filter { !reached.contains($0) }
        for chunk in stride(from: 0, to: unreached.count, by: 4_096) {
            try database.transaction { () throws(StorageError) in
                for hash in unreached[chunk..<min(chunk + 4_096, unreached.count)] {
                    try database.statement("DELETE FROM tree_pages WHERE hash = ?").bind(1, hash).run()
                }
            }
        }
        return unreached.count
    }

    /// The last step, one SQL transaction: the checkpoint's block (its body, certificate,
    /// results, and `block.stateRoot` the state's root), its checkpoint certificate, the
    /// handovers, the extras, and the height. The root page must be stored. After it, this
    /// is a node's database at `block.height`.
    public func completeImport(
        _ block: BlockRecord, checkpointCertificate: [UInt8], handovers: [(changedAt: UInt64, height: UInt64, record: [UInt8])],
        extras: [String: [UInt8]]
    ) throws(StorageError) {
        try requireImport()
        guard block.height > 0 else { throw .invalid(file: file, reason: "a snapshot is taken at a checkpoint above the genesis") }
        guard try treePage(block.stateRoot) != nil else {
            throw .invalid(file: file, reason: "the root page \(block.stateRoot.hex) of the snapshot's state was not fetched")
        }
        defer { indexTail = nil }  // loaded again at its next use, whether the transaction failed or not
        try database.transaction { () throws(StorageError) in
            try insert(block)
            try database.statement("INSERT OR REPLACE INTO checkpoints (height, certificate) VALUES (?, ?)")
                .bind(1, block.height).bind(2, checkpointCertificate).run()
            for (changedAt, height, record) in handovers {
                try database.statement("INSERT OR REPLACE INTO handovers (changed_at, height, record) VALUES (?, ?, ?)")
                    .bind(1, changedAt).bind(2, height).bind(3, record).run()
            }
            for (name, value) in extras.sorted(by: { $0.key < $1.key }) { try setMeta("extra." + name, value) }
            try database.execute("DROP TABLE IF EXISTS snapshot_values")
            try setMeta("first_block", Self.bytes(block.height))
            try setMeta("bodies_kept_from", Self.bytes(block.height))
            try setMeta("state_root", block.stateRoot.bytes)
            try setMeta("state_height", Self.bytes(block.height))
            try setMeta("height", Self.bytes(block.height))
        }
        try checkConsistency()
    }
}
