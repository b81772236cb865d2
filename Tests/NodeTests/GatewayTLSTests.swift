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

    /// A POST announcing a terabyte, sent on at 10 KB/s after its refusal: the status line,
    /// then the seconds at which the answer came, the stream ended and a send was refused
    /// (None: not within 10 s).
    static let sendingOn = """
        import socket, ssl, sys, time
        port, cafile, token = sys.argv[1:4]
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False
        connection = context.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=20))
        connection.sendall(("POST /v1/transactions HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer " + token
            + "\\r\\nContent-Type: application/json\\r\\nContent-Length: 1000000000000\\r\\n\\r\\n").encode())
        connection.setblocking(False)
        began = time.monotonic()
        answer, answered, ended, closed = b"", None, None, None
        while time.monotonic() - began < 10 and closed is None:
            try:
                data = connection.recv(16384)
                if data:
                    answered = answered or time.monotonic() - began
                    answer += data
                elif ended is None:
                    ended = time.monotonic() - began
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                closed = time.monotonic() - began
                break
            try:
                connection.send(b"a" * 1000)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                closed = time.monotonic() - began
            time.sleep(0.1)
        print(answer.split(b"\\r\\n")[0].decode(), answered, ended, closed)
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

        // A refusal that ends the connection (a POST without the scope, its announced body over
        // the bounds: 403, `Connection: close`) ends it over TLS too, the client sending on:
        // the whole answer read, then the end of the stream, then the connection closed after
        // the lingering close's 2 s and TLS's wait for the client's close_notify, 1 s
        // (NIOSSL's default of 5 s held it 7 s).
        let sentOn = try await GatewayTests.blocking {
            try run(GatewayPythonTests.python, ["-c", Self.sendingOn, "\(port)", caFile, reader.secret], timeout: 60)
        }
        let seen = sentOn.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
        let times = seen.count == 6 ? seen[3...].map { Double($0) } : []
        // Answered, the stream ended within a second of it, closed within 3 s of it (2 s of
        // lingering and 1 s for close_notify) and 3 s of margin for a loaded machine.
        #expect(sentOn.output.hasPrefix("HTTP/1.1 403") && times.count == 3 && times.allSatisfy { $0 != nil }
                && times[1]! - times[0]! < 1 && times[2]! - times[0]! < 6,
                "\(sentOn.output) \(sentOn.errors.suffix(300))")

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
