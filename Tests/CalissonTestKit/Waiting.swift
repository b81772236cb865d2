import Foundation
import Synchronization

/// Polls `condition` every 20 ms until it holds or `seconds` pass; its value then. A
/// deadline, not a timing assertion: a slow machine only waits longer (no test asserts
/// how fast something happens: speed is the benchmarks' business).
public func eventually(_ seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.02)
    }
    return condition()
}

/// A value behind a lock, shared with callbacks on other threads (a `Mutex` in a class, so
/// that escaping closures can hold it).
public final class Locked<T: Sendable>: Sendable {
    private let mutex: Mutex<T>
    public init(_ value: T) { mutex = Mutex(value) }
    public func withLock<R: Sendable>(_ body: (inout sending T) -> sending R) -> sending R { mutex.withLock(body) }
}
