import CalissonCrypto
import Dispatch
import Ledger
import LightClient
import Storage
import Synchronization
import Wire

/// Answers, off the node's loop, the reads that need only what the database holds for the
/// latest stable checkpoint: a state record with its proof and the checkpoint's
/// certificate, and the validator-set handovers (what a light client and the gateway
/// ask). On a thread of its own, through a read-only connection of its own, each answer in
/// one read transaction: one snapshot, in which the checkpoint, the tree pages and the
/// archived values it reaches are all there (a later checkpoint prunes them only for
/// readers that start after it). So a block being executed and fsynced on the loop delays
/// no certified read, and a burst of reads delays no block.
final class CheckpointReader: @unchecked Sendable {
    /// Reads waiting at once; past it the loop answers them itself, as before this reader.
    static let pendingMax = 4_096

    /// Touched only on `queue`.
    private let store: NodeStore
    private let queue = DispatchQueue(label: "calisson.checkpoint-reader")
    private let pending = Mutex(0)

    init(file: String, tuning: NodeStore.Tuning) throws(StorageError) {
        store = try NodeStore(file: file, readOnly: true, tuning: tuning)
    }

    /// Whether `request` is one this reader answers.
    static func answers(_ request: ClientRequest) -> Bool {
        switch request {
        case .certifiedState, .handovers: return true
        default: return false
        }
    }

    /// Takes a request it answers (`answers`), unless too many wait: false, and the caller
    /// answers it.
    func take(_ request: ClientRequest, _ respond: @escaping @Sendable ([UInt8]) -> Void) -> Bool {
        guard Self.answers(request), pending.withLock({ count in
            guard count < Self.pendingMax else { return false }
            count += 1
            return true
        }) else { return false }
        queue.async { [self] in
            let response: ClientResponse
            do {
                response = try store.reading { () -> Result<ClientResponse, any Error> in
                    Result { try Self.answer(request, store: store) }
                }.get()
            } catch {
                response = .error("\(error)")
            }
            pending.withLock { $0 -= 1 }
            respond(response.wireBytes)
        }
        return true
    }

    static func answer(_ request: ClientRequest, store: NodeStore) throws -> ClientResponse {
        switch request {
        case let .certifiedState(key):
            let pages = StorePages(store: store)
            let answer = try ClientAnswers.certifiedState(key, store: store, pages: pages)
            if let failure = pages.failure { throw StorageError.corrupt(file: store.file, reason: failure) }
            return answer
        case let .handovers(after):
            return .handovers(try store.handovers(after: after, limit: ClientRequest.handoversMax).map { try Handover(wireBytes: $0.record) })
        default: return .error("not a checkpoint read")
        }
    }

    func close() { queue.sync { store.close() } }
}

/// The tree's pages as the database has them, without a cache (SQLite's page cache and
/// memory map hold the upper levels that every proof reads); a page that cannot be read
/// is said in `failure`, so that no answer is built on it.
final class StorePages: TreePageSource {
    let store: NodeStore
    private(set) var failure: String?

    init(store: NodeStore) { self.store = store }

    func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? {
        do {
            guard let bytes = try store.treePage(root) else { return nil }
            let page = try TreePage(decoding: bytes)
            guard page.root == root else { throw StorageError.corrupt(file: store.file, reason: "tree page \(root.hex) hashes to \(page.root.hex)") }
            return page
        } catch {
            failure = failure ?? "tree page \(root.hex): \(error)"
            return nil
        }
    }
}
