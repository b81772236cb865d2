// One test per protocol rule, each as init → step → check on single replicas, with
// hand-made signed messages: votes only count for the proposal they match, only the
// primary proposes, the window bounds what is accepted, conflicting proposals become
// evidence, a NewView that drops a prepared block is refused, and a restarted replica
// never signs a second digest for a slot it already voted on.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Consensus

struct TestSigner: ConsensusSigner {
    let id: ValidatorID
    func sign(_ digest: SHA256Digest) -> Ed25519Signature {
        Ed25519Signature(rawRepresentation: digest.bytes + id.rawRepresentation)!
    }
}

struct Fixture {
    static let chainId = "calisson-test"
    let signers: [TestSigner]
    let configuration: ReplicaConfiguration

    init(count: Int = 4) {
        var random = SplitMix64(seed: 99)
        signers = (0..<count).map { _ in TestSigner(id: Ed25519PublicKey(random.bytes32())) }
        var configuration = ReplicaConfiguration(chainId: Self.chainId, validators: ValidatorSet(signers.map(\.id))!)
        configuration.checkpointInterval = 4
        configuration.window = 8
        self.configuration = configuration
    }

    func replica(_ index: Int, safety: SafetyLog = SafetyLog()) -> Replica<TestSigner> {
        Replica(configuration: configuration, signer: signers[index], safety: safety)
    }

    func prePrepare(by index: Int, view: UInt64 = 0, seq: UInt64, commands: [[UInt8]] = [[1]]) -> Signed<PrePrepare> {
        Signed(PrePrepare(view: view, block: Block(seq: seq, commands: commands)), chainId: Self.chainId, signer: signers[index])
    }

    func vote(_ kind: VoteKind, by index: Int, view: UInt64 = 0, seq: UInt64, digest: SHA256Digest) -> Signed<Vote> {
        Signed(Vote(kind: kind, view: view, seq: seq, digest: digest), chainId: Self.chainId, signer: signers[index])
    }

    func id(_ index: Int) -> ValidatorID { signers[index].id }

    /// Steps `replica` with checkpoint votes for (`seq`, `root`) from the validators `by`.
    func stabilize(_ replica: inout Replica<TestSigner>, seq: UInt64, root: SHA256Digest, by indices: [Int]) {
        for index in indices {
            let vote = Signed(CheckpointVote(seq: seq, stateRoot: root), chainId: Self.chainId, signer: signers[index])
            _ = replica.step(.message(.checkpoint(vote), from: id(index)))
        }
    }
}

extension Array where Element == Action {
    var broadcastVotes: [Vote] {
        compactMap { if case let .broadcast(.vote(v)) = $0 { return v.body } else { return nil } }
    }
    var evidence: [Equivocation] {
        compactMap { if case let .evidence(e) = $0 { return e } else { return nil } }
    }
    var rejections: [Rejection] {
        compactMap { if case let .rejected(r, _) = $0 { return r } else { return nil } }
    }
}

@Suite(.onOwnThreads) struct ReplicaRuleTests {
    let fixture = Fixture()

    /// Blocks are served to a peer at most 8 times a tick: a thousand requests from one
    /// peer in a turn are 8 answers (each is megabytes read and held: they once took
    /// gigabytes), a second peer is served beside it, and the first again at the next tick.
    @Test func aPeerIsServedBlocksAFewTimesATick() {
        var replica = Replica(configuration: fixture.configuration, signer: fixture.signers[1], lastExecuted: 20)
        func served(_ actions: [Action]) -> [ValidatorID] {
            actions.compactMap { if case let .serveState(_, to, _) = $0 { to } else { nil } }
        }
        var actions: [Action] = []
        for _ in 0..<1_000 { actions += replica.step(.message(.stateRequest(fromSeq: 1), from: fixture.id(0))) }
        actions += replica.step(.message(.stateRequest(fromSeq: 5), from: fixture.id(2)))
        #expect(served(actions) == Array(repeating: fixture.id(0), count: 8) + [fixture.id(2)])
        #expect(replica.stateRequestsDropped == 992)
        _ = replica.step(.tick(pendingCommands: 0))
        #expect(served(replica.step(.message(.stateRequest(fromSeq: 1), from: fixture.id(0)))) == [fixture.id(0)])
    }

    @Test func backupPreparesThePrimarysProposal() {
        var replica = fixture.replica(1)
        let proposal = fixture.prePrepare(by: 0, seq: 1)
        let actions = replica.step(.message(.prePrepare(proposal), from: fixture.id(0)))
        #expect(actions.broadcastVotes == [Vote(kind: .prepare, view: 0, seq: 1, digest: proposal.body.block.digest)])
        // Persist before send: the vote is on disk before it is broadcast.
        let persistIndex = actions.firstIndex { if case .persist(.voted) = $0 { return true } else { return false } }
        let sendIndex = actions.firstIndex { if case .broadcast(.vote) = $0 { return true } else { return false } }
        #expect(persistIndex != nil && sendIndex != nil && persistIndex! < sendIndex!)
    }

    @Test func prepareForAnotherDigestDoesNotCount() {
        var replica = fixture.replica(1)
        let proposal = fixture.prePrepare(by: 0, seq: 1)
        _ = replica.step(.message(.prePrepare(proposal), from: fixture.id(0)))
        let other = Block(seq: 1, commands: [[9]]).digest
        var actions = replica.step(.message(.vote(fixture.vote(.prepare, by: 2, seq: 1, digest: other)), from: fixture.id(2)))
        actions += replica.step(.message(.vote(fixture.vote(.prepare, by: 0, seq: 1, digest: proposal.body.block.digest)), from: fixture.id(0)))
        // Own prepare + replica 0's match; replica 2's is for another digest: 2 < quorum.
        #expect(!actions.broadcastVotes.contains { $0.kind == .commit })
        // A third matching prepare makes it prepared, and it commits.
        actions = []
        for index in [3] {
            actions += replica.step(.message(.vote(fixture.vote(.prepare, by: index, seq: 1, digest: proposal.body.block.digest)), from: fixture.id(index)))
        }
        #expect(actions.broadcastVotes.contains(Vote(kind: .commit, view: 0, seq: 1, digest: proposal.body.block.digest)))
    }

    @Test func quorumOfCommitsExecutesTheBlock() {
        var replica = fixture.replica(1)
        let proposal = fixture.prePrepare(by: 0, seq: 1)
        _ = replica.step(.message(.prePrepare(proposal), from: fixture.id(0)))
        var actions: [Action] = []
        for index in [0, 2, 3] {
            actions += replica.step(.message(.vote(fixture.vote(.commit, by: index, seq: 1, digest: proposal.body.block.digest)), from: fixture.id(index)))
        }
        let executed = actions.compactMap { if case let .execute(block) = $0 { return block } else { return nil } }
        #expect(executed.map(\.block) == [proposal.body.block])
        #expect(executed.first?.certificate.commits.count == fixture.configuration.validators.quorum)
    }

    /// Each validator's commit votes are tallied when their block's checkpoint becomes
    /// stable: a validator whose votes did not arrive by then has them counted missed.
    @Test func commitVotesAreTalliedPerValidatorAtTheStableCheckpoint() {
        var replica = fixture.replica(1)
        let root = SHA256.hash("root")
        for seq: UInt64 in 1...4 {
            let proposal = fixture.prePrepare(by: 0, seq: seq, commands: [[UInt8(seq)]])
            let digest = proposal.body.block.digest
            _ = replica.step(.message(.prePrepare(proposal), from: fixture.id(0)))
            // Blocks 1 and 2: commits from 0, 2 and 3 (replica 1 never prepares, so sends none).
            // Blocks 3 and 4: replica 1 prepares with 0 and 2 and commits with them; 3 is silent.
            let committers = seq <= 2 ? [0, 2, 3] : [0, 2]
            if seq > 2 {
                for index in [0, 2] { _ = replica.step(.message(.vote(fixture.vote(.prepare, by: index, seq: seq, digest: digest)), from: fixture.id(index))) }
            }
            for index in committers { _ = replica.step(.message(.vote(fixture.vote(.commit, by: index, seq: seq, digest: digest)), from: fixture.id(index))) }
            _ = replica.step(.executed(seq: seq, stateRoot: root))
        }
        #expect(replica.commitTally.isEmpty, "nothing is counted before the checkpoint is stable")
        fixture.stabilize(&replica, seq: 4, root: root, by: [0, 2])
        #expect(replica.lowWatermark == 4)
        #expect(replica.commitTally[fixture.id(0)] == Replica<TestSigner>.CommitTally(received: 4, missed: 0))
        #expect(replica.commitTally[fixture.id(2)] == Replica<TestSigner>.CommitTally(received: 4, missed: 0))
        #expect(replica.commitTally[fixture.id(1)] == Replica<TestSigner>.CommitTally(received: 2, missed: 2))
        #expect(replica.commitTally[fixture.id(3)] == Replica<TestSigner>.CommitTally(received: 2, missed: 2))
    }

    /// A vote the replica no longer needs (its certificate formed) is taken without its
    /// signature checked, and stepping it would have done nothing; a vote that conflicts
    /// with one held, is for another digest, is not yet needed, or is relayed by another
    /// validator is not taken. A vote taken so still makes evidence against a conflicting
    /// one of its signer, and a Commit taken so counts in the tally.
    @Test func votesNoLongerNeededAreTakenUncheckedAndCommitsStillTallied() {
        var replica = fixture.replica(1)
        let root = SHA256.hash("root")
        let other = Block(seq: 1, commands: [[9]]).digest
        /// Whether `replica` takes `message` unchecked; when it does, stepping it instead
        /// must give no action at all.
        func taken(_ message: Message, from index: Int) -> Bool {
            var stepped = replica
            guard replica.takesUnchecked(message, from: fixture.id(index)) else { return false }
            #expect(stepped.step(.message(message, from: fixture.id(index))).isEmpty)
            return true
        }
        for seq: UInt64 in 1...4 {
            let proposal = fixture.prePrepare(by: 0, seq: seq, commands: [[UInt8(seq)]])
            let digest = proposal.body.block.digest
            _ = replica.step(.message(.prePrepare(proposal), from: fixture.id(0)))
            #expect(!taken(.vote(fixture.vote(.prepare, by: 3, seq: seq, digest: digest)), from: 3), "needed: not prepared yet")
            if seq == 1 {
                // Replica 3's prepare for another digest, held: its matching one later is evidence.
                _ = replica.step(.message(.vote(fixture.vote(.prepare, by: 3, seq: seq, digest: other)), from: fixture.id(3)))
            }
            for index in [0, 2] {
                _ = replica.step(.message(.vote(fixture.vote(.prepare, by: index, seq: seq, digest: digest)), from: fixture.id(index)))
            }
            #expect(taken(.vote(fixture.vote(.prepare, by: 0, seq: seq, digest: digest)), from: 0), "a duplicate")
            #expect(!taken(.vote(fixture.vote(.prepare, by: 2, seq: seq, digest: other)), from: 2), "conflicts with one held")
            #expect(!taken(.vote(fixture.vote(.prepare, by: 3, view: 1, seq: seq, digest: digest)), from: 3), "another view")
            if seq == 1 {
                #expect(!taken(.vote(fixture.vote(.prepare, by: 3, seq: seq, digest: digest)), from: 3), "evidence against 3")
                let actions = replica.step(.message(.vote(fixture.vote(.prepare, by: 3, seq: seq, digest: digest)), from: fixture.id(3)))
                #expect(!actions.evidence.isEmpty)
            } else {
                #expect(!taken(.vote(fixture.vote(.prepare, by: 3, seq: seq, digest: digest)), from: 2), "relayed by another")
                #expect(taken(.vote(fixture.vote(.prepare, by: 3, seq: seq, digest: digest)), from: 3))
            }
            if seq == 2 {
                // Replica 3's conflicting prepare, after its matching one was taken unchecked.
                let conflicting = fixture.vote(.prepare, by: 3, seq: seq, digest: other)
                let unchecked = fixture.vote(.prepare, by: 3, seq: seq, digest: digest)
                #expect(replica.step(.message(.vote(conflicting), from: fixture.id(3))).evidence
                    == [Equivocation(first: .vote(unchecked), second: .vote(conflicting))])
                #expect(replica.step(.message(.vote(conflicting), from: fixture.id(3))).evidence.isEmpty, "once")
            }
            #expect(!taken(.vote(fixture.vote(.commit, by: 3, seq: seq, digest: digest)), from: 3), "needed: not committed yet")
            for index in [0, 2] {
                _ = replica.step(.message(.vote(fixture.vote(.commit, by: index, seq: seq, digest: digest)), from: fixture.id(index)))
            }
            #expect(!taken(.vote(fixture.vote(.commit, by: 3, seq: seq, digest: other)), from: 3), "another digest")
            #expect(!taken(.vote(fixture.vote(.commit, by: 3, seq: seq, digest: digest)), from: 2), "relayed by another")
            #expect(!taken(.checkpoint(Signed(CheckpointVote(seq: 4, stateRoot: root), chainId: Fixture.chainId, signer: fixture.signers[3])), from: 3))
            #expect(taken(.vote(fixture.vote(.commit, by: 3, seq: seq, digest: digest)), from: 3))
            if seq == 2 {
                let conflicting = fixture.vote(.commit, by: 3, seq: seq, digest: other)
                #expect(replica.step(.message(.vote(conflicting), from: fixture.id(3))).evidence
                    == [Equivocation(first: .vote(fixture.vote(.commit, by: 3, seq: seq, digest: digest)), second: .vote(conflicting))])
            }
            _ = replica.step(.executed(seq: seq, stateRoot: root))
        }
        fixture.stabilize(&replica, seq: 4, root: root, by: [0, 2])
        #expect(replica.lowWatermark == 4)
        #expect(replica.commitTally[fixture.id(3)] == Replica<TestSigner>.CommitTally(received: 4, missed: 0))
        #expect(replica.commitTally[fixture.id(2)] == Replica<TestSigner>.CommitTally(received: 4, missed: 0))
    }

    @Test func proposalFromANonPrimaryIsRejected() {
        var replica = fixture.replica(2)
        let actions = replica.step(.message(.prePrepare(fixture.prePrepare(by: 1, seq: 1)), from: fixture.id(1)))
        #expect(actions.rejections == [.notPrimary(view: 0)])
        #expect(actions.broadcastVotes.isEmpty)
    }

    @Test func proposalOutsideTheWindowIsRejected() {
        var replica = fixture.replica(1)
        let actions = replica.step(.message(.prePrepare(fixture.prePrepare(by: 0, seq: 9)), from: fixture.id(0)))
        #expect(actions.rejections == [.outsideWindow(seq: 9, low: 0, high: 8)])
    }

    @Test func proposalForAnotherViewIsRejected() {
        var replica = fixture.replica(1)
        let actions = replica.step(.message(.prePrepare(fixture.prePrepare(by: 1, view: 1, seq: 1)), from: fixture.id(1)))
        #expect(actions.rejections == [.futureView(1, current: 0)])
    }

    @Test func voteFromANonValidatorIsRejected() {
        var replica = fixture.replica(1)
        let outsider = TestSigner(id: Ed25519PublicKey(Bytes32.zero))
        let vote = Signed(Vote(kind: .prepare, view: 0, seq: 1, digest: .zero), chainId: Fixture.chainId, signer: outsider)
        #expect(replica.step(.message(.vote(vote), from: outsider.id)).rejections == [.notAValidator])
    }

    @Test func conflictingProposalsBecomeEvidence() {
        var replica = fixture.replica(1)
        _ = replica.step(.message(.prePrepare(fixture.prePrepare(by: 0, seq: 1, commands: [[1]])), from: fixture.id(0)))
        let actions = replica.step(.message(.prePrepare(fixture.prePrepare(by: 0, seq: 1, commands: [[2]])), from: fixture.id(0)))
        #expect(actions.contains { if case .evidence = $0 { return true } else { return false } })
        #expect(actions.rejections == [.conflictingProposal(seq: 1)])
        #expect(actions.broadcastVotes.isEmpty)
    }

    @Test func restartedReplicaNeverPreparesASecondDigest() {
        var replica = fixture.replica(1)
        var safety = SafetyLog()
        for action in replica.step(.message(.prePrepare(fixture.prePrepare(by: 0, seq: 1, commands: [[1]])), from: fixture.id(0))) {
            if case let .persist(record) = action { safety.apply(record) }
        }
        // Crash: only the safety log survives. The (Byzantine) primary now sends another block.
        var restarted = fixture.replica(1, safety: safety)
        let actions = restarted.step(.message(.prePrepare(fixture.prePrepare(by: 0, seq: 1, commands: [[2]])), from: fixture.id(0)))
        #expect(actions.broadcastVotes.isEmpty)
    }

    /// A primary restarted with its proposals in its log, their blocks executed: idle, it
    /// waits for nothing, so it does not time out of its view (it did: the slots rebuilt from
    /// the log had no commit, and counted as work the primary was not doing).
    @Test func aRestartedPrimaryWithItsBlocksExecutedDoesNotTimeOut() {
        var primary = fixture.replica(0)
        var safety = SafetyLog()
        _ = primary.step(.tick(pendingCommands: 1))
        for action in primary.step(.payload(seq: 1, commands: [[1]])) {
            if case let .persist(record) = action { safety.apply(record) }
        }
        var restarted = Replica(configuration: fixture.configuration, signer: fixture.signers[0], safety: safety, lastExecuted: 1)
        for _ in 0..<(3 * fixture.configuration.viewChangeTimeoutTicks) { _ = restarted.step(.tick(pendingCommands: 0)) }
        #expect(!restarted.isViewChanging && restarted.isPrimary)
        // Not executed: the same log is work outstanding, and the timer runs.
        var behind = Replica(configuration: fixture.configuration, signer: fixture.signers[0], safety: safety, lastExecuted: 0)
        for _ in 0..<(3 * fixture.configuration.viewChangeTimeoutTicks) { _ = behind.step(.tick(pendingCommands: 0)) }
        #expect(behind.isViewChanging)
    }

    /// A validator linked again gets what it may have missed: the primary's proposal not
    /// final yet and the sender's own votes on it, in height order; nothing once final.
    @Test func aValidatorLinkedAgainGetsWhatItMissed() {
        func sent(_ actions: [Action], to index: Int) -> [String] {
            actions.compactMap { action -> String? in
                guard case let .send(message, to) = action, to == fixture.id(index) else { return nil }
                switch message {
                case let .prePrepare(p): return "proposal \(p.body.seq)"
                case let .vote(v): return "\(v.body.kind) \(v.body.seq)"
                default: return "other"
                }
            }
        }
        var primary = fixture.replica(0)
        _ = primary.step(.tick(pendingCommands: 1))
        let proposed = primary.step(.payload(seq: 1, commands: [[1]]))
        let proposal = try? #require(proposed.compactMap { if case let .broadcast(.prePrepare(p)) = $0 { return p } else { return nil } }.first)
        #expect(sent(primary.step(.linked(fixture.id(1))), to: 1) == ["proposal 1", "prepare 1"])
        #expect(primary.step(.linked(fixture.id(0))).isEmpty)  // itself: nothing

        guard let proposal else { return }
        var backup = fixture.replica(1)
        _ = backup.step(.message(.prePrepare(proposal), from: fixture.id(0)))
        #expect(sent(backup.step(.linked(fixture.id(2))), to: 2) == ["prepare 1"])
        // Prepared and committed: its commit goes too; final and executed: nothing.
        let digest = proposal.body.block.digest
        for index in [0, 2] {
            _ = backup.step(.message(.vote(fixture.vote(.prepare, by: index, seq: 1, digest: digest)), from: fixture.id(index)))
        }
        #expect(sent(backup.step(.linked(fixture.id(3))), to: 3) == ["prepare 1", "commit 1"])
        for index in [0, 2] {
            _ = backup.step(.message(.vote(fixture.vote(.commit, by: index, seq: 1, digest: digest)), from: fixture.id(index)))
        }
        _ = backup.step(.executed(seq: 1, stateRoot: SHA256.hash("root 1")))
        #expect(backup.step(.linked(fixture.id(3))).isEmpty)
    }

    /// A NewView must re-propose every block a quorum of view changes shows prepared.
    @Test func newViewDroppingAPreparedBlockIsRejected() throws {
        let proposal = fixture.prePrepare(by: 0, seq: 1)
        let digest = proposal.body.block.digest
        let prepared = PreparedCertificate(
            prePrepare: proposal, prepares: [0, 1, 2].map { fixture.vote(.prepare, by: $0, seq: 1, digest: digest) })
        let changes = [0, 2, 3].map { index in
            Signed(ViewChange(newView: 1, stable: nil, prepared: index == 2 ? [prepared] : []), chainId: Fixture.chainId,
                   signer: fixture.signers[index])
        }
        let nullBlock = Signed(PrePrepare(view: 1, block: Block(seq: 1, commands: [])), chainId: Fixture.chainId, signer: fixture.signers[1])
        let dropping = Signed(NewView(view: 1, viewChanges: changes, prePrepares: [nullBlock]), chainId: Fixture.chainId, signer: fixture.signers[1])
        var replica = fixture.replica(3)
        let actions = replica.step(.message(.newView(dropping), from: fixture.id(1)))
        #expect(actions.rejections == [.newViewMismatch("proposals differ from the view changes' prepared blocks")])

        let keeping = Signed(
            NewView(view: 1, viewChanges: changes, prePrepares: [Signed(PrePrepare(view: 1, block: proposal.body.block), chainId: Fixture.chainId, signer: fixture.signers[1])]),
            chainId: Fixture.chainId, signer: fixture.signers[1])
        let accepted = replica.step(.message(.newView(keeping), from: fixture.id(1)))
        #expect(accepted.rejections.isEmpty)
        #expect(replica.view == 1 && !replica.isViewChanging)
        #expect(accepted.broadcastVotes == [Vote(kind: .prepare, view: 1, seq: 1, digest: digest)])
    }

    @Test func viewChangeWithAForgedPreparedCertificateIsRejected() {
        let proposal = fixture.prePrepare(by: 0, seq: 1)
        // Only two prepares: not a quorum.
        let forged = PreparedCertificate(
            prePrepare: proposal, prepares: [0, 1].map { fixture.vote(.prepare, by: $0, seq: 1, digest: proposal.body.block.digest) })
        let change = Signed(ViewChange(newView: 1, stable: nil, prepared: [forged]), chainId: Fixture.chainId, signer: fixture.signers[2])
        var replica = fixture.replica(1)
        let actions = replica.step(.message(.viewChange(change), from: fixture.id(2)))
        #expect(actions.rejections == [.malformedCertificate("prepared certificate: 2 signatures, quorum is 3")])
    }

    /// A view change or NewView whose stable checkpoint names any height, 2^64 − 1 too, is
    /// refused as beyond the horizon before anything of it is checked, without trapping
    /// (a partner that is no validator crashed every node with one such frame); and only a
    /// validator's makes the height worth a state request.
    @Test func aViewChangeNamingAnyHeightIsRefusedAndOnlyAValidatorsIsAHint() {
        var random = SplitMix64(seed: 7)
        let stranger = TestSigner(id: Ed25519PublicKey(random.bytes32()))
        func change(_ seq: UInt64, by signer: TestSigner) -> Signed<ViewChange> {
            let votes = [Signed(CheckpointVote(seq: seq, stateRoot: SHA256.hash("root")), chainId: Fixture.chainId, signer: signer)]
            return Signed(ViewChange(newView: 1, stable: CheckpointCertificate(votes: votes), prepared: []), chainId: Fixture.chainId, signer: signer)
        }
        for seq in [UInt64.max, UInt64.max - 1, UInt64(Int64.max) + 1] {
            var replica = fixture.replica(1)
            let fromStranger = replica.step(.message(.viewChange(change(seq, by: stranger)), from: stranger.id))
            #expect(fromStranger.rejections == [.beyondHorizon(seq: seq.saturatingAdding(1), horizon: replica.horizon)])
            let newView = Signed(NewView(view: 1, viewChanges: [change(seq, by: stranger)], prePrepares: []), chainId: Fixture.chainId, signer: stranger)
            let newViewFromStranger = replica.step(.message(.newView(newView), from: stranger.id))
            #expect(newViewFromStranger.rejections == [.beyondHorizon(seq: seq.saturatingAdding(1), horizon: replica.horizon)])
            #expect(replica.knownFinalSeq == 0, "a stranger's height taken as a hint: \(replica.knownFinalSeq)")

            // One validator's height is not enough (it may be the faulty one); f + 1 (2 of 4) is.
            let fromValidator = replica.step(.message(.viewChange(change(seq, by: fixture.signers[2])), from: fixture.id(2)))
            #expect(fromValidator.rejections == [.beyondHorizon(seq: seq.saturatingAdding(1), horizon: replica.horizon)])
            #expect(replica.knownFinalSeq == 0, "one validator's height taken as known final: \(replica.knownFinalSeq)")
            _ = replica.step(.message(.viewChange(change(1_000, by: fixture.signers[3])), from: fixture.id(3)))
            #expect(replica.knownFinalSeq == 1_000, "the lower of two validators' heights")
            #expect(replica.view == 0 && !replica.isViewChanging)
        }
    }

    /// A partial block waits for the primary's previous block to commit; a full batch is
    /// cut at once whatever is in flight.
    @Test func aPartialBlockWaitsForThePreviousOneAndAFullOneDoesNot() {
        var primary = fixture.replica(0)
        func requests(_ actions: [Action]) -> [UInt64] {
            actions.compactMap { if case let .requestPayload(seq, _) = $0 { return seq } else { return nil } }
        }
        #expect(requests(primary.step(.tick(pendingCommands: 3))) == [1])
        let proposed = primary.step(.payload(seq: 1, commands: [[1], [2], [3]]))
        let block = proposed.compactMap { if case let .broadcast(.prePrepare(p)) = $0 { return p.body.block } else { return nil } }.first
        #expect(block?.seq == 1)
        // Block 1 is not committed: two new commands wait, tick after tick.
        for _ in 0..<5 { #expect(requests(primary.step(.tick(pendingCommands: 2))).isEmpty) }
        // A full batch does not wait.
        let full = fixture.configuration.batchCommandsMax
        #expect(requests(primary.step(.tick(pendingCommands: full))) == [2])
        let second = primary.step(.payload(seq: 2, commands: (0..<full).map { [UInt8(truncatingIfNeeded: $0), 9] }))
        let secondDigest = second.compactMap { if case let .broadcast(.prePrepare(p)) = $0 { return p.body.block.digest } else { return nil } }.first
        // Block 1 commits (with block 2 still in flight, the partial one still waits: one
        // partial block of this primary's in flight at most, and block 2 is in flight).
        guard let digest = block?.digest else { return }
        for index in [1, 2, 3] {
            _ = primary.step(.message(.vote(fixture.vote(.prepare, by: index, seq: 1, digest: digest)), from: fixture.id(index)))
            _ = primary.step(.message(.vote(fixture.vote(.commit, by: index, seq: 1, digest: digest)), from: fixture.id(index)))
        }
        _ = primary.step(.executed(seq: 1, stateRoot: SHA256.hash("root 1")))
        #expect(requests(primary.step(.tick(pendingCommands: 2))).isEmpty)
        // Block 2 commits too: nothing in flight, the two waiting commands go.
        guard let secondDigest else { return }
        for index in [1, 2, 3] {
            _ = primary.step(.message(.vote(fixture.vote(.prepare, by: index, seq: 2, digest: secondDigest)), from: fixture.id(index)))
            _ = primary.step(.message(.vote(fixture.vote(.commit, by: index, seq: 2, digest: secondDigest)), from: fixture.id(index)))
        }
        _ = primary.step(.executed(seq: 2, stateRoot: SHA256.hash("root 2")))
        #expect(requests(primary.step(.tick(pendingCommands: 2))) == [3])
    }

    /// With `batchTicks` = 3 a partial block is asked for at the third tick with commands
    /// waiting, not before (the ticks count only while commands wait); a full one at once.
    @Test func aPartialBlockIsCutAfterBatchTicksWithCommandsWaiting() {
        var configuration = fixture.configuration
        configuration.batchTicks = 3
        var primary = Replica(configuration: configuration, signer: fixture.signers[0], safety: SafetyLog())
        func requests(_ actions: [Action]) -> [UInt64] {
            actions.compactMap { if case let .requestPayload(seq, _) = $0 { return seq } else { return nil } }
        }
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 1))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)  // the mempool emptied: the count starts again
        #expect(requests(primary.step(.tick(pendingCommands: 2))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 2))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 2))) == [1])
        _ = primary.step(.payload(seq: 1, commands: [[1], [2]]))

        var fresh = Replica(configuration: configuration, signer: fixture.signers[0], safety: SafetyLog())
        #expect(requests(fresh.step(.tick(pendingCommands: configuration.batchCommandsMax))) == [1])
    }

    /// With `checkpointFillTicks` = 3, a primary with nothing to order asks, at the third
    /// idle tick, for the blocks up to the next checkpoint height, at once, and no more; a
    /// command waiting starts the count again. Without it (0), an idle primary cuts nothing.
    @Test func anIdlePrimaryCompletesTheCheckpointIntervalWithNullBlocks() {
        var configuration = fixture.configuration
        configuration.checkpointFillTicks = 3
        func requests(_ actions: [Action]) -> [UInt64] {
            actions.compactMap { if case let .requestPayload(seq, _) = $0 { return seq } else { return nil } }
        }
        func proposed(_ actions: [Action]) -> [Block] {
            actions.compactMap { if case let .broadcast(.prePrepare(p)) = $0 { return p.body.block } else { return nil } }
        }
        var idle = Replica(configuration: fixture.configuration, signer: fixture.signers[0], safety: SafetyLog())
        for _ in 0..<100 { #expect(requests(idle.step(.tick(pendingCommands: 0))).isEmpty) }

        // A ledger with no block yet is completed to its first checkpoint (4 here).
        var fresh = Replica(configuration: configuration, signer: fixture.signers[0], safety: SafetyLog())
        #expect(requests(fresh.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(fresh.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(fresh.step(.tick(pendingCommands: 0))) == [1])
        var blocks: [Block] = []
        for seq: UInt64 in 1...4 {
            let actions = fresh.step(.payload(seq: seq, commands: []))
            blocks += proposed(actions)
            #expect(requests(actions) == (seq < 4 ? [seq + 1] : []))
        }
        #expect(blocks.map(\.seq) == [1, 2, 3, 4] && blocks.allSatisfy(\.commands.isEmpty))
        for _ in 0..<10 { #expect(requests(fresh.step(.tick(pendingCommands: 0))).isEmpty) }

        // A block of commands at 1; the idle count starts with the mempool empty, and a
        // command waiting (here held back by block 1, not committed) starts it again.
        var primary = Replica(configuration: configuration, signer: fixture.signers[0], safety: SafetyLog())
        #expect(requests(primary.step(.tick(pendingCommands: 2))) == [1])
        #expect(requests(primary.step(.payload(seq: 1, commands: [[1], [2]]))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 1))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))) == [2])
        // A command that came meanwhile rides in the first of them; the interval is still completed.
        #expect(requests(primary.step(.payload(seq: 2, commands: [[3]]))) == [3])
        #expect(requests(primary.step(.payload(seq: 3, commands: []))) == [4])
        #expect(requests(primary.step(.payload(seq: 4, commands: []))).isEmpty)
        #expect(requests(primary.step(.tick(pendingCommands: 0))).isEmpty)

        // Links to fewer than a quorum: nothing, however long; the count starts once they are up.
        var unlinked = Replica(configuration: configuration, signer: fixture.signers[0], safety: SafetyLog())
        unlinked.reachesQuorum = false
        for _ in 0..<10 { #expect(requests(unlinked.step(.tick(pendingCommands: 0))).isEmpty) }
        unlinked.reachesQuorum = true
        #expect(requests(unlinked.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(unlinked.step(.tick(pendingCommands: 0))).isEmpty)
        #expect(requests(unlinked.step(.tick(pendingCommands: 0))) == [1])
    }

    @Test func primaryTimesOutIntoAViewChangeAndPersistsFirst() {
        var replica = fixture.replica(1)
        var actions: [Action] = []
        for _ in 0..<fixture.configuration.viewChangeTimeoutTicks { actions += replica.step(.tick(pendingCommands: 5)) }
        #expect(replica.isViewChanging && replica.view == 1)
        let persisted = actions.firstIndex { $0 == .persist(.view(1, changing: true)) }
        let sent = actions.firstIndex { if case .broadcast(.viewChange) = $0 { return true } else { return false } }
        #expect(persisted != nil && sent != nil && persisted! < sent!)
    }
}
