// The gateway's threads for blocking node calls: a job submitted while another waits is
// never queued behind it when a thread is free or may be started.
import CalissonTestKit
import Foundation
@testable import Gateway
import Testing

@Suite(.onOwnThreads) struct BlockingThreadsTests {
    /// One idle thread, then two jobs back to back, the first waiting for the second: the
    /// second gets a thread of its own (it once waited for a signal its neighbour had
    /// taken, and both stalled until the first gave up).
    @Test func aJobNeverWaitsBehindABlockedOne() {
        let threads = BlockingThreads(name: "test")
        defer { threads.stop() }
        for round in 0..<200 {
            let warm = DispatchSemaphore(value: 0)
            threads.submit { warm.signal() }
            warm.wait()
            Thread.sleep(forTimeInterval: 0.001)  // the thread is idle again
            let second = DispatchSemaphore(value: 0), firstDone = DispatchSemaphore(value: 0)
            let waited = Locked(false)
            threads.submit {
                waited.withLock { $0 = second.wait(timeout: .now() + 5) == .success }
                firstDone.signal()
            }
            threads.submit { second.signal() }
            firstDone.wait()
            guard waited.withLock({ $0 }) else {
                Issue.record("round \(round): the second job waited behind the first")
                return
            }
        }
    }
}
