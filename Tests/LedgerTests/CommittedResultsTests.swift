// Each block's results in the certified state (ledger rules 7): the committed form of every
// rejection reason, the record a block writes, and the rules under which it does.
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct CommittedResultsTests {
    /// One of each reason, with figures no two reasons share.
    static let everyReason: [LedgerRejection] = [
        .malformed("over 4096 bytes"), .wrongChain("other"), .expired(expiryHeight: 3, height: 4), .expiryTooFar(expiryHeight: 900, heightMax: 800),
        .nonceUsed(UInt64.max), .unknownPartner(id("ghost")), .partnerNotActive(id("tram"), .suspended), .badSignature,
        .missingRole(id("tram"), needs: "issuer"), .unknownProgramme(id("nope")), .programmeClosed(id("tri")),
        .programmeNotOpen(id("tri"), height: 1 << 63), .issuerNotAllowed(id("tram"), programme: id("tri")), .zeroAmount, .amountTooLarge,
        .capExceeded(cap: 10, used: 9, asked: 2), .walletCeilingExceeded(ceiling: 100, held: 99, asked: 5),
        .budgetExceeded(budget: UInt64.max, issued: UInt64.max - 1, asked: 2), .evidenceUsed, .insufficientFunds(available: 5, asked: 7),
        .notTransferable(id("tri")), .selfTransfer, .tooManyLots, .unknownProposal(12), .proposalClosed(13),
        .deadlinePassed(deadline: 20, height: 21), .deadlineTooFar(deadline: 5_000, heightMax: 4_000), .alreadyVoted(14),
        .invalidAction("no such partner"), .invalidEvidence("two votes agree"), .evidenceKnown, .invalidEndpoints("port 0"),
        .proposalsPerDayExceeded(max: 8, nextDayHeight: 1_440),
    ]

    /// The reason with its free text emptied: what its committed form says.
    static func withoutText(_ rejection: LedgerRejection) -> LedgerRejection {
        switch rejection {
        case .malformed: return .malformed("")
        case .wrongChain: return .wrongChain("")
        case .invalidAction: return .invalidAction("")
        case .invalidEvidence: return .invalidEvidence("")
        case .invalidEndpoints: return .invalidEndpoints("")
        default: return rejection
        }
    }

    @Test func everyReasonHasACodeOfItsOwnAndReadsBackWithoutItsText() {
        #expect(Set(Self.everyReason.map(\.code)) == Set(1...33), "one reason per code, every code used")
        for rejection in Self.everyReason {
            let committed = CommittedResults.bytes(.rejected(rejection))
            #expect(committed.first == 1 && committed[1] == rejection.code)
            #expect(CommittedResults.result(committed) == .rejected(Self.withoutText(rejection)), "\(rejection)")
            // The node's wording names it; another reason's does not.
            #expect(rejection.isNamed(by: "\(rejection)"))
            #expect(Self.withoutText(rejection).isNamed(by: "\(rejection)"), "\(rejection): the text is not committed")
            for other in Self.everyReason where other.code != rejection.code {
                #expect(!Self.withoutText(rejection).isNamed(by: "\(other)"), "\(rejection) read as \(other)")
            }
        }
        // Figures are committed, a role's name too: another figure is another result.
        #expect(CommittedResults.bytes(.rejected(.insufficientFunds(available: 5, asked: 7)))
                != CommittedResults.bytes(.rejected(.insufficientFunds(available: 5, asked: 8))))
        #expect(CommittedResults.bytes(.rejected(.missingRole(id("tram"), needs: "issuer")))
                != CommittedResults.bytes(.rejected(.missingRole(id("tram"), needs: "acceptor"))))
        // The text is not: two wordings of one malformed transaction commit the same bytes.
        #expect(CommittedResults.bytes(.rejected(.malformed("a"))) == CommittedResults.bytes(.rejected(.malformed("b"))))
    }

    /// The exact bytes (a vector for clients in other languages): the code, then the figures
    /// big-endian, identifiers as the wire writes them.
    @Test func theCommittedBytesAreTheCodeThenTheFigures() {
        #expect(CommittedResults.bytes(.applied) == [0])
        #expect(CommittedResults.bytes(.rejected(.badSignature)) == [1, 8])
        #expect(CommittedResults.bytes(.rejected(.insufficientFunds(available: 5, asked: 7))) == [1, 20, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7])
        #expect(CommittedResults.bytes(.rejected(.unknownPartner(id("ab")))) == [1, 6, 0, 0, 0, 2, 0x61, 0x62])
        #expect(CommittedResults.bytes(.rejected(.missingRole(id("ab"), needs: "issuer"))) == [1, 9, 0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 6] + Array("issuer".utf8))
        #expect(CommittedResults.leaf([0]) == TaggedHasher(tag: "calisson/result/v1").hash([0]))
    }

    @Test func bytesThatAreNoResultAreRefused() {
        for bytes: [UInt8] in [[], [0, 0], [2], [1], [1, 0], [1, 34], [1, 255], [1, 8, 0], [1, 20, 0, 0], [1, 7] + id("tram").wireBytes + [9]] {
            #expect(CommittedResults.result(bytes) == nil, "\(bytes)")
        }
    }

    /// Under rules 7 a block with transactions writes its results' count and root; an empty
    /// block writes nothing; under older rules no block does.
    @Test func aBlockCommitsItsResultsFromRules7On() throws {
        var file = LedgerFixture.genesisFile()
        file.rules = LedgerRules.resultsCommitted
        var f = LedgerFixture(genesis: try file.validated())
        let applied = f.attribute("tri", "recyclage", to: 1, units: 3, evidence: 1)
        let reused = f.attribute("tri", "recyclage", to: 2, units: 3, evidence: 1)
        let results = f.run([applied, reused, [0xFF]])
        #expect(results[0] == .applied && results[1] == .rejected(.evidenceUsed))
        let height = f.ledger.height
        let record = try #require(f.ledger.store.value(StateKeys.blockResults(height)).map { try BlockResults(wireBytes: $0) })
        let leaves = results.map { CommittedResults.leaf(CommittedResults.bytes($0)) }
        #expect(record == BlockResults(count: 3, root: MerkleTree.root(of: leaves)))
        #expect(record == CommittedResults.record(results))
        // Each result's proof at its position leads to the root.
        let tree = MerkleTree(leaves: leaves)
        for position in 0..<3 {
            let proof = try #require(tree.proof(at: position))
            #expect(throws: Never.self) { try proof.verify(leaf: leaves[position], root: record.root) }
            if position != 0 { #expect(throws: MerkleError.self) { try proof.verify(leaf: CommittedResults.leaf([0]), root: record.root) } }
        }
        f.run([])
        #expect(f.ledger.store.value(StateKeys.blockResults(f.ledger.height)) == nil, "an empty block commits nothing")

        var old = LedgerFixture()
        old.run([old.attribute("tri", "recyclage", to: 1, units: 3, evidence: 1)])
        #expect(old.ledger.store.value(StateKeys.blockResults(old.ledger.height)) == nil, "rules \(old.ledger.rules(atHeight: old.ledger.height))")
    }

    /// Under rules 8 a block that decides proposals, closes an epoch or opens proposals
    /// writes which; a block with none of these writes nothing; under rules 7 no block does.
    @Test func aBlockCommitsItsDecisionsAndEpochCloseFromRules8On() throws {
        func events(_ f: LedgerFixture) throws -> BlockEvents? {
            try f.ledger.store.value(StateKeys.blockEvents(f.ledger.height)).map { try BlockEvents(wireBytes: $0) }
        }
        for rules in [LedgerRules.resultsCommitted, LedgerRules.eventsCommitted] {
            var file = LedgerFixture.genesisFile(epochLength: 10)
            file.rules = rules
            var f = LedgerFixture(genesis: try file.validated())
            var parameters = f.ledger.parameters
            parameters.tokenValueMicroEuros = 25_000
            #expect(f.one(f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: f.ledger.height + 100))) == .applied)
            let opening = try events(f)
            parameters.tokenValueMicroEuros = 30_000
            // Two openings in one block, a rejected proposal between them (the same fields, another number).
            let proposals = f.run([
                f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: f.ledger.height + 100)),
                f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: 0)),
                f.partnerTx("metropole", .propose(.setParameters(parameters), deadline: f.ledger.height + 100)),
            ])
            #expect(proposals[0] == .applied && proposals[1] != .applied && proposals[2] == .applied, "\(proposals)")
            let openings = try events(f)
            #expect(f.run(["rtm", "tri"].map { f.partnerTx($0, .vote(proposal: 2, approve: true)) } + [f.partnerTx("tri", .vote(proposal: 1, approve: true))])
                    == [.applied, .applied, .applied])
            #expect(try events(f) == nil, "votes that decide nothing")
            // Two decisions in one block, in the order the block made them.
            let votes = [f.partnerTx("friche", .vote(proposal: 2, approve: true)), f.partnerTx("rtm", .vote(proposal: 1, approve: true)), f.partnerTx("friche", .vote(proposal: 1, approve: true))]
            #expect(f.run(votes) == [.applied, .applied, .applied])
            let decided = try events(f)
            let closing = f.ledger.meta.epoch
            f.closeEpoch()
            let closed = try events(f)
            f.run([])
            let quiet = try events(f)
            if rules >= LedgerRules.eventsCommitted {
                #expect(opening == BlockEvents(decided: [], closedEpoch: nil, opened: [OpenedProposal(position: 0, proposal: 1)]), "\(String(describing: opening))")
                #expect(openings == BlockEvents(decided: [], closedEpoch: nil, opened: [OpenedProposal(position: 0, proposal: 2), OpenedProposal(position: 2, proposal: 3)]),
                        "\(String(describing: openings))")
                #expect(decided == BlockEvents(decided: [2, 1], closedEpoch: nil, opened: []) && closed == BlockEvents(decided: [], closedEpoch: closing, opened: [])
                        && quiet == nil, "\(String(describing: decided)) \(String(describing: closed)) \(String(describing: quiet))")
                let record = BlockEvents(decided: [2, 1], closedEpoch: 7, opened: [OpenedProposal(position: 4, proposal: 9)])
                #expect(try BlockEvents(wireBytes: record.wireBytes) == record)
                // The form Docs/LEDGER.md gives, byte for byte: the state commits it, so
                // another encoding would fork the chain.
                #expect(Hex.encode(record.wireBytes) == "00000002" + "0000000000000002" + "0000000000000001" + "01" + "0000000000000007"
                    + "00000001" + "0000000000000004" + "0000000000000009")
                #expect(throws: WireError.self) { try BlockEvents(wireBytes: Array(record.wireBytes.dropLast())) }
            } else {
                #expect(opening == nil && openings == nil && decided == nil && closed == nil, "rules \(rules)")
            }
        }
    }
}
