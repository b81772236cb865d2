import CalissonCrypto
import Ledger
import Wire

/// A state record as a light client accepts it: its value (nil: proven absent) and the
/// checkpoint whose certificate, signed by a quorum of the validators in force there,
/// certifies the state root the record's Merkle proof leads to.
public struct CertifiedRecord: Equatable, Sendable {
    public let value: [UInt8]?
    public let height: UInt64
    public let root: SHA256Digest
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
            guard case let .handovers(list) = try ask(.handovers(after: trusted.changedAt)) else { throw CertifiedReadError.answer("not handovers") }
            for handover in list {
                do { try trusted.follow(handover, chainId: genesis.chainId) } catch { throw CertifiedReadError.handover(error) }
            }
            if list.count < ClientRequest.handoversMax { return trusted }
        }
    }

    public static func record(
        _ key: StateKey, trusted: TrustedValidators, chainId: String, ask: (ClientRequest) throws -> ClientResponse
    ) throws -> CertifiedRecord {
        let response = try ask(.certifiedState(key))
        guard case let .certifiedState(height, certificate, value, proof) = response else {
            if case let .error(reason) = response { throw CertifiedReadError.answer(reason) }
            throw CertifiedReadError.answer("not a certified state")
        }
        let root: SHA256Digest
        do { root = try CheckpointCheck.verify(certificate, height: height, validators: trusted.keys(at: height), chainId: chainId) } catch {
            throw CertifiedReadError.certificate(error)
        }
        do {
            if let value { try proof.verifyInclusion(key: key, value: value, root: root) } else { try proof.verifyAbsence(key: key, root: root) }
        } catch {
            throw CertifiedReadError.proof("\(error)")
        }
        return CertifiedRecord(value: value, height: height, root: root)
    }
}
