// The event loop: work handed over from other threads runs on the loop thread, in
// order; the queue refuses work beyond its bound instead of growing; timers fire on the
// loop; shutdown closes every handle, returns, and refuses further work.
import Foundation
import Testing
@testable import Transport

@Suite struct EventLoopTests {
    @Test func workRunsOnTheLoopInOrderAndTheQueueIsBounded() {
        let loop = EventLoop()
        let order = Locked<[Int]>([])
        let onLoop = Locked<Bool>(true)
        for index in 0..<1_000 {
            let accepted = loop.execute { [loop] in
                order.withLock { $0.append(index) }
                if !loop.isOnLoop { onLoop.withLock { $0 = false } }
            }
            #expect(accepted)
        }
        #expect(eventually { order.withLock { $0.count } == 1_000 })
        #expect(order.withLock { $0 } == Array(0..<1_000))
        #expect(onLoop.withLock { $0 } && !loop.isOnLoop)

        // Block the loop, fill the queue: the next item is refused, not queued.
        let release = DispatchSemaphore(value: 0)
        let blocked = loop.execute { release.wait() }
        #expect(blocked)
        Thread.sleep(forTimeInterval: 0.05)
        var accepted = 0
        while loop.execute({}) { accepted += 1 }
        #expect(accepted == EventLoop.queueCountMax)
        release.signal()
        loop.shutdown()
        let afterShutdown = loop.execute {}
        #expect(!afterShutdown)
    }

    @Test func timersFireOnTheLoopAndShutdownClosesThem() {
        let loop = EventLoop()
        let fired = Locked<Int>(0)
        let accepted = loop.execute { [loop] in
            let timer = LoopTimer(loop: loop)
            timer.start(after: 1, repeat: 1) { fired.withLock { $0 += 1 } }  // left open on purpose
        }
        #expect(accepted)
        #expect(eventually { fired.withLock { $0 } >= 3 })
        loop.shutdown()  // returns: the open timer was closed by the loop
        let count = fired.withLock { $0 }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(fired.withLock { $0 } == count)
    }
}
