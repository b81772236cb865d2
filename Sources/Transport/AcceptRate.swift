/// New connections per IP address on one port, by token bucket: `perSecond` on average, at
/// most `burst` at once. Each accepted connection costs its port a TLS handshake (a key
/// exchange and a signature, on the node's loop): an address reconnecting in a loop would
/// otherwise keep the loop that runs the consensus busy with handshakes. Loop thread only.
struct AcceptRate {
    let perSecond: Int
    let burst: Int
    /// Addresses remembered at most; past it, the bucket closest to full (the least
    /// active address) is forgotten to make room.
    static let addressesMax = 4_096
    private var buckets: [String: TokenBucket] = [:]

    init(perSecond: Int, burst: Int) {
        self.perSecond = max(1, perSecond)
        self.burst = max(1, burst)
    }

    /// Whether `host` may open one more connection at `now` (milliseconds): taken if so.
    mutating func take(_ host: String, now: UInt64) -> Bool {
        var bucket = buckets[host] ?? TokenBucket(now: now, burst: burst)
        let taken = bucket.take(at: now, perSecond: perSecond, burst: burst)
        if taken, buckets[host] == nil, buckets.count >= Self.addressesMax,
            let fullest = buckets.max(by: { level($0.value, now) < level($1.value, now) })?.key {
            buckets[fullest] = nil
        }
        buckets[host] = bucket
        return taken
    }

    var addresses: Int { buckets.count }

    private func level(_ bucket: TokenBucket, _ now: UInt64) -> Int { bucket.level(at: now, perSecond: perSecond, burst: burst) }
}
