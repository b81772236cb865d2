// Fuzz target: the TLS hello path. An input is what a stranger sends first to a node's
// peer port: it is fed, cut into reads, to a server-side TLS session configured as a
// node's (TLS 1.3 only, Ed25519 certificates, client certificates required and checked
// against the consortium CA). The handshake must fail with an error or wait for more
// bytes, never crash, and never complete: no input forges a client certificate.
import CalissonCrypto
import FuzzSupport
@testable import Transport

enum Fixture {
    static let caKey = Metropole.key("ca")
    static let ca = try! CertificateAuthority.makeRoot(name: "Calisson CA", key: caKey)
    static let context: TLSContext = {
        let key = Metropole.key("tls rtm")
        let certificate = try! CertificateAuthority.issue(commonName: "rtm", subjectKey: key.publicKey, ca: ca, caKey: caKey, serial: 2)
        return try! TLSContext(role: .server, identity: TLSIdentity(certificate: certificate, key: key), trustedCA: ca, mutual: true)
    }()

    /// A real client's first flight (its ClientHello), and the same cut differently.
    static func seeds() -> [[UInt8]] {
        let key = Metropole.key("tls tri")
        let certificate = try! CertificateAuthority.issue(commonName: "tri", subjectKey: key.publicKey, ca: ca, caKey: caKey, serial: 3)
        let client = try! TLSContext(role: .client, identity: TLSIdentity(certificate: certificate, key: key), trustedCA: ca, mutual: true)
        let session = try! TLSSession(context: client, role: .client)
        try! session.start()
        let hello = session.takeOutgoing()
        return [[0] + hello, [16] + hello, [255] + hello]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Fixture.seeds)
    _ = Fixture.context
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let first = input.first, let session = try? TLSSession(context: Fixture.context, role: .server) else { return 0 }
    let read = Int(first) * 8 + 1
    var offset = 1
    while offset < input.count {
        let end = min(input.count, offset + read)
        let chunk = Array(input[offset..<end])
        offset = end
        do {
            _ = try chunk.withUnsafeBytes { bytes throws(TLSSession.Failure) in try session.receive(bytes) }
        } catch {
            return 0
        }
        _ = session.takeOutgoing()
        if session.isHandshakeDone { fatalError("a TLS handshake completed with bytes from nowhere") }
    }
    return 0
}
