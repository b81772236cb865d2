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
    private var buckets: [String: (tokens: Double, at: UInt64)] = [:]

    init(perSecond: Int, burst: Int) {
        self.perSecond = max(1, perSecond)
        self.burst = max(1, burst)
    }

    /// Whether `host` may open one more connection at `now` (milliseconds): taken if so.
    mutating func take(_ host: String, now: UInt64) -> Bool {
        var bucket: (tokens: Double, at: UInt64) = buckets[host].map { (refilled($0, now: now), now) } ?? (Double(burst), now)
        guard bucket.tokens >= 1 else {
            buckets[host] = bucket
            return false
        }
        bucket.tokens -= 1
        if buckets[host] == nil, buckets.count >= Self.addressesMax,
            let fullest = buckets.max(by: { refilled($0.value, now: now) < refilled($1.value, now: now) })?.key {
            buckets[fullest] = nil
        }
        buckets[host] = bucket
        return true
    }

    var addresses: Int { buckets.count }

    private func refilled(_ bucket: (tokens: Double, at: UInt64), now: UInt64) -> Double {
        let elapsed = now >= bucket.at ? Double(now - bucket.at) : 0
        return min(Double(burst), bucket.tokens + elapsed * Double(perSecond) / 1_000)
    }
}
