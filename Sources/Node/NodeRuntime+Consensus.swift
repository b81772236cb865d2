import Consensus
import CalissonCrypto
import Foundation
import LightClient
import Ledger
import Logging
import Storage
import Synchronization
import Transport
import Wire

// The replica driven on the loop thread: ticks, peers' messages (signatures checked
// first), the actions carried out in the order `ReplicaDriver` fixes, final blocks
// executed and persisted with their state.
extension NodeRuntime {
    func tick() {
        assert(loop.isOnLoop, "the node's state is the loop thread's")
        tickCount += 1
        #if CALISSON_FAULTS
        if byzantine != nil {
            for (peer, gossip, payload) in byzantine!.extra(to: transport.configuration.peers.map(\.id).sorted()) {
                transport.send(payload, kind: gossip ? .gossip : .consensus, to: peer)
            }
        }
        #endif
        if tickCount % 10 == 0 { expireWaiters() }
        if tickCount % Self.regossipTicks == 0 {
            for entry in mempool.entries.prefix(1_000) { transport.broadcast(entry.bytes, kind: .gossip) }
        }
        if tickCount - lastProgressTick >= Self.catchUpTicks {
            lastProgressTick = tickCount
            let peers = transport.configuration.peers.map(\.id).sorted()
            if !peers.isEmpty {
                let peer = peers[catchUpRound % peers.count]
                catchUpRound += 1
                transport.send(Message.stateRequest(fromSeq: ledger.height + 1).wireBytes, to: peer)
            }
        }
        step(.tick(pendingCommands: mempool.pendingCount(tick: tickCount)))
    }

    func received(_ payload: [UInt8], from peer: String) {
        assert(loop.isOnLoop, "the node's state is the loop thread's")
        guard let sender = validatorsByPartner[peer] else { return }
        #if CALISSON_FAULTS
        byzantine?.received(payload)
        #endif
        let message: Message
        do { message = try Message(wireBytes: payload) } catch {
            consensusUndecodable += 1
            logger.warning("undecodable consensus message", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return
        }
        // Every signature the message carries is checked (off the loop, cache first)
        // before the replica sees it.
        let checks = message.signatureChecks(chainId: ledger.chainId)
        guard !checks.isEmpty else { return step(.message(message, from: sender)) }
        _ = verify(checks) { [weak self] valid in
            guard let self else { return }
            guard valid else {
                self.consensusBadSignatures += 1
                self.logger.warning("bad signature in a consensus message", metadata: ["peer": "\(peer)"])
                return
            }
            self.step(.message(message, from: sender))
        }
    }

    /// Steps the replica with `input` and every answer it leads to, in the order
    /// `ReplicaDriver` fixes; a storage failure or a diverged state stops the node.
    func step(_ input: Input) {
        assert(loop.isOnLoop, "the node's state is the loop thread's")
        guard stoppedValue.withLock({ $0 }) == nil else { return }
        do {
            try ReplicaDriver.drive(input, step: { replica.step($0) }, persist: persistSafety, perform: perform)
        } catch {
            stopSelf("\(error)")
        }
    }

    /// Carries out one action of the replica other than `.persist`; returns the answer
    /// it calls for.
    func perform(_ action: Action) throws -> Input? {
        switch action {
        case .persist:
            preconditionFailure("ReplicaDriver hands safety records to persistSafety")
        case let .send(message, to):
            if let peer = partnersByValidator[to] { send(message, to: peer) }
        case let .broadcast(message):
            broadcast(message)
        case let .requestPayload(seq, commandsMax):
            return .payload(seq: seq, commands: mempool.take(commandsMax, tick: tickCount))
        case let .execute(certified):
            return try execute(certified)
        case let .serveState(fromSeq, to, blocksMax):
            guard let peer = partnersByValidator[to] else { break }
            var blocks: [CertifiedBlock] = []
            for height in fromSeq..<fromSeq.saturatingAdding(UInt64(blocksMax)) {
                guard let record = try store.block(at: height), let body = record.body,
                    let block = try? Block(wireBytes: body), let certificate = try? CommitCertificate(wireBytes: record.certificate)
                else { break }
                blocks.append(CertifiedBlock(block: block, certificate: certificate))
            }
            if !blocks.isEmpty { transport.send(Message.stateResponse(blocks).wireBytes, to: peer) }
        case let .evidence(equivocation):
            equivocations += 1
            logger.warning("equivocation evidence", metadata: ["first": "\(equivocation.first)"])
        case let .rejected(reason, from):
            consensusRejected += 1
            logger.debug("consensus message rejected", metadata: ["from": "\(partnersByValidator[from] ?? "?")", "reason": "\(reason)"])
        case let .enteredView(view):
            logger.info("entered view", metadata: ["view": "\(view)"])
        case let .enteredEpoch(epoch):
            logger.info("entered epoch", metadata: ["firstSeq": "\(epoch.firstSeq)", "validators": "\(epoch.validators.count)"])
        case let .stateDiverged(seq, ours, certified):
            throw NodeError.diverged("state root at \(seq) is \(ours.hex), the quorum certified \(certified.hex)")
        }
        return nil
    }

    func send(_ message: Message, to peer: String) {
        #if CALISSON_FAULTS
        if byzantine != nil {
            for (peer, payload) in byzantine!.outgoing(message, to: [peer]) { transport.send(payload, to: peer) }
            return
        }
        #endif
        transport.send(message.wireBytes, to: peer)
    }

    func broadcast(_ message: Message) {
        #if CALISSON_FAULTS
        if byzantine != nil {
            let peers = transport.configuration.peers.map(\.id).sorted()
            for (peer, payload) in byzantine!.outgoing(message, to: peers) { transport.send(payload, to: peer) }
            return
        }
        #endif
        transport.broadcast(message.wireBytes)
    }

    /// Makes the replica's safety records durable, then the certificates of the
    /// checkpoints they make stable, and compacts the log below a new stable checkpoint.
    func persistSafety(_ records: [SafetyRecord]) throws {
        try store.appendSafety(records.map(\.wireBytes))
        var stabilized = false
        for case let .stable(certificate, _) in records {
            try store.putCheckpoint(height: certificate.seq, certificate: certificate.wireBytes)
            stabilized = true
        }
        // A stable checkpoint lets the log drop what is below it: it is replaced by the
        // records of its fold (the replica's, which is what was just persisted), in one
        // transaction. Without it the log grew by a few records per block, for ever, and
        // a restart folded all of them.
        if stabilized, let records = replica.safety.compacted { try store.compactSafety(records.map(\.wireBytes)) }
        try pruneHistory()
    }

    func pruneHistory() throws {
        guard let (height, certificate) = try store.checkpoint(atOrBelow: store.height), height > prunedThrough else { return }
        try recordHandover(at: height, certificate: certificate)
        try store.pruneHistory(through: height)
        prunedThrough = height
    }

    /// At each newly served checkpoint (its state still provable): if its validator keys
    /// record a change not handed over yet, keep the record, its proof and the certificate,
    /// so that light clients can follow the change long after (Docs/QUERY.md).
    func recordHandover(at height: UInt64, certificate bytes: [UInt8]) throws {
        let certificate = try CheckpointCertificate(wireBytes: bytes)
        let key = StateKeys.validatorKeys
        let proof = StateTree.proof(for: key, root: certificate.stateRoot, nodes: ledger.store)
        guard let leaf = proof.terminal, leaf.key == key,
            let value = try store.values(of: key, after: height).first(where: { StateTree.valueHash($0) == leaf.valueHash }),
            let record = try? ValidatorKeys(wireBytes: value)
        else { return }  // a chain from before the record existed
        if lastHandover == nil { lastHandover = try store.lastHandover() }
        guard record.changedAt > lastHandover ?? 0 else { return }
        try store.putHandover(
            changedAt: record.changedAt, height: height,
            record: Handover(height: height, certificate: bytes, value: value, proof: proof).wireBytes)
        lastHandover = record.changedAt
        logger.notice("validator-set change handed over", metadata: ["changedAt": "\(record.changedAt)", "checkpoint": "\(height)"])
    }

    /// Executes a final block, persists it with its state, and returns the replica's feedback.
    func execute(_ certified: CertifiedBlock) throws -> Input {
        let block = certified.block
        let commands = block.commands
        let outcome = try store.reading {
            ledger.execute(commands, verify: { [verifyCache] check in verifyCache.contains(check) || check.verify() })
        }
        let ids = block.commandIDs
        var newSet: ValidatorSet?
        if let keys = outcome.validators, let set = ValidatorSet(keys) {
            newSet = set
            schedule.schedule(set, executedAt: block.seq)
        }
        let record = BlockRecord(
            height: block.seq, digest: block.digest, body: block.wireBytes, certificate: certified.certificate.wireBytes,
            stateRoot: outcome.stateRoot,
            transactions: zip(zip(ids, outcome.results), outcome.accounts).map { pair, accounts in
                TransactionRecord(id: pair.0, result: StoreAnswers.result(pair.1), accounts: accounts.map(\.bytes))
            })
        var extras = ["schedule": schedule.wireBytes]
        if let events = StoreAnswers.eventsExtra(
            closedEpoch: outcome.closedEpoch, decided: outcome.decidedProposals, opened: outcome.openedProposals) {
            extras[StoreAnswers.eventsExtraName(block.seq)] = events
        }
        try ledger.store.persist(record, extras: extras)
        for (position, (id, result)) in zip(ids, outcome.results).enumerated() {
            guard let waiting = waiters.removeValue(forKey: id) else { continue }
            waiterCount -= waiting.count
            let answer = ClientResponse.transaction(StoreAnswers.location(height: block.seq, position: position, result: StoreAnswers.result(result)))
            for waiter in waiting { waiter.respond(answer.wireBytes) }
        }
        answerBlockWaiters(expiredOnly: false)
        try pruneHistory()
        mempool.remove(Set(ids))
        if outcome.validators != nil || outcome.partnersChanged { refreshValidatorDirectory() }
        if outcome.partnersChanged {
            // Links of partners no longer registered (or with another key now) are closed;
            // a newly admitted partner may link.
            let registry = Self.registry(ledger)
            if registry != transport.configuration.registry {
                transport.update(peers: transport.configuration.peers, registry: registry, revokedSerials: transport.configuration.revokedSerials)
                logger.notice("TLS registry updated from governance", metadata: ["partners": "\(registry.keys.sorted())"])
            }
        }
        lastProgressTick = tickCount
        blocksExecuted += 1
        for result in outcome.results { if result == .applied { applied += 1 } else { rejected += 1 } }
        heightValue.withLock { $0 = block.seq }
        rootValue.withLock { $0 = outcome.stateRoot }
        return .executed(seq: block.seq, stateRoot: outcome.stateRoot, validators: newSet)
    }

    func stopSelf(_ reason: String) {
        stoppedValue.withLock { $0 = reason }
        logger.critical("node stopped", metadata: ["reason": "\(reason)"])
        ticker?.cancel()
    }
}
