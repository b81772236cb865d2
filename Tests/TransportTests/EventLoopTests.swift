// The event loop: work handed over from other threads runs on the loop thread, in
// order; the queue refuses work beyond its bound instead of growing, saying why, and
// counts it; `executeWaiting` waits for room instead (nothing lost) and acts at once on
// the loop thread; timers fire on the loop; shutdown closes every handle, returns, and
// refuses further work.
import CalissonTestKit
import Foundation
import Testing
@testable import Transport

@Suite(.onOwnThreads) struct EventLoopTests {
    @Test func workRunsOnTheLoopInOrderAndTheQueueIsBounded() {
        let loop = EventLoop()
        let order = Locked<[Int]>([])
        let onLoop = Locked<Bool>(true)
        for index in 0..<1_000 {
            #expect(throws: Never.self) {
                try loop.execute { [loop] in
                    order.withLock { $0.append(index) }
                    if !loop.isOnLoop { onLoop.withLock { $0 = false } }
                }
            }
        }
        #expect(eventually { order.withLock { $0.count } == 1_000 })
        #expect(order.withLock { $0 } == Array(0..<1_000))
        #expect(onLoop.withLock { $0 } && !loop.isOnLoop)

        // Block the loop, fill the queue: the next item is refused, not queued.
        let release = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        try? loop.execute {
            started.signal()
            release.wait()
        }
        started.wait()
        var accepted = 0
        while (try? loop.execute({})) != nil { accepted += 1 }
        #expect(accepted == EventLoop.queueCountMax)
        #expect(throws: EventLoop.Refusal.full) { try loop.execute {} }
        #expect(loop.refusedFull == 2 && loop.queueCountPeak == EventLoop.queueCountMax)

        // executeWaiting from another thread waits for room: the work is not lost.
        let waited = Locked<Bool>(false)
        let waiter = Thread { _ = loop.executeWaiting { waited.withLock { $0 = true } } }
        waiter.start()
        Thread.sleep(forTimeInterval: 0.05)
        #expect(!waited.withLock { $0 })
        release.signal()
        #expect(eventually { waited.withLock { $0 } })

        // On the loop thread it acts at once, inside the caller.
        let inline = Locked<[String]>([])
        try? loop.execute { [loop] in
            inline.withLock { $0.append("before") }
            loop.executeWaiting { inline.withLock { $0.append("inside") } }
            inline.withLock { $0.append("after") }
        }
        #expect(eventually { inline.withLock { $0.count } == 3 })
        #expect(inline.withLock { $0 } == ["before", "inside", "after"])

        loop.shutdown()
        #expect(throws: EventLoop.Refusal.stopping) { try loop.execute {} }
        #expect(!loop.executeWaiting {})
    }

    @Test func timersFireOnTheLoopAndShutdownClosesThem() {
        let loop = EventLoop()
        let fired = Locked<Int>(0)
        #expect(throws: Never.self) {
            try loop.execute { [loop] in
                let timer = LoopTimer(loop: loop)
                timer.start(after: 1, repeat: 1) { fired.withLock { $0 += 1 } }  // left open on purpose
            }
        }
        #expect(eventually { fired.withLock { $0 } >= 3 })
        loop.shutdown()  // returns: the open timer was closed by the loop
        let count = fired.withLock { $0 }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(fired.withLock { $0 } == count)
    }
}
