import CalissonCrypto

// Structural checks of certificates (signatures were verified by the shell): a quorum
// of distinct validators, all agreeing on what they certify. Each returns nil when the
// certificate is sound, or what is wrong with it.
extension ValidatorSet {
    /// nil when `signed` holds at least a quorum of distinct validators of this set.
    public func quorumProblem<Body>(_ signed: [Signed<Body>], _ what: String) -> String? {
        let signers = signed.map(\.signer)
        guard Set(signers).count == signers.count else { return "\(what): duplicate signer" }
        guard signers.allSatisfy(contains) else { return "\(what): signer is not a validator" }
        guard signers.count >= quorum else { return "\(what): \(signers.count) signatures, quorum is \(quorum)" }
        return nil
    }

    /// nil when `certified.certificate` proves `certified.block` final under this set
    /// (signatures must be verified separately: `Message.signatureChecks`). Replicas use
    /// it for state transfer; light clients and the simulator for every block they accept.
    public func commitCertificateProblem(_ certified: CertifiedBlock) -> String? {
        let commits = certified.certificate.commits
        if let problem = quorumProblem(commits, "commit certificate") { return problem }
        guard let first = commits.first?.body else { return "commit certificate: empty" }
        guard commits.allSatisfy({ $0.body == first }), first.kind == .commit else { return "commit certificate: votes differ" }
        guard first.seq == certified.block.seq, first.digest == certified.block.digest else {
            return "commit certificate: not for this block"
        }
        return nil
    }
}

extension Replica {
    /// Judged by the set in force at the block's height (known: callers check the horizon).
    func commitCertificateProblem(_ certified: CertifiedBlock) -> String? {
        schedule.validators(at: certified.block.seq).commitCertificateProblem(certified)
    }

    /// Checkpoint votes at height c come from the set that ordered block c.
    func checkpointCertificateProblem(_ certificate: CheckpointCertificate) -> String? {
        guard let first = certificate.votes.first?.body, certificate.votes.allSatisfy({ $0.body == first }) else {
            return "checkpoint certificate: votes differ or none"
        }
        guard first.seq % configuration.checkpointInterval == 0 else { return "checkpoint certificate: not a checkpoint height" }
        guard first.seq <= horizon else { return "checkpoint certificate: height \(first.seq) beyond the known epochs" }
        return schedule.validators(at: first.seq).quorumProblem(certificate.votes, "checkpoint certificate")
    }

    /// The epoch a view change belongs to: that of the height after its stable
    /// checkpoint; nil when that height is beyond this replica's horizon (judged before
    /// any check of the change: its checkpoint's height may be any number, 2^64 − 1 too).
    func epoch(of change: ViewChange) -> Epoch? {
        let stable = change.stable?.seq ?? 0
        return stable < horizon ? schedule.epoch(at: stable + 1) : nil
    }

    func preparedCertificateProblem(_ certificate: PreparedCertificate, before newView: UInt64, in epoch: Epoch) -> String? {
        let prePrepare = certificate.prePrepare
        guard certificate.view < newView else { return "prepared certificate: from a view not before \(newView)" }
        let validators = epoch.validators
        guard prePrepare.signer == validators.primary(of: certificate.view) else { return "prepared certificate: not the primary's proposal" }
        if let problem = validators.quorumProblem(certificate.prepares, "prepared certificate") { return problem }
        let expected = Vote(kind: .prepare, view: certificate.view, seq: certificate.seq, digest: certificate.block.digest)
        guard certificate.prepares.allSatisfy({ $0.body == expected }) else { return "prepared certificate: prepares do not match" }
        return nil
    }

    /// Checks a view change of `epoch` (from `epoch(of:)`): its signer is a validator of
    /// the epoch, its stable checkpoint is certified, and its prepared certificates lie in
    /// its window, within the epoch and this replica's horizon.
    func viewChangeProblem(_ change: Signed<ViewChange>, in epoch: Epoch) -> String? {
        let body = change.body
        guard epoch.validators.contains(change.signer) else { return "view change: signer is not a validator of its epoch" }
        let stableSeq = body.stable?.seq ?? 0
        if let stable = body.stable, let problem = checkpointCertificateProblem(stable) { return problem }
        let high = min(stableSeq + configuration.window, horizon, schedule.lastSeq(ofEpochAt: stableSeq + 1) ?? .max)
        var seen = Set<UInt64>()
        for certificate in body.prepared {
            guard certificate.seq > stableSeq, certificate.seq <= high else {
                return "view change: prepared height \(certificate.seq) outside its window"
            }
            guard seen.insert(certificate.seq).inserted else { return "view change: two certificates for \(certificate.seq)" }
            if let problem = preparedCertificateProblem(certificate, before: body.newView, in: epoch) { return problem }
        }
        return nil
    }
}
