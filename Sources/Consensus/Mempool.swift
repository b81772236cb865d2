import CalissonCrypto
import Wire

/// Commands waiting for a block, in arrival order, as the node and the simulator both keep
/// them. A command cut into a proposal is *in flight*: it is not cut again for
/// `inFlightTicks` ticks, since the proposal carrying it may yet commit; after that it is
/// (the proposal may have died in a view change). Proposing a command twice is harmless:
/// execution gives the second copy its outcome (the ledger rejects a used nonce).
/// Volatile: a crash loses it; clients resubmit and gossip refills it.
public struct Mempool: Sendable {
    public struct Entry: Sendable {
        public let id: SHA256Digest
        public let bytes: [UInt8]
        /// Whose command it is (the node: its signer, `TransactionSigner.mempoolOwner`);
        /// nil: no one's, not held to a share.
        public let owner: Bytes32?
        /// The last height whose block may carry it (`UInt64.max`: no bound known).
        public let expiry: UInt64
    }

    /// Commands held, at most; `insert` refuses beyond.
    public let countMax: Int
    /// Their bytes, at most: commands are up to some kilobytes each, so a count alone would
    /// let large ones take gigabytes.
    public let bytesMax: Int
    /// The bytes of the commands held.
    public private(set) var byteCount = 0
    /// Ticks a command cut into a proposal waits before it may be cut again.
    public let inFlightTicks: UInt64
    public private(set) var entries: [Entry] = []
    private var ids: Set<SHA256Digest> = []
    /// Commands in a proposal, by the tick they were cut at.
    private var inFlight: [SHA256Digest: UInt64] = [:]
    /// The commands and bytes each owner holds.
    private var held: [Bytes32: (count: Int, bytes: Int)] = [:]
    /// The earliest expiry of a command held, at most (a command removed since may have
    /// had it): `removeExpired` looks at the commands only once the chain passes it.
    private var earliestExpiry = UInt64.max

    public init(countMax: Int, bytesMax: Int = .max, inFlightTicks: UInt64) {
        precondition(countMax > 0 && bytesMax > 0 && inFlightTicks > 0, "a mempool holds at least one command, in flight for at least one tick")
        self.countMax = countMax
        self.bytesMax = bytesMax
        self.inFlightTicks = inFlightTicks
    }

    public var count: Int { entries.count }
    public var isFull: Bool { entries.count >= countMax }
    public func contains(_ id: SHA256Digest) -> Bool { ids.contains(id) }

    /// Why `insert` did not keep a command.
    public enum Refusal: Error, Equatable, Sendable {
        case full
        case duplicate
        /// Its owner holds its share of a mempool running short (`isPastShare`).
        case share
    }

    /// The commands and bytes `owner` holds.
    public func held(by owner: Bytes32) -> (count: Int, bytes: Int) { held[owner] ?? (0, 0) }

    /// The share of the mempool's room (count or bytes) held past which it runs short, and
    /// the share an owner may then hold, as fractions of it: three quarters, one quarter.
    static let runningShort = (numerator: 3, denominator: 4)
    static let ownerShare = (numerator: 1, denominator: 4)

    /// `part` of `whole`, rounded down.
    static func share(_ whole: Int, _ part: (numerator: Int, denominator: Int)) -> Int {
        whole / part.denominator * part.numerator + whole % part.denominator * part.numerator / part.denominator
    }

    /// Whether `owner` may add no command now: the mempool is three quarters full, by count
    /// or by bytes, and it holds a quarter of that room or more. One signer flooding the
    /// node (a partner's back-end gone wrong) then leaves the last quarter to the others;
    /// while there is room, anyone's commands are taken. No one's is never past it.
    public func isPastShare(_ owner: Bytes32?) -> Bool {
        guard let owner, let mine = held[owner] else { return false }
        return isPastShare(mine)
    }

    private func isPastShare(_ mine: (count: Int, bytes: Int)) -> Bool {
        (entries.count >= Self.share(countMax, Self.runningShort) && mine.count >= Self.share(countMax, Self.ownerShare))
            || (byteCount >= Self.share(bytesMax, Self.runningShort) && mine.bytes >= Self.share(bytesMax, Self.ownerShare))
    }

    /// Keeps a command at the end of the queue, `owner`'s (nil: no one's).
    public mutating func insert(id: SHA256Digest, bytes: [UInt8], owner: Bytes32? = nil, expiry: UInt64 = .max) throws(Refusal) {
        guard !isFull, bytes.count <= bytesMax - byteCount else { throw .full }
        guard !ids.contains(id) else { throw .duplicate }
        if let owner {
            let mine = held[owner] ?? (0, 0)
            guard !isPastShare(mine) else { throw .share }
            held[owner] = (mine.count + 1, mine.bytes + bytes.count)
        }
        ids.insert(id)
        entries.append(Entry(id: id, bytes: bytes, owner: owner, expiry: expiry))
        byteCount += bytes.count
        earliestExpiry = min(earliestExpiry, expiry)
    }

    /// Commands waiting for a proposal at `tick` (those in a live proposal are not).
    public func pendingCount(tick: UInt64) -> Int {
        entries.count - inFlight.values.count { tick &- $0 < inFlightTicks }
    }

    /// Cuts at most `max` commands for a proposal at `tick`, oldest first, skipping those
    /// in flight, and at most `bytesMax` bytes of them (the first is taken whatever its
    /// size); they are in flight from now.
    public mutating func take(_ max: Int, bytesMax: Int = .max, tick: UInt64) -> [[UInt8]] {
        var commands: [[UInt8]] = []
        var bytes = 0
        for entry in entries where commands.count < max {
            if let taken = inFlight[entry.id], tick &- taken < inFlightTicks { continue }
            if !commands.isEmpty, entry.bytes.count > bytesMax - bytes { break }
            inFlight[entry.id] = tick
            commands.append(entry.bytes)
            bytes += entry.bytes.count
        }
        return commands
    }

    /// Forgets the commands a final block carried.
    public mutating func remove(_ executed: Set<SHA256Digest>) {
        guard !executed.isEmpty else { return }
        removeAll { executed.contains($0.id) }
    }

    /// Forgets the commands no block from `height` on may carry (their expiry is below
    /// it): kept, a backup counted them as work its primary should order, and started
    /// view changes alone for commands the primary had refused as expired. Returns how
    /// many. Looks at the commands only once `height` passes the earliest expiry held.
    @discardableResult
    public mutating func removeExpired(before height: UInt64) -> Int {
        guard height > earliestExpiry else { return 0 }
        let before = entries.count
        removeAll { $0.expiry < height }
        earliestExpiry = entries.lazy.map(\.expiry).min() ?? .max
        return before - entries.count
    }

    private mutating func removeAll(where dropped: (Entry) -> Bool) {
        var removed: [SHA256Digest] = []
        entries.removeAll { entry in
            guard dropped(entry) else { return false }
            byteCount -= entry.bytes.count
            if let owner = entry.owner, let index = held.index(forKey: owner) {
                let mine = held.values[index]
                if mine.count > 1 { held.values[index] = (mine.count - 1, mine.bytes - entry.bytes.count) } else { held.remove(at: index) }
            }
            removed.append(entry.id)
            return true
        }
        for id in removed {
            ids.remove(id)
            inFlight[id] = nil
        }
    }

    /// Every command may be cut again at once (the proposals carrying them died).
    public mutating func releaseInFlight() { inFlight = [:] }

    /// Forgets everything (a crash).
    public mutating func clear() {
        entries = []
        ids = []
        inFlight = [:]
        held = [:]
        byteCount = 0
        earliestExpiry = .max
    }
}
