// The epoch report each close writes into the state: every figure on a small history,
// the running figures surviving a restart mid-epoch, and the reports of random histories
// summing to the ledger's supply totals.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct EpochReportTests {
    func figures(_ report: EpochReport, _ programme: String) -> EpochReport.ProgrammeFigures? {
        report.programmes.first { $0.programme == id(programme) }
    }

    @Test func eachFigureCountsWhatTheEpochDid() throws {
        var f = LedgerFixture(epochLength: 10)
        let results = f.run([
            f.attribute("tri", "recyclage", to: 1, units: 3, evidence: 1),  // 30 tokens
            f.attribute("rtm", "mobilite", to: 2, units: 4, evidence: 2),  // 20 tokens
            f.attribute("tri", "recyclage", to: 1, units: 0, evidence: 3),  // refused: counts nowhere
            f.attribute("friche", "culture", to: 3, units: 1, evidence: 4),  // 100 tokens, demurrage
        ])
        #expect(results.filter { $0 == .applied }.count == 3)
        f.run([
            f.redeem(1, at: "rtm", 25),  // recyclage (Métropole's) spent at rtm: an obligation
            f.redeem(2, at: "rtm", 10),  // mobilite spent at its own sponsor
            f.redeem(2, at: "rtm", 1_000),  // refused: not enough
        ])
        #expect(f.ledger.epochReport(0) == nil, "no report before the close")
        f.closeEpoch()

        let report = try #require(f.ledger.epochReport(0))
        #expect(report.epoch == 0 && report.firstHeight == 1 && report.lastHeight == 10)
        #expect(report.programmes.map(\.programme) == [id("culture"), id("mobilite"), id("recyclage")])
        let recyclage = try #require(figures(report, "recyclage"))
        #expect(recyclage.category == .wasteSorting)
        #expect(recyclage.figures.attributions == 1 && recyclage.figures.units == 3)
        #expect(recyclage.figures.issued == 30 && recyclage.figures.redeemed == 25)
        #expect(recyclage.figures.expired == 0 && recyclage.figures.sunk == 0)
        #expect(recyclage.budgetLeft == 100_000 - 30)
        let mobilite = try #require(figures(report, "mobilite"))
        #expect(mobilite.figures.attributions == 1 && mobilite.figures.units == 4 && mobilite.figures.issued == 20)
        #expect(mobilite.figures.redeemed == 10 && mobilite.budgetLeft == 20_000 - 20)
        #expect(try #require(figures(report, "culture")).figures.issued == 100)
        #expect(report.categories.map(\.category) == [.transit, .wasteSorting, .event])
        #expect(report.categories.first { $0.category == .transit }?.figures == mobilite.figures)
        #expect(report.acceptors == [.init(acceptor: id("rtm"), redemptions: 2, amount: 35)])
        let nets = Dictionary(uniqueKeysWithValues: report.nets.map { ($0.partner, $0.net) })
        #expect(nets[id("metropole")] == -25 && nets[id("rtm")] == 25 && nets[id("tri")] == 0)
        #expect(report.nets.count == f.ledger.partnerIDs.count)
        for net in report.nets { #expect(f.ledger.statement(epoch: 0, partner: net.partner)?.net == net.net) }
        #expect(report.totals == f.ledger.meta.totals)
        #expect(report.tokenValueMicroEuros == f.ledger.parameters.tokenValueMicroEuros)

        // Epoch 1: recyclage's tokens (one epoch of life) expire at its close.
        f.closeEpoch()
        let second = try #require(f.ledger.epochReport(1))
        #expect(try #require(figures(second, "recyclage")).figures.expired == 5)
        #expect(try #require(figures(second, "recyclage")).figures.issued == 0)
        #expect(second.acceptors.isEmpty)

        // Epoch 2: the culture lot melts when its holder next spends; the melt counts as
        // sunk in the epoch it is realized, and the redemption at its sponsor too.
        #expect(f.one(f.redeem(3, at: "friche", 1)) == .applied)
        f.closeEpoch()
        let third = try #require(f.ledger.epochReport(2))
        let melted = 100 - Lot.afterDemurrage(100, basisPoints: 200, fromEpoch: 0, to: 2)
        #expect(melted > 0)
        #expect(try #require(figures(third, "culture")).figures.sunk == melted)
        #expect(try #require(figures(third, "culture")).figures.redeemed == 1)
        #expect(third.acceptors == [.init(acceptor: id("friche"), redemptions: 1, amount: 1)])
        #expect(try EpochReport(wireBytes: third.wireBytes) == third)
    }

    /// The running figures are state, not memory: a ledger reopened over the store
    /// mid-epoch writes the same report, and the same root, as one that never stopped.
    @Test func aRestartMidEpochLosesNoFigure() throws {
        var steady = LedgerFixture(epochLength: 6)
        var restarted = LedgerFixture(epochLength: 6)
        for round in 0..<6 {
            let evidence = round * 10
            let block = [
                steady.attribute("tri", "recyclage", to: round % 3, units: 2, evidence: evidence),
                steady.attribute("rtm", "mobilite", to: 5, units: 1, evidence: evidence + 1),
                steady.redeem(round % 3, at: "friche", 5),
            ]
            steady.run(block)
            restarted.run(block)
            if round == 2 { restarted.ledger = try Ledger(chainId: LedgerFixture.chainId, store: restarted.ledger.store) }
        }
        let report = try #require(steady.ledger.epochReport(0))
        #expect(restarted.ledger.epochReport(0) == report)
        #expect(restarted.ledger.stateRoot == steady.ledger.stateRoot)
        #expect(try #require(figures(report, "recyclage")).figures.attributions == 6)
        #expect(report.acceptors.first?.redemptions == 6)
        // After the close the running record is gone from the state.
        #expect(steady.ledger.store.value(StateKeys.epochActivity) == nil)
    }

    /// The token value a report carries is the one in force at its close: a later vote
    /// changes the next epochs' rate, never a closed epoch's.
    @Test func aReportKeepsTheTokenValueInForceAtItsClose() throws {
        var f = LedgerFixture(epochLength: 10)
        var parameters = f.ledger.parameters
        parameters.tokenValueMicroEuros = 25_000
        #expect(f.one(f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: f.ledger.height + 100))) == .applied)
        for voter in ["rtm", "tri", "friche"] { #expect(f.one(f.partnerTx(voter, .vote(proposal: 1, approve: true))) == .applied) }
        #expect(f.ledger.parameters.tokenValueMicroEuros == 25_000)
        f.closeEpoch()
        #expect(try #require(f.ledger.epochReport(0)).tokenValueMicroEuros == 25_000)
        parameters.tokenValueMicroEuros = 30_000
        #expect(f.one(f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: f.ledger.height + 100))) == .applied)
        for voter in ["rtm", "tri", "friche"] { #expect(f.one(f.partnerTx(voter, .vote(proposal: 2, approve: true))) == .applied) }
        f.closeEpoch()
        #expect(try #require(f.ledger.epochReport(0)).tokenValueMicroEuros == 25_000)
        #expect(try #require(f.ledger.epochReport(1)).tokenValueMicroEuros == 30_000)
    }

    @Test func malformedReportsAreRefused() throws {
        var f = LedgerFixture(epochLength: 3)
        f.run([f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 1)])
        f.closeEpoch()
        let bytes = try #require(f.ledger.epochReport(0)).wireBytes
        #expect(throws: WireError.self) { _ = try EpochReport(wireBytes: Array(bytes.dropLast())) }
        #expect(throws: WireError.self) { _ = try EpochReport(wireBytes: bytes + [0]) }
        #expect(throws: WireError.self) { _ = try EpochReport(wireBytes: []) }
    }
}

extension LedgerPropertyTests {
    /// Over every closed epoch: the reports' figures sum to the ledger's totals at the
    /// last close, each report's totals are the previous ones plus its figures, the
    /// acceptors' redemptions sum to what was redeemed, and the nets to zero.
    func checkReports(_ ledger: Ledger<MemoryStateStore>) {
        var sum = Programme.Totals()
        var byProgramme: [Identifier: Programme.Totals] = [:]
        for epoch in 0..<ledger.meta.epoch {
            guard let report = ledger.epochReport(epoch) else {
                Issue.record("no report for epoch \(epoch)")
                return
            }
            var figures = EpochReport.Figures()
            for programme in report.programmes {
                figures.add(programme.figures)
                byProgramme[programme.programme, default: .init()].issued += programme.figures.issued
                byProgramme[programme.programme, default: .init()].redeemed += programme.figures.redeemed
                byProgramme[programme.programme, default: .init()].expired += programme.figures.expired
                byProgramme[programme.programme, default: .init()].sunk += programme.figures.sunk
            }
            var byCategory = EpochReport.Figures()
            for category in report.categories { byCategory.add(category.figures) }
            #expect(byCategory == figures, "categories of epoch \(epoch)")
            #expect(report.acceptors.reduce(0) { $0 + $1.amount } == figures.redeemed, "acceptors of epoch \(epoch)")
            #expect(report.nets.reduce(0) { $0 + $1.net } == 0, "nets of epoch \(epoch)")
            sum.issued += figures.issued
            sum.redeemed += figures.redeemed
            sum.expired += figures.expired
            sum.sunk += figures.sunk
            #expect(report.totals == sum, "running totals at the close of epoch \(epoch)")
        }
        // Every programme's totals at the last close are the sum of its epochs.
        guard ledger.meta.epoch > 0, ledger.meta.epochStartHeight == ledger.height + 1 else { return }
        #expect(sum == ledger.meta.totals)
        for id in ledger.meta.programmes {
            guard let programme = ledger.programme(id) else { continue }
            #expect(byProgramme[id] ?? .init() == programme.totals, "\(id)")
        }
    }
}
