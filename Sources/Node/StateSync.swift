import CalissonCrypto
import Consensus
import Foundation
import Ledger
import LightClient
import Storage
import Wire

/// Why a state sync stopped. `refused` is final (asking another node would not change it);
/// the others name the node and what did not hold, and the sync tries the next node.
public enum StateSyncError: Error, Equatable, Sendable, CustomStringConvertible {
    /// This node's key signed what the snapshot is taken from: it was a validator with a
    /// database it no longer has, and a snapshot would let it vote again without the
    /// memory of what it voted (its safety log).
    case refused(String)
    /// A node answered something that does not hold against the certified checkpoint.
    case untrusted(source: String, String)
    /// A node could not be asked, or answered an error.
    case unavailable(source: String, String)
    /// Every node given failed, this many rounds; the last failure is named.
    case exhausted(rounds: Int, last: String)
    /// The database being written failed.
    case storage(String)

    public var description: String {
        switch self {
        case let .refused(reason): return "state sync refused: \(reason)"
        case let .untrusted(source, reason): return "\(source) cannot be trusted: \(reason)"
        case let .unavailable(source, reason): return "\(source): \(reason)"
        case let .exhausted(rounds, last): return "state sync failed: every node was tried \(rounds) times; the last failure: \(last)"
        case let .storage(reason): return "state sync: the database: \(reason)"
        }
    }
}

/// What a state sync did (printed by `calisson-node sync`, measured by the benchmark).
public struct StateSyncReport: Sendable, Equatable {
    /// The checkpoint the database now starts from.
    public var height: UInt64 = 0
    public var root: SHA256Digest = .zero
    /// State records and tree pages in the database.
    public var records = 0
    public var pages = 0
    /// What was fetched (pages and values), and what an earlier walk had fetched already.
    public var pagesFetched = 0
    public var valuesFetched = 0
    public var pagesReused = 0
    public var valuesReused = 0
    public var bytesFetched = 0
    /// Walks started again from a newer checkpoint (the node asked pruned the older one).
    public var restarts = 0
    /// The node the snapshot was completed from.
    public var source = ""
}

/// Joining from a snapshot (Docs/OPERATIONS.md, "Joining from a snapshot"): writes a new
/// node's database at the latest stable checkpoint of the chain rather than replaying
/// every block since the genesis. Trusts nothing the nodes asked say without checking it:
/// - the validator sets are followed from the genesis through the handovers (as a light
///   client does), and the checkpoint's certificate must be a quorum of the set in force;
/// - the state tree is walked from the certified root, page by page, each page decoded
///   and hashed to the name asked for (a page's bytes fix its nodes), then each leaf's
///   value fetched and hashed to the leaf's value hash;
/// - the checkpoint's block comes with its commit certificate, checked the same way, and
///   its body must hash to the certified digest.
/// A node that lies, errs or disappears is left for the next one; pages and values are
/// content-addressed, so what was fetched is kept across nodes, across a move to a newer
/// checkpoint (a busy chain prunes the older one while the walk runs), and across an
/// interrupted run. What it cannot check is said in Docs/SECURITY.md: the results of the
/// checkpoint's own block (not in the state), and validator-set changes no handover names.
public final class StateSync {
    /// A node to ask: its name (for messages) and a function sending requests pipelined on
    /// one connection and returning the answers in order.
    public struct Source: Sendable {
        public let name: String
        public let ask: @Sendable ([ClientRequest]) throws -> [ClientResponse]

        public init(name: String, ask: @escaping @Sendable ([ClientRequest]) throws -> [ClientResponse]) {
            self.name = name
            self.ask = ask
        }
    }

    let genesis: Genesis
    let genesisSchedule: EpochSchedule
    let nodeKey: Ed25519PublicKey
    let store: NodeStore
    let sources: [Source]
    let log: (String) -> Void
    /// How many times every node may fail before the sync gives up.
    public var roundsMax = 3
    /// The pause after a round in which every node failed.
    public var roundPauseSeconds = 1.0
    /// Pages or values asked per request.
    public var batch = ClientRequest.snapshotItemsMax

    private var report = StateSyncReport()
    private var trusted: TrustedValidators
    private var handovers: [(changedAt: UInt64, height: UInt64, record: [UInt8])] = []

    /// `store` is the database being written (new, or one an interrupted sync left);
    /// `genesisSchedule` the consensus schedule of the genesis (as the node computes it).
    public init(
        genesis: Genesis, genesisSchedule: EpochSchedule, nodeKey: Ed25519PublicKey, store: NodeStore, sources: [Source],
        log: @escaping (String) -> Void = { _ in }
    ) {
        precondition(!sources.isEmpty, "a state sync needs a node to ask (the caller checks its input)")
        self.genesis = genesis
        self.genesisSchedule = genesisSchedule
        self.nodeKey = nodeKey
        self.store = store
        self.sources = sources
        self.log = log
        trusted = TrustedValidators(genesis: genesis.validatorKeys)
    }

    /// Runs the sync to the end: on return, `store` is a node's database at the reported
    /// checkpoint. Throws `refused`, `storage`, or `exhausted` once every node failed
    /// `roundsMax` times.
    public func run() throws(StateSyncError) -> StateSyncReport {
        do { try store.beginImport() } catch { throw .storage("\(error)") }
        var failures = 0
        var last = ""
        var index = 0
        while failures < roundsMax * sources.count {
            let source = sources[index % sources.count]
            do {
                try sync(from: source)
                report.source = source.name
                return report
            } catch let error as StateSyncError {
                switch error {
                case .refused, .storage: throw error
                case .untrusted, .unavailable, .exhausted:
                    failures += 1
                    last = error.description
                    log("\(error); trying the next node")
                }
            } catch let error as StorageError {
                throw .storage("\(error)")  // this machine's disk or file, not the node's answer
            } catch {
                failures += 1
                last = "\(source.name): \(error)"
                log("\(last); trying the next node")
            }
            index += 1
            // Every node failed once more: give them a moment (a node restarting, a first
            // checkpoint not yet stable) rather than asking again at once.
            if index % sources.count == 0 { Thread.sleep(forTimeInterval: roundPauseSeconds) }
        }
        throw .exhausted(rounds: roundsMax, last: last)
    }

    // MARK: One node

    private func ask(_ source: Source, _ requests: [ClientRequest]) throws(StateSyncError) -> [ClientResponse] {
        let answers: [ClientResponse]
        do { answers = try source.ask(requests) } catch { throw .unavailable(source: source.name, "\(error)") }
        guard answers.count == requests.count else {
            throw .unavailable(source: source.name, "\(answers.count) answers to \(requests.count) requests")
        }
        for answer in answers {
            if case let .error(reason) = answer { throw .unavailable(source: source.name, "it answered: \(reason)") }
        }
        return answers
    }

    private func sync(from source: Source) throws {
        try followHandovers(source)
        while true {
            let (height, certificate, keys) = try latestCheckpoint(source)
            report.height = height.height
            report.root = height.root
            do {
                let reached = try walk(height.root, from: source)
                try complete(at: height.height, root: height.root, certificate: certificate, keys: keys, reached: reached, from: source)
                return
            } catch is Moved {
                // The node no longer holds part of this checkpoint's state: it serves a newer
                // one. Walk again from there; what was fetched stays.
                let newer = try latestCheckpoint(source).0.height
                guard newer > height.height else {
                    throw StateSyncError.untrusted(source: source.name, "it serves checkpoint \(height.height) but lacks part of its state")
                }
                report.restarts += 1
                log("checkpoint \(height.height) is no longer served by \(source.name); walking again from checkpoint \(newer)")
            }
        }
    }

    /// The part of the state the node asked no longer holds (a pruned checkpoint).
    private struct Moved: Error {}

    /// The validator-set changes after those already followed, checked one by one.
    private func followHandovers(_ source: Source) throws(StateSyncError) {
        while true {
            guard case let .handovers(list) = try ask(source, [.handovers(after: trusted.changedAt)])[0] else {
                throw .unavailable(source: source.name, "not an answer of handovers")
            }
            for handover in list {
                do { try trusted.follow(handover, chainId: genesis.chainId) } catch {
                    throw .untrusted(source: source.name, "\(error)")
                }
                handovers.append((trusted.changedAt, handover.height, handover.wireBytes))
            }
            if list.count < ClientRequest.handoversMax { return }
        }
    }

    /// The node's latest stable checkpoint, checked: its height and root, its certificate,
    /// and the validator keys in its state. Refuses a checkpoint this node's key signed.
    private func latestCheckpoint(_ source: Source) throws(StateSyncError) -> ((height: UInt64, root: SHA256Digest), [UInt8], ValidatorKeys) {
        let record: CertifiedRecord
        do {
            let answer = try ask(source, [.certifiedState(StateKeys.validatorKeys)])[0]
            record = try CertifiedReader.record(StateKeys.validatorKeys, trusted: trusted, chainId: genesis.chainId) { _ in answer }
        } catch let error as StateSyncError {
            throw error
        } catch {
            throw .untrusted(source: source.name, "its latest checkpoint: \(error)")
        }
        guard let value = record.value, let keys = try? ValidatorKeys(wireBytes: value) else {
            throw .untrusted(source: source.name, "checkpoint \(record.height) has no readable validator keys")
        }
        if CheckpointCheck.signers(of: record.certificate)?.contains(nodeKey) == true {
            throw .refused(
                "this node's key \(nodeKey.bytes.hex) signed checkpoint \(record.height): it validated this chain with a database it "
                    + "no longer has. Restore that database (calisson-node restore) or start with a new node key")
        }
        return ((record.height, record.root), record.certificate, keys)
    }

    // MARK: The walk

    /// Fetches every page and value of the tree under `root` that the database lacks, each
    /// checked; returns the pages of the tree. Throws `Moved` when the node lacks one.
    private func walk(_ root: SHA256Digest, from source: Source) throws -> Set<SHA256Digest> {
        var stack = [root]
        var reached = Set<SHA256Digest>()
        var leaves: [StateValueReference] = []
        while !stack.isEmpty || !leaves.isEmpty {
            if leaves.count >= batch || (stack.isEmpty && !leaves.isEmpty) {
                try fetchValues(&leaves, from: source)
                continue
            }
            let hashes = Array(stack.suffix(batch))
            stack.removeLast(hashes.count)
            var pages: [TreePage] = []
            var missing: [SHA256Digest] = []
            for hash in hashes {
                if let bytes = try store.treePage(hash), let page = try? TreePage(decoding: bytes), page.root == hash {
                    pages.append(page)
                    report.pagesReused += 1
                } else {
                    missing.append(hash)
                }
            }
            if !missing.isEmpty {
                guard case let .treePages(answered) = try ask(source, [.treePages(missing)])[0], answered.count <= missing.count else {
                    throw StateSyncError.unavailable(source: source.name, "not an answer of pages")
                }
                try pauseIfEmpty(answered.count, from: source)
                stack += missing[answered.count...]  // past the answer's size: asked again
                var fetched: [(hash: Bytes32, page: [UInt8])] = []
                for (hash, bytes) in zip(missing, answered) {
                    guard let bytes else { throw Moved() }
                    let page: TreePage
                    do { page = try TreePage(decoding: bytes) } catch {
                        throw StateSyncError.untrusted(source: source.name, "tree page \(hash.hex) does not decode: \(error)")
                    }
                    guard page.root == hash else {
                        throw StateSyncError.untrusted(source: source.name, "the tree page asked as \(hash.hex) hashes to \(page.root.hex)")
                    }
                    fetched.append((hash, bytes))
                    pages.append(page)
                    report.bytesFetched += bytes.count
                }
                try store.importPages(fetched, values: [])
                report.pagesFetched += fetched.count
            }
            for page in pages {
                reached.insert(page.root)
                for (_, node) in page.entries {
                    switch node {
                    case let .leaf(key, valueHash):
                        if try store.hasImportedValue(valueHash) {
                            report.valuesReused += 1
                        } else {
                            leaves.append(StateValueReference(key: key, valueHash: valueHash))
                        }
                    case let .branch(left, right):
                        for child in [left, right] where child != .zero && page.node(child) == nil { stack.append(child) }
                    }
                }
            }
        }
        return reached
    }

    /// Consecutive answers with no item: the node spends its budget for snapshots
    /// (`NodeRuntime.snapshotItemsPerSecond`) on others. The sync waits and asks again, up
    /// to `emptyAnswersMax` times in a row, then tries another node.
    private var emptyAnswers = 0
    public var emptyAnswersMax = 400
    public var emptyAnswerPauseSeconds = 0.05

    private func pauseIfEmpty(_ count: Int, from source: Source) throws(StateSyncError) {
        guard count == 0 else { return emptyAnswers = 0 }
        emptyAnswers += 1
        guard emptyAnswers <= emptyAnswersMax else {
            emptyAnswers = 0
            throw .unavailable(source: source.name, "it answered no page or value \(emptyAnswersMax) times in a row (busy serving others)")
        }
        Thread.sleep(forTimeInterval: emptyAnswerPauseSeconds)
    }

    private func fetchValues(_ leaves: inout [StateValueReference], from source: Source) throws {
        // Two leaves may share a value (the same record bytes under two keys): asked once.
        var seen = Set<SHA256Digest>()
        let asked = Array(leaves.prefix(batch)).filter { seen.insert($0.valueHash).inserted }
        leaves.removeFirst(min(batch, leaves.count))
        guard case let .stateValues(answered) = try ask(source, [.stateValues(asked)])[0], answered.count <= asked.count else {
            throw StateSyncError.unavailable(source: source.name, "not an answer of values")
        }
        try pauseIfEmpty(answered.count, from: source)
        leaves += asked[answered.count...]
        var fetched: [(hash: Bytes32, value: [UInt8])] = []
        for (reference, value) in zip(asked, answered) {
            guard let value else { throw Moved() }
            guard StateTree.valueHash(value) == reference.valueHash else {
                throw StateSyncError.untrusted(source: source.name, "the value of state key \(reference.key.hex) does not hash to its leaf's value hash")
            }
            fetched.append((reference.valueHash, value))
            report.bytesFetched += value.count
        }
        try store.importPages([], values: fetched)
        report.valuesFetched += fetched.count
    }

    /// The blocks the node finalized after the checkpoint (up to `blocksMax`): a key in one
    /// of their commit certificates, checked, voted above the height this database starts
    /// at, which its replica would not remember. A certificate that does not check is the
    /// node's lie, not a reason to refuse.
    private func refuseIfSigned(after height: UInt64, from source: Source) throws {
        guard case let .blocks(list) = try ask(source, [.blocks(from: height + 1, limit: ClientRequest.blocksMax, waitMilliseconds: 0)])[0] else {
            throw StateSyncError.unavailable(source: source.name, "not an answer of blocks")
        }
        for block in list where InclusionCheck.signers(ofCommit: block.certificate)?.contains(nodeKey) == true {
            do {
                try InclusionCheck.verifyCommit(
                    digest: block.digest, height: block.height, certificate: block.certificate, validators: trusted.keys(at: block.height),
                    chainId: genesis.chainId)
            } catch {
                throw StateSyncError.untrusted(source: source.name, "block \(block.height)'s commit certificate: \(error)")
            }
            throw StateSyncError.refused(
                "this node's key \(nodeKey.bytes.hex) signed block \(block.height)'s commit, after the checkpoint \(height) a snapshot "
                    + "would start from: it validated this chain with a database it no longer has. Restore that database "
                    + "(calisson-node restore) or start with a new node key")
        }
    }

    // MARK: The last step

    /// Fills the state from the tree's leaves, drops pages of older walks, and records the
    /// checkpoint's block (checked against its commit certificate), the handovers, the
    /// genesis digest and the consensus schedule at the checkpoint.
    private func complete(
        at height: UInt64, root: SHA256Digest, certificate: [UInt8], keys: ValidatorKeys, reached: Set<SHA256Digest>, from source: Source
    ) throws {
        guard case let .blockContents(found) = try ask(source, [.blockContents(height)])[0] else {
            throw StateSyncError.unavailable(source: source.name, "not an answer of block contents")
        }
        guard let contents = found else { throw StateSyncError.unavailable(source: source.name, "it does not have block \(height)'s body") }
        guard let block = try? Block(wireBytes: contents.body), block.seq == height else {
            throw StateSyncError.untrusted(source: source.name, "block \(height)'s body does not decode as that block")
        }
        do {
            try InclusionCheck.verifyCommit(
                digest: block.digest, height: height, certificate: contents.certificate, validators: trusted.keys(at: height),
                chainId: genesis.chainId)
        } catch {
            throw StateSyncError.untrusted(source: source.name, "block \(height)'s commit certificate: \(error)")
        }
        if InclusionCheck.signers(ofCommit: contents.certificate)?.contains(nodeKey) == true {
            throw StateSyncError.refused(
                "this node's key \(nodeKey.bytes.hex) signed block \(height)'s commit: it validated this chain with a database it no "
                    + "longer has. Restore that database (calisson-node restore) or start with a new node key")
        }
        try refuseIfSigned(after: height, from: source)
        guard contents.results.count == block.commands.count else {
            throw StateSyncError.untrusted(source: source.name, "block \(height) has \(block.commands.count) transactions and \(contents.results.count) results")
        }
        let record = BlockRecord(
            height: height, digest: block.digest, body: contents.body, certificate: contents.certificate, stateRoot: root,
            transactions: zip(block.commandIDs, contents.results).map { TransactionRecord(id: $0, result: $1, accounts: []) })

        var schedule = genesisSchedule
        for handover in handovers {
            guard let changed = try? ValidatorKeys(wireBytes: Handover(wireBytes: handover.record).value), let set = ValidatorSet(changed.keys) else { continue }
            schedule.schedule(set, executedAt: changed.changedAt)
        }
        if keys.changedAt > trusted.changedAt, let set = ValidatorSet(keys.keys) { schedule.schedule(set, executedAt: keys.changedAt) }

        // The state: the leaves of the tree just walked (every page is in the database now).
        try store.beginStateImport()
        var pending: [(key: Bytes32, valueHash: Bytes32)] = []
        var records = 0
        let resultsKey = StateKeys.blockResults(height), eventsKey = StateKeys.blockEvents(height)
        var resultsLeaf: Bytes32?, eventsLeaf: Bytes32?, metaLeaf: Bytes32?
        for hash in reached {
            guard let bytes = try store.treePage(hash), let page = try? TreePage(decoding: bytes) else {
                throw StateSyncError.storage("tree page \(hash.hex) was stored and cannot be read back")
            }
            for case let (_, .leaf(key, valueHash)) in page.entries {
                if key == resultsKey { resultsLeaf = valueHash } else if key == eventsKey { eventsLeaf = valueHash } else if key == StateKeys.meta { metaLeaf = valueHash }
                pending.append((key, valueHash))
                if pending.count >= 4_096 {
                    try store.importState(pending)
                    records += pending.count
                    pending.removeAll(keepingCapacity: true)
                }
            }
        }
        try store.importState(pending)
        records += pending.count
        // The block's results as the node gave them must be those its block committed to
        // the certified state (ledger rules 7): this node will prove them to its clients.
        if let resultsLeaf {
            guard let leaves = StoreAnswers.committedLeaves(record.transactions.map(\.result)),
                StateTree.valueHash(BlockResults(leaves: leaves).wireBytes) == resultsLeaf
            else {
                throw StateSyncError.untrusted(source: source.name, "block \(height)'s results are not those it committed to the state")
            }
        }
        var extras = [Core.genesisExtra: genesis.digest.bytes, Core.scheduleExtra: schedule.wireBytes]
        extras[StoreAnswers.eventsExtraName(height)] = try Self.checkpointEvents(
            height, block: block, results: contents.results, meta: try metaLeaf.flatMap { try store.importedValue($0) },
            events: try eventsLeaf.flatMap { try store.importedValue($0) })
        try store.dropPages(keeping: reached)
        try store.completeImport(record, checkpointCertificate: certificate, handovers: handovers, extras: extras)
        report.records = records
        report.pages = reached.count
    }

    /// The checkpoint block's events as this node will give them with its contents (the
    /// event feed, a gateway's checks), from the certified state rather than the peer's
    /// word: the epoch it closed (the state's epoch started right after it), the proposals
    /// it opened (its applied proposals, the last numbers the state handed out, in order)
    /// and, from ledger rules 8, those it decided (`BlockEvents`; before, none are known).
    /// Which transactions applied is the peer's word under rules before 7 (from 7 the
    /// results were checked against the block's record before this).
    static func checkpointEvents(_ height: UInt64, block: Block, results: [[UInt8]], meta: [UInt8]?, events: [UInt8]?) throws -> [UInt8]? {
        guard let meta, let ledger = try? LedgerMeta(wireBytes: meta) else {
            throw StateSyncError.untrusted(source: "the synced state", "its ledger record is missing or does not decode")
        }
        let committed: BlockEvents?
        do { committed = try events.map { try BlockEvents(wireBytes: $0) } } catch {
            throw StateSyncError.untrusted(source: "the synced state", "block \(height)'s decisions record does not decode: \(error)")
        }
        let proposing = zip(block.commands, results).enumerated().compactMap { position, pair -> UInt64? in
            guard StoreAnswers.isApplied(pair.1), let signed = try? SignedTransaction(wireBytes: pair.0), case .propose = signed.transaction.body else { return nil }
            return UInt64(clamping: position)
        }
        guard UInt64(clamping: proposing.count) < ledger.nextProposal else {
            throw StateSyncError.untrusted(source: "the synced state", "block \(height) opened \(proposing.count) proposals, more than the state numbered")
        }
        let first = ledger.nextProposal - UInt64(clamping: proposing.count)
        let opened = proposing.enumerated().map { OpenedProposal(position: $0.element, proposal: first + UInt64(clamping: $0.offset)) }
        let closed = ledger.epochStartHeight == height.saturatingAdding(1) && ledger.epoch > 0 ? ledger.epoch - 1 : nil
        // From rules 8 the block's record says it all (and must agree with the rest).
        if let committed {
            guard committed.opened == opened, committed.closedEpoch == closed else {
                throw StateSyncError.untrusted(source: "the synced state", "block \(height)'s governance record disagrees with the block and the ledger's record")
            }
            return StoreAnswers.eventsExtra(closedEpoch: committed.closedEpoch, decided: committed.decided, opened: committed.opened)
        }
        return StoreAnswers.eventsExtra(closedEpoch: closed, decided: [], opened: opened)
    }
}
