// Numbers from outside cannot trap the ledger (issue 16, item 2): a genesis or a
// governance vote that sets a lifetime or span past `LedgerLimits.blockSpanMax` is
// refused naming the parameter; at the largest allowed values, and with expiry heights
// and deadlines up to UInt64.max, transactions are answered, never a trap.
import CalissonTestKit
import Foundation
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct OutsideNumberTests {
    /// Demurrage over any number of epochs ends once a close melts nothing (an account
    /// dormant for 2^64 − 1 epochs, as epochs of one block allow, looped once per epoch),
    /// with what a close-by-close count gives.
    @Test(.timeLimit(.minutes(1))) func demurrageOverAnyNumberOfEpochsEndsWhenNothingMelts() {
        func closeByClose(_ amount: Amount, _ rate: UInt16, _ epochs: UInt64) -> Amount {
            var left = amount
            for _ in 0..<epochs { left -= left * Amount(rate) / 10_000 }
            return left
        }
        for (amount, rate, epochs) in [(Amount(100), UInt16(200), UInt64(2)), (1_000_000, 1, 200_000), (123_456_789, 9_999, 5), (10_000, 0, 50), (9_999, 1, 7)] {
            #expect(Lot.afterDemurrage(amount, basisPoints: rate, fromEpoch: 3, to: 3 + epochs) == closeByClose(amount, rate, epochs), "\(amount) at \(rate)")
        }
        let largest: Amount = (1 << 56) - 1
        for rate: UInt16 in [0, 1, 7, 10_000] {
            let left = Lot.afterDemurrage(largest, basisPoints: rate, fromEpoch: 0, to: UInt64.max)
            #expect(left * Amount(rate) < 10_000, "\(left) left at \(rate) basis points: a close would still melt some")
        }
    }

    @Test func genesisSpansPastTheBoundAreRefusedByName() {
        for change in [
            { (file: inout GenesisFile) in file.parameters.transactionLifetimeMax = UInt64.max },
            { $0.parameters.proposalLifetimeMax = UInt64.max },
            { $0.parameters.epochLength = 1 << 63 },
            { $0.parameters.blocksPerDay = LedgerLimits.blockSpanMax + 1 },
        ] {
            var file = LedgerFixture.genesisFile()
            change(&file)
            #expect(throws: GenesisError.self) { _ = try file.validated() }
            do { _ = try file.validated() } catch {
                #expect(error.field == "parameters" && error.reason.contains("blocks (it is"), "\(error)")
            }
        }
    }

    @Test func theLargestSpansAndHeightsExecuteWithoutTrapping() throws {
        var file = LedgerFixture.genesisFile()
        file.parameters.transactionLifetimeMax = LedgerLimits.blockSpanMax
        file.parameters.proposalLifetimeMax = LedgerLimits.blockSpanMax
        file.parameters.blocksPerDay = LedgerLimits.blockSpanMax
        var f = LedgerFixture(genesis: try file.validated())
        // An attribution with the farthest expiry is refused for it; one within the span is applied.
        let heightMax = f.ledger.height + 1 + LedgerLimits.blockSpanMax
        #expect(f.one(f.partnerTx("tri", .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(1).publicKey, units: 1,
                                                    evidence: LedgerFixture.evidence(1)), expiry: UInt64.max)).rejection
                == .expiryTooFar(expiryHeight: UInt64.max, heightMax: heightMax))
        #expect(f.one(f.partnerTx("tri", .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(1).publicKey, units: 1,
                                                    evidence: LedgerFixture.evidence(2)), expiry: LedgerLimits.blockSpanMax)) == .applied)
        // A proposal with the farthest deadline is refused for it.
        let rejection = f.one(f.partnerTx("metropole", .propose(.closeProgramme(id("culture")), deadline: UInt64.max))).rejection
        guard case .deadlineTooFar? = rejection else {
            Issue.record("\(String(describing: rejection))")
            return
        }
    }

    @Test func aVoteCannotSetASpanPastTheBound() {
        var f = LedgerFixture()
        for change in [
            { (parameters: inout Parameters) in parameters.transactionLifetimeMax = UInt64.max },
            { $0.proposalLifetimeMax = 1 << 63 },
            { $0.epochLength = UInt64.max },
            { $0.blocksPerDay = UInt64.max },
        ] {
            var parameters = f.ledger.parameters
            change(&parameters)
            let rejection = f.one(f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: f.ledger.height + 100))).rejection
            // Refused when the transaction is decoded (the parameters' wire form checks them),
            // or, were it to get that far, as an invalid action: never applied.
            #expect("\(String(describing: rejection))".contains("must be from 1 to \(LedgerLimits.blockSpanMax)"), "\(String(describing: rejection))")
        }
        // The ledger goes on.
        #expect(f.one(f.attribute("tri", "recyclage", to: 1, units: 1, evidence: 9)) == .applied)
    }
}
