import CLibUV
import COpenSSL
import Foundation
import Synchronization

/// One libuv loop on its own thread. Every handle belongs to it and is touched only on
/// that thread; other threads hand work over with `execute`, through a bounded, locked
/// queue drained on `uv_async_send`. `shutdown()` closes every handle and waits for the
/// thread to be done (its OpenSSL state freed).
public final class EventLoop: @unchecked Sendable {
    /// Work items waiting for the loop; beyond this `execute` refuses (the caller decides).
    public static let queueCountMax = 65_536

    let loop: UnsafeMutablePointer<uv_loop_t>
    private let wakeup: UnsafeMutablePointer<uv_async_t>
    private struct Queue {
        var items: [@Sendable () -> Void] = []
        var stopping = false
        var refusedFull = 0
        var peak = 0
    }
    private let queue = Mutex(Queue())
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    /// Set on the loop thread while it runs (for `isOnLoop`).
    private let loopThreadID = Mutex<pthread_t?>(nil)

    public init(name: String = "calisson-loop") {
        // A write to a socket the peer closed must fail with EPIPE, not kill the process.
        Self.ignoreBrokenPipes
        loop = .allocate(capacity: 1)
        precondition(uv_loop_init(loop) == 0, "uv_loop_init failed")
        wakeup = .allocate(capacity: 1)
        wakeup.pointee.data = nil
        precondition(uv_async_init(loop, wakeup, { handle in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<EventLoop>.fromOpaque(data).takeUnretainedValue().drain()
        }) == 0, "uv_async_init failed")
        wakeup.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        let thread = Thread { [self] in
            loopThreadID.withLock { $0 = pthread_self() }
            uv_run(loop, UV_RUN_DEFAULT)
            // This thread's OpenSSL state (TLS sessions ran here) is freed now, before
            // `shutdown` returns: left to the thread's exit, it could race OpenSSL's own
            // cleanup at process exit (a CLI exiting right after closing its client) and
            // be freed twice. OpenSSL asks this of every thread an application made.
            OPENSSL_thread_stop()
            finished.signal()
        }
        thread.name = name
        self.thread = thread
        thread.start()
    }

    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    deinit {
        // shutdown() must have run: the thread holds `self` until then.
        uv_loop_close(loop)
        loop.deallocate()
        wakeup.deallocate()
    }

    public var isOnLoop: Bool {
        loopThreadID.withLock { id in id.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Why `execute` did not take a piece of work.
    public enum Refusal: Error, Equatable, Sendable {
        /// `queueCountMax` items already wait: the loop is overloaded (counted in `refusedFull`).
        case full
        /// The loop is shutting down: nothing more will run on it.
        case stopping
    }

    /// Work refused because the queue was full, since the loop started (for /metrics).
    public var refusedFull: Int { queue.withLock { $0.refusedFull } }
    /// The most items that ever waited at once (for /metrics: how close the bound came).
    public var queueCountPeak: Int { queue.withLock { $0.peak } }

    /// Runs `work` on the loop thread, later (never inside the caller's stack). Throws when
    /// the queue is full or the loop stopping: the work is not taken, and the caller handles
    /// that by its own stated rule (refuse the request with the reason, wait for room...).
    /// Work that must not be lost from another thread goes through `executeWaiting`.
    public func execute(_ work: @escaping @Sendable () -> Void) throws(Refusal) {
        let refusal = queue.withLock { queue -> Refusal? in
            if queue.stopping { return .stopping }
            guard queue.items.count < Self.queueCountMax else {
                queue.refusedFull += 1
                return .full
            }
            queue.items.append(work)
            queue.peak = max(queue.peak, queue.items.count)
            return nil
        }
        if let refusal { throw refusal }
        uv_async_send(wakeup)
    }

    /// Runs `work` on the loop thread; on the loop itself, at once, in the caller's stack.
    /// From another thread, while the queue is full the caller waits for room (back-pressure
    /// on the thread that produces the work; never call it from the loop's own helpers that
    /// the loop waits for). False only when the loop is stopping and the work will not run.
    @discardableResult
    public func executeWaiting(_ work: @escaping @Sendable () -> Void) -> Bool {
        if isOnLoop {
            work()
            return true
        }
        var pause: UInt32 = 100
        while true {
            do {
                try execute(work)
                return true
            } catch .stopping {
                return false
            } catch {
                usleep(pause)  // the loop drains the whole queue each turn: room comes soon
                pause = min(pause * 2, 10_000)
            }
        }
    }

    private func drain() {
        let (items, stopping) = queue.withLock { queue in
            let items = queue.items
            queue.items = []
            return (items, queue.stopping)
        }
        for item in items { item() }
        if stopping { closeAll() }
    }

    /// Closes every handle of the loop (each owner frees its memory in its close
    /// callback); uv_run then returns and the thread ends. Blocks until it has.
    public func shutdown() {
        let first = queue.withLock { queue -> Bool in
            defer { queue.stopping = true }
            return !queue.stopping
        }
        guard first else { return }
        precondition(!isOnLoop, "shutdown() from the loop thread would wait for itself")
        uv_async_send(wakeup)
        finished.wait()
        thread = nil
    }

    private func closeAll() {
        uv_walk(loop, { handle, _ in
            guard let handle, uv_is_closing(handle) == 0 else { return }
            let owned = [UV_TIMER, UV_TCP, UV_PREPARE, UV_CHECK, UV_IDLE].contains(handle.pointee.type)
            if let data = handle.pointee.data, owned {
                // Owned handles close through their owner, which frees them in the callback.
                Unmanaged<HandleOwner>.fromOpaque(data).takeUnretainedValue().close()
            } else {
                uv_close(handle, nil)  // the wakeup handle: memory freed in deinit
            }
        }, nil)
    }
}

/// The owner of one libuv handle: it allocates the handle, keeps itself alive while the
/// handle is open (handle.data holds a retained reference), and frees the handle in the
/// close callback, never before.
class HandleOwner {
    let loop: EventLoop
    let handle: UnsafeMutablePointer<uv_handle_t>
    private(set) var isClosed = false
    private var onClose: (() -> Void)?

    init(loop: EventLoop, handle: UnsafeMutablePointer<uv_handle_t>) {
        self.loop = loop
        self.handle = handle
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Closes the handle (idempotent). `then` runs after libuv is done with it.
    func close(then: (() -> Void)? = nil) {
        if let then { onClose = then }
        guard !isClosed else { return }
        isClosed = true
        willClose()
        uv_close(handle) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            let owner = Unmanaged<HandleOwner>.fromOpaque(data).takeRetainedValue()
            handle.pointee.data = nil
            owner.onClose?()
            owner.onClose = nil
            handle.deallocate()
        }
    }

    /// Called once, just before uv_close: stop timers, fail pending writes, tell owners.
    func willClose() {}
}

/// A libuv timer. Fires its callback on the loop thread.
final class LoopTimer: HandleOwner {
    private var callback: (() -> Void)?

    init(loop: EventLoop) {
        let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop.loop, timer)
        super.init(loop: loop, handle: UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self))
    }

    private var timer: UnsafeMutablePointer<uv_timer_t> { UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_timer_t.self) }

    /// Fires after `milliseconds`, then every `repeatMilliseconds` if non-zero.
    func start(after milliseconds: UInt64, repeat repeatMilliseconds: UInt64 = 0, _ callback: @escaping () -> Void) {
        guard !isClosed else { return }
        self.callback = callback
        uv_timer_start(timer, { timer in
            guard let data = timer?.pointee.data else { return }
            Unmanaged<LoopTimer>.fromOpaque(data).takeUnretainedValue().callback?()
        }, milliseconds, repeatMilliseconds)
    }

    func stop() {
        guard !isClosed else { return }
        uv_timer_stop(timer)
    }

    override func willClose() {
        uv_timer_stop(timer)
        callback = nil
    }
}

/// A callback run at every turn of the loop, just before it waits for I/O (libuv's
/// prepare phase) or just after it handled I/O (its check phase): together they see the
/// end of every turn's callbacks (timers before the wait, I/O and handed-over work after it).
final class LoopPhaseHook: HandleOwner {
    enum Phase { case beforePoll, afterPoll }
    let phase: Phase
    private var callback: (() -> Void)?

    init(loop: EventLoop, phase: Phase, _ callback: @escaping () -> Void) {
        self.phase = phase
        let handle: UnsafeMutablePointer<uv_handle_t>
        switch phase {
        case .beforePoll:
            let prepare = UnsafeMutablePointer<uv_prepare_t>.allocate(capacity: 1)
            uv_prepare_init(loop.loop, prepare)
            handle = UnsafeMutableRawPointer(prepare).assumingMemoryBound(to: uv_handle_t.self)
        case .afterPoll:
            let check = UnsafeMutablePointer<uv_check_t>.allocate(capacity: 1)
            uv_check_init(loop.loop, check)
            handle = UnsafeMutableRawPointer(check).assumingMemoryBound(to: uv_handle_t.self)
        }
        super.init(loop: loop, handle: handle)
        self.callback = callback
        switch phase {
        case .beforePoll:
            uv_prepare_start(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_prepare_t.self)) { prepare in
                guard let data = prepare?.pointee.data else { return }
                Unmanaged<LoopPhaseHook>.fromOpaque(data).takeUnretainedValue().callback?()
            }
        case .afterPoll:
            uv_check_start(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_check_t.self)) { check in
                guard let data = check?.pointee.data else { return }
                Unmanaged<LoopPhaseHook>.fromOpaque(data).takeUnretainedValue().callback?()
            }
        }
    }

    override func willClose() {
        switch phase {
        case .beforePoll: uv_prepare_stop(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_prepare_t.self))
        case .afterPoll: uv_check_stop(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_check_t.self))
        }
        callback = nil
    }
}

/// A callback run at every turn of the loop while started (libuv's idle phase, before the
/// prepare hooks): while it is, the loop does not sleep waiting for I/O, it only looks.
final class LoopIdle: HandleOwner {
    private var callback: (() -> Void)?
    private(set) var isStarted = false

    init(loop: EventLoop, _ callback: @escaping () -> Void) {
        let idle = UnsafeMutablePointer<uv_idle_t>.allocate(capacity: 1)
        uv_idle_init(loop.loop, idle)
        super.init(loop: loop, handle: UnsafeMutableRawPointer(idle).assumingMemoryBound(to: uv_handle_t.self))
        self.callback = callback
    }

    private var idle: UnsafeMutablePointer<uv_idle_t> { UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_idle_t.self) }

    func start() {
        guard !isClosed, !isStarted else { return }
        isStarted = true
        uv_idle_start(idle) { idle in
            guard let data = idle?.pointee.data else { return }
            Unmanaged<LoopIdle>.fromOpaque(data).takeUnretainedValue().callback?()
        }
    }

    func stop() {
        guard !isClosed, isStarted else { return }
        isStarted = false
        uv_idle_stop(idle)
    }

    override func willClose() {
        uv_idle_stop(idle)
        isStarted = false
        callback = nil
    }
}

/// Milliseconds of the loop's clock (monotonic, cached per iteration).
func now(_ loop: EventLoop) -> UInt64 { uv_now(loop.loop) }

/// A repeating timer on a loop, for code outside this module (the node's consensus clock).
/// Create, use and cancel it on the loop thread.
public final class RepeatingTask {
    private let timer: LoopTimer

    /// Runs `body` on the loop every `milliseconds`, the first time after `first` (one
    /// period if nil).
    public init(loop: EventLoop, every milliseconds: UInt64, first: UInt64? = nil, _ body: @escaping () -> Void) {
        timer = LoopTimer(loop: loop)
        timer.start(after: first ?? milliseconds, repeat: milliseconds, body)
    }

    /// Stops it for good (its handle is closed; shutdown also closes it).
    public func cancel() { timer.close() }
}
