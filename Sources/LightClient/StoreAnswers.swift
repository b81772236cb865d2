import Storage
import Wire

/// The answers read straight from a node's database, shared by the node (its client API)
/// and `calisson --db`, so both give the same answer to the same question.
public struct StoreAnswers {
    /// How a transaction's result is stored (`TransactionRecord.result`).
    public static func result(applied: Bool) -> [UInt8] { applied ? [0] : [1] }
    public static func isApplied(_ result: [UInt8]) -> Bool { result == [0] }

    public let store: NodeStore

    public init(store: NodeStore) { self.store = store }

    public func transaction(_ id: Bytes32) throws(StorageError) -> TransactionLocation? {
        try store.transaction(id).map { TransactionLocation(height: $0.height, position: UInt64($0.position), applied: Self.isApplied($0.result)) }
    }

    public func accountTransactions(_ account: Bytes32, limit: UInt32) throws(StorageError) -> [AccountTransaction] {
        var found: [AccountTransaction] = []
        for (height, position) in try store.transactions(of: account, limit: Int(min(limit, ClientRequest.accountTransactionsMax))) {
            guard let block = try store.block(at: height), position < block.transactions.count else { continue }
            let transaction = block.transactions[position]
            found.append(AccountTransaction(
                id: transaction.id, location: TransactionLocation(height: height, position: UInt64(position), applied: Self.isApplied(transaction.result))))
        }
        return found
    }

    public func block(_ height: UInt64) throws(StorageError) -> BlockSummary? {
        try store.block(at: height).map(BlockSummary.init)
    }

    /// Final blocks from `from` on, at most `limit`.
    public func blocks(from: UInt64, limit: UInt32) throws(StorageError) -> [BlockSummary] {
        guard from <= store.height, limit > 0 else { return [] }
        var found: [BlockSummary] = []
        for height in from...min(store.height, from + UInt64(limit) - 1) {
            if let block = try block(height) { found.append(block) }
        }
        return found
    }
}

extension BlockSummary {
    public init(_ record: BlockRecord) {
        self.init(height: record.height, digest: record.digest, certificate: record.certificate, stateRoot: record.stateRoot,
                  transactionCount: UInt64(record.transactions.count))
    }
}
