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

// Clients and admission (loop thread): requests answered from the store and the ledger,
// submissions checked and kept in the mempool, waiters for final transactions and blocks;
// signature checks handed to the verifier, off the loop.
extension NodeRuntime {
    /// Answers a client on the loop thread (the store and ledger are read here): what
    /// `ClientAnswers` says, a submission through admission, a wait as a waiter.
    func answer(_ bytes: [UInt8], _ respond: @escaping @Sendable ([UInt8]) -> Void) {
        assert(loop.isOnLoop, "the node's state is the loop thread's")
        let request: ClientRequest
        do { request = try ClientRequest(wireBytes: bytes).bounded } catch { return respond(ClientResponse.error("\(error)").wireBytes) }
        let outcome = ClientAnswers(store: store, ledger: ledger).outcome(of: request) {
            NodeStatus(
                partner: configuration.transport.selfID, height: ledger.height, stateRoot: ledger.stateRoot, view: replica.view,
                epochFirstSeq: replica.epoch.firstSeq, peers: transport.linkedPeersOnLoop(), mempool: UInt64(mempool.count),
                transactionsApplied: UInt64(clamping: applied), cpuMilliseconds: ProcessUsage.cpuMilliseconds(),
                uptimeMilliseconds: UInt64(clamping: started.duration(to: .now).components.seconds) &* 1_000)
        }
        switch outcome {
        case let .answer(response):
            respond(response.wireBytes)
        case let .submit(transaction):
            admit(transaction, gossip: true) { [weak self] refusal in
                if let refusal {
                    self?.refused += 1
                    respond(ClientResponse.refused("\(refusal)").wireBytes)
                } else {
                    respond(ClientResponse.admitted(id: SignedTransaction.idTag.hash(transaction)).wireBytes)
                }
            }
        case let .waitFinal(id, timeout):
            guard waiterCount < Self.waitersMax else { return respond(ClientResponse.error("too many clients waiting").wireBytes) }
            waiters[id, default: []].append((respond, tickCount + max(1, UInt64(timeout) / configuration.tickMilliseconds)))
            waiterCount += 1  // answered at execution or at the deadline
        case let .waitBlocks(from, limit, wait):
            guard waiterCount < Self.waitersMax else { return respond(ClientResponse.error("too many clients waiting").wireBytes) }
            blockWaiters.append((from, limit, respond, tickCount + max(1, UInt64(wait) / configuration.tickMilliseconds)))
            waiterCount += 1  // answered when block `from` is final, or at the deadline
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

    /// Partner id ↔ node key, from the ledger's partners (validators and others alike).
    func refreshValidatorDirectory() {
        validatorsByPartner = [:]
        partnersByValidator = [:]
        for id in ledger.partnerIDs {
            guard let key = ledger.partner(id)?.nodeKey else { continue }
            validatorsByPartner[id.rawValue] = key
            partnersByValidator[key] = id.rawValue
        }
    }

    /// Admission, on the loop: the cheap checks here, the signature on the verifier (off
    /// the loop, batched across cores, cache first), then `accept` back on the loop.
    /// `done` runs on the loop with nil (admitted) or the reason.
    func admit(_ bytes: [UInt8], gossip: Bool, done: @escaping (AdmissionError?) -> Void = { _ in }) {
        assert(loop.isOnLoop, "the node's state is the loop thread's")
        guard !mempool.isFull else { return done(.mempoolFull) }
        guard bytes.count <= SignedTransaction.byteCountMax else { return done(.malformed("over \(SignedTransaction.byteCountMax) bytes")) }
        let signed: SignedTransaction
        do { signed = try SignedTransaction(wireBytes: bytes) } catch { return done(.malformed("\(error)")) }
        let tx = signed.transaction
        guard tx.chainId == ledger.chainId, let digest = tx.signingDigest else { return done(.wrongChain) }
        guard tx.expiryHeight > ledger.height else { return done(.expired(expiryHeight: tx.expiryHeight, height: ledger.height)) }
        let key: Ed25519PublicKey
        switch tx.signer {
        case let .citizen(account): key = account
        case let .partner(id):
            guard let partner = ledger.partner(id) else { return done(.unknownSigner) }
            key = partner.signingKey
        }
        let id = SignedTransaction.idTag.hash(bytes)
        guard !mempool.contains(id) else { return done(.duplicate) }
        let check = SignatureCheck(publicKey: key, digest: digest, signature: signed.signature)
        let queued = verify([check]) { [weak self] valid in
            guard let self else { return }
            guard valid else { return done(.badSignature) }
            done(self.accept(bytes, id: id, signer: tx.signer, nonce: tx.nonce, gossip: gossip))
        }
        if !queued { done(.verifierBusy) }
    }

    /// Back on the loop after the signature checked out: the checks that depend on state
    /// that may have moved meanwhile, then the mempool and gossip.
    func accept(_ bytes: [UInt8], id: SHA256Digest, signer: TransactionSigner, nonce: UInt64, gossip: Bool) -> AdmissionError? {
        guard !mempool.isFull else { return .mempoolFull }
        // Already applied (the same signer and nonce is recorded until the expiry passes).
        guard ledger.store.value(StateKeys.used(signer, nonce: nonce)) == nil else { return .nonceUsed(nonce) }
        do { try mempool.insert(id: id, bytes: bytes) } catch {
            return error == .full ? .mempoolFull : .duplicate
        }
        admitted += 1
        if gossip { transport.gossip(bytes) }
        return nil
    }

    /// Hands signature checks to the verifier queue; `then` runs on the loop with whether
    /// all of them hold. False (and `then` never runs) when `verificationPendingMax` items
    /// already wait: the caller refuses or drops (consensus resends).
    func verify(_ checks: [SignatureCheck], then: @escaping (Bool) -> Void) -> Bool {
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
        if schedule { verifier.async { [weak self] in self?.drainVerification() } }
        return true
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
        if !loop.executeWaiting({ for (item, valid) in zip(handOver.items, handOver.outcomes) { item.then(valid) } }) {
            logger.notice("verified work dropped: the node is stopping", metadata: ["items": "\(items.count)"])
        }
    }

    /// Answers the clients following the chain whose next block is now final (or whose
    /// wait is over).
    func answerBlockWaiters(expiredOnly: Bool) {
        guard !blockWaiters.isEmpty else { return }
        var kept: [(from: UInt64, limit: UInt32, respond: @Sendable ([UInt8]) -> Void, until: UInt64)] = []
        for waiter in blockWaiters {
            let ready = !expiredOnly && waiter.from <= store.height
            guard ready || waiter.until <= tickCount else {
                kept.append(waiter)
                continue
            }
            waiterCount -= 1
            let list = (try? answers.blocks(from: waiter.from, limit: waiter.limit)) ?? []
            waiter.respond(ClientResponse.blocks(list).wireBytes)
        }
        blockWaiters = kept
    }

    func expireWaiters() {
        answerBlockWaiters(expiredOnly: true)
        for id in Array(waiters.keys) {
            guard let waiting = waiters[id] else { continue }
            let (due, left) = (waiting.filter { $0.until <= tickCount }, waiting.filter { $0.until > tickCount })
            guard !due.isEmpty else { continue }
            waiters[id] = left.isEmpty ? nil : left
            waiterCount -= due.count
            for waiter in due { waiter.respond(ClientResponse.transaction(nil).wireBytes) }
        }
    }
}
