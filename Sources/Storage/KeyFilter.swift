import Foundation
import Wire

/// A Bloom filter over 32-byte keys: `mayContain` is false only for a key never inserted
/// (no false negative), and true for a key never inserted with a probability that the
/// filter's fill sets (`falsePositiveRate`). Ten bits and seven probes per key at capacity:
/// about 1% of false positives there.
///
/// The probes come from two 64-bit hashes of the key by the standard library's `Hasher`,
/// seeded at random per process: keys are chosen in part by clients (an attribution's
/// evidence, a signer's nonce), and a fixed function of their bytes would let one grind keys
/// whose probes all land on bits already set, and so make every lookup of theirs a read of
/// the table (a cost, never a wrong answer).
struct KeyFilter: Sendable {
    static let bitsPerKey = 10
    static let probes = 7

    private var words: [UInt64]
    /// Bits set (a probe that set an unset bit counts one).
    private(set) var bitsSet = 0
    let bitCount: Int
    let capacity: Int

    /// A filter for about `capacity` keys (at least 64 bits).
    init(capacity: Int) {
        self.capacity = capacity
        let words = max(1, (max(1, capacity).multipliedReportingOverflow(by: Self.bitsPerKey).partialValue + 63) / 64)
        self.words = Array(repeating: 0, count: words)
        bitCount = words * 64
    }

    mutating func insert(_ key: Bytes32) {
        let (first, second) = Self.hashes(key)
        for probe in 0..<Self.probes {
            let bit = Self.bit(first, second, probe, of: bitCount)
            let mask = UInt64(1) << UInt64(truncatingIfNeeded: bit & 63)
            if words[bit >> 6] & mask == 0 {
                words[bit >> 6] |= mask
                bitsSet += 1
            }
        }
    }

    func mayContain(_ key: Bytes32) -> Bool {
        let (first, second) = Self.hashes(key)
        for probe in 0..<Self.probes {
            let bit = Self.bit(first, second, probe, of: bitCount)
            if words[bit >> 6] & (UInt64(1) << UInt64(truncatingIfNeeded: bit & 63)) == 0 { return false }
        }
        return true
    }

    /// The share of bits set: a key never inserted passes with probability `fill`^`probes`.
    var fill: Double { Double(bitsSet) / Double(bitCount) }
    var falsePositiveRate: Double { (0..<Self.probes).reduce(1.0) { rate, _ in rate * fill } }

    /// About how many distinct keys were inserted, from the fill (the standard estimate).
    var estimatedKeys: Int {
        guard bitsSet < bitCount else { return Int.max / Self.bitsPerKey }
        let estimate = -Double(bitCount) / Double(Self.probes) * Foundation.log(1 - fill)
        return Int(exactly: max(0, estimate.rounded(.up))) ?? Int.max / Self.bitsPerKey
    }

    private static func hashes(_ key: Bytes32) -> (UInt64, UInt64) {
        var first = Hasher()
        first.combine(key)
        var second = Hasher()
        second.combine(UInt8(1))
        second.combine(key)
        return (UInt64(truncatingIfNeeded: first.finalize()), UInt64(truncatingIfNeeded: second.finalize()) | 1)
    }

    /// Probe `probe`'s bit (double hashing), reduced to `[0, count)` by a multiplication.
    private static func bit(_ first: UInt64, _ second: UInt64, _ probe: Int, of count: Int) -> Int {
        let mixed = first &+ UInt64(truncatingIfNeeded: probe) &* second
        return Int(truncatingIfNeeded: mixed.multipliedFullWidth(by: UInt64(truncatingIfNeeded: count)).high)
    }
}
