import CalissonCrypto
import Ledger
import Synchronization
import Wire

/// A state record as a light client accepts it: its value (nil: proven absent) and the
/// checkpoint whose certificate, signed by a quorum of the validators in force there,
/// certifies the state root the record's Merkle proof leads to.
public struct CertifiedRecord: Equatable, Sendable {
    public let value: [UInt8]?
    public let height: UInt64
    public let root: SHA256Digest
    /// What it was checked with, for whoever wants to check again (the dashboard's proof
    /// documents): the Merkle proof against `root`, the checkpoint certificate's bytes, and
    /// the validator keys in force at `height` that signed it.
    public var proof: StateProof? = nil
    public var certificate: [UInt8] = []
    public var validators: [Ed25519PublicKey] = []
}

/// Why a node's answer was not accepted. Each case says what did not hold.
public enum CertifiedReadError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The node answered with an error, or with an answer of another kind.
    case answer(String)
    case handover(HandoverError)
    case certificate(CertificateError)
    case proof(String)

    public var description: String {
        switch self {
        case let .answer(reason): return "the node answered: \(reason)"
        case let .handover(error): return "the node's proof of a validator-set change does not hold (\(error)): it cannot be trusted"
        case let .certificate(error): return "the node's checkpoint certificate does not hold (\(error)): it cannot be trusted"
        case let .proof(reason): return "the node's answer does not match the certified state root (\(reason)): it cannot be trusted"
        }
    }
}

/// The checks of a certified read, shared by the query CLI and the gateway: follow the
/// validator sets from the genesis through a node's handovers, then take a record at the
/// node's latest stable checkpoint and check its certificate and proof. `ask` sends one
/// request to the node (over the client port, or to a database) and may throw its own
/// transport errors.
public enum CertifiedReader {
    /// The validator sets followed from the genesis, or on from `known` (sets already
    /// followed, whose handovers are not asked for or checked again).
    public static func trusted(
        _ genesis: Genesis, from known: TrustedValidators? = nil, ask: (ClientRequest) throws -> ClientResponse
    ) throws -> TrustedValidators {
        var trusted = known ?? TrustedValidators(genesis: genesis.validatorKeys)
        while true {
            let (followed, complete) = try follow(try ask(.handovers(after: trusted.changedAt)), from: trusted, chainId: genesis.chainId)
            trusted = followed
            if complete { return trusted }
        }
    }

    /// The validator sets followed on from `trusted` through a node's answer to
    /// `.handovers(after: trusted.changedAt)`, each handover's certificate checked; not
    /// `complete` when the answer is full (the node may have more: ask again).
    public static func follow(_ answer: ClientResponse, from trusted: TrustedValidators, chainId: String) throws -> (TrustedValidators, complete: Bool) {
        guard case let .handovers(list) = answer else {
            if case let .error(reason) = answer { throw CertifiedReadError.answer(reason) }
            throw CertifiedReadError.answer("not handovers")
        }
        var followed = trusted
        for handover in list {
            do { try followed.follow(handover, chainId: chainId) } catch { throw CertifiedReadError.handover(error) }
        }
        return (followed, list.count < ClientRequest.handoversMax)
    }

    public static func record(
        _ key: StateKey, trusted: TrustedValidators, chainId: String, checked: CheckedCheckpoints? = nil, ask: (ClientRequest) throws -> ClientResponse
    ) throws -> CertifiedRecord {
        try record(key, answer: try ask(.certifiedState(key)), trusted: trusted, chainId: chainId, checked: checked)
    }

    /// A record in one round trip: the handovers after those already followed and the
    /// record, asked together (`askAll` pipelines them on one connection); the same checks
    /// as `trusted` then `record`, in that order. More handovers than one answer holds are
    /// followed by asking again, then the record is asked again.
    public static func record(
        _ key: StateKey, genesis: Genesis, from known: TrustedValidators?, checked: CheckedCheckpoints? = nil,
        ask: (ClientRequest) throws -> ClientResponse, askAll: ([ClientRequest]) throws -> [ClientResponse]
    ) throws -> (TrustedValidators, CertifiedRecord) {
        let answers = try askAll(recordRequests(key, genesis: genesis, from: known))
        switch try record(key, genesis: genesis, from: known, answers: answers, checked: checked) {
        case let .record(trusted, record): return (trusted, record)
        case let .moreHandovers(partly):
            let followed = try self.trusted(genesis, from: partly, ask: ask)
            return (followed, try record(key, trusted: followed, chainId: genesis.chainId, checked: checked, ask: ask))
        }
    }

    /// The requests of a record in one round trip, for a caller that sends them itself
    /// (pipelined, in this order) and gives the answers to `record(_:genesis:from:answers:checked:)`.
    public static func recordRequests(_ key: StateKey, genesis: Genesis, from known: TrustedValidators?) -> [ClientRequest] {
        [.handovers(after: (known ?? TrustedValidators(genesis: genesis.validatorKeys)).changedAt), .certifiedState(key)]
    }

    /// What the answers to `recordRequests` gave.
    public enum RoundTrip: Sendable {
        /// The record, checked, and the validator sets followed.
        case record(TrustedValidators, CertifiedRecord)
        /// The node has more handovers than one answer holds: those given are followed;
        /// follow the rest (`trusted`), then ask the record again.
        case moreHandovers(TrustedValidators)
    }

    /// Checks the answers to `recordRequests` (the same checks as `trusted` then `record`).
    public static func record(
        _ key: StateKey, genesis: Genesis, from known: TrustedValidators?, answers: [ClientResponse], checked: CheckedCheckpoints? = nil
    ) throws -> RoundTrip {
        guard answers.count == 2 else { throw CertifiedReadError.answer("\(answers.count) answers to 2 requests") }
        let (trusted, complete) = try follow(answers[0], from: known ?? TrustedValidators(genesis: genesis.validatorKeys), chainId: genesis.chainId)
        guard complete else { return .moreHandovers(trusted) }
        return .record(trusted, try record(key, answer: answers[1], trusted: trusted, chainId: genesis.chainId, checked: checked))
    }

    /// Checks a node's answer to `.certifiedState(key)` against validator sets already followed.
    public static func record(
        _ key: StateKey, answer response: ClientResponse, trusted: TrustedValidators, chainId: String, checked: CheckedCheckpoints?
    ) throws -> CertifiedRecord {
        guard case let .certifiedState(height, certificate, value, proof) = response else {
            if case let .error(reason) = response { throw CertifiedReadError.answer(reason) }
            throw CertifiedReadError.answer("not a certified state")
        }
        let validators = trusted.keys(at: height)
        let root: SHA256Digest
        if let known = checked?.root(height: height, certificate: certificate, validators: validators) {
            root = known
        } else {
            do { root = try CheckpointCheck.verify(certificate, height: height, validators: validators, chainId: chainId) } catch {
                throw CertifiedReadError.certificate(error)
            }
            checked?.remember(height: height, certificate: certificate, validators: validators, root: root)
        }
        do {
            if let value { try proof.verifyInclusion(key: key, value: value, root: root) } else { try proof.verifyAbsence(key: key, root: root) }
        } catch {
            throw CertifiedReadError.proof("\(error)")
        }
        return CertifiedRecord(value: value, height: height, root: root, proof: proof, certificate: certificate, validators: validators)
    }
}

/// Checkpoint certificates already checked, by their bytes, height and the validator set
/// they were checked against: the same certificate for the same set needs no second check
/// (its signatures were verified once). Bounded: the newest `countMax` are kept.
public final class CheckedCheckpoints: Sendable {
    public static let countMax = 64
    private struct Entry: Hashable {
        let height: UInt64
        let certificate: SHA256Digest
        let validators: SHA256Digest
    }
    private let entries = Mutex<[Entry: SHA256Digest]>([:])

    public init() {}

    private static func entry(_ height: UInt64, _ certificate: [UInt8], _ validators: [Ed25519PublicKey]) -> Entry {
        Entry(height: height, certificate: SHA256.hash(certificate), validators: SHA256.hash(validators.flatMap(\.bytes.bytes)))
    }

    /// The state root a certificate was found to certify, if it was checked before.
    public func root(height: UInt64, certificate: [UInt8], validators: [Ed25519PublicKey]) -> SHA256Digest? {
        let entry = Self.entry(height, certificate, validators)
        return entries.withLock { $0[entry] }
    }

    public func remember(height: UInt64, certificate: [UInt8], validators: [Ed25519PublicKey], root: SHA256Digest) {
        let entry = Self.entry(height, certificate, validators)
        entries.withLock { entries in
            entries[entry] = root
            if entries.count > Self.countMax, let oldest = entries.keys.min(by: { $0.height < $1.height }) { entries[oldest] = nil }
        }
    }
}
