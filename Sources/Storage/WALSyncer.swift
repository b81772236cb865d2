import Foundation
import Synchronization

/// Makes the commits of deferred batches (`NodeStore.beginBatch(deferringSync: true)`)
/// durable on a thread of its own, so that the node's event loop does not wait for the
/// disk: the loop commits a turn's writes (into the WAL, without an fsync), asks for the
/// commit's number to be synced, and goes on with its next turn; this thread `fdatasync`s
/// the WAL and reports the highest number it covered. The caller acts on a commit (sends
/// the votes and answers that depend on it) only once that report has come.
///
/// One sync covers every commit made before it started (they are all in the WAL's file
/// by then): while one runs, the commits of the next turns gather, and the next sync
/// covers them all (group commit across turns). A sync that fails fails every later one
/// too: what it should have made durable is not known to be, and the caller stops.
///
/// Why this is as safe as `synchronous = FULL`: a deferred batch commits at
/// `synchronous = NORMAL`, under which SQLite keeps the database consistent through a
/// power cut (its checkpoints still sync the WAL before copying it into the main file, and
/// the main file before the WAL restarts) and may lose only the latest commits, those not
/// yet synced; this thread syncs the WAL's own file, so every commit it reports survives a
/// power cut as if SQLite had synced it in the commit. A WAL copied into the main file and
/// restarted in between was synced by that checkpoint.
public final class WALSyncer: @unchecked Sendable {
    /// A failed sync: what it covered is not known to be durable.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let file: String
        public let reason: String
        public var description: String { "\(file): the write-ahead log could not be synced to disk: \(reason)" }
    }

    /// The commits covered so far (every commit numbered up to `through`), or the failure.
    public typealias Report = @Sendable (_ through: UInt64, _ failure: Failure?) -> Void

    private let walFile: String
    private let report: Report
    /// The sync itself (a test injects a failing or a slow one): `fdatasync`'s contract.
    private let sync: @Sendable (Int32) -> Int32
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var requested: UInt64 = 0
    /// Every commit numbered up to this is synced; `failed`: a sync failed (none is since).
    private var synced: UInt64 = 0
    private var failed = false
    private var stopping = false
    private var running = false
    private let ended = DispatchSemaphore(value: 0)
    /// Syncs made, and the longest one (microseconds).
    public let counts = Mutex<(syncs: Int, longestMicroseconds: UInt64)>((0, 0))

    /// `databaseFile`'s WAL (`<file>-wal`) is synced; `report` runs on the syncer's thread.
    public convenience init(databaseFile: String, report: @escaping Report) {
        self.init(databaseFile: databaseFile, sync: { fdatasync($0) }, report: report)
    }

    /// With `sync` in place of `fdatasync` (tests: a failing or a slow disk).
    public init(databaseFile: String, sync: @escaping @Sendable (Int32) -> Int32, report: @escaping Report) {
        walFile = databaseFile + "-wal"
        self.sync = sync
        self.report = report
    }

    /// Starts the thread.
    public func start() {
        condition.lock()
        running = true
        condition.unlock()
        let thread = Thread { [self] in work() }
        thread.name = "calisson-walsync"
        thread.start()
    }

    /// Asks for every commit numbered up to `commit` to be synced (any thread; cheap).
    /// Numbers only grow: a lower one than already asked changes nothing.
    public func request(through commit: UInt64) {
        condition.lock()
        requested = max(requested, commit)
        condition.broadcast()
        condition.unlock()
    }

    /// Waits at most `timeout` for every commit numbered up to `commit` to be synced; true
    /// if they were (the report comes too, later), false on time out or a failed sync.
    public func wait(through commit: UInt64, timeout: Duration) -> Bool {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        condition.lock()
        defer { condition.unlock() }
        while synced < commit, !failed, !stopping {
            if !condition.wait(until: deadline) { break }
        }
        return synced >= commit && !failed
    }

    /// Ends the thread after the sync it is making, if any (the commits asked for and not
    /// synced yet are not reported); returns once it has.
    public func stop() {
        condition.lock()
        let wasRunning = running
        running = false
        stopping = true
        condition.broadcast()  // the thread, and a `wait` in progress
        condition.unlock()
        if wasRunning { ended.wait() }
    }

    private func work() {
        defer { ended.signal() }
        var descriptor: Int32 = -1
        defer { if descriptor >= 0 { close(descriptor) } }
        var failure: Failure?
        while true {
            condition.lock()
            while requested <= synced && !stopping { condition.wait() }
            if stopping {
                condition.unlock()
                return
            }
            let target = requested
            condition.unlock()
            if failure == nil, descriptor < 0 {
                // Opened at the first request: the WAL exists once a commit was made. Its
                // directory is synced once, so that the file's name survives a power cut too
                // (a directory that cannot be opened is not, as SQLite's own sync does).
                descriptor = open(walFile, O_RDONLY | O_CLOEXEC)
                if descriptor < 0 {
                    failure = Failure(file: walFile, reason: "cannot open it: \(String(cString: strerror(errno)))")
                } else {
                    let folder = (walFile as NSString).deletingLastPathComponent
                    let directory = open(folder.isEmpty ? "." : folder, O_RDONLY | O_CLOEXEC)
                    if directory >= 0 {
                        if fsync(directory) != 0 { failure = Failure(file: walFile, reason: "its directory's fsync failed: \(String(cString: strerror(errno)))") }
                        close(directory)
                    }
                }
            }
            if failure == nil {
                let start = ContinuousClock.now
                if sync(descriptor) != 0 {
                    failure = Failure(file: walFile, reason: "fdatasync failed: \(String(cString: strerror(errno)))")
                } else {
                    let elapsed = start.duration(to: .now).components
                    let microseconds = UInt64(clamping: elapsed.seconds) &* 1_000_000 &+ UInt64(clamping: elapsed.attoseconds / 1_000_000_000_000)
                    counts.withLock {
                        $0.syncs += 1
                        $0.longestMicroseconds = max($0.longestMicroseconds, microseconds)
                    }
                }
            }
            condition.lock()
            synced = target
            failed = failure != nil
            condition.broadcast()
            condition.unlock()
            report(target, failure)
        }
    }
}
