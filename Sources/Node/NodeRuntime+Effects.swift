import Consensus
import CalissonCrypto
import Foundation
import LightClient
import Ledger
import Logging
import NodeCore
import Storage
import Synchronization
import Transport
import Wire

extension Transport {
    /// Carries out a node core's network effect (a message to a peer or to all, a
    /// transaction gossiped); false, doing nothing, for any other effect.
    @discardableResult
    public func carryOut(_ effect: NodeEffect) -> Bool {
        switch effect {
        case let .send(message, peer): send(message.wireBytes, to: peer)
        case let .broadcast(message): broadcast(message.wireBytes)
        case let .sendFrame(payload, gossip, peer): send(payload, kind: gossip ? .gossip : .consensus, to: peer)
        case let .broadcastGossip(transaction): broadcast(transaction, kind: .gossip)
        case let .gossip(transaction): gossip(transaction)
        case let .forgetGossip(ids): forgetGossip(ids)
        default: return false
        }
        return true
    }
}

/// A client the core may answer: a request on the client port, or a local submission.
enum Client {
    /// Answered with a client response (a submission's answer names its transaction).
    case remote(@Sendable ([UInt8]) -> Void, submitted: SHA256Digest?)
    /// `NodeRuntime.submit`: admitted (nil) or why not.
    case local((AdmissionError?) -> Void)
}

// The shell's half of the contract: inputs fed to the core on the loop thread, and the
// effects it answers carried out in the order given, once what they depend on is durable.
//
// Group commit: the core's writes during a turn of the loop go into one SQLite batch,
// committed at the end of the turn; the effects of the turn's drives are carried out, in
// order, once that commit is on disk. A vote leaves only once recorded, a client hears
// that its transaction is final only once its block is on disk, as when every write was
// synced on its own.
//
// The sync off the loop: once started, the node commits a turn's batch without syncing it
// and hands the sync to a thread of its own (`WALSyncer`). The loop waits for it at most
// `syncWait` (a fast sync: the turn's effects leave at once, as when the loop synced); past
// that, the turn's effects wait in `unsynced` until the thread reports the commit synced,
// while the loop goes on with the next turns (reading the network, answering reads,
// executing the next block). One sync covers every commit made before it, so when the disk
// is slow the commits of several turns share one. Effects leave in the order they were
// given, across turns too: those of a turn that wrote nothing wait behind earlier ones
// still waiting for their sync. Signature checks, requests for final blocks, admissions
// and gossip depend on nothing written and go at once (`dependsOnNothingWritten`).
extension NodeRuntime {
    /// Gives `input` to the core (loop thread); its effects are carried out at the end of
    /// the turn (`endTurn`), after the commit of what it wrote, except those that depend on
    /// nothing written (`dependsOnNothingWritten`): they go at once, so that the verifier
    /// works while the loop goes on with the turn, and a request for blocks never waits for
    /// a disk.
    func run(_ input: NodeInput) {
        assert(loop.isOnLoop, "the node's core is the loop thread's")
        var inputs = [input]
        while !inputs.isEmpty {
            let input = inputs.removeFirst()
            if let failure = core.failure {
                refuse(input, failure)
                continue
            }
            if !store.isBatchOpen {
                do { try store.beginBatch(deferringSync: syncsOffLoop) } catch {
                    held += core.stop("the database refused to open a write batch: \(error)")
                    continue
                }
            }
            var effects = core.drive(input)
            #if CALISSON_FAULTS
            if byzantine != nil { effects = byzantine!.rewrite(effects, peers: core.peers) }
            #endif
            for effect in effects {
                guard Self.dependsOnNothingWritten(effect) else {
                    held.append(effect)
                    continue
                }
                if let next = perform(effect) { inputs.append(next) }
            }
        }
    }

    /// Effects that claim nothing the turn wrote, carried out at once rather than after its
    /// commit and sync: signature checks; a request for final blocks (unsigned); admissions
    /// and gossip (the mempool is in memory: an admission promises nothing durable, and a
    /// refusal such as a nonce used reads only blocks a quorum made final). A node whose
    /// disk is slow or hangs thus still learns the blocks it missed and executes them, and
    /// admits and relays transactions, while its votes, the finality it tells clients and
    /// the height it reports wait for its writes. An answer of blocks waits too: a block's
    /// commit certificate may carry this node's own vote, which may leave only once recorded.
    static func dependsOnNothingWritten(_ effect: NodeEffect) -> Bool {
        switch effect {
        case .verify, .send(.stateRequest, _), .admission, .gossip, .broadcastGossip, .forgetGossip: true
        default: false
        }
    }

    /// At the end of each turn of the loop, before the frames it gathered are written:
    /// commits the turn's writes, then carries out the effects of its drives in order (at
    /// once when the commit was synced in it, else once the syncer reports it, `synced`);
    /// the inputs those effects call for at once are driven and committed in turn. If the
    /// commit fails, or a drive stopped the core, nothing of the batch is kept and none of
    /// its effects goes out but the stop and the events (the stop answers every client
    /// waiting).
    func endTurn() {
        verificationPlace.turnEnded()
        while store.isBatchOpen || !held.isEmpty {
            var effects = held
            held = []
            var committed = false
            if core.failure == nil, store.isBatchOpen {
                do {
                    committed = try store.commitBatch()
                    if committed { batchesCommitted += 1 }
                } catch {
                    effects = core.stop("the database could not commit the turn's writes: \(error)")
                }
            }
            if core.failure != nil {
                store.rollbackBatch()
                committed = false
                effects = effects.filter {
                    switch $0 {
                    case .stopped, .event: return true
                    default: return false
                    }
                }
            }
            if committed, syncsOffLoop {
                commitsMade += 1
                unsynced.append((commitsMade, core.ledger.height, effects))
                syncer.request(through: commitsMade)
            } else if !unsynced.isEmpty {
                unsynced[unsynced.count - 1].effects += effects  // behind those waiting: in order
            } else {
                syncedHeight = core.ledger.height  // nothing waits for a sync: all that is stored is synced
                for effect in effects {
                    if let next = perform(effect) { run(next) }
                }
                continue
            }
            // A fast sync (most are, on a local SSD) is waited for: the turn's votes and
            // answers leave now, as before, rather than after the loop's next turn (executing
            // a block, say). A slow one is not: the loop goes on. Nor is one that nothing
            // waits for (a turn that only wrote a slice of the state); effects behind such
            // commits only are waited for as the first.
            if !effects.isEmpty, unsynced.dropLast().allSatisfy({ $0.effects.isEmpty }),
                syncer.wait(through: commitsMade, timeout: Self.syncWait) {
                synced(through: commitsMade, nil)
            }
        }
    }

    /// The syncer's report (loop thread): the effects of the commits it covered go out, in
    /// order. A failed sync stops the node: what it covered may not be on disk, so none of
    /// the effects waiting goes out (their clients hear that the node stopped).
    func synced(through commit: UInt64, _ failure: WALSyncer.Failure?) {
        assert(loop.isOnLoop, "the node's core is the loop thread's")
        if let failure {
            guard !unsynced.isEmpty || core.failure == nil else { return }
            unsynced = []
            logger.critical("the database's write-ahead log could not be synced", metadata: ["reason": "\(failure)"])
            for effect in core.stop("\(failure)") { perform(effect) }
            return
        }
        commitsSynced = max(commitsSynced, commit)
        var ready = 0
        while ready < unsynced.count, unsynced[ready].commit <= commit { ready += 1 }
        guard ready > 0 else { return }
        let groups = unsynced.prefix(ready)
        unsynced.removeFirst(ready)
        for group in groups {
            syncedHeight = max(syncedHeight, group.height)
            for effect in group.effects {
                if let next = perform(effect) { run(next) }
            }
        }
    }

    /// A stopped core takes no input: a client's request is answered at once.
    func refuse(_ input: NodeInput, _ failure: String) {
        switch input {
        case let .submit(_, client?): answerStopped(client, failure)
        case let .waitFinal(_, _, client), let .waitBlocks(_, _, _, client): answerStopped(client, failure)
        case let .verified(.admission(admission), _): if let client = admission.client { answerStopped(client, failure) }
        default: break
        }
    }

    /// Answers a client of a stopped core: a submission `stopping`, a wait an error.
    func answerStopped(_ token: ClientToken, _ failure: String) {
        switch takeClient(token) {
        case let .remote(respond, _?)?: respond(ClientResponse.refused("\(AdmissionError.stopping)").wireBytes)
        case let .remote(respond, nil)?: respond(ClientResponse.error("the node stopped: \(failure)").wireBytes)
        case let .local(done)?: done(.stopping)
        case nil: break
        }
    }

    func tick() {
        let now = ContinuousClock.now
        if let lastTick {
            let elapsed = lastTick.duration(to: now).components
            let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
            loopLag.record(max(0, seconds - Double(configuration.tickMilliseconds) / 1_000))
        }
        lastTick = now
        let refill = Self.snapshotItemsPerSecond * Int(clamping: min(configuration.tickMilliseconds, 1_000)) / 1_000
        snapshotItemsBudget = min(Self.snapshotItemsPerSecond, snapshotItemsBudget + refill)
        let checkpoints = store.checkpoints
        if checkpoints.failed > checkpointFailuresLogged {
            checkpointFailuresLogged = checkpoints.failed
            logger.warning("WAL checkpoint failed on the checkpointer thread", metadata: ["failures": "\(checkpoints.failed)", "reason": "\(checkpoints.lastFailure ?? "?")"])
        }
        let peers = transport.configuration.peers.map(\.id).sorted()
        if peers != core.peers { core.peers = peers }
        core.linkedPeers = transport.linkedPeersOnLoop()
        #if CALISSON_FAULTS
        if byzantine != nil {
            for (peer, gossip, payload) in byzantine!.extra(to: core.peers) { perform(.sendFrame(payload, gossip: gossip, to: peer)) }
        }
        #endif
        run(.tick)
    }

    /// The next slice of the state's write at a checkpoint (Docs/STORAGE.md, "The state
    /// written in slices"), half a tick after each tick: in a turn of the loop of its own, so
    /// that what the tick sends (a proposal, votes) does not wait for the slice's writes and
    /// their commit. A failed write stops the node, as any failed write does.
    func writeStateSlice() {
        guard core.failure == nil else { return }
        if !store.isBatchOpen {
            do { try store.beginBatch(deferringSync: syncsOffLoop) } catch {
                held += core.stop("the database refused to open a write batch: \(error)")
                return
            }
        }
        do { try core.storage.advanceStateWrite() } catch {
            held += core.stop("the state's write at a checkpoint failed: \(error)")
        }
        // A step of the filter of the state's keys (Docs/STORAGE.md); a failed read leaves it
        // unbuilt, every read then going to the table, and the next tick tries again.
        do { try store.advanceKeyFilter() } catch {
            if !keyFilterFailed { logger.warning("the state's key filter could not be built", metadata: ["reason": "\(error)"]) }
            keyFilterFailed = true
        }
    }

    /// Carries out one effect; returns the input it calls for at once, if any.
    @discardableResult
    func perform(_ effect: NodeEffect) -> NodeInput? {
        switch effect {
        case .send, .broadcast, .sendFrame, .broadcastGossip, .gossip, .forgetGossip:
            transport.carryOut(effect)
        case let .verify(checks, pending):
            if let valid = verifyOnLoop(checks) { return .verified(pending, valid ? .valid : .invalid) }
            let queued = verify(checks) { [weak self] valid in self?.run(.verified(pending, valid ? .valid : .invalid)) }
            if !queued { return .verified(pending, .busy) }
        case let .admission(token, refusal):
            switch takeClient(token) {
            case let .remote(respond, id)?:
                respond((refusal.map { ClientResponse.refused("\($0)") } ?? .admitted(id: id ?? .zero)).wireBytes)
            case let .local(done)?: done(refusal)
            case nil: break
            }
        case let .respond(token, response):
            if case let .remote(respond, _)? = takeClient(token) { respond(response.wireBytes) }
        case let .respondBlocks(token, from, limit):
            guard case let .remote(respond, _)? = takeClient(token) else { break }
            let shown = from > syncedHeight ? 0 : UInt32(clamping: min(UInt64(clamping: limit), syncedHeight - from + 1))
            // Clients following the chain wait for the same next block: read and encoded
            // once for all of them (final blocks' summaries do not change).
            if let last = lastBlocksAnswer, last.from == from, last.count == shown {
                respond(last.bytes)
            } else if let list = try? answers.blocks(from: from, limit: shown) {
                let bytes = ClientResponse.blocks(list).wireBytes
                if list.count == Int(clamping: shown) { lastBlocksAnswer = (from, shown, bytes) }
                respond(bytes)
            } else {
                respond(ClientResponse.blocks([]).wireBytes)
            }
        case .partnersChanged:
            // Links of partners no longer registered (or with another key now) are closed;
            // a newly admitted partner may link; the peers dialled follow the endpoints.
            let registry = Self.registry(core.ledger)
            let peers = Self.peers(core.ledger, bootstrap: bootstrapPeers, selfID: configuration.transport.selfID)
            if registry != transport.configuration.registry || peers != transport.configuration.peers {
                if registry != transport.configuration.registry {
                    logger.notice("TLS registry updated from governance", metadata: ["partners": "\(registry.keys.sorted())"])
                }
                if peers != transport.configuration.peers {
                    logger.notice("peers updated from the ledger", metadata: ["peers": "\(Self.describe(peers))"])
                }
                transport.update(peers: peers, registry: registry, revokedSerials: transport.configuration.revokedSerials)
            }
        case let .event(event): note(event)
        case let .stopped(reason):
            if let upgrade = core.missingUpgrade {
                upgradeValue.withLock { $0 = upgrade }
                logger.critical("node stopped for an upgrade it lacks", metadata: ["upgrade": "\(upgrade.name)", "reason": "\(reason)"])
            } else {
                logger.critical("node stopped", metadata: ["reason": "\(reason)"])
            }
            stoppedValue.withLock { $0 = reason }
            ticker?.cancel()
            stateSlicer?.cancel()
            // The clients the core had not answered yet will not be: answer them now.
            for token in Array(clients.keys) { answerStopped(token, reason) }
        }
        return nil
    }

    /// Whether the `count`th refusal of a kind is logged (`Transport.logsRefusal`).
    static func logsRefusal(_ count: Int) -> Bool { Transport.logsRefusal(count) }

    func note(_ event: NodeEvent) {
        switch event {
        case let .undecodable(peer, error):
            let count = core.counters.undecodable
            if Self.logsRefusal(count) {
                logger.warning("undecodable consensus message", metadata: ["peer": "\(peer)", "error": "\(error)", "soFar": "\(count)"])
            }
        case let .badSignature(peer):
            let count = core.counters.badSignatures
            if Self.logsRefusal(count) {
                logger.warning("bad signature in a consensus message: its peer is distrusted (messages dropped unchecked a while, then a smaller share)",
                               metadata: ["peer": "\(peer)", "level": "\(core.distrust(of: peer))", "soFar": "\(count)"])
            }
        case let .rejected(reason, from):
            logger.debug("consensus message rejected", metadata: ["from": "\(core.partnersByValidator[from] ?? "?")", "reason": "\(reason)"])
        case let .evidence(equivocation):
            if let evidence = EquivocationEvidence(equivocation) {
                // What a partner submits (`calisson submit report-equivocation --evidence HEX`; Docs/OPERATIONS.md).
                logger.warning("equivocation evidence", metadata: [
                    "validator": "\(core.partnersByValidator[evidence.nodeKey] ?? evidence.nodeKey.bytes.hex)", "kind": "\(evidence.kind)",
                    "view": "\(evidence.view)", "height": "\(evidence.seq)", "evidence": "\(Hex.encode(evidence.wireBytes))",
                ])
            } else {
                logger.warning("equivocation evidence (of a kind no transaction carries)", metadata: ["first": "\(equivocation.first)"])
            }
        case let .enteredView(view):
            logger.info("entered view", metadata: ["view": "\(view)"])
        case let .enteredEpoch(firstSeq, validators):
            logger.info("entered epoch", metadata: ["firstSeq": "\(firstSeq)", "validators": "\(validators)"])
        case let .executed(height, stateRoot):
            heightValue.withLock { $0 = height }
            rootValue.withLock { $0 = stateRoot }
        case let .handover(changedAt, checkpoint):
            logger.notice("validator-set change handed over", metadata: ["changedAt": "\(changedAt)", "checkpoint": "\(checkpoint)"])
        case .verificationDropped:
            break  // counted where the verifier refused it (`droppedForVerification`)
        case let .peerVerificationDropped(peer, checks, bytes):
            let dropped = core.counters.peerVerificationDropped
            if Self.logsRefusal(dropped) {
                logger.warning("consensus message dropped unchecked: its peer's share of the verifier is full", metadata: [
                    "peer": "\(peer)", "checks": "\(checks)", "bytes": "\(bytes)", "droppedSoFar": "\(dropped)"])
            }
        }
    }

    /// A token for a client the core will answer; a wait's is kept by its connection's
    /// `link` too, so that it is dropped when the connection closes.
    func token(for client: Client, waitingOn link: ClientLink? = nil) -> ClientToken {
        nextClient += 1
        let token = ClientToken(nextClient)
        clients[token] = client
        if let link {
            waitsByLink[link, default: []].insert(token)
            linkOfWait[token] = link
        }
        return token
    }

    /// The client of `token`, no longer kept: it is being answered.
    func takeClient(_ token: ClientToken) -> Client? {
        assert(loop.isOnLoop, "the node's clients are the loop thread's")
        if let link = linkOfWait.removeValue(forKey: token) {
            waitsByLink[link]?.remove(token)
            if waitsByLink[link]?.isEmpty == true { waitsByLink[link] = nil }
        }
        return clients.removeValue(forKey: token)
    }

    /// A client connection closed (loop thread): its waits are dropped from the core, so
    /// that a client closing and reconnecting cannot fill `waitersMax` for everyone.
    func clientClosed(_ link: ClientLink) {
        assert(loop.isOnLoop, "the node's clients are the loop thread's")
        guard let tokens = waitsByLink.removeValue(forKey: link) else { return }
        for token in tokens {
            clients[token] = nil
            linkOfWait[token] = nil
        }
        // Driven directly, not through `run`: it writes nothing and answers no one, so it
        // needs no write batch (a close can come after the turn's commit, as its writes go out).
        _ = core.drive(.clientsGone(tokens))
    }

    /// Admits a transaction for `submit` (loop thread); `done` runs on the loop.
    func submit(_ transaction: [UInt8], done: @escaping (AdmissionError?) -> Void) {
        run(.submit(transaction, client: token(for: .local(done))))
    }

    /// Answers a client on the loop thread: what `ClientAnswers` reads from the store and
    /// the ledger now, or a submission or a wait handed to the core.
    func answer(_ bytes: [UInt8], link: ClientLink, _ respond: @escaping @Sendable ([UInt8]) -> Void) {
        assert(loop.isOnLoop, "the node's core is the loop thread's")
        let request: ClientRequest
        do { request = try ClientRequest(wireBytes: bytes).bounded } catch { return respond(ClientResponse.error("\(error)").wireBytes) }
        // A node that stopped answers nothing from its state: after a failed turn (rolled
        // back) its state in memory may be ahead of its file (found by review).
        if let failure = core.failure { return respond(ClientResponse.error("this node stopped: \(failure.prefix(300))").wireBytes) }
        let ledger = core.ledger
        // A validator set scheduled after the current epoch (a governance change not in force yet).
        let pending = core.replica.schedule.epochs.last.flatMap { $0.firstSeq > core.replica.epoch.firstSeq ? $0 : nil }
        let name = { [core] (key: ValidatorID) in core.partnersByValidator[key] ?? "key \(key.bytes.hex.prefix(16))" }
        let outcome = ClientAnswers(
            store: store, ledger: ledger, snapshotItemsAllowed: snapshotItemsBudget, visibleHeight: syncedHeight,
            decidedBytesMax: configuration.blockContentsDecidedBytesMax).outcome(of: request) {
            NodeStatus(
                partner: configuration.transport.selfID, height: ledger.height, stateRoot: ledger.stateRoot, view: core.replica.view,
                epochFirstSeq: core.replica.epoch.firstSeq, peers: transport.linkedPeersOnLoop(), mempool: UInt64(core.mempool.count),
                transactionsApplied: UInt64(clamping: core.counters.applied), cpuMilliseconds: ProcessUsage.cpuMilliseconds(),
                uptimeMilliseconds: UInt64(clamping: started.duration(to: .now).components.seconds) &* 1_000,
                knownFinalHeight: max(ledger.height, core.replica.knownFinalSeq), pendingValidators: pending.map { $0.validators.validators.map(name) } ?? [],
                pendingFromHeight: pending?.firstSeq, recentCertificates: UInt32(clamping: core.counters.recentCertificates),
                recentCertificatesSigned: UInt32(clamping: core.counters.recentCertificatesSigned),
                software: Release.version, rulesNewest: configuration.rulesNewest, rulesInForce: ledger.rules(atHeight: ledger.height + 1),
                pendingUpgrades: ledger.upgrades.pending(after: ledger.height),
                peerReleases: transport.peerVersionsOnLoop().sorted { $0.key < $1.key }.map { peer, version in
                    NodeStatus.PeerRelease(peer: peer, software: version?.software ?? "", rules: version?.rules ?? 0)
                })
        }
        let tick = configuration.tickMilliseconds
        switch outcome {
        case let .answer(response):
            if case let .treePages(items) = response { snapshotItemsBudget -= items.count }
            if case let .stateValues(items) = response { snapshotItemsBudget -= items.count }
            respond(response.wireBytes)
        case let .answerWhenSynced(response):
            // Behind the writes of this turn and those waiting for their sync (`endTurn`).
            held.append(.respond(token(for: .remote(respond, submitted: nil)), response))
        case let .submit(transaction):
            run(.submit(transaction, client: token(for: .remote(respond, submitted: SignedTransaction.idTag.hash(transaction)))))
        case let .waitFinal(id, timeout):
            run(.waitFinal(id, ticks: UInt64(timeout) / tick, client: token(for: .remote(respond, submitted: nil), waitingOn: link)))
        case let .waitBlocks(from, limit, wait):
            run(.waitBlocks(from: from, limit: limit, ticks: UInt64(wait) / tick, client: token(for: .remote(respond, submitted: nil), waitingOn: link)))
        }
    }

    /// Who may link, with which TLS key: the active partners with a registered TLS key hash,
    /// as the ledger has them now (the genesis ones, then governance's admissions, key
    /// rotations, suspensions and removals).
    static func registry(_ ledger: Ledger<StoredState>) -> [String: SHA256Digest] {
        var registry: [String: SHA256Digest] = [:]
        for id in ledger.partnerIDs {
            guard let partner = ledger.partner(id), partner.status == .active, let hash = partner.tlsKeyHash else { continue }
            registry[id.rawValue] = hash
        }
        return registry
    }

    /// The peers to link with: every other active partner the ledger lists endpoints for,
    /// at those endpoints; then the configuration's peers (the bootstrap) the ledger lists
    /// none for, unless it has them suspended or removed. The lower id dials
    /// (Docs/OPERATIONS.md, "Peers found in the ledger").
    static func peers(_ ledger: Ledger<StoredState>, bootstrap: [PeerAddress], selfID: String) -> [PeerAddress] {
        var peers: [PeerAddress] = []
        for id in ledger.partnerIDs where id.rawValue != selfID {
            let endpoints = ledger.endpoints(id)
            guard !endpoints.isEmpty, ledger.partner(id)?.status == .active else { continue }
            peers.append(PeerAddress(id: id.rawValue, endpoints: endpoints.map { PeerAddress.Endpoint(host: $0.host, port: $0.port) }))
        }
        for peer in bootstrap where !peers.contains(where: { $0.id == peer.id }) {
            if let id = Identifier(peer.id), let partner = ledger.partner(id), partner.status != .active { continue }
            peers.append(peer)
        }
        return peers.sorted { $0.id < $1.id }
    }

    static func describe(_ peers: [PeerAddress]) -> String {
        peers.map { "\($0.id)@\($0.endpoints.map(\.description).joined(separator: ","))" }.joined(separator: " ")
    }

    /// Hands signature checks to the verifier queue; `then` runs on the loop with whether
    /// all of them hold. False (and `then` never runs) when `verificationPendingMax` items
    /// already wait: the caller refuses or drops (consensus resends).
    func verify(_ checks: [SignatureCheck], then: @escaping (Bool) -> Void) -> Bool {
        assert(loop.isOnLoop, "the verifier's items are queued and handed back on the loop")
        let item = VerificationItem(checks: checks, then: then)
        let schedule = verificationQueue.withLock { queue -> Bool? in
            guard queue.count < Self.verificationPendingMax else { return nil }
            queue.append(item)
            return queue.count == 1
        }
        guard let schedule else {
            droppedForVerification += 1
            return false
        }
        verificationPlace.handedOut()
        if schedule { verifier.async { [weak self] in self?.drainVerification() } }
        return true
    }

    /// Whether `checks` all verify, checked here on the loop when that is cheaper than the
    /// verifier's round trip (two thread hand-overs: `VerificationPlace` says when). Nil:
    /// for the verifier.
    func verifyOnLoop(_ checks: [SignatureCheck]) -> Bool? {
        guard verificationPlace.onLoop(count: checks.count, uncached: { verifyCache.uncachedCount(checks) }) else { return nil }
        checkedOnLoop += 1
        return batchVerifier.verify(checks).allSatisfy { $0 }
    }

    /// On the verifier queue: every waiting item's checks in one batch (all cores, cache
    /// first), then the results back to the loop in one hand-over.
    func drainVerification() {
        assert(!loop.isOnLoop, "signature checks run off the loop")
        let items = verificationQueue.withLock { queue in
            let items = queue
            queue = []
            return items
        }
        guard !items.isEmpty else { return }
        let checks = items.flatMap(\.checks)
        var results: [Bool] = []
        for start in stride(from: 0, to: checks.count, by: BatchVerifier.batchCountMax) {
            results += batchVerifier.verify(Array(checks[start..<min(checks.count, start + BatchVerifier.batchCountMax)]))
        }
        var outcomes: [Bool] = []
        var offset = 0
        for item in items {
            outcomes.append(results[offset..<(offset + item.checks.count)].allSatisfy { $0 })
            offset += item.checks.count
        }
        let handOver = VerifiedItems(items: items, outcomes: outcomes)
        // Never lost while the node runs: a full loop queue makes the verifier wait for room
        // (back-pressure: submissions then wait, and past `verificationPendingMax` are refused).
        if !loop.executeWaiting({ [weak self] in
            guard let self else { return }
            for (item, valid) in zip(handOver.items, handOver.outcomes) {
                // Counted back one at a time: a check that an item's outcome calls for is not
                // taken on the loop while later items of this hand-over wait (their order).
                verificationPlace.handedBack()
                item.then(valid)
            }
        }) {
            logger.notice("verified work dropped: the node is stopping", metadata: ["items": "\(items.count)"])
        }
    }
}

/// Where the node verifies a set of signature checks (Docs/NODE.md, "Signature
/// verification"): on its loop, when that is cheaper than the verifier's round trip, or by
/// the verifier off the loop, on every core. A value of the loop thread.
public struct VerificationPlace: Sendable, Equatable {
    /// At most this many checks in a set checked on the loop, at most `uncachedMax` of them
    /// not in the verify cache (about 65 µs each here), and at most `uncachedPerTurnMax`
    /// of those a turn of the loop, give or take one set's: under load the checks go to the
    /// verifier, and the loop never spends more than about a millisecond a turn on them.
    public static let checksMax = 256
    public static let uncachedMax = 4
    public static let uncachedPerTurnMax = 16
    /// Items handed to the verifier and not yet handed back.
    public private(set) var out = 0
    /// Checks not in the cache verified on the loop this turn.
    public private(set) var thisTurn = 0

    public init() {}

    /// Whether a set of `count` checks, `uncached` of them not in the cache (asked only if
    /// needed), is verified on the loop now, counted if so: only with nothing out at the
    /// verifier, so that no result overtakes an earlier one.
    public mutating func onLoop(count: Int, uncached: () -> Int) -> Bool {
        guard out == 0, thisTurn < Self.uncachedPerTurnMax, count <= Self.checksMax else { return false }
        let uncached = uncached()
        guard uncached <= Self.uncachedMax else { return false }
        thisTurn += uncached
        return true
    }

    public mutating func handedOut() { out += 1 }
    /// One item back on the loop, before its outcome runs (so that a check the outcome
    /// calls for waits behind the items still to run).
    public mutating func handedBack() { out -= 1 }
    public mutating func turnEnded() { thisTurn = 0 }
}
