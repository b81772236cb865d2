import Testing
@testable import Transport

/// The link life cycle's rules with time driven by hand: no socket, no sleep.
@Suite struct LinkTimesTests {
    let idle: UInt64 = 30_000, dead: UInt64 = 5_000

    /// `takeRequest` outside `#expect` (which cannot call a mutating method).
    func take(_ times: inout LinkTimes, at now: UInt64, rate: Int) -> Bool { times.takeRequest(at: now, rate: rate) }

    func verdict(_ times: LinkTimes, at now: UInt64, client: Bool, established: Bool = true) -> LinkTimes.Beat {
        times.beat(now: now, isClient: client, isEstablished: established, idleLimit: idle, deadAfter: dead)
    }

    @Test func anIdleClientIsClosedOnlyPastTheLimit() {
        var times = LinkTimes(now: 1_000, requestsPerSecond: 20)
        #expect(verdict(times, at: 1_000 + idle, client: true) == .keep)
        #expect(verdict(times, at: 1_001 + idle, client: true) == .closeIdle)
        times.received(at: 20_000)
        #expect(verdict(times, at: 1_001 + idle, client: true) == .keep, "a frame makes it active again")
        #expect(verdict(times, at: 20_001 + idle, client: true) == .closeIdle)
    }

    @Test func aClientWaitingForAnAnswerIsNeverIdle() {
        var times = LinkTimes(now: 0, requestsPerSecond: 20)
        times.received(at: 10)
        #expect(take(&times, at: 10, rate: 20))
        #expect(verdict(times, at: 10 * idle, client: true) == .keep, "a 30 s wait for finality is not idleness")
        times.answered(at: 90_000)
        #expect(times.requestsInFlight == 0)
        #expect(verdict(times, at: 90_000 + idle, client: true) == .keep, "the answer counts as activity")
        #expect(verdict(times, at: 90_001 + idle, client: true) == .closeIdle)
    }

    @Test func aSilentValidatorIsClosedAndALiveOneGetsHeartbeats() {
        var times = LinkTimes(now: 500, requestsPerSecond: 20)
        #expect(verdict(times, at: 500 + dead, client: false) == .heartbeat)
        #expect(verdict(times, at: 501 + dead, client: false) == .closeDead)
        #expect(verdict(times, at: 501 + dead, client: false, established: false) == .keep, "the handshake's own limits apply")
        times.received(at: 4_000)
        #expect(verdict(times, at: 501 + dead, client: false) == .heartbeat)
    }

    @Test func aClockSteppingBackNeverClosesALinkOrTraps() {
        var times = LinkTimes(now: 1_000_000, requestsPerSecond: 20)
        times.received(at: 2_000_000)
        times.received(at: 5)  // earlier than seen: ignored
        #expect(times.lastReceived == 2_000_000)
        #expect(verdict(times, at: 0, client: false) == .heartbeat)
        #expect(verdict(times, at: 0, client: true) == .keep)
        #expect(take(&times, at: 0, rate: 20))
        #expect(verdict(times, at: .max, client: false) == .closeDead)
        times.answered(at: .max)
        #expect(verdict(times, at: .max, client: true) == .keep)
    }

    @Test func theRateBucketHoldsOneSecondAndRefillsAtTheRate() {
        var times = LinkTimes(now: 0, requestsPerSecond: 4)
        for _ in 0..<4 { #expect(take(&times, at: 0, rate: 4)) }
        #expect(!take(&times, at: 0, rate: 4), "a full second of requests at once, then no more")
        #expect(!take(&times, at: 249, rate: 4), "a quarter of a second refills one request: not yet")
        #expect(take(&times, at: 250, rate: 4))
        #expect(!take(&times, at: 250, rate: 4))
        // A long pause refills one second's worth, not more.
        for _ in 0..<4 { #expect(take(&times, at: 1_000_000, rate: 4)) }
        #expect(!take(&times, at: 1_000_000, rate: 4))
        #expect(times.requestsInFlight == 9, "a request refused is not counted")
    }
}
