// HTTPS on the gateway with client certificates, tried with Python's ssl module (OpenSSL)
// as the client: a key over TLS; a listed client certificate in place of a key; an
// unlisted one refused (401); one from another CA refused at the handshake; plain HTTP on
// the TLS port answered nothing; /metrics behind a key over HTTPS; plain HTTP refused off
// loopback, HTTPS allowed there.
import CalissonTestKit
import CalissonCrypto
import Foundation
import Gateway
import Ledger
import Testing
import Transport

@Suite(.serialized, .onOwnThreads) struct GatewayTLSTests {
    static let client = """
        import ssl, sys, urllib.request, urllib.error
        url, cafile, cert, key, token = sys.argv[1:6]
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False
        if cert != "-":
            context.load_cert_chain(cert, key)
        request = urllib.request.Request(url)
        if token != "-":
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, context=context, timeout=20) as response:
                print(response.status)
        except urllib.error.HTTPError as error:
            print(error.code)
        except Exception as error:
            print("ERROR", type(error).__name__, error)
        """

    @Test func httpsWithKeysAndClientCertificates() async throws {
        guard GatewaySchemaTests.venvTool("python") != nil else { return }
        let cluster = try TestCluster(count: 1)
        let node = try cluster.startNodes()[0]
        defer { node.stop() }
        try await GatewayTests.blocking {
            var nonce: UInt64 = 0
            cluster.advance([node], to: 12, issuers: 1, nonce: &nonce)
        }
        // A CA for the gateway and its clients, a client it lists, one it does not, and a
        // client of another CA.
        let directory = cluster.directory
        func write(_ text: String, _ name: String) throws -> String {
            let path = "\(directory)/\(name)"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let caKey = Ed25519PrivateKey(), otherKey = Ed25519PrivateKey()
        let ca = try CertificateAuthority.makeRoot(name: "gateway clients CA", key: caKey)
        let other = try CertificateAuthority.makeRoot(name: "another CA", key: otherKey)
        func leaf(_ name: String, ca: Certificate, caKey: Ed25519PrivateKey, serial: UInt64) throws -> (certificate: String, key: String) {
            let key = Ed25519PrivateKey()
            let certificate = try CertificateAuthority.issue(commonName: name, subjectKey: key.publicKey, ca: ca, caKey: caKey, serial: serial)
            return (try write(certificate.pem, "\(name).crt"), try write(KeyFile.pem(for: key), "\(name).key"))
        }
        let caFile = try write(ca.pem, "clients-ca.crt")
        let server = try leaf("gateway", ca: ca, caKey: caKey, serial: 2)
        let listed = try leaf("ticketing", ca: ca, caKey: caKey, serial: 3)
        let unlisted = try leaf("stranger", ca: ca, caKey: caKey, serial: 4)
        let foreign = try leaf("foreigner", ca: other, caKey: otherKey, serial: 5)

        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let byCertificate = try APIKey.forCertificate(name: "ticketing", file: listed.certificate, scopes: [.read])
        var configuration = GatewayConfiguration(
            pool: NodePool(nodes: [NodeAddress(host: "127.0.0.1", port: node.transport.clientPort)], ca: cluster.ca, genesis: cluster.genesis, lagMax: 32),
            keys: [reader.entry, byCertificate])
        configuration.port = 0
        configuration.tls = GatewayTLS(certificateFile: server.certificate, keyFile: server.key, clientCAFile: caFile)
        let gateway = try GatewayServer(configuration: configuration)
        let serving = Task(executorPreference: GatewayTests.executor) { try await gateway.run() }
        defer { serving.cancel() }
        #expect(try await GatewayTests.until(120) { gateway.port != nil })
        let port = try #require(gateway.port)
        _ = try await GatewayTests.until(30) { configuration.pool.newestCertifiedHeight > 0 }

        func ask(
            _ scheme: String = "https", _ path: String = "/v1/supply", certificate: (certificate: String, key: String)? = nil, token: String? = nil
        ) async throws -> String {
            let ran = try await GatewayTests.blocking {
                try run(GatewayPythonTests.python, [
                    "-c", Self.client, "\(scheme)://127.0.0.1:\(port)\(path)", caFile, certificate?.certificate ?? "-", certificate?.key ?? "-",
                    token ?? "-",
                ], timeout: 60)
            }
            return ran.output.trimmingCharacters(in: .whitespacesAndNewlines) + ran.errors.suffix(300)
        }
        #expect(try await ask(token: reader.secret) == "200")
        #expect(try await ask(certificate: listed) == "200")
        #expect(try await ask(certificate: unlisted) == "401")
        #expect(try await ask() == "401")
        #expect(try await ask(certificate: foreign).hasPrefix("ERROR"))
        #expect(try await ask("http", token: reader.secret).hasPrefix("ERROR"))
        // Over HTTPS (any address) /metrics needs a key; /health stays open.
        #expect(try await ask("https", "/metrics") == "401")
        #expect(try await ask("https", "/metrics", token: reader.secret) == "200")
        #expect(try await ask("https", "/health") == "200")

        // Off loopback: refused in plain HTTP, allowed with HTTPS (constructed, not bound).
        var open = configuration
        open.host = "0.0.0.0"
        open.tls = nil
        #expect(throws: GatewayError.self) { try GatewayServer(configuration: open) }
        open.tls = configuration.tls
        #expect(throws: Never.self) { try GatewayServer(configuration: open) }
        var broken = configuration
        broken.tls = GatewayTLS(certificateFile: "\(directory)/missing.crt", keyFile: server.key)
        #expect(throws: GatewayError.self) { try GatewayServer(configuration: broken) }
    }
}
