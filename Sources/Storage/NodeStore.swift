import CSQLite
import Glibc
import Wire

/// A final block as stored: its height, digest, body (nil once pruned), commit
/// certificate and the state root after it, with its transactions.
public struct BlockRecord: Sendable, Equatable {
    public var height: UInt64
    public var digest: Bytes32
    public var body: [UInt8]?
    public var certificate: [UInt8]
    /// The state root after the block where the node computed one (its checkpoint
    /// heights and small blocks; every block in files written before the update could
    /// be deferred); zero elsewhere (Docs/STORAGE.md, "The root at checkpoints").
    public var stateRoot: Bytes32
    public var transactions: [TransactionRecord]

    public init(height: UInt64, digest: Bytes32, body: [UInt8]?, certificate: [UInt8], stateRoot: Bytes32, transactions: [TransactionRecord]) {
        self.height = height
        self.digest = digest
        self.body = body
        self.certificate = certificate
        self.stateRoot = stateRoot
        self.transactions = transactions
    }
}

/// A final block's header as stored (`NodeStore.blockHeaders`): its body and transactions
/// not read.
public struct BlockHeaderRecord: Sendable, Equatable {
    public var height: UInt64
    public var digest: Bytes32
    public var certificate: [UInt8]
    public var stateRoot: Bytes32
    public var transactionCount: UInt64

    public init(height: UInt64, digest: Bytes32, certificate: [UInt8], stateRoot: Bytes32, transactionCount: UInt64) {
        self.height = height
        self.digest = digest
        self.certificate = certificate
        self.stateRoot = stateRoot
        self.transactionCount = transactionCount
    }
}

/// One transaction of a block: its id, its result (encoded by the ledger), and the
/// accounts it concerns (for the per-account index).
public struct TransactionRecord: Sendable, Equatable {
    public var id: Bytes32
    public var result: [UInt8]
    public var accounts: [Bytes32]

    public init(id: Bytes32, result: [UInt8], accounts: [Bytes32]) {
        self.id = id
        self.result = result
        self.accounts = accounts
    }
}

/// A block's effect on the state: values written (nil deletes), tree pages created and
/// removed (by the hash of their root node; encoded by the ledger), and the root they make.
public struct StateChanges: Sendable {
    public var values: [(key: Bytes32, value: [UInt8]?)]
    public var createdPages: [(hash: Bytes32, page: [UInt8])]
    public var removedPages: [Bytes32]
    public var root: Bytes32

    public init(values: [(key: Bytes32, value: [UInt8]?)], createdPages: [(hash: Bytes32, page: [UInt8])], removedPages: [Bytes32], root: Bytes32) {
        self.values = values
        self.createdPages = createdPages
        self.removedPages = removedPages
        self.root = root
    }
}

/// A node's database: blocks with their certificates, transactions and their results,
/// the ledger state and its tree, checkpoints, and the consensus safety log, in one
/// SQLite file in WAL mode (Docs/STORAGE.md).
///
/// Durability: `synchronous=FULL`, so every commit fsyncs the WAL: once `append` or
/// `appendSafety` returns, what it wrote survives a process kill and a power cut. One
/// SQL transaction per block (the fsync is per block, not per transaction). A batch
/// (`beginBatch` … `commitBatch`) goes further: every write in between is one SQL
/// transaction and one fsync, durable when `commitBatch` returns and not before (the node
/// opens one per turn of its event loop, and acts on nothing it wrote until then). A
/// batch may also defer its sync to a `WALSyncer`'s thread (the node's does: its loop does
/// not wait for the disk), and is durable once that thread has synced it.
public final class NodeStore {
    public static let schemaVersion = 9
    /// How much memory the database may use: the window of the file SQLite maps
    /// (file-backed, reclaimable, but counted in the process's RSS once touched) and its
    /// page cache (anonymous). Both bound the node's memory whatever the state's size.
    public struct Tuning: Sendable, Equatable {
        public var mapBytes: Int
        public var cacheBytes: Int
        /// WAL pages (4 KiB) past which it is copied into the main file, off the writer's
        /// thread (`WALCheckpointer`): ~40 MiB, so that a page many blocks rewrite is copied once.
        public var walCheckpointPages: Int32 = 10_240
        /// The per-transaction indexes are written once the blocks not yet in them hold
        /// this many transactions, or are this many blocks (`IndexTail`).
        public var indexBatchTransactions = 4_096
        public var indexBatchBlocks = 64

        /// By default 32 MiB mapped and a 16 MiB cache: a node under 256 MB with a million
        /// accounts (Docs/BENCHMARKS.md, where the sizes were measured).
        public init(mapBytes: Int = 32 << 20, cacheBytes: Int = 16 << 20) {
            self.mapBytes = mapBytes
            self.cacheBytes = cacheBytes
        }

        public static let `default` = Tuning()
    }

    public let file: String
    public let isReadOnly: Bool
    let tuning: Tuning
    let database: Database
    /// The writer's WAL checkpoints, off its thread (nil for a read-only store).
    private let checkpointer: WALCheckpointer?
    /// Held while a writing store is open (nil for read-only ones).
    private let lock: DatabaseLock?

    /// Migrations by the version they produce; applying them in order from the
    /// database's version reaches `schemaVersion`. Version 1 is the first schema.
    static let migrations: [Int: [String]] = [
        1: [
            "CREATE TABLE schema_version (version INTEGER NOT NULL)",
            """
            CREATE TABLE blocks (
                height INTEGER PRIMARY KEY, digest BLOB NOT NULL, body BLOB, certificate BLOB NOT NULL,
                state_root BLOB NOT NULL, transaction_count INTEGER NOT NULL)
            """,
            "CREATE TABLE transactions (id BLOB PRIMARY KEY, height INTEGER NOT NULL, position INTEGER NOT NULL, result BLOB NOT NULL) WITHOUT ROWID",
            "CREATE INDEX transactions_by_height ON transactions (height, position)",
            "CREATE TABLE account_transactions (account BLOB NOT NULL, height INTEGER NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (account, height, position)) WITHOUT ROWID",
            "CREATE TABLE state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
            "CREATE TABLE tree_nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID",
            "CREATE TABLE checkpoints (height INTEGER PRIMARY KEY, certificate BLOB NOT NULL)",
            "CREATE TABLE safety_log (sequence INTEGER PRIMARY KEY, record BLOB NOT NULL)",
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
            "INSERT INTO schema_version (version) VALUES (1)",
        ],
        // Version 2 keeps the state of the last stable checkpoint provable: tree nodes are
        // retired (not deleted) when replaced, and replaced values archived, until a later
        // checkpoint makes them unreachable.
        2: [
            "CREATE TABLE retired_nodes (hash BLOB PRIMARY KEY, height INTEGER NOT NULL) WITHOUT ROWID",
            "CREATE INDEX retired_nodes_by_height ON retired_nodes (height)",
            "CREATE TABLE value_archive (key BLOB NOT NULL, height INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (key, height)) WITHOUT ROWID",
            "CREATE INDEX value_archive_by_height ON value_archive (height)",
        ],
        // Version 3 keeps, for each validator-set change, the first stable checkpoint that
        // carries it with the proof of the validator keys there (light clients follow them).
        3: [
            "CREATE TABLE handovers (changed_at INTEGER PRIMARY KEY, height INTEGER NOT NULL, record BLOB NOT NULL)",
        ],
        // Version 4 keeps what a block replaced as one row per block (the hashes of the
        // nodes it retired and revived, the keys it archived) instead of one row per
        // retired node plus two height indexes: pruning deletes by primary key. The rows
        // of `retired_nodes` and the keys of `value_archive` move there (`moveHistory`).
        4: [
            "CREATE TABLE history (height INTEGER PRIMARY KEY, retired BLOB NOT NULL, revived BLOB NOT NULL, archived BLOB NOT NULL)",
        ],
        // Version 5 stores the tree in pages of four levels (Ledger's `TreePage`), keyed by
        // the hash of the page's root node, instead of one row per binary node. The node
        // regroups a version-4 file's nodes when it starts (`Node.StoredState
        // .convertLegacyTree`, through `legacyTreeNode` and `replaceLegacyTree`): Storage
        // does not know the tree's encoding. History rows then name pages.
        5: [
            "CREATE TABLE tree_pages (hash BLOB PRIMARY KEY, page BLOB NOT NULL) WITHOUT ROWID",
        ],
        // Version 6 keeps each block's transaction ids and results with the block, in
        // position order (`results`): the `transactions` table is keyed by id, so a
        // transaction included twice (a leader's pipelined blocks can carry a copy that the
        // ledger then rejects) has one row there, and a block read from it lacked the copy.
        // Blocks written before keep NULL and are read from `transactions` as before.
        6: [
            "ALTER TABLE blocks ADD COLUMN results BLOB",
        ],
        // Version 7 writes the state only with the blocks at the checkpoint heights: the
        // meta record `state_height` says where the stored state is (absent: at `height`),
        // and the blocks above it are executed again at start. No table changes; the version
        // is raised so that an older binary refuses such a file as newer (`schema`) instead
        // of reading a state behind its last block as damage.
        7: [],
        // Version 8 writes the state in slices over several commits (`writeStateSlice`,
        // `finishStateWrite`): the meta record `state_slicing` names the height being
        // written, each slice's row lists the keys it archived and the pages it wrote, and
        // `state_slice_added` the keys the stored state did not have, so that an unfinished
        // write is undone at the next open and read around meanwhile.
        8: [
            "CREATE TABLE state_slices (sequence INTEGER PRIMARY KEY, height INTEGER NOT NULL, archived BLOB NOT NULL, pages BLOB NOT NULL, revived BLOB NOT NULL)",
            "CREATE TABLE state_slice_added (key BLOB PRIMARY KEY) WITHOUT ROWID",
        ],
        // Version 9 writes the per-transaction indexes (`transactions`, `account_transactions`)
        // every few blocks (`IndexTail`): the blocks not yet in them keep their transactions'
        // accounts in `index_tail` (their ids and results are in the block's `results`). A
        // file of version 8 has every block indexed.
        9: [
            "CREATE TABLE index_tail (height INTEGER PRIMARY KEY, accounts BLOB NOT NULL)",
        ],
    ]

    /// Opens (or, with `create`, creates) a node's database. Read-only opens never write
    /// and never block the node (WAL readers see the last committed block).
    public init(file: String, readOnly: Bool = false, create: Bool = false, tuning: Tuning = .default) throws(StorageError) {
        self.file = file
        isReadOnly = readOnly
        self.tuning = tuning
        lock = readOnly ? nil : try DatabaseLock(databaseFile: file)
        // A file of zero bytes (and no WAL) is one SQLite takes as an empty database, and
        // writes to: refused before it is opened, left as it was found.
        if !create, Self.isZeroBytes(file), Self.isZeroBytes(file + "-wal") || access(file + "-wal", F_OK) != 0 {
            throw .corrupt(file: file, reason: "it is empty, 0 bytes, with no write-ahead log: cut short or damaged (move it aside, then restore a backup, or sync this node from the others)")
        }
        database = try Database(file: file, mode: readOnly ? .readOnly : .readWrite, create: create && !readOnly)
        checkpointer = readOnly ? nil : WALCheckpointer(file: file, pages: tuning.walCheckpointPages)
        if readOnly {
            try database.execute("PRAGMA query_only = ON")
        } else {
            // WAL: readers never block the writer; FULL: each commit is fsynced.
            try database.execute("PRAGMA journal_mode = WAL")
            try database.execute("PRAGMA synchronous = FULL")
            // Once copied, the WAL restarts from its start; its file is cut back to the
            // threshold then, so it does not keep the largest size a slow checkpoint let it reach.
            try database.execute("PRAGMA journal_size_limit = \(Int64(max(1, tuning.walCheckpointPages)) * 4_096)")
            try Self.syncLeftByTheLastWriter(file)
        }
        // Reads through a memory map of the start of the main file rather than pread copies
        // (the tree's upper pages are read by every block). The WAL is read with pread.
        try database.execute("PRAGMA mmap_size = \(max(0, tuning.mapBytes))")
        // A page cache larger than SQLite's 2 MiB default: a block's inserts land in the
        // tree's B-tree pages at random, and the upper levels are read by every block.
        try database.execute("PRAGMA cache_size = -\(max(1, tuning.cacheBytes >> 10))")
        let hasSchema = try database.integer("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'") ?? 0
        if hasSchema == 0 {
            guard !readOnly, create else {
                throw .corrupt(file: file, reason: "no Calisson schema in this file (wrong file, or never initialized)")
            }
            try migrate(from: 0)
        } else {
            let version = Int(try database.integer("SELECT version FROM schema_version") ?? 0)
            // A version below 1 is no version a store wrote: a damaged file (a migration
            // from a negative one ran for ever, from 0 failed on a table already there).
            guard version >= 1 else { throw .corrupt(file: file, reason: "schema_version holds \(version), no version this software wrote") }
            guard version <= Self.schemaVersion else { throw .schema(file: file, found: version, supported: Self.schemaVersion) }
            if version < Self.schemaVersion {
                guard !readOnly else { throw .schema(file: file, found: version, supported: Self.schemaVersion) }
                try migrate(from: version)
            }
        }
        try checkConsistency()
        if !readOnly { try undoUnfinishedStateWrite() }
        // The WAL is copied into the main file every ~40 MB (rather than SQLite's 4 MB: a
        // page rewritten by many blocks in between is copied once), by a thread of its own.
        if let checkpointer {
            checkpointer.start()
            database.setWALHook(checkpointer)
        }
    }

    deinit { close() }

    private static func isZeroBytes(_ path: String) -> Bool {
        var status = stat()
        // A regular file only: a pipe's size is 0 too, and is refused as a pipe.
        return stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG && status.st_size == 0
    }

    /// Makes durable what the last writer committed and did not sync: a node killed (by
    /// `kill -9`, for memory, by a failed sync that stopped it) leaves its last commits in
    /// the kernel's cache, where this process reads them as if on disk. A node would sign
    /// and answer on them at once (a vote its safety log already holds is sent again
    /// without a write), and a power cut before the kernel wrote them back would make it
    /// forget them. So the WAL, the main file and their directory are synced before the
    /// store is used; a failure is an error, the store is not opened.
    static func syncLeftByTheLastWriter(_ file: String) throws(StorageError) {
        let directory = file.lastIndex(of: "/").map { String(file[..<$0]) } ?? "."
        for path in [file + "-wal", file, directory.isEmpty ? "/" : directory] {
            // The directory's sync is what a file system allows (some refuse one, as
            // `DurableFile` takes it): the files' own syncs are what must not fail.
            let isDirectory = path != file && path != file + "-wal"
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            if descriptor < 0 {
                if isDirectory || (errno == ENOENT && path != file) { continue }
                throw .cannotOpen(file: file, reason: "\(path) cannot be opened to sync what the last writer left: \(String(cString: strerror(errno)))")
            }
            defer { Glibc.close(descriptor) }
            guard fsync(descriptor) == 0 || isDirectory else {
                throw .cannotOpen(file: file, reason: "\(path) could not be synced to disk: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Ends the store's use: stops the checkpointer, closes the connection and releases the
    /// database's lock (a stopped node's, so that another store may open it in this
    /// process). Later calls fail with an error; closing twice does nothing.
    public func close() {
        database.setWALHook(nil)
        checkpointer?.stop()
        database.close()
        lock?.release()
    }

    /// WAL checkpoints made off the writer's thread since the store opened, and those that
    /// failed with the last reason (the writer then checkpoints itself past a bound).
    public var checkpoints: (made: Int, failed: Int, lastFailure: String?) {
        checkpointer?.counts.withLock { $0 } ?? (0, 0, nil)
    }

    private func migrate(from version: Int) throws(StorageError) {
        try database.transaction { () throws(StorageError) in
            for next in (version + 1)...Self.schemaVersion {
                for sql in Self.migrations[next] ?? [] { try database.execute(sql) }
                if next == 4 { try moveHistory() }
                if next > 1 { try database.statement("UPDATE schema_version SET version = ?").bind(1, next).run() }
            }
        }
    }

    /// Version 3 to 4: the retired nodes and archived keys grouped by height into
    /// `history` rows, then the per-node table and the height indexes dropped.
    private func moveHistory() throws(StorageError) {
        var rows: [Int64: (retired: [UInt8], archived: [UInt8])] = [:]
        for (height, hash) in try database.statement("SELECT height, hash FROM retired_nodes").all({ ($0.int64(0), $0.blob(1) ?? []) }) {
            rows[height, default: ([], [])].retired += hash
        }
        for (height, key) in try database.statement("SELECT height, key FROM value_archive").all({ ($0.int64(0), $0.blob(1) ?? []) }) {
            rows[height, default: ([], [])].archived += key
        }
        for (height, row) in rows {
            try database.statement("INSERT INTO history (height, retired, revived, archived) VALUES (?, ?, ?, ?)")
                .bind(1, height).bind(2, row.retired).bind(3, [UInt8]()).bind(4, row.archived).run()
        }
        try database.execute("DROP TABLE retired_nodes")
        try database.execute("DROP INDEX value_archive_by_height")
    }

    /// The cheap checks made at every open: the last block and the meta records agree.
    /// SQLite reports damaged pages when they are read (`corrupt`); `integrityCheck`
    /// reads everything.
    /// The checks read one snapshot (one read transaction): a reader opening the file while
    /// the node writes would otherwise see a block from after the state it read, and call a
    /// sound file damaged.
    func checkConsistency() throws(StorageError) {
        try database.execute("BEGIN DEFERRED")
        do { try checkConsistencyInSnapshot() } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
        try database.execute("COMMIT")
    }

    private func checkConsistencyInSnapshot() throws(StorageError) {
        let stored = try database.integer("SELECT max(height) FROM blocks") ?? 0
        guard let last = UInt64(exactly: stored) else { throw .corrupt(file: file, reason: "a block at height \(stored)") }
        guard let recorded = try meta("height").map(Self.uint64) else {
            if last != 0 { throw .corrupt(file: file, reason: "blocks up to \(last) but no recorded height") }
            return
        }
        guard recorded == last else {
            throw .corrupt(file: file, reason: "recorded height \(recorded), last block \(last)")
        }
        // The first block stored (a database imported from a snapshot starts at its
        // checkpoint): within the blocks. Past them, ranges from it to the last block trapped.
        if let first = try meta("first_block").map(Self.uint64) {
            guard first >= 1, first <= last, try block(at: first) != nil else {
                throw .corrupt(file: file, reason: "the first block stored is recorded at height \(first), and the blocks run up to \(last) from it: no such block")
            }
        }
        let stateAt = try meta("state_height").map(Self.uint64) ?? recorded
        guard stateAt <= last else { throw .corrupt(file: file, reason: "the state is at height \(stateAt), past the last block \(last)") }
        if stateAt > 0 {
            guard let block = try block(at: stateAt) else { throw .corrupt(file: file, reason: "block \(stateAt) unreadable") }
            guard block.stateRoot == stateRoot else {
                throw .corrupt(file: file, reason: "block \(stateAt) records state root \(block.stateRoot.hex), the state is at \(stateRoot.hex)")
            }
        }
        // The blocks after the state's height are executed again from their bodies.
        if stateAt < last {
            let bodies = try database.statement("SELECT count(*) FROM blocks WHERE height > ? AND body IS NOT NULL").bind(1, stateAt).first { $0.uint64(0) } ?? 0
            guard bodies == last - stateAt else {
                throw .corrupt(file: file, reason: "the state is at height \(stateAt) and a body of the blocks up to \(last) is missing")
            }
        }
        if !isReadOnly, try hasLegacyTree() { return }  // the node converts it (`replaceLegacyTree`)
        if stateRoot != .zero, try treePage(stateRoot) == nil {
            throw .corrupt(file: file, reason: "the state tree's root page \(stateRoot.hex) is missing")
        }
    }

    /// SQLite's full check of every page and index (slow on a large file: an operator's tool).
    public func integrityCheck() throws(StorageError) {
        let problems = try database.statement("PRAGMA integrity_check").all { $0.text(0) ?? "" }
        guard problems == ["ok"] else { throw .corrupt(file: file, reason: problems.prefix(5).joined(separator: "; ")) }
    }

    // MARK: Meta

    func meta(_ name: String) throws(StorageError) -> [UInt8]? {
        try database.statement("SELECT value FROM meta WHERE name = ?").bind(1, name).first { $0.blob(0) } ?? nil
    }

    func setMeta(_ name: String, _ value: [UInt8]) throws(StorageError) {
        try database.statement("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)").bind(1, name).bind(2, value).run()
    }

    func deleteMeta(_ name: String) throws(StorageError) {
        try database.statement("DELETE FROM meta WHERE name = ?").bind(1, name).run()
    }

    static func uint64(_ bytes: [UInt8]) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
    static func bytes(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }

    /// The height of the last block stored (0: genesis state only, or empty).
    public var height: UInt64 { ((try? meta("height")) ?? nil).map(Self.uint64) ?? 0 }
    /// The root of the stored state, which is at `stateHeight`.
    public var stateRoot: Bytes32 { ((try? meta("state_root")) ?? nil).flatMap { Bytes32($0) } ?? .zero }
    /// The height the stored state is at: `height`, or below it when the last blocks were
    /// appended without their state (`append(_:state: nil)`); whoever writes next executes
    /// them again from their bodies (Docs/STORAGE.md, "The state at checkpoints").
    public var stateHeight: UInt64 { ((try? meta("state_height")) ?? nil).map(Self.uint64) ?? height }
    /// `height` and `stateHeight` read strictly: a read that fails is thrown, where those
    /// properties fall back (to 0, to `height`) for the readers that only show them. What
    /// decides on them at a node's start reads them here.
    public func heights() throws(StorageError) -> (height: UInt64, stateHeight: UInt64) {
        let height = try meta("height").map(Self.uint64) ?? 0
        return (height, try meta("state_height").map(Self.uint64) ?? height)
    }

    /// Whether the genesis state was written. A read that fails is thrown, never taken for
    /// "no": a node that could not read its file would otherwise write a genesis over its chain.
    public var isInitialized: Bool {
        get throws(StorageError) { try meta("height") != nil }
    }
    /// An opaque record the node keeps with the state (the consensus epoch schedule).
    public func extra(_ name: String) throws(StorageError) -> [UInt8]? { try meta("extra." + name) }

    /// Records an extra outside a block (one the node adds to a database written before it
    /// kept that record).
    public func setExtra(_ name: String, _ value: [UInt8]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.transaction { () throws(StorageError) in try setMeta("extra." + name, value) }
    }

    // MARK: Batches

    /// Whether a batch is open.
    public var isBatchOpen: Bool { database.batchOpen }

    /// Opens a batch: the writes until `commitBatch` are one SQL transaction (begun by the
    /// first of them), synced once when it commits (group commit). None is durable, or
    /// visible to another connection, before the commit; reads on this store see them. A
    /// write that fails inside the batch fails the batch: later writes and `commitBatch`
    /// throw, and nothing of it is written.
    ///
    /// `deferringSync`: the commit is not synced (`synchronous = NORMAL` for the batch's
    /// transaction): durable only once a `WALSyncer` has synced the WAL after it. The
    /// database stays consistent through a power cut meanwhile; only such commits not synced
    /// yet may be lost. Writes outside such a batch are synced in their commit as always.
    public func beginBatch(deferringSync: Bool = false) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.beginBatch(deferringSync: deferringSync)
    }

    /// Makes the batch's writes durable, all together; on failure (its own, or a write's
    /// inside the batch) none of them is written.
    /// Returns whether the batch wrote anything (a commit, with its fsync, was made).
    @discardableResult
    public func commitBatch() throws(StorageError) -> Bool {
        do { return try database.commitBatch() } catch {
            forgetCaches()  // the tables are as before the batch; reload
            throw error
        }
    }

    /// Forgets the batch's writes (after a failure inside it).
    public func rollbackBatch() {
        guard database.batchOpen else { return }
        database.rollbackBatch()
        forgetCaches()
    }

    /// The in-memory mirrors of tables, after a transaction that changed them failed: they
    /// are loaded again at their next use.
    func forgetCaches() {
        retiredCache = nil
        slicing = nil
        slicingLoaded = false
        storedKeys.forget()
        indexTail = nil
    }

    // MARK: Writes

    /// Writes the genesis state (height 0). The store must be empty.
    public func writeGenesis(_ state: StateChanges, extras: [String: [UInt8]] = [:]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        guard try !isInitialized else { throw .invalid(file: file, reason: "the genesis state is already written") }
        do { try writeGenesisTransaction(state, extras: extras) } catch {
            retiredCache = nil
            throw error
        }
    }

    private func writeGenesisTransaction(_ state: StateChanges, extras: [String: [UInt8]]) throws(StorageError) {
        try database.transaction { () throws(StorageError) in
            try write(state, height: 0)
            try setMeta("height", Self.bytes(0))
            for (name, value) in extras.sorted(by: { $0.key < $1.key }) { try setMeta("extra." + name, value) }
        }
    }

    /// Appends the next block, atomically: after a crash the store holds the state before
    /// the block or after it, never part of it. With `state`, the changes that bring the
    /// stored state from `stateHeight` to this block's (those of every block since, folded);
    /// without, the block alone, and the stored state stays where it is.
    public func append(_ block: BlockRecord, state: StateChanges?, extras: [String: [UInt8]] = [:]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        guard try isInitialized else { throw .invalid(file: file, reason: "no genesis state") }
        guard block.height == height + 1 else { throw .invalid(file: file, reason: "block \(block.height) after \(height)") }
        if let state, block.stateRoot != state.root {
            throw .invalid(file: file, reason: "block \(block.height)'s state root is not its state's")
        }
        do { try appendTransaction(block, state: state, extras: extras) } catch {
            forgetCaches()  // the tables are as before the transaction; reload them
            throw error
        }
    }

    /// Moves the stored state to block `height`, stored already, atomically: `state` brings it
    /// from `stateHeight` to that block's (those of the blocks between, folded), whose
    /// recorded root it must have. The blocks above stay to be executed again at the next
    /// open (a node writes the state at a checkpoint once it is certified, a few blocks later).
    public func writeState(_ state: StateChanges, atHeight height: UInt64) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        let stored = stateHeight
        guard height > stored, height <= self.height, let block = try self.block(at: height) else {
            throw .invalid(file: file, reason: "the state written at \(height), the stored state being at \(stored) and the last block \(self.height)")
        }
        guard block.stateRoot == state.root else { throw .invalid(file: file, reason: "the state written at \(height) is not the one block \(height) recorded") }
        guard try currentSlicing() == nil else { throw .invalid(file: file, reason: "the state written at \(height) while a write in slices is under way") }
        do { try database.transaction { () throws(StorageError) in try write(state, height: height) } } catch {
            forgetCaches()  // the tables are as before the transaction; reload them
            throw error
        }
    }

    private func appendTransaction(_ block: BlockRecord, state: StateChanges?, extras: [String: [UInt8]]) throws(StorageError) {
        try database.transaction { () throws(StorageError) in
            try insert(block)
            if let state {
                guard try currentSlicing() == nil else {
                    throw .invalid(file: file, reason: "the state written with block \(block.height) while a write in slices is under way")
                }
                try write(state, height: block.height)
            }
            try setMeta("height", Self.bytes(block.height))
            for (name, value) in extras.sorted(by: { $0.key < $1.key }) { try setMeta("extra." + name, value) }
        }
    }

    /// A block's row, and its transactions in the indexes or their tail (inside the caller's
    /// transaction).
    func insert(_ block: BlockRecord) throws(StorageError) {
        try database.statement(
            "INSERT INTO blocks (height, digest, body, certificate, state_root, transaction_count, results) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(1, block.height).bind(2, block.digest).bind(3, block.body).bind(4, block.certificate)
            .bind(5, block.stateRoot).bind(6, block.transactions.count).bind(7, Self.encodeResults(block.transactions)).run()
        try index(block)
    }

    private func write(_ state: StateChanges, height: UInt64) throws(StorageError) {
        var archived: [UInt8] = []
        for (key, value) in state.values {
            // The value it replaces stays readable for proofs at earlier checkpoints (copied
            // inside SQLite: one statement, no round trip of the old value).
            if height > 0 {
                try database.statement("INSERT OR REPLACE INTO value_archive (key, height, value) SELECT key, ?, value FROM state WHERE key = ?")
                    .bind(1, height).bind(2, key).run()
                // Named in the history only when there was a value to archive (a new key
                // has none): pruning deletes each named row.
                if database.changes > 0 { archived += key.bytes }
            }
            if let value {
                storedKeys.written(key)
                try database.statement("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)").bind(1, key).bind(2, value).run()
            } else {
                try database.statement("DELETE FROM state WHERE key = ?").bind(1, key).run()
            }
        }
        var retiredAt = try retiredHeights()
        retiredCache = nil  // the map's only reference: changed in place, not copied (set again below)
        var retired: [UInt8] = [], revived: [UInt8] = []
        retired.reserveCapacity(state.removedPages.count * Bytes32.byteCount)
        for hash in state.removedPages {
            retiredAt[hash] = height
            retired += hash.bytes
        }
        for (hash, page) in state.createdPages {
            try database.statement("INSERT OR REPLACE INTO tree_pages (hash, page) VALUES (?, ?)").bind(1, hash).bind(2, page).run()
            // A subtree back in the tree (a value restored) is live again: pruning must
            // not delete it. Recorded, so that a reloaded mirror knows it too.
            if retiredAt.removeValue(forKey: hash) != nil { revived += hash.bytes }
        }
        if !(retired.isEmpty && revived.isEmpty && archived.isEmpty) {
            try database.statement("INSERT OR REPLACE INTO history (height, retired, revived, archived) VALUES (?, ?, ?, ?)")
                .bind(1, height).bind(2, retired).bind(3, revived).bind(4, archived).run()
        }
        retiredCache = retiredAt
        try setMeta("state_root", state.root.bytes)
        try setMeta("state_height", Self.bytes(height))
    }

    /// For each tree node retired and not yet pruned, the height that retired it last,
    /// folded from the `history` rows (loaded at the first write or prune). Only a
    /// committed write updates it: `append`, `writeGenesis` and `pruneHistory` drop it when
    /// their transaction fails, so it is never ahead of or behind the table.
    var retiredCache: [Bytes32: UInt64]?
    /// The blocks not yet in the per-transaction indexes (nil: to be loaded from `index_tail`).
    var indexTail: IndexTail?
    /// The state write in slices under way (`NodeStore+Slices.swift`), loaded from the file
    /// at first use (`slicingLoaded`) and kept with it; dropped, to be loaded again, where
    /// `retiredCache` is.
    var slicing: Slicing?
    var slicingLoaded = false
    /// The filter of the stored state's keys (`NodeStore+KeyFilter.swift`): a writing
    /// store's, built in steps (`advanceKeyFilter`); nil until then.
    var storedKeys = StoredKeys()

    func retiredHeights() throws(StorageError) -> [Bytes32: UInt64] {
        if let retiredCache { return retiredCache }
        var heights: [Bytes32: UInt64] = [:]
        let rows = try database.statement("SELECT height, retired, revived FROM history ORDER BY height")
            .all { ($0.uint64(0), $0.blob(1) ?? [], $0.blob(2) ?? []) }
        for (height, retired, revived) in rows {
            for hash in Self.hashes(retired) { heights[hash] = height }
            for hash in Self.hashes(revived) { heights[hash] = nil }
        }
        // Pages a write in slices under way brought back are live again: no pruning may
        // delete them.
        for hash in try currentSlicing()?.revived ?? [] { heights[hash] = nil }
        retiredCache = heights
        return heights
    }

    /// The 32-byte values concatenated in a history blob.
    static func hashes(_ blob: [UInt8]) -> [Bytes32] {
        stride(from: 0, to: blob.count - blob.count % Bytes32.byteCount, by: Bytes32.byteCount).map {
            Bytes32(blob[$0..<$0 + Bytes32.byteCount])!
        }
    }

    /// Stores a stable checkpoint's certificate.
    public func putCheckpoint(height: UInt64, certificate: [UInt8]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.transaction { () throws(StorageError) in
            try database.statement("INSERT OR REPLACE INTO checkpoints (height, certificate) VALUES (?, ?)")
                .bind(1, height).bind(2, certificate).run()
        }
    }

    /// Runs `body`'s reads in one read transaction: one snapshot, and one lock taken for
    /// all of them instead of one per statement (a block's execution reads hundreds of
    /// values and tree nodes). Writes go through `append`, after it. Inside a batch, the
    /// batch is that transaction.
    public func reading<T>(_ body: () -> T) throws(StorageError) -> T {
        if database.batchBegun { return body() }
        try database.execute("BEGIN DEFERRED")
        let result = body()
        try database.execute("COMMIT")
        return result
    }

    /// Records the proof of a validator-set change (decided by block `changedAt`), taken at
    /// the stable checkpoint `height`; `record` is its client wire form.
    public func putHandover(changedAt: UInt64, height: UInt64, record: [UInt8]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.transaction { () throws(StorageError) in
            try database.statement("INSERT OR REPLACE INTO handovers (changed_at, height, record) VALUES (?, ?, ?)")
                .bind(1, changedAt).bind(2, height).bind(3, record).run()
        }
    }

    /// The latest change with a handover (0: none).
    public func lastHandover() throws(StorageError) -> UInt64 {
        UInt64(clamping: try database.integer("SELECT coalesce(max(changed_at), 0) FROM handovers") ?? 0)
    }

    /// The handovers of changes decided after block `changedAt`, oldest first.
    public func handovers(after changedAt: UInt64, limit: Int) throws(StorageError) -> [(changedAt: UInt64, record: [UInt8])] {
        try database.statement("SELECT changed_at, record FROM handovers WHERE changed_at > ? ORDER BY changed_at LIMIT ?")
            .bind(1, changedAt).bind(2, limit).all { ($0.uint64(0), $0.blob(1) ?? []) }
    }

    /// The highest height with a stored checkpoint certificate at or below `height`.
    public func checkpoint(atOrBelow height: UInt64) throws(StorageError) -> (height: UInt64, certificate: [UInt8])? {
        try database.statement("SELECT height, certificate FROM checkpoints WHERE height <= ? ORDER BY height DESC LIMIT 1")
            .bind(1, height).first { ($0.uint64(0), $0.blob(1) ?? []) }
    }

    /// The values `key` held after `height`, oldest first (from the archive), then its
    /// current value: the one a proof at a checkpoint names is among them.
    public func values(of key: Bytes32, after height: UInt64) throws(StorageError) -> [[UInt8]] {
        let archived = try database.statement("SELECT value FROM value_archive WHERE key = ? AND height > ? ORDER BY height")
            .bind(1, key).bind(2, height).all { $0.blob(0) ?? [] }
        return archived + (try value(key).map { [$0] } ?? [])
    }

    /// Forgets the tree nodes and values replaced at or before `height` (a checkpoint
    /// now served): nothing at or after it can reach them.
    public func pruneHistory(through height: UInt64) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        do { try pruneHistoryTransaction(through: height) } catch {
            forgetCaches()  // the tables are as before the transaction; reload them
            throw error
        }
    }

    private func pruneHistoryTransaction(through height: UInt64) throws(StorageError) {
        var retiredAt = try retiredHeights()
        retiredCache = nil  // changed in place, set again once the transaction commits
        try database.transaction { () throws(StorageError) in
            let rows = try database.statement("SELECT height, retired, archived FROM history WHERE height <= ? ORDER BY height")
                .bind(1, height).all { ($0.uint64(0), $0.blob(1) ?? [], $0.blob(2) ?? []) }
            for (retiredHeight, retired, archived) in rows {
                // A node retired again later, or revived, is not this row's to delete.
                for hash in Self.hashes(retired) where retiredAt[hash] == retiredHeight {
                    try database.statement("DELETE FROM tree_pages WHERE hash = ?").bind(1, hash).run()
                    retiredAt[hash] = nil
                }
                for key in Self.hashes(archived) {
                    try database.statement("DELETE FROM value_archive WHERE key = ? AND height = ?")
                        .bind(1, key).bind(2, retiredHeight).run()
                }
            }
            try database.statement("DELETE FROM history WHERE height <= ?").bind(1, height).run()
        }
        retiredCache = retiredAt
    }

    // MARK: The version-4 tree

    /// Whether the tree is still stored one row per binary node (a version-4 file not yet
    /// converted: `Node.StoredState.convertLegacyTree`).
    public func hasLegacyTree() throws(StorageError) -> Bool {
        guard try database.integer("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tree_nodes'") == 1 else { return false }
        return try database.integer("SELECT count(*) FROM (SELECT 1 FROM tree_nodes LIMIT 1)") == 1
    }

    /// A node of the version-4 tree, by hash.
    public func legacyTreeNode(_ hash: Bytes32) throws(StorageError) -> [UInt8]? {
        try database.statement("SELECT node FROM tree_nodes WHERE hash = ?").bind(1, hash).first { $0.blob(0) } ?? nil
    }

    /// Replaces the version-4 tree by its pages, atomically: the pages written, the
    /// history's node hashes forgotten (they named binary nodes), `retiredPages` (pages
    /// only an earlier checkpoint's tree reaches) retired at the current height, and the
    /// node table dropped.
    public func replaceLegacyTree(pages: [(hash: Bytes32, page: [UInt8])], retiredPages: [Bytes32]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        defer { retiredCache = nil }
        try database.transaction { () throws(StorageError) in
            for (hash, page) in pages {
                try database.statement("INSERT OR REPLACE INTO tree_pages (hash, page) VALUES (?, ?)").bind(1, hash).bind(2, page).run()
            }
            try database.execute("UPDATE history SET retired = x'', revived = x''")
            if !retiredPages.isEmpty {
                try database.statement("""
                    INSERT INTO history (height, retired, revived, archived) VALUES (?, ?, x'', x'')
                    ON CONFLICT (height) DO UPDATE SET retired = excluded.retired
                    """).bind(1, height).bind(2, retiredPages.flatMap(\.bytes)).run()
            }
            try database.execute("DROP TABLE tree_nodes")
        }
    }

    // MARK: Safety log

    /// Appends the consensus records that must be durable before the messages they
    /// cover leave: fsynced when this returns. One transaction for all of them.
    public func appendSafety(_ records: [[UInt8]]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        guard !records.isEmpty else { return }
        try database.transaction { () throws(StorageError) in
            for record in records {
                try database.statement("INSERT INTO safety_log (record) VALUES (?)").bind(1, record).run()
            }
        }
    }

    /// Every safety record, in the order written (the replica folds them on restart).
    public func safetyRecords() throws(StorageError) -> [[UInt8]] {
        try database.statement("SELECT record FROM safety_log ORDER BY sequence").all { $0.blob(0) ?? [] }
    }

    /// Replaces the log by an equivalent shorter one (the fold so far), atomically.
    public func compactSafety(_ records: [[UInt8]]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.transaction { () throws(StorageError) in
            try database.execute("DELETE FROM safety_log")
            for record in records {
                try database.statement("INSERT INTO safety_log (record) VALUES (?)").bind(1, record).run()
            }
        }
    }

    // MARK: Reads

    /// The key's value in the stored state (at `stateHeight`), read around a write in
    /// slices under way (`valueBeforeSlices`). On a read-only store, its statements are one
    /// snapshot (`oneSnapshot`).
    public func value(_ key: Bytes32) throws(StorageError) -> [UInt8]? {
        try oneSnapshot { () throws(StorageError) -> [UInt8]? in
            if let before = try valueBeforeSlices(key) { return before }
            guard storedKeys.mayContain(key) else { return nil }
            return try database.statement("SELECT value FROM state WHERE key = ?").bind(1, key).first { $0.blob(0) } ?? nil
        }
    }

    /// Runs `body`'s reads in one read transaction on a read-only store whose caller has
    /// opened none (`reading`): a value read around a write in slices takes several
    /// statements, and the node writing the file may finish or undo a slice between two of
    /// them. A writing store's reads are its own and need none.
    func oneSnapshot<T>(_ body: () throws(StorageError) -> T) throws(StorageError) -> T {
        guard isReadOnly, !database.inTransaction else { return try body() }
        try database.execute("BEGIN DEFERRED")
        do {
            let result = try body()
            try database.execute("COMMIT")
            return result
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }

    /// The tree page whose root node has this hash.
    public func treePage(_ hash: Bytes32) throws(StorageError) -> [UInt8]? {
        try database.statement("SELECT page FROM tree_pages WHERE hash = ?").bind(1, hash).first { $0.blob(0) } ?? nil
    }

    public func block(at height: UInt64) throws(StorageError) -> BlockRecord? {
        let row = try database.statement("SELECT digest, body, certificate, state_root, results FROM blocks WHERE height = ?").bind(1, height)
            .first { ($0.blob(0).flatMap { Bytes32($0) }, $0.blob(1), $0.blob(2) ?? [], $0.blob(3).flatMap { Bytes32($0) }, $0.blob(4)) }
        guard let (digest, body, certificate, root, results) = row else { return nil }
        guard let digest, let root else { throw .corrupt(file: file, reason: "block \(height) has a malformed digest or root") }
        let file = self.file
        if let results {
            guard let records = Self.decodeResults(results) else { throw .corrupt(file: file, reason: "block \(height)'s results do not decode") }
            return BlockRecord(height: height, digest: digest, body: body, certificate: certificate, stateRoot: root, transactions: records)
        }
        let records = try database.statement("SELECT id, result FROM transactions WHERE height = ? ORDER BY position").bind(1, height)
            .all { (row) throws(StorageError) -> TransactionRecord in
                guard let id = row.blob(0).flatMap({ Bytes32($0) }) else { throw .corrupt(file: file, reason: "a transaction id of block \(height)") }
                return TransactionRecord(id: id, result: row.blob(1) ?? [], accounts: [])
            }
        return BlockRecord(height: height, digest: digest, body: body, certificate: certificate, stateRoot: root, transactions: records)
    }

    /// Final blocks' headers from `from` through `through`, in height order: no body and no
    /// transaction is read, so a summary of a block costs the same whatever its size.
    public func blockHeaders(from: UInt64, through: UInt64) throws(StorageError) -> [BlockHeaderRecord] {
        guard from <= through else { return [] }
        let file = self.file
        return try database.statement(
            "SELECT height, digest, certificate, state_root, transaction_count FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height")
            .bind(1, from).bind(2, through)
            .all { (row) throws(StorageError) -> BlockHeaderRecord in
                let height = row.uint64(0)
                guard let digest = row.blob(1).flatMap({ Bytes32($0) }), let root = row.blob(3).flatMap({ Bytes32($0) }) else {
                    throw .corrupt(file: file, reason: "block \(height) has a malformed digest or root")
                }
                return BlockHeaderRecord(height: height, digest: digest, certificate: row.blob(2) ?? [], stateRoot: root, transactionCount: row.uint64(4))
            }
    }

    /// A block's transaction ids and results, in position order (the `results` column).
    static func encodeResults(_ transactions: [TransactionRecord]) -> [UInt8] {
        var writer = WireWriter()
        writer.write(UInt32(transactions.count))
        for transaction in transactions {
            writer.writeFixed(transaction.id.bytes)
            writer.writeBytes(transaction.result)
        }
        return writer.bytes
    }

    static func decodeResults(_ bytes: [UInt8]) -> [TransactionRecord]? {
        var reader = WireReader(bytes)
        guard let count = try? reader.readCount("results", maximum: 1 << 20) else { return nil }
        var records: [TransactionRecord] = []
        for _ in 0..<count {
            guard let id = try? Bytes32(from: &reader), let result = try? reader.readBytes("result", maximum: 1 << 16) else { return nil }
            records.append(TransactionRecord(id: id, result: result, accounts: []))
        }
        guard (try? reader.expectEnd()) != nil else { return nil }
        return records
    }

    /// Every value of the stored state, by key order (exports, and the tests' root
    /// recomputation), read around a write in slices under way (`value`), in one snapshot
    /// on a read-only store (`oneSnapshot`).
    public func forEachValue(_ body: (Bytes32, [UInt8]) -> Void) throws(StorageError) {
        for (key, value) in try oneSnapshot({ () throws(StorageError) in try storedValues() }) { body(key, value) }
    }

    /// The rows `forEachValue` goes through.
    private func storedValues() throws(StorageError) -> [(Bytes32, [UInt8])] {
        let file = self.file
        var rows: [(Bytes32, [UInt8])] = []
        _ = try database.statement("SELECT key, value FROM state ORDER BY key").all { (row) throws(StorageError) in
            guard let key = row.blob(0).flatMap({ Bytes32($0) }) else { throw .corrupt(file: file, reason: "a state key is not 32 bytes") }
            rows.append((key, row.blob(1) ?? []))
        }
        if let slicing = try currentSlicing() {
            // The keys a slice changed or deleted take their value from before it.
            let archived = try database.statement("SELECT key, value FROM value_archive WHERE height = ?").bind(1, slicing.height)
                .all { (row) throws(StorageError) in
                    guard let key = row.blob(0).flatMap({ Bytes32($0) }) else { throw .corrupt(file: file, reason: "an archived key is not 32 bytes") }
                    return (key, row.blob(1) ?? [])
                }
            var merged = Dictionary(rows, uniquingKeysWith: { first, _ in first })
            for (key, value) in archived { merged[key] = value }
            for key in try database.statement("SELECT key FROM state_slice_added").all({ $0.blob(0).flatMap { Bytes32($0) } }) {
                if let key { merged[key] = nil }
            }
            rows = merged.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
        return rows
    }

    /// Where a transaction is: its block, position and result.
    /// The blocks not yet indexed (`IndexTail`) are read with the index, as if it held them.
    public func transaction(_ id: Bytes32) throws(StorageError) -> (height: UInt64, position: Int, result: [UInt8])? {
        try oneSnapshot { () throws(StorageError) in
            let tail = try currentIndexTail()
            let indexed = try database.statement("SELECT height, position, result FROM transactions WHERE id = ?").bind(1, id)
                .first { (height: $0.uint64(0), position: Int(clamping: $0.uint64(1)), result: $0.blob(2) ?? []) }
            // The index's rule: a place where it applied is not moved by a later copy.
            if let later = tail.place(of: id), indexed?.result != StoredResult.applied { return (later.height, later.position, later.result) }
            return indexed
        }
    }

    /// The latest transactions concerning an account, newest first, with their ids and
    /// results: read by their place (`transactions_by_height`), not from their blocks, so
    /// the cost does not grow with the blocks' size. A rejected copy of a transaction
    /// (`transactions` has the place it applied at) is read from its block's results. None
    /// for a `limit` of 0 or less.
    public func accountTransactions(of account: Bytes32, limit: Int, atMost height: UInt64 = .max) throws(StorageError)
        -> [(height: UInt64, position: Int, transaction: TransactionRecord)]
    {
        try oneSnapshot { () throws(StorageError) in
            // The blocks not yet indexed come first: they are above every indexed one.
            let recent = try currentIndexTail().entries(of: account, atMost: height, limit: limit).map {
                (height: $0.height, position: $0.position, transaction: TransactionRecord(id: $0.id, result: $0.result, accounts: []))
            }
            guard recent.count < limit else { return recent }
            return recent + (try indexedAccountTransactions(of: account, limit: limit - recent.count, atMost: height))
        }
    }

    private func indexedAccountTransactions(of account: Bytes32, limit: Int, atMost height: UInt64) throws(StorageError)
        -> [(height: UInt64, position: Int, transaction: TransactionRecord)]
    {
        let rows = try database.statement(
            """
            SELECT a.height, a.position, t.id, t.result FROM account_transactions a
            LEFT JOIN transactions t ON t.height = a.height AND t.position = a.position
            WHERE a.account = ? AND a.height <= ? ORDER BY a.height DESC, a.position DESC LIMIT ?
            """)
            .bind(1, account.bytes).bind(2, height).bind(3, limit)
            .all { ($0.uint64(0), Int(clamping: $0.uint64(1)), $0.blob(2).flatMap { Bytes32($0) }, $0.blob(3) ?? []) }
        var found: [(height: UInt64, position: Int, transaction: TransactionRecord)] = []
        for (height, position, id, result) in rows {
            if let id {
                found.append((height, position, TransactionRecord(id: id, result: result, accounts: [])))
            } else if let block = try block(at: height), position < block.transactions.count {
                found.append((height, position, block.transactions[position]))
            }
        }
        return found
    }

    /// The latest transactions concerning an account, newest first (none for a `limit` of 0
    /// or less).
    public func transactions(of account: Bytes32, limit: Int, atMost height: UInt64 = .max) throws(StorageError) -> [(height: UInt64, position: Int)] {
        try oneSnapshot { () throws(StorageError) in
            let recent = try currentIndexTail().entries(of: account, atMost: height, limit: limit).map { (height: $0.height, position: $0.position) }
            guard recent.count < limit else { return recent }
            return recent + (try database.statement(
                "SELECT height, position FROM account_transactions WHERE account = ? AND height <= ? ORDER BY height DESC, position DESC LIMIT ?")
                .bind(1, account.bytes).bind(2, Int64(clamping: height)).bind(3, limit - recent.count).all { ($0.uint64(0), Int(clamping: $0.uint64(1))) })
        }
    }

    // MARK: Maintenance

    /// The lowest height whose block body is still stored: bodies below it were pruned
    /// (`pruneBodies`). 1 when none was.
    public var bodiesKeptFrom: UInt64 { ((try? meta("bodies_kept_from")) ?? nil).map(Self.uint64) ?? 1 }
    /// The lowest height with a stored block: 1, or the checkpoint a database imported
    /// from a snapshot starts at (`completeImport`); nothing below it is stored.
    public var firstBlock: UInt64 { ((try? meta("first_block")) ?? nil).map(Self.uint64) ?? 1 }

    /// Drops the bodies of blocks below `height`, at most `limit` blocks from
    /// `bodiesKeptFrom` on, in one transaction (or in the open batch). Headers,
    /// certificates, transaction results, events and the state are kept. Returns how many
    /// heights it covered (`bodiesKeptFrom` moved by that much).
    @discardableResult
    public func pruneBodies(below height: UInt64, limit: UInt64 = .max) throws(StorageError) -> UInt64 {
        guard !isReadOnly else { throw .readOnly(file: file) }
        let from = bodiesKeptFrom
        // No body above the last block, nor above the stored state's height (the blocks after
        // it are executed again from their bodies at the next open).
        let stored = stateHeight
        let top = stored == .max ? height : min(height, stored + 1)
        guard top > from, limit > 0 else { return 0 }
        let to = from + min(limit, top - from)
        try database.transaction { () throws(StorageError) in
            try database.statement("UPDATE blocks SET body = NULL WHERE height >= ? AND height < ? AND body IS NOT NULL").bind(1, from).bind(2, to).run()
            try setMeta("bodies_kept_from", Self.bytes(to))
        }
        return to - from
    }

    /// Rebuilds the file without its free pages (after pruning: SQLite reuses freed pages
    /// but never gives them back to the file system on its own). Needs as much free disk
    /// as the database, and the node stopped (`calisson-node prune --vacuum`).
    public func vacuum() throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.execute("VACUUM")
        try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// A consistent copy of the whole database, taken online (SQLite's backup API): the
    /// node keeps writing meanwhile. One step copies every page under one read
    /// transaction (WAL: the writer is not blocked), so a node that commits a block every
    /// few milliseconds from another process cannot make the copy restart forever.
    public func backup(to destination: String) throws(StorageError) {
        guard database.raw != nil else { throw .invalid(file: file, reason: "the store is closed") }
        var target: OpaquePointer?
        guard sqlite3_open_v2(destination, &target, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK else {
            sqlite3_close(target)
            throw .cannotOpen(file: destination, reason: "backup destination")
        }
        defer { sqlite3_close(target) }
        guard let backup = sqlite3_backup_init(target, "main", database.raw, "main") else {
            throw .sqlite(file: destination, code: sqlite3_errcode(target), message: String(cString: sqlite3_errmsg(target)))
        }
        var status: Int32
        repeat { status = sqlite3_backup_step(backup, -1) } while status == SQLITE_OK || status == SQLITE_BUSY || status == SQLITE_LOCKED
        sqlite3_backup_finish(backup)
        guard status == SQLITE_DONE else { throw .sqlite(file: destination, code: status, message: "backup did not complete") }
    }

    /// Moves the WAL's pages into the main file and truncates the WAL (operators, backups,
    /// measurements; SQLite also does it on its own every 1000 pages).
    public func checkpointWAL() throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// Bytes of free pages in the main file (reused by later writes; `vacuum` returns them).
    public var freeBytes: Int64 {
        (try? database.integer("SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()")) ?? nil ?? 0
    }

    /// Bytes the database's main file occupies (after `checkpointWAL`, all of it).
    public var fileBytes: Int64 {
        (try? database.integer("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")) ?? nil ?? 0
    }
}
