import CSpawn
import Foundation
import Glibc
import Synchronization

/// A child process started with `posix_spawn`, for the tools and tests that start nodes,
/// writers and helpers. Not Foundation's `Process`, which on Linux (Swift 6.3.1):
/// - crashes now and then in `run()`: it lists `/proc/self/fd` copying each directory
///   entry's whole 256-byte name, and reads past glibc's buffer when an entry ends at an
///   unmapped page (swift-corelibs-foundation pull request 5472, fixed after 6.3.1; the
///   test suite crashed this way, in `Process.run`, on 2026-12-03);
/// - lets the child inherit the caller's signal mask (a node started from a thread that
///   blocks SIGTERM never hears it) and every descriptor not marked close-on-exec (a
///   pipe's end inherited by a sibling child keeps a reader from seeing the end).
///
/// Here the child starts with no signal blocked and every signal's default action, with
/// its standard streams as asked and every other descriptor closed.
public final class ChildProcess: Sendable {
    /// Where a standard stream of the child goes.
    public enum Stream: Sendable {
        /// The caller's own.
        case inherit
        /// /dev/null.
        case null
        /// A new pipe: read the child's output from `output`/`errors`, or write its input to `input`.
        case pipe
        /// A descriptor the caller owns (a file, one end of a pipe); the caller closes it.
        case descriptor(Int32)
    }

    /// How the child ended.
    public enum Exit: Equatable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)
        public var description: String {
            switch self {
            case let .exited(code): return "exit status \(code)"
            case let .signalled(signal): return "killed by signal \(signal)"
            }
        }
        /// Exit status, or the signal number for a child a signal ended (as `Process.terminationStatus`).
        public var status: Int32 {
            switch self {
            case let .exited(code), let .signalled(code): return code
            }
        }
    }

    public let pid: pid_t
    /// The parent's ends of the pipes asked for (nil for other streams).
    public let input: FileHandle?
    public let output: FileHandle?
    public let errors: FileHandle?
    private let ended = Mutex<Exit?>(nil)

    /// Starts `executable` (a path) with `arguments` (not counting the program name) and
    /// `environment` (nil: this process's).
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        input: Stream = .null, output: Stream = .inherit, errors: Stream = .inherit
    ) throws(ChildProcessError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        // The pipes' parent ends (close-on-exec, so no child inherits them) and child ends.
        var parentEnds: [Int32?] = [nil, nil, nil]
        var childEnds: [Int32] = []  // closed here once the child has its copies
        defer { for descriptor in childEnds { close(descriptor) } }
        func fail(_ what: String) -> ChildProcessError {
            for case let descriptor? in parentEnds { close(descriptor) }
            return ChildProcessError(executable: executable, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        for (index, (target, stream)) in [(Int32(0), input), (1, output), (2, errors)].enumerated() {
            switch stream {
            case .inherit: break
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case let .descriptor(descriptor):
                posix_spawn_file_actions_adddup2(&actions, descriptor, target)
            case .pipe:
                var ends: [Int32] = [-1, -1]
                guard pipe2(&ends, O_CLOEXEC) == 0 else { throw fail("pipe") }
                let (parent, child) = target == 0 ? (ends[1], ends[0]) : (ends[0], ends[1])
                parentEnds[index] = parent
                childEnds.append(child)
                posix_spawn_file_actions_adddup2(&actions, child, target)
            }
        }
        // Every other descriptor closed in the child (glibc 2.34 and later).
        posix_spawn_file_actions_addclosefrom_np(&actions, 3)
        // No signal blocked, every signal's action the default.
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        let environment = environment ?? ProcessInfo.processInfo.environment
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for variable in envp { free(variable) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            errno = spawned
            throw fail("posix_spawn")
        }
        self.pid = pid
        self.input = parentEnds[0].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        self.output = parentEnds[1].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        self.errors = parentEnds[2].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
    }

    /// Runs `executable` to its end, with what it wrote on its standard output and error.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil
    ) throws(ChildProcessError) -> (exit: Exit, output: Data, errors: Data) {
        let child = try ChildProcess(executable, arguments, environment: environment, output: .pipe, errors: .pipe)
        // Both pipes read at once: a full pipe would block the child.
        let errors = Mutex(Data())
        let read = DispatchSemaphore(value: 0)
        Thread { [child] in
            let data = child.errors?.readDataToEndOfFile() ?? Data()
            errors.withLock { $0 = data }
            read.signal()
        }.start()
        let output = child.output?.readDataToEndOfFile() ?? Data()
        read.wait()
        return (child.wait(), output, errors.withLock { $0 })
    }

    /// Waits for the child to end (reaps it).
    @discardableResult
    public func wait() -> Exit {
        if let exit = ended.withLock({ $0 }) { return exit }
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, 0)
            if result == pid { return record(status) }
            if result == -1 && errno == EINTR { continue }
            // Reaped by another caller meanwhile: its record comes.
            while true {
                if let exit = ended.withLock({ $0 }) { return exit }
                usleep(1_000)
            }
        }
    }

    /// Whether the child has not ended yet (reaps it if it has).
    public var isRunning: Bool {
        if ended.withLock({ $0 }) != nil { return false }
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                record(status)
                return false
            }
            if result == 0 { return true }
            if errno == EINTR { continue }
            // Reaped by a concurrent `wait()`, which records it.
            return ended.withLock { $0 } == nil
        }
    }

    /// How it ended; nil while it runs.
    public var exit: Exit? {
        _ = isRunning
        return ended.withLock { $0 }
    }

    /// Sends `signal` to the child, unless it has been reaped (its pid may be another's).
    public func send(_ signal: Int32) {
        ended.withLock { ended in
            if ended == nil { _ = Glibc.kill(pid, signal) }
        }
    }

    @discardableResult
    private func record(_ status: Int32) -> Exit {
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import (macros).
        let exit: Exit = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
        ended.withLock { $0 = exit }
        return exit
    }
}

/// A child that could not be started, with why.
public struct ChildProcessError: Error, Sendable, CustomStringConvertible {
    public let executable: String
    public let reason: String
    public var description: String { "\(executable): \(reason)" }
}
