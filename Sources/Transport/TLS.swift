import COpenSSL
import CalissonCrypto
import Foundation

func string(_ buffer: [CChar]) -> String { buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }

/// OpenSSL's version string, logged at start and with each connection.
public var openSSLVersion: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }

/// This node's TLS identity: its certificate (signed by the consortium CA) and key.
public struct TLSIdentity: Sendable {
    public let certificate: Certificate
    public let key: Ed25519PrivateKey

    public init(certificate: Certificate, key: Ed25519PrivateKey) {
        self.certificate = certificate
        self.key = key
    }
}

/// An OpenSSL context: TLS 1.3 only, our certificate and key, the consortium CA as the
/// only trust anchor. `mutual` requires and verifies the peer's certificate (validator
/// links); otherwise a server does not ask clients for one (the client port), and a
/// client always verifies the server.
public final class TLSContext: @unchecked Sendable {
    // Immutable after init; OpenSSL allows SSL_new from any thread on a configured SSL_CTX.
    let context: OpaquePointer

    public enum Role: Sendable { case server, client }

    public init(role: Role, identity: TLSIdentity?, trustedCA: Certificate, mutual: Bool) throws(OpenSSLError) {
        guard let context = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw OpenSSLError("SSL_CTX_new")
        }
        self.context = context
        guard calisson_ssl_ctx_set_tls13_only(context) == 1 else { throw OpenSSLError("TLS 1.3 only") }
        _ = calisson_ssl_ctx_set_session_cache_off(context)
        if role == .server { _ = calisson_ssl_ctx_set_num_tickets_zero(context) }
        if let identity {
            let x509 = try Certificate.parse(identity.certificate.pem)
            defer { X509_free(x509) }
            let key = try CertificateAuthority.privateKey(identity.key)
            defer { EVP_PKEY_free(key) }
            guard SSL_CTX_use_certificate(context, x509) == 1, SSL_CTX_use_PrivateKey(context, key) == 1,
                SSL_CTX_check_private_key(context) == 1
            else { throw OpenSSLError("certificate and key do not match") }
        }
        let ca = try Certificate.parse(trustedCA.pem)
        defer { X509_free(ca) }
        guard X509_STORE_add_cert(SSL_CTX_get_cert_store(context), ca) == 1 else { throw OpenSSLError("cannot trust the CA") }
        let verify = role == .client || mutual ? SSL_VERIFY_PEER | (role == .server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0) : SSL_VERIFY_NONE
        SSL_CTX_set_verify(context, verify, nil)
    }

    deinit { SSL_CTX_free(context) }
}

/// What a finished handshake tells about the peer.
public struct PeerCertificate: Sendable, Equatable {
    public let commonName: String
    public let publicKeyHash: SHA256Digest
    public let serial: UInt64
}

/// One TLS connection driven through memory BIOs: ciphertext in from the socket,
/// plaintext out to the framing, and the reverse. No I/O of its own; loop thread only.
final class TLSSession {
    private let ssl: OpaquePointer
    private let incoming: OpaquePointer  // network → OpenSSL
    private let outgoing: OpaquePointer  // OpenSSL → network
    private(set) var isHandshakeDone = false
    private var readBuffer = [UInt8](repeating: 0, count: 16 * 1024)

    enum Failure: Error, Equatable, CustomStringConvertible {
        case handshake(String)
        case protocolError(String)
        case closedByPeer

        var description: String {
            switch self {
            case let .handshake(reason): return "TLS handshake failed: \(reason)"
            case let .protocolError(reason): return "TLS error: \(reason)"
            case .closedByPeer: return "TLS closed by the peer"
            }
        }
    }

    init(context: TLSContext, role: TLSContext.Role) throws(OpenSSLError) {
        guard let ssl = SSL_new(context.context), let incoming = BIO_new(BIO_s_mem()), let outgoing = BIO_new(BIO_s_mem()) else {
            throw OpenSSLError("SSL_new")
        }
        self.ssl = ssl
        self.incoming = incoming
        self.outgoing = outgoing
        SSL_set_bio(ssl, incoming, outgoing)  // the SSL object owns both BIOs now
        if role == .server { SSL_set_accept_state(ssl) } else { SSL_set_connect_state(ssl) }
    }

    deinit { SSL_free(ssl) }

    /// Starts the handshake (the client's first flight); call `takeOutgoing` after.
    func start() throws(Failure) { try advanceHandshake() }

    /// Feeds ciphertext from the network; returns the plaintext it completes.
    /// The peer closed the session after the plaintext `receive` last returned.
    private(set) var peerClosed = false

    func receive(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> [UInt8] {
        var offset = 0
        while offset < bytes.count {
            let written = BIO_write(incoming, bytes.baseAddress! + offset, Int32(bytes.count - offset))
            guard written > 0 else { throw .protocolError("BIO_write") }
            offset += Int(written)
        }
        if !isHandshakeDone { try advanceHandshake() }
        guard isHandshakeDone else { return [] }
        var plaintext: [UInt8] = []
        while true {
            // OpenSSL keeps one error list per thread, and `SSL_get_error` reads it first:
            // an entry another session left on this loop's thread (a certificate refused, a
            // shutdown after a fatal error) made a healthy link's next read fail. Each
            // call starts from an empty list.
            ERR_clear_error()
            let count = readBuffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if count > 0 {
                plaintext += readBuffer[0..<Int(count)]
                continue
            }
            let error = SSL_get_error(ssl, count)
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { break }
            if error == SSL_ERROR_ZERO_RETURN {
                // The peer's close_notify: what it sent before (a refusal, say) is still read.
                guard !plaintext.isEmpty else { throw .closedByPeer }
                peerClosed = true
                break
            }
            failed = true
            throw .protocolError(OpenSSLError("SSL_read").description)
        }
        return plaintext
    }

    /// A fatal error happened: no close_notify is sent (OpenSSL refuses it, and queues an
    /// error for the thread's next caller).
    private var failed = false

    private func advanceHandshake() throws(Failure) {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            isHandshakeDone = true
            return
        }
        let error = SSL_get_error(ssl, result)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return }
        failed = true
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK {
            ERR_clear_error()  // left queued, it failed the next healthy read on this thread
            throw .handshake("certificate refused: \(String(cString: X509_verify_cert_error_string(verify)))")
        }
        throw .handshake(OpenSSLError("SSL_do_handshake").description)
    }

    /// Encrypts `plaintext` for the peer (after the handshake).
    func send(_ plaintext: [UInt8]) throws(Failure) {
        var offset = 0
        while offset < plaintext.count {
            ERR_clear_error()
            let written = plaintext.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + offset, Int32(plaintext.count - offset)) }
            guard written > 0 else {
                failed = true
                throw .protocolError(OpenSSLError("SSL_write").description)
            }
            offset += Int(written)
        }
    }

    /// Bytes of ciphertext waiting to go to the network.
    var outgoingCount: Int { Int(BIO_ctrl_pending(outgoing)) }

    /// Moves up to `buffer.count` bytes of waiting ciphertext into `buffer`; how many.
    func readOutgoing(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress, !buffer.isEmpty else { return 0 }
        return max(0, Int(BIO_read(outgoing, base, Int32(clamping: buffer.count))))
    }

    /// Ciphertext waiting to go to the network.
    func takeOutgoing() -> [UInt8] {
        let pending = Int(BIO_ctrl_pending(outgoing))
        guard pending > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: pending)
        let read = bytes.withUnsafeMutableBytes { BIO_read(outgoing, $0.baseAddress, Int32(pending)) }
        return read > 0 ? Array(bytes[0..<Int(read)]) : []
    }

    /// Sends a close_notify (to be flushed with `takeOutgoing`); none after a fatal error
    /// or before the handshake ended. Leaves the thread's error list empty either way.
    func shutdown() {
        defer { ERR_clear_error() }
        guard !failed, isHandshakeDone else { return }
        ERR_clear_error()
        SSL_shutdown(ssl)
    }

    var peerCertificate: PeerCertificate? {
        guard let x509 = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(x509) }
        guard let hash = try? Certificate.publicKeyHash(of: x509) else { return nil }
        return PeerCertificate(
            commonName: Certificate.commonName(of: x509) ?? "", publicKeyHash: hash,
            serial: Certificate.serial(of: x509))
    }

    var negotiated: String {
        let version = String(cString: SSL_get_version(ssl))
        let cipher = SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "?"
        return "\(version) \(cipher)"
    }
}
