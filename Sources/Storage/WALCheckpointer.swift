import CSQLite
import Foundation
import Synchronization

/// Copies the WAL's pages into the database's main file on a thread of its own, through a
/// connection of its own, so that the node's loop never does it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
/// writer's thread: every ~10,000 pages (40 MiB) one commit also copied that many pages to
/// the main file and fsynced it, holding the node's event loop (blocks, votes, client
/// answers) for tens to hundreds of milliseconds. Here the writer's commits only count the
/// WAL's pages (`sqlite3_wal_hook`, which also turns the automatic checkpoint off); past
/// `pages` the checkpointer is woken and runs a PASSIVE checkpoint, which never
/// blocks the writer (WAL mode lets a checkpoint and a write transaction run at once) and is
/// crash-safe as SQLite's own. The writer rewinds the WAL by itself at its next transaction
/// once every frame has been copied. If the checkpointer falls behind (the WAL past
/// `pages` × `behindFactor`), the writer checkpoints in its commit as before: the
/// WAL stays bounded whatever happens to the thread.
final class WALCheckpointer: @unchecked Sendable {
    /// Past this many times `pages`, the writer checkpoints itself.
    static let behindFactor: Int32 = 4

    private let file: String
    /// WAL pages that wake the checkpointer.
    let pages: Int32
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var requested = false
    private var stopping = false
    private var running = false
    private let ended = DispatchSemaphore(value: 0)
    /// Checkpoints made, and those that failed (the reason of the last one).
    let counts = Mutex<(made: Int, failed: Int, lastFailure: String?)>((0, 0, nil))

    init(file: String, pages: Int32) {
        self.file = file
        self.pages = max(1, pages)
    }

    /// Starts the thread (its connection opens there).
    func start() {
        condition.lock()
        running = true
        condition.unlock()
        let thread = Thread { [self] in work() }
        thread.name = "calisson-checkpointer"
        thread.start()
    }

    /// Asks for a checkpoint (any thread; cheap: the writer calls it from its commit).
    func request() {
        condition.lock()
        requested = true
        condition.signal()
        condition.unlock()
    }

    /// Ends the thread after the checkpoint it is making, if any; returns once it has.
    func stop() {
        condition.lock()
        let wasRunning = running
        running = false  // a second stop returns at once
        stopping = true
        condition.signal()
        condition.unlock()
        if wasRunning { ended.wait() }
    }

    private func work() {
        defer { ended.signal() }
        let database: Database
        do {
            database = try Database(file: file, mode: .readWrite, create: false)
            try database.execute("PRAGMA synchronous = FULL")
        } catch {
            counts.withLock {
                $0.failed += 1
                $0.lastFailure = "\(error)"
            }
            condition.lock()
            running = false
            condition.unlock()
            return
        }
        while true {
            condition.lock()
            while !requested && !stopping { condition.wait() }
            if stopping {
                running = false
                condition.unlock()
                return
            }
            requested = false
            condition.unlock()
            do {
                try database.execute("PRAGMA wal_checkpoint(PASSIVE)")
                counts.withLock { $0.made += 1 }
            } catch {
                counts.withLock {
                    $0.failed += 1
                    $0.lastFailure = "\(error)"
                }
            }
        }
    }

    /// Installs the writer's hook on `handle`: after each commit, the WAL's page count
    /// decides whether to wake the checkpointer, or (far behind) to checkpoint at once.
    func hook(_ handle: OpaquePointer?) {
        sqlite3_wal_hook(handle, { context, connection, name, pages in
            guard let context else { return SQLITE_OK }
            let checkpointer = Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue()
            if pages >= checkpointer.pages &* WALCheckpointer.behindFactor {
                // Behind: as SQLite's automatic checkpoint would, in this commit.
                sqlite3_wal_checkpoint_v2(connection, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            } else if pages >= checkpointer.pages {
                checkpointer.request()
            }
            return SQLITE_OK
        }, Unmanaged.passUnretained(self).toOpaque())
    }
}
