import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where tests put their files: one directory per test process,
/// `$TMPDIR/calisson-tests-<pid>-<random>`, removed when the process exits. A test makes
/// what it needs below it with `Scratch.directory(_:)` or `Scratch.file(_:)`; nothing is
/// left behind after a run (the suite used to leave hundreds of directories, gigabytes,
/// in the system's temporary directory). The roots of earlier runs whose process is gone
/// (killed before its exit handler ran) are removed by the next run.
public enum Scratch {
    static let prefix = "calisson-tests-"

    /// The process's root, made (and its removal at exit arranged) on first use.
    public static let root: String = {
        let temporary = FileManager.default.temporaryDirectory.path
        removeAbandonedRoots(in: temporary)
        let path = "\(temporary)/\(prefix)\(getpid())-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        rootForExit.withLock { $0 = path }
        atexit { Scratch.removeRoot() }
        return path
    }()

    private static let rootForExit = Mutex<String?>(nil)

    static func removeRoot() {
        guard let path = rootForExit.withLock({ $0 }) else { return }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Roots of earlier test processes that no longer run.
    static func removeAbandonedRoots(in temporary: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix(prefix) {
            let pid = name.dropFirst(prefix.count).split(separator: "-").first.flatMap { pid_t($0) }
            guard let pid, pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? FileManager.default.removeItem(atPath: "\(temporary)/\(name)")
        }
    }

    /// A new, empty directory under the root, named after `label`.
    public static func directory(_ label: String) -> String {
        let path = "\(root)/\(label)-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A path for a file named `name` in a new directory under the root (the file is not made).
    public static func file(_ name: String) -> String { "\(directory("file"))/\(name)" }
}
