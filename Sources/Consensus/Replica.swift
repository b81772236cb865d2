import CalissonCrypto
import Wire

/// The PBFT replica: a value driven by `step(_:)`, returning the actions its shell must
/// perform. It does no I/O, reads no clock (time is `.tick`) and draws no randomness, so
/// the same inputs always give the same actions, in production and in the simulator.
/// Docs/PROTOCOL.md states the protocol and the safety argument.
///
/// Split by phase: normal case here, `Replica+Execution.swift` (execution, checkpoints,
/// state transfer), `Replica+ViewChange.swift`, `Certificates.swift` (validation).
public struct Replica<Signer: ConsensusSigner>: Sendable {
    public let configuration: ReplicaConfiguration
    let signer: Signer

    public var id: ValidatorID { signer.id }
    var chainId: String { configuration.chainId }

    /// Which set orders which heights (changes come from `.executed`).
    public internal(set) var schedule: EpochSchedule
    /// The epoch this replica works in: that of the height after its stable checkpoint.
    /// Its window never leaves it.
    public var epoch: Epoch { schedule.epoch(at: lowWatermark + 1) }
    /// The validators of the current epoch.
    var validators: ValidatorSet { epoch.validators }
    /// Whether this replica votes in the current epoch. One that does not (a validator
    /// admitted in a later epoch, or one removed) follows the chain as a learner.
    public var isMember: Bool { validators.contains(id) }
    /// The highest height whose validator set this replica knows.
    public var horizon: UInt64 { schedule.horizon(executedThrough: lastExecuted) }

    public internal(set) var view: UInt64
    public internal(set) var isViewChanging: Bool
    public internal(set) var safety: SafetyLog

    struct Slot: Sendable {
        /// The PrePrepare accepted in the current view.
        var prePrepare: Signed<PrePrepare>?
        /// Prepares of the current view, by signer.
        var prepares: [ValidatorID: Signed<Vote>] = [:]
        /// Each signer's latest Commit, of any view.
        var commits: [ValidatorID: Signed<Vote>] = [:]
        /// The highest-view prepared certificate this replica formed.
        var prepared: PreparedCertificate?
        var committed: CertifiedBlock?
        var commitSent = false
        /// Votes taken unchecked (`takesUnchecked`), by signer: never part of a
        /// certificate; kept so that a conflicting vote from the same signer still makes
        /// evidence (which the shell checks, these signatures included, before it counts
        /// it), and the Commits counted as received in `commitTally`.
        var uncheckedPrepares: [ValidatorID: Signed<Vote>] = [:]
        var uncheckedCommits: [ValidatorID: Signed<Vote>] = [:]

        func block(digest: SHA256Digest) -> Block? {
            if let block = prePrepare?.body.block, block.digest == digest { return block }
            if let block = prepared?.block, block.digest == digest { return block }
            return nil
        }
    }

    var slots: [UInt64: Slot] = [:]
    var stable: CheckpointCertificate?

    /// Commit votes of one validator: received in time, or missed (`commitTally`).
    public struct CommitTally: Sendable, Equatable {
        public var received: UInt64 = 0
        public var missed: UInt64 = 0
    }
    public var lowWatermark: UInt64 { stable?.seq ?? 0 }
    /// The highest height handled: a window above the stable checkpoint, but never past
    /// the epoch's end or the horizon of known validator sets.
    public var highWatermark: UInt64 {
        let low = lowWatermark
        return min(low + configuration.window, horizon, schedule.lastSeq(ofEpochAt: low + 1) ?? .max)
    }

    /// Highest height the application has executed (acknowledged with `.executed`).
    public internal(set) var lastExecuted: UInt64
    /// Highest height handed to the application with `.execute`.
    var executionRequested: UInt64
    /// Final blocks below the log (state transfer, or committed just before a GC).
    var committedAhead: [UInt64: CertifiedBlock] = [:]
    /// The highest height known (by certificate) to be final somewhere, or that f + 1
    /// validators' messages name (`noteAhead`).
    public internal(set) var knownFinalSeq: UInt64
    /// The highest height each validator's messages named beyond this replica's window
    /// (`noteAhead`), one entry per signer.
    var aheadHints: [ValidatorID: UInt64] = [:]

    var nextProposalSeq: UInt64
    var payloadRequested: UInt64?
    var ticksWaitingToCut: UInt64 = 0
    var pendingCommands = 0
    /// Ticks of this primary with no command waiting and a quorum reachable
    /// (`checkpointFillTicks`); 0 while it is not the primary.
    var ticksIdle: UInt64 = 0
    /// Whether this replica's messages reach a quorum now, as its owner tells from its links
    /// (true when it cannot tell). An idle primary fills a checkpoint interval only then, and
    /// counts its idle ticks from then: null blocks sent to too few would be lost (nothing
    /// else would make the backups ask for them), and their slots, left uncommitted, would
    /// time the primary out of its view on its own.
    public var reachesQuorum = true

    var checkpointVotes: [ValidatorID: [UInt64: Signed<CheckpointVote>]] = [:]
    /// This replica's checkpoint votes above the stable checkpoint (resent until stable).
    var ownCheckpoints: [UInt64: Signed<CheckpointVote>] = [:]
    var ticksSinceCheckpointResend: UInt64 = 0

    /// View changes received, by target view then signer (views below ours are dropped).
    var viewChanges: [UInt64: [ValidatorID: Signed<ViewChange>]] = [:]
    /// This replica's own recent view changes, resent to replicas still asking for them.
    var ownViewChanges: [UInt64: Signed<ViewChange>] = [:]
    /// The NewView of the current view (sent or accepted), forwarded to replicas that missed it.
    var currentNewView: Signed<NewView>?
    /// Ticks seen since start: logical time for rate limits.
    var tickCount: UInt64 = 0
    /// When each validator behind us was last helped (sent a NewView or old ViewChange):
    /// at most once per view-change timeout, so two replicas cannot answer each other's
    /// answers forever.
    var lastHelped: [ValidatorID: UInt64] = [:]
    var ticksWithoutProgress: UInt64 = 0
    var viewChangeAttempts: UInt32 = 0

    var ticksSinceStateRequest: UInt64 = 0
    var stateRequestRound = 0
    /// The tick each peer was last served blocks (`receiveStateRequest`) and how many times
    /// in it, and the requests left unserved past `stateServedPerTickMax` in a tick.
    var lastStateServed: [ValidatorID: (tick: UInt64, count: Int)] = [:]
    public internal(set) var stateRequestsDropped = 0
    /// Peers `lastStateServed` remembers at most (the transport admits only partners' keys;
    /// past it, it starts again).
    static var stateServedRememberedMax: Int { 1_024 }
    static var stateServedPerTickMax: Int { 8 }

    /// Each validator's commit votes on the blocks this replica committed itself (not
    /// those it fetched by state transfer), counted when their checkpoint becomes stable:
    /// received by then, or missed. Operators watch the missed ones (a validator down,
    /// lagging or cut off from this node); since the replica started, not persisted.
    public internal(set) var commitTally: [ValidatorID: CommitTally] = [:]

    var actions: [Action] = []

    /// A replica starting from `safety` (empty for a new one) with its application
    /// having executed up to `lastExecuted` under `schedule` (nil: the genesis set only).
    /// This is also the restart path: nothing but the persisted safety log and the
    /// application's durable height and schedule survives a crash.
    public init(
        configuration: ReplicaConfiguration, signer: Signer, safety: SafetyLog = SafetyLog(), lastExecuted: UInt64 = 0,
        schedule: EpochSchedule? = nil
    ) {
        precondition((try? configuration.validate()) != nil, "invalid replica configuration")
        let schedule = schedule ?? configuration.genesisSchedule
        precondition(
            schedule.checkpointInterval == configuration.checkpointInterval && schedule.window == configuration.window
                && schedule.epochs[0].validators == configuration.validators, "schedule of another configuration")
        self.configuration = configuration
        self.signer = signer
        self.schedule = schedule
        self.safety = safety
        view = safety.view
        isViewChanging = safety.viewChanging
        stable = safety.stable
        self.lastExecuted = lastExecuted
        executionRequested = lastExecuted
        knownFinalSeq = max(lastExecuted, safety.lowWatermark)
        nextProposalSeq = max(safety.lowWatermark, safety.proposals.keys.max() ?? 0) + 1
        for (seq, certificate) in safety.prepared {
            var slot = Slot()
            slot.prepared = certificate
            if certificate.view == view && !isViewChanging { slot.prePrepare = certificate.prePrepare }
            slots[seq] = slot
        }
        for (seq, proposal) in safety.proposals where proposal.body.view == view {
            slots[seq, default: Slot()].prePrepare = proposal
        }
    }

    /// One line of state, for simulator traces and logs.
    public var summary: String {
        let asks = viewChanges.keys.sorted().map { "\($0):\(viewChanges[$0]?.count ?? 0)" }.joined(separator: ",")
        return "epoch \(epoch.firstSeq) view \(view)\(isViewChanging ? " (changing)" : "") low \(lowWatermark) executed \(lastExecuted)/\(executionRequested) known \(knownFinalSeq) next \(nextProposalSeq) slots \(slots.count) vc [\(asks)] ticks \(ticksWithoutProgress)/\(viewChangeTimeout())"
    }

    public var isPrimary: Bool { !isViewChanging && validators.primary(of: view) == id }

    /// Applies one input; returns what the shell must do, in order.
    public mutating func step(_ input: Input) -> [Action] {
        actions = []
        switch input {
        case let .message(message, from):
            receive(message, from: from)
        case let .tick(pending):
            tick(pendingCommands: pending)
        case let .payload(seq, commands):
            propose(seq: seq, commands: commands)
        case let .executed(seq, root, newValidators):
            executed(seq: seq, stateRoot: root, newValidators: newValidators)
        case let .linked(peer):
            relink(peer)
        }
        let out = actions
        actions = []
        return out
    }

    /// A validator linked again may have missed what was sent while its link was down (the
    /// transport drops frames for a link that is not up), and nothing else would make it
    /// ask: this replica sends it again, in height order, the same signed messages for the
    /// blocks of this view not final yet: the primary's proposal and this replica's own
    /// votes. Without it, a proposal lost that way stays uncommitted, and when no command
    /// waits (the idle primary's null blocks) only the primary's timer runs, which times it
    /// out of its view alone.
    private mutating func relink(_ peer: ValidatorID) {
        guard !isViewChanging, peer != id, validators.contains(peer) else { return }
        for seq in slots.keys.sorted() where seq > lastExecuted {
            guard let slot = slots[seq], slot.committed == nil, let proposal = slot.prePrepare, proposal.body.view == view else { continue }
            if proposal.signer == id { actions.append(.send(.prePrepare(proposal), to: peer)) }
            if let prepare = slot.prepares[id] { actions.append(.send(.vote(prepare), to: peer)) }
            if let commit = slot.commits[id], commit.body.view == view { actions.append(.send(.vote(commit), to: peer)) }
        }
    }

    mutating func persist(_ record: SafetyRecord) {
        safety.apply(record)
        actions.append(.persist(record))
    }

    mutating func reject(_ reason: Rejection, from: ValidatorID) {
        actions.append(.rejected(reason, from: from))
    }

    private mutating func receive(_ message: Message, from: ValidatorID) {
        switch message {
        case let .prePrepare(m): receivePrePrepare(m, from: from)
        case let .vote(m): receiveVote(m, from: from)
        case let .checkpoint(m): receiveCheckpoint(m, from: from)
        case let .viewChange(m): receiveViewChange(m, from: from)
        case let .newView(m): receiveNewView(m, from: from)
        case let .stateRequest(fromSeq): receiveStateRequest(fromSeq: fromSeq, from: from)
        case let .stateResponse(blocks): receiveStateResponse(blocks, from: from)
        }
    }

    // MARK: Time

    func viewChangeTimeout() -> UInt64 {
        let shift = min(UInt64(viewChangeAttempts), 20)
        return min(configuration.viewChangeTimeoutTicks << shift, configuration.viewChangeTimeoutTicksMax)
    }

    private mutating func tick(pendingCommands: Int) {
        tickCount += 1
        self.pendingCommands = pendingCommands
        if isPrimary {
            ticksIdle = pendingCommands > 0 || !reachesQuorum ? 0 : ticksIdle.saturatingAdding(1)
            maybeRequestPayload()
        } else {
            ticksIdle = 0
        }

        // View-change timer: armed while there is work the primary should be ordering. A
        // slot at or below the executed height is final, whatever it holds (after a restart
        // its proposal comes back from the log without the commits).
        let outstanding = pendingCommands > 0 || slots.contains { seq, slot in seq > lastExecuted && slot.prePrepare != nil && slot.committed == nil }
        if !isMember {
            ticksWithoutProgress = 0  // a learner follows view changes, it does not start them
        } else if isViewChanging {
            viewChangeTick()
        } else if outstanding {
            ticksWithoutProgress += 1
            if ticksWithoutProgress >= viewChangeTimeout() { startViewChange(to: view + 1) }
        } else {
            ticksWithoutProgress = 0
        }
        stateTransferTick()
        checkpointResendTick()
    }

    // MARK: Normal case

    private mutating func maybeRequestPayload() {
        guard payloadRequested == nil, nextProposalSeq <= highWatermark else {
            ticksWaitingToCut = 0
            return
        }
        guard pendingCommands > 0 else {
            ticksWaitingToCut = 0
            if completesCheckpoint { requestPayload() }
            return
        }
        ticksWaitingToCut += 1
        let full = pendingCommands >= configuration.batchCommandsMax
        guard full || ticksWaitingToCut >= configuration.batchTicks else { return }
        if !full {
            let inFlight = slots.values.count { $0.prePrepare?.body.view == view && $0.committed == nil }
            guard inFlight < configuration.partialBlocksInFlightMax else { return }
        }
        requestPayload()
    }

    private mutating func requestPayload() {
        ticksWaitingToCut = 0
        payloadRequested = nextProposalSeq
        actions.append(.requestPayload(seq: nextProposalSeq, commandsMax: configuration.batchCommandsMax))
    }

    /// Idle for `checkpointFillTicks` ticks, a quorum reachable, with the last proposal
    /// short of a checkpoint height (or no proposal yet): the next block is asked for even
    /// without commands, and the blocks up to the checkpoint follow at once (`propose`). The
    /// window always holds them: the low watermark and the window are multiples of the
    /// interval. Never while blocks above its last proposal are committed (a primary
    /// behind, its log lost or skipped by a state transfer: it catches up first); judged on
    /// certified blocks only, not on `knownFinalSeq`, which one faulty validator's hint can
    /// raise.
    private var completesCheckpoint: Bool {
        let fill = configuration.checkpointFillTicks
        guard fill > 0, ticksIdle >= fill, reachesQuorum else { return false }
        let last = nextProposalSeq - 1
        guard executionRequested <= last else { return false }  // (lastExecuted ≤ executionRequested)
        return last == 0 || last % configuration.checkpointInterval != 0
    }

    private mutating func propose(seq: UInt64, commands: [[UInt8]]) {
        guard payloadRequested == seq else { return }  // stale answer: the view changed meanwhile
        payloadRequested = nil
        guard isPrimary, seq == nextProposalSeq, seq > lowWatermark, seq <= highWatermark else { return }
        let prePrepare = Signed(PrePrepare(view: view, block: Block(seq: seq, commands: commands)), chainId: chainId, signer: signer)
        // After a restart, a proposal for this slot may already be on disk: never sign another.
        if let signed = safety.vote(.prePrepare, view: view, seq: seq), signed != prePrepare.body.block.digest { return }
        nextProposalSeq = seq + 1
        persist(.proposed(prePrepare))
        actions.append(.broadcast(.prePrepare(prePrepare)))
        accept(prePrepare)
        // A full batch still waiting, or null blocks completing a checkpoint interval: cut
        // the next block now rather than at the next tick (the window bounds how far this
        // runs ahead).
        pendingCommands = max(0, pendingCommands - commands.count)
        if isPrimary, pendingCommands >= configuration.batchCommandsMax || (pendingCommands == 0 && completesCheckpoint) {
            maybeRequestPayload()
        }
    }

    private mutating func receivePrePrepare(_ m: Signed<PrePrepare>, from: ValidatorID) {
        let body = m.body
        // The window first: it decides the epoch, hence the validator set, of the height.
        guard body.seq > lowWatermark, body.seq <= highWatermark else {
            return reject(.outsideWindow(seq: body.seq, low: lowWatermark, high: highWatermark), from: from)
        }
        guard validators.contains(m.signer) else { return reject(.notAValidator, from: from) }
        guard body.view == view, !isViewChanging else {
            return reject(body.view < view ? .staleView(body.view, current: view) : .futureView(body.view, current: view), from: from)
        }
        guard m.signer == validators.primary(of: view) else { return reject(.notPrimary(view: view), from: from) }
        if let existing = slots[body.seq]?.prePrepare, existing.body.view == view {
            if existing.body.block.digest != body.block.digest {
                actions.append(.evidence(Equivocation(first: .prePrepare(existing), second: .prePrepare(m))))
                reject(.conflictingProposal(seq: body.seq), from: from)
            }
            return
        }
        guard configuration.validateBlock(body.block) else { return reject(.invalidBlock(seq: body.seq), from: from) }
        accept(m)
    }

    /// Takes a checked PrePrepare of the current view as this slot's proposal and votes.
    mutating func accept(_ m: Signed<PrePrepare>) {
        let seq = m.body.seq, digest = m.body.block.digest
        // Restarted after preparing another digest in this view: never prepare a second one.
        if let prepared = safety.vote(.prepare, view: view, seq: seq), prepared != digest { return }
        slots[seq, default: Slot()].prePrepare = m
        castVote(Vote(kind: .prepare, view: view, seq: seq, digest: digest))
        checkPrepared(seq)
        checkCommitted(seq)
    }

    /// Signs, persists and broadcasts a vote, unless this replica already signed a
    /// different digest for the same (kind, view, seq), or is not a member; counts it locally.
    mutating func castVote(_ vote: Vote) {
        guard isMember else { return }
        let kind: VoteSlot.Kind = vote.kind == .prepare ? .prepare : .commit
        if let signed = safety.vote(kind, view: vote.view, seq: vote.seq) {
            guard signed == vote.digest else { return }  // would equivocate: stay silent
        } else {
            persist(.voted(vote))
        }
        let signed = Signed(vote, chainId: chainId, signer: signer)
        actions.append(.broadcast(.vote(signed)))
        record(signed)
    }

    private mutating func receiveVote(_ m: Signed<Vote>, from: ValidatorID) {
        let body = m.body
        guard body.seq > lowWatermark, body.seq <= highWatermark else {
            if body.kind == .commit && body.seq > highWatermark && schedule.isValidatorOfSomeEpoch(m.signer) {
                noteAhead(body.seq, from: m.signer)
            }
            return reject(.outsideWindow(seq: body.seq, low: lowWatermark, high: highWatermark), from: from)
        }
        guard validators.contains(m.signer) else { return reject(.notAValidator, from: from) }
        if body.kind == .prepare {
            // Prepares count only in the view they were cast in.
            guard body.view == view, !isViewChanging else {
                return reject(body.view < view ? .staleView(body.view, current: view) : .futureView(body.view, current: view), from: from)
            }
        }
        record(m)
        if body.kind == .prepare { checkPrepared(body.seq) } else { checkCommitted(body.seq) }
    }

    /// Whether this replica takes `message`, received from validator `from` over its
    /// authenticated link, without its signature being checked: a vote it no longer needs.
    /// That is a vote sent by its own signer (`from`), a Prepare of the current view for a
    /// height this replica prepared in that view or a Commit for a height it committed,
    /// matching the digest it prepared or committed, when nothing it holds from that signer
    /// for the height conflicts with it. Such a vote would join no certificate (they are
    /// formed) and is not refused; checking it now costs the CPU and changes nothing. At
    /// n = 4 a backup needs five of the seven signatures a block brings it (its third
    /// Prepare and its third Commit come after their quorum), a large part of a block's cost
    /// when blocks are small.
    ///
    /// The shell asks before it checks a message's signatures and drops a vote taken so,
    /// unchecked. The replica keeps it: a later vote of the same signer that conflicts with
    /// it makes equivocation evidence as a stepped one would, which the shell checks (both
    /// signatures) before it counts or reports it; a Commit taken so counts as received in
    /// `commitTally`. Anything else (any other message, a vote of another view or digest,
    /// from outside the set, or relayed by another validator) is not taken: it is checked
    /// and stepped as always.
    public mutating func takesUnchecked(_ message: Message, from: ValidatorID) -> Bool {
        guard case let .vote(m) = message, from == m.signer, validators.contains(m.signer), let slot = slots[m.body.seq]
        else { return false }
        let body = m.body
        switch body.kind {
        case .prepare:
            guard !isViewChanging, body.view == view, slot.commitSent, let prepared = slot.prepared,
                prepared.prePrepare.body.view == view, prepared.prePrepare.body.block.digest == body.digest
            else { return false }
            if let held = slot.prepares[m.signer], held.body.view == view, held.body.digest != body.digest { return false }
            if slot.uncheckedPrepares[m.signer] == nil { slots[body.seq]?.uncheckedPrepares[m.signer] = m }
            return true
        case .commit:
            guard let committed = slot.committed, committed.block.digest == body.digest else { return false }
            if let held = slot.commits[m.signer], held.body != body { return false }
            if slot.uncheckedCommits[m.signer] == nil { slots[body.seq]?.uncheckedCommits[m.signer] = m }
            return true
        }
    }

    /// Stores a vote in its slot, keeping equivocation evidence: against the vote held
    /// from its signer, or, when it is stored, against one taken unchecked.
    private mutating func record(_ m: Signed<Vote>) {
        let body = m.body
        var slot = slots[body.seq, default: Slot()]
        let unchecked: Signed<Vote>?
        switch body.kind {
        case .prepare:
            if let old = slot.prepares[m.signer], old.body.view == body.view {
                if old.body.digest != body.digest { actions.append(.evidence(Equivocation(first: .vote(old), second: .vote(m)))) }
                return
            }
            slot.prepares[m.signer] = m
            unchecked = slot.uncheckedPrepares[m.signer]
        case .commit:
            if let old = slot.commits[m.signer] {
                if old.body.view == body.view && old.body.digest != body.digest {
                    actions.append(.evidence(Equivocation(first: .vote(old), second: .vote(m))))
                }
                if old.body.view >= body.view { return }
            }
            slot.commits[m.signer] = m
            unchecked = slot.uncheckedCommits[m.signer]
        }
        if let unchecked, unchecked.body.view == body.view, unchecked.body.digest != body.digest {
            actions.append(.evidence(Equivocation(first: .vote(unchecked), second: .vote(m))))
        }
        slots[body.seq] = slot
    }

    mutating func checkPrepared(_ seq: UInt64) {
        guard !isViewChanging, let slot = slots[seq], let prePrepare = slot.prePrepare, prePrepare.body.view == view,
            !slot.commitSent
        else { return }
        let digest = prePrepare.body.block.digest
        let matching = slot.prepares.values.filter { $0.body.view == view && $0.body.digest == digest }
        guard matching.count >= validators.quorum else { return }
        let certificate = PreparedCertificate(
            prePrepare: prePrepare, prepares: Array(matching.sorted { $0.signer < $1.signer }.prefix(validators.quorum)))
        slots[seq]?.prepared = certificate
        slots[seq]?.commitSent = true
        persist(.prepared(certificate))
        castVote(Vote(kind: .commit, view: view, seq: seq, digest: digest))
        checkCommitted(seq)
    }

    mutating func checkCommitted(_ seq: UInt64) {
        guard let slot = slots[seq], slot.committed == nil else { return }
        // Group commits by (view, digest); any group reaching a quorum is a certificate.
        var groups: [Vote: [Signed<Vote>]] = [:]
        for commit in slot.commits.values { groups[commit.body, default: []].append(commit) }
        // Dictionary order is seeded per process: choose the lowest view, deterministically.
        guard let (vote, commits) = groups.filter({ $0.value.count >= validators.quorum }).min(by: { $0.key.view < $1.key.view })
        else { return }
        knownFinalSeq = max(knownFinalSeq, seq)
        guard let block = slot.block(digest: vote.digest) else { return }  // body arrives by state transfer
        let certificate = CommitCertificate(commits: Array(commits.sorted { $0.signer < $1.signer }.prefix(validators.quorum)))
        slots[seq]?.committed = CertifiedBlock(block: block, certificate: certificate)
        ticksWithoutProgress = 0
        viewChangeAttempts = 0
        executeReady()
    }
}
