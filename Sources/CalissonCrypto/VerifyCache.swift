import Synchronization

/// A bounded set of signature checks already verified as valid, so that a transaction
/// verified when admitted to the mempool is not verified again when its block executes.
///
/// Keyed by the whole `SignatureCheck` (digest, public key and signature must all
/// match), so a hit can never vouch for a different signature over the same message.
/// Only valid results are stored: caching failures would let anyone fill the cache
/// with junk. When full, the oldest entry is evicted (first in, first out), which suits
/// the access pattern: a check is looked up again a few blocks after it was inserted.
/// Thread-safe; each call takes the lock once, batch calls included.
public final class VerifyCache: Sendable {
    /// About 200 bytes per entry with the index, so the default is ~3 MiB: room for
    /// several full mempools' worth of transactions between admission and execution.
    public static let capacityDefault = 16_384

    public struct Statistics: Equatable, Sendable {
        public var hits = 0
        public var misses = 0
        public var insertions = 0
        public var evictions = 0
        public var count = 0
    }

    private struct State {
        var index: [SignatureCheck: Int] = [:]
        var ring: [SignatureCheck?]
        var next = 0
        var statistics = Statistics()

        mutating func insert(_ check: SignatureCheck) {
            guard index[check] == nil else { return }
            if let old = ring[next] {
                index[old] = nil
                statistics.evictions += 1
            }
            ring[next] = check
            index[check] = next
            next = (next + 1) % ring.count
            statistics.insertions += 1
            statistics.count = index.count
        }
    }

    public let capacity: Int
    private let state: Mutex<State>

    public init(capacity: Int = capacityDefault) {
        precondition(capacity > 0, "a cache needs room for at least one entry")
        self.capacity = capacity
        state = Mutex(State(ring: Array(repeating: nil, count: capacity)))
    }

    public func contains(_ check: SignatureCheck) -> Bool {
        state.withLock { state in
            let hit = state.index[check] != nil
            if hit { state.statistics.hits += 1 } else { state.statistics.misses += 1 }
            return hit
        }
    }

    /// For each check, whether it is cached.
    public func contains(_ checks: [SignatureCheck]) -> [Bool] {
        state.withLock { state in
            checks.map { check in
                let hit = state.index[check] != nil
                if hit { state.statistics.hits += 1 } else { state.statistics.misses += 1 }
                return hit
            }
        }
    }

    /// How many of `checks` are not cached, for deciding where to verify them: not counted
    /// in the statistics (the verification that follows asks again and is counted).
    public func uncachedCount(_ checks: [SignatureCheck]) -> Int {
        state.withLock { state in checks.count { state.index[$0] == nil } }
    }

    /// Records checks that verified as valid. Never call with an unverified check.
    public func insert(_ check: SignatureCheck) {
        state.withLock { $0.insert(check) }
    }

    public func insert(contentsOf checks: some Sequence<SignatureCheck>) {
        state.withLock { state in
            for check in checks { state.insert(check) }
        }
    }

    /// Whether every check holds: those cached are taken as verified, the others are
    /// verified here (on this thread) and cached when they hold; false at the first that
    /// does not (those after it are not verified).
    public func verifyAll(_ checks: [SignatureCheck]) -> Bool {
        for (check, known) in zip(checks, contains(checks)) where !known {
            guard check.verify() else { return false }
            insert(check)
        }
        return true
    }

    public var count: Int { state.withLock { $0.index.count } }
    public var statistics: Statistics { state.withLock { $0.statistics } }
}
