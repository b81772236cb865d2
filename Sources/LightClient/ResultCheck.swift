import CalissonCrypto
import Ledger
import Wire

/// A final transaction's result as a light client accepts it (`ResultCheck`).
public struct VerifiedResult: Equatable, Sendable {
    /// Its place, checked against its block's commit certificate, and its result: when
    /// certified, the reason as this code renders the committed bytes (with the node's free
    /// text for a reason that has one); otherwise as the node words it.
    public let location: TransactionLocation
    public let certification: Certification

    public enum Certification: Equatable, Sendable {
        /// The result at this place is the one its block committed to the state, which the
        /// certificate of checkpoint `height` (state root `root`, signed by `signers`)
        /// certifies: whether it applied, and the reason's code and figures when not (its
        /// free text, for the reasons that have one, is the node's). A transaction rejected
        /// here may be included again later and apply (a rejection does not use its nonce):
        /// a node that answers with the rejected copy rather than the applied one is not
        /// caught by this check (Docs/SECURITY.md).
        case certified(height: UInt64, root: SHA256Digest, signers: [Ed25519PublicKey])
        /// The copy proven was rejected because its nonce was used (`nonceUsed`): this
        /// transaction, or another of its signer with that nonce, applied elsewhere, which
        /// this proof does not say. The result is not taken as the transaction's.
        case nonceUsedElsewhere(checkpoint: UInt64)
        /// The node's latest stable checkpoint (`checkpoint`) is below the block: the result
        /// is the node's word until a checkpoint at or above it is certified.
        case notYetCertified(checkpoint: UInt64)
        /// The block committed no results (executed under ledger rules before
        /// `LedgerRules.resultsCommitted`), as the certified state at `checkpoint` proves:
        /// the result is the node's word.
        case notCommitted(checkpoint: UInt64)
        /// No node gave a proof of the result (none has a stable checkpoint yet, or its
        /// release predates `transactionResult`): the place alone is proven, the result is
        /// the node's word.
        case unproven(String)
    }

    public init(location: TransactionLocation, certification: Certification) {
        self.location = location
        self.certification = certification
    }

    public var isCertified: Bool {
        if case .certified = certification { return true }
        return false
    }
}

/// The checks of a node's answer to `transactionResult` (the query CLI's `tx --genesis`, the
/// gateway's `GET /v1/transactions/{id}`): the transaction's inclusion as `InclusionCheck`
/// checks it, its block's results record read certified as `CertifiedReader` reads a
/// record, then the result's committed bytes against that record's root, at the position
/// the inclusion proves, and the node's wording of the result against those bytes. A node
/// that states another result than the one its block committed is caught.
public enum ResultCheck {
    public static func verify(
        _ answer: ResultProof, transaction id: Bytes32, trusted: TrustedValidators, chainId: String, checked: CheckedCheckpoints? = nil
    ) throws -> VerifiedResult {
        let inclusion = answer.inclusion
        let location = inclusion.location
        do {
            try InclusionCheck.verify(inclusion, transaction: id, validators: trusted.keys(at: location.height), chainId: chainId)
        } catch {
            throw CertifiedReadError.certificate(error)
        }
        let key = StateKeys.blockResults(location.height)
        let read = ClientResponse.certifiedState(
            height: answer.checkpointHeight, certificate: answer.checkpointCertificate, value: answer.record, proof: answer.recordProof)
        let record = try CertifiedReader.record(key, answer: read, trusted: trusted, chainId: chainId, checked: checked)
        guard let value = record.value else {
            let certification: VerifiedResult.Certification =
                record.height < location.height ? .notYetCertified(checkpoint: record.height) : .notCommitted(checkpoint: record.height)
            return VerifiedResult(location: location, certification: certification)
        }
        guard let results = try? BlockResults(wireBytes: value) else { throw CertifiedReadError.proof("block \(location.height)'s results record does not decode") }
        guard results.count == UInt64(clamping: inclusion.commandCount) else {
            throw CertifiedReadError.proof("block \(location.height) committed \(results.count) results, its digest has \(inclusion.commandCount) transactions")
        }
        guard let committed = answer.committed, let proof = answer.resultProof else {
            throw CertifiedReadError.proof("block \(location.height) committed its results, and the node gave no proof of this one")
        }
        guard proof.leafIndex == location.position, proof.leafCount == results.count else {
            throw CertifiedReadError.proof("the result's proof is for position \(proof.leafIndex) of \(proof.leafCount), not \(location.position) of \(results.count)")
        }
        do { try proof.verify(leaf: CommittedResults.leaf(committed), root: results.root) } catch {
            throw CertifiedReadError.proof("the result's proof against block \(location.height)'s committed results: \(error)")
        }
        guard let result = CommittedResults.result(committed) else { throw CertifiedReadError.proof("the committed result does not decode") }
        var shown = location
        switch result {
        case .applied:
            guard location.applied else { throw CertifiedReadError.proof("the block committed the transaction as applied, the node says rejected") }
        case let .rejected(rejection):
            guard !location.applied else { throw CertifiedReadError.proof("the block committed the transaction as rejected, the node says applied") }
            let reason = try Self.shown(rejection, said: location.reason ?? "", committedBy: "the block")
            shown = TransactionLocation(height: location.height, position: location.position, applied: false, reason: reason)
            if case .nonceUsed = rejection {
                return VerifiedResult(location: shown, certification: .nonceUsedElsewhere(checkpoint: record.height))
            }
        }
        let signers = CheckpointCheck.signers(of: record.certificate) ?? []
        return VerifiedResult(location: shown, certification: .certified(height: record.height, root: record.root, signers: signers))
    }
}

extension ResultCheck {
    /// The reason to show for a committed rejection the node words as `said`: the committed
    /// reason and figures as this code renders them, not as the node words them, or the
    /// node's free text for a reason that has one. The wording must name the committed
    /// reason (`CertifiedReadError.proof` otherwise, naming `committedBy`).
    static func shown(_ rejection: LedgerRejection, said: String, committedBy place: String) throws -> String {
        guard rejection.isNamed(by: said) else {
            throw CertifiedReadError.proof("\(place) committed the rejection \(rejection.name), the node says \(said.isEmpty ? "nothing" : said)")
        }
        return rejection.hasText ? said : "\(rejection)"
    }

    /// What a block's results, checked whole against its record (`verifyBlock`), come to.
    public enum BlockResultsCheck: Equatable, Sendable {
        /// Every result is the one the block committed, as the state certified at
        /// `checkpoint` has it. The reasons to show, in the block's order (nil: applied):
        /// this code's rendering of each committed reason and its figures, with the node's
        /// free text for a reason that has one.
        case certified(checkpoint: UInt64, reasons: [String?])
        /// The block committed no results (ledger rules before `resultsCommitted`), as the
        /// state certified at `checkpoint` proves: the results are the node's word.
        case notCommitted(checkpoint: UInt64)
        /// The record was read at checkpoint `checkpoint`, below the block: nothing is
        /// proven yet.
        case notYetCertified(checkpoint: UInt64)
    }

    /// A whole block's results as a node gave them with its contents (stored results,
    /// `StoreAnswers`), checked against the block's results record (`StateKeys.blockResults`)
    /// read certified: their committed forms, in order, must hash to the record's root, as
    /// many as it counts, and each rejection's wording must name the committed reason. The
    /// block's transactions themselves are checked apart (`InclusionCheck.verifyCommit`).
    /// Throws `CertifiedReadError.proof` naming what does not hold.
    public static func verifyBlock(_ results: [[UInt8]], height: UInt64, record: CertifiedRecord) throws -> BlockResultsCheck {
        guard record.height >= height else { return .notYetCertified(checkpoint: record.height) }
        guard let value = record.value else {
            // A block without transactions writes no record: nothing to prove.
            return results.isEmpty ? .certified(checkpoint: record.height, reasons: []) : .notCommitted(checkpoint: record.height)
        }
        guard let committed = try? BlockResults(wireBytes: value) else { throw CertifiedReadError.proof("block \(height)'s results record does not decode") }
        guard committed.count == UInt64(clamping: results.count) else {
            throw CertifiedReadError.proof("block \(height) committed \(committed.count) results, the node gave \(results.count)")
        }
        guard let leaves = StoreAnswers.committedLeaves(results) else {
            throw CertifiedReadError.proof("block \(height) committed its results, and the node gave one without its committed form")
        }
        guard BlockResults(leaves: leaves).root == committed.root else {
            throw CertifiedReadError.proof("block \(height)'s results as the node gave them are not those the block committed")
        }
        var reasons: [String?] = []
        reasons.reserveCapacity(results.count)
        for (position, stored) in results.enumerated() {
            guard let bytes = StoreAnswers.committed(stored), let result = CommittedResults.result(bytes) else {
                throw CertifiedReadError.proof("block \(height): the committed result at position \(position) does not decode")
            }
            guard case let .rejected(rejection) = result else {
                reasons.append(nil)
                continue
            }
            reasons.append(try Self.shown(rejection, said: StoreAnswers.reason(stored) ?? "", committedBy: "block \(height) at position \(position)"))
        }
        return .certified(checkpoint: record.height, reasons: reasons)
    }
}
