#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a key file could not be read or written. Each case names the file.
public enum KeyFileError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotOpen(path: String, errno: Int32)
    case notARegularFile(path: String)
    /// A private key file that anyone but its owner may read, write or execute.
    case insecurePermissions(path: String, mode: UInt32)
    case tooLarge(path: String, byteCount: Int)
    /// The file holds no PEM block of the expected kind, or its base64 is broken.
    case notPEM(path: String, expectedLabel: String)
    /// The PEM block is not an Ed25519 key in the PKCS#8 / SubjectPublicKeyInfo form.
    case notEd25519(path: String)
    /// The PEM block is not a 32-byte evidence key.
    case notEvidenceKey(path: String)
    case alreadyExists(path: String)
    case cannotWrite(path: String, step: String, errno: Int32)

    public var description: String {
        switch self {
        case let .cannotOpen(path, code): return "\(path): cannot open: \(Self.message(code))"
        case let .notARegularFile(path): return "\(path): not a regular file"
        case let .insecurePermissions(path, mode):
            return "\(path): private key is accessible to others (mode \(String(mode & 0o777, radix: 8))); run chmod 600 on it"
        case let .tooLarge(path, _): return "\(path): over \(KeyFile.fileByteCountMax) bytes, too large for a key file"
        case let .notPEM(path, label): return "\(path): no PEM block '\(label)' found"
        case let .notEd25519(path): return "\(path): not an Ed25519 key"
        case let .notEvidenceKey(path): return "\(path): not an evidence key (32 bytes)"
        case let .alreadyExists(path): return "\(path): already exists; refusing to overwrite a key"
        case let .cannotWrite(path, step, code): return "\(path): cannot write (\(step)): \(Self.message(code))"
        }
    }

    private static func message(_ code: Int32) -> String { String(cString: strerror(code)) }
}

/// Ed25519 keys in PEM files (PKCS#8 private keys, SubjectPublicKeyInfo public keys),
/// the same files OpenSSL reads and writes.
///
/// Private keys are written with mode 0600 (atomically: a temporary file, fsync, then a
/// link or rename), and a private key file readable by group or others is refused on
/// load, as OpenSSH does.
public enum KeyFile {
    /// Key files are a few hundred bytes; anything larger is not one.
    public static let fileByteCountMax = 16 * 1024

    public static func pem(for key: Ed25519PrivateKey) -> String {
        PEM.armour(label: PEM.privateKeyLabel, der: PEM.privateKeyDERPrefix + key.seedRepresentation)
    }

    public static func pem(for key: Ed25519PublicKey) -> String {
        PEM.armour(label: PEM.publicKeyLabel, der: PEM.publicKeyDERPrefix + key.rawRepresentation)
    }

    public static func privateKey(fromPEM text: String, path: String = "<memory>") throws(KeyFileError) -> Ed25519PrivateKey {
        let der: [UInt8]
        do { der = try PEM.dearmour(text, label: PEM.privateKeyLabel) } catch { throw .notPEM(path: path, expectedLabel: PEM.privateKeyLabel) }
        guard der.count == PEM.privateKeyDERPrefix.count + Ed25519PrivateKey.seedByteCount,
            der.starts(with: PEM.privateKeyDERPrefix),
            let key = Ed25519PrivateKey(seed: der.dropFirst(PEM.privateKeyDERPrefix.count))
        else { throw .notEd25519(path: path) }
        return key
    }

    public static func publicKey(fromPEM text: String, path: String = "<memory>") throws(KeyFileError) -> Ed25519PublicKey {
        let der: [UInt8]
        do { der = try PEM.dearmour(text, label: PEM.publicKeyLabel) } catch { throw .notPEM(path: path, expectedLabel: PEM.publicKeyLabel) }
        guard der.count == PEM.publicKeyDERPrefix.count + 32, der.starts(with: PEM.publicKeyDERPrefix),
            let key = Ed25519PublicKey(rawRepresentation: der.dropFirst(PEM.publicKeyDERPrefix.count))
        else { throw .notEd25519(path: path) }
        return key
    }

    public static func readPrivateKey(at path: String) throws(KeyFileError) -> Ed25519PrivateKey {
        try privateKey(fromPEM: try read(path, secret: true), path: path)
    }

    public static func readPublicKey(at path: String) throws(KeyFileError) -> Ed25519PublicKey {
        try publicKey(fromPEM: try read(path, secret: false), path: path)
    }

    public static func write(_ key: Ed25519PrivateKey, to path: String, overwrite: Bool = false) throws(KeyFileError) {
        try write(pem(for: key), to: path, mode: 0o600, overwrite: overwrite)
    }

    public static func write(_ key: Ed25519PublicKey, to path: String, overwrite: Bool = false) throws(KeyFileError) {
        try write(pem(for: key), to: path, mode: 0o644, overwrite: overwrite)
    }

    static func read(_ path: String, secret: Bool) throws(KeyFileError) -> String {
        var bytes: [UInt8]
        do { bytes = try InputFile.read(path, byteCountMax: fileByteCountMax, secret: secret) } catch {
            switch error {
            case let .cannotOpen(path, code): throw .cannotOpen(path: path, errno: code)
            case let .notARegularFile(path, _): throw .notARegularFile(path: path)
            case let .insecurePermissions(path, mode): throw .insecurePermissions(path: path, mode: mode)
            case let .tooLarge(path, max): throw .tooLarge(path: path, byteCount: max + 1)
            }
        }
        defer { if secret { bytes.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, $0.count) } } }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func write(_ text: String, to path: String, mode: mode_t, overwrite: Bool) throws(KeyFileError) {
        try write(bytes: Array(text.utf8), to: path, mode: mode, overwrite: overwrite)
    }

    static func write(bytes: [UInt8], to path: String, mode: mode_t, overwrite: Bool) throws(KeyFileError) {
        if !overwrite, access(path, F_OK) == 0 { throw .alreadyExists(path: path) }
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw .cannotWrite(path: path, step: "create \(temporary)", errno: errno) }
        var closed = false
        defer { if !closed { close(fd) } }
        do throws(KeyFileError) {
            // The umask may have removed bits; set exactly the mode asked for.
            guard fchmod(fd, mode) == 0 else { throw KeyFileError.cannotWrite(path: path, step: "chmod", errno: errno) }
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw KeyFileError.cannotWrite(path: path, step: "write", errno: errno)
                }
                written += n
            }
            guard fsync(fd) == 0 else { throw KeyFileError.cannotWrite(path: path, step: "fsync", errno: errno) }
            closed = true
            guard close(fd) == 0 else { throw KeyFileError.cannotWrite(path: path, step: "close", errno: errno) }
            if overwrite {
                guard rename(temporary, path) == 0 else { throw KeyFileError.cannotWrite(path: path, step: "rename", errno: errno) }
            } else {
                // link() fails if the name exists, so a key that appeared meanwhile is never replaced.
                guard link(temporary, path) == 0 else {
                    let code = errno
                    throw code == EEXIST ? KeyFileError.alreadyExists(path: path) : .cannotWrite(path: path, step: "link", errno: code)
                }
                unlink(temporary)
            }
        } catch {
            unlink(temporary)
            throw error
        }
        syncDirectory(of: path)
    }

    /// Makes the new directory entry durable; best effort (some filesystems refuse).
    static func syncDirectory(of path: String) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}

/// A file whose loss or tearing at a crash matters (a CA's register of the serials it
/// issued, certificates, settlement files, a client's memory of the checkpoints it saw):
/// written whole under a temporary name, synced, renamed into place, then its directory
/// synced. After a crash the file is the old one or the new one, never a part of either,
/// and once this returns the new one stays.
public enum DurableFile {
    public static func write(_ text: String, to path: String, mode: mode_t = 0o644) throws(KeyFileError) {
        try KeyFile.write(bytes: Array(text.utf8), to: path, mode: mode, overwrite: true)
    }

    public static func write(bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws(KeyFileError) {
        try KeyFile.write(bytes: bytes, to: path, mode: mode, overwrite: true)
    }

    /// Makes a new directory entry for `path` durable (a rename into its directory).
    public static func syncDirectory(of path: String) { KeyFile.syncDirectory(of: path) }
}
