// The deadline of a request's body (`RequestShapeMiddleware.within`) where no connection judges
// it (no ContinueOrClose: its own timer): the work's value when it ends in time, nil when its
// time is up (the work then cancelled), its error when it fails, and cancellation when the
// request itself is cancelled (its connection closed). The deadline a connection judges:
// GatewayBatchTests.aBodysDeadlineCountsWhatTheConnectionReceived.
import CalissonTestKit
import Foundation
@testable import Gateway
import Testing

@Suite(.onOwnThreads) struct BodyDeadlineTests {
    private struct Refused: Error, Equatable {}

    @Test func aWorkThatEndsInTimeGivesItsValue() async throws {
        let value = try await RequestShapeMiddleware.within(seconds: 5) { 42 }
        #expect(value == 42)
    }

    @Test func aWorkPastItsTimeGivesNilAndIsCancelled() async throws {
        let cancelled = Locked(false)
        let began = ContinuousClock.now
        let value = try await RequestShapeMiddleware.within(seconds: 1) { () -> Int in
            // A body whose end never comes: waits until cancelled.
            let (never, _) = AsyncStream<Int>.makeStream()
            for await _ in never {}
            cancelled.withLock { $0 = Task.isCancelled }
            return 7
        }
        #expect(value == nil)
        #expect(cancelled.withLock { $0 })
        #expect(began.duration(to: .now) >= .seconds(1))
    }

    @Test func aWorkThatFailsInTimeGivesItsError() async throws {
        await #expect(throws: Refused.self) {
            _ = try await RequestShapeMiddleware.within(seconds: 5) { () -> Int in throw Refused() }
        }
    }

    @Test func aRequestCancelledMeanwhileIsCancelledNotAnsweredWithWhatTheWorkGave() async throws {
        let started = Locked(false)
        let request = Task(executorPreference: OwnThreads.shared) {
            try await RequestShapeMiddleware.within(seconds: 30) { () -> Int in
                started.withLock { $0 = true }
                // Cut short by the cancellation, it still gives something (as a body's
                // stream ends early when its task is cancelled).
                let (never, _) = AsyncStream<Int>.makeStream()
                for await _ in never {}
                return 1
            }
        }
        #expect(eventually(30) { started.withLock { $0 } }, "the work never started")
        request.cancel()
        await #expect(throws: CancellationError.self) { _ = try await request.value }
    }
}
