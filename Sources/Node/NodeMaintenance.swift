import Foundation
import Ledger
import LightClient
import Storage
import Synchronization
import Transport
import Wire

/// What an operator does to a stopped node's database: drop old block bodies, restore a
/// backup. Both take the database's lock (`DatabaseLock`) for their whole run, so either
/// refuses, naming the process, while the node runs; neither deletes anything it replaces.
public enum NodeMaintenance {
    /// Why a maintenance command refused or failed, in a sentence naming the file.
    public struct Failure: Error, Equatable, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public struct PruneReport: Sendable, Equatable {
        /// The database's last block.
        public var height: UInt64
        /// Heights whose bodies this run dropped.
        public var pruned: UInt64
        /// The lowest height whose body is kept.
        public var keptFrom: UInt64
        /// The main file's size before and after (with `vacuum`; otherwise the freed pages
        /// are reused by later blocks and the file keeps its size).
        public var bytesBefore: Int64
        public var bytesAfter: Int64
        /// Free pages in the file after the run, in bytes.
        public var freeBytes: Int64
    }

    /// Blocks pruned per SQL transaction: bounds the WAL the run writes.
    static let pruneStep: UInt64 = 10_000

    /// Drops the bodies of the blocks older than the `keep` latest, never one above the
    /// latest stable checkpoint; with `vacuum`, then rebuilds the file without its free
    /// pages (as much free disk as the database needs). The node must be stopped.
    public static func prune(databaseFile: String, keep: UInt64, vacuum: Bool) throws -> PruneReport {
        guard FileManager.default.fileExists(atPath: databaseFile) else { throw Failure("\(databaseFile): no such database") }
        let store = try NodeStore(file: databaseFile)
        try store.checkpointWAL()
        let before = store.fileBytes
        let height = store.height
        var pruned: UInt64 = 0
        if height > keep, let checkpoint = try store.checkpoint(atOrBelow: height)?.height {
            let below = min(checkpoint, height - keep) + 1
            while case let step = try store.pruneBodies(below: below, limit: pruneStep), step > 0 { pruned += step }
        }
        if vacuum { try store.vacuum() } else { try store.checkpointWAL() }
        return PruneReport(
            height: height, pruned: pruned, keptFrom: store.bodiesKeptFrom, bytesBefore: before, bytesAfter: store.fileBytes,
            freeBytes: store.freeBytes)
    }

    public struct RestoreReport: Sendable, Equatable {
        public var height: UInt64
        /// The height of the stored state (the last checkpoint's, for a node's database).
        public var stateHeight: UInt64
        public var stateRoot: Bytes32
        /// Where the files it replaced were moved (the database, its -wal and -shm).
        public var movedAside: [String]
        /// What became of the safety log of the database replaced.
        public var safetyLog: SafetyLogCarried
    }

    /// The safety log (the votes the node's key signed) of a database that `restore`
    /// replaces: the votes signed since the backup are there, not in the backup.
    public enum SafetyLogCarried: Sendable, Equatable {
        /// No database was there.
        case noDatabase
        /// Its records (this many) replaced the backup's.
        case carried(records: Int)
        /// It is behind the backup (its height): the backup's log is kept.
        case behindTheBackup(height: UInt64)
        /// It could not be read (why): the backup's log is kept, and the node knows only
        /// the votes the backup holds.
        case unreadable(String)
    }

    /// Puts `backup` in place of `databaseFile`: checks the backup opens as a node's
    /// database made with this `genesis`, moves the database and its -wal and -shm files
    /// aside (SQLite would otherwise apply the old WAL to the restored copy and report it
    /// damaged), copies the backup in under a temporary name, syncs it and renames it into
    /// place. The node must be stopped; the backup is only read.
    public static func restore(databaseFile: String, from backup: String, genesis: Genesis, now: Date = Date()) throws -> RestoreReport {
        let files = FileManager.default
        let lock = try DatabaseLock(databaseFile: databaseFile)
        defer { withExtendedLifetime(lock) {} }
        guard files.fileExists(atPath: backup) else { throw Failure("\(backup): no such backup") }
        if let size = (try? files.attributesOfItem(atPath: backup + "-wal"))?[.size] as? Int, size > 0 {
            throw Failure(
                "\(backup) has a -wal file of \(size) bytes beside it: it was copied while a node wrote it, and the copy alone misses "
                    + "what that file holds. Take backups with `calisson-node backup`")
        }
        try check(backup, genesis: genesis)
        let staging = databaseFile + ".restoring"
        try? files.removeItem(atPath: staging)
        try files.copyItem(atPath: backup, toPath: staging)
        // The votes this node's key signed since the backup are in the database replaced,
        // not in the backup: its safety log goes with the restored file, or the node could
        // vote again at a height or view it already voted at (equivocation).
        let safetyLog = try carrySafetyLog(from: databaseFile, into: staging)
        try sync(staging)
        // A name no earlier restore took (two within a second: a second number).
        var stamp = timestamp(now), number = 1
        while ["", "-wal", "-shm"].contains(where: { files.fileExists(atPath: "\(databaseFile).replaced-\(stamp)\($0)") }) {
            number += 1
            stamp = "\(timestamp(now))-\(number)"
        }
        var moved: [String] = []
        for suffix in ["", "-wal", "-shm"] where files.fileExists(atPath: databaseFile + suffix) {
            let aside = "\(databaseFile).replaced-\(stamp)\(suffix)"
            try files.moveItem(atPath: databaseFile + suffix, toPath: aside)
            moved.append(aside)
        }
        guard rename(staging, databaseFile) == 0 else {
            throw Failure("\(staging): cannot rename it to \(databaseFile): \(String(cString: strerror(errno))); the files replaced are in \(moved)")
        }
        try sync(URL(fileURLWithPath: databaseFile).deletingLastPathComponent().path)
        let restored = try NodeStore(file: databaseFile, readOnly: true)
        return RestoreReport(
            height: restored.height, stateHeight: restored.stateHeight, stateRoot: restored.stateRoot, movedAside: moved, safetyLog: safetyLog)
    }

    /// Puts the safety log of the database at `current`, if one is there and not behind
    /// the backup at `staging`, in place of the backup's: the key's votes, up to its latest
    /// (a log is a fold whose view never goes back: the newer one replaces the older, they
    /// are not merged). A database that cannot be read, the reason for many restores, is
    /// reported, not a failure.
    static func carrySafetyLog(from current: String, into staging: String) throws -> SafetyLogCarried {
        guard FileManager.default.fileExists(atPath: current) else { return .noDatabase }
        let (height, records): (UInt64, [[UInt8]])
        do {
            let store = try NodeStore(file: current, readOnly: true)
            defer { store.close() }
            (height, records) = (store.height, try store.safetyRecords())
        } catch {
            return .unreadable("\(error)")
        }
        let store = try NodeStore(file: staging)
        defer { store.close() }
        guard height >= store.height else { return .behindTheBackup(height: height) }
        try store.compactSafety(records)
        return .carried(records: records.count)
    }

    /// Writes a new node's database from the latest stable checkpoint the nodes at
    /// `sources` (client ports) serve, rather than from the genesis (`StateSync`): into
    /// `<database>.sync`, kept when a run is interrupted (the next run resumes from what
    /// it fetched), renamed into place once complete and synced. Refuses a node that has a
    /// database (it has a chain and a safety log: it catches up by itself).
    public static func syncFromSnapshot(
        configuration: NodeConfiguration, sources: [NetworkEndpoint], timeoutMilliseconds: Int = 30_000, log: @escaping (String) -> Void
    ) throws -> StateSyncReport {
        let files = FileManager.default
        let databaseFile = configuration.databaseFile
        guard !sources.isEmpty else { throw Failure("a state sync needs the client port of at least one node of the chain") }
        // Held to the end: a node started on this configuration meanwhile is refused (the
        // rename below must not replace a database in use).
        let directory = URL(fileURLWithPath: databaseFile).deletingLastPathComponent().path
        try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let lock = try DatabaseLock(databaseFile: databaseFile)
        defer { withExtendedLifetime(lock) {} }
        // A new node's empty database (`init` made it) is replaced by the snapshot.
        let replacesEmpty = files.fileExists(atPath: databaseFile) && (try? isEmptyDatabase(databaseFile)) == true
        for suffix in ["", "-wal"] where !replacesEmpty && files.fileExists(atPath: databaseFile + suffix) {
            throw Failure(
                "\(databaseFile + suffix) exists: this node has a database, and catches up from its own height when it starts. "
                    + "A snapshot is for a new node (move the database aside to start over from one)")
        }
        let staging = databaseFile + ".sync"
        if files.fileExists(atPath: staging) { log("resuming: the pages and values fetched into \(staging) are kept") }
        let replica = try NodeRuntime.replicaConfiguration(configuration)
        let genesis = configuration.genesis
        let ca = configuration.transport.ca
        let report: StateSyncReport
        do {
            let store = try NodeStore(file: staging, create: true, tuning: configuration.storage)
            defer { store.close() }
            // A sync that completed and was stopped before its rename (the import is one
            // transaction: a database holding a chain here is a complete one) is renamed now,
            // checked as any (`check`, below), rather than refused for holding a chain.
            if try store.isInitialized {
                log("\(staging) holds a completed sync, at checkpoint \(store.height): renamed into place")
                report = StateSyncReport(height: store.height, root: store.stateRoot, source: "an earlier run")
            } else {
                let clients = sources.map { SourceConnection(endpoint: $0, ca: ca, chainId: genesis.chainId, timeoutMilliseconds: timeoutMilliseconds) }
                defer { for client in clients { client.close() } }
                let sync = StateSync(
                    genesis: genesis, genesisSchedule: replica.genesisSchedule, nodeKey: configuration.consensusKey.publicKey, store: store,
                    sources: clients.map { client in StateSync.Source(name: client.endpoint.description, ask: client.ask) }, log: log)
                report = try sync.run()
            }
            try store.checkpointWAL()
        }
        if let size = (try? files.attributesOfItem(atPath: staging + "-wal"))?[.size] as? Int, size > 0 {
            throw Failure("\(staging) still has a -wal file of \(size) bytes after closing it: not renamed; run the sync again")
        }
        for suffix in ["-shm", "-wal", ".lock"] { try? files.removeItem(atPath: staging + suffix) }
        try sync(staging)
        // The empty database's own files (none, if it was closed cleanly), then it is replaced.
        if replacesEmpty { for suffix in ["-wal", "-shm"] { try? files.removeItem(atPath: databaseFile + suffix) } }
        guard rename(staging, databaseFile) == 0 else {
            throw Failure("\(staging): cannot rename it to \(databaseFile): \(String(cString: strerror(errno)))")
        }
        try sync(directory)
        try check(databaseFile, genesis: genesis)
        return report
    }

    /// One connection to a node's client port for a state sync, made at the first request
    /// and made again after a failure.
    final class SourceConnection: @unchecked Sendable {
        let endpoint: NetworkEndpoint
        let ca: Certificate
        let chainId: String
        let timeoutMilliseconds: Int
        private let client = Mutex<TransportClient?>(nil)

        init(endpoint: NetworkEndpoint, ca: Certificate, chainId: String, timeoutMilliseconds: Int) {
            self.endpoint = endpoint
            self.ca = ca
            self.chainId = chainId
            self.timeoutMilliseconds = timeoutMilliseconds
        }

        func ask(_ requests: [ClientRequest]) throws -> [ClientResponse] {
            try client.withLock { client in
                let connected: TransportClient
                if let client { connected = client } else {
                    connected = try TransportClient(host: endpoint.host, port: endpoint.port, ca: ca, chainId: chainId, timeoutMilliseconds: timeoutMilliseconds)
                    client = connected
                }
                var answers: [ClientResponse] = []
                for result in connected.pipeline(requests.map(\.wireBytes), timeoutMilliseconds: timeoutMilliseconds) {
                    switch result {
                    case let .success(bytes): answers.append(try ClientResponse(wireBytes: bytes))
                    case let .failure(error):
                        connected.close()
                        client = nil
                        throw error
                    }
                }
                return answers
            }
        }

        func close() { client.withLock { $0?.close(); $0 = nil } }
    }

    /// Makes a new node's database, empty (its genesis state is written at the first
    /// start): `init` and `testnet` make it, so that `run` never has to. A node whose
    /// database is not where its configuration says (a data volume not mounted) is then
    /// refused, rather than started on an empty one, which would have forgotten the votes
    /// the node signed (`missingDatabase`).
    public static func createDatabase(_ file: String) throws {
        let directory = URL(fileURLWithPath: file).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard !FileManager.default.fileExists(atPath: file) else { throw Failure("\(file) exists already") }
        do {
            let store = try NodeStore(file: file, create: true)
            store.close()
            try? FileManager.default.removeItem(atPath: file + ".lock")
            try sync(directory)
        } catch {
            // Nothing half made is left: a retry would find it and refuse.
            for suffix in ["", "-wal", "-shm", ".lock"] { try? FileManager.default.removeItem(atPath: file + suffix) }
            throw error
        }
    }

    /// Why `calisson-node run` refuses to start on `file`, or nil: it must exist (a node's
    /// database is made by `init`, `testnet` or `sync`, never by `run`).
    public static func missingDatabase(_ file: String) -> String? {
        guard !FileManager.default.fileExists(atPath: file) else { return nil }
        return "no database at \(file): a node's database is made by `calisson-node init` (or `testnet`, or `sync` from a snapshot), "
            + "never by `run`. If this node ran before, its data is not where its configuration says (a data volume not mounted?): "
            + "started on an empty database it would have forgotten the votes it signed. Mount it, or `calisson-node restore` a backup; "
            + "to start this node afresh on purpose, `calisson-node sync` it from the others (it checks that its key signed nothing since), "
            + "or, for a node whose key never voted (no validator), make its directory again with `calisson-node init`"
    }

    /// Whether `file` is a database that holds nothing yet: no genesis state, no vote (a
    /// new node's, made by `init`), which a snapshot may replace.
    static func isEmptyDatabase(_ file: String) throws -> Bool {
        let store = try NodeStore(file: file, readOnly: true)
        defer { store.close() }
        return try !store.isInitialized && store.safetyRecords().isEmpty
    }

    /// The checks a node makes of its database at start that need no keys: the store's own,
    /// and the genesis it records.
    static func check(_ file: String, genesis: Genesis) throws {
        let store = try NodeStore(file: file, readOnly: true)
        guard try store.isInitialized else { throw Failure("\(file): not a node's database (no genesis state)") }
        if let recorded = try store.extra(Core.genesisExtra), recorded != genesis.digest.bytes {
            throw Failure(
                "\(file) was made with another genesis (digest \(Hex.encode(recorded))) than this configuration's (\(genesis.digest.hex))")
        }
    }

    /// A UTC time as in the names of the files moved aside: 20261203T061500Z.
    static func timestamp(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0) ?? calendar.timeZone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", c.year ?? 0, c.month ?? 0, c.day ?? 0, c.hour ?? 0, c.minute ?? 0, c.second ?? 0)
    }

    /// fsync of a file or directory.
    static func sync(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Failure("\(path): cannot open it to sync: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw Failure("\(path): sync failed: \(String(cString: strerror(errno)))") }
    }
}
