// Ledger rules 5: governance keeps the validators' node keys a set the consensus can use
// (none empty, none without a key, no key twice) and the programmes a count the ledger's
// meta record reads back. Under rules 4 the same actions applied: the consensus kept the
// old set while the ledger's `ValidatorKeys` record (what light clients and gateways
// follow) named the new one, and every certificate after it failed their check.
import CalissonCrypto
import CalissonTestKit
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct ValidatorKeyTests {
    /// The rejection of `action` proposed by the Métropole now, if any.
    static func refusal(_ f: inout LedgerFixture, _ action: GovernanceAction) -> LedgerRejection? {
        f.one(f.partnerTx("metropole", .propose(action, deadline: f.ledger.height + 50))).rejection
    }

    static func signingKey(_ partner: String) -> Ed25519PublicKey { LedgerFixture.key("sign \(partner)").publicKey }

    @Test func underRules5NoActionLeavesTheConsensusAKeySetItCannotUse() throws {
        var f = LedgerFixture.withRules(LedgerRules.validatorKeysKept, upgrade: "keys")
        let rtm = try #require(f.ledger.partner(id("rtm"))?.nodeKey)
        let fondsKey = LedgerFixture.key("node fonds").publicKey

        // One node key, two holders: by rotation, by admission.
        #expect(Self.refusal(&f, .rotateKeys(id("tri"), signingKey: Self.signingKey("tri"), nodeKey: rtm, tlsKeyHash: nil))
            == .invalidAction("node key \(rtm.bytes.hex) is partner rtm's"))
        let twin = Partner(id: id("twin"), name: "Twin", roles: [.validator], signingKey: Self.signingKey("twin"), nodeKey: rtm)
        #expect(Self.refusal(&f, .admitPartner(twin, endpoints: [])) == .invalidAction("node key \(rtm.bytes.hex) is partner rtm's"))
        // A validator without a node key.
        #expect(Self.refusal(&f, .rotateKeys(id("rtm"), signingKey: Self.signingKey("rtm"), nodeKey: nil, tlsKeyHash: nil))
            == .invalidAction("validator rtm needs a node key: change the validators without it first"))
        // A key of its own, and keeping its own key, are fine; a partner that is no
        // validator may drop its node key.
        #expect(Self.refusal(&f, .rotateKeys(id("rtm"), signingKey: Self.signingKey("rtm"), nodeKey: rtm, tlsKeyHash: nil)) == nil)
        #expect(Self.refusal(&f, .rotateKeys(id("fonds"), signingKey: Self.signingKey("fonds"), nodeKey: fondsKey, tlsKeyHash: nil)) == nil)

        // The last validator: not suspended, not removed.
        f.govern(.setValidators([id("metropole")]))
        #expect(f.ledger.meta.validators == [id("metropole")])
        for status in [PartnerStatus.suspended, .removed] {
            #expect(Self.refusal(&f, .setPartnerStatus(id("metropole"), status)) == .invalidAction("metropole is the last validator: name others first"))
        }
        #expect(f.ledger.nodeKeys().count == 1)
    }

    /// Checked again when the votes decide: two proposals, each fine alone, each
    /// suspending one of the last two validators; the second fails, naming why.
    @Test func theCheckHoldsWhenTheVotesDecide() {
        var f = LedgerFixture.withRules(LedgerRules.validatorKeysKept, upgrade: "keys")
        f.govern(.setValidators([id("metropole"), id("rtm")]))
        let first = f.ledger.meta.nextProposal
        f.run([f.partnerTx("tri", .propose(.setPartnerStatus(id("metropole"), .suspended), deadline: f.ledger.height + 50)),
               f.partnerTx("tri", .propose(.setPartnerStatus(id("rtm"), .suspended), deadline: f.ledger.height + 50))])
        for proposal in [first, first + 1] {
            for voter in ["friche", "fonds", "metropole", "rtm"] where f.ledger.proposal(proposal)?.status == .open {
                f.run([f.partnerTx(voter, .vote(proposal: proposal, approve: true))])
            }
        }
        #expect(f.ledger.proposal(first).map { if case .passed = $0.status { true } else { false } } == true)
        #expect(f.ledger.proposal(first + 1)?.status == .failed(atHeight: f.ledger.height, reason: "rtm is the last validator: name others first"),
                "\(String(describing: f.ledger.proposal(first + 1)?.status))")
        #expect(f.ledger.meta.validators == [id("rtm")] && f.ledger.nodeKeys().count == 1)
    }

    /// Evidence does not suspend the last validator, even with the policy on: it is
    /// recorded, not acted on.
    @Test func evidenceLeavesTheLastValidatorInPlace() throws {
        var f = LedgerFixture.withRules(LedgerRules.validatorKeysKept, upgrade: "keys")
        f.govern(.setEquivocationPolicy(suspend: true))
        f.govern(.setValidators([id("tri")]))
        let evidence = EvidenceTests.evidence(.prepare, signer: LedgerFixture.key("node tri"))
        #expect(f.one(f.partnerTx("rtm", .reportEquivocation(evidence))) == .applied)
        #expect(f.ledger.equivocation(evidence)?.suspended == false && f.ledger.partner(id("tri"))?.status == .active)
        #expect(f.ledger.meta.validators == [id("tri")])
    }

    /// The programmes stop at what the meta record reads back (it was read with a bound
    /// that nothing enforced at creation: the 4,097th programme made a restarted node
    /// refuse its own database).
    @Test func programmesStopAtWhatTheMetaRecordReadsBack() throws {
        var f = LedgerFixture.withRules(LedgerRules.validatorKeysKept, upgrade: "keys")
        let existing = f.ledger.meta.programmes
        f.ledger.meta.programmes = (existing + (existing.count..<LedgerLimits.programmeCountMax).map { id("p\($0)") }).sorted { $0.rawValue < $1.rawValue }
        var programme = try #require(f.ledger.programme(id("recyclage")))
        programme.id = id("one-more")
        #expect(Self.refusal(&f, .createProgramme(programme)) == .invalidAction("at most \(LedgerLimits.programmeCountMax) programmes, open and closed"))
        // The record as written reads back at the bound.
        #expect(try LedgerMeta(wireBytes: f.ledger.meta.wireBytes).programmes.count == LedgerLimits.programmeCountMax)
    }

    /// A state from before rules 5 may hold what they refuse: a node key shared, a validator
    /// without one. Under them, a partner keeping its shared key may still rotate its signing
    /// key; a validator is the last if no other has a node key; evidence blames the validator
    /// holding the key. Messages name what the action itself gets wrong first.
    @Test func aStateFromBeforeRules5IsHandledAsItIs() throws {
        var f = LedgerFixture.withRules(LedgerRules.endpoints, upgrade: "peers")
        let rtm = try #require(f.ledger.partner(id("rtm"))?.nodeKey)
        f.govern(.rotateKeys(id("fonds"), signingKey: Self.signingKey("fonds"), nodeKey: rtm, tlsKeyHash: nil))  // applied under rules 4
        f.govern(.rotateKeys(id("metropole"), signingKey: Self.signingKey("metropole"), nodeKey: rtm, tlsKeyHash: nil))  // and a validator's
        f.govern(.setValidators([id("rtm"), id("tri")]))
        f.govern(.rotateKeys(id("tri"), signingKey: Self.signingKey("tri"), nodeKey: nil, tlsKeyHash: nil))  // a validator without a key
        f.govern(.scheduleUpgrade(ScheduledUpgrade(name: id("keys"), height: f.ledger.height + 6, rules: LedgerRules.validatorKeysKept)))
        while f.ledger.rules(atHeight: f.ledger.height + 1) < LedgerRules.validatorKeysKept { f.run([]) }

        #expect(Self.refusal(&f, .rotateKeys(id("rtm"), signingKey: Self.signingKey("rtm"), nodeKey: rtm, tlsKeyHash: nil)) == nil)
        #expect(Self.refusal(&f, .rotateKeys(id("fonds"), signingKey: Self.signingKey("fonds"), nodeKey: rtm, tlsKeyHash: nil)) == nil)
        #expect(f.ledger.nodeKeys() == [rtm])
        #expect(Self.refusal(&f, .setPartnerStatus(id("rtm"), .suspended)) == .invalidAction("rtm is the last validator: name others first"))
        #expect(Self.refusal(&f, .setValidators([id("rtm"), id("rtm")])) == .invalidAction("a validator is listed twice"))
        #expect(Self.refusal(&f, .setValidators([id("rtm"), id("metropole")])) == .invalidAction("validators rtm and metropole hold the same node key"))
        #expect(Self.refusal(&f, .createProgramme(try #require(f.ledger.programme(id("recyclage"))))) == .invalidAction("programme recyclage exists"))

        f.govern(.setEquivocationPolicy(suspend: true))
        f.govern(.setValidators([id("rtm"), id("friche")]))
        let evidence = EvidenceTests.evidence(.prepare, signer: LedgerFixture.key("node rtm"))
        #expect(f.one(f.partnerTx("tri", .reportEquivocation(evidence))) == .applied)
        #expect(f.ledger.equivocation(evidence).map { ($0.partner, $0.suspended) } ?? (id("none"), false) == (id("rtm"), true))
        #expect(f.ledger.partner(id("fonds"))?.status == .active && f.ledger.meta.validators == [id("friche")])
    }

    /// Before rules 5 the same actions apply, as they did: old blocks replay to the same
    /// state. Here a validator's node key dropped leaves the ledger's list short of the
    /// consensus' set, as it did.
    @Test func beforeRules5TheyApplyAsTheyDid() {
        var f = LedgerFixture.withRules(LedgerRules.endpoints, upgrade: "peers")
        let before = f.ledger.nodeKeys()
        f.govern(.rotateKeys(id("rtm"), signingKey: Self.signingKey("rtm"), nodeKey: nil, tlsKeyHash: nil))
        #expect(f.ledger.nodeKeys() == before.filter { $0 != LedgerFixture.key("node rtm").publicKey })
    }

    /// The same blocks, executed by a fresh ledger, give the same results and roots across
    /// the upgrade to rules 5: a validator's node key dropped before the height (applied),
    /// another's refused at it.
    @Test func replayingAcrossTheUpgradeGivesTheSameRoots() {
        var f = LedgerFixture()
        var recorded = RecordedBlocks()
        func run(_ block: [[UInt8]]) { recorded.run(block, on: &f) }
        let height = f.ledger.height + 8
        let dropped = { (partner: String) in GovernanceAction.rotateKeys(id(partner), signingKey: Self.signingKey(partner), nodeKey: nil, tlsKeyHash: nil) }
        run([f.partnerTx("metropole", .propose(.scheduleUpgrade(ScheduledUpgrade(name: id("keys"), height: height, rules: LedgerRules.validatorKeysKept)), deadline: height + 50))])
        run(["rtm", "tri", "friche"].map { f.partnerTx($0, .vote(proposal: 1, approve: true)) })
        run([f.partnerTx("metropole", .propose(dropped("tri"), deadline: height + 50))])
        run(["rtm", "tri", "friche"].map { f.partnerTx($0, .vote(proposal: 2, approve: true)) })
        #expect(f.ledger.partner(id("tri"))?.nodeKey == nil, "applied under rules 1")
        while f.ledger.height + 1 < height { run([]) }
        run([f.partnerTx("metropole", .propose(dropped("rtm"), deadline: height + 50))])
        #expect(recorded.results.last?.first?.rejection == .invalidAction("validator rtm needs a node key: change the validators without it first"))
        recorded.expectTheSameReplay(on: LedgerFixture())
    }

    /// A genesis whose validators share a node key, or with more programmes than the meta
    /// record reads back, is refused by name.
    @Test func aGenesisIsHeldToTheSame() {
        var shared = LedgerFixture.genesisFile()
        let rtm = shared.partners.firstIndex { $0.id == "rtm" }!, tri = shared.partners.firstIndex { $0.id == "tri" }!
        shared.partners[tri].nodeKey = shared.partners[rtm].nodeKey
        #expect(throws: GenesisError.self) { _ = try shared.validated() }
        do { _ = try shared.validated() } catch { #expect(error.reason.contains("nodeKey is rtm's too"), "\(error)") }
        var many = LedgerFixture.genesisFile()
        many.programmes = Array(repeating: many.programmes[0], count: LedgerLimits.programmeCountMax + 1)
        #expect(throws: GenesisError(field: "programmes", reason: "at most \(LedgerLimits.programmeCountMax)")) { _ = try many.validated() }
    }
}
