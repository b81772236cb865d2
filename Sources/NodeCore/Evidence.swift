import CalissonCrypto
import Consensus
import Ledger

extension EquivocationEvidence {
    /// The evidence a partner can report (`reportEquivocation`) for two conflicting
    /// statements the replica caught: two proposals, or two prepares or commits, of one
    /// validator for one view and height. nil for what a transaction cannot carry (the
    /// replica also flags messages of other kinds).
    public init?(_ equivocation: Equivocation) {
        switch (equivocation.first, equivocation.second) {
        case let (.prePrepare(a), .prePrepare(b)):
            guard a.signer == b.signer, a.body.view == b.body.view, a.body.seq == b.body.seq else { return nil }
            func statement(_ signed: Signed<PrePrepare>) -> Statement? {
                guard let count = UInt32(exactly: signed.body.block.commands.count) else { return nil }
                return Statement(hash: MerkleTree.root(of: signed.body.block.commandIDs), commandCount: count, signature: signed.signature)
            }
            guard let first = statement(a), let second = statement(b) else { return nil }
            self.init(nodeKey: a.signer, kind: .proposal, view: a.body.view, seq: a.body.seq, first, second)
        case let (.vote(a), .vote(b)):
            guard a.signer == b.signer, a.body.kind == b.body.kind, a.body.view == b.body.view, a.body.seq == b.body.seq else { return nil }
            self.init(
                nodeKey: a.signer, kind: a.body.kind == .prepare ? .prepare : .commit, view: a.body.view, seq: a.body.seq,
                Statement(hash: a.body.digest, signature: a.signature), Statement(hash: b.body.digest, signature: b.signature))
        default:
            return nil
        }
    }
}
