import CalissonCrypto
import Wire

// Attribution, redemption, transfer, demurrage, and the epoch close with clearing.
extension Ledger {
    /// The cap period that `height` falls in, as a `Usage` record names it: from rules 6
    /// its first height (`height` rounded down to the span), before it its index (`height /
    /// span`). An index counts spans of whatever length is in force, so a vote changing
    /// `blocksPerDay` (or an amendment changing the programme's period) could give a later
    /// period the index of an old one, whose usage then counted again; a first height
    /// equal to a record's lies within the current period whatever the spans were (and so
    /// does an index equal to the current one, from a record written before rules 6,
    /// unless the span changed meanwhile: the old rule, for those records only).
    static func capPeriod(at height: UInt64, span: UInt64, rules: UInt32) -> UInt64 {
        rules >= LedgerRules.governanceBounded ? height - height % span : height / span
    }

    /// Demurrage is realized lazily: when an account is next touched, each of its
    /// demurrage lots melts once per epoch closed since it was last realized. Returns the
    /// account as it stands now and what melted, by programme (not yet written).
    func realized(_ id: AccountID) -> (account: Account, melted: [Identifier: Amount]) {
        var account = self.account(id)
        var melted: [Identifier: Amount] = [:]
        for index in account.lots.indices where account.lots[index].meltedFromEpoch < meta.epoch {
            var lot = account.lots[index]
            guard case let .demurrage(basisPoints)? = programme(lot.programme)?.lifetime else {
                account.lots[index].meltedFromEpoch = meta.epoch
                continue
            }
            let left = Lot.afterDemurrage(lot.amount, basisPoints: basisPoints, fromEpoch: lot.meltedFromEpoch, to: meta.epoch)
            melted[lot.programme, default: 0] += lot.amount - left
            lot.amount = left
            lot.meltedFromEpoch = meta.epoch
            account.lots[index] = lot
        }
        account.lots.removeAll { $0.amount == 0 }
        return (account, melted)
    }

    /// Writes an account after a successful transaction, with the demurrage it realized.
    mutating func store(_ id: AccountID, _ account: Account, melted: [Identifier: Amount]) {
        for programmeID in melted.keys.sorted() {
            guard let amount = melted[programmeID], amount > 0, var programme = programme(programmeID) else { continue }
            programme.totals.sunk += amount
            meta.totals.sunk += amount
            pendingActivity.programmes[programmeID, default: .init()].sunk += amount
            programmes[programmeID] = programme
        }
        write(StateKeys.account(id), account.lots.isEmpty ? nil : account)
    }

    /// Adds `amount` of `programme` expiring at `epoch` to `account`, merging with a lot
    /// of the same provenance. False if the account would hold too many lots.
    func credit(_ account: inout Account, programme: Identifier, expiresAtEpoch epoch: UInt64, amount: Amount) -> Bool {
        if let index = account.lots.firstIndex(where: { $0.programme == programme && $0.expiresAtEpoch == epoch }) {
            account.lots[index].amount += amount
            return true
        }
        guard account.lots.count < LedgerLimits.lotsPerAccountMax else { return false }
        account.lots.append(Lot(programme: programme, expiresAtEpoch: epoch, amount: amount, meltedFromEpoch: meta.epoch))
        account.lots.sort(by: Lot.spendingOrder)
        return true
    }

    /// Takes `amount` from the lots `eligible` accepts, soonest expiry first; returns
    /// what was taken from each lot (as lots), or nil if not enough.
    func debit(_ account: inout Account, _ amount: Amount, where eligible: (Lot) -> Bool) -> [Lot]? {
        var left = amount
        var taken: [Lot] = []
        for index in account.lots.indices where left > 0 && eligible(account.lots[index]) {
            let part = min(left, account.lots[index].amount)
            account.lots[index].amount -= part
            left -= part
            var piece = account.lots[index]
            piece.amount = part
            taken.append(piece)
        }
        guard left == 0 else { return nil }
        account.lots.removeAll { $0.amount == 0 }
        return taken
    }

    // MARK: Attribute

    mutating func attribute(
        issuer: Partner, programme id: Identifier, account: AccountID, units: UInt32, evidence: Bytes32, height: UInt64
    ) -> Result<Void, LedgerRejection> {
        guard issuer.roles.contains(.issuer) else { return .failure(.missingRole(issuer.id, needs: "issuer")) }
        guard var programme = programme(id) else { return .failure(.unknownProgramme(id)) }
        guard programme.status == .active else { return .failure(.programmeClosed(id)) }
        guard height >= programme.startHeight, programme.endHeight == 0 || height <= programme.endHeight else {
            return .failure(.programmeNotOpen(id, height: height))
        }
        guard programme.issuers.contains(issuer.id) else { return .failure(.issuerNotAllowed(issuer.id, programme: id)) }
        if let sponsor = cachedPartner(programme.sponsor), sponsor.status != .active {
            return .failure(.partnerNotActive(sponsor.id, sponsor.status))
        }
        guard units > 0 else { return .failure(.zeroAmount) }
        let (product, overflow) = Amount(units).multipliedReportingOverflow(by: programme.rewardPerUnit)
        guard !overflow, product <= LedgerLimits.amountMax else { return .failure(.amountTooLarge) }
        let amount = product
        guard amount > 0 else { return .failure(.zeroAmount) }
        let evidenceKey = StateKeys.evidence(id, evidence)
        guard raw(evidenceKey) == nil else { return .failure(.evidenceUsed) }

        let span = parameters.blocksPerDay.saturatingMultiplying(programme.capPeriod.days)
        let period = Self.capPeriod(at: height, span: span, rules: blockRules)
        let usageKey = StateKeys.usage(account, id)
        let previous = read(usageKey, as: Usage.self)
        // From rules 6 a record written before them names the period by its index: under
        // rules 6 to 8 the current index counts too, so that the upgrade gives no account a
        // second cap. From rules 9 no longer: a record of rules 6 naming period k·span
        // matched the index again at heights k·span² and on.
        let byIndex = blockRules >= LedgerRules.governanceBounded && blockRules < LedgerRules.validatorChangesOneAtATime
        let current = previous.map { $0.period == period || (byIndex && $0.period == height / span) } ?? false
        let used = current ? previous?.amount ?? 0 : 0
        guard used + amount <= programme.capPerAccount else {
            return .failure(.capExceeded(cap: programme.capPerAccount, used: used, asked: amount))
        }
        var (wallet, melted) = realized(account)
        let held = wallet.balance(in: id)
        guard held + amount <= programme.walletCeiling else {
            return .failure(.walletCeilingExceeded(ceiling: programme.walletCeiling, held: held, asked: amount))
        }
        guard programme.totals.issued + amount <= programme.budget else {
            return .failure(.budgetExceeded(budget: programme.budget, issued: programme.totals.issued, asked: amount))
        }
        guard meta.totals.issued + amount <= LedgerLimits.totalMax else { return .failure(.amountTooLarge) }
        let expiry: UInt64
        switch programme.lifetime {
        case let .expiry(epochs): expiry = meta.epoch + UInt64(epochs)
        case .demurrage: expiry = Lot.noExpiry
        }
        guard credit(&wallet, programme: id, expiresAtEpoch: expiry, amount: amount) else { return .failure(.tooManyLots) }

        writes[evidenceKey] = .some(StateKeys.bytes(height))
        write(usageKey, Usage(period: period, amount: used + amount))
        programme.totals.issued += amount
        programmes[id] = programme
        meta.totals.issued += amount
        pendingActivity.programmes[id, default: .init()].attributions += 1
        pendingActivity.programmes[id, default: .init()].units += UInt64(units)
        pendingActivity.programmes[id, default: .init()].issued += amount
        store(account, wallet, melted: melted)
        if expiry != Lot.noExpiry { pendingExpiring[expiry, default: []].insert(account) }
        return .success(())
    }

    // MARK: Redeem

    /// Whether `programme`'s tokens may be spent at `acceptor`: at a listed acceptor; from
    /// rules 2, at an acceptor of one of its accepted categories; anywhere when it names
    /// neither acceptors nor categories.
    func accepts(_ programme: Programme, at acceptor: Identifier) -> Bool {
        if programme.acceptors.contains(acceptor) { return true }
        guard blockRules >= LedgerRules.acceptanceByCategory else { return programme.acceptors.isEmpty }
        let categories = acceptance(programme.id)
        if categories.isEmpty { return programme.acceptors.isEmpty }
        return partnerCategory(acceptor).map(categories.contains) ?? false
    }

    mutating func redeem(account: AccountID, acceptor acceptorID: Identifier, amount: Amount) -> Result<Void, LedgerRejection> {
        guard let acceptor = cachedPartner(acceptorID) else { return .failure(.unknownPartner(acceptorID)) }
        guard acceptor.status == .active else { return .failure(.partnerNotActive(acceptorID, acceptor.status)) }
        guard acceptor.roles.contains(.acceptor) else { return .failure(.missingRole(acceptorID, needs: "acceptor")) }
        guard amount > 0 else { return .failure(.zeroAmount) }
        guard amount <= LedgerLimits.amountMax else { return .failure(.amountTooLarge) }
        var (wallet, melted) = realized(account)
        var accepted: [Identifier: Bool] = [:]
        for lot in wallet.lots where accepted[lot.programme] == nil {
            let programme = programme(lot.programme)
            accepted[lot.programme] = programme.map { accepts($0, at: acceptorID) } ?? false
        }
        let available = wallet.lots.filter { accepted[$0.programme] == true }.reduce(0) { $0 + $1.amount }
        guard let taken = debit(&wallet, amount, where: { accepted[$0.programme] == true }) else {
            return .failure(.insufficientFunds(available: available, asked: amount))
        }
        for piece in taken {
            guard var programme = programme(piece.programme) else { continue }
            programme.totals.redeemed += piece.amount
            programmes[piece.programme] = programme
            pendingActivity.programmes[piece.programme, default: .init()].redeemed += piece.amount
            if programme.sponsor != acceptorID {
                pendingObligations[Pair(sponsor: programme.sponsor, acceptor: acceptorID), default: 0] += piece.amount
            }
        }
        meta.totals.redeemed += amount
        pendingActivity.acceptors[acceptorID, default: .init()].count += 1
        pendingActivity.acceptors[acceptorID, default: .init()].amount += amount
        store(account, wallet, melted: melted)
        return .success(())
    }

    // MARK: Transfer

    mutating func transfer(from: AccountID, to: AccountID, programme id: Identifier, amount: Amount) -> Result<Void, LedgerRejection> {
        guard from != to else { return .failure(.selfTransfer) }
        guard let programme = programme(id) else { return .failure(.unknownProgramme(id)) }
        guard programme.transferable else { return .failure(.notTransferable(id)) }
        guard amount > 0 else { return .failure(.zeroAmount) }
        guard amount <= LedgerLimits.amountMax else { return .failure(.amountTooLarge) }
        var (source, sourceMelted) = realized(from)
        var (target, targetMelted) = realized(to)
        let available = source.balance(in: id)
        guard let taken = debit(&source, amount, where: { $0.programme == id }) else {
            return .failure(.insufficientFunds(available: available, asked: amount))
        }
        let held = target.balance(in: id)
        guard held + amount <= programme.walletCeiling else {
            return .failure(.walletCeilingExceeded(ceiling: programme.walletCeiling, held: held, asked: amount))
        }
        for piece in taken {
            guard credit(&target, programme: id, expiresAtEpoch: piece.expiresAtEpoch, amount: piece.amount) else {
                return .failure(.tooManyLots)
            }
        }
        store(from, source, melted: sourceMelted)
        store(to, target, melted: targetMelted)
        for piece in taken where piece.expiresAtEpoch != Lot.noExpiry { pendingExpiring[piece.expiresAtEpoch, default: []].insert(to) }
        return .success(())
    }

    // MARK: Epoch close

    static var obligationsTag: TaggedHasher { TaggedHasher(tag: "calisson/obligations/v1") }

    /// Closes the current ledger epoch after block `height`: retires the tokens that
    /// expire with it, runs clearing and writes the epoch's report.
    mutating func closeEpoch(height: UInt64) {
        let epoch = meta.epoch
        // Expiry: every account holding lots that expire now.
        var holders = Set(takeExpiring(epoch: epoch))
        holders.formUnion(pendingExpiring.removeValue(forKey: epoch) ?? [])
        for holder in holders.sorted() {
            var (wallet, melted) = realized(holder)
            for lot in wallet.lots where lot.expiresAtEpoch <= epoch {
                guard var programme = programme(lot.programme) else { continue }
                programme.totals.expired += lot.amount
                programmes[lot.programme] = programme
                meta.totals.expired += lot.amount
                pendingActivity.programmes[lot.programme, default: .init()].expired += lot.amount
            }
            wallet.lots.removeAll { $0.expiresAtEpoch <= epoch }
            store(holder, wallet, melted: melted)
        }

        // Clearing: gross obligations, net positions, settlement through the Métropole.
        flushObligations()
        let obligations = self.obligations(epoch: epoch)
        let obligationsHash = Self.obligationsTag.hash(ObligationList(obligations).wireBytes)
        var grossIn: [Identifier: Amount] = [:], grossOut: [Identifier: Amount] = [:]
        for obligation in obligations {
            grossIn[obligation.acceptor, default: 0] += obligation.amount
            grossOut[obligation.sponsor, default: 0] += obligation.amount
        }
        let authority = clearingAuthority()
        var settlements: [Settlement] = []
        var nets: [EpochReport.PartnerNet] = []
        for id in meta.partners {
            let incoming = grossIn[id] ?? 0, outgoing = grossOut[id] ?? 0
            let net = Int64(incoming) - Int64(outgoing)
            write(StateKeys.statement(epoch, id), Statement(
                epoch: epoch, partner: id, grossIn: incoming, grossOut: outgoing, net: net, obligationsHash: obligationsHash))
            nets.append(.init(partner: id, net: net))
            guard let authority, id != authority, net != 0 else { continue }
            settlements.append(net < 0
                ? Settlement(from: id, to: authority, amount: Amount(-net))
                : Settlement(from: authority, to: id, amount: Amount(net)))
        }
        write(StateKeys.settlement(epoch), SettlementList(settlements))
        writeEpochReport(epoch, lastHeight: height, nets: nets)
        meta.epoch = epoch + 1
        meta.epochStartHeight = height + 1
    }
}
