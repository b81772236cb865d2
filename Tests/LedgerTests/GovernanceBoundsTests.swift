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

    static func smallRefusal(adds added: [String], drops: Bool) -> LedgerRejection {
        .invalidAction("a set of fewer than four validators tolerates no fault: it grows by one validator at a time, keeping every current one "
                       + "(this one adds \(added.joined(separator: ", "))\(drops ? " and drops some" : ""))")
    }

    static func pendingRefusal(changedAt: UInt64) -> LedgerRejection {
        let takenUp = changedAt + LedgerLimits.validatorSwitchBlocks
        return .invalidAction("the validators changed at height \(changedAt) and the consensus takes that up by height \(takenUp): "
                              + "one change at a time, so that additions do not add up (propose again after height \(takenUp), once the new nodes vote)")
    }

    static func changedAt(_ f: LedgerFixture) -> UInt64 { f.ledger.read(StateKeys.validatorKeys, as: ValidatorKeys.self)?.changedAt ?? 0 }

    /// Empty blocks until the consensus has taken up the last change of the validators.
    static func untilTakenUp(_ f: inout LedgerFixture) {
        while f.ledger.height + 1 <= changedAt(f) + LedgerLimits.validatorSwitchBlocks { f.run([]) }
    }

    @Test func aValidatorSetAddsAtMostFOfItsMembersAtOnce() {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        let set = { (names: [String]) in GovernanceAction.setValidators(names.map(id)) }
        // No peer can check the certificate of a node without a TLS key hash.
        #expect(Self.refusal(&f, set(["metropole"]))
            == .invalidAction("validator metropole has no TLS key hash: no peer could check its node's certificate (rotate its keys with one first)"))
        Self.giveTLS(&f, ["metropole", "rtm", "tri", "friche"])

        // Removing is no risk to the quorum: from four to one, at once.
        f.govern(set(["metropole"]))
        let shrunk = Self.changedAt(f)
        // Under four, one at a time, keeping every current validator: a set of two or three
        // tolerates no fault, and one replaced is a set of none kept.
        #expect(Self.refusal(&f, set(["metropole", "rtm", "tri"])) == Self.smallRefusal(adds: ["rtm", "tri"], drops: false))
        #expect(Self.refusal(&f, set(["rtm"])) == Self.smallRefusal(adds: ["rtm"], drops: true))
        // One change at a time: nothing added until the consensus took up the last change.
        #expect(Self.refusal(&f, set(["metropole", "rtm"])) == Self.pendingRefusal(changedAt: shrunk))
        Self.untilTakenUp(&f)
        f.govern(set(["metropole", "rtm"]))
        Self.untilTakenUp(&f)
        #expect(Self.refusal(&f, set(["metropole", "tri"])) == Self.smallRefusal(adds: ["tri"], drops: true))
        f.govern(set(["metropole", "rtm", "tri"]))
        Self.untilTakenUp(&f)
        // From four, f of the new set: the three kept make a quorum of four, not of five.
        #expect(Self.refusal(&f, set(["metropole", "rtm", "tri", "friche"])) == nil)
        f.govern(.admitPartner(Self.validator("velo"), endpoints: []))
        f.govern(.admitPartner(Self.validator("bus"), endpoints: []))
        #expect(Self.refusal(&f, set(["metropole", "rtm", "tri", "friche", "velo"])) == Self.addRefusal(["friche", "velo"], of: 5, may: 1))
        f.govern(set(["metropole", "rtm", "tri", "friche"]))
        let grown = Self.changedAt(f)
        #expect(Self.refusal(&f, set(["metropole", "rtm", "tri", "friche", "velo"])) == Self.pendingRefusal(changedAt: grown))
        // A validator's node key rotated is a new validator; its TLS key hash stays.
        let rotated = GovernanceAction.rotateKeys(id("tri"), signingKey: ValidatorKeyTests.signingKey("tri"),
                                                  nodeKey: LedgerFixture.key("node tri 2").publicKey, tlsKeyHash: Self.tls("tri"))
        #expect(Self.refusal(&f, rotated) == Self.pendingRefusal(changedAt: grown))
        #expect(Self.refusal(&f, .rotateKeys(id("tri"), signingKey: ValidatorKeyTests.signingKey("tri"), nodeKey: f.ledger.partner(id("tri"))?.nodeKey,
                                             tlsKeyHash: nil)) == .invalidAction("validator tri needs a TLS key hash: change the validators without it first"))
        Self.untilTakenUp(&f)
        #expect(Self.refusal(&f, rotated) == nil)
        // Two additions each fine alone, decided in one block: the second fails.
        #expect(Self.refusal(&f, set(["bus", "metropole", "rtm", "velo"])) == Self.addRefusal(["bus", "velo"], of: 4, may: 1))
        let first = f.ledger.meta.nextProposal
        f.run([f.partnerTx("metropole", .propose(set(["metropole", "rtm", "tri", "friche", "velo"]), deadline: f.ledger.height + 100)),
               f.partnerTx("metropole", .propose(set(["metropole", "rtm", "tri", "friche", "bus"]), deadline: f.ledger.height + 100))])
        for voter in ["rtm", "tri", "friche"] {
            f.run([f.partnerTx(voter, .vote(proposal: first, approve: true)), f.partnerTx(voter, .vote(proposal: first + 1, approve: true))])
        }
        f.run([f.partnerTx("fonds", .vote(proposal: first, approve: true)), f.partnerTx("fonds", .vote(proposal: first + 1, approve: true))])
        #expect(f.ledger.proposal(first).map { if case .passed = $0.status { true } else { false } } == true)
        guard case let .invalidAction(pending) = Self.pendingRefusal(changedAt: f.ledger.height) else { return }
        #expect(f.ledger.proposal(first + 1)?.status == .failed(atHeight: f.ledger.height, reason: pending))
        #expect(f.ledger.meta.validators == ["metropole", "rtm", "tri", "friche", "velo"].map(id))
        #expect(f.ledger.nodeKeys().count == 5)
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

    /// The clearing's counterparty (the first authority by id) changes only by a handover:
    /// an authority admitted under a later id, then the current one removed. An earlier id
    /// would have taken the role as a side effect; the only one removed, left no one.
    @Test func theClearingsCounterpartyChangesOnlyByAHandover() {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        let authority = { (name: String) in
            Partner(id: id(name), name: name, roles: [.authority], signingKey: LedgerFixture.key("sign \(name)").publicKey)
        }
        #expect(f.ledger.clearingAuthority() == id("metropole"))
        #expect(Self.refusal(&f, .admitPartner(authority("autorite"), endpoints: [])) == .invalidAction(
            "autorite would take the clearing from metropole (the first authority by id settles every epoch): "
                + "admit it under an id after metropole's, then remove metropole to hand the role over"))
        #expect(Self.refusal(&f, .setPartnerStatus(id("metropole"), .removed))
            == .invalidAction("metropole settles every epoch and is the only authority: admit the one to take the role over first"))
        #expect(Self.refusal(&f, .setPartnerStatus(id("metropole"), .suspended)) == nil)  // it still settles
        f.govern(.admitPartner(authority("tresor"), endpoints: []))
        #expect(f.ledger.clearingAuthority() == id("metropole"))
        f.govern(.setPartnerStatus(id("metropole"), .removed))
        #expect(f.ledger.clearingAuthority() == id("tresor"))
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
        f.govern(.admitPartner(Partner(id: id("autorite"), name: "Autorité", roles: [.authority], signingKey: ValidatorKeyTests.signingKey("autorite")),
                               endpoints: []))
        #expect(f.ledger.clearingAuthority() == id("autorite"))  // the role taken as a side effect
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
        // Others still may; it may again once its day is over, for a day from then.
        #expect(f.one(propose(&f, "rtm")) == .applied)
        #expect(f.one(propose(&f, "tri")).rejection == .proposalsPerDayExceeded(max: UInt64(max), nextDayHeight: nextDay))
        // A vote lengthening the day does not move the end of one already counted.
        var parameters = f.ledger.parameters
        parameters.blocksPerDay = 1_000
        f.govern(.setParameters(parameters))
        while f.ledger.height + 1 < nextDay { f.run([]) }
        let second = f.ledger.height + 1
        #expect(f.one(propose(&f, "tri")) == .applied)
        #expect(f.run((1..<max).map { _ in propose(&f, "tri") }).allSatisfy { $0 == .applied })
        #expect(f.one(propose(&f, "tri")).rejection == .proposalsPerDayExceeded(max: UInt64(max), nextDayHeight: second + 1_000))
    }

    /// A proposal that fails when the votes decide keeps a reason its record reads back: cut
    /// to `Proposal.reasonBytesMax`. A longer one made the record unreadable, and the proposal
    /// unknown to reads (it reads as absent).
    @Test func aFailedProposalsReasonIsCutToWhatItsRecordReadsBack() throws {
        var f = LedgerFixture.withRules(LedgerRules.governanceBounded, upgrade: "bounds")
        // Four validators of 32-byte names added to the four, one at a time.
        let long = (1...5).map { "l\($0)" + String(repeating: "x", count: 30) }
        let four = ["metropole", "rtm", "tri", "friche"]
        Self.giveTLS(&f, four)
        for (index, name) in long.enumerated() { Self.pass(&f, .admitPartner(Self.validator(name), endpoints: []), by: four[index % 4]) }
        for count in 1...4 {
            Self.pass(&f, .setValidators((four + long.prefix(count)).map(id)), by: four[count % 4])
            Self.untilTakenUp(&f)
        }
        // Fine when proposed (one added to eight), failed when decided (five added to four).
        let proposal = f.ledger.meta.nextProposal
        #expect(f.one(f.partnerTx("metropole", .propose(.setValidators((four + long).map(id)), deadline: f.ledger.height + 500))) == .applied)
        Self.pass(&f, .setValidators(four.map(id)), by: "rtm")
        Self.vote(&f, proposal)
        guard case let .invalidAction(reason) = Self.addRefusal(long, of: 9, may: 2) else { return }
        let status = try #require(f.ledger.proposal(proposal)?.status, "the failed proposal reads back")
        guard case let .failed(_, kept) = status else {
            Issue.record("not failed: \(status)")
            return
        }
        #expect(reason.utf8.count > Proposal.reasonBytesMax && kept.utf8.count == Proposal.reasonBytesMax && reason.hasPrefix(kept), "\(kept)")
        #expect(f.ledger.meta.validators == four.map(id))
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

    /// Rules 9: a cap's usage counts for the day its record names only. Under rules 6 to 8
    /// a record naming the day that starts at height P (days of 10 blocks here) counted
    /// again, as if it named a day's index, at heights 10·P to 10·P + 9.
    @Test func aCapsUsageCountsForItsOwnDayOnlyFromRules9() {
        for rules in [LedgerRules.eventsCommitted, LedgerRules.validatorChangesOneAtATime] {
            var f = LedgerFixture.withRules(rules, upgrade: "rules")
            var parameters = f.ledger.parameters
            parameters.blocksPerDay = 10
            f.govern(.setParameters(parameters))
            let next = f.ledger.height + 1
            let day = next - next % 10
            #expect(f.one(f.attribute("rtm", "mobilite", to: 1, units: 40, evidence: 1)) == .applied)  // 200: the daily cap
            #expect(f.ledger.usage(LedgerFixture.citizen(1).publicKey, id("mobilite")) == Usage(period: day, amount: 200))
            while f.ledger.height + 1 < day * 10 { f.run([]) }
            let result = f.one(f.attribute("rtm", "mobilite", to: 1, units: 40, evidence: 2))
            if rules >= LedgerRules.validatorChangesOneAtATime {
                #expect(result == .applied, "rules \(rules)")
            } else {
                #expect(result.rejection == .capExceeded(cap: 200, used: 200, asked: 200), "rules \(rules)")
            }
        }
    }

    static func pendingRemovalRefusal(changedAt: UInt64) -> LedgerRejection {
        let takenUp = changedAt + LedgerLimits.validatorSwitchBlocks
        return .invalidAction("the validators changed at height \(changedAt) and the consensus takes that up by height \(takenUp): "
                              + "one change at a time, so that a removal does not leave validators just added alone to make the quorum "
                              + "(propose again after height \(takenUp), once the new nodes vote)")
    }

    /// Rules 9: a removal waits for the last change of the validators to be taken up, as an
    /// addition does. Under rules 6 to 8 it did not: four validators, a fifth added, then
    /// three of the four removed before the consensus took up the addition, and both changes
    /// would be taken up at one boundary: the fifth, not up yet, needed for every quorum of two.
    @Test func aRemovalWaitsForTheLastChangeFromRules9() {
        for rules in [LedgerRules.eventsCommitted, LedgerRules.validatorChangesOneAtATime] {
            var f = LedgerFixture.withRules(rules, upgrade: "serial")
            let set = { (names: [String]) in GovernanceAction.setValidators(names.map(id)) }
            Self.giveTLS(&f, ["metropole", "rtm", "tri", "friche"])
            Self.untilTakenUp(&f)
            f.govern(.admitPartner(Self.validator("velo"), endpoints: []))
            f.govern(set(["metropole", "rtm", "tri", "friche", "velo"]))
            let grown = Self.changedAt(f)
            let removal = Self.refusal(&f, set(["friche", "velo"]))
            if rules >= LedgerRules.validatorChangesOneAtATime {
                #expect(removal == Self.pendingRemovalRefusal(changedAt: grown), "rules \(rules)")
                // The same set again changes nothing: not refused.
                #expect(Self.refusal(&f, set(["metropole", "rtm", "tri", "friche", "velo"])) == nil)
                Self.untilTakenUp(&f)
                #expect(Self.refusal(&f, set(["friche", "velo"])) == nil)
            } else {
                #expect(removal == nil, "rules \(rules)")
            }
        }
    }

    @Test func aReasonIsCutOnAUnicodeScalarsBoundary() {
        let cut = { (text: String, bytes: Int) in Ledger<MemoryStateStore>.cut(text, toBytes: bytes) }
        #expect(cut("abc", 3) == "abc")
        #expect(cut("abcd", 3) == "abc")
        #expect(cut("aéé", 4) == "aé")
        #expect(cut("🇫🇷x", 7) == "🇫")  // a flag is two scalars of four bytes: the first kept
        #expect(cut("e\u{301}x", 2) == "e")  // é as e and a combining accent: the accent is cut off
        #expect(cut("", 0) == "")
    }
}
