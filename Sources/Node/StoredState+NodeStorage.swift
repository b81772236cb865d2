import Consensus
import CalissonCrypto
import LightClient
import Ledger
import NodeCore
import Storage
import Wire

/// The node core's storage on SQLite: the state is this object itself; blocks, the safety
/// log, checkpoints and light clients' handovers are the `NodeStore`'s tables. Every write
/// is one SQL transaction, synced before it returns, or part of the batch the node opened
/// for the turn of its loop (synced when the turn ends, before its effects).
extension StoredState: NodeStorage {
    public var state: StoredState { self }
    public var isInitialized: Bool {
        get throws { try store.isInitialized }
    }
    public var height: UInt64 { store.height }

    public func extra(_ name: String) throws -> [UInt8]? { try store.extra(name) }

    public func safetyRecords() throws -> [SafetyRecord] { try store.safetyRecords().map { try SafetyRecord(wireBytes: $0) } }

    public func certifiedBlock(at height: UInt64) throws -> CertifiedBlock? {
        guard let record = try store.block(at: height), let body = record.body,
            let block = try? Block(wireBytes: body), let certificate = try? CommitCertificate(wireBytes: record.certificate)
        else { return nil }
        return CertifiedBlock(block: block, certificate: certificate)
    }

    public func reading<T>(_ body: () -> T) throws -> T { try store.reading(body) }

    public func appendSafety(_ records: [SafetyRecord]) throws { try store.appendSafety(records.map(\.wireBytes)) }

    public func compactSafety(_ records: [SafetyRecord]) throws { try store.compactSafety(records.map(\.wireBytes)) }

    public func putCheckpoint(height: UInt64, certificate: [UInt8]) throws { try store.putCheckpoint(height: height, certificate: certificate) }

    public func serveLatestCheckpoint() throws -> (changedAt: UInt64, checkpoint: UInt64)? {
        guard let (height, certificate) = try store.checkpoint(atOrBelow: store.height), height > prunedThrough else { return nil }
        let handed = try recordHandover(at: height, certificate: certificate)
        // Its state written now if due; the history pruned up to it, but for the state a
        // fold still held was folded from.
        try store.pruneHistory(through: try serve(checkpoint: height))
        prunedThrough = height
        try pruneBodies(checkpoint: height)
        return handed.map { ($0, height) }
    }

    /// Retention: drops the bodies older than the `retainBlocks` latest, never one above
    /// `checkpoint` (the latest served), at most `bodiesPrunedPerCheckpointMax` at a time.
    func pruneBodies(checkpoint: UInt64) throws {
        guard let retainBlocks else { return }
        let height = store.height
        guard height > retainBlocks else { return }
        let below = min(checkpoint, height - retainBlocks) + 1
        try store.pruneBodies(below: below, limit: Self.bodiesPrunedPerCheckpointMax)
    }

    /// At each newly served checkpoint (its state still provable): if its validator keys
    /// record a change not handed over yet, keep the record, its proof and the certificate,
    /// so that light clients can follow the change long after (Docs/QUERY.md). Returns the
    /// height of the change it recorded, if any.
    func recordHandover(at height: UInt64, certificate bytes: [UInt8]) throws -> UInt64? {
        let certificate = try CheckpointCertificate(wireBytes: bytes)
        let key = StateKeys.validatorKeys
        let proof = StateTree.proof(for: key, root: certificate.stateRoot, nodes: self)
        guard let leaf = proof.terminal, leaf.key == key,
            let value = try values(of: key, atCheckpoint: height).first(where: { StateTree.valueHash($0) == leaf.valueHash }),
            let record = try? ValidatorKeys(wireBytes: value)
        else { return nil }  // a chain from before the record existed
        if lastHandover == nil { lastHandover = try store.lastHandover() }
        guard record.changedAt > lastHandover ?? 0 else { return nil }
        try store.putHandover(
            changedAt: record.changedAt, height: height,
            record: Handover(height: height, certificate: bytes, value: value, proof: proof).wireBytes)
        lastHandover = record.changedAt
        return record.changedAt
    }
}
