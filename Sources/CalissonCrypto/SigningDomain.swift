import Wire

/// What a signature is for. Each purpose has its own byte in the signed digest, so a
/// signature made for one purpose never verifies as another. New purposes are added
/// here, in one registry, so that two modules cannot pick the same byte.
public struct SignaturePurpose: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let transaction = SignaturePurpose(rawValue: 1)
    public static let prePrepare = SignaturePurpose(rawValue: 2)
    public static let prepare = SignaturePurpose(rawValue: 3)
    public static let commit = SignaturePurpose(rawValue: 4)
    public static let checkpoint = SignaturePurpose(rawValue: 5)
    public static let viewChange = SignaturePurpose(rawValue: 6)
    public static let newView = SignaturePurpose(rawValue: 7)
    /// A node proving its identity at link set-up (bound to the TLS session).
    public static let peerHandshake = SignaturePurpose(rawValue: 8)

    public var description: String { "purpose \(rawValue)" }
}

/// The domain a signature lives in: one chain, one purpose.
///
/// The signed message is a 32-byte digest,
/// `TaggedHash("calisson/signature/v1", purpose || chainId (length-prefixed) || payload)`,
/// and Ed25519 signs that digest. Signing a fixed-size digest keeps verification cost
/// independent of payload size and gives the verification cache its key.
public struct SigningDomain: Hashable, Sendable {
    public static let tag = "calisson/signature/v1"
    /// Chain ids are short names such as "amp-nudge-mainnet".
    public static let chainIdByteCountMax = 64

    public let chainId: String
    public let purpose: SignaturePurpose

    private static let hasher = TaggedHasher(tag: tag)

    /// Fails (returns nil) when the chain id is empty or longer than the maximum.
    public init?(chainId: String, purpose: SignaturePurpose) {
        guard !chainId.isEmpty, chainId.utf8.count <= Self.chainIdByteCountMax else { return nil }
        self.chainId = chainId
        self.purpose = purpose
    }

    /// The digest that is signed for `payload` in this domain.
    public func digest(for payload: [UInt8]) -> SHA256Digest {
        var writer = WireWriter(reservingCapacity: 1 + 4 + chainId.utf8.count)
        writer.write(purpose.rawValue)
        writer.writeString(chainId)
        var hasher = Self.hasher.hasher()
        hasher.update(writer.bytes)
        hasher.update(payload)
        return hasher.finalize()
    }

    public func sign(_ payload: [UInt8], with key: Ed25519PrivateKey) -> Ed25519Signature {
        key.signature(for: digest(for: payload))
    }

    /// The check to hand to a `BatchVerifier` (or to `verify()`) for this payload.
    public func check(_ payload: [UInt8], signature: Ed25519Signature, publicKey: Ed25519PublicKey) -> SignatureCheck {
        SignatureCheck(publicKey: publicKey, digest: digest(for: payload), signature: signature)
    }

    public func verify(_ payload: [UInt8], signature: Ed25519Signature, publicKey: Ed25519PublicKey) -> Bool {
        check(payload, signature: signature, publicKey: publicKey).verify()
    }
}

extension Ed25519PrivateKey {
    func signature(for digest: SHA256Digest) -> Ed25519Signature {
        digest.withUnsafeBytes { signature(for: $0) }
    }
}

/// One signature to check: Ed25519 over `digest` (a `SigningDomain` digest) by `publicKey`.
/// Also the verification cache's key: all three parts must match for a hit.
public struct SignatureCheck: Hashable, Sendable {
    public let publicKey: Ed25519PublicKey
    public let digest: SHA256Digest
    public let signature: Ed25519Signature

    public init(publicKey: Ed25519PublicKey, digest: SHA256Digest, signature: Ed25519Signature) {
        self.publicKey = publicKey
        self.digest = digest
        self.signature = signature
    }

    /// Verifies now, on this thread, without the cache.
    public func verify() -> Bool {
        digest.withUnsafeBytes { Ed25519.verify(signature: signature, message: $0, publicKey: publicKey) }
    }

    public func hash(into hasher: inout Hasher) {
        // The digest is already uniformly distributed; the other fields only confirm.
        hasher.combine(digest)
    }
}
