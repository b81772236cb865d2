import CalissonCrypto
import Ledger
import Wire

/// A validator-set change as a node proves it to a light client: a checkpoint that the
/// set then in force certified, and the `ValidatorKeys` record in that checkpoint's state
/// with its Merkle proof. The record names the new set and the block that decided it.
public struct Handover: Hashable, Sendable, WireCodable {
    public let height: UInt64
    /// The checkpoint certificate (Consensus wire form).
    public let certificate: [UInt8]
    /// The `ValidatorKeys` record at `height`.
    public let value: [UInt8]
    public let proof: StateProof

    public init(height: UInt64, certificate: [UInt8], value: [UInt8], proof: StateProof) {
        self.height = height
        self.certificate = certificate
        self.value = value
        self.proof = proof
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(height)
        writer.writeBytes(certificate)
        writer.writeBytes(value)
        writer.write(proof)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        height = try reader.readUInt64("handover.height")
        certificate = try reader.readBytes("handover.certificate", maximum: 1 << 20)
        value = try reader.readBytes("handover.value", maximum: 64 * 1_024)
        proof = try StateProof(from: &reader)
    }
}

/// Why a handover was not followed.
public enum HandoverError: Error, Equatable, Sendable, CustomStringConvertible {
    case certificate(height: UInt64, CertificateError)
    case proof(height: UInt64, String)
    case malformed(height: UInt64, String)
    /// The change is not newer than one already followed.
    case stale(height: UInt64, changedAt: UInt64, followed: UInt64)
    /// The checkpoint is past the change's boundary: the new set was already in force
    /// there, so the set that certified it cannot be the one that handed over.
    case late(height: UInt64, changedAt: UInt64, boundary: UInt64)

    public var description: String {
        switch self {
        case let .certificate(height, error): return "handover at checkpoint \(height): \(error)"
        case let .proof(height, reason): return "handover at checkpoint \(height): the validator keys do not match the certified root (\(reason))"
        case let .malformed(height, reason): return "handover at checkpoint \(height): \(reason)"
        case let .stale(height, changedAt, followed): return "handover at checkpoint \(height): change at \(changedAt) is not after \(followed)"
        case let .late(height, changedAt, boundary): return "handover at checkpoint \(height): the change at \(changedAt) took over after \(boundary)"
        }
    }
}

/// The validator sets a light client trusts, height by height: the genesis set, then each
/// set a handover proved, from its first height on. This mirrors the consensus rule
/// (Docs/PROTOCOL.md, *Validator-set changes*): a set decided by block s orders the heights
/// above B(s) = ⌈s/K⌉·K + W, so the checkpoints up to B(s), certified by the old set, carry
/// the new set in their state. K and W are protocol constants, fixed here rather than taken
/// from a node, which could otherwise move a boundary to let a retired set sign.
public struct TrustedValidators: Hashable, Sendable {
    /// The consensus checkpoint interval K and window W (ReplicaConfiguration's defaults;
    /// a test keeps them equal).
    public static let checkpointInterval: UInt64 = 8
    public static let window: UInt64 = 32

    public struct Epoch: Hashable, Sendable {
        public let firstHeight: UInt64
        public let keys: [Ed25519PublicKey]
    }

    public private(set) var epochs: [Epoch]
    /// The height of the last change followed (0: none).
    public private(set) var changedAt: UInt64 = 0

    public init(genesis: [Ed25519PublicKey]) {
        epochs = [Epoch(firstHeight: 1, keys: genesis)]
    }

    /// The last height ordered by the set that block `changedAt` replaced (saturating:
    /// the height in a handover is a node's word until proven).
    public static func boundary(changedAt: UInt64) -> UInt64 {
        (changedAt.saturatingAdding(checkpointInterval - 1) / checkpointInterval * checkpointInterval).saturatingAdding(window)
    }

    /// The highest change a handover may name: no chain gets near it, and every height
    /// computed from it (its boundary, the height after) fits in 64 bits.
    public static let changedAtMax = UInt64.max >> 1

    /// The keys of the set that orders `height`, as far as the handovers followed tell.
    public func keys(at height: UInt64) -> [Ed25519PublicKey] {
        (epochs.last { $0.firstHeight <= height } ?? epochs[0]).keys
    }

    /// Checks a handover against the set in force at its checkpoint and, if it holds,
    /// schedules the set it names. Handovers must come in the order of their changes.
    public mutating func follow(_ handover: Handover, chainId: String) throws(HandoverError) {
        let height = handover.height
        // What the value says is checked first, before it is proven: a handover that
        // could not be followed even if proven costs no signature check (a node repeating
        // old ones would otherwise cost a quorum's checks each).
        let record: ValidatorKeys
        do { record = try ValidatorKeys(wireBytes: handover.value) } catch { throw .malformed(height: height, "\(error)") }
        guard record.changedAt > changedAt, record.changedAt <= height else {
            throw .stale(height: height, changedAt: record.changedAt, followed: changedAt)
        }
        guard record.changedAt <= Self.changedAtMax else {
            throw .malformed(height: height, "a change at \(record.changedAt), past the highest height a chain can reach (\(Self.changedAtMax))")
        }
        let boundary = Self.boundary(changedAt: record.changedAt)
        guard height <= boundary else { throw .late(height: height, changedAt: record.changedAt, boundary: boundary) }
        let root: SHA256Digest
        do { root = try CheckpointCheck.verify(handover.certificate, height: height, validators: keys(at: height), chainId: chainId) } catch {
            throw .certificate(height: height, error)
        }
        do { try handover.proof.verifyInclusion(key: StateKeys.validatorKeys, value: handover.value, root: root) } catch {
            throw .proof(height: height, "\(error)")
        }
        // Two changes between the same checkpoints: the later one wins, as in consensus.
        if epochs.count > 1, epochs[epochs.count - 1].firstHeight == boundary + 1 { epochs.removeLast() }
        guard epochs.last?.firstHeight ?? 0 < boundary + 1 else {
            throw .stale(height: height, changedAt: record.changedAt, followed: changedAt)
        }
        epochs.append(Epoch(firstHeight: boundary + 1, keys: record.keys))
        changedAt = record.changedAt
    }
}
