import Foundation
import Testing

/// Threads of their own for tests that block (start clusters, sleep while they poll, wait
/// on sockets and child processes), and for the servers they run.
///
/// Why: Swift Testing calls a synchronous test function on the cooperative pool, which has
/// one thread per core. On two cores, two tests blocking for a minute hold all of it, and
/// every task of the test process waits: gateways under test stop answering, event feeds
/// stop fetching. That made a CI run on a slower machine fail a feed test and run past its
/// time limit. libdispatch's global queues are no escape either: their workers are also
/// about one per core, and the nodes' signature checks run there.
///
/// Threads are started when work finds none idle, and stay for the process's life (a test
/// run holds at most a few dozen).
public final class OwnThreads: TaskExecutor, @unchecked Sendable {
    public static let shared = OwnThreads(name: "test")

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var jobs: [UnownedJob] = []
    /// Threads waiting for work, and how many of them were signalled and have not woken
    /// yet: a job enqueued meanwhile needs a thread of its own (two signals to one waiter
    /// wake it once, and the second job would wait behind whatever the first one blocks on).
    private var idle = 0
    private var signalled = 0
    private var count = 0
    let name: String

    public init(name: String) { self.name = name }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        defer { condition.unlock() }
        jobs.append(job)
        if idle > signalled {
            signalled += 1
            condition.signal()
        } else {
            count += 1
            let thread = Thread { [self] in work() }
            thread.name = "\(name)-\(count)"
            thread.start()
        }
    }

    private func work() {
        condition.lock()
        while true {
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
                if signalled > 0 { signalled -= 1 }
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
            condition.lock()
        }
    }
}

/// Runs blocking `body` on a thread started for it, off the cooperative pool and off
/// libdispatch's, and resumes with its result.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.name = "test-blocking"
        thread.start()
    }
}

/// A suite trait: each of the suite's tests (and its nested suites') runs on `OwnThreads`,
/// its synchronous body included, and so do the tasks it starts that inherit its executor
/// (`async let`, task groups; not `Task {}`).
public struct OnOwnThreads: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? { testCase == nil ? nil : self }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await withTaskExecutorPreference(OwnThreads.shared) { try await function() }
    }
}

extension Trait where Self == OnOwnThreads {
    /// Runs the tests on threads of their own (`OwnThreads`): for tests that block.
    public static var onOwnThreads: Self { OnOwnThreads() }
}

/// Work run after a delay on a thread of its own, for tests that answer late on purpose
/// (not libdispatch's `asyncAfter`: under a loaded run its workers are all busy, and a
/// test's answer due in 10 ms once came after more than 5 s).
public final class LaterThread: @unchecked Sendable {
    public static let shared = LaterThread()

    private let condition = NSCondition()
    // Guarded by `condition`: due times in order of arrival (sorted when taken).
    private var due: [(at: Date, work: @Sendable () -> Void)] = []

    private init() {
        let thread = Thread { [self] in run() }
        thread.name = "test-later"
        thread.start()
    }

    /// Runs `work` once `milliseconds` have passed (in order of their due times).
    public func after(milliseconds: Int, _ work: @escaping @Sendable () -> Void) {
        condition.lock()
        due.append((Date().addingTimeInterval(Double(milliseconds) / 1_000), work))
        condition.signal()
        condition.unlock()
    }

    private func run() {
        condition.lock()
        while true {
            guard let next = due.indices.min(by: { due[$0].at < due[$1].at }) else {
                condition.wait()
                continue
            }
            if due[next].at > Date() {
                _ = condition.wait(until: due[next].at)
                continue
            }
            let work = due.remove(at: next).work
            condition.unlock()
            work()
            condition.lock()
        }
    }
}
