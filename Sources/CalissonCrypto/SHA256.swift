import CHotPath
import Wire

/// A SHA-256 digest.
public typealias SHA256Digest = Bytes32

/// SHA-256 through the CHotPath kernels.
///
/// `SHA256.backend` is chosen once per process: SHA-NI when the CPU has it, OpenSSL's
/// low-level SHA-256 otherwise. Setting `CALISSON_SHA256_BACKEND=openssl` in the
/// environment forces the fallback (to compare, or to rule the kernel out).
public enum SHA256 {
    public enum Backend: Int32, Sendable, CaseIterable, CustomStringConvertible {
        case openSSL = 0  // CHP_BACKEND_OPENSSL
        case shaNI = 1  // CHP_BACKEND_SHANI

        /// The backend a request for `self` really runs on (SHA-NI only where supported).
        public var effective: Backend {
            Backend(rawValue: chp_sha256_effective_backend(rawValue)) ?? .openSSL
        }

        public var isAvailable: Bool { effective == self }

        public var description: String {
            switch self {
            case .openSSL: return "openssl"
            case .shaNI: return "sha-ni"
            }
        }
    }

    public static let backendEnvironmentVariable = "CALISSON_SHA256_BACKEND"

    /// The backend every default call uses.
    public static let backend: Backend = {
        if let forced = Environment.value(backendEnvironmentVariable), forced.lowercased() == "openssl" {
            return .openSSL
        }
        return Backend.shaNI.effective
    }()

    public static func hash(_ bytes: UnsafeRawBufferPointer, backend: Backend = backend) -> SHA256Digest {
        SHA256Digest.filling { out in
            chp_sha256(backend.rawValue, bytes.baseAddress, bytes.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    public static func hash(_ bytes: [UInt8], backend: Backend = backend) -> SHA256Digest {
        bytes.withUnsafeBytes { hash($0, backend: backend) }
    }

    public static func hash(_ bytes: ArraySlice<UInt8>, backend: Backend = backend) -> SHA256Digest {
        bytes.withUnsafeBytes { hash($0, backend: backend) }
    }

    public static func hash(_ string: String, backend: Backend = backend) -> SHA256Digest {
        var copy = string
        return copy.withUTF8 { hash(UnsafeRawBufferPointer($0), backend: backend) }
    }

    /// Incremental SHA-256, for hashing several fields without concatenating them.
    public struct Hasher: Sendable {
        private var context = chp_sha256_ctx()

        public init(backend: Backend = SHA256.backend) {
            chp_sha256_init(&context, backend.rawValue)
        }

        /// Resumes from a chaining value that has absorbed `absorbed` bytes (a multiple of 64).
        init(midstate: Midstate, backend: Backend) {
            withUnsafePointer(to: midstate.words) { words in
                words.withMemoryRebound(to: UInt32.self, capacity: 8) {
                    chp_sha256_init_midstate(&context, backend.rawValue, $0, midstate.absorbed)
                }
            }
        }

        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            chp_sha256_update(&context, bytes.baseAddress, bytes.count)
        }

        public mutating func update(_ bytes: [UInt8]) {
            bytes.withUnsafeBytes { update($0) }
        }

        public mutating func update(_ digest: Bytes32) {
            digest.withUnsafeBytes { update($0) }
        }

        /// The digest; the hasher must not be updated afterwards.
        public mutating func finalize() -> SHA256Digest {
            SHA256Digest.filling { out in
                chp_sha256_final(&context, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
    }

    /// A SHA-256 chaining value after whole blocks: lets a fixed prefix be hashed once.
    struct Midstate: Sendable {
        var words: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
        var absorbed: UInt64
    }
}

/// Domain-separated hashing: SHA-256(SHA-256(tag) || SHA-256(tag) || data).
///
/// The 64-byte prefix is one block, absorbed once when the hasher is made; each hash
/// then costs only the data's blocks. Two different tags can never produce the same
/// hash for any data unless SHA-256 collides, so a digest made for one purpose (a
/// transaction id, a Merkle leaf, a signing digest) cannot be replayed as another.
public struct TaggedHasher: Sendable {
    public let tag: String
    private let midstate: SHA256.Midstate
    private let backend: SHA256.Backend

    public init(tag: String, backend: SHA256.Backend = SHA256.backend) {
        self.tag = tag
        self.backend = backend
        let tagDigest = SHA256.hash(tag, backend: backend)
        var block = tagDigest.bytes
        block += block
        var words: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutablePointer(to: &words) { pointer in
            pointer.withMemoryRebound(to: UInt32.self, capacity: 8) { out in
                chp_sha256_block_midstate(backend.rawValue, block, out)
            }
        }
        midstate = SHA256.Midstate(words: words, absorbed: 64)
    }

    /// A hasher already holding the tag prefix; add the data and finalize.
    public func hasher() -> SHA256.Hasher {
        SHA256.Hasher(midstate: midstate, backend: backend)
    }

    public func hash(_ bytes: [UInt8]) -> SHA256Digest {
        var hasher = hasher()
        hasher.update(bytes)
        return hasher.finalize()
    }
}
