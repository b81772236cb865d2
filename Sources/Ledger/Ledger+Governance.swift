import CalissonCrypto
import Wire

// Governance: partners propose and vote; a proposal passes with yes votes from at least
// `approvalNumerator/approvalDenominator` of the active partners before its deadline,
// and its action applies in the same transaction as the deciding vote.
extension Ledger {
    mutating func propose(by proposer: Partner, action: GovernanceAction, deadline: UInt64, height: UInt64) -> Result<Void, LedgerRejection> {
        guard deadline >= height else { return .failure(.deadlinePassed(deadline: deadline, height: height)) }
        let deadlineMax = height.saturatingAdding(parameters.proposalLifetimeMax)
        guard deadline <= deadlineMax else { return .failure(.deadlineTooFar(deadline: deadline, heightMax: deadlineMax)) }
        if let problem = problem(with: action, height: height) { return .failure(.invalidAction(problem)) }
        if blockRules >= LedgerRules.governanceBounded {
            if case let .failure(rejection) = countProposal(by: proposer.id, height: height) { return .failure(rejection) }
        }
        // The proposer's proposal is its yes vote.
        var proposal = Proposal(id: meta.nextProposal, proposer: proposer.id, action: action, deadline: deadline, yes: [proposer.id], no: [], status: .open)
        meta.nextProposal += 1
        decide(&proposal, height: height)
        write(StateKeys.proposal(proposal.id), proposal)
        return .success(())
    }

    /// Counts a proposal against the proposer's day of blocks (rules 6): a day starts at
    /// the first proposal past the previous day and lasts the `blocksPerDay` blocks in
    /// force then (its end is recorded, so a later vote changing them does not move it).
    private mutating func countProposal(by proposer: Identifier, height: UInt64) -> Result<Void, LedgerRejection> {
        let key = StateKeys.proposalsOpened(proposer)
        var day = read(key, as: ProposalsOpened.self) ?? ProposalsOpened(end: 0, count: 0)
        if height >= day.end { day = ProposalsOpened(end: height.saturatingAdding(parameters.blocksPerDay), count: 0) }
        guard day.count < LedgerLimits.proposalsPerDayMax else {
            return .failure(.proposalsPerDayExceeded(max: LedgerLimits.proposalsPerDayMax, nextDayHeight: day.end))
        }
        day.count += 1
        write(key, day)
        return .success(())
    }

    mutating func vote(by voter: Partner, proposal id: UInt64, approve: Bool, height: UInt64) -> Result<Void, LedgerRejection> {
        guard var proposal = proposal(id) else { return .failure(.unknownProposal(id)) }
        guard proposal.status == .open else { return .failure(.proposalClosed(id)) }
        guard height <= proposal.deadline else { return .failure(.deadlinePassed(deadline: proposal.deadline, height: height)) }
        guard !proposal.yes.contains(voter.id), !proposal.no.contains(voter.id) else { return .failure(.alreadyVoted(id)) }
        if approve { proposal.yes.append(voter.id) } else { proposal.no.append(voter.id) }
        decide(&proposal, height: height)
        write(StateKeys.proposal(id), proposal)
        return .success(())
    }

    /// Passes (and applies) or rejects an open proposal once its votes decide it. Votes
    /// count only from partners active now.
    private mutating func decide(_ proposal: inout Proposal, height: UInt64) {
        let active = meta.partners.filter { partner($0)?.status == .active }
        let needed = parameters.approvalsNeeded(active: active.count)
        let yes = proposal.yes.filter(active.contains).count
        let no = proposal.no.filter(active.contains).count
        if yes >= needed {
            if let problem = problem(with: proposal.action, height: height) {
                let kept = blockRules >= LedgerRules.governanceBounded ? Self.cut(problem, toBytes: Proposal.reasonBytesMax) : problem
                proposal.status = .failed(atHeight: height, reason: kept)
            } else {
                enact(proposal.action)
                proposal.status = .passed(atHeight: height)
            }
        } else if no > active.count - needed {
            proposal.status = .rejected(atHeight: height)
        }
        if proposal.status != .open { decidedProposals.append(proposal.id) }
    }

    /// `text` cut to at most `bytes` bytes of UTF-8, on a Unicode scalar's boundary (not a
    /// character's: where characters end depends on the Unicode version of the toolchain
    /// that built the node, and the result is part of the certified state).
    static func cut(_ text: String, toBytes bytes: Int) -> String {
        guard text.utf8.count > bytes else { return text }
        var kept = String.UnicodeScalarView(), count = 0
        for scalar in text.unicodeScalars {
            count += UTF8.width(scalar)
            guard count <= bytes else { break }
            kept.append(scalar)
        }
        return String(kept)
    }

    /// nil when `action` can be applied to the current state at `height`, else why not
    /// (what the action itself gets wrong first, then, under rules 5, what it would leave,
    /// then, under rules 6, what it would let a vote do).
    func problem(with action: GovernanceAction, height: UInt64) -> String? {
        if let problem = actionProblem(with: action, height: height) { return problem }
        if blockRules >= LedgerRules.validatorKeysKept, let problem = keysProblem(with: action) { return problem }
        return blockRules >= LedgerRules.governanceBounded ? boundsProblem(with: action, height: height) : nil
    }

    /// Under ledger rules 6: why `action` could stop the chain or hand one partner every
    /// decision; nil when it cannot.
    /// - Validators added faster than the consensus can take them with a quorum kept. The
    ///   validators kept must make a quorum of the new set while the new ones start (they
    ///   may not be up yet, or unable to link): a set of n adds at most f = (n − 1) / 3;
    ///   one of fewer than four tolerates no fault, and grows by one, keeping every current
    ///   validator (the only way it grows at all). And one change at a time: no addition
    ///   while the consensus has not yet taken up the last change of the validators' node
    ///   keys (this block's, or one within `LedgerLimits.validatorSwitchBlocks` blocks), since
    ///   two additions taken up at the same boundary add up. A validator whose node key is
    ///   rotated is a new one.
    /// - A validator without a TLS key hash: no peer can check its node's certificate, so
    ///   no node ever links with it.
    /// - An approval of half the active partners or less: one partner of two, or a
    ///   minority, would pass anything, this rule's repeal included.
    /// - The clearing's counterparty changed as a side effect: an authority admitted under
    ///   an id before the current one's took the role over, and removing the only one left
    ///   the epochs' net positions with no one to settle through. The role is handed over
    ///   by admitting the new authority under a later id, then removing the old one.
    func boundsProblem(with action: GovernanceAction, height: UInt64) -> String? {
        switch action {
        case let .setValidators(ids):
            for id in ids where partner(id)?.tlsKeyHash == nil {
                return "validator \(id) has no TLS key hash: no peer could check its node's certificate (rotate its keys with one first)"
            }
            let current = Set(meta.validators)
            let added = ids.filter { !current.contains($0) }
            guard !added.isEmpty else {
                // Rules 9: a removal waits too. Taken up at the same boundary as a pending
                // addition, it could leave the validators just added (not up yet) needed
                // for every quorum.
                guard blockRules >= LedgerRules.validatorChangesOneAtATime, ids != meta.validators else { return nil }
                return validatorChangePending(height: height, removal: true)
            }
            if ids.count < 4 {
                if added.count > 1 || !current.isSubset(of: ids) {
                    return "a set of fewer than four validators tolerates no fault: it grows by one validator at a time, keeping every current one "
                        + "(this one adds \(added.map(\.rawValue).joined(separator: ", "))\(current.isSubset(of: ids) ? "" : " and drops some"))"
                }
            } else if added.count > (ids.count - 1) / 3 {
                return "the set adds \(added.count) validators (\(added.map(\.rawValue).joined(separator: ", "))) where a set of \(ids.count) may add "
                    + "\((ids.count - 1) / 3) at once: the validators kept must still make a quorum while the new ones start (add them in several votes)"
            }
            return validatorChangePending(height: height)
        case let .rotateKeys(id, _, nodeKey, tlsKeyHash):
            guard meta.validators.contains(id), let partner = partner(id) else { return nil }
            if tlsKeyHash == nil { return "validator \(id) needs a TLS key hash: change the validators without it first" }
            return nodeKey == partner.nodeKey ? nil : validatorChangePending(height: height)
        case let .admitPartner(partner, _):
            if partner.roles.contains(.authority), let authority = clearingAuthority(), partner.id < authority {
                return "\(partner.id) would take the clearing from \(authority) (the first authority by id settles every epoch): "
                    + "admit it under an id after \(authority)'s, then remove \(authority) to hand the role over"
            }
        case let .setPartnerStatus(id, .removed):
            if clearingAuthority() == id, !meta.partners.contains(where: { $0 != id && isAuthority($0) }) {
                return "\(id) settles every epoch and is the only authority: admit the one to take the role over first"
            }
        case let .setParameters(parameters):
            if parameters.approvalNumerator <= parameters.approvalDenominator / 2 {
                return "approval must be more than half of the active partners (it is \(parameters.approvalNumerator)/\(parameters.approvalDenominator))"
            }
        default: break
        }
        return nil
    }

    /// Whether partner `id` has the authority role and is not removed.
    func isAuthority(_ id: Identifier) -> Bool {
        partner(id).map { $0.roles.contains(.authority) && $0.status != .removed } ?? false
    }

    /// The clearing's counterparty: the first partner by id with the authority role and not
    /// removed (Docs/SETTLEMENT.md); nil when there is none.
    func clearingAuthority() -> Identifier? { meta.partners.first(where: isAuthority) }

    /// Why a validator cannot be added at `height`: the last change of the validators'
    /// node keys is not yet taken up by the consensus (made in this block, or within
    /// `LedgerLimits.validatorSwitchBlocks` blocks before it); nil when it is.
    /// (The reason is kept in a failed proposal's record, in the certified state: its
    /// wording under rules already released never changes.)
    func validatorChangePending(height: UInt64, removal: Bool = false) -> String? {
        let changedAt = nodeKeys() != blockValidators ? height : read(StateKeys.validatorKeys, as: ValidatorKeys.self)?.changedAt ?? 0
        let takenUp = changedAt.saturatingAdding(LedgerLimits.validatorSwitchBlocks)
        guard changedAt > 0, height <= takenUp else { return nil }
        if removal {
            return "the validators changed at height \(changedAt) and the consensus takes that up by height \(takenUp): "
                + "one change at a time, so that a removal does not leave validators just added alone to make the quorum "
                + "(propose again after height \(takenUp), once the new nodes vote)"
        }
        return "the validators changed at height \(changedAt) and the consensus takes that up by height \(takenUp): "
            + "one change at a time, so that additions do not add up (propose again after height \(takenUp), once the new nodes vote)"
    }

    private func actionProblem(with action: GovernanceAction, height: UInt64) -> String? {
        switch action {
        case let .admitPartner(partner, endpoints):
            if self.partner(partner.id) != nil { return "partner \(partner.id) exists" }
            if let problem = PeerEndpoint.problem(endpoints) { return problem }
            if meta.partners.count >= LedgerLimits.listCountMax { return "at most \(LedgerLimits.listCountMax) partners" }
            if partner.status != .active { return "a new partner starts active" }
            if partner.name.utf8.count > LedgerLimits.nameBytesMax { return "name over \(LedgerLimits.nameBytesMax) bytes" }
        case let .setPartnerStatus(id, _):
            guard let partner = partner(id) else { return "unknown partner \(id)" }
            if partner.status == .removed { return "partner \(id) was removed for good" }
        case let .rotateKeys(id, _, _, _):
            guard let partner = partner(id) else { return "unknown partner \(id)" }
            if partner.status == .removed { return "partner \(id) was removed for good" }
        case let .createProgramme(programme):
            if self.programme(programme.id) != nil { return "programme \(programme.id) exists" }
            return problem(with: programme)
        case let .amendProgramme(programme):
            guard let existing = self.programme(programme.id) else { return "unknown programme \(programme.id)" }
            switch (existing.lifetime, programme.lifetime) {
            case (.expiry, .expiry), (.demurrage, .demurrage): break
            default: return "a programme's lifetime kind (expiry or demurrage) cannot change"
            }
            if existing.status == .closed { return "programme \(programme.id) is closed" }
            return problem(with: programme)
        case let .closeProgramme(id):
            guard let programme = programme(id) else { return "unknown programme \(id)" }
            if programme.status == .closed { return "programme \(id) is already closed" }
        case let .setValidators(ids):
            if ids.isEmpty { return "the validator set cannot be empty" }
            if Set(ids).count != ids.count { return "a validator is listed twice" }
            for id in ids {
                guard let partner = partner(id) else { return "unknown partner \(id)" }
                if partner.status != .active { return "validator \(id) is not active" }
                if !partner.roles.contains(.validator) || partner.nodeKey == nil { return "partner \(id) has no validator role or node key" }
            }
        case let .setParameters(parameters):
            if let problem = parameters.problem() { return problem }
            if partner(parameters.sink) == nil { return "unknown sink partner \(parameters.sink)" }
        case let .scheduleUpgrade(upgrade):
            // Above this block: the rules never change within a block, and a node learns
            // of the upgrade before the height it needs it at.
            if upgrade.height <= height { return "upgrade height \(upgrade.height) is not above the current height \(height)" }
            if upgrade.height > height.saturatingAdding(LedgerLimits.blockSpanMax) { return "upgrade height more than \(LedgerLimits.blockSpanMax) blocks ahead" }
            if upgrade.rules < LedgerRules.initial { return "rules versions start at \(LedgerRules.initial)" }
            let schedule = upgrades
            if let existing = schedule.upgrades.first(where: { $0.name == upgrade.name }), existing.height <= height {
                return "upgrade \(upgrade.name) took effect at height \(existing.height): choose a new name"
            }
            // The rules never go back: not below those in force, nor below an upgrade
            // scheduled earlier (height) than this one.
            let others = schedule.upgrades.filter { $0.name != upgrade.name }
            let floor = UpgradeSchedule(others).rules(atHeight: upgrade.height)
            if upgrade.rules < floor { return "rules \(upgrade.rules) at height \(upgrade.height) would go back from rules \(floor)" }
            if let later = others.first(where: { $0.height > upgrade.height && $0.rules < upgrade.rules }) {
                return "upgrade \(later.name) at height \(later.height) would go back to rules \(later.rules)"
            }
            if others.count >= UpgradeSchedule.countMax { return "at most \(UpgradeSchedule.countMax) upgrades" }
        case let .setPartnerCategory(id, _):
            guard let partner = partner(id) else { return "unknown partner \(id)" }
            if partner.status == .removed { return "partner \(id) was removed for good" }
        case let .setProgrammeAcceptance(id, categories):
            guard let programme = programme(id) else { return "unknown programme \(id)" }
            if programme.status == .closed { return "programme \(id) is closed" }
            if categories.map(\.rawValue) != categories.map(\.rawValue).sorted() || Set(categories).count != categories.count {
                return "categories must be sorted and distinct"
            }
        case .setEquivocationPolicy: break
        case let .cancelUpgrade(name):
            guard let upgrade = upgrades.upgrades.first(where: { $0.name == name }) else { return "no upgrade named \(name)" }
            if upgrade.height <= height { return "upgrade \(name) took effect at height \(upgrade.height): it cannot be cancelled" }
        case let .setPartnerEndpoints(id, endpoints):
            guard let partner = partner(id) else { return "unknown partner \(id)" }
            if partner.status == .removed { return "partner \(id) was removed for good" }
            if let problem = PeerEndpoint.problem(endpoints) { return problem }
        }
        return nil
    }

    /// Under ledger rules 5: why `action` would leave the validators' node keys a list the
    /// consensus cannot use (empty, a validator without one, one key twice), or the
    /// programmes more than the meta record reads back; nil when it does not.
    func keysProblem(with action: GovernanceAction) -> String? {
        /// The partner other than `id` already holding `key`, if any.
        func holder(of key: Ed25519PublicKey, besides id: Identifier?) -> Identifier? {
            meta.partners.first { $0 != id && partner($0)?.nodeKey == key }
        }
        switch action {
        case let .admitPartner(partner, _):
            if let key = partner.nodeKey, let other = holder(of: key, besides: nil) { return "node key \(key.bytes.hex) is partner \(other)'s" }
        case let .rotateKeys(id, _, nodeKey, _):
            // A key kept as it is is no new holder (a chain may hold a shared key from before).
            if let key = nodeKey, key != partner(id)?.nodeKey, let other = holder(of: key, besides: id) {
                return "node key \(key.bytes.hex) is partner \(other)'s"
            }
            if nodeKey == nil, meta.validators.contains(id) {
                return "validator \(id) needs a node key: change the validators without it first"
            }
        case let .setPartnerStatus(id, status):
            if status != .active, isLastValidator(id) { return "\(id) is the last validator: name others first" }
        case let .setValidators(ids):
            var named: [Ed25519PublicKey: Identifier] = [:]
            for id in ids {
                guard let key = partner(id)?.nodeKey else { continue }
                if let first = named[key] { return "validators \(first) and \(id) hold the same node key" }
                named[key] = id
            }
        case .createProgramme:
            if meta.programmes.count >= LedgerLimits.programmeCountMax { return "at most \(LedgerLimits.programmeCountMax) programmes, open and closed" }
        default: break
        }
        return nil
    }

    /// Whether `id` is a validator and no other validator has a node key (the consensus
    /// would be left without a key; a validator without one is possible in a state from
    /// before rules 5).
    func isLastValidator(_ id: Identifier) -> Bool {
        meta.validators.contains(id) && !meta.validators.contains { $0 != id && partner($0)?.nodeKey != nil }
    }

    func problem(with programme: Programme) -> String? {
        if programme.name.utf8.count > LedgerLimits.nameBytesMax { return "name over \(LedgerLimits.nameBytesMax) bytes" }
        if programme.issuers.count > LedgerLimits.listCountMax || programme.acceptors.count > LedgerLimits.listCountMax {
            return "too many issuers or acceptors"
        }
        guard partner(programme.sponsor) != nil else { return "unknown sponsor \(programme.sponsor)" }
        for id in programme.issuers where partner(id)?.roles.contains(.issuer) != true { return "\(id) is not an issuer" }
        for id in programme.acceptors where partner(id)?.roles.contains(.acceptor) != true { return "\(id) is not an acceptor" }
        for amount in [programme.rewardPerUnit, programme.capPerAccount, programme.walletCeiling, programme.budget]
        where amount > LedgerLimits.amountMax {
            return "an amount is over \(LedgerLimits.amountMax)"
        }
        if programme.rewardPerUnit == 0 { return "rewardPerUnit must be positive" }
        if case let .demurrage(basisPoints) = programme.lifetime, basisPoints > 10_000 { return "demurrage over 10000 basis points" }
        if programme.endHeight != 0 && programme.endHeight < programme.startHeight { return "endHeight before startHeight" }
        if programme.issuers != programme.issuers.sorted() || Set(programme.issuers).count != programme.issuers.count {
            return "issuers must be sorted and distinct"
        }
        if programme.acceptors != programme.acceptors.sorted() || Set(programme.acceptors).count != programme.acceptors.count {
            return "acceptors must be sorted and distinct"
        }
        return nil
    }

    /// Applies a checked action.
    mutating func enact(_ action: GovernanceAction) {
        switch action {
        case let .admitPartner(partner, endpoints):
            partners[partner.id] = partner
            meta.partners = (meta.partners + [partner.id]).sorted()
            if !endpoints.isEmpty { setEndpoints(partner.id, endpoints) }
        case let .setPartnerStatus(id, status):
            guard var partner = partner(id) else { return }
            partner.status = status
            partners[id] = partner
            if status != .active { meta.validators.removeAll { $0 == id } }
        case let .rotateKeys(id, signingKey, nodeKey, tlsKeyHash):
            guard var partner = partner(id) else { return }
            partner.signingKey = signingKey
            partner.nodeKey = nodeKey
            partner.tlsKeyHash = tlsKeyHash
            partners[id] = partner
        case let .createProgramme(programme):
            var fresh = programme
            fresh.totals = Programme.Totals()
            programmes[programme.id] = fresh
            meta.programmes = (meta.programmes + [programme.id]).sorted()
        case let .amendProgramme(programme):
            guard let existing = self.programme(programme.id) else { return }
            var amended = programme
            amended.totals = existing.totals
            programmes[programme.id] = amended
        case let .closeProgramme(id):
            guard var programme = programme(id) else { return }
            programme.status = .closed
            programmes[id] = programme
        case let .setValidators(ids):
            meta.validators = ids
        case let .setParameters(parameters):
            self.parameters = parameters
        case let .scheduleUpgrade(upgrade):
            write(StateKeys.upgrades, UpgradeSchedule(upgrades.upgrades.filter { $0.name != upgrade.name } + [upgrade]))
        case let .setPartnerCategory(id, category):
            write(StateKeys.partnerCategory(id), category)
        case let .setProgrammeAcceptance(id, categories):
            write(StateKeys.programmeAcceptance(id), categories.isEmpty ? nil : CategoryList(categories))
        case let .setEquivocationPolicy(suspend):
            write(StateKeys.equivocationPolicy, suspend ? true : nil)
        case let .setPartnerEndpoints(id, endpoints):
            setEndpoints(id, endpoints)
        case let .cancelUpgrade(name):
            write(StateKeys.upgrades, UpgradeSchedule(upgrades.upgrades.filter { $0.name != name }))
        }
    }
}
