// Equivocation evidence as a transaction (ledger rules 3): a partner reports a validator's
// two conflicting signed statements; the ledger checks both signatures under the node key
// a partner holds, records it once per slot, and suspends the partner when governance's
// policy says so (which changes the validator set). Refused before rules 3 as an unknown
// kind, and when it does not hold.
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct EvidenceTests {
    /// Two statements of `kind` for one view and height, signed by `signer`.
    static func evidence(
        _ kind: EquivocationEvidence.Kind, view: UInt64 = 2, seq: UInt64 = 7, signer: Ed25519PrivateKey, nodeKey: Ed25519PublicKey? = nil
    ) -> EquivocationEvidence {
        let counts: (UInt32, UInt32) = kind == .proposal ? (3, 4) : (0, 0)
        let draft = EquivocationEvidence(
            nodeKey: nodeKey ?? signer.publicKey, kind: kind, view: view, seq: seq,
            .init(hash: SHA256.hash("block a"), commandCount: counts.0, signature: Ed25519Signature(Bytes64.zero)),
            .init(hash: SHA256.hash("block b"), commandCount: counts.1, signature: Ed25519Signature(Bytes64.zero)))!
        func signed(_ statement: EquivocationEvidence.Statement) -> EquivocationEvidence.Statement {
            let digest = draft.signedDigest(statement, chainId: LedgerFixture.chainId)!
            return .init(hash: statement.hash, commandCount: statement.commandCount, signature: signer.signature(for: digest.bytes))
        }
        return EquivocationEvidence(nodeKey: draft.nodeKey, kind: kind, view: view, seq: seq, signed(draft.first), signed(draft.second))!
    }

    @Test func evidenceIsCheckedRecordedOncePerSlotAndActedOnByPolicy() {
        var f = LedgerFixture(epochLength: 1_000)
        let tri = LedgerFixture.key("node tri")
        let early = f.one(f.partnerTx("metropole", .reportEquivocation(Self.evidence(.prepare, signer: tri))))
        guard case let .malformed(reason) = early.rejection, reason.contains("body.kind") else {
            Issue.record("evidence before rules 3: \(early)")
            return
        }
        f = LedgerFixture.withRules(LedgerRules.evidence, upgrade: "evidence")
        let prepare = Self.evidence(.prepare, signer: tri)
        #expect(f.one(f.partnerTx("metropole", .reportEquivocation(prepare))) == .applied)
        let record = f.ledger.equivocation(prepare)
        #expect(record?.partner == id("tri") && record?.reporter == id("metropole") && record?.suspended == false)
        #expect(f.ledger.equivocationTally(id("tri")) == EquivocationTally(count: 1, lastHeight: f.ledger.height))
        #expect(f.ledger.partner(id("tri"))?.status == .active, "no policy: partners decide")
        #expect(f.one(f.partnerTx("rtm", .reportEquivocation(prepare))).rejection == .evidenceKnown)

        // Signed by another key, or a key no partner holds: refused with the reason.
        let forged = Self.evidence(.commit, signer: LedgerFixture.key("node rtm"), nodeKey: tri.publicKey)
        #expect(f.one(f.partnerTx("rtm", .reportEquivocation(forged))).rejection
            == .invalidEvidence("a signature does not verify under node key \(tri.publicKey.bytes.hex)"))
        let stranger = LedgerFixture.key("a key nobody holds")
        #expect(f.one(f.partnerTx("rtm", .reportEquivocation(Self.evidence(.commit, signer: stranger)))).rejection
            == .invalidEvidence("no partner holds node key \(stranger.publicKey.bytes.hex)"))
        // A citizen cannot report.
        #expect(f.one(f.citizenTx(1, .reportEquivocation(Self.evidence(.commit, signer: tri)))).rejection
            == .malformed("this transaction must be signed by a partner"))

        // With the policy on, a proposal equivocation suspends the partner and its node
        // leaves the validator set.
        f.govern(.setEquivocationPolicy(suspend: true))
        #expect(f.ledger.suspendsEquivocators)
        let before = f.ledger.nodeKeys()
        let proposal = Self.evidence(.proposal, view: 3, seq: 9, signer: tri)
        let outcome = f.ledger.execute([f.partnerTx("friche", .reportEquivocation(proposal))])
        #expect(outcome.results == [.applied])
        #expect(f.ledger.partner(id("tri"))?.status == .suspended && f.ledger.equivocation(proposal)?.suspended == true)
        #expect(outcome.validators == before.filter { $0 != tri.publicKey })
        #expect(f.ledger.equivocationTally(id("tri"))?.count == 2)
    }

    @Test func evidenceHasOneEncodingAndNamesTwoBlocks() throws {
        let tri = LedgerFixture.key("node tri")
        for kind in EquivocationEvidence.Kind.allCases {
            let evidence = Self.evidence(kind, signer: tri)
            #expect(try EquivocationEvidence(wireBytes: evidence.wireBytes) == evidence)
            // The statements swapped: not canonical.
            var writer = WireWriter()
            writer.write(evidence.nodeKey)
            writer.write(kind.rawValue)
            writer.write(evidence.view)
            writer.write(evidence.seq)
            for statement in [evidence.second, evidence.first] {
                writer.write(statement.hash)
                writer.write(statement.commandCount)
                writer.write(statement.signature)
            }
            #expect(throws: WireError.self) { try EquivocationEvidence(wireBytes: writer.bytes) }
            #expect(throws: WireError.self) { try TransactionBody(wireBytes: TransactionBody.reportEquivocation(evidence).wireBytes, formatVersion: 2) }
        }
        // The same block twice is no conflict; a vote carries no command count.
        let same = EquivocationEvidence.Statement(hash: SHA256.hash("a"), signature: Ed25519Signature(Bytes64.zero))
        #expect(EquivocationEvidence(nodeKey: tri.publicKey, kind: .commit, view: 1, seq: 1, same, same) == nil)
        let counted = EquivocationEvidence.Statement(hash: SHA256.hash("b"), commandCount: 1, signature: Ed25519Signature(Bytes64.zero))
        #expect(EquivocationEvidence(nodeKey: tri.publicKey, kind: .prepare, view: 1, seq: 1, same, counted) == nil)
    }
}
