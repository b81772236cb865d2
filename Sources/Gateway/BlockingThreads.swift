import Foundation
import Synchronization

/// Threads of its own for the gateway's blocking work (the idempotency log's fsync, the
/// settlement's synchronous reads). Not the server's event loops nor libdispatch's threads:
/// a blocking call there takes a thread the server's tasks need (when the node client was
/// blocking, a node that did not answer once stalled every request of the gateway,
/// `/health` included). Threads are started when work finds none idle, up to `countMax`;
/// past it work waits for one.
final class BlockingThreads: @unchecked Sendable {
    /// Enough for every request the gateway answers at once (48 for the API, 16 public).
    static let countMax = 72

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var jobs: [@Sendable () -> Void] = []
    private var threads = 0
    /// Threads waiting for work, and how many of them were signalled and have not woken
    /// yet: a job submitted meanwhile needs another thread (two signals to one waiter wake
    /// it once; the second job then waited behind the first, up to a node's timeout, while
    /// other threads slept).
    private var idle = 0
    private var signalled = 0
    private var stopping = false
    let name: String

    init(name: String) { self.name = name }

    /// Runs `job` on one of the threads.
    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else {
            // Stopped (the server is going): a thread for this one job, so that no caller waits forever.
            Thread { job() }.start()
            return
        }
        jobs.append(job)
        if idle > signalled {
            signalled += 1
            condition.signal()
        } else if threads < Self.countMax {
            threads += 1
            let thread = Thread { [self] in work() }
            thread.name = "\(name)-\(threads)"
            thread.stackSize = 1 << 20
            thread.start()
        }  // else every thread is busy: the first to finish takes it
    }

    /// Lets the threads finish the work queued, then end.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func work() {
        condition.lock()
        while true {
            while jobs.isEmpty && !stopping {
                idle += 1
                condition.wait()
                idle -= 1
                if signalled > 0 { signalled -= 1 }
            }
            if jobs.isEmpty {
                threads -= 1
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
            condition.lock()
        }
    }
}
