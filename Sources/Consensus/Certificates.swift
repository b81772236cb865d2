import Crypto

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
    func quorumProblem<Body>(_ signed: [Signed<Body>], _ what: String) -> String? {
        validators.quorumProblem(signed, what)
    }

    func commitCertificateProblem(_ certified: CertifiedBlock) -> String? {
        validators.commitCertificateProblem(certified)
    }

    func checkpointCertificateProblem(_ certificate: CheckpointCertificate) -> String? {
        if let problem = quorumProblem(certificate.votes, "checkpoint certificate") { return problem }
        guard let first = certificate.votes.first?.body, certificate.votes.allSatisfy({ $0.body == first }) else {
            return "checkpoint certificate: votes differ"
        }
        guard first.seq % configuration.checkpointInterval == 0 else { return "checkpoint certificate: not a checkpoint height" }
        return nil
    }

    func preparedCertificateProblem(_ certificate: PreparedCertificate, before newView: UInt64) -> String? {
        let prePrepare = certificate.prePrepare
        guard certificate.view < newView else { return "prepared certificate: from a view not before \(newView)" }
        guard prePrepare.signer == validators.primary(of: certificate.view) else { return "prepared certificate: not the primary's proposal" }
        if let problem = quorumProblem(certificate.prepares, "prepared certificate") { return problem }
        let expected = Vote(kind: .prepare, view: certificate.view, seq: certificate.seq, digest: certificate.block.digest)
        guard certificate.prepares.allSatisfy({ $0.body == expected }) else { return "prepared certificate: prepares do not match" }
        return nil
    }

    func viewChangeProblem(_ change: Signed<ViewChange>) -> String? {
        let body = change.body
        let stableSeq = body.stable?.seq ?? 0
        if let stable = body.stable, let problem = checkpointCertificateProblem(stable) { return problem }
        var seen = Set<UInt64>()
        for certificate in body.prepared {
            guard certificate.seq > stableSeq, certificate.seq <= stableSeq + configuration.window else {
                return "view change: prepared height \(certificate.seq) outside its window"
            }
            guard seen.insert(certificate.seq).inserted else { return "view change: two certificates for \(certificate.seq)" }
            if let problem = preparedCertificateProblem(certificate, before: body.newView) { return problem }
        }
        return nil
    }
}
