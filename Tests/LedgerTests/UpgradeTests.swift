// Scheduled upgrades: the ledger's rules versioned by height. Acceptance by category (rules
// 2) is refused as an unknown action kind below the upgrade's height, exactly as code
// written before it refuses it, and works from the height on; the rules never go back;
// replaying the blocks across the height gives the same roots; a binary implementing
// older rules learns, before the height, which upgrade it lacks.
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct UpgradeTests {
    static let categories = ScheduledUpgrade(name: id("categories"), height: 0, rules: LedgerRules.acceptanceByCategory)

    @Test func anUpgradeChangesTheRulesFromItsHeightOn() {
        var f = LedgerFixture()
        let early = f.one(f.partnerTx("metropole", .propose(.setPartnerCategory(id("friche"), .event), deadline: f.ledger.height + 100)))
        guard case let .malformed(reason) = early.rejection else {
            Issue.record("a rules-2 action before any upgrade: \(early)")
            return
        }
        #expect(reason.contains("action.kind") && reason.contains("10"), "\(reason)")

        var upgrade = Self.categories
        upgrade.height = f.ledger.height + 8
        f.govern(.scheduleUpgrade(upgrade))
        #expect(f.ledger.upgrades.pending(after: f.ledger.height) == [upgrade])
        #expect(f.ledger.rules(atHeight: upgrade.height - 1) == LedgerRules.initial)
        #expect(f.ledger.rules(atHeight: upgrade.height) == LedgerRules.acceptanceByCategory)
        // A binary with rules 1 may execute every block below the height, not the one at it.
        while f.ledger.height + 1 < upgrade.height {
            #expect(f.ledger.upgradeMissing(newest: 1) == nil)
            let stillEarly = f.one(f.partnerTx("metropole", .propose(.setProgrammeAcceptance(id("recyclage"), [.event]), deadline: f.ledger.height + 100)))
            if case .malformed = stillEarly.rejection {} else { Issue.record("accepted at height \(f.ledger.height): \(stillEarly)") }
        }
        #expect(f.ledger.upgradeMissing(newest: 1) == upgrade)
        #expect(f.ledger.upgradeMissing(newest: LedgerRules.newest) == nil)

        // From the height: the waste-sorting rewards (no acceptor listed: anywhere until
        // now) become spendable only at acceptors of the culture category.
        f.run([f.attribute("tri", "recyclage", to: 1, units: 10, evidence: 1)])
        #expect(f.ledger.height >= upgrade.height)
        f.govern(.setPartnerCategory(id("friche"), .event))
        f.govern(.setProgrammeAcceptance(id("recyclage"), [.event]))
        #expect(f.ledger.partnerCategory(id("friche")) == .event)
        #expect(f.ledger.acceptance(id("recyclage")) == [.event])
        #expect(f.one(f.redeem(1, at: "rtm", 10)).rejection == .insufficientFunds(available: 0, asked: 10))
        #expect(f.one(f.redeem(1, at: "metropole", 10)).rejection == .insufficientFunds(available: 0, asked: 10))
        #expect(f.one(f.redeem(1, at: "friche", 10)) == .applied)
        // A programme with acceptors listed also takes its categories' acceptors.
        f.run([f.attribute("rtm", "mobilite", to: 2, units: 20, evidence: 2)])
        #expect(f.one(f.redeem(2, at: "friche", 5)).rejection == .insufficientFunds(available: 0, asked: 5))
        f.govern(.setProgrammeAcceptance(id("mobilite"), [.event]))
        #expect(f.one(f.redeem(2, at: "friche", 5)) == .applied)
        #expect(f.one(f.redeem(2, at: "rtm", 5)) == .applied)
        // No categories: back to the listed acceptors, or anywhere.
        f.govern(.setProgrammeAcceptance(id("recyclage"), []))
        #expect(f.ledger.acceptance(id("recyclage")) == [])
        f.run([f.attribute("tri", "recyclage", to: 3, units: 1, evidence: 3)])  // (the first ones expired meanwhile)
        #expect(f.one(f.redeem(3, at: "rtm", 10)) == .applied)
        f.govern(.setPartnerCategory(id("friche"), nil))
        #expect(f.ledger.partnerCategory(id("friche")) == nil)
    }

    @Test func upgradesAreAboveTheHeightAndTheRulesNeverGoBack() {
        var f = LedgerFixture()
        func refused(_ upgrade: ScheduledUpgrade) -> String? {
            if case let .invalidAction(reason) = f.one(f.partnerTx("metropole", .propose(.scheduleUpgrade(upgrade), deadline: f.ledger.height + 100))).rejection {
                return reason
            }
            return nil
        }
        let now = f.ledger.height
        #expect(refused(ScheduledUpgrade(name: id("late"), height: now + 1, rules: 2))?.contains("is not above the current height") == true)
        let far = f.one(f.partnerTx("metropole", .propose(.scheduleUpgrade(ScheduledUpgrade(name: id("far"), height: f.ledger.height + 2 + LedgerLimits.blockSpanMax, rules: 2)), deadline: f.ledger.height + 100)))
        #expect(far.rejection == .invalidAction("upgrade height more than \(LedgerLimits.blockSpanMax) blocks ahead"), "\(far)")
        #expect(refused(ScheduledUpgrade(name: id("zero"), height: now + 50, rules: 0))?.contains("start at 1") == true)
        let three = ScheduledUpgrade(name: id("three"), height: now + 40, rules: 3)
        f.govern(.scheduleUpgrade(three))
        #expect(refused(ScheduledUpgrade(name: id("back"), height: now + 60, rules: 2))?.contains("would go back from rules 3") == true)
        #expect(refused(ScheduledUpgrade(name: id("four"), height: now + 30, rules: 4))?.contains("upgrade three at height") == true)
        // Moved (same name, not reached): one entry, the new height.
        let moved = ScheduledUpgrade(name: id("three"), height: now + 45, rules: 3)
        f.govern(.scheduleUpgrade(moved))
        #expect(f.ledger.upgrades.upgrades == [moved])
        while f.ledger.height < moved.height { f.run([]) }
        #expect(refused(ScheduledUpgrade(name: id("three"), height: f.ledger.height + 10, rules: 3))?.contains("took effect at height") == true)
        #expect(f.ledger.upgradeMissing(newest: 2) == moved, "in force: a rules-2 binary stops")
        #expect(f.ledger.upgradeMissing(newest: 3) == nil)
        #expect(UpgradeSchedule([moved]).missing(atHeight: moved.height - 1, newest: 2) == nil)
    }

    /// The same blocks, executed by a fresh ledger, give the same results and roots at
    /// every height: before, at and after the upgrade, including the rules-2 transaction
    /// refused before the height.
    @Test func replayingAcrossTheUpgradeGivesTheSameRoots() {
        var f = LedgerFixture()
        var recorded = RecordedBlocks()
        func run(_ block: [[UInt8]]) { recorded.run(block, on: &f) }
        let height = f.ledger.height + 6
        run([f.partnerTx("metropole", .propose(.scheduleUpgrade(ScheduledUpgrade(name: id("categories"), height: height, rules: 2)), deadline: height + 50))])
        run(["rtm", "tri", "friche"].map { f.partnerTx($0, .vote(proposal: 1, approve: true)) })
        run([f.partnerTx("metropole", .propose(.setPartnerCategory(id("friche"), .event), deadline: height + 50))])  // refused: rules 1
        while f.ledger.height + 1 < height { run([]) }
        run([f.partnerTx("metropole", .propose(.setPartnerCategory(id("friche"), .event), deadline: height + 50))])  // at the height: proposal 2
        run(["rtm", "tri", "friche"].map { f.partnerTx($0, .vote(proposal: 2, approve: true)) })
        #expect(f.ledger.partnerCategory(id("friche")) == .event)
        #expect(recorded.results[2][0].rejection.map { if case .malformed = $0 { true } else { false } } == true)
        recorded.expectTheSameReplay(on: LedgerFixture())
    }

    @Test func theActionsRoundTripAndOlderReadersRefuseTheNewKinds() throws {
        let actions: [GovernanceAction] = [
            .scheduleUpgrade(ScheduledUpgrade(name: id("categories"), height: UInt64.max, rules: UInt32.max)),
            .setPartnerCategory(id("friche"), .event), .setPartnerCategory(id("friche"), nil),
            .setProgrammeAcceptance(id("culture"), [.transit, .event]), .setProgrammeAcceptance(id("culture"), []),
        ]
        for action in actions {
            #expect(try GovernanceAction(wireBytes: action.wireBytes) == action)
            let older = Result { try GovernanceAction(wireBytes: action.wireBytes, formatVersion: LedgerRules.initial) }
            if action.rulesIntroduced > LedgerRules.initial {
                #expect(throws: WireError.self) { try older.get() }
            } else {
                #expect(try older.get() == action)
            }
        }
        // Categories out of order, twice, or unknown are not canonical.
        for bytes: [UInt8] in [[0, 0, 0, 2, 4, 1], [0, 0, 0, 2, 3, 3], [0, 0, 0, 1, 9], [0, 0, 0, 6, 1, 2, 3, 4, 5, 1]] {
            #expect(throws: WireError.self) { try CategoryList(wireBytes: bytes) }
        }
        let unsorted = UpgradeSchedule([ScheduledUpgrade(name: id("b"), height: 2, rules: 2), ScheduledUpgrade(name: id("a"), height: 1, rules: 2)])
        var writer = WireWriter()
        writer.writeArray(unsorted.upgrades.reversed())
        #expect(throws: WireError.self) { try UpgradeSchedule(wireBytes: writer.bytes) }
        #expect(try UpgradeSchedule(wireBytes: unsorted.wireBytes) == unsorted)
    }
}
