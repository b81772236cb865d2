import CalissonCrypto
import Ledger
import Storage
import Wire

/// The ledger's state on the node's SQLite store. The ledger reads values and tree nodes
/// through it; `commit` keeps the block's batch, and `persist` writes the block in one SQL
/// transaction. The state's root is computed at the heights that are multiples of
/// `stateInterval` (the node's checkpoint interval: the roots the consensus certifies). With
/// `writeEvery` 1 the state is written with the block at each of them; with more, at every
/// `writeEvery`-th (`writesState`), once that checkpoint or a later one is certified and
/// served (`serve`), so that the stored state is never above the latest certified
/// checkpoint (but where certificates stop coming: `persist`). The changes of the blocks
/// since the stored state are folded (`StateWindow`) and read from memory until written;
/// after a restart the blocks above the stored state's height are executed again from their
/// bodies (`NodeCore`'s start, `replayed`). So a block and its results are durable with it,
/// and its state with a later write (Docs/STORAGE.md). The checkpoints whose state is not
/// written are served to light clients from a copy of the fold at their height (`held`). A
/// read error is recorded, not hidden: the node checks `readError` after each block and
/// stops before persisting anything computed from a failed read.
public final class StoredState: StateStore {
    public let store: NodeStore
    public private(set) var root: SHA256Digest
    private var pending: StateBatch?
    private var pendingValues: [StateKey: [UInt8]?] = [:]
    /// Where the state's root is computed (its `stateInterval`: the node's checkpoint
    /// interval) and where the state is written (every `writeEvery`-th of those heights).
    public let schedule: StateWriteSchedule
    public var stateInterval: UInt64 { schedule.stateInterval }
    public var writeOffset: UInt64 { schedule.writeOffset }
    /// The batches of the blocks persisted since the stored state's height.
    private var window = StateWindow()
    /// The fold as it was at each multiple of `stateInterval` persisted (or executed again)
    /// since the served checkpoint, and at the served one, where the state was not written:
    /// a checkpoint's tree pages that later blocks replaced and its values that they
    /// changed, which a light client's proof at it needs (`values(of:atCheckpoint:)`,
    /// `treePage`), with the height of the stored state it was folded from (`base`: that
    /// state's pages stay until no fold held is based on it). Oldest first; copies of the
    /// window share its storage until it changes.
    private var held: [(height: UInt64, base: UInt64, fold: StateWindow)] = []
    /// The next state to write: a checkpoint executed where `writesState`, its height, the
    /// stored state's it was folded from, the fold at it (`at`), and the batches since
    /// (`after`). Once it or a later checkpoint is served (certified), `at` is written and
    /// `after` becomes the window.
    private var since: (height: UInt64, base: UInt64, at: StateWindow, after: StateWindow)?
    /// The write of `since` in slices under way (`advanceStateWrite`).
    private var slices: Slices?
    /// The latest checkpoint served (certified).
    private var servedCheckpoint: UInt64 = 0
    /// A state write is spread over this many slices at most (`advanceStateWrite`: the node
    /// writes one per tick of its clock, 20 ms), each of at least `sliceRowsMin` values and
    /// pages.
    public var slicesPerWrite = 64
    public var sliceRowsMin = 1_024
    /// A fold of more values and pages than this is written in one commit once served, not
    /// in slices: measured, slicing a full mempool's (some 300,000) cost the cluster a tenth
    /// more CPU per transaction, where slicing a moderate load's (some 30,000) shortened the
    /// latency's tail (Docs/BENCHMARKS.md, "The state written in slices").
    public var slicedRowsMax = 65_536
    /// Folds held at most: the checkpoints executed and not served yet are normally one or
    /// two (a checkpoint is certified a few blocks after its height). Past this, the oldest
    /// not served is dropped, and a light client asking at it is told so.
    public static let heldMax = 8
    public private(set) var readError: StorageError?
    /// The checkpoint served to light clients: the latest certified one executed. History
    /// (retired tree nodes, replaced values) older than it is dropped.
    var prunedThrough: UInt64 = 0
    /// The last validator-set change handed over to light clients (read from the store once).
    var lastHandover: UInt64?
    /// Retention (`retainBlocks` in the node's configuration): keep the bodies of this many
    /// latest blocks, drop older ones at each checkpoint served; nil keeps every body.
    public var retainBlocks: UInt64?
    /// Bodies dropped at one checkpoint, at most: a node that turns retention on over a long
    /// chain catches up over many checkpoints rather than in one long write.
    public static let bodiesPrunedPerCheckpointMax: UInt64 = 1_024

    /// Blocks with fewer transactions than this have the tree updated with them, larger
    /// ones only at the multiples of `stateInterval` (`updatesTree`).
    public let treeEveryBlockBelow: Int

    /// `stateInterval`: the state's root is computed at its multiples (at least 1);
    /// `writeEvery`: the state is written at every such multiple (1) or every few (at least
    /// 1), `writeOffset` saying which (taken modulo `writeEvery`); `treeEveryBlockBelow`: the
    /// block size under which the tree is updated at every block (0: at the multiples only).
    public init(store: NodeStore, stateInterval: UInt64 = 1, writeEvery: UInt64 = 1, writeOffset: UInt64 = 0, treeEveryBlockBelow: Int = 0) {
        self.store = store
        schedule = StateWriteSchedule(stateInterval: stateInterval, writeEvery: writeEvery, writeOffset: writeOffset)
        self.treeEveryBlockBelow = treeEveryBlockBelow
        root = store.stateRoot
    }

    /// Whether the state is to be written at block `height` (once certified).
    public func writesState(atHeight height: UInt64) -> Bool { schedule.writes(atHeight: height) }

    /// The height the state is at: the last block persisted or replayed.
    public var stateHeight: UInt64 { store.stateHeight + UInt64(clamping: window.count) }
    /// `height` and `stateHeight` read strictly (`NodeStorage.heights`).
    public func heights() throws -> (top: UInt64, state: UInt64) {
        let read = try store.heights()
        return (read.height, read.stateHeight + UInt64(clamping: window.count))
    }

    /// The tree is updated at the multiples of `stateInterval`, among them where the state
    /// is written (so the stored state is always one whose root was computed), and at
    /// blocks smaller than `treeEveryBlockBelow`. Updating
    /// it once for several blocks saves the paths near the root, which most keys share, and
    /// the leaves of keys written again: worth it for large blocks, when the nodes' CPU is
    /// what bounds the throughput. For small ones (a cluster under light or moderate load)
    /// the update is cheap and, deferred to a checkpoint, would make that one block, which
    /// every node executes at the same moment, long enough to lengthen the latency's tail.
    public func updatesTree(atHeight height: UInt64, transactions: Int) -> Bool {
        Self.updatesTree(atHeight: height, transactions: transactions, stateInterval: stateInterval, everyBlockBelow: treeEveryBlockBelow)
    }

    /// A record of the current state (`stateHeight`) with its proof against that state's
    /// root: what a node answers to an uncertified read. The ledger may not have computed
    /// the current root (`updatesTree`), so it is computed here when a read first asks at
    /// a height, and kept: from the ledger's last root, or from the tree computed for the
    /// last such read, with the keys written since. So however many reads arrive, the
    /// tree is updated at most once per block with that block's keys: the cost every block
    /// paid before the update could be deferred, never more. Not while a batch is committed
    /// and not persisted (the node answers between blocks).
    public func currentRecord(_ key: StateKey) throws(StorageError) -> (height: UInt64, root: SHA256Digest, value: [UInt8]?, proof: StateProof) {
        if let readError { throw readError }
        guard pending == nil else { throw .invalid(file: store.file, reason: "a state read while block \(stateHeight + 1) is being written") }
        let height = stateHeight
        let tree: StateTree.Update
        if let current, current.height == height {
            tree = current.tree
        } else {
            // The pages the tree computed for reads made and still has, on the ledger's.
            let base = current?.tree ?? .unchanged(root)
            let next = StateTree.update(
                root: base.root, changes: writtenSinceCurrent.map { ($0, value($0).map(StateTree.valueHash)) },
                nodes: CurrentPages(made: base.created, state: self))
            var fold = StateWindow()
            fold.add(StateBatch(values: [], tree: base))
            fold.add(StateBatch(values: [], tree: next))
            tree = fold.batch?.tree ?? next
            current = (height, tree)
            writtenSinceCurrent = []
        }
        let found = value(key)
        let proof = StateTree.proof(for: key, root: tree.root, nodes: CurrentPages(made: tree.created, state: self))
        if let readError { throw readError }
        return (height, tree.root, found, proof)
    }

    /// The tree of the current state computed for reads (`currentRecord`), at the height
    /// it was computed for, its pages those it has beyond the ledger's tree at `root`.
    private var current: (height: UInt64, tree: StateTree.Update)?
    /// The keys written by the blocks persisted since `current` was computed, or since the
    /// ledger last updated the tree when there is none.
    private var writtenSinceCurrent: Set<StateKey> = []

    /// The pages of the current state's tree: those its update made, then the state's.
    private struct CurrentPages: TreePageSource {
        let made: [SHA256Digest: TreePage]
        let state: StoredState
        func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? { made[root] ?? state.treePage(root, depth: depth) }
    }

    public func value(_ key: StateKey) -> [UInt8]? {
        if let value = pendingValues[key] { return value }
        if let value = window.value(key) { return value }
        do { return try store.value(key) } catch {
            readError = readError ?? error
            return nil
        }
    }

    public func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? {
        if let created = pending?.tree.created[root] { return created }
        if let made = window.page(root) { return made }
        if let cached = cache[root] { return cached }
        for entry in held.reversed() { if let made = entry.fold.page(root) { return made } }
        do {
            guard let bytes = try store.treePage(root) else { return nil }
            let page = try TreePage(decoding: bytes)
            guard page.root == root else {
                throw StorageError.corrupt(file: store.file, reason: "tree page \(root.hex) hashes to \(page.root.hex)")
            }
            if depth <= Self.cachedDepthMax { remember(page) }
            return page
        } catch let error as StorageError {
            readError = readError ?? error
        } catch {
            readError = readError ?? .corrupt(file: store.file, reason: "tree page \(root.hex): \(error)")
        }
        return nil
    }

    public func commit(_ batch: StateBatch) {
        precondition(pending == nil, "a batch is committed while the previous one is not persisted")
        pending = batch
        for (key, value) in batch.values { pendingValues[key] = .some(value) }
        root = batch.tree.root
    }

    /// A batch as the store's changes.
    static func changes(_ batch: StateBatch) -> StateChanges {
        StateChanges(
            values: batch.values.map { ($0.key, $0.value) },
            createdPages: batch.tree.created.map { ($0.key, $0.value.encoded()) }.sorted { $0.0 < $1.0 },
            removedPages: batch.tree.replaced,
            root: batch.tree.root)
    }

    /// Converts a version-4 file's tree (one row per binary node) to pages, in one SQL
    /// transaction: the pages of the current tree, and those of the served checkpoint's
    /// (the latest stable one, for the proofs given to light clients) that the current
    /// tree does not share, retired at the current height so that they are pruned when a
    /// later checkpoint is served. A current tree with a node missing is corruption; a
    /// checkpoint tree with one is left out (its proofs wait for the next checkpoint).
    /// Nothing to do on a file already converted. Returns the number of pages written.
    @discardableResult
    public static func convertLegacyTree(_ store: NodeStore) throws(StorageError) -> Int {
        guard try store.hasLegacyTree() else { return 0 }
        func pages(from root: SHA256Digest, skipping known: [SHA256Digest: TreePage]) throws(StorageError) -> [SHA256Digest: TreePage] {
            var pages: [SHA256Digest: TreePage] = [:]
            var pending = root == .zero ? [] : [root]
            while let pageRoot = pending.popLast() {
                if known[pageRoot] != nil || pages[pageRoot] != nil { continue }
                var nodes: [SHA256Digest: TreeNode] = [:]
                try collectLegacy(store, pageRoot, level: 0, into: &nodes, below: &pending)
                pages[pageRoot] = TreePage(root: pageRoot, nodes: nodes)
            }
            return pages
        }
        let live = try pages(from: store.stateRoot, skipping: [:])
        var retired: [SHA256Digest: TreePage] = [:]
        if let checkpoint = try store.checkpoint(atOrBelow: store.height), let block = try store.block(at: checkpoint.height) {
            do { retired = try pages(from: block.stateRoot, skipping: live) } catch { retired = [:] }
        }
        let all = live.merging(retired) { current, _ in current }
        try store.replaceLegacyTree(pages: all.map { ($0.key, $0.value.encoded()) }, retiredPages: Array(retired.keys))
        return all.count
    }

    private static func collectLegacy(
        _ store: NodeStore, _ hash: SHA256Digest, level: Int, into nodes: inout [SHA256Digest: TreeNode], below: inout [SHA256Digest]
    ) throws(StorageError) {
        guard hash != .zero else { return }
        guard let bytes = try store.legacyTreeNode(hash) else {
            throw .corrupt(file: store.file, reason: "tree node \(hash.hex) is missing (converting the version-4 tree)")
        }
        let node: TreeNode
        do { node = try TreeNode(wireBytes: bytes) } catch {
            throw .corrupt(file: store.file, reason: "tree node \(hash.hex): \(error)")
        }
        nodes[hash] = node
        guard case let .branch(left, right) = node else { return }
        if level + 1 < StateTree.pageDepth {
            try collectLegacy(store, left, level: level + 1, into: &nodes, below: &below)
            try collectLegacy(store, right, level: level + 1, into: &nodes, below: &below)
        } else {
            for child in [left, right] where child != .zero { below.append(child) }
        }
    }

    /// Writes the genesis batch (height 0).
    public func persistGenesis(extras: [String: [UInt8]] = [:]) throws(StorageError) {
        guard let pending else { throw .invalid(file: store.file, reason: "no genesis state to write") }
        try store.writeGenesis(Self.changes(pending), extras: extras)
        clear()
    }

    /// Writes `block`, and the state with it where `writesState` and the state is written
    /// with the blocks (`writeEvery` 1, or two write intervals of blocks folded: no
    /// checkpoint at or above the last candidate was served, certificates not coming; the
    /// stored state may then be above the latest certified checkpoint, which a restarted
    /// node cannot prove until the next one), the committed batch folded with those of the
    /// blocks since the stored state's. `block.stateRoot` must be the batch's root where the
    /// tree was updated (always at a multiple of `stateInterval`: a checkpoint's root, and
    /// the state written is one whose root was computed), zero elsewhere.
    public func persist(_ block: BlockRecord, extras: [String: [UInt8]] = [:]) throws(StorageError) {
        if let readError { throw readError }
        guard let pending else { throw .invalid(file: store.file, reason: "no state batch for block \(block.height)") }
        guard block.stateRoot == (pending.rootComputed ? pending.tree.root : .zero) else {
            throw .invalid(file: store.file, reason: "block \(block.height)'s state root is not its state's")
        }
        guard pending.rootComputed || block.height % stateInterval != 0 else {
            throw .invalid(file: store.file, reason: "block \(block.height)'s state is to be written without its tree updated")
        }
        // At the bound on the fold, a certified checkpoint's write still in slices is finished
        // first: the fold then starts at it, and this block's state is written with it only
        // if certificates stopped coming, not because that write's slices took longer than
        // an interval.
        if schedule.withBlock(atHeight: block.height, folded: UInt64(clamping: window.count) + 1),
            let since, servedCheckpoint >= since.height, since.base == store.stateHeight
        {
            try finishStateWriteNow()
        }
        // The fold changes only once the write succeeded (a failed one leaves it as it was).
        if schedule.withBlock(atHeight: block.height, folded: UInt64(clamping: window.count) + 1) {
            try finishStateWriteNow()  // the checkpoint due before, first
            var folded = window
            folded.add(pending)
            try store.append(block, state: Self.changes(folded.batch!), extras: extras)
            window = StateWindow()
            since = nil
        } else {
            try store.append(block, state: nil, extras: extras)
            fold(pending, height: block.height)
        }
        settle(pending)
    }

    /// Folds block `height`'s batch, its state not written with it: held at a checkpoint,
    /// and the fold of its successors started there if its state is to be written.
    private func fold(_ batch: StateBatch, height: UInt64) {
        window.add(batch)
        since?.after.add(batch)
        guard height % stateInterval == 0 else { return }
        let base = store.stateHeight
        held.append((height, base, window))
        if held.count > Self.heldMax, let oldest = held.firstIndex(where: { $0.height != prunedThrough && $0.height != since?.height }) {
            held.remove(at: oldest)
        }
        // A candidate not served yet stays the next write (written at the first checkpoint
        // served at or above it).
        if writesState(atHeight: height), since == nil { since = (height, base, window, StateWindow()) }
    }

    /// Checkpoint `height` (certified) is served from now on: if the next state to write
    /// (`since`) is at or below it, that state may be stored from now on (so the stored
    /// state is never above the latest certified checkpoint, which a restarted node can then
    /// prove): a slice of it is written, and the write finished if that was the last
    /// (`advanceStateWrite`; the next turns write the rest). The folds held for older
    /// checkpoints are dropped, but the one being written. Returns the height through which
    /// the store's history may be pruned: that of the oldest stored state a fold still held
    /// was folded from (its pages and values stay), at most `height`.
    @discardableResult
    public func serve(checkpoint height: UInt64) throws(StorageError) -> UInt64 {
        if let readError { throw readError }
        servedCheckpoint = max(servedCheckpoint, height)
        if let since, since.height <= height { try advanceStateWrite() }
        held.removeAll { $0.height < height && $0.height != since?.height }
        return held.map(\.base).min().map { min($0, height) } ?? height
    }

    /// Writes the next slice of the state at `since` (the next checkpoint whose state is
    /// to be written), from the moment that checkpoint is executed, and finishes the write
    /// once every slice is written and the checkpoint, or a later one, is served: then the
    /// stored state is at it, the blocks after it are the window, and its fold is no longer
    /// held. A slice is `sliceRowsMin` values and pages, or more for a large fold
    /// (`slicesPerWrite`; Docs/STORAGE.md, "The state written in slices"): the node calls this
    /// once per tick of its clock, in a turn of its own, so that the state's write is spread
    /// over a few dozen turns of its loop instead of stalling one. A fold larger than
    /// `slicedRowsMax` is written in one commit once served.
    public func advanceStateWrite() throws(StorageError) {
        if let readError { throw readError }
        guard let since, since.base == store.stateHeight, pending == nil else { return }
        guard since.at.values.count + since.at.created.count <= slicedRowsMax else {
            if servedCheckpoint >= since.height { try writeStateWhole() }
            return
        }
        if slices?.height != since.height { slices = Slices(height: since.height, fold: since.at, slicesMax: slicesPerWrite, rowsMin: sliceRowsMin) }
        guard var slices else { return }
        if !slices.isDone {
            let (values, pages) = slices.next()
            try store.writeStateSlice(atHeight: since.height, values: values, pages: pages)
            self.slices = slices
        }
        if slices.isDone, servedCheckpoint >= since.height { try finishStateWrite() }
    }

    /// Writes the state at `since` in one commit (a fold larger than `slicedRowsMax`).
    private func writeStateWhole() throws(StorageError) {
        guard let since, let batch = since.at.batch else { return }
        try store.writeState(Self.changes(batch), atHeight: since.height)
        ended(since.height)
    }

    /// Writes what is left of the state at `since` and finishes its write, certified or not
    /// (the bound on the fold in memory: `persist`).
    private func finishStateWriteNow() throws(StorageError) {
        guard let since else { return }
        guard slices?.height == since.height else { return try writeStateWhole() }
        guard var slices else { return }
        while !slices.isDone {
            let (values, pages) = slices.next(all: true)
            try store.writeStateSlice(atHeight: since.height, values: values, pages: pages)
        }
        self.slices = slices
        try finishStateWrite()
    }

    /// The stored state moved to `since`, every slice of it written: its root page written,
    /// the pages it replaced retired; the blocks after it become the window.
    private func finishStateWrite() throws(StorageError) {
        guard let since, let root = since.at.root else { return }
        try store.finishStateWrite(atHeight: since.height, root: root, rootPage: since.at.page(root)?.encoded(), removedPages: Array(since.at.replaced))
        ended(since.height)
    }

    /// The state at `height` (`since`) stored: the blocks after it become the window, and
    /// its fold is no longer held.
    private func ended(_ height: UInt64) {
        guard let since, since.height == height else { return }
        window = since.after
        self.since = nil
        slices = nil
        held.removeAll { $0.height == height || $0.height < servedCheckpoint }
    }

    /// The state at a checkpoint being written in slices: its fold's values and pages (the
    /// root page apart), each slice taking the next ones in key order (so that it changes
    /// one stretch of each B-tree, not pages all over it). They are grouped by their key's
    /// first byte when the write begins and each group sorted when a slice reaches it: the
    /// loop never sorts the whole fold at once.
    private struct Slices {
        let height: UInt64
        let rowsPerSlice: Int
        private var values: Groups<[UInt8]?>
        private var pages: Groups<TreePage>

        init(height: UInt64, fold: StateWindow, slicesMax: Int, rowsMin: Int) {
            self.height = height
            values = Groups(fold.values.lazy.map { ($0.key, $0.value) })
            pages = Groups(fold.created.lazy.filter { $0.key != fold.root }.map { ($0.key, $0.value) })
            let rows = values.count + pages.count
            rowsPerSlice = max(1, rowsMin, (rows + max(1, slicesMax) - 1) / max(1, slicesMax))
        }

        var isDone: Bool { values.isEmpty && pages.isEmpty }

        /// The next slice's values and pages, encoded (`all`: everything left).
        mutating func next(all: Bool = false) -> ([(key: StateKey, value: [UInt8]?)], [(hash: SHA256Digest, page: [UInt8])]) {
            let budget = all ? Int.max : rowsPerSlice
            let slicedValues = values.take(budget)
            let slicedPages = pages.take(budget - slicedValues.count)
            return (slicedValues.map { (key: $0.0, value: $0.1) }, slicedPages.map { (hash: $0.0, page: $0.1.encoded()) })
        }

        /// Entries by their key's first byte; taken in key order.
        struct Groups<Value> {
            private var groups: [[(Bytes32, Value)]] = Array(repeating: [], count: 256)
            private var group = 0
            private var offset = 0
            private(set) var count = 0

            init(_ entries: some Sequence<(Bytes32, Value)>) {
                for entry in entries { groups[Int(truncatingIfNeeded: entry.0.withUnsafeBytes { $0[0] })].append(entry) }
                count = groups.reduce(0) { $0 + $1.count }
                if !groups[0].isEmpty { groups[0].sort { $0.0 < $1.0 } }
            }

            var isEmpty: Bool { count == 0 }

            /// The next `limit` entries at most, in key order.
            mutating func take(_ limit: Int) -> [(Bytes32, Value)] {
                var taken: [(Bytes32, Value)] = []
                while taken.count < limit, group < groups.count {
                    let available = groups[group].count - offset
                    let now = min(available, limit - taken.count)
                    taken += groups[group][offset..<offset + now]
                    offset += now
                    if offset == groups[group].count {
                        groups[group] = []  // written: its memory goes
                        group += 1
                        offset = 0
                        if group < groups.count { groups[group].sort { $0.0 < $1.0 } }
                    }
                }
                count -= taken.count
                return taken
            }
        }
    }

    /// Whether the state at checkpoint `height`, whose root is `root`, can be proven from
    /// here: its fold is held, or its tree is stored (the state was written there and its
    /// pages are not pruned yet: every page of a stored tree stays until a later served
    /// checkpoint prunes it, so its root page stands for all of them).
    public func holds(checkpoint height: UInt64, root: SHA256Digest) -> Bool {
        if root == .zero || held.contains(where: { $0.height == height }) { return true }
        do { return try store.treePage(root) != nil } catch {
            readError = readError ?? error
            return false
        }
    }

    /// The values `key` may have had at checkpoint `height`, for a proof's leaf to pick by
    /// its value hash: from the fold held at that height if it wrote the key, else those
    /// the store keeps from after it (the archive, then the stored value).
    public func values(of key: StateKey, atCheckpoint height: UInt64) throws(StorageError) -> [[UInt8]] {
        if let fold = held.last(where: { $0.height == height })?.fold, let value = fold.value(key) { return value.map { [$0] } ?? [] }
        return try store.values(of: key, after: height)
    }

    /// A tree page's encoding by its hash, from the store or the folds held (a checkpoint's
    /// page that was never written): what a joining node or a gateway's copy asks.
    public func encodedPage(_ hash: SHA256Digest) throws(StorageError) -> [UInt8]? {
        if let stored = try store.treePage(hash) { return stored }
        for entry in held.reversed() { if let made = entry.fold.page(hash) { return made.encoded() } }
        return window.page(hash)?.encoded()
    }

    /// Takes the committed batch as that of stored block `height`, executed again after a
    /// restart (it is written with the state at the next height that `writesState`):
    /// where the ledger computed a root now and the block recorded one then, they must be
    /// the same. (Where either has none, the check comes at the next checkpoint's write and
    /// vote.)
    public func replayed(_ height: UInt64) throws(StorageError) {
        if let readError { throw readError }
        guard let pending else { throw .invalid(file: store.file, reason: "no state batch for block \(height) executed again") }
        guard height == stateHeight + 1, height <= store.height, let block = try store.block(at: height) else {
            throw .invalid(file: store.file, reason: "block \(height) executed again, the state being at \(stateHeight) and the last block \(store.height)")
        }
        guard !pending.rootComputed || block.stateRoot == .zero || block.stateRoot == pending.tree.root else {
            throw .corrupt(
                file: store.file,
                reason: "block \(height) executed again gives the state root \(pending.tree.root.hex), the block recorded \(block.stateRoot.hex)")
        }
        fold(pending, height: height)
        settle(pending)
    }

    /// After a batch was written or folded: the caches follow it (a block that updated
    /// the tree makes the one computed for reads obsolete).
    private func settle(_ batch: StateBatch) {
        if batch.rootComputed {
            current = nil
            writtenSinceCurrent = []
        } else {
            for (key, _) in batch.values { writtenSinceCurrent.insert(key) }
        }
        for hash in batch.tree.replaced { cache[hash] = nil }
        for (hash, page) in batch.tree.created where batch.tree.depths[hash] ?? .max <= Self.cachedDepthMax { remember(page) }
        clear()
    }

    /// Forgets an unpersisted batch (the node stops, or retries from the store).
    public func discard() {
        clear()
        root = window.root ?? store.stateRoot
    }

    private func clear() {
        pending = nil
        pendingValues = [:]
    }

    /// The upper pages of the tree (depth 12 and above: 4,369 pages at most in the live
    /// tree, the ones every block walks), kept decoded: a page is addressed by its root's
    /// hash, so a cached page can never be stale; a page replaced by a block leaves the
    /// cache with it. Lower pages are read from SQLite (its page cache and memory map):
    /// a block touches a few thousand of them at random among many more than memory
    /// could hold. Bounded (historical pages read for proofs add to it): when full, it
    /// starts over.
    private var cache: [SHA256Digest: TreePage] = [:]
    public static let cachedDepthMax = 12
    public static let cachedPagesMax = 8_192

    private func remember(_ page: TreePage) {
        if cache.count >= Self.cachedPagesMax { cache.removeAll(keepingCapacity: true) }
        cache[page.root] = page
    }
}
