import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Verifies batches of signatures on several cores, with an optional cache.
///
/// `verify(_:)` splits the checks the cache does not already vouch for into one
/// contiguous chunk per worker and runs the chunks with `DispatchQueue.concurrentPerform`
/// (libdispatch's pool, one thread per core; the calling thread takes a chunk too). It
/// blocks until every result is known, so the node calls it from a worker thread,
/// never from its event-loop thread.
public final class BatchVerifier: Sendable {
    /// A batch larger than this is refused by precondition: callers split their work
    /// (the mempool admits in batches far smaller), and the results array stays bounded.
    public static let batchCountMax = 1 << 16
    /// Below this many checks per worker, splitting costs more than it gains.
    public static let chunkCountMin = 16

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

        let chunks = max(1, min(workerCount, pending.count / Self.chunkCountMin))
        results.withUnsafeMutableBufferPointer { output in
            // Each chunk writes only its own indices, so the shared buffer is race-free.
            nonisolated(unsafe) let output = output
            let run: @Sendable (Int) -> Void = { chunk in
                let lower = pending.count * chunk / chunks, upper = pending.count * (chunk + 1) / chunks
                for position in lower..<upper {
                    let index = pending[position]
                    output[index] = checks[index].verify()
                }
            }
            if chunks == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: chunks, execute: run) }
        }
        if let cache { cache.insert(contentsOf: pending.lazy.filter { results[$0] }.map { checks[$0] }) }
        return results
    }
}
