/// The light client's freshness rule (Docs/QUERY.md, "Freshness"). A certificate proves
/// that a quorum signed a state; it does not prove that the state is the newest: a node
/// can replay an answer certified long ago. So the client learns the newest certified
/// checkpoint it can from elsewhere (other nodes, its witnesses; and its own memory of
/// what it has seen on this chain) and refuses an answer more than `lagMax` blocks behind
/// it. Every height learnt here has had its certificate verified (or was remembered after
/// being verified).
public struct Freshness: Sendable, Equatable {
    /// The default bound: answers come from the latest stable checkpoint, which trails the
    /// chain's head by up to two checkpoint intervals (16 blocks) in normal operation.
    public static let lagMaxDefault: UInt64 = 32

    public let lagMax: UInt64
    /// The newest certified checkpoint known, and where it was learnt ("" while none).
    public private(set) var newest: UInt64 = 0
    public private(set) var newestSource = ""

    public init(lagMax: UInt64 = lagMaxDefault) { self.lagMax = lagMax }

    /// A checkpoint height whose certificate was verified, learnt from `source`.
    public mutating func learn(_ height: UInt64, from source: String) {
        guard height > newest || newestSource.isEmpty else { return }
        newest = height
        newestSource = source
    }

    /// Checks an answer certified at checkpoint `height`: how many blocks it is behind the
    /// newest known (0 when it is the newest), or the error when it is over `lagMax`.
    public func check(_ height: UInt64) throws(FreshnessError) -> UInt64 {
        guard newest > height else { return 0 }
        let behind = newest - height
        guard behind <= lagMax else { throw FreshnessError(answer: height, newest: newest, source: newestSource, lagMax: lagMax) }
        return behind
    }
}

/// An answer certified at a checkpoint too far behind the newest one the client knows.
public struct FreshnessError: Error, Equatable, Sendable, CustomStringConvertible {
    public let answer: UInt64
    public let newest: UInt64
    public let source: String
    public let lagMax: UInt64
    public var description: String {
        "the answer is certified at checkpoint \(answer), \(newest - answer) blocks behind the newest certified checkpoint known "
            + "(\(newest), from \(source)); at most \(lagMax) allowed: the node is behind, or replays an old answer"
    }
}
