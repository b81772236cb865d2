import CalissonCrypto
import Wire

extension Replica {
    // MARK: Execution

    /// Hands every final block that is next in line to the application, in order.
    mutating func executeReady() {
        while true {
            let next = executionRequested + 1
            let block: CertifiedBlock
            if let committed = slots[next]?.committed {
                block = committed
            } else if let ahead = committedAhead.removeValue(forKey: next) {
                block = ahead
            } else {
                return
            }
            executionRequested = next
            actions.append(.execute(block))
        }
    }

    mutating func executed(seq: UInt64, stateRoot: SHA256Digest, newValidators: ValidatorSet?) {
        precondition(seq == lastExecuted + 1 && seq <= executionRequested, "execution results must come in order")
        lastExecuted = seq
        if let newValidators { schedule.schedule(newValidators, executedAt: seq) }
        guard seq % configuration.checkpointInterval == 0 else { return }
        if let stable, stable.seq == seq, stable.stateRoot != stateRoot {
            actions.append(.stateDiverged(seq: seq, ours: stateRoot, certified: stable.stateRoot))
        }
        // The set that ordered block `seq` certifies the state after it.
        guard schedule.validators(at: seq).contains(id) else { return }
        let vote = Signed(CheckpointVote(seq: seq, stateRoot: stateRoot), chainId: chainId, signer: signer)
        ownCheckpoints[seq] = vote
        actions.append(.broadcast(.checkpoint(vote)))
        storeCheckpointVote(vote)
        checkStable(seq)
    }

    // MARK: Checkpoints

    mutating func receiveCheckpoint(_ m: Signed<CheckpointVote>, from: ValidatorID) {
        let seq = m.body.seq
        guard seq % configuration.checkpointInterval == 0, seq > lowWatermark else { return }
        // Beyond the horizon the set is not known yet: keep votes from validators of any
        // known epoch (bounded per signer); `checkStable` counts only the right ones.
        let member = seq <= horizon ? schedule.validators(at: seq).contains(m.signer) : schedule.isValidatorOfSomeEpoch(m.signer)
        guard member else { return reject(.notAValidator, from: from) }
        storeCheckpointVote(m)
        checkStable(m.body.seq)
    }

    /// Keeps each validator's few highest checkpoint votes above the low watermark, so a
    /// Byzantine validator cannot grow this map, yet a lagging replica still sees the
    /// quorum's latest checkpoints.
    private mutating func storeCheckpointVote(_ m: Signed<CheckpointVote>) {
        var votes = checkpointVotes[m.signer, default: [:]]
        votes[m.body.seq] = m
        if votes.count > configuration.checkpointVotesPerValidatorMax, let lowest = votes.keys.min() {
            votes[lowest] = nil
        }
        checkpointVotes[m.signer] = votes
    }

    private mutating func checkStable(_ seq: UInt64) {
        guard seq > lowWatermark, seq < horizon else { return }
        let signers = schedule.validators(at: seq)
        var byRoot: [SHA256Digest: [Signed<CheckpointVote>]] = [:]
        for (signer, votes) in checkpointVotes where signers.contains(signer) {
            if let vote = votes[seq] { byRoot[vote.body.stateRoot, default: []].append(vote) }
        }
        // At most one root can gather a quorum unless f is exceeded; min keeps it deterministic.
        guard let (_, votes) = byRoot.filter({ $0.value.count >= signers.quorum }).min(by: { $0.key < $1.key }) else { return }
        adoptStable(CheckpointCertificate(votes: Array(votes.sorted { $0.signer < $1.signer }.prefix(signers.quorum))))
    }

    /// Makes `certificate` (already checked) the stable checkpoint: persists it, moves the
    /// watermarks and discards the log below it. Final blocks not yet executed are kept
    /// aside. A checkpoint that closes an epoch enters the next one.
    ///
    /// A checkpoint at or beyond the horizon is not adopted: the set of the height after
    /// it is unknown. It only tells that blocks up to it are final (state transfer gets
    /// them; executing them moves the horizon).
    mutating func adoptStable(_ certificate: CheckpointCertificate) {
        guard certificate.seq > lowWatermark else { return }
        guard certificate.seq < horizon else {
            knownFinalSeq = max(knownFinalSeq, certificate.seq)
            return
        }
        let previous = epoch
        let next = schedule.epoch(at: certificate.seq + 1)
        let opensEpoch = next.firstSeq != previous.firstSeq
        persist(.stable(certificate, opensEpoch: opensEpoch))
        stable = certificate
        let seq = certificate.seq
        for (slotSeq, slot) in slots where slotSeq <= seq {
            if let committed = slot.committed {
                tallyCommits(slot, at: slotSeq, digest: committed.block.digest)
                if slotSeq > executionRequested { committedAhead[slotSeq] = committed }
            }
            slots[slotSeq] = nil
        }
        for signer in Array(checkpointVotes.keys) {
            checkpointVotes[signer] = checkpointVotes[signer]?.filter { $0.key > seq }
        }
        if let ours = ownCheckpoints[seq]?.body.stateRoot, ours != certificate.stateRoot {
            actions.append(.stateDiverged(seq: seq, ours: ours, certified: certificate.stateRoot))
        }
        ownCheckpoints = ownCheckpoints.filter { $0.key > seq }
        nextProposalSeq = max(nextProposalSeq, seq + 1)
        knownFinalSeq = max(knownFinalSeq, seq)
        if opensEpoch { enterEpoch(next) }
        executeReady()
    }

    /// Counts, for each validator of the set at `seq`, whether its commit vote for the block
    /// committed there reached this replica before the block's checkpoint became stable.
    private mutating func tallyCommits(_ slot: Slot, at seq: UInt64, digest: SHA256Digest) {
        for validator in schedule.validators(at: seq).validators {
            if slot.commits[validator]?.body.digest == digest || slot.uncheckedCommits[validator]?.body.digest == digest {
                commitTally[validator, default: CommitTally()].received += 1
            } else {
                commitTally[validator, default: CommitTally()].missed += 1
            }
        }
    }

    /// Starts the epoch that begins after the stable checkpoint: a fresh PBFT instance
    /// at view 0 under the epoch's set. Nothing of the previous epoch's views carries
    /// over: every height of that epoch is at or below the stable checkpoint.
    private mutating func enterEpoch(_ epoch: Epoch) {
        view = 0
        isViewChanging = false
        ticksWithoutProgress = 0
        viewChangeAttempts = 0
        payloadRequested = nil
        currentNewView = nil
        viewChanges = [:]
        ownViewChanges = [:]
        lastHelped = [:]
        for (seq, slot) in slots {
            if let committed = slot.committed, seq > executionRequested { committedAhead[seq] = committed }
        }
        slots = [:]
        actions.append(.enteredEpoch(epoch))
        actions.append(.enteredView(0))
    }

    /// Checkpoint votes are sent once; if the network lost them, the checkpoint never
    /// stabilises and the window eventually fills. Resend ours until it does.
    mutating func checkpointResendTick() {
        ticksSinceCheckpointResend += 1
        guard !ownCheckpoints.isEmpty, ticksSinceCheckpointResend >= configuration.checkpointResendTicks else { return }
        ticksSinceCheckpointResend = 0
        for seq in ownCheckpoints.keys.sorted() {
            if let vote = ownCheckpoints[seq] { actions.append(.broadcast(.checkpoint(vote))) }
        }
    }

    // MARK: State transfer

    /// A validator's message names a height above the window: others may be ahead of us.
    /// A single one proves nothing; f + 1 validators naming a height at least (one of them
    /// honest) make it known final, a state request then worth sending. The blocks that
    /// come back are checked against their certificates. One validator's hint raised it
    /// alone: a Byzantine one naming 2^64 − 1 had the node ask for state every few ticks
    /// for ever, and say it was that far behind.
    mutating func noteAhead(_ seq: UInt64, from signer: ValidatorID) {
        guard seq > aheadHints[signer] ?? 0 else { return }
        aheadHints[signer] = seq
        let needed = validators.weakQuorum
        guard aheadHints.count >= needed else { return }
        let named = aheadHints.values.sorted(by: >)[needed - 1]
        if named > knownFinalSeq { knownFinalSeq = named }
    }

    mutating func stateTransferTick() {
        ticksSinceStateRequest += 1
        let next = executionRequested + 1
        let blocked = slots[next]?.committed == nil && committedAhead[next] == nil
        guard knownFinalSeq > executionRequested, blocked, ticksSinceStateRequest >= configuration.stateTransferRetryTicks
        else { return }
        ticksSinceStateRequest = 0
        // Ask the current validators in turn, so one silent or lying peer cannot stall us.
        let peers = validators.validators.filter { $0 != id }
        guard !peers.isEmpty else { return }
        let peer = peers[stateRequestRound % peers.count]
        stateRequestRound += 1
        actions.append(.send(.stateRequest(fromSeq: next), to: peer))
    }

    /// Served to any peer the node's transport admitted (a learner is not a validator
    /// yet), at most `stateServedPerTickMax` times per tick per peer: an honest one asks at
    /// most once a tick (the tick after an answer that moved it on; a busy loop may take a
    /// few of them in one of its ticks), and each answer reads up to
    /// `stateTransferBlocksMax` blocks (megabytes) held until the turn ends, so a peer
    /// sending thousands of requests at once is served a few.
    mutating func receiveStateRequest(fromSeq: UInt64, from: ValidatorID) {
        guard fromSeq >= 1, fromSeq <= lastExecuted else { return }
        var served = lastStateServed[from].flatMap { $0.tick == tickCount ? $0 : nil } ?? (tick: tickCount, count: 0)
        guard served.count < Self.stateServedPerTickMax else {
            stateRequestsDropped += 1
            return
        }
        served.count += 1
        if lastStateServed[from] == nil, lastStateServed.count >= Self.stateServedRememberedMax { lastStateServed = [:] }
        lastStateServed[from] = served
        actions.append(.serveState(fromSeq: fromSeq, to: from, blocksMax: configuration.stateTransferBlocksMax))
    }

    mutating func receiveStateResponse(_ blocks: [CertifiedBlock], from: ValidatorID) {
        let before = executionRequested
        defer {
            // An answer that moved execution on while more is known final (the server cut
            // it at its byte budget, or at `stateTransferBlocksMax`): the rest is asked at
            // the next tick rather than after the retry interval. One that brought nothing
            // new waits for the interval, so a peer cannot make us ask in a loop.
            if executionRequested > before, knownFinalSeq > executionRequested { ticksSinceStateRequest = configuration.stateTransferRetryTicks }
        }
        let limit = executionRequested + UInt64(configuration.stateTransferBlocksMax)
        for certified in blocks.prefix(configuration.stateTransferBlocksMax) {
            let seq = certified.block.seq
            guard seq > executionRequested, seq <= limit, committedAhead[seq] == nil, slots[seq]?.committed == nil else { continue }
            // Judged by the set in force at its height, which must be known.
            guard seq <= horizon else { continue }
            if let problem = commitCertificateProblem(certified) {
                reject(.malformedCertificate(problem), from: from)
                continue
            }
            committedAhead[seq] = certified
            knownFinalSeq = max(knownFinalSeq, seq)
        }
        executeReady()
    }
}
