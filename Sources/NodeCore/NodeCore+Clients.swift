import Consensus
import CalissonCrypto
import Ledger
import LightClient
import Storage
import Wire

// Admission and the clients waiting: a transaction's cheap checks here, its signature by
// the shell (`.verify`), the checks that depend on state that may have moved meanwhile
// when the outcome comes back; waiters answered at execution or at their deadline.
extension NodeCore {
    /// Admission's first half: the checks that need no signature check. A transaction
    /// that passes goes to the shell's verifier; one that fails is answered now.
    mutating func admit(_ bytes: [UInt8], client: ClientToken?) {
        guard !mempool.isFull else { return answer(client, .mempoolFull) }
        guard bytes.count <= SignedTransaction.byteCountMax else { return answer(client, .malformed("over \(SignedTransaction.byteCountMax) bytes")) }
        let signed: SignedTransaction
        do { signed = try SignedTransaction(wireBytes: bytes) } catch { return answer(client, .malformed("\(error)")) }
        let tx = signed.transaction
        guard tx.chainId == ledger.chainId, let digest = tx.signingDigest else { return answer(client, .wrongChain) }
        guard tx.expiryHeight > ledger.height else { return answer(client, .expired(expiryHeight: tx.expiryHeight, height: ledger.height)) }
        // A body its signer can never have applied (the ledger rejects it at any state):
        // refused here rather than carried in the mempool, gossiped and cut into a block.
        if let wrong = tx.signerMismatch { return answer(client, .malformed(wrong)) }
        let key: Ed25519PublicKey
        switch tx.signer {
        case let .citizen(account): key = account
        case let .partner(id):
            guard let known = partnerSigningKey(id) else { return answer(client, .unknownSigner) }
            key = known
        }
        let id = SignedTransaction.idTag.hash(bytes)
        guard !mempool.contains(id) else { return answer(client, .duplicate) }
        // Before its signature is checked: a signer past its share costs no check.
        guard !mempool.isPastShare(tx.signer.mempoolOwner) else { return answer(client, .mempoolShare) }
        let check = SignatureCheck(publicKey: key, digest: digest, signature: signed.signature)
        effects.append(.verify([check], .admission(.init(bytes: bytes, id: id, signer: tx.signer, nonce: tx.nonce, expiry: tx.expiryHeight, client: client))))
    }

    /// A partner's signing key at the ledger's height (`signingKeys`).
    mutating func partnerSigningKey(_ id: Identifier) -> Ed25519PublicKey? {
        if signingKeys.height != ledger.height { signingKeys = (ledger.height, [:]) }
        if let known = signingKeys.keys[id] { return known }
        guard let key = ledger.partner(id)?.signingKey else { return nil }
        signingKeys.keys[id] = key
        return key
    }

    /// Admission's second half, once the signature checked out: the checks that depend on
    /// state that may have moved meanwhile, then the mempool and gossip. A client's
    /// transaction is flooded to the peers; one that came by gossip the transport floods itself.
    mutating func accept(_ admission: PendingCheck.Admission) -> AdmissionError? {
        guard !mempool.isFull else { return .mempoolFull }
        // Already applied (the same signer and nonce is recorded until the expiry passes).
        guard ledger.store.value(StateKeys.used(admission.signer, nonce: admission.nonce)) == nil else { return .nonceUsed(admission.nonce) }
        do { try mempool.insert(id: admission.id, bytes: admission.bytes, owner: admission.signer.mempoolOwner, expiry: admission.expiry) } catch {
            switch error {
            case .full: return .mempoolFull
            case .share: return .mempoolShare
            case .duplicate: return .duplicate
            }
        }
        counters.admitted += 1
        if admission.client != nil { effects.append(.gossip(admission.bytes)) }
        return nil
    }

    /// Answers a client's submission (gossip gets no answer).
    mutating func answer(_ client: ClientToken?, _ refusal: AdmissionError?) {
        guard let client else { return }
        if refusal != nil { counters.refused += 1 }
        effects.append(.admission(client, refusal))
    }

    /// Answers the clients following the chain whose next block is now final (or whose
    /// wait is over).
    mutating func answerBlockWaiters(expiredOnly: Bool) {
        guard !blockWaiters.isEmpty else { return }
        var kept: [(from: UInt64, limit: UInt32, client: ClientToken, until: UInt64)] = []
        for waiter in blockWaiters {
            let ready = !expiredOnly && waiter.from <= storage.height
            guard ready || waiter.until <= tickCount else {
                kept.append(waiter)
                continue
            }
            waiterCount -= 1
            effects.append(.respondBlocks(waiter.client, from: waiter.from, limit: waiter.limit))
        }
        blockWaiters = kept
    }

    /// Drops the waits of `tokens`, unanswered: their clients are gone.
    mutating func dropWaiters(_ tokens: Set<ClientToken>) {
        guard !tokens.isEmpty else { return }
        let before = blockWaiters.count
        blockWaiters.removeAll { tokens.contains($0.client) }
        waiterCount -= before - blockWaiters.count
        for id in Array(waiters.keys) {
            guard let waiting = waiters[id], waiting.contains(where: { tokens.contains($0.client) }) else { continue }
            let left = waiting.filter { !tokens.contains($0.client) }
            waiters[id] = left.isEmpty ? nil : left
            waiterCount -= waiting.count - left.count
        }
    }

    mutating func expireWaiters() {
        answerBlockWaiters(expiredOnly: true)
        for id in Array(waiters.keys) {
            guard let waiting = waiters[id] else { continue }
            let (due, left) = (waiting.filter { $0.until <= tickCount }, waiting.filter { $0.until > tickCount })
            guard !due.isEmpty else { continue }
            waiters[id] = left.isEmpty ? nil : left
            waiterCount -= due.count
            for waiter in due { effects.append(.respond(waiter.client, .transaction(nil))) }
        }
    }
}

extension TransactionSigner {
    /// Whose transaction it is, as the mempool counts its shares (`Mempool.isPastShare`): a
    /// citizen's key, or a partner's id in 32 bytes (its UTF-8, then zeros). A citizen key
    /// equal to a partner's padded id would need that key's private half, which no one has.
    var mempoolOwner: Bytes32 {
        switch self {
        case let .citizen(account): return account.bytes
        case let .partner(id):
            return Bytes32.filling { buffer in
                for (index, byte) in id.rawValue.utf8.prefix(Bytes32.byteCount).enumerated() { buffer[index] = byte }
            }
        }
    }
}
