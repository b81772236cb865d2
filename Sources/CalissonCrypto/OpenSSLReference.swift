import COpenSSL
import Wire

/// OpenSSL's high-level (EVP) SHA-256 and Ed25519: the baselines the hot path is
/// measured against, and an independent implementation for cross-checking in tests.
public enum OpenSSLReference {
    /// "OpenSSL 3.0.19 27 Jan 2026", as the library linked at run time reports it.
    public static var version: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }

    /// SHA-256 through EVP_Digest, the one-call EVP interface.
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> SHA256Digest {
        SHA256Digest.filling { out in
            var length: UInt32 = 32
            let ok = EVP_Digest(bytes.baseAddress, bytes.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                &length, EVP_sha256(), nil)
            precondition(ok == 1 && length == 32, "EVP_Digest(SHA-256) failed")
        }
    }

    public static func sha256(_ bytes: [UInt8]) -> SHA256Digest {
        bytes.withUnsafeBytes { sha256($0) }
    }
}

/// Ed25519 through OpenSSL's EVP interface, reusing one EVP_MD_CTX across calls.
///
/// OpenSSL 3.0 keeps the previous key in a reused EVP_MD_CTX for Ed25519 unless the
/// context is reset before each init: it would then accept one key's signature under
/// another. `verify` therefore resets the context every time (tested in CryptoTests).
/// Not thread-safe: one instance per thread.
public final class OpenSSLEd25519 {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new: out of memory") }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    public func verify(signature: Ed25519Signature, message: [UInt8], publicKey: Ed25519PublicKey) -> Bool {
        let key = publicKey.rawRepresentation
        guard let pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, key, key.count) else { return false }
        defer { EVP_PKEY_free(pkey) }
        EVP_MD_CTX_reset(context)
        guard EVP_DigestVerifyInit(context, nil, nil, nil, pkey) == 1 else { return false }
        let sig = signature.rawRepresentation
        return message.withUnsafeBytes { m in
            EVP_DigestVerify(context, sig, sig.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count) == 1
        }
    }

    /// Verifies with a context created and freed for this one call: the way most EVP code
    /// is written, and slower than `verify` (which reuses one context).
    public static func verifyWithNewContext(signature: Ed25519Signature, message: [UInt8], publicKey: Ed25519PublicKey) -> Bool {
        OpenSSLEd25519().verify(signature: signature, message: message, publicKey: publicKey)
    }

    /// Signs with the key whose seed is `seed` (32 bytes); nil if OpenSSL refuses it.
    public func sign(message: [UInt8], seed: [UInt8]) -> Ed25519Signature? {
        guard let pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, seed, seed.count) else { return nil }
        defer { EVP_PKEY_free(pkey) }
        EVP_MD_CTX_reset(context)
        guard EVP_DigestSignInit(context, nil, nil, nil, pkey) == 1 else { return nil }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = signature.count
        let ok = message.withUnsafeBytes { m in
            EVP_DigestSign(context, &signature, &length, m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count)
        }
        guard ok == 1, length == 64 else { return nil }
        return Ed25519Signature(rawRepresentation: signature)
    }
}
