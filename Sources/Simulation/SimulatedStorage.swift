import Consensus
import CalissonCrypto
import Ledger
import NodeCore
import Storage
import Wire

/// A storage failure the simulator injects; the next storage call it applies to throws it.
public enum StorageFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// A read of the state fails while a block executes (an I/O error): the ledger sees an
    /// absent value, and the block computed from it must never be persisted.
    case readError
    /// The disk is full: the write is refused whole.
    case diskFull
    /// The process dies as a write completes: the write is durable (SQLite's transaction
    /// committed), but the node never learned it and is down.
    case crashDuringWrite

    public var description: String {
        switch self {
        case .readError: return "simulated read error"
        case .diskFull: return "simulated full disk"
        case .crashDuringWrite: return "simulated crash as a write completed"
        }
    }
}

/// The ledger's state in memory, with the node's contract: the ledger's `commit` keeps a
/// pending batch, folded by `SimulatedStorage.persist` with those since the durable state,
/// and made durable as `StoredState` does: at every `writeEvery`-th multiple of
/// `stateInterval` (where the tree's root is computed; `writeOffset` says which), once it
/// or a later checkpoint is certified (`serve`), the batches since folded from it on; with
/// the block where two write intervals of blocks are folded (or `writeEvery` is 1). A
/// crash loses the folds, and the restarted core executes those blocks again; a failed
/// read is recorded and makes that persist throw. (The node's copies held for light
/// clients are not modelled: the simulator serves none.)
public final class SimulatedState: StateStore {
    private(set) var durable = MemoryStateStore()
    /// The height of `durable`.
    private(set) var durableHeight: UInt64 = 0
    private var window = StateWindow()
    /// Where the state is made durable.
    let schedule: StateWriteSchedule
    /// The next state to make durable, as `StoredState`'s: its height, the durable height it
    /// was folded from, the fold at it, and the batches since.
    private var since: (height: UInt64, base: UInt64, at: StateWindow, after: StateWindow)?
    private var pending: StateBatch?
    private var pendingValues: [StateKey: [UInt8]?] = [:]
    public private(set) var root: SHA256Digest = .zero

    init(stateInterval: UInt64, writeEvery: UInt64, writeOffset: UInt64) {
        schedule = StateWriteSchedule(stateInterval: stateInterval, writeEvery: writeEvery, writeOffset: writeOffset)
    }

    /// The ledger updates the tree where the state becomes durable and at blocks of fewer
    /// than 16 transactions, as a node does with its threshold (both paths on every seed).
    public func updatesTree(atHeight height: UInt64, transactions: Int) -> Bool {
        Self.updatesTree(atHeight: height, transactions: transactions, stateInterval: schedule.stateInterval, everyBlockBelow: Self.treeEveryBlockBelow)
    }
    static let treeEveryBlockBelow = 16

    /// Whether the batch committed and not yet folded updated the tree.
    var pendingRootComputed: Bool { pending?.rootComputed ?? true }

    /// The height the state is at (durable, or folded since).
    var height: UInt64 { durableHeight + UInt64(clamping: window.count) }
    var readError: StorageFault?
    /// Armed by the simulator: the next value read while a block executes fails.
    var failNextRead = false
    /// A block is executing (inside `SimulatedStorage.reading`).
    var executing = false

    public func value(_ key: StateKey) -> [UInt8]? {
        if let value = pendingValues[key] { return value }
        if let value = window.value(key) { return value }
        if failNextRead, executing {
            failNextRead = false
            readError = .readError
            return nil
        }
        return durable.value(key)
    }

    public func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? {
        if let created = pending?.tree.created[root] { return created }
        if let made = window.page(root) { return made }
        return durable.treePage(root, depth: depth)
    }

    public func commit(_ batch: StateBatch) {
        precondition(pending == nil, "a batch is committed while the previous one is not persisted")
        pending = batch
        for (key, value) in batch.values { pendingValues[key] = .some(value) }
        root = batch.tree.root
    }

    /// Folds the pending batch as that of block `height` (the storage's write succeeded),
    /// durable with it at the genesis, or where the state is written and `writeEvery` is 1
    /// or two write intervals of blocks are folded; else the next state to make durable
    /// once served starts at a checkpoint where `writesState`.
    func apply(height: UInt64) throws(StorageFault) {
        if let readError { throw readError }
        guard let batch = pending else { return }
        precondition(height == self.height + (height == 0 ? 0 : 1), "block \(height) folded at state height \(self.height)")
        window.add(batch)
        if height == 0 || schedule.withBlock(atHeight: height, folded: UInt64(clamping: window.count)), let folded = window.batch {
            durable.commit(folded)
            durableHeight = height
            window = StateWindow()
            since = nil
        } else {
            since?.after.add(batch)
            if schedule.writes(atHeight: height), since == nil { since = (height, durableHeight, window, StateWindow()) }
        }
        clear()
    }

    /// Checkpoint `height` is certified: the next state to make durable, if at or below it,
    /// is made durable, the batches since folded from it on.
    func serve(checkpoint height: UInt64) {
        guard let since, since.height <= height, since.base == durableHeight, let batch = since.at.batch else { return }
        durable.commit(batch)
        durableHeight = since.height
        window = since.after
        self.since = nil
    }

    /// Forgets what is not durable (a crash, or a failed write): the pending batch and the
    /// fold since the durable state.
    func discard() {
        clear()
        window = StateWindow()
        since = nil
        readError = nil
        root = durable.root
    }

    private func clear() {
        pending = nil
        pendingValues = [:]
    }
}

/// A node's durable storage in the simulator: what `StoredState` keeps in SQLite, kept in
/// memory, surviving its node's crashes; with faults injected on demand (`arm`), and the
/// ledger audited after every block it persists (`audit`). With no fault armed, it is
/// also the in-memory storage of `calisson-bench ordering --application ledger`.
public final class SimulatedStorage: NodeStorage {
    public let state: SimulatedState
    public private(set) var isInitialized = false
    private(set) var blocks: [CertifiedBlock] = []
    /// The state root each block recorded (zero where none was computed).
    private var roots: [SHA256Digest] = []
    /// Blocks executed again at a restart (`replayed`).
    private(set) var blocksExecutedAgain = 0
    private var extras: [String: [UInt8]] = [:]
    private var safety: [SafetyRecord] = []
    /// The next write fails with this.
    private var writeFault: StorageFault?
    /// Faults that fired (made a call throw), by kind.
    private(set) var fired: [StorageFault: Int] = [:]
    /// What must hold of the state after each block persisted; what does not, by height,
    /// until the simulator takes it (`takeFindings`).
    var audit: ((SimulatedState) -> [String])?
    private var findings: [String] = []

    public var height: UInt64 { UInt64(blocks.count) }
    public var stateHeight: UInt64 { state.height }
    public func heights() -> (top: UInt64, state: UInt64) { (height, stateHeight) }

    /// `stateInterval`: the state's root is computed at its multiples (the node's: its
    /// checkpoint interval; 1, at every block); `writeEvery`: the state is durable at every
    /// such multiple (1) or every few once certified, `writeOffset` saying which.
    public init(stateInterval: UInt64 = 1, writeEvery: UInt64 = 1, writeOffset: UInt64 = 0) {
        state = SimulatedState(stateInterval: stateInterval, writeEvery: writeEvery, writeOffset: writeOffset)
    }

    /// Checkpoint heights certified and not served yet (in the order they came), and the
    /// last served since the last start.
    private var certified: [UInt64] = []
    private var served: UInt64 = 0

    /// Makes the next read while a block executes (`.readError`) or the next write
    /// (`.diskFull`, `.crashDuringWrite`) fail.
    func arm(_ fault: StorageFault) {
        if fault == .readError { state.failNextRead = true } else { writeFault = fault }
    }

    /// Whether a fault is armed and has not fired yet.
    var isArmed: Bool { writeFault != nil || state.failNextRead }

    /// Disarms what has not fired (the network heals: no more faults).
    func disarm() {
        writeFault = nil
        state.failNextRead = false
    }

    /// A crash: what was not written is gone, and armed faults with it.
    func crash() {
        state.discard()
        disarm()
        served = 0
    }

    /// Carries out one write under the armed fault, if any: a full disk refuses it whole;
    /// a crash comes once it is durable, before the caller learns it (SQLite commits a
    /// transaction whole or not at all, so these are a write's two outcomes at a crash).
    private func write(_ body: () throws -> Void) throws {
        let fault = writeFault
        writeFault = nil
        if fault == .diskFull {
            fired[.diskFull, default: 0] += 1
            state.discard()
            throw StorageFault.diskFull
        }
        do { try body() } catch let error as StorageFault {
            fired[error, default: 0] += 1
            throw error
        }
        if fault == .crashDuringWrite {
            fired[.crashDuringWrite, default: 0] += 1
            throw StorageFault.crashDuringWrite
        }
    }

    /// The audit's findings since the last call.
    func takeFindings() -> [String] {
        defer { findings = [] }
        return findings
    }

    public func extra(_ name: String) -> [UInt8]? { extras[name] }
    public func safetyRecords() -> [SafetyRecord] { safety }

    public func persistGenesis(extras: [String: [UInt8]]) throws {
        try state.apply(height: 0)
        self.extras.merge(extras) { $1 }
        isInitialized = true
    }

    public func certifiedBlock(at height: UInt64) -> CertifiedBlock? {
        guard height >= 1, height <= self.height else { return nil }
        return blocks[Int(height - 1)]
    }

    public func reading<T>(_ body: () -> T) -> T {
        state.executing = true
        defer { state.executing = false }
        return body()
    }

    public func persist(_ block: BlockRecord, extras: [String: [UInt8]]) throws {
        try write {
            guard block.height == height + 1, let body = block.body, let decoded = try? Block(wireBytes: body),
                let certificate = try? CommitCertificate(wireBytes: block.certificate)
            else { preconditionFailure("the core persisted block \(block.height) out of order or undecodable, at height \(height)") }
            guard block.stateRoot == (state.pendingRootComputed ? state.root : .zero) else {
                preconditionFailure("the core persisted block \(block.height) with another root than its state's")
            }
            try state.apply(height: block.height)
            blocks.append(CertifiedBlock(block: decoded, certificate: certificate))
            roots.append(block.stateRoot)
            self.extras.merge(extras) { $1 }
            if let audit { findings += audit(state).map { "block \(block.height): \($0)" } }
        }
    }

    public func replayed(_ height: UInt64) throws {
        guard height == state.height + 1, height <= self.height else {
            preconditionFailure("block \(height) executed again, the state being at \(state.height) and the last block at \(self.height)")
        }
        if let readError = state.readError { throw readError }
        let recorded = roots[Int(clamping: height - 1)]
        guard !state.pendingRootComputed || recorded == .zero || state.root == recorded else {
            throw NodeCoreError.replay("block \(height) executed again gives the state root \(state.root.hex), the block recorded \(recorded.hex)")
        }
        try state.apply(height: height)
        blocksExecutedAgain += 1
    }

    public func appendSafety(_ records: [SafetyRecord]) throws {
        try write { safety += records }
    }

    public func compactSafety(_ records: [SafetyRecord]) throws {
        try write { safety = records }
    }

    public func putCheckpoint(height: UInt64, certificate: [UInt8]) throws {
        // A write that can fail like the others; the certificate itself serves light
        // clients, which the simulator has none of: only its height is kept.
        try write { certified.append(height) }
    }

    /// The latest certified checkpoint executed is served: the state is made durable there
    /// as a node's (`SimulatedState.serve`), a write that can fail like the others. Light
    /// clients' pruning and handovers are SQLite's (`StoredState`): the simulator keeps
    /// every version and serves no light client.
    public func serveLatestCheckpoint() throws -> (changedAt: UInt64, checkpoint: UInt64)? {
        guard let latest = certified.filter({ $0 <= height }).max(), latest > served else { return nil }
        try write { state.serve(checkpoint: latest) }
        served = latest
        certified.removeAll { $0 <= latest }
        return nil
    }
}
