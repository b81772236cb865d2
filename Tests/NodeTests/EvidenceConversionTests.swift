// The evidence a node logs for two conflicting statements of one validator is what the
// ledger checks: rebuilt from the consensus messages, each signature covers, in the
// ledger's reconstruction, exactly the digest the consensus signed (proposals and votes),
// and a ledger with rules 3 records it.
import CalissonCrypto
import Consensus
import Ledger
import Node
import NodeCore
import Testing

@Suite(.onOwnThreads) struct EvidenceConversionTests {
    static let chainId = "calisson-evidence"

    @Test func theLedgersDigestsAreTheConsensusOnes() throws {
        let key = Ed25519PrivateKey(seed: SHA256.hash("an equivocating validator").bytes)!
        let signer = NodeSigner(key: key)
        let a = Block(seq: 12, commands: [[1, 2, 3], [4]])
        let b = Block(seq: 12, commands: [[1, 2, 3], [4], [5, 6]])
        let proposals = Equivocation(
            first: .prePrepare(Signed(PrePrepare(view: 3, block: a), chainId: Self.chainId, signer: signer)),
            second: .prePrepare(Signed(PrePrepare(view: 3, block: b), chainId: Self.chainId, signer: signer)))
        let votes = Equivocation(
            first: .vote(Signed(Vote(kind: .commit, view: 3, seq: 12, digest: a.digest), chainId: Self.chainId, signer: signer)),
            second: .vote(Signed(Vote(kind: .commit, view: 3, seq: 12, digest: b.digest), chainId: Self.chainId, signer: signer)))
        for equivocation in [proposals, votes] {
            let evidence = try #require(EquivocationEvidence(equivocation))
            let consensus = Set(equivocation.first.signatureChecks(chainId: Self.chainId) + equivocation.second.signatureChecks(chainId: Self.chainId))
            let ledger = try #require(evidence.checks(chainId: Self.chainId))
            #expect(Set(ledger) == consensus)
            #expect(ledger.allSatisfy { $0.verify() })
            #expect(evidence.nodeKey == key.publicKey && evidence.seq == 12 && evidence.view == 3)
        }
        // Not conflicting statements of one slot: nothing to report.
        let otherView = Equivocation(
            first: .vote(Signed(Vote(kind: .commit, view: 3, seq: 12, digest: a.digest), chainId: Self.chainId, signer: signer)),
            second: .vote(Signed(Vote(kind: .commit, view: 4, seq: 12, digest: b.digest), chainId: Self.chainId, signer: signer)))
        #expect(EquivocationEvidence(otherView) == nil)
    }
}
