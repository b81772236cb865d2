// The gateway's places for requests answered at once, and the line before them: a request
// that finds them taken waits its turn, first come first served, for a bounded time, with
// a bounded number of others; a place given back goes to the first in line.
import CalissonTestKit
import Foundation
@testable import Gateway
import Testing

// The requests waiting in line are tasks on the tests' own threads: on the cooperative pool a
// CI run, its two threads held by other tests, never started one within 30 s.
@Suite(.onOwnThreads) struct PlacesTests {
    /// Waits until `places` has `count` requests in line (they are started as tasks).
    private static func untilWaiting(_ places: Places, _ count: Int) async throws {
        let began = ContinuousClock.now
        while places.counts.waiting < count {
            guard began.duration(to: .now) < .seconds(30) else { throw PlacesTestError("\(places.counts.waiting) waiting, not \(count)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    private struct PlacesTestError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    @Test func aPlaceGivenBackGoesToTheFirstInLineAndAFullLineIsRefused() async throws {
        let places = Places(maximum: 2, queuedMax: 2, waitMilliseconds: 60_000)
        #expect(await places.enter())
        #expect(await places.enter())
        let order = Locked<[Int]>([])
        let first = Task(executorPreference: OwnThreads.shared) { let got = await places.enter(); order.withLock { $0.append(1) }; return got }
        try await Self.untilWaiting(places, 1)
        let second = Task(executorPreference: OwnThreads.shared) { let got = await places.enter(); order.withLock { $0.append(2) }; return got }
        try await Self.untilWaiting(places, 2)
        // The line is full: the next is told at once.
        #expect(await !places.enter())
        #expect(places.counts == (taken: 2, waiting: 2))
        places.leave()
        #expect(await first.value)
        places.leave()
        #expect(await second.value)
        #expect(order.withLock { $0 } == [1, 2])
        #expect(places.counts == (taken: 2, waiting: 0))
        places.leave()
        places.leave()
        #expect(places.counts == (taken: 0, waiting: 0))
        #expect(places.queued.load(ordering: .relaxed) == 2 && places.timedOut.load(ordering: .relaxed) == 0)
    }

    @Test func aRequestWaitsAtMostItsTimeAndACancelledOneLeavesTheLine() async throws {
        let places = Places(maximum: 1, queuedMax: 4, waitMilliseconds: 200)
        #expect(await places.enter())
        let began = ContinuousClock.now
        #expect(await !places.enter())
        #expect(began.duration(to: .now) >= .milliseconds(200))
        #expect(places.timedOut.load(ordering: .relaxed) == 1)
        #expect(places.counts == (taken: 1, waiting: 0))

        let patient = Places(maximum: 1, queuedMax: 4, waitMilliseconds: 60_000)
        #expect(await patient.enter())
        let cancelled = Task(executorPreference: OwnThreads.shared) { await patient.enter() }
        try await Self.untilWaiting(patient, 1)
        cancelled.cancel()
        #expect(await !cancelled.value)
        #expect(patient.counts == (taken: 1, waiting: 0))
        // The place given back is free again, not handed to the request that left.
        patient.leave()
        #expect(patient.counts == (taken: 0, waiting: 0))
        #expect(await patient.enter())
    }

    /// Many requests at once for few places: each gets one in time or is refused, and at the
    /// end every place is free (none lost to a race between giving back and timing out).
    @Test func underContentionNoPlaceIsLostOrGivenTwice() async throws {
        let places = Places(maximum: 3, queuedMax: 16, waitMilliseconds: 5)
        let counts = Locked((inside: 0, most: 0))
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<400 {
                group.addTask {
                    guard await places.enter() else { return }
                    counts.withLock { counts in
                        counts.inside += 1
                        counts.most = max(counts.most, counts.inside)
                    }
                    try? await Task.sleep(for: .microseconds(200))
                    counts.withLock { $0.inside -= 1 }
                    places.leave()
                }
            }
        }
        #expect(counts.withLock { $0.most } <= 3)
        #expect(places.queued.load(ordering: .relaxed) > 0, "no request waited in line")
        #expect(places.counts == (taken: 0, waiting: 0))
    }
}
