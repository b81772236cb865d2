import CalissonCrypto

/// The state batches of consecutive blocks folded into one: what a store that writes its
/// state only at some heights (the node: at checkpoint heights, Docs/STORAGE.md) holds in
/// memory in between, reads through, and writes as one batch.
///
/// The fold is the net change from the state before the first batch to the state after
/// the last: a value written several times keeps its last value; a tree page created by one
/// batch and replaced by a later one was never part of a state the store writes, so it is
/// in neither list; a page of the first state that a batch replaced and a later one made
/// again (a value restored) is in neither list either.
public struct StateWindow: Sendable {
    /// Each key written, with its last value (nil: deleted).
    public private(set) var values: [StateKey: [UInt8]?] = [:]
    /// The pages of the last state that the first did not have.
    public private(set) var created: [SHA256Digest: TreePage] = [:]
    /// The depth of each page in `created`.
    public private(set) var depths: [SHA256Digest: Int] = [:]
    /// The pages of the first state that the last does not have.
    public private(set) var replaced: Set<SHA256Digest> = []
    /// The root after the last batch (nil: no batch yet).
    public private(set) var root: SHA256Digest?
    /// How many batches were folded.
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// Folds the next block's batch in.
    public mutating func add(_ batch: StateBatch) {
        for hash in batch.tree.replaced {
            if created.removeValue(forKey: hash) == nil {
                replaced.insert(hash)
            } else {
                depths[hash] = nil
            }
        }
        for (hash, page) in batch.tree.created where replaced.remove(hash) == nil {
            created[hash] = page
            depths[hash] = batch.tree.depths[hash]
        }
        for (key, value) in batch.values { values[key] = .some(value) }
        root = batch.tree.root
        count += 1
    }

    /// The value `key` has after the last batch, if a batch wrote it (`.some(nil)`: deleted).
    public func value(_ key: StateKey) -> [UInt8]?? { values[key] }

    /// A page made by the batches and still in the last state.
    public func page(_ hash: SHA256Digest) -> TreePage? { created[hash] }

    /// The fold as one batch (values in key order); nil if no batch was folded.
    public var batch: StateBatch? {
        guard let root else { return nil }
        return StateBatch(
            values: values.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) },
            tree: StateTree.Update(root: root, created: created, depths: depths, replaced: replaced.sorted()))
    }
}

/// Where a store that writes its state every few checkpoints writes it (Docs/STORAGE.md,
/// "The state every few checkpoints"): the node's `StoredState` and the simulator's state,
/// which fold the blocks in between (`StateWindow`).
public struct StateWriteSchedule: Sendable, Equatable {
    /// The state's root is computed at the multiples of this (the checkpoint interval).
    public let stateInterval: UInt64
    /// The state is written at every `writeEvery`-th multiple of `stateInterval`: those whose
    /// quotient by it leaves `writeOffset` divided by `writeEvery`. A cluster's validators
    /// take different offsets, so that they do not all make their largest write, and stall
    /// their loops for it, at the same block.
    public let writeEvery: UInt64
    public let writeOffset: UInt64
    /// Blocks folded past which the state is written with the block where `writes`, whether
    /// a checkpoint was certified or not: two write intervals.
    public let foldedBlocksMax: UInt64

    /// Each at least 1; `writeOffset` taken modulo `writeEvery`.
    public init(stateInterval: UInt64, writeEvery: UInt64 = 1, writeOffset: UInt64 = 0) {
        self.stateInterval = max(1, stateInterval)
        self.writeEvery = max(1, writeEvery)
        self.writeOffset = writeOffset % self.writeEvery
        let (interval, overflow) = self.stateInterval.multipliedReportingOverflow(by: self.writeEvery)
        foldedBlocksMax = overflow || interval > UInt64.max / 2 ? .max : 2 * interval
    }

    /// Whether the state is to be written at height `height` (once certified, unless
    /// `withBlock` says otherwise).
    public func writes(atHeight height: UInt64) -> Bool {
        height % stateInterval == 0 && (height / stateInterval) % writeEvery == writeOffset
    }

    /// Whether the state is written with block `height` itself, `folded` blocks folded since
    /// the stored state with it: where it is to be written, and either at every checkpoint
    /// or past `foldedBlocksMax` (certificates not coming: the fold in memory stays bounded).
    public func withBlock(atHeight height: UInt64, folded: UInt64) -> Bool {
        writes(atHeight: height) && (writeEvery == 1 || folded >= foldedBlocksMax)
    }
}
