// The gateway end to end: four validators on loopback, a `calisson-gateway` server in the
// same process following all four. Every read operation answers with a verification that
// names its certified checkpoint; absent records are 404 with their absence proven, bad
// path values 400; no key is 401, a key without the scope 403, a key over its rate 429
// with Retry-After; /health needs no key. With the node it was reading from stopped, the
// gateway fails over to another and answers from there. Behind a node that lies (a changed
// value, proof or certificate), the gateway answers from an honest node, or 502 when the
// liar is all it has: never the forged data.
import CalissonTestKit
import CalissonCrypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Gateway
import Ledger
import LightClient
import Node
import Settlement
import Testing
import Transport
import Wire

@Suite(.serialized, .onOwnThreads) struct GatewayTests {
    struct Reply {
        let status: Int
        let body: [String: Any]
        let headers: [AnyHashable: Any]
        let text: String
    }

    static func get(_ port: Int, _ path: String, key: String?) async throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return Reply(status: http.statusCode, body: object, headers: http.allHeaderFields, text: String(decoding: data, as: UTF8.self))
    }

    /// Runs blocking test code (node submissions, waits) off the cooperative threads, which
    /// the gateway's handlers need: on two cores, a blocked pool would stall the server.
    /// Runs blocking `body` (a cluster started, a socket read) on a thread of its own.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await onOwnThread(body)
    }

    static func until(_ seconds: Double, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    /// Where the gateways under test run their tasks: threads of their own (`OwnThreads`),
    /// not the cooperative pool, which blocking tests elsewhere in the process could hold. A
    /// process running only a gateway has no such neighbours.
    static let executor = OwnThreads(name: "gateway-tests")

    /// A gateway in front of `nodes` with these keys, on a free port, serving until `serving`
    /// is cancelled. Up to two minutes to start: on two cores, other suites' blocking tests
    /// can hold the cooperative threads the server needs (seen once at 30 s in a full run).
    static func start(
        _ nodes: [NodeRuntime], _ cluster: TestCluster, keys: [APIKey], signer: PartnerSigner? = nil, settlementRegister: SettlementRegister? = nil,
        idleTimeoutSeconds: Int64 = 60, bodySeconds: Int64 = 10, connectionsPerAddressMax: Int = 256, mirrorPagesMax: Int = 0, stalledReaderSeconds: Int64 = 30
    ) async throws -> (server: GatewayServer, serving: Task<Void, any Error>, port: Int) {
        try await start(
            nodes.map { NodeAddress(host: "127.0.0.1", port: $0.transport.clientPort) }, cluster, keys: keys, signer: signer,
            settlementRegister: settlementRegister, idleTimeoutSeconds: idleTimeoutSeconds, bodySeconds: bodySeconds,
            connectionsPerAddressMax: connectionsPerAddressMax, mirrorPagesMax: mirrorPagesMax, stalledReaderSeconds: stalledReaderSeconds)
    }

    static func start(
        _ addresses: [NodeAddress], _ cluster: TestCluster, keys: [APIKey], signer: PartnerSigner? = nil, settlementRegister: SettlementRegister? = nil,
        idleTimeoutSeconds: Int64 = 60, bodySeconds: Int64 = 10, connectionsPerAddressMax: Int = 256, mirrorPagesMax: Int = 0, stalledReaderSeconds: Int64 = 30
    ) async throws -> (server: GatewayServer, serving: Task<Void, any Error>, port: Int) {
        var configuration = GatewayConfiguration(
            pool: NodePool(nodes: addresses, ca: cluster.ca, genesis: cluster.genesis, lagMax: 32, mirrorPagesMax: mirrorPagesMax),
            keys: keys)
        configuration.port = 0
        configuration.signer = signer
        configuration.settlementRegister = settlementRegister
        configuration.idleTimeoutSeconds = idleTimeoutSeconds
        configuration.stalledReaderSeconds = stalledReaderSeconds
        configuration.bodySeconds = bodySeconds
        configuration.connectionsPerAddressMax = connectionsPerAddressMax
        let server = try GatewayServer(configuration: configuration)
        let serving = Task(executorPreference: executor) { try await server.run() }
        guard try await until(120, { server.port != nil }), let port = server.port else {
            serving.cancel()
            throw GatewayError("the gateway did not start")
        }
        return (server, serving, port)
    }

    /// Four nodes on loopback, past height 20 (two stable checkpoints) by attributions to
    /// citizen 1, nonces from 0. The caller stops the nodes.
    static func advancedCluster() async throws -> (TestCluster, [NodeRuntime]) {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        try await blocking {
            var nonce: UInt64 = 0
            cluster.advance(nodes, to: 20, issuers: 4, nonce: &nonce)
        }
        // Idle from here: its last blocks certified, the state the tests read stays put.
        #expect(try await blocking { TestCluster.settle(nodes, atLeast: 24) }, "\(nodes.map(\.height))")
        return (cluster, nodes)
    }

    static func post(_ port: Int, _ path: String, key: String?, json: [String: Any]) async throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        request.httpBody = try JSONSerialization.data(withJSONObject: json)
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return Reply(status: http.statusCode, body: object, headers: http.allHeaderFields, text: String(decoding: data, as: UTF8.self))
    }

    /// Relaying signed transactions: final with a verified inclusion, the same bytes again
    /// without a second effect, 202 then a lookup, refusals by admission as 422, bad bodies
    /// 400, the submit scope needed.
    @Test func signedTransactionsAreRelayedOnceAndFoundFinal() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry, submitter.entry])
        defer { serving.cancel() }
        let key = submitter.secret

        let transaction = cluster.attribute(by: 1, to: 5, nonce: 4_242)
        let sent = ContinuousClock.now
        let first = try await Self.followed(try await Self.post(port, "/v1/transactions", key: key, json: ["transaction": Hex.encode(transaction)]),
                                            sent: sent, port: port, key: key)
        #expect(first.status == 200 && first.body["status"] as? String == "final" && first.body["result"] as? String == "applied", "\(first.text)")
        #expect(first.body["inclusionVerified"] as? Bool == true && first.body["id"] as? String == SignedTransaction.idTag.hash(transaction).hex)
        let issued = nodes[0].read { $0.meta.totals.issued }
        // The same bytes again: the same transaction, final, nothing issued twice.
        let again = try await Self.post(port, "/v1/transactions", key: key, json: ["transaction": Hex.encode(transaction)])
        #expect(again.status == 200 && again.body["id"] as? String == first.body["id"] as? String && again.body["height"] as? Int == first.body["height"] as? Int,
                "\(again.text)")
        #expect(nodes[0].read { $0.meta.totals.issued } == issued)

        // Without waiting: 202 with the transaction's URL (or 200 if it was already final), then found.
        let later = cluster.attribute(by: 2, to: 6, nonce: 4_243)
        let accepted = try await Self.post(port, "/v1/transactions?wait=false", key: key, json: ["transaction": Hex.encode(later)])
        #expect([200, 202].contains(accepted.status), "\(accepted.text)")
        let id = SignedTransaction.idTag.hash(later).hex
        if accepted.status == 202 { #expect(accepted.headers["Location"] as? String == "/v1/transactions/\(id)") }
        var found = try await Self.get(port, "/v1/transactions/\(id)", key: reader.secret)
        // Not final yet: unknown to the nodes (404) or pending (this gateway relayed it).
        for _ in 0..<100 where found.status == 404 || found.body["status"] as? String == "pending" {
            try await Task.sleep(for: .milliseconds(50))
            found = try await Self.get(port, "/v1/transactions/\(id)", key: reader.secret)
        }
        #expect(found.status == 200 && found.body["result"] as? String == "applied", "\(found.text)")
        #expect(try await Self.get(port, "/v1/transactions/\(SHA256.hash("unknown").hex)", key: key).status == 404)

        // Refusals.
        var forged = cluster.attribute(by: 3, to: 7, nonce: 4_244)
        forged[forged.count - 1] ^= 1  // the signature no longer holds
        let refused = try await Self.post(port, "/v1/transactions", key: key, json: ["transaction": Hex.encode(forged)])
        #expect(refused.status == 422 && (refused.body["detail"] as? String ?? "").contains("badSignature"), "\(refused.text)")
        // The gateway remembers what it relayed: the refused transaction is said refused.
        let remembered = try await Self.get(port, "/v1/transactions/\(SignedTransaction.idTag.hash(forged).hex)", key: key)
        #expect(remembered.status == 200 && remembered.body["status"] as? String == "refused"
                && (remembered.body["reason"] as? String ?? "").contains("badSignature"), "\(remembered.text)")
        #expect(try await Self.post(port, "/v1/transactions", key: key, json: ["transaction": "zz"]).status == 400)
        #expect(try await Self.post(port, "/v1/transactions", key: key, json: ["transaction": "00ff"]).status == 422)
        #expect(try await Self.post(port, "/v1/transactions", key: reader.secret, json: ["transaction": Hex.encode(transaction)]).status == 403)
    }

    /// `POST /v1/transactions` (waiting for finality) sent on a raw connection of its own,
    /// its answer read later (`answer(on:)`): many sent before any is read.
    static func sendTransaction(_ port: Int, _ secret: String, _ transaction: [UInt8]) -> Int32 {
        let fd = Raw.connect(port)
        let body = "{\"transaction\":\"\(Hex.encode(transaction))\"}"
        Raw.send(fd, "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(secret)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        return fd
    }

    /// A submission's answer at finality: a 200, or, only once the gateway's 30 s ran out (a
    /// fresh cluster on a loaded machine: the CI's full suite once took that long), its 202
    /// followed as a client does, `GET` on the transaction until it is final.
    static func followed(_ reply: Reply, sent: ContinuousClock.Instant, port: Int, key: String) async throws -> Reply {
        guard reply.status == 202, let id = reply.body["id"] as? String else { return reply }
        #expect(ContinuousClock.now - sent >= .seconds(29), "a 202 before the gateway's time ran out: \(reply.text)")
        var state = reply
        for _ in 0..<600 where state.body["status"] as? String != "final" {
            try await Task.sleep(for: .milliseconds(100))
            state = try await get(port, "/v1/transactions/\(id)", key: key)
        }
        return state
    }

    /// Waits until the gateway is healthy (it knows a certified checkpoint), at most 30 s (a
    /// loaded run of the whole suite once took more than 10).
    static func untilHealthy(_ port: Int) async throws {
        var health = try await get(port, "/health", key: nil)
        for _ in 0..<600 where health.status != 200 {
            try await Task.sleep(for: .milliseconds(50))
            health = try await get(port, "/health", key: nil)
        }
        #expect(health.status == 200, "\(health.text)")
    }

    /// The status and body of the answer on `fd` (0 if none within 60 s); the connection closed.
    static func answer(on fd: Int32) -> (status: Int, body: String) {
        defer { close(fd) }
        var wait = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while true {
            let read = recv(fd, &buffer, buffer.count, 0)
            guard read > 0 else { break }
            received += buffer[0..<read]
        }
        let text = String(decoding: received, as: UTF8.self)
        let status = text.count >= 12 ? Int(text.dropFirst(9).prefix(3)) ?? 0 : 0
        return (status, String(text.split(separator: "\r\n\r\n", maxSplits: 1).last ?? ""))
    }

    /// A counter or gauge of `/metrics` text (-1 when absent).
    static func metric(_ name: String, in metrics: String) -> Int {
        metrics.split(separator: "\n").first { $0.hasPrefix("\(name) ") }.flatMap { Double($0.split(separator: " ")[1]) }.map { Int($0) } ?? -1
    }

    /// Submissions waiting for their block hold no place: with two of the four validators
    /// stopped, nothing becomes final, and 60 submissions (more than the 48 places) wait;
    /// meanwhile none holds a place, none is told to retry, and a read is answered at once.
    @Test func aSubmissionWaitingForItsBlockHoldsNoPlace() async throws {
        let (cluster, nodes) = try await Self.advancedCluster()
        defer { for node in nodes { node.stop() } }
        var submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        submitter.entry.requestsPerSecond = 10_000
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [submitter.entry])
        defer { serving.cancel() }
        try await Self.untilHealthy(port)
        try await Self.blocking { for index in [2, 3] { nodes[index].stop() } }  // no quorum: nothing becomes final

        let count = 60, secret = submitter.secret
        let transactions = (0..<count).map { cluster.attribute(by: $0 % 2, to: 300 + $0, nonce: 60_000 + UInt64($0)) }
        let sockets = try await Self.blocking { transactions.map { Self.sendTransaction(port, secret, $0) } }
        var metrics = ""
        #expect(try await Self.until(60) {
            metrics = (try? Data(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            // Every request either waits for finality or was told to retry (a loaded machine
            // may take over the line's second to start the submissions ahead), and none is
            // still being sent (a ticket is taken before its transaction is sent).
            let waiting = Self.metric("calisson_gateway_finality_waits_waiting", in: metrics)
            return waiting + Self.metric("calisson_gateway_requests_queue_timed_out_total", in: metrics) == count
                && Self.metric("calisson_gateway_requests_in_flight", in: metrics) == 0 && Self.metric("calisson_gateway_requests_waiting", in: metrics) == 0
        }, "\(metrics.split(separator: "\n").filter { $0.contains("finality") || $0.contains("requests_") })")
        // More wait than the 48 places: waiting holds none.
        #expect(Self.metric("calisson_gateway_finality_waits_waiting", in: metrics) > 48, "\(metrics.split(separator: "\n").filter { $0.contains("finality") })")
        #expect(try await Self.get(port, "/v1/status", key: secret).status == 200)
        for fd in sockets { close(fd) }
    }

    /// A final block fetched and checked once is kept: asked again, it costs no node a
    /// request (nor a signature check); a block not final yet is not kept as absent.
    @Test func aCheckedBlockIsAskedOfTheNodesOnce() async throws {
        let (cluster, nodes) = try await Self.advancedCluster()
        defer { for node in nodes { node.stop() } }
        let pool = NodePool(nodes: nodes.map { NodeAddress(host: "127.0.0.1", port: $0.transport.clientPort) }, ca: cluster.ca, genesis: cluster.genesis, lagMax: 32)
        defer { pool.close() }
        let first = try #require(try await pool.blockContents(5))
        let asked = pool.nodeTraffic.requests
        #expect(asked > 0)
        let again = try #require(try await pool.blockContents(5))
        #expect(pool.nodeTraffic.requests == asked, "block 5 asked of a node again")
        #expect(again.contents == first.contents && again.block.seq == 5)
        #expect(try await pool.blockContents(1_000_000) == nil)
        let afterAbsent = pool.nodeTraffic.requests
        #expect(try await pool.blockContents(1_000_000) == nil)
        #expect(pool.nodeTraffic.requests > afterAbsent, "a block not final was kept as absent")
    }

    /// Clients without a listed key hold no place: 80 of them (more than the 48 places)
    /// each send a POST's head and never its body; none takes a place or waits in line,
    /// a keyed read is answered at once meanwhile, and each is refused (401, saying the
    /// connection closes) once the body's time is up. A client waiting for `100 Continue`
    /// is refused at once, its body never asked for.
    @Test func clientsWithoutAKeyHoldNoPlace() async throws {
        let (cluster, nodes) = try await Self.advancedCluster()
        defer { for node in nodes { node.stop() } }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry], bodySeconds: 3)
        defer { serving.cancel() }
        try await Self.untilHealthy(port)

        let unknown = try await Self.blocking {
            (0..<80).map { index in
                let fd = Raw.connect(port)
                Raw.send(fd, "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer cal_unknown_\(index)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
                return fd
            }
        }
        defer { for fd in unknown { close(fd) } }
        var metrics = ""
        #expect(try await Self.until(30) {  // all 80 accepted (their heads sent with the connection)
            metrics = (try? Data(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            return Self.metric("calisson_gateway_connections_open", in: metrics) >= 80
        })
        #expect(Self.metric("calisson_gateway_requests_in_flight", in: metrics) == 0 && Self.metric("calisson_gateway_requests_waiting", in: metrics) == 0,
                "\(metrics.split(separator: "\n").filter { $0.contains("requests_") })")
        let read = try await Self.get(port, "/v1/status", key: reader.secret)
        #expect(read.status == 200, "\(read.text)")
        let refused = try await Self.blocking { unknown.map { Raw.answer($0, seconds: 10) } }
        #expect(refused.allSatisfy { $0.text.hasPrefix("HTTP/1.1 401") && $0.text.lowercased().contains("connection: close") },
                "\(refused.filter { !$0.text.hasPrefix("HTTP/1.1 401") }.prefix(3))")

        let waiting = try await Self.blocking { () -> Raw.Read in
            let fd = Raw.connect(port)
            defer { close(fd) }
            Raw.send(fd, "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer cal_unknown\r\n"
                + "Content-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
            return Raw.answer(fd, seconds: 2)
        }
        #expect(waiting.text.hasPrefix("HTTP/1.1 401"), "\(waiting)")
    }

    /// Many back-end workers submitting at once and each waiting for finality (the default):
    /// more than the gateway's places and its line, and more than the long polls it may
    /// hold to a node.
    /// Each is answered final and applied with its block and position, found by the finality
    /// watch in a block checked against its certificate (none by a long poll per transaction:
    /// the watch's counters say so), and none is told to retry: a request waiting for its
    /// block gives its place to another. The same bytes again afterwards are found final at
    /// once by their inclusion proof, outside the watch.
    @Test func manySubmissionsWaitingAtOnceAreAnsweredFromTheirBlocks() async throws {
        let (cluster, nodes) = try await Self.advancedCluster()
        defer { for node in nodes { node.stop() } }
        var submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        submitter.entry.requestsPerSecond = 10_000  // not this test's subject
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [submitter.entry], connectionsPerAddressMax: 1_024)
        defer { serving.cancel() }
        // The watch starts past a certified checkpoint: wait until the gateway knows one.
        try await Self.untilHealthy(port)

        // More than the 48 places and the 256 in line together, and than the 42 long polls per
        // node the gateway's two loops may hold.
        let count = 400
        let transactions = (0..<count).map { cluster.attribute(by: $0 % 4, to: 100 + $0, nonce: 50_000 + UInt64($0)) }
        let secret = submitter.secret
        // Raw connections, one per worker, all sent before any answer is read; a worker told
        // to retry (503: a loaded machine may take over the line's second to start the
        // submissions ahead of it) sends again, as a client does.
        let (answers, retried) = try await Self.blocking { () -> ([(status: Int, body: String)], Int) in
            var answers = transactions.map { Self.sendTransaction(port, secret, $0) }.map { Self.answer(on: $0) }
            var retried = 0
            for _ in 0..<10 {
                let busy = answers.indices.filter { answers[$0].status == 503 }
                if busy.isEmpty { break }
                retried += busy.count
                let again = busy.map { Self.sendTransaction(port, secret, transactions[$0]) }.map { Self.answer(on: $0) }
                for (index, answer) in zip(busy, again) { answers[index] = answer }
            }
            return (answers, retried)
        }
        if retried > 0 { print("manySubmissionsWaitingAtOnce: \(retried) answers 503, sent again") }
        for (index, answer) in answers.enumerated() {
            let body = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8))) as? [String: Any] ?? [:]
            #expect(answer.status == 200 && body["status"] as? String == "final" && body["result"] as? String == "applied"
                    && body["inclusionVerified"] as? Bool == true && (body["height"] as? Int ?? 0) > 20
                    && body["id"] as? String == SignedTransaction.idTag.hash(transactions[index]).hex,
                    "worker \(index): \(answer.status) \(answer.body)")
        }
        let metrics = try await Self.get(port, "/metrics", key: nil).text
        #expect(Self.metric("calisson_gateway_finality_waits_found_total", in: metrics) == count, "\(metrics.split(separator: "\n").filter { $0.contains("finality") })")
        #expect(Self.metric("calisson_gateway_finality_waits_timed_out_total", in: metrics) == 0)
        #expect(Self.metric("calisson_gateway_finality_waits_waiting", in: metrics) == 0)

        // The same bytes again: final at once by their proof, the watch not asked.
        let again = try await Self.post(port, "/v1/transactions", key: secret, json: ["transaction": Hex.encode(transactions[0])])
        #expect(again.status == 200 && again.body["status"] as? String == "final", "\(again.text)")
        let after = try await Self.get(port, "/metrics", key: nil).text
        #expect(Self.metric("calisson_gateway_finality_waits_found_total", in: after) == count)
    }

    /// A gateway signing for p1 with the idempotency log at `log`, `backEnd`'s key listed.
    static func signingGateway(_ nodes: [NodeRuntime], _ cluster: TestCluster, _ backEnd: (secret: String, entry: APIKey), log: String) async throws
        -> (server: GatewayServer, serving: Task<Void, any Error>, port: Int)
    {
        try await start(nodes, cluster, keys: [backEnd.entry], signer: PartnerSigner(
            partner: Identifier("p1")!, key: cluster.signingKeys[1], evidence: EvidenceKey(Array(repeating: 9, count: 32)), log: try IdempotencyLog(path: log)))
    }

    /// A reward of `units` of "tri" to citizen 8, with `key` as its Idempotency-Key (none: nil).
    static func reward(_ port: Int, _ backEnd: (secret: String, entry: APIKey), key: String?, units: Int, evidence: String) async throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/rewards")!)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("Bearer \(backEnd.secret)", forHTTPHeaderField: "Authorization")
        if let key { request.setValue(key, forHTTPHeaderField: "Idempotency-Key") }
        request.httpBody = try JSONSerialization.data(withJSONObject: [
            "programme": "tri", "account": SHA256.hash("citizen 8").hex, "units": units, "evidence": evidence])
        let (data, response) = try await URLSession.shared.data(for: request)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return Reply(status: (response as! HTTPURLResponse).statusCode, body: object, headers: [:], text: String(decoding: data, as: UTF8.self))
    }

    /// Rewards signed by the gateway for its partner: final, evidence committed under the
    /// partner's evidence key; a retry with the same Idempotency-Key, even after a restart
    /// of the gateway, is the same transaction and issues nothing more; the key with
    /// another request is a 409; no key header a 400.
    @Test func rewardsAreSignedOncePerIdempotencyKey() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let backEnd = APIKey.generate(name: "ticketing", scopes: [.read, .submit])
        let log = "\(cluster.directory)/gateway-idempotency.log"
        func gateway() async throws -> (server: GatewayServer, serving: Task<Void, any Error>, port: Int) {
            try await Self.signingGateway(nodes, cluster, backEnd, log: log)
        }
        func reward(_ port: Int, key: String?, units: Int) async throws -> Reply {
            try await Self.reward(port, backEnd, key: key, units: units, evidence: "weighing slip for \(key ?? "none")")
        }

        var (_, serving, port) = try await gateway()
        let first = try await reward(port, key: "receipt-0001", units: 3)
        #expect(first.status == 200 && first.body["result"] as? String == "applied", "\(first.text)")
        let issued = nodes[0].read { $0.meta.totals.issued }
        let retry = try await reward(port, key: "receipt-0001", units: 3)
        #expect(retry.status == 200 && retry.body["id"] as? String == first.body["id"] as? String, "\(retry.text)")
        let conflict = try await reward(port, key: "receipt-0001", units: 4)
        #expect(conflict.status == 409, "\(conflict.text)")
        // Two requests with one new key at once: one transaction; the other is told it is in
        // flight (409) or gets the same transaction.
        let firstPort = port
        async let one = reward(firstPort, key: "receipt-0002", units: 2)
        async let two = reward(firstPort, key: "receipt-0002", units: 2)
        let (a, b) = try await (one, two)
        let ids = [a, b].filter { $0.status == 200 }.compactMap { $0.body["id"] as? String }
        #expect(!ids.isEmpty && Set(ids).count == 1 && [a, b].allSatisfy { [200, 409].contains($0.status) }, "\(a.text) \(b.text)")
        #expect(try await reward(port, key: nil, units: 3).status == 400)
        serving.cancel()
        _ = await serving.result

        // A crash in the middle of a line leaves it cut short: left out at the next start.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"key": "receipt-9", "request": "#.utf8))
        try handle.close()
        // A new gateway on the same log: the same transaction, nothing issued twice.
        (_, serving, port) = try await gateway()
        defer { serving.cancel() }
        let afterRestart = try await reward(port, key: "receipt-0001", units: 3)
        #expect(afterRestart.status == 200 && afterRestart.body["id"] as? String == first.body["id"] as? String, "\(afterRestart.text)")
        #expect(nodes[0].read { $0.meta.totals.issued } == issued.map { $0 + 2 * 10 })  // receipt-0002's 2 units, once
        // The evidence on chain is the keyed commitment, not the text's plain hash.
        let applied = try #require(nodes[0].read { ledger in
            ledger.store.value(StateKeys.evidence(Identifier("tri")!, EvidenceKey(Array(repeating: 9, count: 32))!.commitment(of: "weighing slip for receipt-0001", for: .evidence)))
        })
        #expect(applied != nil)
        serving.cancel()
        _ = await serving.result

        // The log lost: a retry is signed again, with the key's nonce and a later expiry. Its
        // nonce is held by the first transaction, applied: refused, and never sent again,
        // this gateway's log says so across restarts (once the first's record expired, the
        // new bytes would have applied: a second reward, as the gateway once let them).
        try FileManager.default.moveItem(atPath: log, toPath: log + ".lost")
        (_, serving, port) = try await gateway()
        let resigned = try await reward(port, key: "receipt-0001", units: 3)
        #expect(resigned.status == 422 && resigned.text.contains("held by another transaction"), "\(resigned.text)")
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("\"refused\""))
        serving.cancel()
        _ = await serving.result
        (_, serving, port) = try await gateway()
        let later = try await reward(port, key: "receipt-0001", units: 3)
        #expect(later.status == 422 && later.text.contains("held by another transaction"), "\(later.text)")
        #expect(nodes[0].read { $0.meta.totals.issued } == issued.map { $0 + 2 * 10 })
    }

    /// A retry after the gateway's log was lost is signed again: the key's nonce, a later
    /// expiry. Its nonce held by the first transaction, it is refused, and never sent again,
    /// even once the first's record of the nonce expired (before, it was kept as sent, and
    /// a retry then applied it: a second reward for one request).
    @Test func aRetryWithItsLogLostHasNoSecondEffect() async throws {
        let cluster = try TestCluster(genesis: { $0.parameters.transactionLifetimeMax = 20 })
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let backEnd = APIKey.generate(name: "ticketing", scopes: [.read, .submit])
        let log = "\(cluster.directory)/idempotency.log"
        func reward(_ port: Int, key: String) async throws -> Reply {
            try await Self.reward(port, backEnd, key: key, units: 1, evidence: "slip \(key)")
        }
        var fills = 0
        func advance(_ port: Int, past height: UInt64) async throws {
            while nodes[0].height <= height, fills < 100 {
                fills += 1
                let filled = try await reward(port, key: "fill-\(fills)")
                #expect(filled.status == 200, "\(filled.text)")
            }
        }

        var (_, serving, port) = try await Self.signingGateway(nodes, cluster, backEnd, log: log)
        let start = nodes[0].read { $0.meta.totals.issued } ?? 0
        let first = try await reward(port, key: "receipt-1")
        #expect(first.status == 200 && first.body["result"] as? String == "applied", "\(first.text)")
        let firstHeight = try #require((first.body["height"] as? Int).map(UInt64.init))
        // Some blocks on, so that the retry's expiry comes well after the first's.
        try await advance(port, past: firstHeight + 8)
        serving.cancel()
        _ = await serving.result
        try FileManager.default.moveItem(atPath: log, toPath: log + ".lost")
        (_, serving, port) = try await Self.signingGateway(nodes, cluster, backEnd, log: log)
        defer { serving.cancel() }
        let resigned = try await reward(port, key: "receipt-1")
        #expect(resigned.status == 422 && resigned.text.contains("held by another transaction"), "\(resigned.text)")
        // Past the first's expiry (at most 20 blocks after it was signed), within the retry's.
        try await advance(port, past: firstHeight + 20)
        let later = try await reward(port, key: "receipt-1")
        #expect(later.status == 422 && later.text.contains("held by another transaction"), "\(later.text)")
        let issued = nodes[0].read { $0.meta.totals.issued }
        #expect(issued == start + Amount(1 + fills) * 10, "one reward for receipt-1, one per fill: \(String(describing: issued)), \(fills) fills")
    }

    @Test func verifiedReadsAccessControlAndFailOver() async throws {
        let (cluster, nodes) = try await Self.advancedCluster()
        defer { for node in nodes { node.stop() } }

        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let writer = APIKey.generate(name: "writer", scopes: [.submit])
        var slowKey = APIKey.generate(name: "slow", scopes: [.read])
        slowKey.entry.requestsPerSecond = 1
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry, writer.entry, slowKey.entry])
        defer { serving.cancel() }
        let key = reader.secret

        // /health answers from what the pool knows: ready after the first refresh.
        var health = try await Self.get(port, "/health", key: nil)
        for _ in 0..<100 where health.status != 200 {
            try await Task.sleep(for: .milliseconds(50))
            health = try await Self.get(port, "/health", key: nil)
        }
        #expect(health.status == 200 && health.text.hasPrefix("ok"), "\(health.text)")
        var status = try await Self.get(port, "/v1/status", key: key)
        for _ in 0..<300 where status.body["newestCertifiedHeight"] as? Int != Int(nodes[0].height) {
            try await Task.sleep(for: .milliseconds(50))
            status = try await Self.get(port, "/v1/status", key: key)
        }
        #expect(status.status == 200 && status.body["newestCertifiedHeight"] as? Int == Int(nodes[0].height), "\(status.text)")
        #expect(status.body["genesisDigest"] as? String == cluster.genesis.digest.hex)

        let citizen = SHA256.hash("citizen 1").hex
        let account = try await Self.get(port, "/v1/accounts/\(citizen)", key: key)
        let verification = account.body["verification"] as? [String: Any] ?? [:]
        #expect(account.status == 200 && (account.body["balance"] as? Int ?? 0) > 0, "\(account.text)")
        #expect(verification["certified"] as? Bool == true && (verification["checkpointHeight"] as? Int ?? 0) >= 8, "\(account.text)")
        let nobody = try await Self.get(port, "/v1/accounts/\(SHA256.hash("nobody").hex)", key: key)
        #expect(nobody.status == 200 && nobody.body["balance"] as? Int == 0, "\(nobody.text)")
        #expect(try await Self.get(port, "/v1/accounts/zz", key: key).status == 400)

        let programme = try await Self.get(port, "/v1/programmes/tri", key: key)
        #expect(programme.status == 200 && programme.body["category"] as? String == "wasteSorting", "\(programme.text)")
        let missing = try await Self.get(port, "/v1/programmes/nothing", key: key)
        #expect(missing.status == 404 && (missing.body["detail"] as? String ?? "").contains("absence proven"), "\(missing.text)")
        #expect(try await Self.get(port, "/v1/programmes/Not-An-Id!", key: key).status == 400)
        let partner = try await Self.get(port, "/v1/partners/p0", key: key)
        #expect(partner.status == 200 && (partner.body["roles"] as? [String] ?? []).contains("authority"), "\(partner.text)")
        // Its endpoints (none on this chain of rules 1), their absence proven on their own.
        let endpointsVerification = partner.body["endpointsVerification"] as? [String: Any] ?? [:]
        #expect(partner.body["endpoints"] as? [String] == [] && endpointsVerification["certified"] as? Bool == true, "\(partner.text)")
        let supply = try await Self.get(port, "/v1/supply", key: key)
        #expect(supply.status == 200 && (supply.body["issued"] as? Int ?? 0) > 0 && (supply.body["validators"] as? [String])?.count == 4, "\(supply.text)")
        #expect(try await Self.get(port, "/v1/statements/999/p0", key: key).status == 404)
        #expect(try await Self.get(port, "/v1/proposals/1", key: key).status == 404)
        #expect(try await Self.get(port, "/v1/proposals/0", key: key).status == 400)
        let validators = try await Self.get(port, "/v1/validators", key: key)
        let listed = validators.body["validators"] as? [[String: Any]] ?? []
        #expect(validators.status == 200 && listed.map { $0["partner"] as? String } == ["p0", "p1", "p2", "p3"], "\(validators.text)")
        #expect(listed.first?["nodeKey"] as? String == cluster.nodeKeys[0].publicKey.bytes.hex)
        // The first block with transactions (the idle primary may have completed the first
        // checkpoint with empty blocks before the first one came).
        var block = try await Self.get(port, "/v1/blocks/1", key: key)
        for height in 2...9 where (block.body["transactions"] as? [Any])?.isEmpty ?? true {
            block = try await Self.get(port, "/v1/blocks/\(height)", key: key)
        }
        let blockTransactions = block.body["transactions"] as? [[String: Any]] ?? []
        #expect(block.status == 200 && block.body["commitVerified"] as? Bool == true && !blockTransactions.isEmpty, "\(block.text)")
        #expect(blockTransactions.allSatisfy { $0["result"] as? String == "applied" && ($0["id"] as? String)?.count == 64 })
        #expect(try await Self.get(port, "/v1/blocks/9999999", key: key).status == 404)
        #expect(try await Self.get(port, "/v1/blocks/0", key: key).status == 400)
        // A path that is no operation: a problem document too, naming the path.
        let nowhere = try await Self.get(port, "/v1/blocs/1", key: key)
        #expect(nowhere.status == 404 && nowhere.body["type"] as? String == "urn:calisson:problem:not-found"
            && (nowhere.body["detail"] as? String ?? "").contains("/v1/blocs/1"), "\(nowhere.text)")
        // HEAD, as a monitor sends it: GET's status and head without its body, the
        // connection then serving a GET; on the event feed, no feed opened.
        let heads = try await Self.blocking { () -> [(head: String, then: String)] in
            ["/health", "/v1/status", "/v1/blocks/1", "/v1/events"].map { path in
                let fd = Raw.connect(port)
                defer { close(fd) }
                Raw.send(fd, "HEAD \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\n\r\n")
                var head = ""
                while !head.contains("\r\n\r\n") {
                    let part = Raw.read(fd, seconds: 3)
                    if part.text.isEmpty { break }
                    head += part.text
                }
                Raw.send(fd, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                return (head, Raw.answer(fd, seconds: 3).text)
            }
        }
        for (path, (head, then)) in zip(["/health", "/v1/status", "/v1/blocks/1", "/v1/events"], heads) {
            #expect(head.hasPrefix("HTTP/1.1 200") && head.hasSuffix("\r\n\r\n"), "HEAD \(path): \(head.prefix(300))")
            #expect(then.hasPrefix("HTTP/1.1 200"), "HEAD \(path), then GET /health on the same connection: \(then.prefix(300))")
        }
        #expect(heads[3].head.lowercased().contains("content-type: text/event-stream"), "\(heads[3].head)")
        var feeds: Substring?
        for _ in 0..<50 {  // the feed's stream, dropped unread, ends its producer at once
            feeds = try await Self.get(port, "/metrics", key: nil).text.split(separator: "\n").first { $0.hasPrefix("calisson_gateway_feeds_open ") }
            if feeds == "calisson_gateway_feeds_open 0.0" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(feeds == "calisson_gateway_feeds_open 0.0", "\(feeds ?? "no feeds_open")")

        // Access.
        let anonymous = try await Self.get(port, "/v1/supply", key: nil)
        #expect(anonymous.status == 401 && anonymous.body["type"] as? String == "urn:calisson:problem:unauthorized", "\(anonymous.text)")
        #expect(try await Self.get(port, "/v1/supply", key: "cal_wrong").status == 401)
        #expect(try await Self.get(port, "/v1/supply", key: writer.secret).status == 403)
        var statuses: [Int] = []
        var retryAfter: String?
        for _ in 0..<3 {
            let reply = try await Self.get(port, "/v1/status", key: slowKey.secret)
            statuses.append(reply.status)
            if reply.status == 429 { retryAfter = reply.headers["Retry-After"] as? String }
        }
        #expect(statuses.contains(429) && retryAfter != nil, "\(statuses)")

        let source = try #require(verification["source"] as? String)
        // /metrics: requests by status, refusals, the nodes' heights (no key needed, like /health).
        let metrics = try await Self.get(port, "/metrics", key: nil)
        #expect(metrics.status == 200, "\(metrics.text)")
        for line in ["calisson_gateway_requests_total{method=\"GET\",status=\"200\"}", "calisson_gateway_refused_total{status=\"401\"}",
                     "calisson_gateway_refused_total{status=\"429\"}", "calisson_gateway_newest_certified_height ",
                     "calisson_gateway_node_up{node=\"\(source)\"} 1", "calisson_gateway_request_duration_seconds_bucket"] {
            #expect(metrics.text.contains(line), "no \(line) in\n\(metrics.text)")
        }

        // Liars: alone, a 502 naming the lie; beside an honest node, the honest answer.
        for lie in [Liar.Lie.value, .proof, .certificate] {
            let liar = try Liar(relayingTo: nodes[1].transport.clientPort, ca: cluster.ca, caKey: cluster.caKey, chainId: TestCluster.chainId, lie: lie)
            defer { liar.stop() }
            let liarAddress = NodeAddress(host: "127.0.0.1", port: liar.port)
            for (behind, expected) in [([liarAddress], 502), ([liarAddress, NodeAddress(host: "127.0.0.1", port: nodes[2].transport.clientPort)], 200)] {
                var lied = GatewayConfiguration(
                    pool: NodePool(nodes: behind, ca: cluster.ca, genesis: cluster.genesis, lagMax: 32), keys: [reader.entry])
                lied.port = 0
                let gateway = try GatewayServer(configuration: lied)
                let task = Task(executorPreference: Self.executor) { try await gateway.run() }
                defer { task.cancel() }
                #expect(try await Self.until(120) { gateway.port != nil })
                let reply = try await Self.get(try #require(gateway.port), "/v1/accounts/\(citizen)", key: key)
                #expect(reply.status == expected, "\(lie) behind \(behind): \(reply.text)")
                if expected == 200 {
                    #expect(reply.body["balance"] as? Int == account.body["balance"] as? Int, "\(lie): \(reply.text)")
                } else {
                    #expect(reply.text.contains("cannot be trusted"), "\(lie): \(reply.text)")
                }
            }
        }

        // Fail-over: the node that answered stops; another answers.
        let stopped = try #require(nodes.firstIndex { "127.0.0.1:\($0.transport.clientPort)" == source })
        try await Self.blocking { nodes[stopped].stop() }
        let after = try await Self.get(port, "/v1/accounts/\(citizen)", key: key)
        let newSource = (after.body["verification"] as? [String: Any])?["source"] as? String
        #expect(after.status == 200 && newSource != nil && newSource != source, "\(after.text)")
    }

    /// The verified copy of the state: once it has a checkpoint, reads are answered from it,
    /// say so, and give what the nodes give at that checkpoint, absences included. Behind a
    /// node that lies about the tree's pages or the state's values, no copy is made (the
    /// sync fails, naming the lie) and the reads are the node path's, verified as always.
    @Test func readsAreAnsweredFromTheVerifiedCopy() async throws {
        let (cluster, nodes) = try await Self.advancedCluster()
        defer { for node in nodes { node.stop() } }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let (server, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry], mirrorPagesMax: 10_000)
        defer { serving.cancel() }
        let mirror = try #require(server.configuration.pool.mirror)
        #expect(try await Self.until(60) { mirror.checkpoint?.height == nodes[0].height }, "\(mirror.lastError ?? "no error")")
        let height = try #require(mirror.checkpoint?.height)

        // The same records as a pool that asks the nodes, at the same checkpoint (the cluster is idle).
        let direct = NodePool(
            nodes: nodes.map { NodeAddress(host: "127.0.0.1", port: $0.transport.clientPort) }, ca: cluster.ca, genesis: cluster.genesis, lagMax: 32)
        defer { direct.close() }
        let keys = (1...6).map { StateKeys.account(Ed25519PublicKey(SHA256.hash("citizen \($0)"))) }
            + [StateKeys.account(Ed25519PublicKey(SHA256.hash("nobody"))), StateKeys.meta, StateKeys.validatorKeys, StateKeys.parameters]
        for key in keys {
            let copied = try await server.configuration.pool.read(key)
            let asked = try await direct.read(key)
            #expect(copied.source.hasSuffix("(the gateway's verified copy)") && !asked.source.contains("copy"), "\(copied.source)")
            #expect(copied.record.height == height && asked.record.height == height)
            #expect(copied.record.value == asked.record.value && copied.record.root == asked.record.root, "\(key.hex)")
        }
        let citizen = SHA256.hash("citizen 1").hex
        let account = try await Self.get(port, "/v1/accounts/\(citizen)", key: reader.secret)
        let verification = account.body["verification"] as? [String: Any] ?? [:]
        #expect(account.status == 200 && (account.body["balance"] as? Int ?? 0) > 0, "\(account.text)")
        #expect((verification["source"] as? String ?? "").hasSuffix("(the gateway's verified copy)") && verification["checkpointHeight"] as? Int == Int(height),
                "\(account.text)")
        let missing = try await Self.get(port, "/v1/programmes/nothing", key: reader.secret)
        #expect(missing.status == 404 && (missing.body["detail"] as? String ?? "").contains("the gateway's verified copy"), "\(missing.text)")
        let metrics = try await Self.get(port, "/metrics", key: nil)
        for line in ["calisson_gateway_mirror_checkpoint_height ", "calisson_gateway_mirror_reads_total ", "calisson_gateway_mirror_pages "] {
            #expect(metrics.text.contains(line), "no \(line) in\n\(metrics.text)")
        }
        #expect(metrics.text.contains("calisson_gateway_mirror_refused_total 0"), "\(metrics.text)")
        let status = try await Self.get(port, "/v1/status", key: reader.secret)
        let copyState = status.body["copy"] as? [String: Any] ?? [:]
        #expect(copyState["checkpointHeight"] as? Int ?? 0 >= Int(height) && copyState["pages"] as? Int == mirror.counts.pages, "\(status.text)")
        #expect(copyState["pagesMax"] as? Int == 10_000 && copyState["lastError"] == nil, "\(status.text)")

        // New blocks: the copy follows the next checkpoint, asking only for what changed
        // (per sync, fewer pages than the copy holds).
        let (fetched, syncs) = (mirror.counts.pagesFetched, mirror.counts.syncs)
        try await Self.blocking {
            var nonce: UInt64 = 500
            cluster.advance(nodes, to: height + 12, issuers: 4, nonce: &nonce)
        }
        #expect(try await Self.until(60) { (mirror.checkpoint?.height ?? 0) >= height + 8 }, "\(mirror.lastError ?? "no error")")
        #expect(mirror.counts.pagesFetched - fetched < (mirror.counts.syncs - syncs) * mirror.counts.pages, "\(mirror.counts)")
        for key in keys {
            let copied = try await server.configuration.pool.read(key)
            let asked = try await direct.read(key)
            if copied.record.height == asked.record.height { #expect(copied.record.value == asked.record.value, "\(key.hex)") }
        }

        // A state past the copy's bound: no copy, tried once, the reads from the node path.
        do {
            let (small, task, smallPort) = try await Self.start(nodes, cluster, keys: [reader.entry], mirrorPagesMax: 2)
            defer { task.cancel() }
            let smallMirror = try #require(small.configuration.pool.mirror)
            #expect(try await Self.until(60) { smallMirror.counts.failures > 0 })
            #expect(smallMirror.checkpoint == nil && smallMirror.lastError?.contains("more than 2 tree pages") == true, "\(smallMirror.lastError ?? "")")
            let reply = try await Self.get(smallPort, "/v1/accounts/\(citizen)", key: reader.secret)
            #expect(reply.status == 200 && !((reply.body["verification"] as? [String: Any])?["source"] as? String ?? "copy").contains("copy"), "\(reply.text)")
            try await Task.sleep(for: .milliseconds(500))
            #expect(smallMirror.counts.failures == 1)  // not tried again: the state only grows past the bound
            let status = try await Self.get(smallPort, "/v1/status", key: reader.secret)
            let copyState = status.body["copy"] as? [String: Any] ?? [:]
            #expect(copyState["checkpointHeight"] as? Int == 0 && (copyState["lastError"] as? String ?? "").contains("more than 2 tree pages"), "\(status.text)")
        }

        // Liars about the state's pages or values: no copy, the reads from the node path.
        let latest = try await Self.get(port, "/v1/accounts/\(citizen)", key: reader.secret)
        let latestHeight = (latest.body["verification"] as? [String: Any])?["checkpointHeight"] as? Int
        for lie in [Liar.Lie.page, .stateValue] {
            let liar = try Liar(relayingTo: nodes[1].transport.clientPort, ca: cluster.ca, caKey: cluster.caKey, chainId: TestCluster.chainId, lie: lie)
            defer { liar.stop() }
            let (lied, task, liedPort) = try await Self.start([NodeAddress(host: "127.0.0.1", port: liar.port)], cluster, keys: [reader.entry], mirrorPagesMax: 10_000)
            defer { task.cancel() }
            let liedMirror = try #require(lied.configuration.pool.mirror)
            #expect(try await Self.until(60) { liedMirror.counts.failures > 0 }, "\(lie)")
            #expect(liedMirror.checkpoint == nil && liedMirror.counts.pages == 0, "\(lie)")
            #expect(liedMirror.lastError?.contains("cannot be trusted") == true, "\(lie): \(liedMirror.lastError ?? "")")
            let reply = try await Self.get(liedPort, "/v1/accounts/\(citizen)", key: reader.secret)
            let source = (reply.body["verification"] as? [String: Any])?["source"] as? String ?? ""
            #expect(reply.status == 200 && !source.contains("copy"), "\(lie): \(reply.text)")
            if (reply.body["verification"] as? [String: Any])?["checkpointHeight"] as? Int == latestHeight {
                #expect(reply.body["balance"] as? Int == latest.body["balance"] as? Int, "\(lie): \(reply.text) against \(latest.text)")
            }
        }
    }
}
