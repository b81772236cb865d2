#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The CPU time this process has used (user and system, all threads), for the sobriety
/// figures: a node reports it in its status, the gateway adds its own (Docs/DASHBOARD.md).
public enum ProcessUsage {
    /// Milliseconds of CPU since the process started (0 if the system does not say).
    public static func cpuMilliseconds() -> UInt64 {
        var usage = rusage()
        #if canImport(Glibc)
        let who = RUSAGE_SELF.rawValue
        #else
        let who = RUSAGE_SELF
        #endif
        guard getrusage(who, &usage) == 0 else { return 0 }
        func milliseconds(_ time: timeval) -> UInt64 {
            UInt64(clamping: time.tv_sec) &* 1_000 &+ UInt64(clamping: time.tv_usec) / 1_000
        }
        return milliseconds(usage.ru_utime) &+ milliseconds(usage.ru_stime)
    }
}
