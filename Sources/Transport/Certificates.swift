import COpenSSL
import CalissonCrypto
import Foundation
import Wire

/// An OpenSSL failure, with OpenSSL's own error queue in words.
public struct OpenSSLError: Error, Equatable, Sendable, CustomStringConvertible {
    public let what: String
    public let detail: String

    init(_ what: String) {
        self.what = what
        var details: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            details.append(string(buffer))
        }
        detail = details.joined(separator: "; ")
    }

    public var description: String { detail.isEmpty ? what : "\(what): \(detail)" }
}

/// Why a certificate file could not be used, naming the file.
public struct CertificateFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// An X.509 certificate in PEM, with what Calisson reads from it.
public struct Certificate: Hashable, Sendable {
    public let pem: String
    /// The subject's common name: a partner id (or the CA's name).
    public let commonName: String
    /// SHA-256 of the subject public key info (DER): what the validator registry lists.
    public let publicKeyHash: SHA256Digest
    public let serial: UInt64

    /// Certificates are a few kilobytes; a file past this is not one.
    public static let fileByteCountMax = 1 << 20

    /// The certificate in a PEM file; the error names the file and what is wrong with it.
    public init(file path: String) throws(CertificateFileError) {
        let bytes: [UInt8]
        do { bytes = try InputFile.read(path, byteCountMax: Self.fileByteCountMax) } catch { throw CertificateFileError(path: path, reason: error.reason) }
        do { try self.init(pem: String(decoding: bytes, as: UTF8.self)) } catch {
            throw CertificateFileError(path: path, reason: "not a PEM certificate (\(error))")
        }
    }

    public init(pem: String) throws(OpenSSLError) {
        let x509 = try Self.parse(pem)
        defer { X509_free(x509) }
        self.pem = pem
        commonName = Self.commonName(of: x509) ?? ""
        publicKeyHash = try Self.publicKeyHash(of: x509)
        serial = Self.serial(of: x509)
    }

    /// A certificate's serial number as Calisson names it (revocations list these): the
    /// number itself when it fits in 64 bits, as the consortium CA's own certificates do
    /// (`CertificateAuthority.issue`). A serial that does not (the 20 random bytes other CA
    /// tools write, or a negative one) is named by 63 bits of the SHA-256 of its bytes with
    /// the top bit set; `ASN1_INTEGER_get` would answer -1 for it, which no longer traps here.
    static func serial(of x509: OpaquePointer) -> UInt64 {
        guard let asn1 = X509_get0_serialNumber(x509) else { return 0 }
        var value: UInt64 = 0
        if ASN1_INTEGER_get_uint64(&value, asn1) == 1 { return value }
        let count = Int(clamping: ASN1_STRING_length(asn1))
        guard count > 0, let data = ASN1_STRING_get0_data(asn1) else { return 1 << 63 }
        let digest = SHA256.hash(Array(UnsafeBufferPointer(start: data, count: count)) + [asn1.pointee.type == V_ASN1_NEG_INTEGER ? 1 : 0])
        return digest.bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } | 1 << 63
    }

    static func parse(_ pem: String) throws(OpenSSLError) -> OpaquePointer {
        guard let x509 = readPEM(pem, { PEM_read_bio_X509($0, nil, nil, nil) }) else { throw OpenSSLError("not a PEM certificate") }
        return x509
    }

    static func commonName(of x509: OpaquePointer) -> String? {
        guard let name = X509_get_subject_name(x509) else { return nil }
        var buffer = [CChar](repeating: 0, count: 256)
        let length = X509_NAME_get_text_by_NID(name, NID_commonName, &buffer, Int32(buffer.count))
        return length > 0 ? string(buffer) : nil
    }

    static func publicKeyHash(of x509: OpaquePointer) throws(OpenSSLError) -> SHA256Digest {
        guard let key = X509_get0_pubkey(x509) else { throw OpenSSLError("certificate without a public key") }
        return try publicKeyHash(ofKey: key)
    }

    static func publicKeyHash(ofKey key: OpaquePointer) throws(OpenSSLError) -> SHA256Digest {
        var der: UnsafeMutablePointer<UInt8>?
        let length = i2d_PUBKEY(key, &der)
        guard length > 0, let der else { throw OpenSSLError("cannot encode the public key") }
        defer { calisson_openssl_free(der) }
        return SHA256.hash(Array(UnsafeBufferPointer(start: der, count: Int(length))))
    }

    /// The SHA-256 of the SPKI of an Ed25519 key: what a certificate for it will carry.
    public static func publicKeyHash(of key: Ed25519PublicKey) throws(OpenSSLError) -> SHA256Digest {
        guard let pkey = key.rawRepresentation.withUnsafeBufferPointer({ EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32) })
        else { throw OpenSSLError("bad Ed25519 public key") }
        defer { EVP_PKEY_free(pkey) }
        return try publicKeyHash(ofKey: pkey)
    }
}

/// Issues the consortium's certificates: the CA (held by the Métropole) and each
/// partner's TLS certificate, Ed25519 throughout, with the partner id as common name.
public enum CertificateAuthority {
    /// A self-signed CA certificate, valid from `notBefore` to `notAfter` seconds from now.
    public static func makeRoot(name: String, key: Ed25519PrivateKey, serial: UInt64 = 1, notBefore: Int = -60, notAfter: Int = 10 * 365 * 86_400)
        throws(OpenSSLError) -> Certificate
    {
        try issue(commonName: name, subjectKey: key.publicKey, isCA: true, issuer: nil, issuerKey: key, serial: serial, notBefore: notBefore, notAfter: notAfter)
    }

    /// A leaf certificate for `commonName` (a partner id) and `subjectKey`, signed by the CA.
    public static func issue(
        commonName: String, subjectKey: Ed25519PublicKey, ca: Certificate, caKey: Ed25519PrivateKey, serial: UInt64,
        notBefore: Int = -60, notAfter: Int = 365 * 86_400
    ) throws(OpenSSLError) -> Certificate {
        try issue(commonName: commonName, subjectKey: subjectKey, isCA: false, issuer: ca, issuerKey: caKey, serial: serial, notBefore: notBefore, notAfter: notAfter)
    }

    static func privateKey(_ key: Ed25519PrivateKey) throws(OpenSSLError) -> OpaquePointer {
        let seed = key.seedRepresentation
        guard let pkey = seed.withUnsafeBufferPointer({ EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32) })
        else { throw OpenSSLError("cannot load the Ed25519 key") }
        return pkey
    }

    private static func issue(
        commonName: String, subjectKey: Ed25519PublicKey, isCA: Bool, issuer: Certificate?, issuerKey: Ed25519PrivateKey,
        serial: UInt64, notBefore: Int, notAfter: Int
    ) throws(OpenSSLError) -> Certificate {
        guard let x509 = X509_new() else { throw OpenSSLError("X509_new") }
        defer { X509_free(x509) }
        guard let subjectPKey = subjectKey.rawRepresentation.withUnsafeBufferPointer({ EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32) })
        else { throw OpenSSLError("bad subject key") }
        defer { EVP_PKEY_free(subjectPKey) }
        let signingKey = try privateKey(issuerKey)
        defer { EVP_PKEY_free(signingKey) }

        X509_set_version(x509, 2)
        ASN1_INTEGER_set_uint64(X509_get_serialNumber(x509), serial)
        X509_gmtime_adj(X509_getm_notBefore(x509), notBefore)
        X509_gmtime_adj(X509_getm_notAfter(x509), notAfter)
        X509_set_pubkey(x509, subjectPKey)
        let name = X509_get_subject_name(x509)
        guard X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, commonName, -1, -1, 0) == 1 else { throw OpenSSLError("bad common name") }
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, "Calisson consortium", -1, -1, 0)

        var issuerX509: OpaquePointer?
        if let issuer {
            issuerX509 = try Certificate.parse(issuer.pem)
            X509_set_issuer_name(x509, X509_get_subject_name(issuerX509))
        } else {
            X509_set_issuer_name(x509, name)
        }
        defer { if let issuerX509 { X509_free(issuerX509) } }

        var context = X509V3_CTX()
        calisson_x509v3_set_ctx_nodb(&context)
        X509V3_set_ctx(&context, issuerX509 ?? x509, x509, nil, nil, 0)
        let extensions: [(Int32, String)] = isCA
            ? [(NID_basic_constraints, "critical,CA:TRUE"), (NID_key_usage, "critical,keyCertSign,cRLSign"), (NID_subject_key_identifier, "hash")]
            : [(NID_basic_constraints, "critical,CA:FALSE"), (NID_key_usage, "critical,digitalSignature"),
               (NID_ext_key_usage, "serverAuth,clientAuth"), (NID_subject_key_identifier, "hash"), (NID_authority_key_identifier, "keyid")]
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else { throw OpenSSLError("extension \(value)") }
            X509_add_ext(x509, ext, -1)
            X509_EXTENSION_free(ext)
        }
        guard X509_sign(x509, signingKey, nil) > 0 else { throw OpenSSLError("X509_sign") }

        return try Certificate(pem: try pemText("PEM_write_bio_X509") { PEM_write_bio_X509($0, x509) })
    }
}

/// A certificate signing request (PKCS#10, PEM): a partner's TLS public key and id,
/// signed with that key, for the consortium CA to certify (`calisson-node ca sign`).
public struct CertificateRequest: Sendable, Equatable {
    public let pem: String
    public let commonName: String
    public let publicKey: Ed25519PublicKey

    /// A request for `commonName`, signed with `key` (the TLS key to certify).
    public static func make(commonName: String, key: Ed25519PrivateKey) throws(OpenSSLError) -> CertificateRequest {
        guard let request = X509_REQ_new() else { throw OpenSSLError("X509_REQ_new") }
        defer { X509_REQ_free(request) }
        let pkey = try CertificateAuthority.privateKey(key)
        defer { EVP_PKEY_free(pkey) }
        X509_REQ_set_version(request, 0)
        let name = X509_REQ_get_subject_name(request)
        guard X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, commonName, -1, -1, 0) == 1 else { throw OpenSSLError("bad common name") }
        guard X509_REQ_set_pubkey(request, pkey) == 1, X509_REQ_sign(request, pkey, nil) > 0 else { throw OpenSSLError("X509_REQ_sign") }
        return try CertificateRequest(pem: try pemText("PEM_write_bio_X509_REQ") { PEM_write_bio_X509_REQ($0, request) })
    }

    /// Parses a request and checks its self-signature (proof the requester holds the key).
    public init(pem: String) throws(OpenSSLError) {
        guard let request = readPEM(pem, { PEM_read_bio_X509_REQ($0, nil, nil, nil) }) else { throw OpenSSLError("not a PEM certificate request") }
        defer { X509_REQ_free(request) }
        guard let pkey = X509_REQ_get0_pubkey(request), X509_REQ_verify(request, pkey) == 1 else {
            throw OpenSSLError("the request's signature does not verify")
        }
        var raw = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_get_raw_public_key(pkey, &raw, &length) == 1, length == 32, let key = Ed25519PublicKey(rawRepresentation: raw) else {
            throw OpenSSLError("the request's key is not Ed25519")
        }
        var buffer = [CChar](repeating: 0, count: 256)
        let nameLength = X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(request), NID_commonName, &buffer, Int32(buffer.count))
        guard nameLength > 0 else { throw OpenSSLError("the request has no common name") }
        self.pem = pem
        commonName = string(buffer)
        publicKey = key
    }
}

/// What an OpenSSL PEM reader makes of `text`, read through a memory BIO. Such a BIO reads
/// its bytes in place, so they must live until the read ends: a String handed straight to
/// `BIO_new_mem_buf` is a temporary C string freed as that call returns, and the read then
/// ran over freed memory (under load another thread reused it: "bad end line").
func readPEM(_ text: String, _ read: (OpaquePointer?) -> OpaquePointer?) -> OpaquePointer? {
    Array(text.utf8).withUnsafeBytes { bytes in
        guard let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(clamping: bytes.count)) else { return nil }
        defer { BIO_free(bio) }
        return read(bio)
    }
}

/// What an OpenSSL PEM writer produces, as text.
func pemText(_ what: String, _ write: (OpaquePointer?) -> Int32) throws(OpenSSLError) -> String {
    guard let bio = BIO_new(BIO_s_mem()) else { throw OpenSSLError("BIO_new") }
    defer { BIO_free(bio) }
    guard write(bio) == 1 else { throw OpenSSLError(what) }
    var data: UnsafeMutablePointer<CChar>?
    let length = calisson_bio_mem_data(bio, &data)
    guard let data, length > 0 else { throw OpenSSLError("PEM output") }
    return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
}
