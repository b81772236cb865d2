import Crypto
import Ledger
import Storage
import Wire

/// The ledger's state on the node's SQLite store. The ledger reads values and tree nodes
/// through it; `commit` keeps the block's batch, and `persist` writes it with the block
/// in one SQL transaction (so the block, its results and its state land together or not
/// at all). A read error is recorded, not hidden: the node checks `readError` after each
/// block and stops before persisting anything computed from a failed read.
public final class StoredState: StateStore {
    public let store: NodeStore
    public private(set) var root: SHA256Digest
    private var pending: StateBatch?
    private var pendingValues: [StateKey: [UInt8]?] = [:]
    public private(set) var readError: StorageError?

    public init(store: NodeStore) {
        self.store = store
        root = store.stateRoot
    }

    public func value(_ key: StateKey) -> [UInt8]? {
        if let value = pendingValues[key] { return value }
        do { return try store.value(key) } catch {
            readError = readError ?? error
            return nil
        }
    }

    public func treeNode(_ hash: SHA256Digest) -> TreeNode? {
        if let created = pending?.tree.created[hash] { return created }
        if let cached = cache[hash] { return cached }
        do {
            guard let bytes = try store.treeNode(hash) else { return nil }
            let node = try TreeNode(wireBytes: bytes)
            remember(hash, node)
            return node
        } catch let error as StorageError {
            readError = readError ?? error
        } catch {
            readError = readError ?? .corrupt(file: store.file, reason: "tree node \(hash.hex): \(error)")
        }
        return nil
    }

    public func commit(_ batch: StateBatch) {
        precondition(pending == nil, "a batch is committed while the previous one is not persisted")
        pending = batch
        for (key, value) in batch.values { pendingValues[key] = .some(value) }
        root = batch.tree.root
    }

    /// The committed batch as the store's changes.
    static func changes(_ batch: StateBatch) -> StateChanges {
        StateChanges(
            values: batch.values.map { ($0.key, $0.value) },
            createdNodes: batch.tree.created.map { ($0.key, $0.value.wireBytes) }.sorted { $0.0 < $1.0 },
            removedNodes: batch.tree.replaced,
            root: batch.tree.root)
    }

    /// Writes the genesis batch (height 0).
    public func persistGenesis(extras: [String: [UInt8]] = [:]) throws(StorageError) {
        guard let pending else { throw .invalid(file: store.file, reason: "no genesis state to write") }
        try store.writeGenesis(Self.changes(pending), extras: extras)
        clear()
    }

    /// Writes `block` with the committed batch. `block.stateRoot` must be its root.
    public func persist(_ block: BlockRecord, extras: [String: [UInt8]] = [:]) throws(StorageError) {
        if let readError { throw readError }
        guard let pending else { throw .invalid(file: store.file, reason: "no state batch for block \(block.height)") }
        try store.append(block, state: Self.changes(pending), extras: extras)
        for (hash, node) in pending.tree.created { remember(hash, node) }
        clear()
    }

    /// Forgets an unpersisted batch (the node stops, or retries from the store).
    public func discard() {
        clear()
        root = store.stateRoot
    }

    private func clear() {
        pending = nil
        pendingValues = [:]
    }

    /// Tree nodes read or written lately. Nodes are addressed by their hash, so a cached
    /// node can never be stale; the cache only saves the SQLite reads of the paths every
    /// block walks (the upper levels above all). Bounded: when full, it starts over.
    private var cache: [SHA256Digest: TreeNode] = [:]
    public static let cachedNodesMax = 100_000

    private func remember(_ hash: SHA256Digest, _ node: TreeNode) {
        if cache.count >= Self.cachedNodesMax { cache.removeAll(keepingCapacity: true) }
        cache[hash] = node
    }
}
