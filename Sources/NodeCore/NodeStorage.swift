import Consensus
import CalissonCrypto
import Ledger
import Storage

/// What a node core keeps durable, and how: the node implements it on SQLite
/// (`StoredState`), the simulator in memory with injected faults (`SimulatedStorage`).
///
/// Every call is synchronous. What a call wrote must be durable before the shell carries
/// out any effect of the drive that made it: the simulator's storage makes each call
/// durable as it returns; the node groups the writes of a turn of its event loop into one
/// commit, made before that turn's effects are carried out (`NodeRuntime.endTurn`). A call
/// that throws has written nothing the core relies on, and the core stops (a restart
/// rebuilds it from what the storage holds). The ledger's state is read and committed through
/// `state`; `persist` makes the committed batch durable together with its block.
public protocol NodeStorage: AnyObject {
    associatedtype State: StateStore
    /// The ledger's state on this storage.
    var state: State { get }
    /// Whether a genesis was written (a new storage holds nothing); a storage that cannot
    /// tell throws.
    var isInitialized: Bool { get throws }
    /// The height of the last block persisted.
    var height: UInt64 { get }
    /// The height the state is at: `height`, or below it after a restart when the storage
    /// writes the state only at some heights (the node's, at its checkpoints). The core
    /// executes the blocks above it again when it starts (`replayed`).
    var stateHeight: UInt64 { get }
    /// Both heights read strictly (the start's replay, the replica's last executed block):
    /// a read that fails throws, never taken for a height.
    func heights() throws -> (top: UInt64, state: UInt64)
    /// A named value kept beside the chain (the validator-set schedule, the genesis digest).
    func extra(_ name: String) throws -> [UInt8]?
    /// The consensus safety log, in the order it was appended.
    func safetyRecords() throws -> [SafetyRecord]
    /// Writes the genesis state the ledger committed to `state`, with `extras`.
    func persistGenesis(extras: [String: [UInt8]]) throws
    /// A stored final block with its commit certificate (nil if absent or without its body).
    func certifiedBlock(at height: UInt64) throws -> CertifiedBlock?
    /// Runs `body`, which reads the state, as one consistent read; throws the first read
    /// error met inside (the ledger itself sees a failed read as an absent value).
    func reading<T>(_ body: () -> T) throws -> T
    /// Writes `block` with the state batch the ledger just committed, and `extras`, at once.
    func persist(_ block: BlockRecord, extras: [String: [UInt8]]) throws
    /// Takes the batch the ledger just committed as that of stored block `height`, executed
    /// again at start (the next above `stateHeight`): writes nothing, and throws if its
    /// root is not the one the block recorded.
    func replayed(_ height: UInt64) throws
    /// Appends safety records, in order.
    func appendSafety(_ records: [SafetyRecord]) throws
    /// Replaces the safety log by `records` (its fold at a stable checkpoint).
    func compactSafety(_ records: [SafetyRecord]) throws
    /// Keeps the certificate of a stable checkpoint.
    func putCheckpoint(height: UInt64, certificate: [UInt8]) throws
    /// After a block or a stable checkpoint: the latest certified checkpoint at or below the
    /// executed height becomes the one served to light clients, and what only older ones
    /// needed may go. Returns the validator-set change it handed over, if it recorded one
    /// (the height the change was executed at).
    func serveLatestCheckpoint() throws -> (changedAt: UInt64, checkpoint: UInt64)?
}
