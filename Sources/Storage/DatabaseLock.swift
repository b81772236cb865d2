import Foundation
import Synchronization

/// The exclusive lock a writing `NodeStore` holds on `<database>.lock` for as long as it is
/// open, released by the kernel when the process ends, however it ends.
///
/// Two writers on one database are never right: two node processes started on the same
/// configuration would both sign as the same validator, and `calisson-node prune` or
/// `restore` under a running node would race its commits. The second one is refused, naming
/// the process that holds the lock. Read-only opens (backups, `calisson --db`, the
/// gateway's readers) take no lock.
///
/// A POSIX record lock (`fcntl(F_SETLK)`), not `flock`: a `flock` belongs to the open file,
/// which a child process shares from its fork until its exec closes it, so a store closed
/// while another thread spawned a process could stay locked a moment longer (with `flock`,
/// the suite, which spawns hundreds of processes, saw a store reopened after `close()`
/// refused, in 2 of 235 tests). Record locks belong to the process and are
/// not inherited; as they do not exclude another store of the same process, the files this
/// process locks are also kept in `held`, checked first.
public final class DatabaseLock {
    private var descriptor: Int32
    private let identity: FileIdentity
    public let path: String

    struct FileIdentity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    /// The lock files this process holds (a second lock of one of them must fail without
    /// opening and closing it: closing any descriptor of a file drops the process's locks on it).
    private static let held = Mutex<Set<FileIdentity>>([])

    /// The lock file of a database.
    public static func path(for databaseFile: String) -> String { databaseFile + ".lock" }

    /// Takes the lock of `databaseFile`, or throws `.inUse` naming its holder.
    public init(databaseFile: String) throws(StorageError) {
        let path = Self.path(for: databaseFile)
        self.path = path
        let taken: Result<(Int32, FileIdentity), StorageError> = Self.held.withLock { held in
            var status = stat()
            if stat(path, &status) == 0, held.contains(FileIdentity(status)) {
                return .failure(.inUse(file: databaseFile, holder: "process \(getpid())"))
            }
            let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                return .failure(.cannotOpen(file: databaseFile, reason: "its lock file \(path): \(String(cString: strerror(errno)))"))
            }
            var lock = flock()
            lock.l_type = Int16(truncatingIfNeeded: F_WRLCK)
            lock.l_whence = Int16(truncatingIfNeeded: SEEK_SET)
            guard fcntl(descriptor, F_SETLK, &lock) == 0 else {
                let reason = errno
                let holder = Self.holder(descriptor)
                close(descriptor)  // this process held no lock on the file: closing it drops none
                guard reason == EAGAIN || reason == EACCES else {
                    return .failure(.cannotOpen(file: databaseFile, reason: "its lock file \(path): \(String(cString: strerror(reason)))"))
                }
                return .failure(.inUse(file: databaseFile, holder: holder))
            }
            guard fstat(descriptor, &status) == 0 else {
                close(descriptor)
                return .failure(.cannotOpen(file: databaseFile, reason: "its lock file \(path): \(String(cString: strerror(errno)))"))
            }
            held.insert(FileIdentity(status))
            return .success((descriptor, FileIdentity(status)))
        }
        (descriptor, identity) = try taken.get()
        // The holder's pid, for people reading the file (best effort: a full disk does not
        // stop a node that can take its lock).
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(descriptor, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) } }
    }

    deinit { release() }

    /// Releases the lock (done at deinit; twice does nothing).
    public func release() {
        Self.held.withLock { held in
            guard descriptor >= 0 else { return }
            close(descriptor)
            descriptor = -1
            held.remove(identity)
        }
    }

    /// The process holding the lock ("process 1234", from the kernel), or "another process".
    private static func holder(_ descriptor: Int32) -> String {
        var lock = flock()
        lock.l_type = Int16(truncatingIfNeeded: F_WRLCK)
        lock.l_whence = Int16(truncatingIfNeeded: SEEK_SET)
        guard fcntl(descriptor, F_GETLK, &lock) == 0, lock.l_type != Int16(truncatingIfNeeded: F_UNLCK), lock.l_pid > 0 else { return "another process" }
        return "process \(lock.l_pid)"
    }
}

extension DatabaseLock.FileIdentity {
    init(_ status: stat) {
        self.init(device: UInt64(truncatingIfNeeded: status.st_dev), inode: UInt64(truncatingIfNeeded: status.st_ino))
    }
}
