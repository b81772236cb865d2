import CalissonCrypto
import Wire

/// Why a transaction had no effect: a reason the submitting partner can act on.
public enum LedgerRejection: Error, Hashable, Sendable {
    case malformed(String)
    case wrongChain(String)
    case expired(expiryHeight: UInt64, height: UInt64)
    case expiryTooFar(expiryHeight: UInt64, heightMax: UInt64)
    case nonceUsed(UInt64)
    case unknownPartner(Identifier)
    case partnerNotActive(Identifier, PartnerStatus)
    case badSignature
    case missingRole(Identifier, needs: String)
    case unknownProgramme(Identifier)
    case programmeClosed(Identifier)
    case programmeNotOpen(Identifier, height: UInt64)
    case issuerNotAllowed(Identifier, programme: Identifier)
    case zeroAmount
    case amountTooLarge
    case capExceeded(cap: Amount, used: Amount, asked: Amount)
    case walletCeilingExceeded(ceiling: Amount, held: Amount, asked: Amount)
    case budgetExceeded(budget: Amount, issued: Amount, asked: Amount)
    case evidenceUsed
    case insufficientFunds(available: Amount, asked: Amount)
    case notTransferable(Identifier)
    case selfTransfer
    case tooManyLots
    case unknownProposal(UInt64)
    case proposalClosed(UInt64)
    case deadlinePassed(deadline: UInt64, height: UInt64)
    case deadlineTooFar(deadline: UInt64, heightMax: UInt64)
    case alreadyVoted(UInt64)
    case invalidAction(String)
    /// Equivocation evidence that does not hold (rules 3).
    case invalidEvidence(String)
    /// That validator's equivocation in that slot is recorded already.
    case evidenceKnown
    /// A partner's endpoints that are not valid (rules 4).
    case invalidEndpoints(String)
    /// The proposer opened `max` proposals in its current day of blocks; it may again
    /// from `nextDayHeight` (rules 6).
    case proposalsPerDayExceeded(max: UInt64, nextDayHeight: UInt64)
}

public enum TransactionResult: Hashable, Sendable {
    case applied
    case rejected(LedgerRejection)
}

/// A proposal a block opened: its number, and the position of the transaction proposing it.
/// One wire form wherever it goes (a block's contents, its events record, `BlockEvents`):
/// the position, then the number.
public struct OpenedProposal: Hashable, Sendable, WireCodable {
    public let position: UInt64
    public let proposal: UInt64
    public init(position: UInt64, proposal: UInt64) {
        self.position = position
        self.proposal = proposal
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(position)
        writer.write(proposal)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        position = try reader.readUInt64("opened.position")
        proposal = try reader.readUInt64("opened.proposal")
    }

    public static var wireSizeMin: Int { 16 }
}

/// What executing a block produced.
public struct BlockOutcome: Sendable {
    public var height: UInt64
    public var results: [TransactionResult]
    /// The state root after this block when `rootComputed`, else the root as last
    /// computed (`Ledger.rootHeight`).
    public var stateRoot: SHA256Digest
    /// Whether the tree was updated at this block (`StateStore.updatesTree`): only then
    /// is `stateRoot` this block's.
    public var rootComputed: Bool
    /// What the block's stored record keeps as its root: `stateRoot` when computed at this
    /// block, zero otherwise.
    public var recordedStateRoot: SHA256Digest { rootComputed ? stateRoot : .zero }
    /// The validators' node keys, in order, when the block changed them.
    public var validators: [Ed25519PublicKey]?
    /// The ledger epoch this block closed, if it closed one.
    public var closedEpoch: UInt64?
    /// The proposals this block decided (passed, rejected or failed), in the order decided.
    public var decidedProposals: [UInt64] = []
    /// The proposals this block opened: the position of the proposing transaction, the number.
    public var openedProposals: [OpenedProposal] = []
    /// The citizen accounts each transaction concerns (empty for undecodable ones), for
    /// the node's per-account index: the ledger decoded them already.
    public var accounts: [[AccountID]]
    /// Whether a partner record changed (admitted, status, keys, endpoints): the node's TLS
    /// registry and the peers it dials follow the partners.
    public var partnersChanged: Bool
    /// Whether the block committed its results to the state (`CommittedResults`): under
    /// `LedgerRules.resultsCommitted` or later, with at least one transaction.
    public var resultsCommitted: Bool = false
}

/// The clearing house: executes blocks of signed transactions against the authenticated
/// state. Deterministic: the same blocks from the same genesis give the same state root.
/// Pure: no I/O, no clock; signature checks go through `verify` (the node passes its
/// verify cache, so a signature checked at admission is not checked twice).
public struct Ledger<Store: StateStore> {
    public let chainId: String
    public internal(set) var store: Store
    public internal(set) var meta: LedgerMeta
    public internal(set) var parameters: Parameters

    // One block's writes, applied to the store at its end.
    var writes: [StateKey: [UInt8]?] = [:]
    /// The keys committed since the tree was last updated: the changes of its next update
    /// (`commit`), with the values the store then holds.
    var unrooted: Set<StateKey> = []
    /// The height of the state whose root is `stateRoot`: the last block at which the
    /// tree was updated, or the height the ledger was opened at.
    public private(set) var rootHeight: UInt64
    var programmes: [Identifier: Programme] = [:]
    var partners: [Identifier: Partner] = [:]
    /// The partners the block read and did not change, decoded once per block rather than
    /// once per transaction (`cachedPartner`). Emptied when a block starts and when it
    /// writes its changed partners: only `flushBlock` writes partner records.
    var partnerReads: [Identifier: Partner] = [:]
    var pendingUsed: [UInt64: [StateKey]] = [:]
    var pendingExpiring: [UInt64: Set<AccountID>] = [:]
    var pendingObligations: [Pair: Amount] = [:]
    var pendingActivity = EpochActivity()
    var decidedProposals: [UInt64] = []
    /// The rules in force at the block being executed (`LedgerRules`): an upgrade's height
    /// is above the block that enacts it, so they never change within a block.
    var blockRules = LedgerRules.initial
    /// The validators' node keys when the block being executed started.
    var blockValidators: [Ed25519PublicKey] = []
    /// Whether the block changed a partner's endpoints (reported as `partnersChanged`).
    var directoryChanged = false

    struct Pair: Hashable, Comparable {
        let sponsor: Identifier
        let acceptor: Identifier
        static func < (a: Pair, b: Pair) -> Bool { (a.sponsor, a.acceptor) < (b.sponsor, b.acceptor) }
    }

    /// A ledger over a store already holding a state (genesis or later).
    public init(chainId: String, store: Store) throws(LedgerError) {
        self.chainId = chainId
        self.store = store
        guard let metaBytes = store.value(StateKeys.meta), let meta = try? LedgerMeta(wireBytes: metaBytes) else {
            throw .corruptState("ledger meta record missing or unreadable")
        }
        guard let parameterBytes = store.value(StateKeys.parameters), let parameters = try? Parameters(wireBytes: parameterBytes) else {
            throw .corruptState("parameters record missing or unreadable")
        }
        self.meta = meta
        self.parameters = parameters
        rootHeight = meta.height
    }

    public var height: UInt64 { meta.height }
    /// The root of the state at `rootHeight` (the current height when the store updates
    /// the tree at every block).
    public var stateRoot: SHA256Digest { store.root }

    // MARK: Reads (the block's writes first, then the store)

    func raw(_ key: StateKey) -> [UInt8]? {
        if let written = writes[key] { return written }
        return store.value(key)
    }

    func read<T: WireDecodable>(_ key: StateKey, as _: T.Type = T.self) -> T? {
        // The state only ever holds what this code wrote: a record that does not decode
        // is corruption of the store, not input; treat it as absent and let the state
        // root (checked against the certified one) expose it.
        raw(key).flatMap { try? T(wireBytes: $0) }
    }

    mutating func write(_ key: StateKey, _ value: (some WireEncodable)?) {
        writes[key] = .some(value?.wireBytes)
    }

    public func partner(_ id: Identifier) -> Partner? { partners[id] ?? read(StateKeys.partner(id)) }

    /// `partner(id)`, for a block's transactions: read and decoded once per block.
    mutating func cachedPartner(_ id: Identifier) -> Partner? {
        if let changed = partners[id] { return changed }
        if let known = partnerReads[id] { return known }
        let read: Partner? = read(StateKeys.partner(id))
        if let read { partnerReads[id] = read }
        return read
    }

    public func programme(_ id: Identifier) -> Programme? { programmes[id] ?? read(StateKeys.programme(id)) }
    public func account(_ id: AccountID) -> Account { read(StateKeys.account(id)) ?? Account() }
    public func proposal(_ id: UInt64) -> Proposal? { read(StateKeys.proposal(id)) }
    public func statement(epoch: UInt64, partner: Identifier) -> Statement? { read(StateKeys.statement(epoch, partner)) }
    public func obligations(epoch: UInt64) -> [Obligation] { read(StateKeys.obligations(epoch), as: ObligationList.self)?.obligations ?? [] }
    public func settlements(epoch: UInt64) -> [Settlement] { read(StateKeys.settlement(epoch), as: SettlementList.self)?.settlements ?? [] }
    public func usage(_ account: AccountID, _ programme: Identifier) -> Usage? { read(StateKeys.usage(account, programme)) }

    /// The value stored at `key` in the committed state, with its proof against `stateRoot`.
    /// Only where the root is the current state's (`rootHeight == height`): between two
    /// tree updates the values have moved on and the root has not (a node computes the
    /// current root for such a read: `StoredState.currentRecord`).
    public func proof(_ key: StateKey) -> (value: [UInt8]?, proof: StateProof) {
        precondition(rootHeight == height, "a proof asked at height \(height) of a state whose root is at \(rootHeight)")
        return (store.value(key), StateTree.proof(for: key, root: store.root, nodes: store))
    }

    /// Every partner, in id order.
    public var partnerIDs: [Identifier] { meta.partners }

    // MARK: Blocks

    /// Executes one block at the next height and commits its writes to the store.
    public mutating func execute(
        _ commands: [[UInt8]], verify: (SignatureCheck) -> Bool = { $0.verify() }
    ) -> BlockOutcome {
        let staged = stage(commands, verify: verify)
        return commit(staged)
    }

    /// A block executed but not yet committed: its results and the state writes it makes.
    public struct StagedBlock: Sendable {
        public let height: UInt64
        public let results: [TransactionResult]
        public let values: [(key: StateKey, value: [UInt8]?)]
        public let validators: [Ed25519PublicKey]?
        public let closedEpoch: UInt64?
        public let decidedProposals: [UInt64]
        public let openedProposals: [OpenedProposal]
        public let accounts: [[AccountID]]
        public let partnersChanged: Bool
        public let resultsCommitted: Bool
    }

    /// Runs a block's transactions (and the epoch close it ends, if any) without touching
    /// the store. `commit` must follow before the next `stage`.
    public mutating func stage(_ commands: [[UInt8]], verify: (SignatureCheck) -> Bool = { $0.verify() }) -> StagedBlock {
        let height = meta.height + 1
        meta.height = height
        blockRules = rules(atHeight: height)
        let validatorsBefore = nodeKeys()
        blockValidators = validatorsBefore
        pruneUsedNonces(expiredBefore: height)
        decidedProposals = []
        directoryChanged = false
        partnerReads = [:]
        var results: [TransactionResult] = []
        var accounts: [[AccountID]] = []
        results.reserveCapacity(commands.count)
        accounts.reserveCapacity(commands.count)
        var opened: [OpenedProposal] = []
        for (position, command) in commands.enumerated() {
            var concerned: [AccountID] = []
            defer { accounts.append(concerned) }
            let nextProposal = meta.nextProposal
            switch apply(command, height: height, verify: verify, accounts: &concerned) {
            case .success: results.append(.applied)
            case let .failure(rejection): results.append(.rejected(rejection))
            }
            if meta.nextProposal != nextProposal { opened.append(OpenedProposal(position: UInt64(position), proposal: nextProposal)) }
        }
        var closed: UInt64?
        if height - meta.epochStartHeight + 1 >= parameters.epochLength {
            closed = meta.epoch
            closeEpoch(height: height)
        }
        let validatorsAfter = nodeKeys()
        let partnersChanged = !partners.isEmpty || directoryChanged
        if validatorsAfter != validatorsBefore { write(StateKeys.validatorKeys, ValidatorKeys(changedAt: height, keys: validatorsAfter)) }
        let resultsCommitted = blockRules >= LedgerRules.resultsCommitted && !results.isEmpty
        if resultsCommitted { write(StateKeys.blockResults(height), CommittedResults.record(results)) }
        if blockRules >= LedgerRules.eventsCommitted, !decidedProposals.isEmpty || closed != nil || !opened.isEmpty {
            write(StateKeys.blockEvents(height), BlockEvents(decided: decidedProposals, closedEpoch: closed, opened: opened))
        }
        flushBlock()
        let values = writes.map { (key: $0.key, value: $0.value) }
        writes = [:]
        return StagedBlock(
            height: height, results: results, values: values,
            validators: validatorsAfter != validatorsBefore ? validatorsAfter : nil, closedEpoch: closed, decidedProposals: decidedProposals,
            openedProposals: opened, accounts: accounts, partnersChanged: partnersChanged, resultsCommitted: resultsCommitted)
    }

    /// Commits a staged block's writes to the store (atomically, by the store's contract),
    /// with the tree updated by every write since its last update when the store asks for
    /// it at this block (`StateStore.updatesTree`), the tree left as it was otherwise.
    /// Returns the outcome with the root. The tree's root depends only on the values, so
    /// updating it once for several blocks gives the root updating it at each would; what
    /// it saves is the paths near the root, and the pages of keys written again, hashed
    /// and rewritten once instead of at every block.
    public mutating func commit(_ staged: StagedBlock) -> BlockOutcome {
        let computed = store.updatesTree(atHeight: staged.height, transactions: staged.results.count)
        let tree: StateTree.Update
        if computed {
            var changes = staged.values.map { ($0.key, $0.value.map(StateTree.valueHash)) }
            if !unrooted.isEmpty {
                for (key, _) in staged.values { unrooted.remove(key) }
                for key in unrooted { changes.append((key, store.value(key).map(StateTree.valueHash))) }
                unrooted = []
            }
            tree = StateTree.update(root: store.root, changes: changes, nodes: store)
            rootHeight = staged.height
        } else {
            for (key, _) in staged.values { unrooted.insert(key) }
            tree = .unchanged(store.root)
        }
        store.commit(StateBatch(values: staged.values, tree: tree, rootComputed: computed))
        return BlockOutcome(
            height: staged.height, results: staged.results, stateRoot: tree.root, rootComputed: computed, validators: staged.validators,
            closedEpoch: staged.closedEpoch, decidedProposals: staged.decidedProposals, openedProposals: staged.openedProposals,
            accounts: staged.accounts,
            partnersChanged: staged.partnersChanged, resultsCommitted: staged.resultsCommitted)
    }

    /// The node keys of the validator partners, in order (those without one are skipped).
    public func nodeKeys() -> [Ed25519PublicKey] {
        meta.validators.compactMap { partner($0)?.nodeKey }
    }

    private mutating func apply(
        _ command: [UInt8], height: UInt64, verify: (SignatureCheck) -> Bool, accounts: inout [AccountID]
    ) -> Result<Void, LedgerRejection> {
        guard command.count <= SignedTransaction.byteCountMax else { return .failure(.malformed("over \(SignedTransaction.byteCountMax) bytes")) }
        let signed: SignedTransaction
        // Decoded as the rules in force read it: a kind a later version added is unknown
        // below that version, exactly as to the code written before it.
        do { signed = try SignedTransaction(wireBytes: command, formatVersion: blockRules) } catch { return .failure(.malformed("\(error)")) }
        let tx = signed.transaction
        accounts = tx.accounts
        guard tx.chainId == chainId, let digest = tx.signingDigest else { return .failure(.wrongChain(tx.chainId)) }
        guard tx.expiryHeight >= height else { return .failure(.expired(expiryHeight: tx.expiryHeight, height: height)) }
        let heightMax = height.saturatingAdding(parameters.transactionLifetimeMax)
        guard tx.expiryHeight <= heightMax else { return .failure(.expiryTooFar(expiryHeight: tx.expiryHeight, heightMax: heightMax)) }
        let usedKey = StateKeys.used(tx.signer, nonce: tx.nonce)
        guard raw(usedKey) == nil else { return .failure(.nonceUsed(tx.nonce)) }

        let key: Ed25519PublicKey
        var signerPartner: Partner?
        switch tx.signer {
        case let .citizen(account): key = account
        case let .partner(id):
            guard let partner = cachedPartner(id) else { return .failure(.unknownPartner(id)) }
            guard partner.status == .active else { return .failure(.partnerNotActive(id, partner.status)) }
            key = partner.signingKey
            signerPartner = partner
        }
        guard verify(SignatureCheck(publicKey: key, digest: digest, signature: signed.signature)) else { return .failure(.badSignature) }

        // Every handler checks everything before it writes anything: a rejected
        // transaction leaves no trace (not even its nonce, so it may be fixed and resent).
        let result: Result<Void, LedgerRejection>
        switch (tx.body, tx.signer) {
        case let (.attribute(programme, account, units, evidence), .partner):
            result = attribute(issuer: signerPartner!, programme: programme, account: account, units: units, evidence: evidence, height: height)
        case let (.redeem(acceptor, amount, _), .citizen(account)):
            result = redeem(account: account, acceptor: acceptor, amount: amount)
        case let (.transfer(to, programme, amount), .citizen(account)):
            result = transfer(from: account, to: to, programme: programme, amount: amount)
        case let (.propose(action, deadline), .partner):
            result = propose(by: signerPartner!, action: action, deadline: deadline, height: height)
        case let (.vote(proposal, approve), .partner):
            result = vote(by: signerPartner!, proposal: proposal, approve: approve, height: height)
        case let (.reportEquivocation(evidence), .partner):
            result = reportEquivocation(by: signerPartner!, evidence, height: height, verify: verify)
        case let (.setEndpoints(endpoints), .partner):
            result = setOwnEndpoints(by: signerPartner!, endpoints)
        case (.attribute, .citizen), (.propose, .citizen), (.vote, .citizen), (.reportEquivocation, .citizen), (.setEndpoints, .citizen):
            result = .failure(.malformed(Transaction.partnerOnly))
        case (.redeem, .partner), (.transfer, .partner):
            result = .failure(.malformed(Transaction.citizenOnly))
        }
        if case .success = result {
            writes[usedKey] = .some(StateKeys.bytes(tx.expiryHeight))
            pendingUsed[tx.expiryHeight, default: []].append(usedKey)
        }
        return result
    }

    // MARK: Block end

    /// Used nonces of transactions that expired before `height` can never be replayed:
    /// forget them.
    private mutating func pruneUsedNonces(expiredBefore height: UInt64) {
        let expired = height - 1
        for key in takeChunked(header: StateKeys.usedExpiring(expired), chunk: { StateKeys.usedExpiringChunk(expired, $0) }) {
            writes[key] = .some(nil)
        }
    }

    /// Folds the block's accumulated indexes into their records and writes the cached
    /// records: after it, `writes` holds everything the block changes.
    private mutating func flushBlock() {
        for height in pendingUsed.keys.sorted() {
            appendChunked(pendingUsed[height] ?? [], header: StateKeys.usedExpiring(height), chunk: { StateKeys.usedExpiringChunk(height, $0) })
        }
        for epoch in pendingExpiring.keys.sorted() {
            appendExpiring((pendingExpiring[epoch] ?? []).sorted(), epoch: epoch)
        }
        flushObligations()
        flushActivity()
        for id in programmes.keys.sorted() { write(StateKeys.programme(id), programmes[id]) }
        for id in partners.keys.sorted() { write(StateKeys.partner(id), partners[id]) }
        partnerReads = [:]
        write(StateKeys.meta, meta)
        write(StateKeys.parameters, parameters)
        programmes = [:]
        partners = [:]
        pendingUsed = [:]
        pendingExpiring = [:]
    }

    /// Adds accounts to an epoch's expiry index, filling its last chunk then opening new
    /// ones. An account may be listed twice (in two blocks): the close handles it once.
    mutating func appendExpiring(_ accounts: [AccountID], epoch: UInt64) {
        appendChunked(accounts.map(\.bytes), header: StateKeys.expiringLots(epoch), chunk: { StateKeys.expiringChunk(epoch, $0) })
    }

    /// Every account listed for an epoch, and the index removed.
    mutating func takeExpiring(epoch: UInt64) -> [AccountID] {
        takeChunked(header: StateKeys.expiringLots(epoch), chunk: { StateKeys.expiringChunk(epoch, $0) }).map(AccountID.init)
    }

    /// A list kept in chunks of at most `ExpiryIndex.chunkCountMax` keys under `chunk(i)`,
    /// their count under `header`: appending rewrites the last chunk only.
    mutating func appendChunked(_ keys: [Bytes32], header: StateKey, chunk: (UInt64) -> StateKey) {
        var chunks = raw(header).flatMap { try? UInt64(wireBytes: $0) } ?? 0
        var last = chunks == 0 ? [] : read(chunk(chunks - 1), as: KeyList.self)?.keys ?? []
        if chunks == 0 || last.count >= ExpiryIndex.chunkCountMax {
            chunks += 1
            last = []
        }
        for key in keys {
            if last.count >= ExpiryIndex.chunkCountMax {
                write(chunk(chunks - 1), KeyList(last))
                chunks += 1
                last = []
            }
            last.append(key)
        }
        write(chunk(chunks - 1), KeyList(last))
        write(header, chunks)
    }

    /// Every key of a chunked list, and the list removed.
    mutating func takeChunked(header: StateKey, chunk: (UInt64) -> StateKey) -> [Bytes32] {
        let chunks = raw(header).flatMap { try? UInt64(wireBytes: $0) } ?? 0
        var keys: [Bytes32] = []
        for index in 0..<chunks {
            keys += read(chunk(index), as: KeyList.self)?.keys ?? []
            writes[chunk(index)] = .some(nil)
        }
        writes[header] = .some(nil)
        return keys
    }

    mutating func flushObligations() {
        guard !pendingObligations.isEmpty else { return }
        let key = StateKeys.obligations(meta.epoch)
        var merged: [Pair: Amount] = [:]
        for obligation in obligations(epoch: meta.epoch) {
            merged[Pair(sponsor: obligation.sponsor, acceptor: obligation.acceptor)] = obligation.amount
        }
        for (pair, amount) in pendingObligations { merged[pair, default: 0] += amount }
        let list = merged.keys.sorted().map { Obligation(sponsor: $0.sponsor, acceptor: $0.acceptor, amount: merged[$0]!) }
        write(key, ObligationList(list))
        pendingObligations = [:]
    }
}

public enum LedgerError: Error, Equatable, Sendable {
    case corruptState(String)
}


enum ExpiryIndex {
    /// Accounts per chunk of an epoch's expiry index.
    static let chunkCountMax = 1_024
}
