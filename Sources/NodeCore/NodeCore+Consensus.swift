import Consensus
import CalissonCrypto
import Ledger
import LightClient
import Storage
import Wire

// The replica driven by the core: its actions carried out in the order `ReplicaDriver`
// fixes, safety records and final blocks written through the storage before any effect
// that follows them, final blocks executed on the ledger.
extension NodeCore {
    /// Steps the replica with `input` and every answer it leads to. A storage failure or
    /// a diverged state throws: the core stops.
    mutating func step(_ input: Input) throws {
        try ReplicaDriver.drive(input, step: { replica.step($0) }, persist: { try persistSafety($0) }, perform: { try perform($0) })
    }

    /// Carries out one action of the replica other than `.persist`; returns the answer
    /// it calls for.
    mutating func perform(_ action: Action) throws -> Input? {
        switch action {
        case .persist:
            preconditionFailure("ReplicaDriver hands safety records to persistSafety")
        case let .send(message, to):
            if let peer = partnersByValidator[to] { effects.append(.send(message, to: peer)) }
        case let .broadcast(message):
            effects.append(.broadcast(message))
        case let .requestPayload(seq, commandsMax):
            return .payload(seq: seq, commands: mempool.take(commandsMax, bytesMax: settings.blockBytesMax, tick: tickCount))
        case let .execute(certified):
            return try execute(certified)
        case let .serveState(fromSeq, to, blocksMax):
            guard let peer = partnersByValidator[to] else { break }
            var blocks: [CertifiedBlock] = []
            var bytes = 0
            for height in fromSeq..<fromSeq.saturatingAdding(UInt64(blocksMax)) {
                guard let block = try storage.certifiedBlock(at: height) else { break }
                let size = block.wireBytes.count
                if !blocks.isEmpty, size > settings.stateResponseBytesMax - bytes { break }
                blocks.append(block)
                bytes += size
            }
            if !blocks.isEmpty { effects.append(.send(.stateResponse(blocks), to: peer)) }
        case let .evidence(equivocation):
            effects.append(.verify(equivocation.signatureChecks(chainId: ledger.chainId), .evidence(equivocation)))
        case let .rejected(reason, from):
            counters.consensusRejected += 1
            effects.append(.event(.rejected(reason, from: from)))
        case let .enteredView(view):
            effects.append(.event(.enteredView(view)))
        case let .enteredEpoch(epoch):
            effects.append(.event(.enteredEpoch(firstSeq: epoch.firstSeq, validators: epoch.validators.count)))
        case let .stateDiverged(seq, ours, certified):
            throw NodeCoreError.diverged("state root at \(seq) is \(ours.hex), the quorum certified \(certified.hex)")
        }
        return nil
    }

    /// Makes the replica's safety records durable, then the certificates of the
    /// checkpoints they make stable, and compacts the log below a new stable checkpoint.
    mutating func persistSafety(_ records: [SafetyRecord]) throws {
        try storage.appendSafety(records)
        var stabilized = false
        for case let .stable(certificate, _) in records {
            try storage.putCheckpoint(height: certificate.seq, certificate: certificate.wireBytes)
            stabilized = true
        }
        // A stable checkpoint lets the log drop what is below it: it is replaced by the
        // records of its fold (the replica's, which is what was just persisted). Without it
        // the log grew by a few records per block, for ever, and a restart folded all of them.
        if stabilized, let records = replica.safety.compacted { try storage.compactSafety(records) }
        try serveLatestCheckpoint()
    }

    mutating func serveLatestCheckpoint() throws {
        if let handed = try storage.serveLatestCheckpoint() {
            effects.append(.event(.handover(changedAt: handed.changedAt, checkpoint: handed.checkpoint)))
        }
    }

    /// Executes a final block, persists it with its state, answers the clients waiting
    /// for it, and returns the replica's feedback.
    mutating func execute(_ certified: CertifiedBlock) throws -> Input {
        let block = certified.block
        // Rules newer than this binary's from this height: stop before it, the database
        // at the height below, for a binary that has them (Docs/OPERATIONS.md, "Upgrades").
        if let missing = ledger.upgradeMissing(newest: settings.rulesNewest) {
            throw NodeCoreError.upgradeNeeded(missing, newest: settings.rulesNewest)
        }
        let commands = block.commands
        let outcome = try storage.reading { [verifySignature] in ledger.execute(commands, verify: verifySignature) }
        let ids = block.commandIDs
        var newSet: ValidatorSet?
        if let keys = outcome.validators, let set = ValidatorSet(keys) {
            newSet = set
            schedule.schedule(set, executedAt: block.seq)
        }
        let results = outcome.results.map { StoreAnswers.result($0, committed: outcome.resultsCommitted) }
        let rejected = zip(ids, outcome.results).compactMap { $1 == .applied ? nil : $0 }
        if !rejected.isEmpty { effects.append(.forgetGossip(rejected)) }
        let record = BlockRecord(
            height: block.seq, digest: block.digest, body: block.wireBytes, certificate: certified.certificate.wireBytes,
            stateRoot: outcome.recordedStateRoot,
            transactions: zip(zip(ids, results), outcome.accounts).map { pair, accounts in
                TransactionRecord(id: pair.0, result: pair.1, accounts: accounts.map(\.bytes))
            })
        // The schedule is written with the block that changed it (and by a join), so the
        // stored one is always that of the last block stored: a block that changes nothing
        // does not rewrite it, which would grow with every epoch the chain has had.
        var extras: [String: [UInt8]] = [:]
        if newSet != nil { extras[Self.scheduleExtra] = schedule.wireBytes }
        if let events = StoreAnswers.eventsExtra(
            closedEpoch: outcome.closedEpoch, decided: outcome.decidedProposals, opened: outcome.openedProposals) {
            extras[StoreAnswers.eventsExtraName(block.seq)] = events
        }
        try storage.persist(record, extras: extras)
        for (position, (id, result)) in zip(ids, results).enumerated() {
            guard let waiting = waiters.removeValue(forKey: id) else { continue }
            waiterCount -= waiting.count
            let answer = ClientResponse.transaction(StoreAnswers.location(height: block.seq, position: position, result: result))
            for waiter in waiting { effects.append(.respond(waiter.client, answer)) }
        }
        answerBlockWaiters(expiredOnly: false)
        try serveLatestCheckpoint()
        mempool.remove(Set(ids))
        mempool.removeExpired(before: block.seq.saturatingAdding(1))
        if outcome.validators != nil || outcome.partnersChanged { refreshDirectory() }
        if outcome.partnersChanged { effects.append(.partnersChanged) }
        lastProgressTick = tickCount
        counters.blocksExecuted += 1
        counters.certificate(signed: certified.certificate.commits.contains { $0.signer == replica.id })
        for result in outcome.results { if result == .applied { counters.applied += 1 } else { counters.rejected += 1 } }
        effects.append(.event(.executed(height: block.seq, stateRoot: outcome.stateRoot)))
        return .executed(seq: block.seq, stateRoot: outcome.stateRoot, validators: newSet)
    }
}

/// Why a node core stopped, besides a storage error.
public enum NodeCoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case diverged(String)
    /// The stored blocks above the stored state could not be executed again at start.
    case replay(String)
    /// The partners voted an upgrade to ledger rules this binary does not implement.
    case upgradeNeeded(ScheduledUpgrade, newest: UInt32)

    public var description: String {
        switch self {
        case let .diverged(reason): return "diverged: \(reason)"
        case let .replay(reason): return "executing the stored blocks again: \(reason)"
        case let .upgradeNeeded(upgrade, newest): return Self.upgradeMessage(upgrade, newest: newest)
        }
    }

    /// What a node too old for an upgrade says (and `calisson-node run` prints before
    /// exiting with status 3).
    public static func upgradeMessage(_ upgrade: ScheduledUpgrade, newest: UInt32) -> String {
        "upgrade \(upgrade.name) is in force from height \(upgrade.height) and needs ledger rules \(upgrade.rules); this binary implements "
            + "rules up to \(newest): install a release with rules \(upgrade.rules) or newer and start it on the same configuration "
            + "(the database is kept at height \(max(upgrade.height, 1) - 1), ready for it)"
    }
}
