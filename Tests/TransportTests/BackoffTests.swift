// The redial back-off driven by hand, failure by failure, with a seeded generator: no
// socket, no timer, no sleep. (The transport tests on loopback check that a dead link is
// redialled at all.)
import Testing
import Wire
@testable import Transport

@Suite struct BackoffTests {
    @Test func delaysDoubleUpToTheMaximumWithJitterAndStartOverOnceLinked() {
        var backoff = RedialBackoff(minimum: 50, maximum: 3_000)
        var random = SplitMix64(seed: 7)
        var ceilings: [UInt64] = []
        for _ in 0..<10 {
            let delay = backoff.delay(for: "p1", using: &random)
            let ceiling: UInt64 = min(3_000, 50 << UInt64(ceilings.count))
            #expect(delay >= ceiling / 2 && delay <= ceiling, "delay \(delay) outside [\(ceiling / 2), \(ceiling)]")
            ceilings.append(ceiling)
        }
        #expect(ceilings.prefix(7) == [50, 100, 200, 400, 800, 1_600, 3_000])
        // Another peer has its own count; a link starts the peer's over.
        #expect(backoff.delay(for: "p2", using: &random) <= 50)
        backoff.linked("p1")
        #expect(backoff.delay(for: "p1", using: &random) <= 50)
    }

    @Test func theJitterSpreadsPeersThatLostEachOtherAtOnce() {
        var random = SplitMix64(seed: 11)
        var delays: Set<UInt64> = []
        for peer in 0..<20 {
            var backoff = RedialBackoff(minimum: 50, maximum: 3_000)
            for _ in 0..<5 { _ = backoff.delay(for: "p\(peer)", using: &random) }
            delays.insert(backoff.delay(for: "p\(peer)", using: &random))
        }
        #expect(delays.count >= 15, "\(delays.sorted())")
    }

    /// Settings from a configuration file at their extremes never trap.
    @Test func extremeSettingsStayWithinTheirBounds() {
        var random = SplitMix64(seed: 3)
        for (minimum, maximum) in [(UInt64.max, UInt64.max), (UInt64.max / 3, UInt64.max), (0, 0), (1 << 62, 1 << 63), (3_000, 50)] {
            var backoff = RedialBackoff(minimum: minimum, maximum: maximum)
            for _ in 0..<40 {
                let delay = backoff.delay(for: "p1", using: &random)
                #expect(delay <= max(1, maximum))
            }
        }
    }
}
