import CalissonCrypto
import Ledger
import Storage
import Wire

/// The answers read straight from a node's database, shared by the node (its client API)
/// and `calisson --db`, so both give the same answer to the same question.
public struct StoreAnswers {
    /// How a transaction's result is stored (`TransactionRecord.result`): 0 when applied;
    /// when rejected, 1 and the ledger's reason (UTF-8, cut at `TransactionLocation.reasonBytesMax`)
    /// or, in a block that committed its results (`BlockOutcome.resultsCommitted`), 2, the
    /// length (2 bytes) and bytes of the reason's committed form, then its text: the node can
    /// then prove the result (`committed`).
    public static func result(_ result: TransactionResult, committed: Bool = false) -> [UInt8] {
        guard case let .rejected(rejection) = result else { return [0] }
        let text = "\(rejection)".utf8
        guard committed else { return [1] + Array(text.prefix(TransactionLocation.reasonBytesMax)) }
        // Within the bytes a stored result may take (`resultBytesMax`): the text is cut, the
        // committed form (a code and a few figures) never.
        let form = rejection.committedBytes
        return [2] + withUnsafeBytes(of: UInt16(clamping: form.count).bigEndian, Array.init) + form
            + Array(text.prefix(max(0, Self.resultBytesMax - 3 - form.count)))
    }
    /// The bytes a stored result takes at most, as a block's contents carry it (readers of
    /// every release take that much).
    public static let resultBytesMax = TransactionLocation.reasonBytesMax + 1
    public static func isApplied(_ result: [UInt8]) -> Bool { result.first == 0 }
    /// The rejection reason of a stored result (nil when applied).
    public static func reason(_ result: [UInt8]) -> String? {
        switch result.first {
        case 0: return nil
        case 2:
            guard let (_, text) = committedParts(result) else { return String(decoding: result.dropFirst(), as: UTF8.self) }
            return String(decoding: text, as: UTF8.self)
        default: return String(decoding: result.dropFirst(), as: UTF8.self)
        }
    }
    /// The committed bytes of a stored result (`CommittedResults.bytes`): nil when its block
    /// did not commit its results (stored before `LedgerRules.resultsCommitted`) or the bytes
    /// are not a stored result.
    public static func committed(_ result: [UInt8]) -> [UInt8]? {
        switch result.first {
        case 0: return result.count == 1 ? [0] : nil
        case 2: return committedParts(result).map { [1] + $0.form }
        default: return nil
        }
    }
    /// The leaves of a block's results tree (`CommittedResults.leaf`) from its stored
    /// results, in order; nil when one is not in its committed form.
    public static func committedLeaves(_ results: [[UInt8]]) -> [SHA256Digest]? {
        var leaves: [SHA256Digest] = []
        leaves.reserveCapacity(results.count)
        for result in results {
            guard let committed = committed(result) else { return nil }
            leaves.append(CommittedResults.leaf(committed))
        }
        return leaves
    }
    private static func committedParts(_ result: [UInt8]) -> (form: ArraySlice<UInt8>, text: ArraySlice<UInt8>)? {
        guard result.count >= 3 else { return nil }
        let length = Int(clamping: result[1]) << 8 | Int(clamping: result[2])
        guard result.count >= 3 + length else { return nil }
        return (result[3..<(3 + length)], result[(3 + length)...])
    }
    public static func location(height: UInt64, position: Int, result: [UInt8]) -> TransactionLocation {
        TransactionLocation(height: height, position: UInt64(position), applied: isApplied(result), reason: reason(result))
    }

    public let store: NodeStore

    public init(store: NodeStore) { self.store = store }

    public func transaction(_ id: Bytes32) throws(StorageError) -> TransactionLocation? {
        try store.transaction(id).map { Self.location(height: $0.height, position: $0.position, result: $0.result) }
    }

    /// The latest transactions of `account`, at most `limit`, in blocks up to `highest`.
    public func accountTransactions(_ account: Bytes32, limit: UInt32, atMost highest: UInt64 = .max) throws(StorageError) -> [AccountTransaction] {
        try store.accountTransactions(of: account, limit: Int(min(limit, ClientRequest.accountTransactionsMax)), atMost: highest).map { found in
            AccountTransaction(id: found.transaction.id, location: Self.location(height: found.height, position: found.position, result: found.transaction.result))
        }
    }

    public func block(_ height: UInt64) throws(StorageError) -> BlockSummary? {
        try store.block(at: height).map(BlockSummary.init)
    }

    public func blockTransactions(_ height: UInt64) throws(StorageError) -> [Bytes32]? {
        try store.block(at: height).map { $0.transactions.map(\.id) }
    }

    /// The extra (`NodeStore.extra`) that records what block `height`'s execution did
    /// besides its transactions' results, written with the block when it did anything.
    public static func eventsExtraName(_ height: UInt64) -> String { "events.\(height)" }

    /// The record of a block's events: the epoch it closed, the proposals it decided, the
    /// proposals it opened (nil when none of these: nothing is written).
    public static func eventsExtra(closedEpoch: UInt64?, decided: [UInt64], opened: [OpenedProposal]) -> [UInt8]? {
        guard closedEpoch != nil || !decided.isEmpty || !opened.isEmpty else { return nil }
        var writer = WireWriter()
        writer.write(closedEpoch != nil)
        if let closedEpoch { writer.write(closedEpoch) }
        writer.writeArray(decided)
        writer.writeArray(opened)
        return writer.bytes
    }

    /// The bytes of decided proposals' records one block's contents carry, at most: a
    /// proposal's record may be some 25 KiB (an action up to 16 KiB and its votes), and a
    /// block of a thousand votes may decide as many. Those past it, or past the room the
    /// rest of the answer leaves in the client frame's 8 MiB, are named
    /// (`BlockContents.decidedLeftOut`).
    public static let decidedBytesMax = 2 << 20
    /// Room kept in the frame for the answer's own fields and counts.
    static let contentsOverheadBytes = 64 << 10

    /// A final block's body, results and events (nil: not here, or its body was pruned),
    /// the decided proposals' records within `decidedBytesMax` bytes and the frame's room,
    /// the others by number. The records are read with `current` (the node's current state:
    /// a decided proposal does not change again) or, without it, from the stored state,
    /// which is written at checkpoints: a record it does not hold decided yet is named too.
    /// A record of events this node cannot read is an error, not an answer without them.
    public func blockContents(
        _ height: UInt64, decidedBytesMax: Int = Self.decidedBytesMax, current: ((StateKey) throws -> [UInt8]?)? = nil
    ) throws(StorageError) -> BlockContents? {
        guard let block = try store.block(at: height), let body = block.body else { return nil }
        let results = block.transactions.map(\.result)
        let room = WireLimits.envelopePayloadSizeMax - Self.contentsOverheadBytes - body.count - block.certificate.count
            - results.reduce(0) { $0 + $1.count + 4 }
        let budget = min(decidedBytesMax, room)
        var closedEpoch: UInt64?
        var decided: [[UInt8]] = [], decidedBytes = 0, leftOut: [UInt64] = []
        var opened: [OpenedProposal] = []
        if let extra = try store.extra(Self.eventsExtraName(height)) {
            do {
                var reader = WireReader(extra)
                closedEpoch = try reader.readBool("events.closed") ? try reader.readUInt64("events.closedEpoch") : nil
                // Without `current`, a record the stored state does not hold decided yet
                // (it is written at checkpoints, behind the blocks) is named too: the node's
                // current state, which the reader asks next, has it.
                for id in try reader.readArray("events.decided", maximum: ClientResponse.blockTransactionsMax, of: UInt64.self) {
                    guard leftOut.isEmpty, let record = try current?(StateKeys.proposal(id)) ?? store.value(StateKeys.proposal(id)),
                        record.count + 4 <= budget - decidedBytes,
                        let proposal = try? Proposal(wireBytes: record), proposal.status != .open
                    else {
                        leftOut.append(id)
                        continue
                    }
                    decided.append(record)
                    decidedBytes += record.count + 4
                }
                opened = try reader.readArray("events.opened", maximum: ClientResponse.blockTransactionsMax, of: OpenedProposal.self)
                try reader.expectEnd()
            } catch let error as StorageError {
                throw error
            } catch {
                throw .invalid(file: store.file, reason: "block \(height)'s events record: \(error)")
            }
        }
        return BlockContents(
            height: height, body: body, certificate: block.certificate, results: results, closedEpoch: closedEpoch,
            decided: decided, opened: opened, decidedLeftOut: leftOut)
    }

    /// Final blocks from `from` on, at most `limit`: their headers only are read.
    public func blocks(from: UInt64, limit: UInt32) throws(StorageError) -> [BlockSummary] {
        guard from <= store.height, limit > 0 else { return [] }
        return try store.blockHeaders(from: from, through: min(store.height, from.saturatingAdding(UInt64(limit) - 1))).map(BlockSummary.init)
    }
}

extension BlockSummary {
    public init(_ header: BlockHeaderRecord) {
        self.init(height: header.height, digest: header.digest, certificate: header.certificate, stateRoot: header.stateRoot,
                  transactionCount: header.transactionCount)
    }

    public init(_ record: BlockRecord) {
        self.init(height: record.height, digest: record.digest, certificate: record.certificate, stateRoot: record.stateRoot,
                  transactionCount: UInt64(record.transactions.count))
    }
}
