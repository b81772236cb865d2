// ChildProcess, which the tools and tests use to start nodes and helpers: a child starts
// with no signal blocked and no descriptor of the parent's but its standard streams, and
// says how it ended.
import CalissonTestKit
import Foundation
import Glibc
import Spawning
import Testing

@Suite(.onOwnThreads) struct ChildProcessTests {
    @Test func exitsAndSignalsAreToldApart() throws {
        #expect(try ChildProcess("/bin/sh", ["-c", "exit 7"]).wait() == .exited(7))
        #expect(try ChildProcess("/bin/sh", ["-c", "kill -9 $$"]).wait() == .signalled(SIGKILL))
        let ran = try ChildProcess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(ran.exit == .exited(3) && ran.exit.status == 3)
        #expect(String(decoding: ran.output, as: UTF8.self) == "out\n" && String(decoding: ran.errors, as: UTF8.self) == "err\n")
        #expect(throws: ChildProcessError.self) { try ChildProcess("/nonexistent/tool", []) }
    }

    /// Started from a thread that blocks SIGTERM, the child blocks nothing, and SIGTERM
    /// ends it (Foundation's Process passed the mask on: such a child never heard it).
    @Test func theChildBlocksNoSignal() throws {
        let result = Locked<(String, ChildProcess.Exit?)>(("", nil))
        let thread = Thread {
            var blocked = sigset_t()
            sigemptyset(&blocked)
            sigaddset(&blocked, SIGTERM)
            pthread_sigmask(SIG_BLOCK, &blocked, nil)
            let mask = (try? ChildProcess.run("/bin/grep", ["SigBlk", "/proc/self/status"])).map { String(decoding: $0.output, as: UTF8.self) } ?? "failed"
            let sleeper = try? ChildProcess("/bin/sleep", ["30"])
            sleeper?.send(SIGTERM)
            result.withLock { $0 = (mask, sleeper?.wait()) }
        }
        thread.start()
        #expect(eventually(20) { result.withLock { $0.1 } != nil })
        let (mask, exit) = result.withLock { $0 }
        #expect(mask.trimmingCharacters(in: .whitespacesAndNewlines) == "SigBlk:\t0000000000000000", "\(mask)")
        #expect(exit == .signalled(SIGTERM))
    }

    /// A descriptor the parent holds (not close-on-exec) does not reach the child: a pipe's
    /// end held by another child would keep its reader from ever seeing the end.
    @Test func theChildHoldsOnlyItsStandardStreams() throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { for end in ends { close(end) } }
        let listing = try ChildProcess.run("/bin/ls", ["/proc/self/fd"])
        let descriptors = Set(String(decoding: listing.output, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) })
        // 0, 1, 2 and the directory ls reads.
        #expect(!descriptors.contains(ends[0]) && !descriptors.contains(ends[1]), "\(descriptors) holds \(ends)")
        #expect(descriptors.isSuperset(of: [0, 1, 2]) && descriptors.count <= 4, "\(descriptors)")
    }
}
