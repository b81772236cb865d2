import CSodium
import Wire

/// Ed25519 (RFC 8032) through libsodium, which verifies about 2.5 times faster than
/// OpenSSL 3.0's EVP interface on this project's machines (see Docs/BENCHMARKS.md).
/// libsodium also refuses non-canonical signatures and small-order public keys.
public enum Ed25519 {
    /// sodium_init is idempotent and thread-safe; this runs it once before first use.
    static let ready: Bool = sodium_init() >= 0

    /// Verifies `signature` over `message` under `publicKey` (plain RFC 8032, no domain).
    /// Calisson code signs through `SigningDomain`, which adds the purpose and chain id.
    public static func verify(
        signature: Ed25519Signature, message: UnsafeRawBufferPointer, publicKey: Ed25519PublicKey
    ) -> Bool {
        precondition(ready, "libsodium failed to initialise")
        return signature.bytes64.withUnsafeBytes { sig in
            publicKey.bytes.withUnsafeBytes { key in
                crypto_sign_verify_detached(
                    sig.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    message.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(message.count),
                    key.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
            }
        }
    }

    public static func verify(signature: Ed25519Signature, message: [UInt8], publicKey: Ed25519PublicKey) -> Bool {
        message.withUnsafeBytes { verify(signature: signature, message: $0, publicKey: publicKey) }
    }
}

public struct Ed25519PublicKey: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let bytes: Bytes32

    public init(_ bytes: Bytes32) { self.bytes = bytes }

    public init?(rawRepresentation raw: some Collection<UInt8>) {
        guard let bytes = Bytes32(raw) else { return nil }
        self.bytes = bytes
    }

    public var rawRepresentation: [UInt8] { bytes.bytes }
    public var description: String { bytes.hex }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.bytes < rhs.bytes }

    public func encode(to writer: inout WireWriter) { bytes.encode(to: &writer) }
    public init(from reader: inout WireReader) throws(WireError) { bytes = try Bytes32(from: &reader) }
    public static var wireSizeMin: Int { 32 }
}

public struct Ed25519Signature: Hashable, Sendable, WireCodable, CustomStringConvertible {
    public let bytes64: Bytes64

    public init(_ bytes: Bytes64) { bytes64 = bytes }

    public init?(rawRepresentation raw: some Collection<UInt8>) {
        guard let bytes = Bytes64(raw) else { return nil }
        bytes64 = bytes
    }

    public var rawRepresentation: [UInt8] { bytes64.bytes }
    public var description: String { bytes64.hex }

    public func encode(to writer: inout WireWriter) { bytes64.encode(to: &writer) }
    public init(from reader: inout WireReader) throws(WireError) { bytes64 = try Bytes64(from: &reader) }
    public static var wireSizeMin: Int { 64 }
}

/// An Ed25519 signing key. The secret lives in memory this object owns, is never
/// copied into Swift arrays except by `seedRepresentation` (for saving to a key file),
/// and is wiped when the object is released.
public final class Ed25519PrivateKey: @unchecked Sendable {
    // Immutable after init, so sharing across threads is safe: libsodium only reads it.
    private let secret: UnsafeMutablePointer<UInt8>  // libsodium's 64-byte form: seed || public key
    public let publicKey: Ed25519PublicKey

    public static let seedByteCount = 32
    static let secretByteCount = 64

    /// A new random key from the operating system's CSPRNG (libsodium's randombytes).
    public convenience init() {
        precondition(Ed25519.ready, "libsodium failed to initialise")
        var seed = [UInt8](repeating: 0, count: Self.seedByteCount)
        randombytes_buf(&seed, seed.count)
        defer { sodium_memzero(&seed, seed.count) }
        // A 32-byte seed is always a valid key.
        self.init(validSeed: seed)
    }

    /// The key whose RFC 8032 secret is `seed` (32 bytes), or nil for another length.
    public convenience init?(seed: some Collection<UInt8>) {
        guard seed.count == Self.seedByteCount else { return nil }
        self.init(validSeed: Array(seed))
    }

    private init(validSeed seed: [UInt8]) {
        precondition(Ed25519.ready, "libsodium failed to initialise")
        let secret = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.secretByteCount)
        let publicBytes = Bytes32.filling { pk in
            _ = crypto_sign_seed_keypair(pk.baseAddress!.assumingMemoryBound(to: UInt8.self), secret, seed)
        }
        self.secret = secret
        publicKey = Ed25519PublicKey(publicBytes)
    }

    deinit {
        sodium_memzero(secret, Self.secretByteCount)
        secret.deallocate()
    }

    /// The 32-byte seed: the whole secret. Handle with care.
    public var seedRepresentation: [UInt8] { Array(UnsafeBufferPointer(start: secret, count: Self.seedByteCount)) }

    /// A plain RFC 8032 signature over `message`. Calisson code signs through
    /// `SigningDomain.sign`, which binds the purpose and the chain id.
    public func signature(for message: UnsafeRawBufferPointer) -> Ed25519Signature {
        Ed25519Signature(Bytes64.filling { out in
            _ = crypto_sign_detached(
                out.baseAddress!.assumingMemoryBound(to: UInt8.self), nil,
                message.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(message.count), secret)
        })
    }

    public func signature(for message: [UInt8]) -> Ed25519Signature {
        message.withUnsafeBytes { signature(for: $0) }
    }
}
