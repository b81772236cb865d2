import Consensus
import CalissonCrypto
import Ledger
import LightClient
import Storage
import Wire

/// What a node answers a client request from its store and ledger. The node runs it on its
/// loop thread and performs the outcome (a submission goes to admission, a wait becomes a
/// waiter); the `answers` fuzz target runs the same code on a populated database, so what
/// a client can send is tried against the node's real answers.
public struct ClientAnswers {
    /// What to do with a request.
    public enum Outcome: Equatable, Sendable {
        /// Answer now.
        case answer(ClientResponse)
        /// Answer once the node's writes up to now are on disk: a transaction final in a
        /// block stored but not synced yet (the core's waiter for it was answered, or will
        /// be, at execution; this answer must not leave before the block is durable either).
        case answerWhenSynced(ClientResponse)
        /// Admit this transaction, then answer `admitted` or `refused`.
        case submit([UInt8])
        /// Not final yet: answer when it is, or at the deadline.
        case waitFinal(Bytes32, timeoutMilliseconds: UInt32)
        /// Block `from` is not final yet: answer when it is, or at the deadline.
        case waitBlocks(from: UInt64, limit: UInt32, waitMilliseconds: UInt32)
    }

    let store: NodeStore
    let ledger: Ledger<StoredState>
    /// How many pages or values a snapshot request may have now (the node's budget per
    /// second, `NodeRuntime.snapshotItemsPerSecond`, what is left of it): an answer with
    /// fewer than asked says "ask again for the rest".
    let snapshotItemsAllowed: Int
    /// The highest block shown with its commit certificate (blocks, a block, its contents and
    /// transactions, a transaction's inclusion proof): the node's, the highest whose commit
    /// is synced, since a certificate may carry the node's own vote, which leaves the node
    /// only once recorded on disk. A block above it is answered as not final yet.
    let visibleHeight: UInt64
    /// The bytes of decided proposals' records a block's contents carry (`StoreAnswers.blockContents`).
    let decidedBytesMax: Int

    public init(
        store: NodeStore, ledger: Ledger<StoredState>, snapshotItemsAllowed: Int = .max, visibleHeight: UInt64 = .max,
        decidedBytesMax: Int = StoreAnswers.decidedBytesMax
    ) {
        self.store = store
        self.ledger = ledger
        self.snapshotItemsAllowed = max(0, snapshotItemsAllowed)
        self.visibleHeight = visibleHeight
        self.decidedBytesMax = decidedBytesMax
    }

    /// The highest block shown now.
    var shownHeight: UInt64 { min(store.height, visibleHeight) }

    /// The outcome of one request (its limits already bounded by the caller: `.bounded`);
    /// `status` is asked only for a status request. A storage error is answered as an
    /// error naming it.
    public func outcome(of request: ClientRequest, status: () -> NodeStatus) -> Outcome {
        let answers = StoreAnswers(store: store)
        do {
            switch request {
            case let .submit(transaction): return .submit(transaction)
            case .status: return .answer(.status(status()))
            // Final only once shown: a block stored but not synced yet is not final here.
            case let .transaction(id): return .answer(.transaction(try answers.transaction(id).flatMap { $0.height <= visibleHeight ? $0 : nil }))
            case let .state(key):
                // The current state, its root computed for this read if the last block left
                // the tree's update to the next checkpoint and no read asked at this height.
                let found = try ledger.store.currentRecord(key)
                return .answer(.state(height: found.height, root: found.root, value: found.value, proof: found.proof))
            case let .waitFinal(id, timeout):
                if let found = try answers.transaction(id) {
                    return found.height <= visibleHeight ? .answer(.transaction(found)) : .answerWhenSynced(.transaction(found))
                }
                return .waitFinal(id, timeoutMilliseconds: timeout)
            case let .accountTransactions(account, limit):
                return .answer(.accountTransactions(try answers.accountTransactions(account, limit: limit, atMost: visibleHeight)))
            case let .transactionProof(id): return .answer(.transactionProof(try inclusion(of: id)))
            case let .transactionResult(id): return .answer(try resultProof(of: id))
            case let .certifiedState(key): return .answer(try certifiedState(key))
            case let .blocks(from, limit, wait):
                let shown = shownHeight
                if shown >= from || wait == 0 {
                    let count = from > shown ? 0 : UInt32(clamping: min(UInt64(clamping: limit), shown - from + 1))
                    return .answer(.blocks(try answers.blocks(from: from, limit: count)))
                }
                return .waitBlocks(from: from, limit: limit, waitMilliseconds: wait)
            case let .block(height): return .answer(.block(height > visibleHeight ? nil : try answers.block(height)))
            case let .blockTransactions(height): return .answer(.blockTransactions(height > visibleHeight ? nil : try answers.blockTransactions(height)))
            case let .blockContents(height):
                // The decided proposals' records from the current state: the stored one is
                // written at checkpoints, behind the blocks.
                let contents = height > visibleHeight
                    ? nil : try answers.blockContents(height, decidedBytesMax: decidedBytesMax, current: { [ledger] in ledger.store.value($0) })
                let answer = ClientResponse.blockContents(contents)
                guard answer.wireBytes.count <= WireLimits.envelopePayloadSizeMax - 64 else {
                    return .answer(.error("block \(height)'s contents are larger than one answer (\(WireLimits.envelopePayloadSizeMax) bytes)"))
                }
                return .answer(answer)
            case let .handovers(after):
                return .answer(.handovers(try store.handovers(after: after, limit: ClientRequest.handoversMax).map { try Handover(wireBytes: $0.record) }))
            case let .treePages(hashes): return .answer(.treePages(try treePages(hashes)))
            case let .stateValues(references): return .answer(.stateValues(try stateValues(references)))
            }
        } catch {
            return .answer(.error("\(error)"))
        }
    }

    /// A final transaction's place in its block, with the Merkle proof and the block's
    /// commit certificate.
    func inclusion(of id: Bytes32) throws -> TransactionInclusion? {
        try placed(id).map { $0.inclusion }
    }

    /// A final transaction's inclusion and its block's record (read once), or nil when not
    /// final here (or not shown yet).
    private func placed(_ id: Bytes32) throws -> (inclusion: TransactionInclusion, block: BlockRecord)? {
        try store.transaction(id).flatMap { found -> (TransactionInclusion, BlockRecord)? in
            guard found.height <= visibleHeight else { return nil }  // not shown yet: as not final
            guard let record = try store.block(at: found.height) else { return nil }
            guard let body = record.body else {
                throw StorageError.invalid(
                    file: store.file,
                    reason: "transaction \(id.hex) is final at height \(found.height), but this node pruned that block's body (retention): "
                        + "its inclusion proof needs it; ask a node that keeps it")
            }
            guard let block = try? Block(wireBytes: body), let proof = MerkleTree(leaves: block.commandIDs).proof(at: found.position) else { return nil }
            let inclusion = TransactionInclusion(
                location: StoreAnswers.location(height: found.height, position: found.position, result: found.result),
                commandCount: UInt32(block.commands.count), proof: proof, certificate: record.certificate)
            return (inclusion, record)
        }
    }

    /// A final transaction's result with what proves it (`ResultProof`): its inclusion, its
    /// result's committed bytes with their Merkle proof among its block's results (each
    /// result of that block stored in its committed form, or none), and its block's results
    /// record at the latest stable checkpoint.
    func resultProof(of id: Bytes32) throws -> ClientResponse {
        guard let (inclusion, block) = try placed(id) else { return .transactionResult(nil) }
        let position = Int(clamping: inclusion.location.position)
        var committed: [UInt8]?
        var proof: MerkleProof?
        if let leaves = StoreAnswers.committedLeaves(block.transactions.map(\.result)), let found = MerkleTree(leaves: leaves).proof(at: position) {
            proof = found
            committed = StoreAnswers.committed(block.transactions[position].result)
        }
        let read = try certifiedState(StateKeys.blockResults(inclusion.location.height))
        guard case let .certifiedState(checkpoint, certificate, value, recordProof) = read else { return read }  // the error that says why
        return .transactionResult(ResultProof(
            inclusion: inclusion, committed: committed, resultProof: proof, checkpointHeight: checkpoint, checkpointCertificate: certificate,
            record: value, recordProof: recordProof))
    }

    /// Tree pages by hash, stored or held in memory for a checkpoint whose state was not
    /// written (`StoredState.encodedPage`), up to about `snapshotBytesMax` (a joining node's
    /// walk, a gateway's copy). Pages are content-addressed: a page's bytes hash to the name
    /// asked, whatever the root it belongs to, so any page is a right answer (the asker
    /// checks it).
    func treePages(_ hashes: [SHA256Digest]) throws -> [[UInt8]?] {
        var pages: [[UInt8]?] = [], bytes = 0
        for hash in hashes.prefix(min(ClientRequest.snapshotItemsMax, snapshotItemsAllowed)) where bytes < ClientResponse.snapshotBytesMax {
            let page = try ledger.store.encodedPage(hash)
            bytes += page?.count ?? 0
            pages.append(page)
        }
        return pages
    }

    /// State values by key and value hash, among those the key held since the checkpoint
    /// served (its archive, then its current value), up to about `snapshotBytesMax`.
    func stateValues(_ references: [StateValueReference]) throws -> [[UInt8]?] {
        let served = try store.checkpoint(atOrBelow: store.height)?.height ?? 0
        var values: [[UInt8]?] = [], bytes = 0
        for reference in references.prefix(min(ClientRequest.snapshotItemsMax, snapshotItemsAllowed)) where bytes < ClientResponse.snapshotBytesMax {
            let value = try ledger.store.values(of: reference.key, atCheckpoint: served).last { StateTree.valueHash($0) == reference.valueHash }
            bytes += value?.count ?? 0
            values.append(value)
        }
        return values
    }

    /// A state record at the latest stable checkpoint, with the checkpoint's certificate.
    func certifiedState(_ key: StateKey) throws -> ClientResponse {
        guard let (height, bytes) = try store.checkpoint(atOrBelow: store.height) else { return .error("no stable checkpoint executed yet") }
        let certificate = try CheckpointCertificate(wireBytes: bytes)
        // Not held: dropped, which only a node executing far past its certified checkpoints does.
        guard ledger.store.holds(checkpoint: height, root: certificate.stateRoot) else {
            return .error("the state at checkpoint \(height) is not held by this node any more; ask another node or again after the next checkpoint")
        }
        let proof = StateTree.proof(for: key, root: certificate.stateRoot, nodes: ledger.store)
        var value: [UInt8]?
        if let leaf = proof.terminal, leaf.key == key {
            value = try ledger.store.values(of: key, atCheckpoint: height).first { StateTree.valueHash($0) == leaf.valueHash }
            guard value != nil else { return .error("the value at checkpoint \(height) is no longer stored") }
        }
        return .certifiedState(height: height, certificate: bytes, value: value, proof: proof)
    }
}
