import CSQLite
#if canImport(Glibc)
import Glibc
#endif
import Wire

/// Why the store cannot do what was asked. Every case names the database file.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(file: String, reason: String)
    /// Not a database, truncated, or failing SQLite's checks: never reset silently.
    case corrupt(file: String, reason: String)
    case schema(file: String, found: Int, supported: Int)
    case diskFull(file: String)
    case readOnly(file: String)
    case sqlite(file: String, code: Int32, message: String)
    /// The caller broke the store's contract (a block out of order).
    case invalid(file: String, reason: String)
    /// Another process (or another store in this one) writes this database.
    case inUse(file: String, holder: String)

    public var description: String {
        switch self {
        case let .cannotOpen(file, reason): return "\(file): cannot open: \(reason)"
        case let .corrupt(file, reason):
            return "\(file): the database is damaged: \(reason). Restore a backup with `calisson-node restore` (Docs/OPERATIONS.md); "
                + "a copy put in place by hand is damaged by the -wal and -shm files of the database it replaced (move them away)"
        case let .schema(file, found, supported): return "\(file): schema version \(found), this build reads up to \(supported)"
        case let .diskFull(file): return "\(file): the disk is full; the last write was not made"
        case let .readOnly(file): return "\(file): the database or its directory is read-only"
        case let .sqlite(file, code, message): return "\(file): SQLite error \(code): \(message)"
        case let .invalid(file, reason): return "\(file): \(reason)"
        case let .inUse(file, holder): return "\(file): in use by \(holder), which holds \(DatabaseLock.path(for: file)): stop it first"
        }
    }
}

/// One SQLite connection, used by one thread at a time. Statements are prepared once
/// and cached by their SQL literal; values are always bound, never spliced into SQL.
final class Database {
    let file: String
    private var handle: OpaquePointer?
    /// Prepared statements by the address of their SQL text: every statement is a literal
    /// (`StaticString`), so the address names it and a lookup hashes one word, not the text
    /// (finding each statement by its text was 1.5 % of a loaded node's CPU).
    private var statements: [UInt: Statement] = [:]

    enum Mode { case readWrite, readOnly }

    init(file: String, mode: Mode, create: Bool) throws(StorageError) {
        self.file = file
        // Only a regular file is a database: SQLite opening a pipe with no writer (a
        // configuration or a command line pointing at one) waits for ever. (The kinds are
        // named as `InputFile` names them; Storage does not depend on CalissonCrypto.)
        var info = stat()
        if stat(file, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
            let kind = switch info.st_mode & S_IFMT {
            case S_IFDIR: "a directory"
            case S_IFIFO: "a pipe"
            case S_IFCHR, S_IFBLK: "a device"
            case S_IFSOCK: "a socket"
            default: "not a file"
            }
            throw .cannotOpen(file: file, reason: "it is \(kind), not a regular file")
        }
        let flags = mode == .readOnly
            ? SQLITE_OPEN_READONLY
            : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0)
        let status = sqlite3_open_v2(file, &handle, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard status == SQLITE_OK else {
            let reason = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "code \(status)"
            sqlite3_close(handle)
            handle = nil
            throw .cannotOpen(file: file, reason: reason)
        }
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, 5_000)
    }

    deinit { close() }

    /// Closes the connection; later calls fail with SQLite's misuse error.
    func close() {
        statements = [:]
        sqlite3_close_v2(handle)
        handle = nil
    }

    /// Runs `checkpointer`'s hook after each commit (nil: none; SQLite's automatic
    /// checkpoint is off either way).
    func setWALHook(_ checkpointer: WALCheckpointer?) {
        guard handle != nil else { return }
        if let checkpointer {
            checkpointer.hook(handle)
        } else {
            sqlite3_wal_hook(handle, nil, nil)
        }
    }

    func error(_ status: Int32) -> StorageError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? ""
        switch status & 0xFF {
        case SQLITE_CORRUPT, SQLITE_NOTADB: return .corrupt(file: file, reason: message)
        case SQLITE_FULL: return .diskFull(file: file)
        case SQLITE_READONLY, SQLITE_CANTOPEN: return status & 0xFF == SQLITE_READONLY ? .readOnly(file: file) : .cannotOpen(file: file, reason: message)
        case SQLITE_IOERR: return .sqlite(file: file, code: status, message: "I/O error: \(message)")
        default: return .sqlite(file: file, code: status, message: message)
        }
    }

    /// Runs SQL without parameters (schema, pragmas).
    func execute(_ sql: String) throws(StorageError) {
        guard handle != nil else { throw .invalid(file: file, reason: "the store is closed") }
        let status = sqlite3_exec(handle, sql, nil, nil, nil)
        guard status == SQLITE_OK else { throw error(status) }
    }

    func statement(_ sql: StaticString) throws(StorageError) -> Statement {
        precondition(sql.hasPointerRepresentation, "SQL text is a string literal")
        let name = UInt(bitPattern: sql.utf8Start)
        if let cached = statements[name] {
            cached.reset()
            return cached
        }
        guard handle != nil else { throw .invalid(file: file, reason: "the store is closed") }
        var pointer: OpaquePointer?
        let status = sqlite3_prepare_v3(
            handle, UnsafeRawPointer(sql.utf8Start).assumingMemoryBound(to: CChar.self), Int32(clamping: sql.utf8CodeUnitCount),
            UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil)
        guard status == SQLITE_OK, let pointer else { throw error(status) }
        let statement = Statement(pointer, database: self)
        statements[name] = statement
        return statement
    }

    /// Whether a transaction is open on this connection (a batch's, or a reader's).
    var inTransaction: Bool { handle != nil && sqlite3_get_autocommit(handle) == 0 }

    /// Whether a batch is open: the writes until `commitBatch` or `rollbackBatch` go into
    /// one transaction, begun by the first of them (a batch with no write costs nothing).
    private(set) var batchOpen = false
    /// Whether the open batch's transaction has begun.
    private(set) var batchBegun = false
    /// The error of a write that failed inside the open batch: the batch can only be
    /// rolled back (its writes do not each keep a savepoint: that would copy every page
    /// they change to a statement journal first).
    private var batchFailure: StorageError?

    /// Whether the open batch commits without syncing (`synchronous = NORMAL` for its
    /// transaction; the caller syncs the WAL itself, `WALSyncer`).
    private var batchDefersSync = false
    /// Whether `synchronous` is NORMAL now, for the open batch's transaction.
    private var syncLowered = false

    func beginBatch(deferringSync: Bool = false) throws(StorageError) {
        guard !batchOpen else { throw .invalid(file: file, reason: "a batch is opened inside another") }
        batchOpen = true
        batchDefersSync = deferringSync
    }

    /// Commits the batch (with `synchronous = FULL`, one fsync of the WAL for all of it;
    /// deferring its sync, none); returns whether it wrote anything. If it fails, or a write
    /// inside the batch failed, nothing of the batch is written.
    func commitBatch() throws(StorageError) -> Bool {
        guard batchOpen else { return false }
        if let failure = batchFailure {
            rollbackBatch()
            throw failure
        }
        batchOpen = false
        guard batchBegun else {
            try restoreSync()
            return false
        }
        batchBegun = false
        do { try execute("COMMIT") } catch {
            if handle != nil, sqlite3_get_autocommit(handle) == 0 { try? execute("ROLLBACK") }
            try? restoreSync()
            throw error
        }
        try restoreSync()
        return true
    }

    /// Forgets the batch's writes.
    func rollbackBatch() {
        guard batchOpen else { return }
        batchOpen = false
        batchFailure = nil
        if batchBegun {
            batchBegun = false
            if handle != nil, sqlite3_get_autocommit(handle) == 0 { try? execute("ROLLBACK") }
        }
        try? restoreSync()
    }

    /// A statement failed: if that ended the batch's transaction (SQLite rolls a whole
    /// transaction back on some errors, an I/O error or running out of memory, even in a
    /// read), the batch has failed. Its later writes would otherwise each commit alone, and
    /// what they left on disk would be part of a turn.
    func statementFailed(_ error: StorageError) {
        guard batchBegun, batchFailure == nil, handle != nil, sqlite3_get_autocommit(handle) != 0 else { return }
        batchFailure = .invalid(file: file, reason: "SQLite ended the batch's transaction after an error (\(error)): nothing of the batch is written")
    }

    /// After a batch that deferred its sync: every later commit is synced in it again.
    private func restoreSync() throws(StorageError) {
        batchDefersSync = false
        guard syncLowered else { return }
        try execute("PRAGMA synchronous = FULL")
        syncLowered = false
    }

    /// Runs `body` in one transaction (BEGIN IMMEDIATE): all of it or none of it. Inside a
    /// batch, as part of the batch's: if `body` throws, the batch fails as a whole (every
    /// later write throws, and so does `commitBatch`, which writes nothing).
    func transaction<T>(_ body: () throws(StorageError) -> T) throws(StorageError) -> T {
        if batchOpen {
            if let failure = batchFailure {
                throw .invalid(file: file, reason: "an earlier write of this batch failed (\(failure)); it can only be rolled back")
            }
            do {
                if !batchBegun {
                    // Set outside the transaction, for its commit only (`restoreSync`).
                    if batchDefersSync, !syncLowered {
                        try execute("PRAGMA synchronous = NORMAL")
                        syncLowered = true
                    }
                    try execute("BEGIN IMMEDIATE")
                    batchBegun = true
                }
                return try body()
            } catch {
                batchFailure = error
                throw error
            }
        }
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// The first column of the first row, as an integer.
    func integer(_ sql: StaticString) throws(StorageError) -> Int64? {
        try statement(sql).first { $0.int64(0) }
    }

    var raw: OpaquePointer? { handle }

    /// Rows changed by the last INSERT, UPDATE or DELETE on this connection.
    var changes: Int { handle == nil ? 0 : Int(sqlite3_changes(handle)) }
}

/// A prepared statement. Bind by index (1-based), step, read columns (0-based).
final class Statement {
    private let pointer: OpaquePointer
    private unowned let database: Database

    init(_ pointer: OpaquePointer, database: Database) {
        self.pointer = pointer
        self.database = database
    }

    deinit { sqlite3_finalize(pointer) }

    func reset() {
        sqlite3_reset(pointer)
        sqlite3_clear_bindings(pointer)
    }

    @discardableResult
    func bind(_ index: Int32, _ value: Int64) -> Statement {
        sqlite3_bind_int64(pointer, index, value)
        return self
    }

    /// Heights, counts and limits are unsigned here and signed 64-bit in SQLite. A value
    /// past `Int64.max` can only come from outside (a client's height: the chain never gets
    /// there) and is bound as `Int64.max`, which orders after every stored value: `=` and
    /// `>` then find nothing and `<=` everything, the answer such a height deserves.
    @discardableResult
    func bind(_ index: Int32, _ value: UInt64) -> Statement { bind(index, Int64(clamping: value)) }

    @discardableResult
    func bind(_ index: Int32, _ value: Int) -> Statement { bind(index, Int64(value)) }

    @discardableResult
    func bind(_ index: Int32, _ bytes: [UInt8]?) -> Statement {
        guard let bytes else {
            sqlite3_bind_null(pointer, index)
            return self
        }
        bytes.withUnsafeBytes { buffer in
            // A zero-length blob still needs a non-null pointer to be a blob, not NULL.
            _ = sqlite3_bind_blob64(pointer, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1), UInt64(buffer.count), calisson_sqlite_transient())
        }
        return self
    }

    /// A 32-byte key or hash, bound from where it lies (no array made for it).
    @discardableResult
    func bind(_ index: Int32, _ value: Bytes32) -> Statement {
        value.withUnsafeBytes { buffer in
            _ = sqlite3_bind_blob64(pointer, index, buffer.baseAddress, UInt64(buffer.count), calisson_sqlite_transient())
        }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ text: String) -> Statement {
        sqlite3_bind_text(pointer, index, text, -1, calisson_sqlite_transient())
        return self
    }

    /// True for a row, false when done.
    func step() throws(StorageError) -> Bool {
        let status = sqlite3_step(pointer)
        switch status {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = database.error(status)
            sqlite3_reset(pointer)
            database.statementFailed(error)
            throw error
        }
    }

    /// The first row read by `read`, then the statement is reset: a statement left
    /// mid-result would hold its read snapshot, and a reader would stop seeing new blocks.
    func first<T>(_ read: (Statement) throws(StorageError) -> T) throws(StorageError) -> T? {
        defer { sqlite3_reset(pointer) }
        return try step() ? try read(self) : nil
    }

    /// Every row, read by `read`; the statement is reset after.
    func all<T>(_ read: (Statement) throws(StorageError) -> T) throws(StorageError) -> [T] {
        defer { sqlite3_reset(pointer) }
        var rows: [T] = []
        while try step() { rows.append(try read(self)) }
        return rows
    }

    /// Steps a statement that returns no rows.
    func run() throws(StorageError) {
        _ = try step()
        sqlite3_reset(pointer)
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(pointer, column) }
    /// A column stored from a `UInt64` (always ≥ 0); a negative value (a damaged file) reads as 0.
    func uint64(_ column: Int32) -> UInt64 { UInt64(clamping: int64(column)) }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(pointer, column) == SQLITE_NULL }

    func blob(_ column: Int32) -> [UInt8]? {
        guard !isNull(column) else { return nil }
        let count = Int(sqlite3_column_bytes(pointer, column))
        guard count > 0, let bytes = sqlite3_column_blob(pointer, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }

    func text(_ column: Int32) -> String? {
        guard let text = sqlite3_column_text(pointer, column) else { return nil }
        return String(cString: text)
    }
}
