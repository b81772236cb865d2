import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Verifies batches of signatures on several cores, with an optional cache.
///
/// `verify(_:)` takes out the checks the cache already vouches for, cuts the rest into
/// chunks of consecutive checks, and runs `workerCount` workers with
/// `DispatchQueue.concurrentPerform` (libdispatch's pool; the calling thread is one of
/// them). Workers pull chunks from a shared atomic cursor, several chunks per worker, so
/// a core slowed by other load takes fewer chunks instead of holding up the batch, and
/// no more than `workerCount` threads ever verify at once. It blocks until every result
/// is known, so the node calls it from a worker thread, and on its event-loop thread only
/// for a few checks the cache does not vouch for (fewer than `chunkCountMin` make one
/// chunk, checked on the calling thread alone).
public final class BatchVerifier: Sendable {
    /// A batch larger than this is refused by precondition: callers split their work
    /// (the mempool admits in batches far smaller), and the results array stays bounded.
    public static let batchCountMax = 1 << 16
    /// Fewer checks than this per chunk cost more in coordination than they gain.
    public static let chunkCountMin = 16
    /// Chunks per worker: enough for load balancing, few enough to keep chunks cheap.
    public static let chunksPerWorker = 8

    public let workerCount: Int
    public let cache: VerifyCache?

    /// `workerCount` defaults to the number of online processors.
    public init(workerCount: Int? = nil, cache: VerifyCache? = nil) {
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        self.workerCount = max(1, workerCount ?? cores)
        self.cache = cache
    }

    /// For each check, whether its signature is valid (or was cached as valid).
    public func verify(_ checks: [SignatureCheck]) -> [Bool] {
        precondition(checks.count <= Self.batchCountMax, "batch of \(checks.count) exceeds batchCountMax")
        var results = cache?.contains(checks) ?? [Bool](repeating: false, count: checks.count)
        let pending = results.indices.filter { !results[$0] }
        guard !pending.isEmpty else { return results }

        let chunkSize = max(Self.chunkCountMin, pending.count / (workerCount * Self.chunksPerWorker))
        let chunkCount = (pending.count + chunkSize - 1) / chunkSize
        let workers = min(workerCount, chunkCount)
        let cursor = ChunkCursor()
        results.withUnsafeMutableBufferPointer { output in
            // Each chunk is taken by exactly one worker and writes only its own indices,
            // so the shared buffer is race-free.
            nonisolated(unsafe) let output = output
            let work: @Sendable (Int) -> Void = { _ in
                while true {
                    let chunk = cursor.next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard chunk < chunkCount else { return }
                    for position in (chunk * chunkSize)..<min(pending.count, (chunk + 1) * chunkSize) {
                        let index = pending[position]
                        output[index] = checks[index].verify()
                    }
                }
            }
            if workers == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: work) }
        }
        if let cache { cache.insert(contentsOf: pending.lazy.filter { results[$0] }.map { checks[$0] }) }
        return results
    }
}

private final class ChunkCursor: Sendable {
    let next = Atomic<Int>(0)
}
