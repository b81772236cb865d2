// Validator-set changes: the schedule's arithmetic (boundary, horizon), and replicas
// driven across an epoch boundary: the window stops at the epoch's end, the checkpoint
// closing it enters the next epoch at view 0 under the new set, a removed validator
// becomes a learner, an admitted one starts voting, and certificates are judged by the
// set in force at their height.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Consensus

/// Five identities: genesis is the first four; the change removes 0 and admits 4.
struct EpochFixture {
    static let chainId = "calisson-test"
    let signers: [TestSigner]
    let configuration: ReplicaConfiguration
    let genesis: ValidatorSet
    let next: ValidatorSet

    init() {
        var random = SplitMix64(seed: 7)
        signers = (0..<5).map { _ in TestSigner(id: Ed25519PublicKey(random.bytes32())) }
        genesis = ValidatorSet(signers[0..<4].map(\.id))!
        next = ValidatorSet(signers[1..<5].map(\.id))!
        var configuration = ReplicaConfiguration(chainId: Self.chainId, validators: genesis)
        configuration.checkpointInterval = 4
        configuration.window = 8
        self.configuration = configuration
    }

    func signer(_ id: ValidatorID) -> TestSigner { signers.first { $0.id == id }! }

    func replica(_ index: Int, safety: SafetyLog = SafetyLog(), lastExecuted: UInt64 = 0, schedule: EpochSchedule? = nil)
        -> Replica<TestSigner>
    {
        Replica(configuration: configuration, signer: signers[index], safety: safety, lastExecuted: lastExecuted, schedule: schedule)
    }

    static func root(_ seq: UInt64) -> SHA256Digest { TaggedHasher(tag: "test/root").hash(Array("\(seq)".utf8)) }

    func commits(_ block: Block, by set: ValidatorSet, view: UInt64 = 0) -> CommitCertificate {
        CommitCertificate(commits: set.validators.prefix(set.quorum).sorted().map {
            Signed(Vote(kind: .commit, view: view, seq: block.seq, digest: block.digest), chainId: Self.chainId, signer: signer($0))
        })
    }

    /// Orders block `seq` at `replica` as the set `set` would in view 0: the primary's
    /// proposal, everyone's prepares and commits, execution (installing `change` if
    /// given) and, at a checkpoint, everyone's checkpoint votes. Returns every action.
    func order(_ replica: inout Replica<TestSigner>, seq: UInt64, set: ValidatorSet, change: ValidatorSet? = nil) -> [Action] {
        let primary = signer(set.primary(of: 0))
        let block = Block(seq: seq, commands: [Array("command \(seq)".utf8)])
        var actions = replica.step(
            .message(.prePrepare(Signed(PrePrepare(view: 0, block: block), chainId: Self.chainId, signer: primary)), from: primary.id))
        for kind in [VoteKind.prepare, .commit] {
            for id in set.validators where id != replica.id {
                let vote = Signed(Vote(kind: kind, view: 0, seq: seq, digest: block.digest), chainId: Self.chainId, signer: signer(id))
                actions += replica.step(.message(.vote(vote), from: id))
            }
        }
        actions += executeAll(&replica, actions, change: change.map { (seq, $0) })
        if seq % configuration.checkpointInterval == 0 {
            for id in set.validators where id != replica.id {
                let vote = Signed(CheckpointVote(seq: seq, stateRoot: Self.root(seq)), chainId: Self.chainId, signer: signer(id))
                actions += replica.step(.message(.checkpoint(vote), from: id))
            }
        }
        return actions
    }

    /// Answers every `.execute` in `actions` (and in what that produces).
    func executeAll(_ replica: inout Replica<TestSigner>, _ actions: [Action], change: (UInt64, ValidatorSet)? = nil) -> [Action] {
        var produced: [Action] = []
        var pending = actions
        while !pending.isEmpty {
            var next: [Action] = []
            for case let .execute(certified) in pending {
                let seq = certified.block.seq
                next += replica.step(.executed(seq: seq, stateRoot: Self.root(seq), validators: change?.0 == seq ? change?.1 : nil))
            }
            produced += next
            pending = next
        }
        return produced
    }
}

extension Array where Element == Action {
    var executedSeqs: [UInt64] { compactMap { if case let .execute(b) = $0 { return b.block.seq } else { return nil } } }
    var enteredEpochs: [Epoch] { compactMap { if case let .enteredEpoch(e) = $0 { return e } else { return nil } } }
    var broadcastCheckpoints: [UInt64] {
        compactMap { if case let .broadcast(.checkpoint(c)) = $0 { return c.body.seq } else { return nil } }
    }
}

@Suite(.onOwnThreads) struct EpochScheduleTests {
    let fixture = EpochFixture()

    @Test func boundaryIsTheCheckpointAfterTheBlockPlusTheWindow() {
        let schedule = fixture.configuration.genesisSchedule
        #expect(schedule.boundary(executedAt: 1) == 12)
        #expect(schedule.boundary(executedAt: 4) == 12)
        #expect(schedule.boundary(executedAt: 5) == 16)
        #expect(schedule.horizon(executedThrough: 0) == 12)
        #expect(schedule.horizon(executedThrough: 3) == 12)
        #expect(schedule.horizon(executedThrough: 4) == 16)
    }

    @Test func laterChangeBetweenTheSameCheckpointsWinsAndNoOpsAreIgnored() throws {
        var schedule = fixture.configuration.genesisSchedule
        #expect(schedule.schedule(fixture.next, executedAt: 1) == Epoch(firstSeq: 13, validators: fixture.next))
        let other = ValidatorSet([fixture.signers[0].id, fixture.signers[4].id, fixture.signers[2].id, fixture.signers[3].id])!
        #expect(schedule.schedule(other, executedAt: 3)?.validators == other)
        #expect(schedule.epochs.count == 2)
        #expect(schedule.schedule(other, executedAt: 5) == nil)
        #expect(schedule.validators(at: 12) == fixture.genesis)
        #expect(schedule.validators(at: 13) == other)
        #expect(schedule.lastSeq(ofEpochAt: 5) == 12)
        #expect(schedule.lastSeq(ofEpochAt: 13) == nil)
        #expect(try EpochSchedule(wireBytes: schedule.wireBytes) == schedule)
    }

    /// The schedule is the node's own record, read at every restart: however many passed
    /// votes changed the validators, it reads back (it once stopped at 65,536 epochs), and a
    /// count its bytes do not hold is refused without allocating for it.
    @Test func aScheduleOfManyEpochsReadsBackAndACountItsBytesLackIsRefused() throws {
        var schedule = fixture.configuration.genesisSchedule
        let sets = [fixture.next, fixture.genesis]
        for change in 0..<70_000 {
            #expect(schedule.schedule(sets[change % 2], executedAt: UInt64(change) * schedule.checkpointInterval) != nil)
        }
        #expect(schedule.epochs.count == 70_001)
        #expect(try EpochSchedule(wireBytes: schedule.wireBytes) == schedule)

        var writer = WireWriter()
        writer.write(UInt64(4))
        writer.write(UInt64(8))
        writer.write(UInt32.max)
        writer.write(UInt64(1))
        writer.write(fixture.genesis)
        #expect(throws: WireError.self) { try EpochSchedule(wireBytes: writer.bytes) }
    }

    @Test func decodingRefusesEpochsOutOfOrder() {
        var writer = WireWriter()
        writer.write(UInt64(4))
        writer.write(UInt64(8))
        writer.write(UInt32(2))
        writer.write(UInt64(1))
        writer.write(fixture.genesis)
        writer.write(UInt64(1))  // a second epoch starting at the same height
        writer.write(fixture.next)
        #expect(throws: WireError.self) { try EpochSchedule(wireBytes: writer.bytes) }
    }

    /// Any two quorums share f + 1 validators, whatever n is.
    @Test(arguments: [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4), (7, 5), (10, 7)])
    func quorumIntersectsInAnHonestValidator(count: Int, quorum: Int) {
        var random = SplitMix64(seed: UInt64(count))
        let set = ValidatorSet((0..<count).map { _ in Ed25519PublicKey(random.bytes32()) })!
        #expect(set.quorum == quorum)
        #expect(2 * set.quorum - count >= set.faultsMax + 1)
    }
}

@Suite(.onOwnThreads) struct EpochReplicaTests {
    let fixture = EpochFixture()

    /// Orders heights 1-12 under genesis, block 1 installing the next set; returns the
    /// replica at the boundary, with all the actions.
    func acrossTheBoundary(_ index: Int) -> (Replica<TestSigner>, [Action]) {
        var replica = fixture.replica(index)
        var actions: [Action] = []
        for seq in UInt64(1)...12 {
            actions += fixture.order(&replica, seq: seq, set: fixture.genesis, change: seq == 1 ? fixture.next : nil)
        }
        return (replica, actions)
    }

    @Test func windowStopsAtTheEpochsEnd() {
        var replica = fixture.replica(2)
        for seq in UInt64(1)...8 {
            _ = fixture.order(&replica, seq: seq, set: fixture.genesis, change: seq == 1 ? fixture.next : nil)
        }
        #expect(replica.lowWatermark == 8)
        // low + window would be 16; the epoch ends at 12.
        #expect(replica.highWatermark == 12)
        let primary = fixture.signers[0]
        let beyond = Signed(PrePrepare(view: 0, block: Block(seq: 13, commands: [])), chainId: EpochFixture.chainId, signer: primary)
        #expect(replica.step(.message(.prePrepare(beyond), from: primary.id)).rejections == [.outsideWindow(seq: 13, low: 8, high: 12)])
    }

    @Test func closingCheckpointEntersTheNextEpochAtViewZero() {
        var (replica, actions) = acrossTheBoundary(2)
        #expect(actions.executedSeqs == Array(1...12))
        #expect(actions.enteredEpochs == [Epoch(firstSeq: 13, validators: fixture.next)])
        #expect(replica.epoch.firstSeq == 13 && replica.view == 0 && replica.lowWatermark == 12)
        // The removed validator (the old primary of view 0) is no longer heard ...
        let old = Signed(PrePrepare(view: 0, block: Block(seq: 13, commands: [[1]])), chainId: EpochFixture.chainId, signer: fixture.signers[0])
        #expect(replica.step(.message(.prePrepare(old), from: fixture.signers[0].id)).rejections == [.notAValidator])
        // ... and the new set orders the next heights.
        let after = fixture.order(&replica, seq: 13, set: fixture.next)
        #expect(after.executedSeqs == [13])
        #expect(after.broadcastVotes.map(\.kind) == [.prepare, .commit])
    }

    @Test func removedValidatorBecomesALearner() {
        var (replica, actions) = acrossTheBoundary(0)
        #expect(actions.broadcastCheckpoints == [4, 8, 12])  // it signed the old epoch's checkpoints
        #expect(!replica.isMember)
        var after: [Action] = []
        for seq in UInt64(13)...16 { after += fixture.order(&replica, seq: seq, set: fixture.next) }
        #expect(after.executedSeqs == Array(13...16))
        #expect(after.broadcastVotes.isEmpty && after.broadcastCheckpoints.isEmpty)
        // A learner never starts a view change, however long it waits.
        for _ in 0..<1_000 { _ = replica.step(.tick(pendingCommands: 3)) }
        #expect(!replica.isViewChanging)
    }

    @Test func admittedValidatorLearnsThenVotes() {
        var (replica, actions) = acrossTheBoundary(4)
        #expect(actions.executedSeqs == Array(1...12))
        #expect(actions.broadcastVotes.isEmpty && actions.broadcastCheckpoints.isEmpty)
        #expect(replica.isMember)
        let after = fixture.order(&replica, seq: 13, set: fixture.next)
        #expect(after.broadcastVotes.map(\.kind) == [.prepare, .commit])
    }

    /// State transfer judges each block by the set in force at its height, and takes
    /// nothing beyond the horizon of what it has executed.
    @Test func stateTransferChecksCertificatesAgainstTheSetAtTheirHeight() {
        var certified: [CertifiedBlock] = []
        for seq in UInt64(1)...16 {
            let block = Block(seq: seq, commands: seq == 1 ? [[0xC0]] : [])
            certified.append(CertifiedBlock(block: block, certificate: fixture.commits(block, by: seq <= 12 ? fixture.genesis : fixture.next)))
        }
        var learner = fixture.replica(4)
        var actions = learner.step(.message(.stateResponse(certified), from: fixture.signers[1].id))
        #expect(actions.executedSeqs == Array(1...12))  // 13-16: beyond the horizon, not yet judged
        actions = fixture.executeAll(&learner, actions, change: (1, fixture.next))
        #expect(learner.horizon == 24)

        // Heights 13-16 certified by the old set are refused; by the new set, taken.
        let forged = certified[12...].map {
            CertifiedBlock(block: $0.block, certificate: fixture.commits($0.block, by: fixture.genesis))
        }
        actions = learner.step(.message(.stateResponse(forged), from: fixture.signers[0].id))
        #expect(actions.executedSeqs.isEmpty)
        #expect(actions.rejections.count == 4)
        actions = learner.step(.message(.stateResponse(Array(certified[12...])), from: fixture.signers[1].id))
        #expect(actions.executedSeqs == Array(13...16))
    }

    @Test func viewChangeFromAnEndedEpochIsRefused() {
        var (replica, _) = acrossTheBoundary(2)
        let stale = Signed(ViewChange(newView: 1, stable: nil, prepared: []), chainId: EpochFixture.chainId, signer: fixture.signers[3])
        #expect(replica.step(.message(.viewChange(stale), from: fixture.signers[3].id)).rejections == [.staleEpoch(firstSeq: 1, current: 13)])
    }

    /// A replica that lags one epoch joins the next on a view change carrying the
    /// checkpoint that closed its epoch.
    @Test func viewChangeCarryingTheClosingCheckpointMovesALaggardToTheNextEpoch() {
        var ahead = fixture.replica(3)
        var laggard = fixture.replica(2)
        for seq in UInt64(1)...12 {
            let change = seq == 1 ? fixture.next : nil
            _ = fixture.order(&ahead, seq: seq, set: fixture.genesis, change: change)
            if seq <= 11 { _ = fixture.order(&laggard, seq: seq, set: fixture.genesis, change: change) }
        }
        // The laggard missed block 12 but executed through 11: its horizon covers 13.
        #expect(laggard.epoch.firstSeq == 1 && ahead.epoch.firstSeq == 13)
        let votes = [1, 2, 3].map {
            Signed(CheckpointVote(seq: 12, stateRoot: EpochFixture.root(12)), chainId: EpochFixture.chainId, signer: fixture.signers[$0])
        }
        let change = Signed(ViewChange(newView: 1, stable: CheckpointCertificate(votes: votes), prepared: []), chainId: EpochFixture.chainId, signer: fixture.signers[4])
        let actions = laggard.step(.message(.viewChange(change), from: fixture.signers[4].id))
        #expect(actions.enteredEpochs == [Epoch(firstSeq: 13, validators: fixture.next)])
        #expect(laggard.epoch.firstSeq == 13 && laggard.lowWatermark == 12)
    }

    /// The stable checkpoint that opens an epoch resets the persisted view, so that a
    /// restarted replica starts the epoch at view 0 and keeps its schedule.
    @Test func restartAfterAnEpochChangeResumesInTheNewEpoch() {
        var (replica, actions) = acrossTheBoundary(2)
        var safety = SafetyLog()
        safety.apply(.view(3, changing: false))
        for case let .persist(record) in actions { safety.apply(record) }
        #expect(safety.view == 0 && safety.lowWatermark == 12)
        let restarted = fixture.replica(2, safety: safety, lastExecuted: 12, schedule: replica.schedule)
        #expect(restarted.epoch == Epoch(firstSeq: 13, validators: fixture.next) && restarted.view == 0)
        _ = fixture.order(&replica, seq: 13, set: fixture.next)
    }
}

@Suite(.onOwnThreads) struct SafetyCompactionTests {
    /// After every block, the log's compaction folds to the same state as everything the
    /// replica persisted, and it stays about one checkpoint window long while the full
    /// log grows with every block.
    @Test func aCompactedSafetyLogFoldsToTheSameState() throws {
        let fixture = EpochFixture()
        for index in [1, 2] {
            var replica = fixture.replica(index)
            var persisted: [SafetyRecord] = []
            for seq in UInt64(1)...24 {
                for case let .persist(record) in fixture.order(&replica, seq: seq, set: fixture.genesis) { persisted.append(record) }
                var folded = SafetyLog()
                for record in persisted { folded.apply(record) }
                #expect(folded == replica.safety)
                let compacted = try #require(replica.safety.compacted)
                var refolded = SafetyLog()
                for record in compacted { refolded.apply(record) }
                #expect(refolded == replica.safety, "block \(seq)")
                #expect(compacted.count <= 2 + 3 * Int(fixture.configuration.checkpointInterval))
            }
            #expect(persisted.count > 48)
            // A replica restarted on the compacted log is where the full one would put it.
            let restarted = fixture.replica(index, safety: try #require(replica.safety.compacted).reduce(into: SafetyLog()) { $0.apply($1) })
            #expect(restarted.safety == replica.safety)
        }
    }
}
