import COpenSSL
import Wire

/// A partner's evidence key: 32 secret bytes from which the off-chain references that go on
/// chain (an attribution's evidence, a redemption's service reference) are committed as
/// HMAC-SHA-256, so that nobody without the key can test guesses (a ticket number, a card
/// number, a name and a date) against the chain (Docs/PRIVACY.md). Kept with the partner's
/// other keys (`evidence.key`, PEM, mode 0600).
public struct EvidenceKey: Sendable {
    public static let byteCount = 32
    public static let pemLabel = "CALISSON EVIDENCE KEY"

    /// What a commitment is of: the two never collide (each has its own prefix).
    public enum Purpose: String, Sendable {
        case evidence = "calisson/evidence/v1"
        case service = "calisson/service/v1"
    }

    private let bytes: [UInt8]

    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = Array(bytes)
    }

    /// A fresh key from the system's random source (libsodium's, through the signing key's).
    public static func generate() -> EvidenceKey { EvidenceKey(Ed25519PrivateKey().seedRepresentation)! }

    /// HMAC-SHA-256 under this key of the purpose's prefix, a zero byte and the text.
    public func commitment(of text: String, for purpose: Purpose) -> Bytes32 {
        Bytes32(Self.hmacSHA256(key: bytes, message: Array(purpose.rawValue.utf8) + [0] + Array(text.utf8)))!
    }

    /// HMAC-SHA-256 (RFC 2104), by OpenSSL.
    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length = 0
        let done = out.withUnsafeMutableBufferPointer { output in
            EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, key, key.count, message, message.count, output.baseAddress, output.count, &length)
        }
        precondition(done != nil && length == 32, "OpenSSL's HMAC-SHA-256 failed")
        return out
    }

    public var pem: String { PEM.armour(label: Self.pemLabel, der: bytes) }

    public static func read(at path: String) throws(KeyFileError) -> EvidenceKey {
        let text = try KeyFile.read(path, secret: true)
        let raw: [UInt8]
        do { raw = try PEM.dearmour(text, label: pemLabel) } catch { throw .notPEM(path: path, expectedLabel: pemLabel) }
        guard let key = EvidenceKey(raw) else { throw .notEvidenceKey(path: path) }
        return key
    }

    public func write(to path: String) throws(KeyFileError) {
        try KeyFile.write(pem, to: path, mode: 0o600, overwrite: false)
    }
}
