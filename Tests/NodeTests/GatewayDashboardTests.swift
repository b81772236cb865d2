// The dashboard as its public sees it: a gateway in front of a live cluster whose first
// ledger epoch closed (attributions, and redemptions at another partner, so there is
// clearing to show), every page loaded in headless Chromium (Tests/Dashboard/
// check_dashboard.py, Selenium with axe-core: no WCAG 2.1 A or AA violation, under 100 KB,
// nothing loaded from elsewhere, figures equal to `calisson --genesis` answers), and the
// public side's own rules over HTTP: no key needed, open data and proofs well formed, bad
// paths answered 404, a flood from one address limited.
import CalissonCrypto
import CalissonTestKit
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
@testable import Gateway
import Glibc
import HTTPTypes
import HummingbirdCore
import NIOCore
import Ledger
import LightClient
import Node
import Settlement
import Storage
import Testing
import Transport
import Wire

@Suite(.serialized, .onOwnThreads) struct GatewayDashboardTests {
    /// A cluster of two partners past the close of epoch 0 (50 blocks): p0 sponsors the
    /// programme, a citizen spends at p1, so p0 owes p1. Without the idle fill: each idle
    /// spell of half a second would add up to 7 heights, and the dozen transactions must
    /// all land in epoch 0 however slow the machine.
    static func closedEpoch() throws -> (TestCluster, [NodeRuntime]) {
        let cluster = try TestCluster(count: 2)
        let nodes = try cluster.startNodes(fill: false)
        let citizen = Ed25519PrivateKey(seed: SHA256.hash("dashboard citizen").bytes)!
        func signed(_ signer: TransactionSigner, _ key: Ed25519PrivateKey, nonce: UInt64, _ body: TransactionBody) -> [UInt8] {
            Transaction(chainId: TestCluster.chainId, signer: signer, nonce: nonce, expiryHeight: 500, body: body).signed(with: key).wireBytes
        }
        var nonce: UInt64 = 1
        for round in 0..<6 {
            let before = nodes[0].height
            _ = nodes[0].submit(signed(.partner(Identifier("p0")!), cluster.signingKeys[0], nonce: nonce, .attribute(
                programme: Identifier("tri")!, account: citizen.publicKey, units: 3, evidence: SHA256.hash("dashboard gesture \(round)"))))
            nonce += 1
            _ = eventually(10) { nodes[0].height > before }
            let spent = nodes[0].height
            _ = nodes[0].submit(signed(.citizen(citizen.publicKey), citizen, nonce: nonce, .redeem(
                acceptor: Identifier("p1")!, amount: 12, service: SHA256.hash("ticket \(round)"))))
            nonce += 1
            _ = eventually(10) { nodes[0].height > spent }
        }
        guard nodes[0].height < 50 else {
            for node in nodes { node.stop() }
            throw ProcessTestError("epoch 0's transactions reached height \(nodes[0].height), past its close at 50")
        }
        cluster.advance(nodes, to: 75, issuers: 2, nonce: &nonce)
        return (cluster, nodes)
    }

    /// `count` GETs of `path` sent at once on one connection (HTTP/1.1 pipelining); the
    /// statuses answered, in order, until the server closes or 10 s pass.
    static func pipelined(port: Int, path: String, count: Int) throws -> [Int] {
        let socket = try FeedReader.connect(port: port)
        defer { close(socket) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let requests = String(repeating: "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", count: count)
        _ = requests.withCString { send(socket, $0, strlen($0), 0) }
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while text.components(separatedBy: "HTTP/1.1 ").count - 1 < count {
            let read = recv(socket, &buffer, buffer.count, 0)
            guard read > 0 else { break }
            text += String(decoding: buffer[0..<read], as: UTF8.self)
        }
        return text.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
    }

    @Test func everyPageIsAccessibleLightAndShowsTheCertifiedFigures() async throws {
        guard let python = GatewaySchemaTests.venvTool("python") else { return }
        let (cluster, nodes) = try await GatewayTests.blocking { try Self.closedEpoch() }
        defer { for node in nodes { node.stop() } }
        #expect(nodes[0].read { $0.meta.epoch } ?? 0 >= 1, "epoch 0 did not close")
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [])
        defer { serving.cancel() }

        // The CLI's view: the same cluster through a node, with the genesis and the CA as files.
        let ca = "\(cluster.directory)/ca.crt", genesis = "\(cluster.directory)/genesis.json"
        try cluster.ca.pem.write(toFile: ca, atomically: true, encoding: .utf8)
        try JSONEncoder().encode(cluster.genesisFile).write(to: URL(fileURLWithPath: genesis))
        let bin = try productsDirectory()
        let screenshots = "\(GatewaySchemaTests.root)/.build/dashboard-screenshots"
        let ran = try await GatewayTests.blocking {
            try run(python, [
                "\(GatewaySchemaTests.root)/Tests/Dashboard/check_dashboard.py", "--gateway", "http://127.0.0.1:\(port)", "--calisson", "\(bin)/calisson",
                "--node", "127.0.0.1:\(nodes[0].transport.clientPort)", "--ca", ca, "--genesis", genesis, "--chain", TestCluster.chainId,
                "--screenshots", screenshots,
            ], timeout: 600)
        }
        #expect(ran.status == 0, "the dashboard check failed:\n\(ran.output.suffix(6_000))\n\(ran.errors.suffix(3_000))")
    }

    /// A vote on the parameters is described whole on the governance page: an approval or a
    /// sink changed beside the period was once left out (only the period and the token's
    /// value were said).
    @Test func aParametersVoteIsDescribedWhole() {
        var parameters = Parameters(sink: Identifier("fonds")!)
        (parameters.approvalNumerator, parameters.approvalDenominator, parameters.blocksPerDay) = (3, 5, 100)
        let text = Dashboard.action(.setParameters(parameters), .en)
        for part in ["periods of 1,000 blocks", "days of 100 blocks", "approval 3/5 of the active partners", "sink fonds", "transaction lifetime 600 blocks",
                     "proposal lifetime 100,000 blocks"] {
            #expect(text.contains(part), "\(part): \(text)")
        }
    }

    @Test func thePublicSideNeedsNoKeyAndHoldsItsLimits() async throws {
        let (cluster, nodes) = try await GatewayTests.blocking { try Self.closedEpoch() }
        defer { for node in nodes { node.stop() } }
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [])
        defer { serving.cancel() }
        func get(_ path: String) async throws -> (status: Int, type: String, body: String) {
            let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            let http = response as! HTTPURLResponse
            return (http.statusCode, http.value(forHTTPHeaderField: "Content-Type") ?? "", String(decoding: data, as: UTF8.self))
        }
        // No key for the public side; the API still needs one.
        #expect(try await get("/fr/").status == 200)
        #expect(try await get("/v1/supply").status == 401)

        // Open data: the epoch's rows, the licence, numbers as numbers.
        let csv = try await get("/open-data/v1/partners.csv")
        #expect(csv.status == 200 && csv.type.hasPrefix("text/csv"))
        #expect(csv.body.hasPrefix("epoch,partner,net\r\n0,p0,-72\r\n0,p1,72\r\n"), "\(csv.body)")
        // A large answer is written in parts of 32 KiB (a slow reader is not cut as stalled),
        // whole and in order; a small one as one buffer.
        final class Parts: ResponseBodyWriter, @unchecked Sendable {
            var parts: [ByteBuffer] = []
            var finished = false
            func write(_ buffer: ByteBuffer) async throws { parts.append(buffer) }
            func finish(_ trailingHeaders: HTTPFields?) async throws { finished = true }
        }
        let large = ByteBuffer(bytes: (0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let written = Parts()
        try await Dashboard.body(large).write(written)
        #expect(written.finished && written.parts.count == 7 && written.parts.allSatisfy { $0.readableBytes <= 32 << 10 })
        #expect(written.parts.reduce(into: ByteBuffer()) { $0.writeImmutableBuffer($1) } == large)
        let small = Parts()
        try await Dashboard.body(ByteBuffer(bytes: [1, 2, 3])).write(small)
        #expect(small.parts == [ByteBuffer(bytes: [1, 2, 3])] && small.finished)
        // An id may start with '-': never a formula; numbers stay numbers.
        #expect(Dashboard.csvCell("-cmd") == "'-cmd" && Dashboard.csvCell("-72") == "-72" && Dashboard.csvCell("18446744073709551615") == "18446744073709551615")
        #expect(Dashboard.csvCell("+1,2") == "\"'+1,2\"" && Dashboard.csvCell("tri") == "tri")
        let json = try await get("/open-data/v1/acceptors.json")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.body.utf8)) as? [String: Any])
        #expect((document["licence"] as? String)?.contains("Licence Ouverte 2.0") == true)
        let rows = try #require(document["rows"] as? [[String: Any]])
        #expect(rows.first?["acceptor"] as? String == "p1" && rows.first?["redemptions"] as? Int == 6 && rows.first?["amount"] as? Int == 72, "\(rows)")
        #expect(try await get("/open-data/v1/epochs/0.json").status == 200)
        #expect(try await get("/open-data/v1/epochs/9.json").status == 404)  // not closed
        for bad in ["/open-data/v1/nothing.csv", "/open-data/v1/partners.xml", "/open-data/v1/epochs/x.json"] {
            #expect(try await get(bad).status == 404, "\(bad)")
        }
        for bad in ["?from=x", "?from=18446744073709551615&to=0", "?from=0&to=18446744073709551615", "?to=-1"] {
            let answer = try await get("/open-data/v1/programmes.csv\(bad)")
            #expect(answer.status == 200 || answer.status == 400, "\(bad): \(answer.status)")
        }
        #expect(try await get("/open-data/v1/programmes.csv?from=x").status == 400)
        // Reuse from a page of another origin (CORS): open data and proofs say any origin
        // may read them; the dashboard's pages and the API do not.
        func allowedOrigin(_ path: String) async throws -> String? {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.setValue("https://reuser.example", forHTTPHeaderField: "Origin")
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as! HTTPURLResponse).value(forHTTPHeaderField: "Access-Control-Allow-Origin")
        }
        #expect(try await allowedOrigin("/open-data/v1/epochs.json") == "*")
        #expect(try await allowedOrigin("/open-data/v1/epochs/0.json") == "*")
        #expect(try await allowedOrigin("/proofs/supply") == "*")
        #expect(try await allowedOrigin("/fr/") == nil)
        #expect(try await allowedOrigin("/v1/supply") == nil)
        // A browser's preflight (a request with a header past the simple ones) is answered.
        var preflight = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/open-data/v1/epochs.json")!)
        preflight.httpMethod = "OPTIONS"
        preflight.setValue("https://reuser.example", forHTTPHeaderField: "Origin")
        preflight.setValue("GET", forHTTPHeaderField: "Access-Control-Request-Method")
        preflight.setValue("cache-control", forHTTPHeaderField: "Access-Control-Request-Headers")
        let (_, preflightAnswer) = try await URLSession.shared.data(for: preflight)
        let preflightHTTP = preflightAnswer as! HTTPURLResponse
        #expect(preflightHTTP.statusCode == 204 && preflightHTTP.value(forHTTPHeaderField: "Access-Control-Allow-Origin") == "*"
            && preflightHTTP.value(forHTTPHeaderField: "Access-Control-Allow-Methods")?.contains("GET") == true
            && preflightHTTP.value(forHTTPHeaderField: "Access-Control-Allow-Headers")?.contains("cache-control") == true, "\(preflightHTTP.allHeaderFields)")
        // A public path that is no page: a line of text, not the API's JSON.
        let nowhere = try await get("/fr/nulle-part")
        #expect(nowhere.status == 404 && nowhere.type.hasPrefix("text/plain") && nowhere.body.contains("/fr/"), "\(nowhere)")
        try await Task.sleep(for: .seconds(1.1))  // the address's bucket of requests fills again

        // A proof document holds: the record under the key, with a Merkle proof to the root.
        let proof = try await get("/proofs/epoch-report/0")
        let fields = try #require(try JSONSerialization.jsonObject(with: Data(proof.body.utf8)) as? [String: Any])
        let value = try #require((fields["value"] as? String).flatMap { Hex.decode($0) })
        let root = try #require((fields["stateRoot"] as? String).flatMap { SHA256Digest(hex: $0) })
        let siblings = try #require(fields["siblings"] as? [String]).compactMap { SHA256Digest(hex: $0) }
        let terminal = (fields["terminal"] as? [String: String]).flatMap { leaf -> StateProof.Leaf? in
            guard let key = leaf["key"].flatMap({ SHA256Digest(hex: $0) }), let hash = leaf["valueHash"].flatMap({ SHA256Digest(hex: $0) }) else { return nil }
            return StateProof.Leaf(key: key, valueHash: hash)
        }
        try StateProof(siblings: siblings, terminal: terminal).verifyInclusion(key: StateKeys.epochReport(0), value: value, root: root)
        #expect(try EpochReport(wireBytes: value).epoch == 0)
        #expect((fields["validators"] as? [String])?.count == 2 && (fields["certificate"] as? String)?.isEmpty == false)
        for bad in ["/proofs/anything", "/proofs/programme/NOT-AN-ID", "/proofs/proposal/-1", "/proofs/epoch-report/18446744073709551616"] {
            let answer = try await get(bad)
            #expect(answer.status == 404, "\(bad): \(answer.status)")
        }
        // Pages: unknown programme 404, a lookup of anything answered, French and English
        // (after a second, as the address's bucket of requests fills again).
        try await Task.sleep(for: .seconds(1.1))
        #expect(try await get("/fr/programmes/nowhere").status == 404)
        #expect(try await get("/en/programmes/\(String(repeating: "x", count: 300))").status == 404)
        // A block with transactions of a chain under rules 1 (no results committed): its
        // results said to be the node's word.
        let store = try NodeStore(file: "\(cluster.directory)/p0.db", readOnly: true)
        let busy = try #require(try (1...nodes[0].height).first { try store.block(at: $0)?.transactions.isEmpty == false })
        let block = try await get("/en/lookup?q=\(busy)")
        #expect(block.status == 200 && block.body.contains("Results and close not verified: the node's word"), "\(block.body)")
        for query in ["18446744073709551615", "0", String(repeating: "f", count: 64), "%3Cscript%3E", String(repeating: "9", count: 5_000)] {
            let answer = try await get("/en/lookup?q=\(query)")
            #expect(answer.status == 200 && !answer.body.contains("<script"), "\(query.prefix(20)): \(answer.status)")
        }
        // One address flooding the public side is limited (429): 60 requests pipelined on
        // one connection, for a page that needs no node (an invalid programme id), reach
        // the server at once however slow the client (one after the other, a loaded machine
        // once sent them slower than the bucket refills).
        let statuses = try await GatewayTests.blocking { try Self.pipelined(port: port, path: "/en/programmes/NOT-AN-ID", count: 60) }
        #expect(statuses.count > 20 && statuses.contains(429), "60 pipelined requests from one address: \(statuses)")
        // Thousands of tiny requests pipelined in one send: what was read ahead of the answers
        // is bounded (256 parts, 128 such requests): past it the connection is closed, rather
        // than megabytes of decoded heads held for a client that need never read.
        let flood = try await GatewayTests.blocking { try Self.pipelined(port: port, path: "/x", count: 3_000) }
        #expect(flood.count < 1_000, "\(flood.count) of 3,000 pipelined requests answered")
    }

    /// The settlement files over HTTP: for govern keys only, made from the certified
    /// clearing (p0 owes p1 72 tokens at 1 cent: 0.72 €), the refusals named.
    @Test func settlementFilesAreServedToTheTreasuryOnly() async throws {
        let (cluster, nodes) = try await GatewayTests.blocking { try Self.closedEpoch() }
        defer { for node in nodes { node.stop() } }
        let creditor = CreditorIdentifier.make(country: "FR", business: "ZZZ", national: "999999")
        func register(_ partners: [RegisterFile.Entry]) throws -> SettlementRegister {
            try RegisterFile(
                payer: .init(partner: "p0", legalName: "Métropole", iban: IBAN.french(bank: "99999", branch: "00001", account: "00000001000"), bic: "CALSFRPPXXX",
                             creditorId: creditor), partners: partners).validated()
        }
        let entry = RegisterFile.Entry(partner: "p1", legalName: "Partenaire un", iban: IBAN.french(bank: "99999", branch: "00002", account: "00000001001"), bic: "CALSFRPPXXX")
        let reader = APIKey.generate(name: "reader", scopes: [.read]), treasurer = APIKey.generate(name: "treasury", scopes: [.govern])
        func get(_ port: Int, _ path: String, _ key: String) async throws -> (status: Int, body: String) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
        }
        do {
            let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [reader.entry, treasurer.entry], settlementRegister: try register([entry]))
            defer { serving.cancel() }
            for path in ["/v1/settlements/0/credit-transfers.xml", "/v1//settlements/0/credit-transfers.xml", "//v1/settlements/0/owed.csv"] {
                #expect(try await get(port, path, reader.secret).status == 403, "\(path)")
            }
            let transfers = try await get(port, "/v1/settlements/0/credit-transfers.xml", treasurer.secret)
            #expect(transfers.status == 200 && transfers.body.contains("<InstdAmt Ccy=\"EUR\">0.72</InstdAmt>") && transfers.body.contains("<Nm>Partenaire un</Nm>"),
                    "\(transfers.status) \(transfers.body.prefix(2_000))")
            let accounting = try await get(port, "/v1/settlements/0/accounting.csv", treasurer.secret)
            #expect(accounting.status == 200 && accounting.body.contains("0,p1,Partenaire un,72,0,72,10000,0.72,credit_transfer,C0-"), "\(accounting.body)")
            let owed = try await get(port, "/v1/settlements/0/owed.csv", treasurer.secret)
            #expect(owed.status == 200 && owed.body.split(separator: "\r\n").count == 1, "only the header: nobody owes the payer")
            #expect(try await get(port, "/v1/settlements/0/direct-debits.xml", treasurer.secret).status == 404)
            #expect(try await get(port, "/v1/settlements/7/credit-transfers.xml", treasurer.secret).status == 404)  // not closed
            #expect(try await get(port, "/v1/settlements/0/other.xml", treasurer.secret).status == 400)
            #expect(try await get(port, "/v1/settlements/18446744073709551616/owed.csv", treasurer.secret).status == 400)
        }
        do {
            // The register lacks the partner paid: 409, naming it. No register: 503.
            let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [treasurer.entry], settlementRegister: try register([]))
            defer { serving.cancel() }
            let refused = try await get(port, "/v1/settlements/0/credit-transfers.xml", treasurer.secret)
            #expect(refused.status == 409 && refused.body.contains("partner p1 has a payment in this epoch but no entry"), "\(refused.body)")
        }
        do {
            let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [treasurer.entry])
            defer { serving.cancel() }
            #expect(try await get(port, "/v1/settlements/0/owed.csv", treasurer.secret).status == 503)
        }
    }

    /// The public side has its own places (16): when a crowd holds them all (here, reads
    /// waiting on a node that never answers), the next public request is told to retry
    /// (503 busy) while a partner's API request is still taken in; and the reads waiting do
    /// not stall the gateway (they once did: blocking calls on libdispatch's threads took
    /// those the server's tasks run on).
    @Test func aCrowdOnThePublicPagesLeavesTheAPIItsPlaces() async throws {
        // A "node" whose port accepts connections (the kernel's backlog) and never answers.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        #expect(listen(listener, 128) == 0)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let silentPort = UInt16(bigEndian: address.sin_port)

        let cluster = try TestCluster(count: 1)
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        var configuration = GatewayConfiguration(
            pool: NodePool(nodes: [NodeAddress(host: "127.0.0.1", port: silentPort)], ca: cluster.ca, genesis: cluster.genesis, lagMax: 32, timeoutMilliseconds: 12_000),
            keys: [reader.entry])
        configuration.port = 0
        let server = try GatewayServer(configuration: configuration)
        let serving = Task(executorPreference: GatewayTests.executor) { try await server.run() }
        defer { serving.cancel() }
        #expect(try await GatewayTests.until(120) { server.port != nil })
        let port = try #require(server.port)
        // Raw connections (URLSession keeps to a few per host): a request sent, its answer read later.
        @Sendable func send(_ path: String, key: String? = nil) -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = in_port_t(UInt16(port).bigEndian)
            target.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(key.map { "Authorization: Bearer \($0)\r\n" } ?? "")Connection: close\r\n\r\n"
            _ = Array(request.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            return fd
        }
        /// The status of the answer on `fd` (0 if none), and the connection closed.
        @Sendable func status(_ fd: Int32) -> Int {
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 12 else { return 0 }
            return Int(String(decoding: buffer[9..<12], as: UTF8.self)) ?? 0
        }
        var crowd = (0..<16).map { send("/proofs/proposal/\($0 + 1)") }
        // More public requests until one is told to retry: any taken in before the crowd
        // filled the 16 places (on a slow machine) joins the crowd (no answer within 0.5 s).
        var refused = false
        for probe in 0..<8 where !refused {
            let fd = send("/proofs/proposal/\(100 + probe)")
            var wait = timeval(tv_sec: 0, tv_usec: 500_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = recv(fd, &buffer, buffer.count, 0)
            if count >= 12, String(decoding: buffer[9..<12], as: UTF8.self) == "503" {
                refused = true
                close(fd)
            } else {
                var forever = timeval(tv_sec: 0, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &forever, socklen_t(MemoryLayout<timeval>.size))
                crowd.append(fd)
            }
        }
        #expect(crowd.count <= 24)
        // The gateway itself is not stalled by the reads waiting (they wait on threads of
        // their own): /health answers at once (503: no verified checkpoint, as it says).
        let began = ContinuousClock.now
        #expect(try await GatewayTests.blocking { status(send("/health")) } == 503)
        #expect(began.duration(to: .now) < .seconds(6), "/health waited on the node reads (12 s each)")
        let secret = reader.secret
        let api = try await GatewayTests.blocking { status(send("/v1/supply", key: secret)) }
        #expect(api != 503 && api != 0, "the API request was refused: \(api)")
        let waiting = crowd
        let answered = try await GatewayTests.blocking { waiting.map(status) }
        // Exactly 16 were taken in (each 502 after the node's timeout); any other was told
        // to retry (the server may take the connections in another order than sent).
        #expect(answered.allSatisfy { $0 == 502 || $0 == 503 } && answered.count { $0 == 502 } == 16, "\(answered)")
        #expect(refused || answered.contains(503), "no public request was told to retry with \(answered.count) sent")
    }
}
