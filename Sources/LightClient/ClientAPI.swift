import CalissonCrypto
import Ledger
import Wire

/// What a client (a partner back-end, the query CLI) asks a node on its client port.
public enum ClientRequest: Hashable, Sendable, WireCodable {
    /// A signed transaction to admit and gossip.
    case submit([UInt8])
    case status
    /// Where a transaction is final, and its result.
    case transaction(Bytes32)
    /// A state record with its proof against the node's committed state root.
    case state(StateKey)
    case block(UInt64)
    /// Answered when the transaction is final (with its location), or with nil after
    /// `timeoutMilliseconds` (at most `waitMillisecondsMax`).
    case waitFinal(Bytes32, timeoutMilliseconds: UInt32)
    /// The latest transactions concerning an account, newest first.
    case accountTransactions(Bytes32, limit: UInt32)
    /// Finalized blocks from `from` on (at most `limit`): answered at once if the node
    /// has any, else as soon as block `from` is final, else empty after the wait. Asking
    /// again from the next height follows the chain (a stream by long polling).
    case blocks(from: UInt64, limit: UInt32, waitMilliseconds: UInt32)
    /// A state record with its proof against the root of the latest stable checkpoint the
    /// node holds, and that checkpoint's certificate (a quorum of validators' signatures).
    case certifiedState(StateKey)
    /// A transaction's inclusion: its block's command count and a Merkle proof of its id
    /// (which, with the height, give the block digest), and the block's commit certificate.
    case transactionProof(Bytes32)
    /// The validator-set changes decided after block `after` (a `ValidatorKeys.changedAt`),
    /// oldest first, at most `handoversMax`: what a light client follows from genesis.
    case handovers(after: UInt64)
    /// The ids of a final block's transactions, in order (benchmarks, indexers).
    case blockTransactions(UInt64)
    /// A final block's transactions and their results, with its commit certificate and the
    /// events its execution had (the event feed, indexers).
    case blockContents(UInt64)
    /// State-tree pages by the hash of their root node (content-addressed: any page the
    /// node still stores, of its state or of the checkpoint it serves), at most
    /// `snapshotItemsMax`: what a node joining from a snapshot walks the tree with.
    case treePages([SHA256Digest])
    /// State values by key and value hash (the leaf that names them), at most
    /// `snapshotItemsMax`: the values of the checkpoint a joining node walks.
    case stateValues([StateValueReference])
    /// A final transaction's result with what proves it (`ResultProof`): its inclusion (as
    /// `transactionProof`), the committed bytes of its result with their Merkle proof among
    /// its block's results, and its block's results record read certified (as
    /// `certifiedState(StateKeys.blockResults(height))`).
    case transactionResult(Bytes32)

    public static let waitMillisecondsMax: UInt32 = 60_000
    public static let accountTransactionsMax: UInt32 = 1_000
    public static let blocksMax: UInt32 = 256
    public static let handoversMax = 64
    /// Pages or values asked in one request.
    public static let snapshotItemsMax = 1_024

    /// The request with its limits and waits brought within what a node serves
    /// (`waitMillisecondsMax`, `accountTransactionsMax`, `blocksMax`). The codec keeps
    /// what the client sent (one value, one encoding); the node serves `bounded`.
    public var bounded: ClientRequest {
        switch self {
        case let .waitFinal(id, timeout): return .waitFinal(id, timeoutMilliseconds: min(timeout, Self.waitMillisecondsMax))
        case let .accountTransactions(account, limit): return .accountTransactions(account, limit: min(limit, Self.accountTransactionsMax))
        case let .blocks(from, limit, wait):
            return .blocks(from: from, limit: min(limit, Self.blocksMax), waitMilliseconds: min(wait, Self.waitMillisecondsMax))
        default: return self
        }
    }

    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .submit(bytes): writer.write(UInt8(1)); writer.writeBytes(bytes)
        case .status: writer.write(UInt8(2))
        case let .transaction(id): writer.write(UInt8(3)); writer.write(id)
        case let .state(key): writer.write(UInt8(4)); writer.write(key)
        case let .block(height): writer.write(UInt8(5)); writer.write(height)
        case let .waitFinal(id, timeout): writer.write(UInt8(6)); writer.write(id); writer.write(timeout)
        case let .accountTransactions(account, limit): writer.write(UInt8(7)); writer.write(account); writer.write(limit)
        case let .blocks(from, limit, wait): writer.write(UInt8(8)); writer.write(from); writer.write(limit); writer.write(wait)
        case let .certifiedState(key): writer.write(UInt8(9)); writer.write(key)
        case let .transactionProof(id): writer.write(UInt8(10)); writer.write(id)
        case let .handovers(after): writer.write(UInt8(11)); writer.write(after)
        case let .blockTransactions(height): writer.write(UInt8(12)); writer.write(height)
        case let .blockContents(height): writer.write(UInt8(13)); writer.write(height)
        case let .treePages(hashes): writer.write(UInt8(14)); writer.writeArray(hashes)
        case let .stateValues(references): writer.write(UInt8(15)); writer.writeArray(references)
        case let .transactionResult(id): writer.write(UInt8(16)); writer.write(id)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("request.kind") {
        case 1: self = .submit(try reader.readBytes("request.transaction", maximum: SignedTransaction.byteCountMax))
        case 2: self = .status
        case 3: self = .transaction(try Bytes32(from: &reader))
        case 4: self = .state(try StateKey(from: &reader))
        case 5: self = .block(try reader.readUInt64("request.height"))
        case 6:
            let id = try Bytes32(from: &reader)
            self = .waitFinal(id, timeoutMilliseconds: try reader.readUInt32("request.timeout"))
        case 7:
            let account = try Bytes32(from: &reader)
            self = .accountTransactions(account, limit: try reader.readUInt32("request.limit"))
        case 8:
            let from = try reader.readUInt64("request.from")
            let limit = try reader.readUInt32("request.limit")
            self = .blocks(from: from, limit: limit, waitMilliseconds: try reader.readUInt32("request.wait"))
        case 9: self = .certifiedState(try StateKey(from: &reader))
        case 10: self = .transactionProof(try Bytes32(from: &reader))
        case 11: self = .handovers(after: try reader.readUInt64("request.after"))
        case 12: self = .blockTransactions(try reader.readUInt64("request.height"))
        case 13: self = .blockContents(try reader.readUInt64("request.height"))
        case 14: self = .treePages(try reader.readArray("request.pages", maximum: Self.snapshotItemsMax, of: SHA256Digest.self))
        case 15: self = .stateValues(try reader.readArray("request.values", maximum: Self.snapshotItemsMax, of: StateValueReference.self))
        case 16: self = .transactionResult(try Bytes32(from: &reader))
        case let raw: throw .unknownKind(field: "request.kind", offset: offset, raw: UInt64(raw))
        }
    }
}

public struct NodeStatus: Hashable, Sendable, WireCodable {
    public var partner: String
    public var height: UInt64
    /// The root of the state at the last height where the node computed one (at most a
    /// checkpoint interval below `height`: Docs/STORAGE.md, "The root at checkpoints").
    public var stateRoot: SHA256Digest
    public var view: UInt64
    public var epochFirstSeq: UInt64
    public var peers: [String]
    public var mempool: UInt64
    /// Since the node process started: transactions it applied, the CPU it used (user and
    /// system, milliseconds) and the time it has run (the dashboard's sobriety page).
    public var transactionsApplied: UInt64
    public var cpuMilliseconds: UInt64
    public var uptimeMilliseconds: UInt64
    /// The highest height the node knows is final (from its peers' votes and checkpoints):
    /// `knownFinalHeight - height` blocks behind, caught up when equal.
    public var knownFinalHeight: UInt64
    /// A validator set scheduled to take over at `pendingFromHeight` (partner ids), if any.
    public var pendingValidators: [String]
    public var pendingFromHeight: UInt64?
    /// Of the latest `recentCertificates` blocks executed, those whose commit certificate
    /// carries this node's vote.
    public var recentCertificates: UInt32
    public var recentCertificatesSigned: UInt32
    /// This node's release and the newest ledger rules it executes; the rules in force at
    /// its next block; the upgrades voted and not reached; each linked validator's release
    /// and rules as its hello said them (Docs/OPERATIONS.md, "Upgrades").
    public var software: String
    public var rulesNewest: UInt32
    public var rulesInForce: UInt32
    public var pendingUpgrades: [ScheduledUpgrade]
    public var peerReleases: [PeerRelease]
    /// The form it was decoded from: a node of an older build sends fewer fields, and its
    /// status is encoded the same way again, so that decoding stays canonical (the
    /// `client` fuzz target checks it).
    public private(set) var form = Form.current

    public enum Form: Sendable {
        /// Up to the uptime (no operator fields, no versions).
        case beforeOperatorFields
        /// Up to the recent certificates (no versions).
        case beforeVersions
        case current
    }

    /// A linked validator's release and rules, from its hello (`rules` 0: not said).
    public struct PeerRelease: Hashable, Sendable {
        public let peer: String
        public let software: String
        public let rules: UInt32

        public init(peer: String, software: String, rules: UInt32) {
            self.peer = peer
            self.software = software
            self.rules = rules
        }
    }

    public static let softwareBytesMax = 64

    public init(
        partner: String, height: UInt64, stateRoot: SHA256Digest, view: UInt64, epochFirstSeq: UInt64, peers: [String], mempool: UInt64,
        transactionsApplied: UInt64 = 0, cpuMilliseconds: UInt64 = 0, uptimeMilliseconds: UInt64 = 0, knownFinalHeight: UInt64? = nil,
        pendingValidators: [String] = [], pendingFromHeight: UInt64? = nil, recentCertificates: UInt32 = 0, recentCertificatesSigned: UInt32 = 0,
        software: String = "", rulesNewest: UInt32 = LedgerRules.initial, rulesInForce: UInt32 = LedgerRules.initial,
        pendingUpgrades: [ScheduledUpgrade] = [], peerReleases: [PeerRelease] = []
    ) {
        self.software = software
        self.rulesNewest = rulesNewest
        self.rulesInForce = rulesInForce
        self.pendingUpgrades = pendingUpgrades
        self.peerReleases = peerReleases
        self.knownFinalHeight = knownFinalHeight ?? height
        self.pendingValidators = pendingValidators
        self.pendingFromHeight = pendingFromHeight
        self.recentCertificates = recentCertificates
        self.recentCertificatesSigned = recentCertificatesSigned
        self.partner = partner
        self.height = height
        self.stateRoot = stateRoot
        self.view = view
        self.epochFirstSeq = epochFirstSeq
        self.peers = peers
        self.mempool = mempool
        self.transactionsApplied = transactionsApplied
        self.cpuMilliseconds = cpuMilliseconds
        self.uptimeMilliseconds = uptimeMilliseconds
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeString(partner)
        writer.write(height)
        writer.write(stateRoot)
        writer.write(view)
        writer.write(epochFirstSeq)
        writer.write(UInt32(peers.count))
        for peer in peers { writer.writeString(peer) }
        writer.write(mempool)
        writer.write(transactionsApplied)
        writer.write(cpuMilliseconds)
        writer.write(uptimeMilliseconds)
        guard form != .beforeOperatorFields else { return }
        writer.write(knownFinalHeight)
        writer.write(UInt32(pendingValidators.count))
        for partner in pendingValidators { writer.writeString(partner) }
        writer.write(pendingFromHeight ?? 0)
        writer.write(recentCertificates)
        writer.write(recentCertificatesSigned)
        guard form != .beforeVersions else { return }
        writer.writeString(software)
        writer.write(rulesNewest)
        writer.write(rulesInForce)
        writer.writeArray(pendingUpgrades)
        writer.write(UInt32(peerReleases.count))
        for release in peerReleases {
            writer.writeString(release.peer)
            writer.writeString(release.software)
            writer.write(release.rules)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        partner = try reader.readString("status.partner", maximumBytes: 64)
        height = try reader.readUInt64("status.height")
        stateRoot = try SHA256Digest(from: &reader)
        view = try reader.readUInt64("status.view")
        epochFirstSeq = try reader.readUInt64("status.epoch")
        let count = try reader.readCount("status.peers", maximum: 1_024)
        var peers: [String] = []
        for _ in 0..<count { peers.append(try reader.readString("status.peer", maximumBytes: 64)) }
        self.peers = peers
        mempool = try reader.readUInt64("status.mempool")
        transactionsApplied = try reader.readUInt64("status.transactionsApplied")
        cpuMilliseconds = try reader.readUInt64("status.cpuMilliseconds")
        uptimeMilliseconds = try reader.readUInt64("status.uptimeMilliseconds")
        // A node of a build before these fields ends here: they take what it would say.
        (software, rulesNewest, rulesInForce, pendingUpgrades, peerReleases) = ("", LedgerRules.initial, LedgerRules.initial, [], [])
        guard !reader.isAtEnd else {
            (knownFinalHeight, pendingValidators, pendingFromHeight, recentCertificates, recentCertificatesSigned) = (height, [], nil, 0, 0)
            form = .beforeOperatorFields
            return
        }
        knownFinalHeight = try reader.readUInt64("status.knownFinalHeight")
        var pending: [String] = []
        for _ in 0..<(try reader.readCount("status.pendingValidators", maximum: 1_024)) {
            pending.append(try reader.readString("status.pendingValidator", maximumBytes: 64))
        }
        pendingValidators = pending
        let from = try reader.readUInt64("status.pendingFromHeight")
        pendingFromHeight = from == 0 ? nil : from
        recentCertificates = try reader.readUInt32("status.recentCertificates")
        recentCertificatesSigned = try reader.readUInt32("status.recentCertificatesSigned")
        guard recentCertificatesSigned <= recentCertificates else {
            throw .invalidValue(field: "status.recentCertificatesSigned", offset: reader.offset, reason: "more than the certificates counted")
        }
        guard !reader.isAtEnd else {
            form = .beforeVersions
            return
        }
        software = try reader.readString("status.software", maximumBytes: Self.softwareBytesMax)
        rulesNewest = try reader.readUInt32("status.rulesNewest")
        rulesInForce = try reader.readUInt32("status.rulesInForce")
        pendingUpgrades = try reader.readArray("status.pendingUpgrades", maximum: UpgradeSchedule.countMax, of: ScheduledUpgrade.self)
        var releases: [PeerRelease] = []
        for _ in 0..<(try reader.readCount("status.peerReleases", maximum: 1_024)) {
            let peer = try reader.readString("status.peerRelease.peer", maximumBytes: 64)
            let software = try reader.readString("status.peerRelease.software", maximumBytes: Self.softwareBytesMax)
            releases.append(PeerRelease(peer: peer, software: software, rules: try reader.readUInt32("status.peerRelease.rules")))
        }
        peerReleases = releases
    }
}

extension NodeStatus {
    /// What an operator asks of a node beyond its height, as `calisson status` and
    /// `calisson-node status` print it: caught up or behind, the validator set to come,
    /// its own votes in recent certificates.
    public var operatorFields: [(String, String)] {
        let behind = knownFinalHeight > height ? knownFinalHeight - height : 0
        return [
            ("final", behind == 0 ? "caught up (no later final block known)" : "\(behind) blocks behind (\(knownFinalHeight) known final)"),
            ("pendingValidators", pendingFromHeight.map { "\(pendingValidators.joined(separator: ",")) from height \($0)" } ?? "none"),
            ("ownVotes", recentCertificates == 0
                ? "no block executed since the node started"
                : "in \(recentCertificatesSigned) of the last \(recentCertificates) blocks' commit certificates"),
        ] + versionFields
    }

    /// Releases, rules and upgrades (absent from a node built before they were sent).
    var versionFields: [(String, String)] {
        guard form == .current else { return [("release", "not said (a node built before releases were reported)")] }
        let upgrades = pendingUpgrades.map { "\($0.name): rules \($0.rules) from height \($0.height)" }
        let peers = peerReleases.map { $0.rules == 0 ? "\($0.peer) not said" : "\($0.peer) \($0.software) (rules \($0.rules))" }
        return [
            ("release", "\(software) (ledger rules up to \(rulesNewest); in force: \(rulesInForce))"),
            ("pendingUpgrades", upgrades.isEmpty ? "none" : upgrades.joined(separator: "; ")),
            ("peerReleases", peers.isEmpty ? "no peer linked" : peers.joined(separator: ", ")),
        ]
    }
}

public struct TransactionLocation: Hashable, Sendable {
    public let height: UInt64
    public let position: UInt64
    public let applied: Bool
    /// Why the ledger rejected it (nil when applied), as the ledger words it.
    public let reason: String?
    public init(height: UInt64, position: UInt64, applied: Bool, reason: String? = nil) {
        self.height = height
        self.position = position
        self.applied = applied
        self.reason = applied ? nil : reason
    }

    public static let reasonBytesMax = 1_024

    func encode(to writer: inout WireWriter) {
        writer.write(height)
        writer.write(position)
        writer.write(applied)
        if !applied { writer.writeString(reason ?? "") }
    }

    init(from reader: inout WireReader) throws(WireError) {
        let height = try reader.readUInt64("response.height")
        let position = try reader.readUInt64("response.position")
        let applied = try reader.readBool("response.applied")
        let reason = applied ? nil : try reader.readString("response.reason", maximumBytes: Self.reasonBytesMax)
        self.init(height: height, position: position, applied: applied, reason: reason)
    }
}

public struct BlockSummary: Hashable, Sendable {
    public let height: UInt64
    public let digest: Bytes32
    /// The commit certificate (Consensus wire form).
    public let certificate: [UInt8]
    /// The state root after the block, as the node computed it (not certified: a
    /// checkpoint's certificate signs it). Zero where the node deferred the tree's update
    /// to its next checkpoint height (Docs/STORAGE.md, "The root at checkpoints").
    public let stateRoot: SHA256Digest
    public let transactionCount: UInt64
    public init(height: UInt64, digest: Bytes32, certificate: [UInt8], stateRoot: SHA256Digest, transactionCount: UInt64) {
        self.height = height
        self.digest = digest
        self.certificate = certificate
        self.stateRoot = stateRoot
        self.transactionCount = transactionCount
    }
}

/// A final block as the event feed reads it: its body (the consensus block's wire form,
/// whose digest the commit certificate signs), each transaction's stored result
/// (`StoreAnswers.result`), and what its execution did besides: the ledger epoch it
/// closed, the proposals it decided, as their records stand now (a decided proposal does
/// not change again), and the numbers of the proposals it opened. The body and certificate can be checked; the results, the
/// epoch and the proposals are the node's word (Docs/API.md, "Events").
///
/// The decided proposals' records fill at most `StoreAnswers.decidedBytesMax`; those past
/// it are named by number only (`decidedLeftOut`), for the reader to ask for (`state`), so
/// that a block deciding many large proposals still has an answer under the frame's
/// limit. The numbers are written after everything else and only when there are any:
/// an answer without them is byte for byte what a node before them sent.
public struct BlockContents: Hashable, Sendable {
    public let height: UInt64
    public let body: [UInt8]
    public let certificate: [UInt8]
    public let results: [[UInt8]]
    public let closedEpoch: UInt64?
    public let decided: [[UInt8]]
    public let opened: [OpenedProposal]
    /// The proposals the block decided whose records this answer leaves out.
    public let decidedLeftOut: [UInt64]

    public init(
        height: UInt64, body: [UInt8], certificate: [UInt8], results: [[UInt8]], closedEpoch: UInt64?, decided: [[UInt8]], opened: [OpenedProposal],
        decidedLeftOut: [UInt64] = []
    ) {
        self.height = height
        self.body = body
        self.certificate = certificate
        self.results = results
        self.closedEpoch = closedEpoch
        self.decided = decided
        self.opened = opened
        self.decidedLeftOut = decidedLeftOut
    }

    func encode(to writer: inout WireWriter) {
        writer.write(height)
        writer.writeBytes(body)
        writer.writeBytes(certificate)
        writer.write(UInt32(results.count))
        for result in results { writer.writeBytes(result) }
        writer.write(closedEpoch != nil)
        if let closedEpoch { writer.write(closedEpoch) }
        writer.write(UInt32(decided.count))
        for proposal in decided { writer.writeBytes(proposal) }
        writer.writeArray(opened)
        if !decidedLeftOut.isEmpty { writer.writeArray(decidedLeftOut) }
    }

    init(from reader: inout WireReader) throws(WireError) {
        height = try reader.readUInt64("contents.height")
        body = try reader.readBytes("contents.body", maximum: WireLimits.envelopePayloadSizeMax)
        certificate = try reader.readBytes("contents.certificate", maximum: 1 << 20)
        var results: [[UInt8]] = []
        for _ in 0..<(try reader.readCount("contents.results", maximum: ClientResponse.blockTransactionsMax)) {
            results.append(try reader.readBytes("contents.result", maximum: TransactionLocation.reasonBytesMax + 1))
        }
        self.results = results
        closedEpoch = try reader.readBool("contents.closed") ? try reader.readUInt64("contents.closedEpoch") : nil
        var decided: [[UInt8]] = []
        for _ in 0..<(try reader.readCount("contents.decided", maximum: ClientResponse.blockTransactionsMax)) {
            decided.append(try reader.readBytes("contents.proposal", maximum: 1 << 20))
        }
        self.decided = decided
        opened = try reader.readArray("contents.opened", maximum: ClientResponse.blockTransactionsMax, of: OpenedProposal.self)
        if reader.isAtEnd {
            decidedLeftOut = []
        } else {
            let offset = reader.offset
            decidedLeftOut = try reader.readArray("contents.decidedLeftOut", maximum: ClientResponse.blockTransactionsMax, of: UInt64.self)
            // Written only when not empty: one encoding for each answer.
            guard !decidedLeftOut.isEmpty else { throw .invalidValue(field: "contents.decidedLeftOut", offset: offset, reason: "present and empty") }
        }
    }
}

public struct TransactionInclusion: Hashable, Sendable {
    public let location: TransactionLocation
    public let commandCount: UInt32
    public let proof: MerkleProof
    public let certificate: [UInt8]
    public init(location: TransactionLocation, commandCount: UInt32, proof: MerkleProof, certificate: [UInt8]) {
        self.location = location
        self.commandCount = commandCount
        self.proof = proof
        self.certificate = certificate
    }

    func encode(to writer: inout WireWriter) {
        location.encode(to: &writer)
        writer.write(commandCount)
        writer.write(proof)
        writer.writeBytes(certificate)
    }

    init(from reader: inout WireReader) throws(WireError) {
        let location = try TransactionLocation(from: &reader)
        let count = try reader.readUInt32("response.commandCount")
        let proof = try MerkleProof(from: &reader)
        self.init(location: location, commandCount: count, proof: proof, certificate: try reader.readBytes("response.certificate", maximum: 1 << 20))
    }
}

/// A node's answer to `transactionResult`: what proves a final transaction's result
/// (`ResultCheck` checks it).
public struct ResultProof: Hashable, Sendable {
    public let inclusion: TransactionInclusion
    /// The committed bytes of its result (`CommittedResults.bytes`) and their Merkle proof
    /// among its block's results; nil when its block did not commit its results (executed
    /// under rules before `LedgerRules.resultsCommitted`).
    public let committed: [UInt8]?
    public let resultProof: MerkleProof?
    /// The node's latest stable checkpoint, its certificate, and the value of
    /// `StateKeys.blockResults(height)` there with its proof (absent: the checkpoint is
    /// below the block, or the block committed no results).
    public let checkpointHeight: UInt64
    public let checkpointCertificate: [UInt8]
    public let record: [UInt8]?
    public let recordProof: StateProof

    public init(
        inclusion: TransactionInclusion, committed: [UInt8]?, resultProof: MerkleProof?, checkpointHeight: UInt64,
        checkpointCertificate: [UInt8], record: [UInt8]?, recordProof: StateProof
    ) {
        self.inclusion = inclusion
        self.committed = committed
        self.resultProof = resultProof
        self.checkpointHeight = checkpointHeight
        self.checkpointCertificate = checkpointCertificate
        self.record = record
        self.recordProof = recordProof
    }

    /// The committed bytes of a result are short: a code and a few figures or identifiers.
    public static let committedBytesMax = 1_024

    func encode(to writer: inout WireWriter) {
        inclusion.encode(to: &writer)
        writer.write(committed != nil && resultProof != nil)
        if let committed, let resultProof {
            writer.writeBytes(committed)
            writer.write(resultProof)
        }
        writer.write(checkpointHeight)
        writer.writeBytes(checkpointCertificate)
        writer.write(record != nil)
        if let record { writer.writeBytes(record) }
        writer.write(recordProof)
    }

    init(from reader: inout WireReader) throws(WireError) {
        let inclusion = try TransactionInclusion(from: &reader)
        var committed: [UInt8]?
        var resultProof: MerkleProof?
        if try reader.readBool("result.committed") {
            committed = try reader.readBytes("result.bytes", maximum: Self.committedBytesMax)
            resultProof = try MerkleProof(from: &reader)
        }
        let height = try reader.readUInt64("result.checkpointHeight")
        let certificate = try reader.readBytes("result.certificate", maximum: 1 << 20)
        let record = try reader.readBool("result.recordPresent") ? try reader.readBytes("result.record", maximum: 1_024) : nil
        self.init(
            inclusion: inclusion, committed: committed, resultProof: resultProof, checkpointHeight: height, checkpointCertificate: certificate,
            record: record, recordProof: try StateProof(from: &reader))
    }
}

public struct AccountTransaction: Hashable, Sendable {
    public let id: Bytes32
    public let location: TransactionLocation
    public init(id: Bytes32, location: TransactionLocation) {
        self.id = id
        self.location = location
    }
}

public enum ClientResponse: Hashable, Sendable, WireCodable {
    case admitted(id: Bytes32)
    case refused(String)
    case status(NodeStatus)
    /// nil: not final here (yet).
    case transaction(TransactionLocation?)
    /// The value (nil: absent) and its proof against `root`, the state after `height`.
    case state(height: UInt64, root: SHA256Digest, value: [UInt8]?, proof: StateProof)
    case block(BlockSummary?)
    case error(String)
    case accountTransactions([AccountTransaction])
    case blocks([BlockSummary])
    /// The value (nil: absent) at checkpoint `height`, its proof, and the checkpoint's
    /// certificate (Consensus wire form: votes of (height, state root)).
    case certifiedState(height: UInt64, certificate: [UInt8], value: [UInt8]?, proof: StateProof)
    /// nil: not final here (or the block's body was pruned).
    case transactionProof(TransactionInclusion?)
    case handovers([Handover])
    /// nil: no such final block here.
    case blockTransactions([Bytes32]?)
    /// nil: no such final block here, or its body was pruned.
    case blockContents(BlockContents?)
    /// The pages asked, in their order: nil for one not stored here. Fewer than asked when
    /// the answer reached `snapshotBytesMax`: ask again for the rest.
    case treePages([[UInt8]?])
    /// The values asked, in their order: nil for one not stored here (its checkpoint is no
    /// longer served). Fewer than asked past `snapshotBytesMax`, as for pages.
    case stateValues([[UInt8]?])
    /// nil: not final here (or the block's body was pruned).
    case transactionResult(ResultProof?)

    public static let blockTransactionsMax = 1 << 16
    /// The bytes of pages or values one answer carries, about (the last item may pass it).
    public static let snapshotBytesMax = 4 << 20

    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .admitted(id): writer.write(UInt8(1)); writer.write(id)
        case let .refused(reason): writer.write(UInt8(2)); writer.writeString(reason)
        case let .status(status): writer.write(UInt8(3)); writer.write(status)
        case let .transaction(found):
            writer.write(UInt8(4))
            writer.write(found != nil)
            if let found { found.encode(to: &writer) }
        case let .state(height, root, value, proof):
            writer.write(UInt8(5)); writer.write(height); writer.write(root)
            writer.write(value != nil)
            if let value { writer.writeBytes(value) }
            writer.write(proof)
        case let .block(found):
            writer.write(UInt8(6))
            writer.write(found != nil)
            if let found {
                writer.write(found.height); writer.write(found.digest); writer.writeBytes(found.certificate)
                writer.write(found.stateRoot); writer.write(found.transactionCount)
            }
        case let .error(reason): writer.write(UInt8(7)); writer.writeString(reason)
        case let .transactionProof(found):
            writer.write(UInt8(11))
            writer.write(found != nil)
            if let found { found.encode(to: &writer) }
        case let .handovers(list):
            writer.write(UInt8(12))
            writer.writeArray(list)
        case let .blockTransactions(ids):
            writer.write(UInt8(13))
            writer.write(ids != nil)
            if let ids { writer.writeArray(ids) }
        case let .blockContents(found):
            writer.write(UInt8(14))
            writer.write(found != nil)
            if let found { found.encode(to: &writer) }
        case let .treePages(pages):
            writer.write(UInt8(15))
            Self.writeOptionalBlobs(pages, into: &writer)
        case let .stateValues(values):
            writer.write(UInt8(16))
            Self.writeOptionalBlobs(values, into: &writer)
        case let .transactionResult(found):
            writer.write(UInt8(17))
            writer.write(found != nil)
            if let found { found.encode(to: &writer) }
        case let .certifiedState(height, certificate, value, proof):
            writer.write(UInt8(10)); writer.write(height); writer.writeBytes(certificate)
            writer.write(value != nil)
            if let value { writer.writeBytes(value) }
            writer.write(proof)
        case let .blocks(list):
            writer.write(UInt8(9))
            writer.write(UInt32(list.count))
            for block in list {
                writer.write(block.height); writer.write(block.digest); writer.writeBytes(block.certificate)
                writer.write(block.stateRoot); writer.write(block.transactionCount)
            }
        case let .accountTransactions(list):
            writer.write(UInt8(8))
            writer.write(UInt32(list.count))
            for entry in list {
                writer.write(entry.id); entry.location.encode(to: &writer)
            }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("response.kind") {
        case 1: self = .admitted(id: try Bytes32(from: &reader))
        case 2: self = .refused(try reader.readString("response.reason", maximumBytes: 4_096))
        case 3: self = .status(try NodeStatus(from: &reader))
        case 4:
            guard try reader.readBool("response.found") else { self = .transaction(nil); return }
            self = .transaction(try TransactionLocation(from: &reader))
        case 5:
            let height = try reader.readUInt64("response.height")
            let root = try SHA256Digest(from: &reader)
            let value = try reader.readBool("response.present") ? try reader.readBytes("response.value", maximum: WireLimits.envelopePayloadSizeMax) : nil
            self = .state(height: height, root: root, value: value, proof: try StateProof(from: &reader))
        case 6:
            guard try reader.readBool("response.found") else { self = .block(nil); return }
            let height = try reader.readUInt64("response.height")
            let digest = try Bytes32(from: &reader)
            let certificate = try reader.readBytes("response.certificate", maximum: 1 << 20)
            let root = try SHA256Digest(from: &reader)
            self = .block(BlockSummary(height: height, digest: digest, certificate: certificate, stateRoot: root, transactionCount: try reader.readUInt64("response.count")))
        case 7: self = .error(try reader.readString("response.reason", maximumBytes: 4_096))
        case 8:
            let count = try reader.readCount("response.transactions", maximum: Int(ClientRequest.accountTransactionsMax))
            var list: [AccountTransaction] = []
            for _ in 0..<count {
                let id = try Bytes32(from: &reader)
                list.append(AccountTransaction(id: id, location: try TransactionLocation(from: &reader)))
            }
            self = .accountTransactions(list)
        case 9:
            let count = try reader.readCount("response.blocks", maximum: Int(ClientRequest.blocksMax))
            var list: [BlockSummary] = []
            for _ in 0..<count {
                let height = try reader.readUInt64("response.height")
                let digest = try Bytes32(from: &reader)
                let certificate = try reader.readBytes("response.certificate", maximum: 1 << 20)
                let root = try SHA256Digest(from: &reader)
                list.append(BlockSummary(height: height, digest: digest, certificate: certificate, stateRoot: root, transactionCount: try reader.readUInt64("response.count")))
            }
            self = .blocks(list)
        case 11:
            guard try reader.readBool("response.found") else { self = .transactionProof(nil); return }
            self = .transactionProof(try TransactionInclusion(from: &reader))
        case 17:
            guard try reader.readBool("response.found") else { self = .transactionResult(nil); return }
            self = .transactionResult(try ResultProof(from: &reader))
        case 13:
            guard try reader.readBool("response.found") else { self = .blockTransactions(nil); return }
            self = .blockTransactions(try reader.readArray("response.ids", maximum: Self.blockTransactionsMax, of: Bytes32.self))
        case 14:
            guard try reader.readBool("response.found") else { self = .blockContents(nil); return }
            self = .blockContents(try BlockContents(from: &reader))
        case 12: self = .handovers(try reader.readArray("response.handovers", maximum: ClientRequest.handoversMax, of: Handover.self))
        case 15: self = .treePages(try Self.readOptionalBlobs("response.pages", from: &reader))
        case 16: self = .stateValues(try Self.readOptionalBlobs("response.values", from: &reader))
        case 10:
            let height = try reader.readUInt64("response.height")
            let certificate = try reader.readBytes("response.certificate", maximum: 1 << 20)
            let value = try reader.readBool("response.present") ? try reader.readBytes("response.value", maximum: WireLimits.envelopePayloadSizeMax) : nil
            self = .certifiedState(height: height, certificate: certificate, value: value, proof: try StateProof(from: &reader))
        case let raw: throw .unknownKind(field: "response.kind", offset: offset, raw: UInt64(raw))
        }
    }

    private static func writeOptionalBlobs(_ blobs: [[UInt8]?], into writer: inout WireWriter) {
        writer.write(UInt32(blobs.count))
        for blob in blobs {
            writer.write(blob != nil)
            if let blob { writer.writeBytes(blob) }
        }
    }

    private static func readOptionalBlobs(_ field: String, from reader: inout WireReader) throws(WireError) -> [[UInt8]?] {
        let count = try reader.readCount(field, maximum: ClientRequest.snapshotItemsMax)
        var blobs: [[UInt8]?] = []
        blobs.reserveCapacity(count)
        for _ in 0..<count {
            blobs.append(try reader.readBool(field + ".present") ? try reader.readBytes(field + ".item", maximum: WireLimits.envelopePayloadSizeMax) : nil)
        }
        return blobs
    }
}

/// A state value named by its key and the hash of the value (as a leaf of the state tree
/// names it): a node answers with the value it holds under that key whose hash matches.
public struct StateValueReference: Hashable, Sendable, WireCodable {
    public let key: StateKey
    public let valueHash: SHA256Digest

    public init(key: StateKey, valueHash: SHA256Digest) {
        self.key = key
        self.valueHash = valueHash
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(key)
        writer.write(valueHash)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        key = try StateKey(from: &reader)
        valueHash = try SHA256Digest(from: &reader)
    }
}
