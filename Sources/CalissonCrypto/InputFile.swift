#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a file given by a person (a key, a genesis, a configuration, a list) could not be
/// read. Each case names the file and says what it was instead.
public enum InputFileError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(path: String, errno: Int32)
    /// A directory, a device (`/dev/urandom`), a pipe: only regular files are read.
    case notARegularFile(path: String, kind: String)
    /// A secret (a private key) that anyone but its owner may read, write or execute.
    case insecurePermissions(path: String, mode: UInt32)
    case tooLarge(path: String, byteCountMax: Int)

    public var path: String {
        switch self {
        case let .cannotOpen(path, _), let .notARegularFile(path, _), let .insecurePermissions(path, _), let .tooLarge(path, _): return path
        }
    }

    /// What is wrong, without the path.
    public var reason: String {
        switch self {
        case let .cannotOpen(_, code): return "cannot open: \(String(cString: strerror(code)))"
        case let .notARegularFile(_, kind): return "is \(kind), not a regular file"
        case let .insecurePermissions(_, mode):
            return "private key is accessible to others (mode \(String(mode & 0o777, radix: 8))); run chmod 600 on it"
        case let .tooLarge(_, max): return "larger than \(max) bytes, too large for this kind of file"
        }
    }

    public var description: String { "\(path): \(reason)" }
}

/// Reads a whole regular file of bounded size: the file checked (fstat on the open
/// descriptor) is the file read, and at most `byteCountMax + 1` bytes are ever read, so
/// a device or a growing file cannot make a tool read for ever.
public enum InputFile {
    public static func read(_ path: String, byteCountMax: Int, secret: Bool = false) throws(InputFileError) -> [UInt8] {
        // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for ever (it is
        // then refused as not a regular file; reads of a regular file ignore the flag).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (secret ? O_NOFOLLOW : 0))
        guard fd >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .cannotOpen(path: path, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .notARegularFile(path: path, kind: kind(info.st_mode)) }
        if secret, info.st_mode & 0o077 != 0 { throw .insecurePermissions(path: path, mode: UInt32(info.st_mode)) }
        guard info.st_size <= byteCountMax else { throw .tooLarge(path: path, byteCountMax: byteCountMax) }
        // The size fstat gave, plus one byte to see a file that grew past the bound.
        var buffer = [UInt8](repeating: 0, count: min(Int(clamping: info.st_size), byteCountMax) + 1)
        var total = 0
        while true {
            if total == buffer.count {  // the file grew since fstat: room for more, up to the bound
                guard buffer.count <= byteCountMax else { break }
                buffer.append(contentsOf: repeatElement(0, count: min(buffer.count, byteCountMax + 1 - buffer.count)))
            }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + total, $0.count - total) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .cannotOpen(path: path, errno: errno)
            }
            if n == 0 { break }
            total += n
        }
        guard total <= byteCountMax else { throw .tooLarge(path: path, byteCountMax: byteCountMax) }
        buffer.removeSubrange(total...)
        return buffer
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFCHR, S_IFBLK: return "a device"
        case S_IFIFO: return "a pipe"
        case S_IFSOCK: return "a socket"
        default: return "not a file"
        }
    }
}
