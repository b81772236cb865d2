// One test per ledger rule and rejection reason: attribution (roles, programme window,
// caps, wallet ceiling, budget, evidence), redemption (no overdraft, soonest expiry
// first, acceptor restrictions, obligations), transfer, replay protection, expiry and
// demurrage at epoch close, clearing with a worked example, and governance.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct AttributionTests {
    @Test func attributionCreditsTheAccountAndCountsEverywhere() {
        var f = LedgerFixture()
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 3, evidence: 1)) == .applied)
        #expect(f.balance(1, "recyclage") == 30)
        #expect(f.ledger.programme(id("recyclage"))?.totals.issued == 30)
        #expect(f.ledger.meta.totals.issued == 30)
        #expect(f.ledger.usage(LedgerFixture.citizen(1).publicKey, id("recyclage"))?.amount == 30)
    }

    @Test func rejectionsNameTheRuleBroken() {
        var f = LedgerFixture()
        #expect(f.one(f.attribute("tri", "inconnu", to: 1, units: 1, evidence: 1)).rejection == .unknownProgramme(id("inconnu")))
        #expect(f.one(f.attribute("rtm", "recyclage", to: 1, units: 1, evidence: 1)).rejection == .issuerNotAllowed(id("rtm"), programme: id("recyclage")))
        #expect(f.one(f.attribute("fonds", "recyclage", to: 1, units: 1, evidence: 1)).rejection == .missingRole(id("fonds"), needs: "issuer"))
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 0, evidence: 1)).rejection == .zeroAmount)
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 31, evidence: 1)).rejection == .capExceeded(cap: 300, used: 0, asked: 310))
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 7)) == .applied)
        #expect(f.one(f.attribute("tri", "recyclage", to: 2, units: 1, evidence: 7)).rejection == .evidenceUsed)
    }

    @Test func capResetsWithTheNextPeriod() {
        var f = LedgerFixture(epochLength: 10_000)
        #expect(f.one(f.attribute("rtm", "mobilite", to: 1, units: 40, evidence: 1)) == .applied)  // 200: the daily cap
        #expect(f.one(f.attribute("rtm", "mobilite", to: 1, units: 1, evidence: 2)).rejection == .capExceeded(cap: 200, used: 200, asked: 5))
        while f.ledger.height < 100 { f.run([]) }  // a day is 100 blocks here
        #expect(f.one(f.attribute("rtm", "mobilite", to: 1, units: 1, evidence: 3)) == .applied)
    }

    @Test func walletCeilingAndBudgetHold() {
        var f = LedgerFixture(epochLength: 10_000)
        // 500 ceiling: two months' worth cannot pile up in one wallet.
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 30, evidence: 1)) == .applied)
        while f.ledger.height < 3_000 { f.run([]) }  // next cap period (a month is 3000 blocks)
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 25, evidence: 2)).rejection
            == .walletCeilingExceeded(ceiling: 500, held: 300, asked: 250))
        // Budget: 20,000 for the transit bonus, 200 a day per account.
        var evidence = 100
        var citizen = 10
        while f.ledger.programme(id("mobilite"))!.totals.issued < 20_000 {
            evidence += 1
            citizen += 1
            #expect(f.one(f.attribute("rtm", "mobilite", to: citizen, units: 40, evidence: evidence)) == .applied)
        }
        #expect(f.one(f.attribute("rtm", "mobilite", to: 999, units: 1, evidence: 9_999)).rejection
            == .budgetExceeded(budget: 20_000, issued: 20_000, asked: 5))
    }

    @Test func suspendedIssuerAndClosedProgrammeAreRefused() {
        var f = LedgerFixture()
        f.govern(.closeProgramme(id("mobilite")))
        #expect(f.one(f.attribute("rtm", "mobilite", to: 1, units: 1, evidence: 1)).rejection == .programmeClosed(id("mobilite")))
        f.govern(.setPartnerStatus(id("tri"), .suspended))
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 2)).rejection == .partnerNotActive(id("tri"), .suspended))
    }

    /// A block reads each partner once (`Ledger.cachedPartner`): a partner suspended by a
    /// vote in the middle of a block is refused for the rest of that block, not from the next.
    @Test func aPartnerSuspendedMidBlockIsRefusedForTheRestOfIt() {
        var f = LedgerFixture()
        let proposal = f.ledger.meta.nextProposal
        f.run([f.partnerTx("metropole", .propose(.setPartnerStatus(id("tri"), .suspended), deadline: f.ledger.height + 100))])
        var deciding: [UInt8]?
        for voter in ["rtm", "friche", "fonds", "tri"] {
            let vote = f.partnerTx(voter, .vote(proposal: proposal, approve: true))
            var probe = f
            probe.run([vote])
            if probe.ledger.proposal(proposal)?.status != .open {
                deciding = vote
                break
            }
            f.run([vote])
        }
        guard let deciding else {
            Issue.record("the proposal was never decided")
            return
        }
        let before = f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 1)
        let after = f.attribute("tri", "recyclage", to: 2, units: 1, evidence: 2)
        let results = f.run([before, deciding, after])
        #expect(results[0] == .applied)
        #expect(results[1] == .applied)
        #expect(results[2].rejection == .partnerNotActive(id("tri"), .suspended))
        #expect(f.ledger.partner(id("tri"))?.status == .suspended)
    }

    @Test func programmeWindowIsEnforced() {
        var f = LedgerFixture()
        var late = f.ledger.programme(id("recyclage"))!
        late.startHeight = 100
        f.govern(.amendProgramme(late))
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 1)).rejection == .programmeNotOpen(id("recyclage"), height: f.ledger.height))
    }
}

@Suite(.onOwnThreads) struct TransactionEnvelopeTests {
    @Test func replayForgeryAndStaleTransactionsAreRefused() {
        var f = LedgerFixture()
        let tx = f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 1)
        #expect(f.one(tx) == .applied)
        guard case .nonceUsed = f.one(tx).rejection else { Issue.record("replay accepted"); return }
        // Signed by someone else's key.
        let forged = f.partnerTx("tri", .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(1).publicKey, units: 1, evidence: LedgerFixture.evidence(2)),
                                 key: LedgerFixture.key("intruder"))
        #expect(f.one(forged).rejection == .badSignature)
        var h = f.ledger.height
        let stale = f.partnerTx("tri", .vote(proposal: 1, approve: true), expiry: h)
        #expect(f.one(stale).rejection == .expired(expiryHeight: h, height: h + 1))
        h = f.ledger.height
        let far = f.partnerTx("tri", .vote(proposal: 1, approve: true), expiry: h + 1_000)
        #expect(f.one(far).rejection == .expiryTooFar(expiryHeight: h + 1_000, heightMax: h + 1 + 50))
        #expect(f.one([1, 2, 3]).rejection.map { if case .malformed = $0 { true } else { false } } == true)
    }

    @Test func anotherChainsTransactionIsRefused() {
        var f = LedgerFixture()
        let key = LedgerFixture.key("sign tri")
        let tx = Transaction(chainId: "other-chain", signer: .partner(id("tri")), nonce: 1, expiryHeight: 5,
                             body: .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(1).publicKey, units: 1, evidence: .zero))
        #expect(f.one(tx.signed(with: key).wireBytes).rejection == .wrongChain("other-chain"))
    }

    @Test func unknownSignerAndOversizedAmountsAreRefused() {
        var f = LedgerFixture()
        let stranger = f.partnerTx("inconnu", .vote(proposal: 1, approve: true), key: LedgerFixture.key("x"))
        #expect(f.one(stranger).rejection == .unknownPartner(id("inconnu")))
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: UInt32.max, evidence: 1)).rejection == .capExceeded(cap: 300, used: 0, asked: 42_949_672_950))
        #expect(f.one(f.redeem(1, at: "rtm", LedgerLimits.amountMax + 1)).rejection == .amountTooLarge)
        let h = f.ledger.height
        #expect(f.one(f.partnerTx("metropole", .propose(.closeProgramme(id("culture")), deadline: h + 10_000))).rejection
            == .deadlineTooFar(deadline: h + 10_000, heightMax: h + 1 + 1_000))
    }

    @Test func anAccountHoldsAtMostSixtyFourLots() {
        // Each epoch's waste-sorting tokens form their own lot (their expiry differs);
        // with a long lifetime they pile up until the 65th is refused.
        var f = LedgerFixture(epochLength: 1)
        var long = f.ledger.programme(id("recyclage"))!
        long.lifetime = .expiry(epochs: 1_000)
        long.capPerAccount = 100_000
        long.walletCeiling = 100_000
        f.govern(.amendProgramme(long))
        for n in 0..<LedgerLimits.lotsPerAccountMax {
            #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: n)) == .applied)
        }
        #expect(f.ledger.account(LedgerFixture.citizen(1).publicKey).lots.count == LedgerLimits.lotsPerAccountMax)
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 999)).rejection == .tooManyLots)
    }

    @Test func citizenCannotAttributeNorPartnerRedeem() {
        var f = LedgerFixture()
        let tx = f.citizenTx(1, .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(1).publicKey, units: 1, evidence: .zero))
        #expect(f.one(tx).rejection == .malformed("this transaction must be signed by a partner"))
    }
}

@Suite(.onOwnThreads) struct RedemptionTests {
    @Test func redemptionSpendsSoonestExpiringFirstAndRecordsObligations() {
        var f = LedgerFixture()
        f.run([f.attribute("rtm", "mobilite", to: 1, units: 20, evidence: 1)])  // 100, expires in 3 epochs
        f.run([f.attribute("friche", "culture", to: 1, units: 1, evidence: 2)])  // 100, demurrage (never expires)
        #expect(f.one(f.redeem(1, at: "rtm", 150)) == .applied)
        // The transit bonus (expiring) went first, then 50 of the culture pass.
        #expect(f.balance(1, "mobilite") == 0)
        #expect(f.balance(1, "culture") == 50)
        f.ledger.flushObligations()
        #expect(f.ledger.obligations(epoch: 0) == [Obligation(sponsor: id("friche"), acceptor: id("rtm"), amount: 50)])
    }

    @Test func noOverdraftAndAcceptorRestrictions() {
        var f = LedgerFixture()
        f.run([f.attribute("rtm", "mobilite", to: 1, units: 20, evidence: 1)])
        #expect(f.one(f.redeem(1, at: "rtm", 101)).rejection == .insufficientFunds(available: 100, asked: 101))
        // The transit bonus is spendable only on the network.
        #expect(f.one(f.redeem(1, at: "friche", 10)).rejection == .insufficientFunds(available: 0, asked: 10))
        #expect(f.one(f.redeem(1, at: "tri", 10)).rejection == .missingRole(id("tri"), needs: "acceptor"))
        #expect(f.one(f.redeem(1, at: "rtm", 0)).rejection == .zeroAmount)
        #expect(f.balance(1) == 100)
        f.govern(.setPartnerStatus(id("rtm"), .suspended))
        #expect(f.one(f.redeem(1, at: "rtm", 10)).rejection == .partnerNotActive(id("rtm"), .suspended))
        #expect(f.one(f.redeem(1, at: "nulle-part", 10)).rejection == .unknownPartner(id("nulle-part")))
    }

    @Test func transferOnlyWhereTheProgrammeAllows() {
        var f = LedgerFixture()
        f.run([f.attribute("rtm", "mobilite", to: 1, units: 20, evidence: 1), f.attribute("friche", "culture", to: 1, units: 2, evidence: 2)])
        let to = LedgerFixture.citizen(2).publicKey
        #expect(f.one(f.citizenTx(1, .transfer(to: to, programme: id("mobilite"), amount: 10))).rejection == .notTransferable(id("mobilite")))
        #expect(f.one(f.citizenTx(1, .transfer(to: LedgerFixture.citizen(1).publicKey, programme: id("culture"), amount: 10))).rejection == .selfTransfer)
        #expect(f.one(f.citizenTx(1, .transfer(to: to, programme: id("culture"), amount: 201))).rejection == .insufficientFunds(available: 200, asked: 201))
        #expect(f.one(f.citizenTx(1, .transfer(to: to, programme: id("culture"), amount: 120))) == .applied)
        #expect(f.balance(1, "culture") == 80 && f.balance(2, "culture") == 120)
        f.run([f.attribute("friche", "culture", to: 3, units: 10, evidence: 3), f.attribute("metropole", "culture", to: 2, units: 10, evidence: 4)])
        #expect(f.one(f.citizenTx(3, .transfer(to: to, programme: id("culture"), amount: 1_000))).rejection
            == .walletCeilingExceeded(ceiling: 2_000, held: 1_120, asked: 1_000))
    }
}

@Suite(.onOwnThreads) struct EpochCloseTests {
    @Test func expiredTokensAreRetiredAtTheirEpochClose() {
        var f = LedgerFixture()
        f.run([f.attribute("tri", "recyclage", to: 1, units: 10, evidence: 1)])  // expires at the close of epoch 1
        f.closeEpoch()
        #expect(f.balance(1) == 100)
        f.closeEpoch()
        #expect(f.balance(1) == 0)
        #expect(f.ledger.programme(id("recyclage"))?.totals.expired == 100)
        #expect(f.ledger.meta.totals.expired == 100)
    }

    /// The expiry index is chunked so that a block rewrites one chunk, not the list.
    @Test func expiryIndexSpansChunks() {
        var f = LedgerFixture()
        var random = SplitMix64(seed: 8)
        let accounts = (0..<2_500).map { _ in AccountID(random.bytes32()) }
        f.ledger.appendExpiring(Array(accounts[..<1_000]), epoch: 3)
        f.ledger.appendExpiring(Array(accounts[1_000...]), epoch: 3)
        #expect(f.ledger.takeExpiring(epoch: 3) == accounts)
        #expect(f.ledger.takeExpiring(epoch: 3).isEmpty)
    }

    @Test func demurrageMeltsTwoPercentPerEpochToTheSink() {
        var f = LedgerFixture()
        f.run([f.attribute("friche", "culture", to: 1, units: 10, evidence: 1)])  // 1000
        f.closeEpoch()
        f.closeEpoch()
        // Realized when the account is next touched: 1000 → 980 → 960 (⌊980 × 2%⌋ = 19 → 961).
        #expect(f.one(f.redeem(1, at: "friche", 1)) == .applied)
        #expect(f.balance(1, "culture") == 960)
        #expect(f.ledger.programme(id("culture"))?.totals.sunk == 39)
    }

    /// The worked example of Docs/LEDGER.md: the Métropole sponsors the waste-sorting
    /// reward, La Friche the culture pass, RTM the transit bonus.
    @Test func clearingNetsToZeroAndSettlesThroughTheMetropole() {
        var f = LedgerFixture()
        f.run([
            f.attribute("tri", "recyclage", to: 1, units: 30, evidence: 1),  // 300, sponsor metropole
            f.attribute("friche", "culture", to: 2, units: 5, evidence: 2),  // 500, sponsor friche
            f.attribute("rtm", "mobilite", to: 3, units: 40, evidence: 3),  // 200, sponsor rtm
        ])
        f.run([
            f.redeem(1, at: "friche", 300),  // metropole owes friche 300
            f.redeem(2, at: "rtm", 400),  // friche owes rtm 400
            f.redeem(3, at: "rtm", 200),  // rtm's own bonus at rtm: no obligation
        ])
        f.closeEpoch()
        let statements = f.ledger.partnerIDs.compactMap { f.ledger.statement(epoch: 0, partner: $0) }
        #expect(statements.reduce(0) { $0 + $1.net } == 0)
        #expect(f.ledger.statement(epoch: 0, partner: id("friche"))?.net == -100)  // in 300, out 400
        #expect(f.ledger.statement(epoch: 0, partner: id("rtm"))?.net == 400)
        #expect(f.ledger.statement(epoch: 0, partner: id("metropole"))?.net == -300)
        #expect(f.ledger.settlements(epoch: 0) == [
            Settlement(from: id("friche"), to: id("metropole"), amount: 100),
            Settlement(from: id("metropole"), to: id("rtm"), amount: 400),
        ])
        let hashes = Set(statements.map(\.obligationsHash))
        #expect(hashes.count == 1)
    }
}

@Suite(.onOwnThreads) struct GovernanceTests {
    @Test func proposalPassesAtTwoThirdsOfActivePartnersAndApplies() {
        var f = LedgerFixture()
        let newcomer = Partner(id: id("velo"), name: "Vélos en libre service", roles: [.issuer, .acceptor], signingKey: LedgerFixture.key("sign velo").publicKey)
        #expect(f.one(f.partnerTx("metropole", .propose(.admitPartner(newcomer), deadline: f.ledger.height + 100))) == .applied)
        // Five active partners: four yes votes needed (⌈5 × 2/3⌉).
        #expect(f.one(f.partnerTx("rtm", .vote(proposal: 1, approve: true))) == .applied)
        #expect(f.one(f.partnerTx("rtm", .vote(proposal: 1, approve: true))).rejection == .alreadyVoted(1))
        #expect(f.one(f.partnerTx("tri", .vote(proposal: 1, approve: true))) == .applied)
        #expect(f.ledger.partner(id("velo")) == nil)
        #expect(f.one(f.partnerTx("friche", .vote(proposal: 1, approve: true))) == .applied)
        #expect(f.ledger.partner(id("velo")) == newcomer)
        #expect(f.ledger.proposal(1)?.status == .passed(atHeight: f.ledger.height))
        #expect(f.one(f.partnerTx("fonds", .vote(proposal: 1, approve: true))).rejection == .proposalClosed(1))
    }

    @Test func proposalIsRejectedWhenItCanNoLongerPass() {
        var f = LedgerFixture()
        f.run([f.partnerTx("metropole", .propose(.closeProgramme(id("culture")), deadline: f.ledger.height + 100))])
        f.run([f.partnerTx("friche", .vote(proposal: 1, approve: false)), f.partnerTx("rtm", .vote(proposal: 1, approve: false))])
        #expect(f.ledger.proposal(1)?.status == .rejected(atHeight: f.ledger.height))
        #expect(f.ledger.programme(id("culture"))?.status == .active)
    }

    @Test func lateVotesAndInvalidActionsAreRefused() {
        var f = LedgerFixture()
        f.run([f.partnerTx("metropole", .propose(.closeProgramme(id("culture")), deadline: f.ledger.height + 2))])
        f.run([])
        f.run([])
        let late = f.one(f.partnerTx("rtm", .vote(proposal: 1, approve: true)))
        #expect(late.rejection == .deadlinePassed(deadline: 2, height: 4))
        #expect(f.one(f.partnerTx("metropole", .propose(.closeProgramme(id("nothing")), deadline: f.ledger.height + 5))).rejection
            == .invalidAction("unknown programme nothing"))
        #expect(f.one(f.partnerTx("metropole", .propose(.setValidators([id("fonds")]), deadline: f.ledger.height + 5))).rejection
            == .invalidAction("partner fonds has no validator role or node key"))
        #expect(f.one(f.partnerTx("rtm", .vote(proposal: 99, approve: true))).rejection == .unknownProposal(99))
    }

    @Test func validatorSetChangeIsReportedToConsensus() {
        var f = LedgerFixture()
        let before = f.ledger.nodeKeys()
        let outcome = f.governOutcome(.setValidators([id("metropole"), id("rtm"), id("friche")]))
        #expect(outcome?.validators == [before[0], before[1], before[3]])
        // Removing a validator partner drops it from the set too.
        let removal = f.governOutcome(.setPartnerStatus(id("rtm"), .removed))
        #expect(removal?.validators == [before[0], before[3]])
    }

    @Test func rotatedKeyReplacesTheOldOneAtOnce() {
        var f = LedgerFixture()
        let fresh = LedgerFixture.key("sign tri v2")
        f.govern(.rotateKeys(id("tri"), signingKey: fresh.publicKey, nodeKey: LedgerFixture.key("node tri").publicKey, tlsKeyHash: nil))
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 1)).rejection == .badSignature)
        let body = TransactionBody.attribute(programme: id("recyclage"), account: LedgerFixture.citizen(1).publicKey, units: 1, evidence: LedgerFixture.evidence(1))
        #expect(f.one(f.partnerTx("tri", body, key: fresh)) == .applied)
    }
}

/// Blocks a fixture executed, with their roots and results, to replay on a fresh ledger: a
/// rule change must leave old blocks' results and roots as they were.
struct RecordedBlocks {
    private(set) var blocks: [[[UInt8]]] = []
    private(set) var roots: [SHA256Digest] = []
    private(set) var results: [[TransactionResult]] = []

    mutating func run(_ block: [[UInt8]], on f: inout LedgerFixture) {
        let outcome = f.ledger.execute(block)
        blocks.append(block)
        roots.append(outcome.stateRoot)
        results.append(outcome.results)
    }

    /// Executes every block on `fresh`: the same root and results at each.
    func expectTheSameReplay(on fresh: LedgerFixture) {
        var replay = fresh
        for (index, block) in blocks.enumerated() {
            let outcome = replay.ledger.execute(block)
            #expect(outcome.stateRoot == roots[index], "root at block \(index + 1)")
            #expect(outcome.results == results[index], "results at block \(index + 1)")
        }
    }
}

extension LedgerFixture {
    /// Passes a proposal with every partner's vote; returns the outcome of the deciding block.
    @discardableResult
    mutating func governOutcome(_ action: GovernanceAction) -> BlockOutcome? {
        let proposal = ledger.meta.nextProposal
        run([partnerTx("metropole", .propose(action, deadline: ledger.height + 100))])
        var last: BlockOutcome?
        for voter in ["rtm", "tri", "friche", "fonds"] where ledger.proposal(proposal)?.status == .open {
            let tx = partnerTx(voter, .vote(proposal: proposal, approve: true))
            last = ledger.execute([tx])
        }
        return last
    }

    /// A ledger whose partners voted the upgrade `upgrade` to `rules`, run until it is in
    /// force for the next block.
    static func withRules(_ rules: UInt32, upgrade: String) -> LedgerFixture {
        var f = LedgerFixture(epochLength: 1_000)
        f.govern(.scheduleUpgrade(ScheduledUpgrade(name: id(upgrade), height: f.ledger.height + 6, rules: rules)))
        while f.ledger.rules(atHeight: f.ledger.height + 1) < rules { f.run([]) }
        return f
    }

    mutating func govern(_ action: GovernanceAction) {
        governOutcome(action)
        precondition(ledger.proposal(ledger.meta.nextProposal - 1).map { if case .passed = $0.status { true } else { false } } == true)
    }
}

@Suite(.onOwnThreads) struct ReplayIndexTests {
    /// Many transactions sharing one expiry height: the used-nonce index grows by chunks
    /// (a block rewrites its last chunk, never the whole list), and once the height passes
    /// every used nonce and the index are gone.
    @Test func usedNoncesSharingAnExpiryArePrunedTogether() {
        var f = LedgerFixture()
        let expiry = f.ledger.height + 20
        var signers: [(TransactionSigner, UInt64)] = []
        for block in 0..<3 {
            var commands: [[UInt8]] = []
            for index in 0..<700 {
                let citizen = block * 700 + index
                let nonce = f.nextNonce()
                let tx = Transaction(chainId: LedgerFixture.chainId, signer: .partner(id("tri")), nonce: nonce, expiryHeight: expiry,
                                     body: .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(citizen).publicKey, units: 1,
                                                      evidence: LedgerFixture.evidence(citizen)))
                commands.append(tx.signed(with: f.partnerKeys["tri"]!).wireBytes)
                signers.append((.partner(id("tri")), nonce))
            }
            #expect(f.run(commands).allSatisfy { $0 == .applied })
        }
        let chunks = f.ledger.store.value(StateKeys.usedExpiring(expiry)).flatMap { try? UInt64(wireBytes: $0) }
        #expect(chunks == 3, "2,100 keys in chunks of \(ExpiryIndex.chunkCountMax)")
        #expect(signers.allSatisfy { f.ledger.store.value(StateKeys.used($0.0, nonce: $0.1)) != nil })
        while f.ledger.height <= expiry { f.run([]) }
        #expect(signers.allSatisfy { f.ledger.store.value(StateKeys.used($0.0, nonce: $0.1)) == nil })
        #expect(f.ledger.store.value(StateKeys.usedExpiring(expiry)) == nil)
        #expect((0..<3).allSatisfy { f.ledger.store.value(StateKeys.usedExpiringChunk(expiry, $0)) == nil })
    }
}

@Suite struct GovernanceActionTextTests {
    /// A governance action for people (the gateway's proposals and events): its kind and what
    /// it names, not the types' dump.
    @Test func aGovernanceActionReadsAsItsKindAndWhatItNames() {
        let rtm = Identifier("rtm")!, recyclage = Identifier("recyclage")!
        #expect("\(GovernanceAction.closeProgramme(recyclage))" == "closeProgramme(recyclage)")
        #expect("\(GovernanceAction.setPartnerStatus(rtm, .suspended))" == "setPartnerStatus(rtm, suspended)")
        #expect("\(GovernanceAction.setValidators([Identifier("metropole")!, rtm]))" == "setValidators(metropole, rtm)")
        #expect("\(GovernanceAction.setPartnerCategory(rtm, nil))" == "setPartnerCategory(rtm, none)")
        #expect("\(GovernanceAction.setEquivocationPolicy(suspend: true))" == "setEquivocationPolicy(suspend)")
    }
}
