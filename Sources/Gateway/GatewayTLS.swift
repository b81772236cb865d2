import CalissonCrypto
import Hummingbird
import HummingbirdTLS
import NIOCore
import NIOSSL
import Wire

/// HTTPS on the gateway's listener: its certificate chain and key (PEM files), and,
/// optionally, the CA whose client certificates it accepts in place of an API key (a
/// client that presents one must present a valid one; one that presents none uses a key).
public struct GatewayTLS: Sendable {
    public var certificateFile: String
    public var keyFile: String
    public var clientCAFile: String?

    public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
    }

    /// A PEM file's bytes, read as every file a person gives (`InputFile`: a regular file of
    /// at most 1 MiB; a pipe given here made NIOSSL's own read wait for ever).
    static func read(_ path: String) throws -> [UInt8] {
        do { return try InputFile.read(path, byteCountMax: 1 << 20) } catch { throw GatewayError(error.reason) }  // the caller names the file
    }

    /// The server's TLS configuration (TLS 1.2 and up), each unreadable file named.
    func configuration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMBytes(try Self.read(certificateFile)) } catch { throw GatewayError("--tls-certificate \(certificateFile): \(error)") }
        guard !chain.isEmpty else { throw GatewayError("--tls-certificate \(certificateFile): no certificate in the file") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(bytes: try Self.read(keyFile), format: .pem) } catch { throw GatewayError("--tls-key \(keyFile): \(error)") }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        // A connection the gateway closes waits at most this for the client's close_notify
        // before its socket is closed (NIOSSL's default is 5 s): a socket held after its
        // close, clients that never send one (most browsers) included, and added to the
        // lingering close after an answer that ends a connection (ContinueOrClose).
        configuration.shutdownTimeout = .seconds(1)
        if let clientCAFile {
            let roots: [NIOSSLCertificate]
            do { roots = try NIOSSLCertificate.fromPEMBytes(try Self.read(clientCAFile)) } catch { throw GatewayError("--client-ca \(clientCAFile): \(error)") }
            guard !roots.isEmpty else { throw GatewayError("--client-ca \(clientCAFile): no certificate in the file") }
            configuration.trustRoots = .certificates(roots)
            configuration.certificateVerification = .optionalVerification
            // The consortium's certificates are Ed25519 (Docs/SECURITY.md): accept them too.
            configuration.verifySignatureAlgorithms = [
                .ed25519, .ecdsaSecp256R1Sha256, .ecdsaSecp384R1Sha384, .rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512,
                .rsaPkcs1Sha256, .rsaPkcs1Sha384, .rsaPkcs1Sha512,
            ]
        }
        return configuration
    }
}

/// The request context of the gateway's router: Hummingbird's, and the connection it came
/// on (to read a TLS client certificate).
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// SHA-256 (hex) of the DER of the client certificate the connection presented, checked
    /// against --client-ca by the TLS handshake; nil without TLS or without a certificate.
    func clientCertificateHash() async -> String? {
        let channel = self.channel
        let der = try? await channel.eventLoop.submit { () -> [UInt8]? in
            guard let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLHandler.self) else { return nil }
            return try handler.peerCertificate?.toDERBytes()
        }.get()
        return (der ?? nil).map { SHA256.hash($0).hex }
    }
}

extension APIKey {
    /// The key file's entry for a client certificate (PEM): the SHA-256 of its DER.
    public static func forCertificate(name: String, file: String, scopes: [Scope]) throws -> APIKey {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMBytes(try GatewayTLS.read(file)) } catch { throw GatewayError("\(file): \(error)") }
        guard let leaf = chain.first else { throw GatewayError("\(file): no certificate in the file") }
        return APIKey(name: name, certificateSha256: SHA256.hash(try leaf.toDERBytes()).hex, scopes: scopes)
    }
}
