// Ledger rules 6: a vote cannot stop the chain (validators added faster than the kept ones
// make a quorum, or a validator no peer can link with), nor hand one partner every decision
// (an approval of half or less); a partner cannot grow the certified state with proposals at
// will (a number per day of blocks); and a failed proposal's reason is kept readable. Under
// rules 5 the same actions apply as they did, so old blocks replay to the same state.
import CalissonCrypto
import CalissonTestKit
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct GovernanceBoundsTests {
    static func refusal(_ f: inout LedgerFixture, _ action: GovernanceAction) -> LedgerRejection? {
        ValidatorKeyTests.refusal(&f, action)
    }

    static func tls(_ partner: String) -> SHA256Digest { SHA256.hash("tls \(partner)") }

    /// Gives each partner named a TLS key hash, keeping its keys (one vote each).
    static func giveTLS(_ f: inout LedgerFixture, _ partners: [String]) {
        for partner in partners {
            f.govern(.rotateKeys(id(partner), signingKey: ValidatorKeyTests.signingKey(partner),
                                 nodeKey: f.ledger.partner(id(partner))?.nodeKey, tlsKeyHash: tls(partner)))
        }
    }

    /// A partner that may validate, with its keys and a TLS key hash.
    static func validator(_ name: String) -> Partner {
        Partner(id: id(name), name: name, roles: [.validator], signingKey: LedgerFixture.key("sign \(name)").publicKey,
                nodeKey: LedgerFixture.key("node \(name)").publicKey, tlsKeyHash: tls(name))
    }

    static func addRefusal(_ added: [String], of count: Int, may addedMax: Int) -> LedgerRejection {
        .invalidAction("the set adds \(added.count) validators (\(added.joined(separator: ", "))) where a set of \(count) may add \(addedMax) at once: "
                       + "the validators kept must still make a quorum while the new ones start (add them in several votes)")
    }

    @Test func aValidatorSetAddsAtMostFOfItsMembersAtOnce() {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        // No peer can check the certificate of a node without a TLS key hash.
        #expect(Self.refusal(&f, .setValidators([id("metropole")]))
            == .invalidAction("validator metropole has no TLS key hash: no peer could check its node's certificate (rotate its keys with one first)"))
        Self.giveTLS(&f, ["metropole", "rtm", "tri", "friche"])

        // Removing is no risk to the quorum: from four to one.
        f.govern(.setValidators([id("metropole")]))
        // Under four, one at a time: a set of two or three tolerates no fault anyway.
        #expect(Self.refusal(&f, .setValidators([id("metropole"), id("rtm"), id("tri")])) == Self.addRefusal(["rtm", "tri"], of: 3, may: 1))
        f.govern(.setValidators([id("metropole"), id("rtm")]))
        f.govern(.setValidators([id("metropole"), id("rtm"), id("tri")]))
        // From four, f of the new set: the three kept make a quorum of four, not of five.
        #expect(Self.refusal(&f, .setValidators(["metropole", "rtm", "tri", "friche"].map(id))) == nil)
        f.govern(.admitPartner(Self.validator("velo"), endpoints: []))
        #expect(Self.refusal(&f, .setValidators(["metropole", "rtm", "tri", "friche", "velo"].map(id)))
            == Self.addRefusal(["friche", "velo"], of: 5, may: 1))
        f.govern(.setValidators(["metropole", "rtm", "tri", "friche"].map(id)))
        // Two of four replaced at once: the two kept are no quorum of the new four.
        f.govern(.admitPartner(Self.validator("bus"), endpoints: []))
        #expect(Self.refusal(&f, .setValidators(["bus", "metropole", "rtm", "velo"].map(id))) == Self.addRefusal(["bus", "velo"], of: 4, may: 1))
        f.govern(.setValidators(["metropole", "rtm", "tri", "velo"].map(id)))
        #expect(f.ledger.meta.validators == ["metropole", "rtm", "tri", "velo"].map(id))
        #expect(f.ledger.nodeKeys().count == 4)
    }

    @Test func aProposalPassesWithMoreThanHalfOfThePartners() {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        var parameters = f.ledger.parameters
        for (numerator, denominator) in [(1, 2), (1, 255), (127, 254), (2, 4)] as [(UInt8, UInt8)] {
            (parameters.approvalNumerator, parameters.approvalDenominator) = (numerator, denominator)
            #expect(Self.refusal(&f, .setParameters(parameters))
                == .invalidAction("approval must be more than half of the active partners (it is \(numerator)/\(denominator))"))
        }
        (parameters.approvalNumerator, parameters.approvalDenominator) = (128, 255)
        f.govern(.setParameters(parameters))
        #expect(f.ledger.parameters.approvalNumerator == 128)
    }

    /// Under rules 5 what rules 6 refuses applies, as it did: old blocks replay alike.
    @Test func underRules5TheSameActionsApplyAsTheyDid() {
        var f = LedgerFixture.withRules(LedgerRules.validatorKeysKept, upgrade: "keys")
        f.govern(.setValidators([id("metropole")]))  // no TLS key hash
        f.govern(.setValidators(["metropole", "rtm", "tri", "friche"].map(id)))  // three added at once
        var parameters = f.ledger.parameters
        (parameters.approvalNumerator, parameters.approvalDenominator) = (1, 2)
        f.govern(.setParameters(parameters))
        #expect(f.ledger.parameters.approvalDenominator == 2)
        let proposals = (0..<20).map { _ in f.partnerTx("tri", .propose(.closeProgramme(id("recyclage")), deadline: f.ledger.height + 50)) }
        #expect(f.run(proposals).allSatisfy { $0 == .applied })
    }

    @Test func aPartnerOpensAtMostSoManyProposalsADay() throws {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        let max = Int(LedgerLimits.proposalsPerDayMax)
        let propose = { (f: inout LedgerFixture, partner: String) in
            f.partnerTx(partner, .propose(.closeProgramme(id("recyclage")), deadline: f.ledger.height + 500))
        }
        let start = f.ledger.height + 1
        let nextDay = start + f.ledger.parameters.blocksPerDay
        let first = f.ledger.meta.nextProposal
        let results = f.run((0...max).map { _ in propose(&f, "tri") })
        #expect(results.prefix(max).allSatisfy { $0 == .applied })
        #expect(results.last?.rejection == .proposalsPerDayExceeded(max: UInt64(max), nextDayHeight: nextDay))
        #expect(f.ledger.meta.nextProposal == first + UInt64(max))
        // Others still may, and so may it later the same day: no, the day is counted from its first.
        // Others still may; it may again once its day is over, for a day from then.
        #expect(f.one(propose(&f, "rtm")) == .applied)
        #expect(f.one(propose(&f, "tri")).rejection == .proposalsPerDayExceeded(max: UInt64(max), nextDayHeight: nextDay))
        while f.ledger.height + 1 < nextDay { f.run([]) }
        #expect(f.one(propose(&f, "tri")) == .applied)
        #expect(f.run((1..<max).map { _ in propose(&f, "tri") }).allSatisfy { $0 == .applied })
        #expect(f.one(propose(&f, "tri")).rejection == .proposalsPerDayExceeded(max: UInt64(max), nextDayHeight: nextDay + f.ledger.parameters.blocksPerDay))
    }

    /// A proposal that fails when the votes decide keeps a reason its record reads back: cut
    /// to `Proposal.reasonBytesMax`. A longer one made the record unreadable, and the proposal
    /// unknown to reads (it reads as absent).
    @Test func aFailedProposalsReasonIsCutToWhatItsRecordReadsBack() throws {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        // Four validators of 32-byte names, one at a time.
        let long = (1...4).map { "l\($0)" + String(repeating: "x", count: 30) }
        Self.giveTLS(&f, ["metropole"])
        Self.pass(&f, .setValidators([id("metropole")]))
        for (index, name) in long.enumerated() {
            Self.pass(&f, .admitPartner(Self.validator(name), endpoints: []), by: index % 2 == 0 ? "rtm" : "tri")
            Self.pass(&f, .setValidators((["metropole"] + long.prefix(index + 1)).map(id)), by: index % 2 == 0 ? "friche" : "metropole")
        }
        Self.pass(&f, .setValidators(long.map(id)))
        // Fine when proposed (one added to four), failed when decided (four added to one).
        let proposal = f.ledger.meta.nextProposal
        #expect(f.one(f.partnerTx("metropole", .propose(.setValidators((long + ["metropole"]).map(id)), deadline: f.ledger.height + 100))) == .applied)
        Self.pass(&f, .setValidators([id("metropole")]), by: "rtm")
        Self.vote(&f, proposal)
        guard case let .invalidAction(reason) = Self.addRefusal(long, of: 5, may: 1) else { return }
        let status = try #require(f.ledger.proposal(proposal)?.status, "the failed proposal reads back")
        guard case let .failed(_, kept) = status else {
            Issue.record("not failed: \(status)")
            return
        }
        #expect(reason.utf8.count > Proposal.reasonBytesMax && kept.utf8.count == Proposal.reasonBytesMax && reason.hasPrefix(kept), "\(kept)")
        #expect(f.ledger.meta.validators == [id("metropole")])
    }

    /// Proposes `action` and has every other active partner vote yes until it is decided;
    /// requires it passed.
    static func pass(_ f: inout LedgerFixture, _ action: GovernanceAction, by proposer: String = "metropole") {
        let proposal = f.ledger.meta.nextProposal
        let proposed = f.one(f.partnerTx(proposer, .propose(action, deadline: f.ledger.height + 100), key: LedgerFixture.key("sign \(proposer)")))
        precondition(proposed == .applied, "\(action): \(proposed)")
        vote(&f, proposal)
        precondition(f.ledger.proposal(proposal).map { if case .passed = $0.status { true } else { false } } == true,
                     "\(action): \(String(describing: f.ledger.proposal(proposal)?.status))")
    }

    /// Every active partner that has not votes yes on `proposal`, one block each, until it is decided.
    static func vote(_ f: inout LedgerFixture, _ proposal: UInt64) {
        for voter in f.ledger.meta.partners where f.ledger.proposal(proposal)?.status == .open {
            guard let record = f.ledger.proposal(proposal), !record.yes.contains(voter), f.ledger.partner(voter)?.status == .active else { continue }
            f.run([f.partnerTx(voter.rawValue, .vote(proposal: proposal, approve: true), key: LedgerFixture.key("sign \(voter)"))])
        }
    }

    /// A cap's usage names its period by its first height (rules 6): a vote lengthening the
    /// day cannot make an old day's usage count again. Days of 100 blocks, then of 150:
    /// height 250 was in the third day of 100 (index 2), height 320 is in the third day of
    /// 150 (index 2 again) but not the same day. Under rules 5 the index was the period,
    /// and the usage at 250 capped the account at 320.
    @Test func aCapsUsageFromAnOldDayDoesNotCountAfterTheDaysLengthChanges() {
        for rules in [LedgerRules.validatorKeysKept, LedgerRules.governanceBounded] {
            var f = LedgerFixture.withRules(rules, upgrade: "rules")
            #expect(f.ledger.parameters.blocksPerDay == 100)
            while f.ledger.height + 1 < 250 { f.run([]) }
            #expect(f.one(f.attribute("rtm", "mobilite", to: 1, units: 40, evidence: 1)) == .applied)  // 200: the daily cap
            var parameters = f.ledger.parameters
            parameters.blocksPerDay = 150
            f.govern(.setParameters(parameters))
            while f.ledger.height + 1 < 320 { f.run([]) }
            let result = f.one(f.attribute("rtm", "mobilite", to: 1, units: 40, evidence: 2))
            if rules >= LedgerRules.governanceBounded {
                #expect(result == .applied)
                #expect(f.ledger.usage(LedgerFixture.citizen(1).publicKey, id("mobilite")) == Usage(period: 300, amount: 200))
            } else {
                #expect(result.rejection == .capExceeded(cap: 200, used: 200, asked: 200))
            }
        }
    }

    @Test func aReasonIsCutOnACharactersBoundary() {
        #expect(Ledger<MemoryStateStore>.cut("abc", toBytes: 3) == "abc")
        #expect(Ledger<MemoryStateStore>.cut("abcd", toBytes: 3) == "abc")
        #expect(Ledger<MemoryStateStore>.cut("aéé", toBytes: 4) == "aé")
        #expect(Ledger<MemoryStateStore>.cut("🇫🇷x", toBytes: 7) == "")
        #expect(Ledger<MemoryStateStore>.cut("", toBytes: 0) == "")
    }
}
