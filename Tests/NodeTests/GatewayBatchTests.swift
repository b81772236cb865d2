// Batches of signed transactions through the gateway, and what it refuses before any
// operation: bodies over its limit (413, announced or chunked) and connections left idle
// (closed after `idleTimeoutSeconds`, while an answer being written is never cut).
import CalissonTestKit
import CalissonCrypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
@testable import Gateway
import HTTPTypes
import Ledger
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import Node
import Testing
import Wire

@Suite(.serialized, .onOwnThreads) struct GatewayBatchTests {
    /// A batch: each transaction relayed once and answered in order; the same batch again
    /// issues nothing more; an item that is not a signed transaction refuses the whole
    /// batch before anything is sent; a batch counts its transactions against the key's rate.
    @Test func batchesAreRelayedOnceInOrderAndCountedAgainstTheRate() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        var submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        submitter.entry.requestsPerSecond = 10_000
        var limited = APIKey.generate(name: "limited", scopes: [.read, .submit])
        limited.entry.requestsPerSecond = 3
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [submitter.entry, limited.entry])
        defer { serving.cancel() }
        let key = submitter.secret

        let batch = (0..<20).map { cluster.attribute(by: 1 + $0 % 3, to: 10 + $0, nonce: 7_000 + UInt64($0)) }
        let ids = batch.map { SignedTransaction.idTag.hash($0).hex }
        let sent = try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": batch.map { Hex.encode($0) }])
        let states = sent.body["transactions"] as? [[String: Any]] ?? []
        #expect(sent.status == 200 && states.map { $0["id"] as? String } == ids, "\(sent.text)")
        #expect(states.allSatisfy { ["pending", "final"].contains($0["status"] as? String) }, "\(sent.text)")
        for id in ids {
            var found = try await GatewayTests.get(port, "/v1/transactions/\(id)", key: key)
            for _ in 0..<200 where found.body["status"] as? String != "final" {
                try await Task.sleep(for: .milliseconds(50))
                found = try await GatewayTests.get(port, "/v1/transactions/\(id)", key: key)
            }
            #expect(found.body["status"] as? String == "final" && found.body["result"] as? String == "applied", "\(found.text)")
        }
        let issued = nodes[0].read { $0.meta.totals.issued }
        // The same batch again (a client that lost the answer): the same transactions, nothing issued twice.
        let again = try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": batch.map { Hex.encode($0) }])
        #expect(again.status == 200 && (again.body["transactions"] as? [[String: Any]] ?? []).map { $0["id"] as? String } == ids, "\(again.text)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(nodes[0].read { $0.meta.totals.issued } == issued)

        // One bad item: the whole batch refused, naming it, and nothing of it sent.
        let fresh = cluster.attribute(by: 2, to: 40, nonce: 7_100)
        let badBytes = try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": [Hex.encode(fresh), "00ff"]])
        #expect(badBytes.status == 422 && (badBytes.body["detail"] as? String ?? "").contains("transactions[1]"), "\(badBytes.text)")
        let badHex = try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": [Hex.encode(fresh), "zz"]])
        #expect(badHex.status == 400 && (badHex.body["detail"] as? String ?? "").contains("transactions[1]"), "\(badHex.text)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await GatewayTests.get(port, "/v1/transactions/\(SignedTransaction.idTag.hash(fresh).hex)", key: key).status == 404)
        #expect(try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": [String]()]).status == 400)
        let tooMany = try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": Array(repeating: Hex.encode(fresh), count: 257)])
        #expect(tooMany.status == 400, "\(tooMany.text)")

        // The rate: a key of 3 per second sends a batch of 3, then is out of tokens; a batch of 4 is never possible.
        let small = (0..<3).map { Hex.encode(cluster.attribute(by: 3, to: 50 + $0, nonce: 7_200 + UInt64($0))) }
        let overRate = try await GatewayTests.post(port, "/v1/transaction-batches", key: limited.secret, json: ["transactions": small + [small[0]]])
        #expect(overRate.status == 400 && (overRate.body["detail"] as? String ?? "").contains("rate of 3"), "\(overRate.text)")
        try await Task.sleep(for: .seconds(1.1))
        // A full bucket takes a batch of 3.
        let within = try await GatewayTests.post(port, "/v1/transaction-batches", key: limited.secret, json: ["transactions": small])
        #expect(within.status == 200, "\(within.text)")
        // Two more at once, right after: the key has at most 3 tokens by then, so not both
        // fit. (Sent one after the other, the second came a second later on a loaded machine,
        // the tokens refilled; sent at once, each takes its request's token on arrival, so
        // both may be refused.)
        let secret = limited.secret
        async let first = GatewayTests.post(port, "/v1/transaction-batches", key: secret, json: ["transactions": small])
        async let second = GatewayTests.post(port, "/v1/transaction-batches", key: secret, json: ["transactions": small])
        let both = try await [first, second]
        let spent = both.filter { $0.status == 429 }
        #expect(!spent.isEmpty && both.allSatisfy { [200, 429].contains($0.status) }, "\(both.map(\.text))")
        #expect(spent.allSatisfy { $0.headers["Retry-After"] != nil })
    }

    /// Before any operation: a body over 1 MiB (128 KiB but for a batch) is a 413 whether its length is announced or
    /// it comes chunked; a connection that sends nothing is closed after the idle timeout,
    /// and the gateway answers others meanwhile.
    @Test func largeBodiesAndIdleConnectionsAreRefused() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [submitter.entry], idleTimeoutSeconds: 1, bodySeconds: 2, connectionsPerAddressMax: 8)
        defer { serving.cancel() }
        let key = submitter.secret

        let huge = String(repeating: "ab", count: 600_000)  // 1.2 MB of hex
        let announced = try await GatewayTests.post(port, "/v1/transactions", key: key, json: ["transaction": huge])
        #expect(announced.status == 413 && announced.body["type"] as? String == "urn:calisson:problem:content-too-large", "\(announced.text)")
        // Without a key: refused before anything else, its body (over the limit by its
        // announced length) never collected.
        let anonymous = try await GatewayTests.post(port, "/v1/transactions", key: nil, json: ["transaction": huge])
        #expect(anonymous.status == 401, "\(anonymous.text)")
        let body = "{\"transaction\": \"\(huge)\"}"
        let chunked = try await GatewayTests.blocking {
            Raw.exchange(port, "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\nContent-Type: application/json\r\n"
                + "Transfer-Encoding: chunked\r\n\r\n" + body.utf8.split(maxLength: 65_536).map { "\(String($0.count, radix: 16))\r\n\(String(decoding: $0, as: UTF8.self))\r\n" }.joined()
                + "0\r\n\r\n")
        }
        #expect(chunked.hasPrefix("HTTP/1.1 413"), "\(chunked.prefix(200))")
        // One transaction's request is held to 128 KiB (it may wait for finality holding its
        // body); a batch's to 1 MiB.
        let padded = String(repeating: "ab", count: 100_000)  // 200 KB of hex
        let single = try await GatewayTests.post(port, "/v1/transactions", key: key, json: ["transaction": padded])
        #expect(single.status == 413, "\(single.text)")
        let batch = try await GatewayTests.post(port, "/v1/transaction-batches", key: key, json: ["transactions": [padded]])
        #expect(batch.status == 400 && batch.text.contains("at most 16384 bytes"), "\(batch.text)")
        // A body within the limit still works after them.
        #expect(try await GatewayTests.post(port, "/v1/transactions", key: key, json: ["transaction": "zz"]).status == 400)

        // Idle: connected, nothing sent; closed by the gateway within a few seconds.
        let idle = try await GatewayTests.blocking { Raw.secondsUntilClosed(port, sending: "", waitingAtMost: 10) }
        #expect(idle != nil && idle! < 8, "an idle connection was kept \(idle.map { "\($0) s" } ?? "over 10 s")")
        // A request head never finished: closed the same way.
        let dribbled = try await GatewayTests.blocking { Raw.secondsUntilClosed(port, sending: "GET /v1/status HTTP/1.1\r\nHost: 1", waitingAtMost: 10) }
        #expect(dribbled != nil && dribbled! < 8, "a connection with half a request was kept \(dribbled.map { "\($0) s" } ?? "over 10 s")")
        // Answered (503 until the gateway has verified a checkpoint of this new chain).
        #expect([200, 503].contains(try await GatewayTests.get(port, "/health", key: nil).status))
        // A body dribbled a byte at a time (which keeps the connection from being idle): 408
        // once the body's time is up.
        let dribbledBody = try await GatewayTests.blocking {
            Raw.dribble(port, "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\nContent-Type: application/json\r\n"
                + "Content-Length: 1000\r\n\r\n{", seconds: 10)
        }
        #expect(dribbledBody.answer.hasPrefix("HTTP/1.1 408") && dribbledBody.seconds < 8, "\(dribbledBody.seconds) s: \(dribbledBody.answer.prefix(200))")

        // A crowd of connections from one address: past 8 each is closed as soon as it is
        // accepted (counted in /metrics); once the crowd leaves, requests are answered again.
        // On a gateway of its own whose idle timeout (60 s) frees no place meanwhile: of 12,
        // exactly 4 are closed, whichever the gateway's loops take last (they take them in
        // parallel), and the 8 others stay open.
        let (_, crowdServing, crowdPort) = try await GatewayTests.start(nodes, cluster, keys: [submitter.entry], connectionsPerAddressMax: 8)
        defer { crowdServing.cancel() }
        let crowd = try await GatewayTests.blocking { (0..<12).map { _ in Raw.connect(crowdPort) } }
        let closed = try await GatewayTests.blocking { Raw.closedByServer(crowd, expecting: 4, seconds: 30) }
        #expect(closed == 4, "\(closed) of 12 connections from one address closed, the most open being 8")
        for fd in crowd { close(fd) }
        var metrics = ""
        for _ in 0..<100 where metrics.isEmpty {
            metrics = (try? await GatewayTests.get(crowdPort, "/metrics", key: nil).text) ?? ""
            if metrics.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        }
        let refusedCount = metrics.split(separator: "\n").first { $0.hasPrefix("calisson_gateway_connections_refused_total ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
        #expect(refusedCount >= 4, "\(metrics.split(separator: "\n").filter { $0.contains("connections") })")
    }

    /// A client that asks and stops reading is closed once its socket took nothing of the
    /// answers for `stalledReaderSeconds`: the idle timeout does not run while an answer is
    /// written, and nothing else bounded the wait (a client held its connection, and what
    /// was written for it, for ever). A client that takes something in time (the channel
    /// writable again) keeps it. On an embedded channel: the kernel's buffers of a loopback
    /// socket take megabytes before NIO's channel is ever unwritable.
    @Test func aClientThatStopsReadingIsClosed() throws {
        let limit = ConnectionLimit(perAddressMax: 8)
        let channel = EmbeddedChannel(handler: StalledReaderTimeout(timeout: .seconds(30), limit: limit))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        func writable(_ value: Bool) {
            channel.isWritable = value
            channel.pipeline.fireChannelWritabilityChanged()
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(120))
        #expect(channel.isActive, "a writable channel is never closed by it")
        // Full, then taken from within the time: kept, and the time starts again at the next.
        writable(false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        writable(true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(channel.isActive && limit.stalledReaders.load(ordering: .relaxed) == 0)
        writable(false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        #expect(channel.isActive)
        writable(false)  // told again: the time is not restarted
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "a client that took nothing for 30 s keeps its connection")
        #expect(limit.stalledReaders.load(ordering: .relaxed) == 1)
    }

    /// `Expect: 100-continue`: a client that waits to be told before it sends its body is
    /// told (`100 Continue`) once the request passed what its head decides, then answered on
    /// the same connection, which stays usable; a request refused from its head alone (the
    /// method, the announced length) is answered at once without the `100` and the
    /// connection closed, so a body sent late is never read as a next request.
    @Test func aClientExpectingContinueIsToldOrRefusedAtOnce() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        // The body's time (5 s) longer than the waits below: without the 100 the gateway
        // would wait for the body until then.
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [submitter.entry], bodySeconds: 5)
        defer { serving.cancel() }
        let head = "Host: 127.0.0.1\r\nAuthorization: Bearer \(submitter.secret)\r\nContent-Type: application/json\r\nExpect: 100-Continue\r\n"
        let body = "{\"transaction\": \"zz\"}"

        let told = try await GatewayTests.blocking { () -> [Raw.Read] in
            let fd = Raw.connect(port)
            defer { close(fd) }
            Raw.send(fd, "POST /v1/transactions HTTP/1.1\r\n\(head)Content-Length: \(body.utf8.count)\r\n\r\n")
            let first = Raw.read(fd, seconds: 3)
            Raw.send(fd, body)
            let answer = Raw.answer(fd, seconds: 3)
            Raw.send(fd, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(submitter.secret)\r\n\r\n")
            return [first, answer, Raw.answer(fd, seconds: 3)]
        }
        #expect(told[0].text.hasPrefix("HTTP/1.1 100 Continue\r\n\r\n") && !told[0].text.contains("HTTP/1.1 4"), "\(told[0])")
        // The body read: "zz" is no transaction's hex, the API's 400 (not 408, the body's time).
        #expect(told[1].text.hasPrefix("HTTP/1.1 400") && told[1].text.contains("urn:calisson:problem:"), "\(told[1])")
        #expect(told[2].text.hasPrefix("HTTP/1.1 ") && !told[2].closed, "the connection after a 100 Continue: \(told[2])")

        // Pipelined: a read, then a POST waiting for its 100, sent together. The read is
        // answered as usual (its connection kept), then the POST told to go on and answered.
        let pipelined = try await GatewayTests.blocking { () -> [Raw.Read] in
            let fd = Raw.connect(port)
            defer { close(fd) }
            Raw.send(fd, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                + "POST /v1/transactions HTTP/1.1\r\n\(head)Content-Length: \(body.utf8.count)\r\n\r\n")
            var first = Raw.answer(fd, seconds: 3)
            // The 100 may have come in the same read as the first answer.
            var rest = first.text.range(of: "HTTP/1.1 100").map { String(first.text[$0.lowerBound...]) } ?? ""
            if !rest.isEmpty { first = Raw.Read(text: String(first.text.prefix(first.text.count - rest.count)), closed: false) }
            if rest.isEmpty { rest = Raw.read(fd, seconds: 3).text }
            Raw.send(fd, body)
            return [first, Raw.Read(text: rest, closed: false), Raw.answer(fd, seconds: 3)]
        }
        #expect(pipelined[0].text.hasPrefix("HTTP/1.1 ") && !pipelined[0].text.lowercased().contains("connection: close"), "\(pipelined[0])")
        #expect(pipelined[1].text.hasPrefix("HTTP/1.1 100 Continue"), "\(pipelined[1])")
        #expect(pipelined[2].text.hasPrefix("HTTP/1.1 400"), "\(pipelined[2])")

        // HTTP/1.0: the expectation is ignored (RFC 9110, 10.1.1), no 100 sent; the body,
        // sent after a wait, is read and the request answered.
        let older = try await GatewayTests.blocking { () -> [Raw.Read] in
            let fd = Raw.connect(port)
            defer { close(fd) }
            Raw.send(fd, "POST /v1/transactions HTTP/1.0\r\n\(head)Content-Length: \(body.utf8.count)\r\n\r\n")
            let first = Raw.read(fd, seconds: 1)
            Raw.send(fd, body)
            return [first, Raw.answer(fd, seconds: 3)]
        }
        #expect(older[0].text.isEmpty && !older[0].closed, "an HTTP/1.0 client was told: \(older[0])")
        #expect(older[1].text.hasPrefix("HTTP/1.1 400") && !older[1].text.contains(" 100 "), "\(older[1])")
        // An HTTP/1.0 connection ends with its answer, unless its client asked to keep it.
        let ended = try await GatewayTests.blocking { () -> [Raw.Read] in
            let fd = Raw.connect(port)
            defer { close(fd) }
            Raw.send(fd, "GET /health HTTP/1.0\r\n\r\n")
            return [Raw.answer(fd, seconds: 3), Raw.read(fd, seconds: 3)]
        }
        #expect(ended[0].text.hasPrefix("HTTP/1.1 ") && ended[1].closed, "\(ended)")
        let kept = try await GatewayTests.blocking { () -> [Raw.Read] in
            let fd = Raw.connect(port)
            defer { close(fd) }
            Raw.send(fd, "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            let first = Raw.answer(fd, seconds: 3)
            Raw.send(fd, "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            return [first, Raw.answer(fd, seconds: 3)]
        }
        #expect(kept.allSatisfy { $0.text.hasPrefix("HTTP/1.1 ") }, "\(kept)")

        for (request, status) in [
            ("POST /v1/status HTTP/1.1\r\n\(head)Content-Length: 20\r\n\r\n", 405),
            ("POST /v1/transactions HTTP/1.1\r\n\(head)Content-Length: 200000\r\n\r\n", 413),
        ] {
            let refused = try await GatewayTests.blocking { () -> [Raw.Read] in
                let fd = Raw.connect(port)
                defer { close(fd) }
                Raw.send(fd, request)
                return [Raw.answer(fd, seconds: 3), Raw.read(fd, seconds: 3)]
            }
            #expect(refused[0].text.hasPrefix("HTTP/1.1 \(status)") && refused[0].text.lowercased().contains("connection: close"), "\(refused[0])")
            #expect(refused[1].closed, "\(status): the connection was left open, its client's body unread")
        }
    }

    /// The bodies being received are bounded per client and for all clients together: many
    /// keys each within their own bound cannot take more than `postBytesTotalMax` between them.
    @Test func theBodiesBeingReceivedAreBoundedForAllClients() {
        let state = AccessState()
        let perClient = RequestShapeMiddleware.postBytesPerClientMax, total = RequestShapeMiddleware.postBytesTotalMax
        let clients = total / perClient
        for client in 0..<clients { #expect(state.takeBody("key\(client)", bytes: perClient) == nil) }
        #expect(state.takeBody("key0", bytes: 1) == .client)
        #expect(state.takeBody("another", bytes: 1) == .total)
        state.endBody("key1", bytes: perClient)
        #expect(state.takeBody("another", bytes: perClient) == nil)
        #expect(state.takeBody("late", bytes: 1) == .total)
        for client in 0..<clients where client != 1 { state.endBody("key\(client)", bytes: perClient) }
        state.endBody("another", bytes: perClient)
        #expect(state.bodyBytes.withLock { $0.total == 0 && $0.perClient.isEmpty })
    }

    /// A body is read before its request takes a place: one key announcing more bodies than
    /// there are places and sending none holds its own connections only, and another key is
    /// answered meanwhile (before, it was told `503 busy` for as long as the bodies' time).
    /// A `Content-Length` past what an `Int` holds is refused at once (it waited the body's
    /// time for a `408`).
    @Test func slowBodiesOfOneKeyLeaveOthersTheirPlaces() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        var slow = APIKey.generate(name: "slow", scopes: [.read, .submit, .govern])
        slow.entry.requestsPerSecond = 10_000
        let other = APIKey.generate(name: "other", scopes: [.read])
        // The bodies' time longer than the test: none ends (and gives its bytes back) meanwhile.
        let (server, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [slow.entry, other.entry], bodySeconds: 60)
        func receiving() -> Int { server.access.bodyBytes.withLock { $0.perClient["slow"] ?? 0 } }
        defer { serving.cancel() }
        let head = "Host: 127.0.0.1\r\nAuthorization: Bearer \(slow.secret)\r\nContent-Type: application/json\r\n"
        let count = RequestShapeMiddleware.inFlightMax + 12
        let held = try await GatewayTests.blocking { () -> [Int32] in
            (0..<count).map { _ in
                let fd = Raw.connect(port)
                Raw.send(fd, "POST /v1/transactions HTTP/1.1\r\n\(head)Content-Length: 1000\r\n\r\n{")
                return fd
            }
        }
        defer { for fd in held { close(fd) } }
        // Every body awaited (so that the reads below come while they all are).
        #expect(try await GatewayTests.until(15) { receiving() == count * 1_000 }, "\(receiving()) bytes awaited")
        for _ in 0..<3 {
            let read = try await GatewayTests.get(port, "/v1/status", key: other.secret)
            // Answered (a fresh chain may have no certified checkpoint yet: 503 no-checkpoint), not busy.
            #expect(read.body["type"] as? String != "urn:calisson:problem:busy", "another key, while one key's bodies are awaited: \(read.status) \(read.text.prefix(300))")
        }
        // The bytes of one key's bodies being received are bounded (32 MiB): batches of
        // 1 MiB announced past it are told to retry at once (60 bodies of 1,000 bytes
        // announced above, then 31 batches fit).
        let batches = try await GatewayTests.blocking { () -> [Int32] in
            (0..<40).map { _ in
                let fd = Raw.connect(port)
                Raw.send(fd, "POST /v1/transaction-batches HTTP/1.1\r\n\(head)Content-Length: \(1 << 20)\r\n\r\n{")
                return fd
            }
        }
        defer { for fd in batches { close(fd) } }
        // Answers as they come (a loaded machine may take seconds to read 40 heads).
        var told = [String](repeating: "", count: batches.count)
        func look() {
            for (index, fd) in batches.enumerated() {
                var buffer = [UInt8](repeating: 0, count: 4_096)
                let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if count > 0 { told[index] += String(decoding: buffer[..<count], as: UTF8.self) }
            }
        }
        // Until every batch is decided: 31 awaited, the answers of the others read.
        let deadline = ContinuousClock.now + .seconds(15)
        while told.filter({ !$0.isEmpty }).count < 9 || receiving() < count * 1_000 + 31 << 20, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            look()
        }
        let busy = told.filter { $0.hasPrefix("HTTP/1.1 503") && $0.contains("MiB of request bodies") }
        #expect(busy.count == 9 && told.filter { !$0.isEmpty }.count == 9, "\(told.map { $0.prefix(60) })")
        let huge = try await GatewayTests.blocking {
            Raw.exchange(port, "POST /v1/votes HTTP/1.1\r\n\(head)Content-Length: 18446744073709551615\r\n\r\n")
        }
        #expect(huge.hasPrefix("HTTP/1.1 413"), "\(huge.prefix(300))")
    }

    /// A refusal's log line cannot be split by a client: what it sent (a path, a field that
    /// a problem quotes) has its control characters escaped.
    @Test func aRefusalIsLoggedOnOneLine() {
        #expect(RefusalLog.oneLine("x\nnotice calisson.gateway: forged\r\u{2028}é") == "x\\u{a}notice calisson.gateway: forged\\u{d}\\u{2028}é")
        #expect(RefusalLog.oneLine("key \u{202E}003 :sutats") == "key \\u{202e}003 :sutats")
        #expect(RefusalLog.oneLine("/v1/programmes/culture") == "/v1/programmes/culture")
    }

    /// A body's deadline is judged on the connection: its expiry is called only if the body's
    /// end has not been read by then, whenever the task reading it runs, counting only the
    /// time the application asked for bytes (not while it read nothing, its buffer full); a
    /// body whose end was read before it is asked for needs none; without a request read,
    /// nothing is known.
    @Test func aBodysDeadlineCountsWhatTheConnectionReceived() throws {
        let post = HTTPRequest(method: .post, scheme: nil, authority: "127.0.0.1", path: "/v1/transactions")
        let expirations = Locked(0)
        func prepare(_ channel: EmbeddedChannel, seconds: Int64 = 2) throws -> ContinueOrClose.BodyArrival.State {
            let send = ContinueOrClose.Send(deadline: (seconds, { expirations.withLock { $0 += 1 } }))
            try channel.pipeline.triggerUserOutboundEvent(send).wait()
            return send.arrival.value
        }
        // A part read, and the application asking for the next at once (a consumer keeping up).
        func receive(_ channel: EmbeddedChannel, _ part: HTTPRequestPart) throws {
            try channel.writeInbound(part)
            channel.read()
        }
        func answer(_ channel: EmbeddedChannel) throws {
            try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
            try channel.writeOutbound(HTTPResponsePart.end(nil))
            channel.embeddedEventLoop.run()
        }
        let channel = EmbeddedChannel(handler: ContinueOrClose())
        defer { _ = try? channel.finish() }
        #expect(try prepare(channel) == .unknown, "no request read: nothing known")

        // The end arrives within the time: no expiry, however late the deadline is looked at.
        try receive(channel, .head(post))
        #expect(try prepare(channel) == .pending)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1_900))
        try receive(channel, .body(ByteBuffer(string: "{}")))
        try receive(channel, .end(nil))
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(expirations.withLock { $0 } == 0, "a body that arrived in time expired")
        try answer(channel)

        // Its end read before the body is asked for: nothing to wait for, no deadline.
        try receive(channel, .head(post))
        try receive(channel, .end(nil))
        #expect(try prepare(channel) == .ended)
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(expirations.withLock { $0 } == 0)
        try answer(channel)

        // The application reads nothing for a while (its buffer full, its task waiting): that
        // time is not the client's; once it reads again, the rest of the time counts.
        try receive(channel, .head(post))
        try receive(channel, .body(ByteBuffer(string: "{")))
        #expect(try prepare(channel) == .pending)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: " ")))  // read, and no read asked after it
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(expirations.withLock { $0 } == 0, "expired while the application read nothing")
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1_400))
        #expect(expirations.withLock { $0 } == 0)

        // The end never arrives while the application waits for it: expired once, at its time.
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(expirations.withLock { $0 } == 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(expirations.withLock { $0 } == 1, "expired twice")

        // Answered before its time (a refusal, which ends the connection): its deadline is dropped.
        let refused = EmbeddedChannel(handler: ContinueOrClose())
        defer { _ = try? refused.finish() }
        try receive(refused, .head(post))
        #expect(try prepare(refused) == .pending)
        try answer(refused)
        refused.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(expirations.withLock { $0 } == 1, "the deadline of a request answered expired")
    }

    /// A request pipelined behind one not answered yet is held, and nothing more read, until
    /// that answer is written: handed on if the answer keeps the connection, dropped (never
    /// handled) if it ends it. A decoding error of the bytes behind a request read whole
    /// waits the same way. (On a channel of its own: which of a live connection's reads
    /// brings the next request is the network's timing.)
    @Test func aRequestPipelinedBehindOneWaitsForItsAnswer() throws {
        let handler = ContinueOrClose()
        let channel = EmbeddedChannel(handler: handler)
        defer { _ = try? channel.finish() }
        func request(_ path: String) -> HTTPRequest { HTTPRequest(method: .get, scheme: nil, authority: "127.0.0.1", path: path) }
        func path(_ part: HTTPRequestPart?) -> String? {
            if case let .head(request) = part { return request.path }
            return nil
        }
        func isEnd(_ part: HTTPRequestPart?) -> Bool {
            if case .end = part { return true }
            return false
        }
        func answer(_ fields: HTTPFields = [:]) throws {
            try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: fields)))
            try channel.writeOutbound(HTTPResponsePart.end(nil))
            channel.embeddedEventLoop.run()
        }
        // Read together: three requests.
        for name in ["/first", "/second", "/third"] {
            try channel.writeInbound(HTTPRequestPart.head(request(name)))
            try channel.writeInbound(HTTPRequestPart.end(nil))
        }
        #expect(path(try channel.readInbound()) == "/first")
        #expect(isEnd(try channel.readInbound()))
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil, "a request handed on before the one ahead of it was answered")

        // The first answered, the connection kept: the second is handed on, not the third.
        try answer()
        #expect(path(try channel.readInbound()) == "/second")
        #expect(isEnd(try channel.readInbound()))
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil)

        // The second answered with `Connection: close`: the third is never handed on.
        try answer([.connection: "close"])
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil, "a request behind an answer that closes was handled")

        // A client that sent two requests and shut its side: its end of input comes after
        // the second, not before (the server's reading ended there, the second was lost).
        let recorder = EventRecorder()
        let halfClosed = EmbeddedChannel(handlers: [ContinueOrClose(), recorder])
        defer { _ = try? halfClosed.finish() }
        for name in ["/one", "/two"] {
            try halfClosed.writeInbound(HTTPRequestPart.head(request(name)))
            try halfClosed.writeInbound(HTTPRequestPart.end(nil))
        }
        halfClosed.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(recorder.seen == ["/one", "end"])
        try halfClosed.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try halfClosed.writeOutbound(HTTPResponsePart.end(nil))
        halfClosed.embeddedEventLoop.run()
        #expect(recorder.seen == ["/one", "end", "/two", "end", "input closed"])

        // A request that says `Connection: close`: the one behind it is never handed on.
        let closing = EmbeddedChannel(handler: ContinueOrClose())
        defer { _ = try? closing.finish() }
        var last = request("/last")
        last.headerFields[.connection] = "close"
        for part in [HTTPRequestPart.head(last), .end(nil), .head(request("/behind")), .end(nil)] { try closing.writeInbound(part) }
        #expect(path(try closing.readInbound()) == "/last")
        #expect(isEnd(try closing.readInbound()))
        try closing.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try closing.writeOutbound(HTTPResponsePart.end(nil))
        closing.embeddedEventLoop.run()
        #expect(try closing.readInbound(as: HTTPRequestPart.self) == nil, "a request behind one that said close was handed on")

        // A decoding error behind a request read whole waits for that request's answer, then
        // is answered here (a problem document naming the fault, the connection ended), never
        // handed on to Hummingbird (which answered a bare 400).
        let other = EmbeddedChannel(handler: ContinueOrClose())
        defer { _ = try? other.finish() }
        try other.writeInbound(HTTPRequestPart.head(request("/only")))
        try other.writeInbound(HTTPRequestPart.end(nil))
        other.pipeline.fireErrorCaught(HTTPParserError.invalidVersion)
        #expect(throws: Never.self) { try other.throwIfErrorCaught() }
        #expect(try other.readOutbound(as: HTTPResponsePart.self) == nil)
        try other.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try other.writeOutbound(HTTPResponsePart.end(nil))
        other.embeddedEventLoop.run()
        #expect(throws: Never.self) { try other.throwIfErrorCaught() }
        #expect(try Self.status(other.readOutbound(as: HTTPResponsePart.self)) == 200)
        #expect(isEndPart(try other.readOutbound(as: HTTPResponsePart.self)))
        let refusal = try Self.answer(other)
        #expect(refusal.status == 400 && refusal.closes)
        #expect(refusal.body.contains("its version is not HTTP/1.x"), "\(refusal.body)")

        // With no request ahead of it, at once; a head over the decoder's bounds is a 431.
        let alone = EmbeddedChannel(handler: ContinueOrClose())
        defer { _ = try? alone.finish() }
        alone.pipeline.fireErrorCaught(HTTPParserError.headerOverflow)
        alone.embeddedEventLoop.run()
        #expect(throws: Never.self) { try alone.throwIfErrorCaught() }
        let tooLarge = try Self.answer(alone)
        #expect(tooLarge.status == 431 && tooLarge.closes)
        // A request's own body that does not decode (a malformed chunk) is its reader's to answer.
        let inBody = EmbeddedChannel(handler: ContinueOrClose())
        defer { _ = try? inBody.finish() }
        var post = request("/v1/rewards")
        post.method = .post
        try inBody.writeInbound(HTTPRequestPart.head(post))
        _ = try inBody.readInbound(as: HTTPRequestPart.self)
        inBody.pipeline.fireErrorCaught(HTTPParserError.invalidChunkSize)
        #expect(throws: HTTPParserError.self) { try inBody.throwIfErrorCaught() }
        #expect(try inBody.readOutbound(as: HTTPResponsePart.self) == nil)
    }

    static func status(_ part: HTTPResponsePart?) -> Int? {
        if case let .head(response) = part { return response.status.code }
        return nil
    }

    func isEndPart(_ part: HTTPResponsePart?) -> Bool {
        if case .end = part { return true }
        return false
    }

    /// The answer a handler wrote on `channel` itself: its status, whether it closes, its body.
    static func answer(_ channel: EmbeddedChannel) throws -> (status: Int, closes: Bool, body: String) {
        guard case let .head(head) = try channel.readOutbound(as: HTTPResponsePart.self) else { return (0, false, "") }
        var body = ""
        while let part = try channel.readOutbound(as: HTTPResponsePart.self) {
            if case let .body(buffer) = part { body += String(buffer: buffer) }
            if case .end = part { break }
        }
        return (head.status.code, ContinueOrClose.closes(head), body)
    }

    /// An answer given before its request's body was read (over its announced length, not
    /// arrived in its time, refused from its head) says `Connection: close` and ends the
    /// connection even while its client keeps sending: the client reads the whole answer, then the end of the stream; what it still
    /// sends is dropped for a bounded time, then the connection is closed, never read as a
    /// next request. Before, the gateway read a terabyte announced, or a byte every few
    /// seconds, for as long as the client liked, the connection kept.
    @Test func anAnswerThatClosesEndsTheConnection() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [submitter.entry], bodySeconds: 2)
        defer { serving.cancel() }
        let head = "Host: 127.0.0.1\r\nAuthorization: Bearer \(submitter.secret)\r\nContent-Type: application/json\r\n"

        // A terabyte announced, sent on at 10 KB/s: 413 at once.
        let announced = try await GatewayTests.blocking {
            Raw.sendOn(port, "POST /v1/transactions HTTP/1.1\r\n\(head)Content-Length: 1000000000000\r\n\r\n",
                       then: String(repeating: "a", count: 1_000), everyMilliseconds: 100, seconds: 10)
        }
        // Its body dribbled a byte every 0.1 s, and on after the 408 that its time brings.
        let dribbled = try await GatewayTests.blocking {
            Raw.sendOn(port, "POST /v1/transactions HTTP/1.1\r\n\(head)Content-Length: 100000\r\n\r\n{",
                       then: " ", everyMilliseconds: 100, seconds: 10)
        }
        // A GET without a key, announcing a body it dribbles: 401 from its head, its body unread.
        let keyless = try await GatewayTests.blocking {
            Raw.sendOn(port, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{",
                       then: " ", everyMilliseconds: 100, seconds: 10)
        }
        for (sent, status) in [(announced, 413), (dribbled, 408), (keyless, 401)] {
            #expect(sent.answer.hasPrefix("HTTP/1.1 \(status)") && sent.answer.lowercased().contains("connection: close")
                    && sent.answer.contains("urn:calisson:problem:"), "\(sent.answer.prefix(300))")
            guard let answered = sent.answered, let ended = sent.ended, let closed = sent.closed else {
                Issue.record("\(status): answered \(sent.answered as Any) s, end of stream \(sent.ended as Any) s, closed \(sent.closed as Any) s")
                continue
            }
            // The end of the stream right after the answer; the connection closed at the end of
            // the lingering after it (2 s, `ContinueOrClose.lingerSeconds`; 3 s of margin for a
            // loaded machine: before, it was never closed while the client sent).
            #expect(ended - answered < 1, "\(status): the end of the stream \(ended - answered) s after the answer")
            #expect(closed - answered < 5, "\(status): closed \(closed - answered) s after the answer")
        }
        // Lingering connections closed, the gateway answers on a new one.
        #expect([200, 503].contains(try await GatewayTests.get(port, "/health", key: nil).status))
    }

    /// What a client got wrong is named, on the live gateway: a body that is not I-JSON (a
    /// number that is not a whole Int64, a member named twice: StrictJSON), a field of the
    /// wrong type or missing, and bytes that are not HTTP/1.1 at all (answered with a problem
    /// document and the connection ended, where Hummingbird wrote a bare 400); a path that is
    /// no operation (404 whatever the method) and a method its path does not have (405). The
    /// gateway stays up and answers the next client.
    @Test func whatAClientGotWrongIsNamed() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [submitter.entry])
        defer { serving.cancel() }
        let head = "Host: 127.0.0.1\r\nAuthorization: Bearer \(submitter.secret)\r\nContent-Type: application/json\r\n"
        func post(_ path: String, _ body: String) -> String {
            Raw.exchangeWhole(port, "POST \(path) HTTP/1.1\r\n\(head)Idempotency-Key: k1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        }
        func reward(_ units: String) -> String {
            #"{"programme": "mobilite", "account": "\#(String(repeating: "ab", count: 32))", "units": \#(units), "evidence": "trip"}"#
        }
        let cases: [(answer: String, status: Int, detail: String)] = [
            (post("/v1/rewards", reward("1.5")), 400, "holds one of the numbers that are not whole numbers from -2^63 to 2^63 - 1: units: 1.5 is not a whole number"),
            (post("/v1/rewards", reward("18446744073709551615")), 400, "units: 18446744073709551615 is out of range"),
            // A member the document does not define is ignored, whatever its number.
            (post("/v1/transactions", #"{"transaction": "0g", "note": 1.5}"#), 400, "transaction must be the hex"),
            (post("/v1/transactions", #"{"transaction": "ab", "transaction": "cd"}"#), 400, #"the member \"transaction\" appears twice"#),
            (post("/v1/transaction-batches", #"{"transactions": ["ab", 3]}"#), 400, "transactions[1]: wrong type (expected a string)"),
            (post("/v1/transaction-batches", #"{"transactions": "ab"}"#), 400, "transactions: wrong type (expected a list)"),
            (post("/v1/transaction-batches", #"[]"#), 400, "the body: wrong type (expected an object)"),
            (post("/v1/transaction-batches", #"{}"#), 400, "transactions: missing"),
            // A parameter is not the body (its decoder names no field).
            (post("/v1/transactions?wait=maybe", #"{"transaction": "ab"}"#), 400, "the parameter wait: 'maybe' is not one of true, false, certified"),
            (Raw.exchangeWhole(port, "GET /v1/events?certified=yes HTTP/1.1\r\n\(head)Connection: close\r\n\r\n"), 400, "a parameter (in the path or the query): wrong type (expected true or false)"),
            (Raw.exchangeWhole(port, "FOO / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), 400, "its method is not an HTTP method"),
            (Raw.exchangeWhole(port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: \(String(repeating: "a", count: 200_000))\r\n\r\n"), 431, "over the gateway's bounds"),
            (Raw.exchangeWhole(port, "POST /v1/transactions HTTP/1.1\r\n\(head)Transfer-Encoding: chunked\r\n\r\nzz\r\n"), 400, "a chunk's size is not a hexadecimal length"),
        ]
        for (answer, status, detail) in cases {
            #expect(answer.hasPrefix("HTTP/1.1 \(status) ") && answer.contains("application/problem+json") && answer.contains(detail), "\(answer.prefix(400))")
        }
        // The bytes that are not HTTP end their connection.
        for answer in cases.suffix(3).map(\.answer) { #expect(answer.lowercased().contains("connection: close"), "\(answer.prefix(300))") }
        // A path that is no operation is a 404 whatever the method (it was a 405 but for GET);
        // a method an operation's path does not have a 405 naming those it has.
        for method in ["OPTIONS", "POST", "DELETE", "GET"] {
            let answer = Raw.exchangeWhole(port, "\(method) /v1/nothing-here HTTP/1.1\r\n\(head)Content-Length: 0\r\n\r\n")
            #expect(answer.hasPrefix("HTTP/1.1 404 ") && answer.contains("is not an operation of this gateway"), "\(method): \(answer.prefix(300))")
        }
        for (request, allow) in [("POST /v1/status", "GET, HEAD"), ("GET /v1/transactions", "POST"), ("PUT /v1/accounts/\(String(repeating: "ab", count: 32))", "GET, HEAD")] {
            let answer = Raw.exchangeWhole(port, "\(request) HTTP/1.1\r\n\(head)Content-Length: 0\r\n\r\n")
            #expect(answer.hasPrefix("HTTP/1.1 405 ") && answer.lowercased().contains("allow: \(allow.lowercased())"), "\(request): \(answer.prefix(300))")
        }
        // The public side too: a path of no page is a 404 whatever the method.
        for request in ["POST /fr/nothing", "DELETE /open-data/v1/x/y", "PUT /en"] {
            let answer = Raw.exchangeWhole(port, "\(request) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
            let status = request == "PUT /en" ? 405 : 404
            #expect(answer.hasPrefix("HTTP/1.1 \(status) "), "\(request): \(answer.prefix(300))")
        }
        // A number in a path in one form only.
        for path in ["/v1/blocks/+1", "/v1/blocks/007", "/v1/blocks/%31", "/v1/blocks/-1", "/v1/proposals/1e2", "/v1/statements/00/rtm"] {
            let answer = Raw.exchangeWhole(port, "GET \(path) HTTP/1.1\r\n\(head)\r\n")
            #expect(answer.hasPrefix("HTTP/1.1 400 ") && answer.contains("must be written in decimal digits"), "\(path): \(answer.prefix(300))")
        }
        #expect(!Raw.exchangeWhole(port, "GET /v1/blocks/1 HTTP/1.1\r\n\(head)\r\n").hasPrefix("HTTP/1.1 400"))
        // Empty segments are read as the router reads them: `/v1/status/` is `/v1/status`.
        #expect(!Raw.exchangeWhole(port, "GET /v1/status/ HTTP/1.1\r\n\(head)\r\n").hasPrefix("HTTP/1.1 404"))
        // Whatever its Content-Type says, a body is checked as the JSON it is read as.
        let wildcard = Raw.exchangeWhole(port, "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(submitter.secret)\r\n"
            + "Content-Type: */*\r\nContent-Length: 40\r\n\r\n" + #"{"transaction":"00","transaction":"01",}"#)
        #expect(wildcard.hasPrefix("HTTP/1.1 400 ") && wildcard.contains("appears twice"), "\(wildcard.prefix(400))")
        // Bad bytes pipelined behind two requests wait for both answers, then are answered
        // with a problem document, whatever the client sends after them.
        let get = "GET /v1/nothing HTTP/1.1\r\n\(head)\r\n"
        for trailer in ["", String(repeating: "x", count: 300_000)] {
            let answers = try await GatewayTests.blocking { Raw.untilClosed(port, get + get + "\u{01}garbage\r\n\r\n" + trailer, seconds: 10) }
            let statuses = answers.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }.filter { $0.allSatisfy(\.isNumber) }
            #expect(statuses == ["404", "404", "400"] && answers.contains("its method is not an HTTP method"), "\(trailer.count) bytes after: \(statuses) \(answers.suffix(300))")
        }
        #expect([200, 503].contains(try await GatewayTests.get(port, "/health", key: nil).status))
    }
}

/// What reaches the handler after `ContinueOrClose`: request paths, ends, the end of input.
final class EventRecorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPRequestPart
    var seen: [String] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(request): seen.append(request.path ?? "")
        case .body: seen.append("body")
        case .end: seen.append("end")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event as? ChannelEvent ?? .outputClosed { seen.append("input closed") }
    }
}

/// Raw HTTP/1.1 on a loopback socket, for what URLSession does not send.
enum Raw {
    static func connect(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = in_port_t(UInt16(clamping: port).bigEndian)
        target.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var wait = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func send(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return }  // the server closed: what it answered is read next
            bytes = bytes.dropFirst(sent)
        }
    }

    /// Sends `bytes` (as much as the server takes) and reads until it closes the
    /// connection or `seconds` pass: every answer it wrote.
    static func untilClosed(_ port: Int, _ bytes: String, seconds: Int) -> String {
        let fd = connect(port)
        defer { close(fd) }
        send(fd, bytes)
        var text = ""
        while true {
            let part = read(fd, seconds: seconds)
            if part.text.isEmpty { return text }
            text += part.text
        }
    }

    /// Sends `request` and reads one whole answer (however many segments it comes in).
    static func exchangeWhole(_ port: Int, _ request: String) -> String {
        let fd = connect(port)
        defer { close(fd) }
        send(fd, request)
        return answer(fd, seconds: 10).text
    }

    /// Sends `request` and reads the answer's first bytes.
    static func exchange(_ port: Int, _ request: String) -> String {
        let fd = connect(port)
        defer { close(fd) }
        send(fd, request)
        var buffer = [UInt8](repeating: 0, count: 4_096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : ""
    }

    /// Sends `head`, then a byte every 0.3 s until an answer comes (or `seconds` pass):
    /// the answer's first bytes and when it came.
    static func dribble(_ port: Int, _ head: String, seconds: Double) -> (answer: String, seconds: Double) {
        let fd = connect(port)
        defer { close(fd) }
        let began = ContinuousClock.now
        func elapsed() -> Double {
            let duration = began.duration(to: .now)
            return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        send(fd, head)
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while elapsed() < seconds {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count > 0 { return (String(decoding: buffer[..<count], as: UTF8.self), elapsed()) }
            if count == 0 { return ("", elapsed()) }
            send(fd, " ")
            usleep(300_000)
        }
        return ("", elapsed())
    }

    /// What `sendOn` saw: the answer, and when (seconds after the head was sent) its first
    /// bytes came, the stream ended, and the connection was found closed (a send refused).
    struct SentOn {
        var answer = ""
        var answered: Double?
        var ended: Double?
        var closed: Double?
    }

    /// Sends `head`, then `chunk` every `everyMilliseconds` until the server closes the
    /// connection (a send refused: reset, or broken pipe) or `seconds` pass, reading what the
    /// server sends meanwhile.
    static func sendOn(_ port: Int, _ head: String, then chunk: String, everyMilliseconds: Int, seconds: Double) -> SentOn {
        let fd = connect(port)
        defer { close(fd) }
        let began = ContinuousClock.now
        func elapsed() -> Double {
            let duration = began.duration(to: .now)
            return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        var seen = SentOn()
        send(fd, head)
        var buffer = [UInt8](repeating: 0, count: 16_384)
        let bytes = Array(chunk.utf8)
        while elapsed() < seconds, seen.closed == nil {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count > 0 {
                if seen.answered == nil { seen.answered = elapsed() }
                seen.answer += String(decoding: buffer[..<count], as: UTF8.self)
            } else if count == 0, seen.ended == nil {
                seen.ended = elapsed()
            } else if count < 0, errno != EAGAIN, errno != EWOULDBLOCK {
                seen.closed = elapsed()
                break
            }
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if sent < 0, errno != EAGAIN, errno != EWOULDBLOCK { seen.closed = elapsed() }
            usleep(UInt32(everyMilliseconds * 1_000))
        }
        return seen
    }

    /// How many of `connections` the server closes: waits until `expecting` are closed (or
    /// `seconds` pass), then half a second more for any further one.
    static func closedByServer(_ connections: [Int32], expecting: Int, seconds: Double) -> Int {
        var open = Set(connections), closed = 0
        let deadline = ContinuousClock.now + .seconds(seconds)
        var settle: ContinuousClock.Instant?
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while ContinuousClock.now < (settle ?? deadline) {
            for fd in open {
                // 0: closed; an error other than "nothing yet": reset, closed too.
                let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK) else { continue }
                open.remove(fd)
                closed += 1
            }
            if closed >= expecting, settle == nil { settle = .now + .milliseconds(500) }
            usleep(20_000)
        }
        return closed
    }

    /// What one `recv` gave within `seconds`: its text, or that the server closed.
    struct Read: CustomStringConvertible {
        let text: String
        let closed: Bool
        var description: String { closed ? "closed" : text.isEmpty ? "nothing in time" : String(text.prefix(300)) }
    }

    static func read(_ fd: Int32, seconds: Int) -> Read {
        var wait = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 16_384)
        let count = recv(fd, &buffer, buffer.count, 0)
        return Read(text: count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : "", closed: count == 0)
    }

    /// One whole answer (its head, then the `Content-Length` bytes of its body), read within
    /// `seconds` per `recv`; what came if it came short.
    static func answer(_ fd: Int32, seconds: Int) -> Read {
        var text = ""
        while true {
            if let end = text.range(of: "\r\n\r\n") {
                let length = text[..<end.lowerBound].split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                if text[end.upperBound...].utf8.count >= length { return Read(text: text, closed: false) }
            }
            let part = read(fd, seconds: seconds)
            if part.text.isEmpty { return Read(text: text, closed: part.closed) }
            text += part.text
        }
    }

    /// Sends `text`, then waits for the server to close the connection: the seconds it
    /// took, nil if it was still open after `waitingAtMost`.
    static func secondsUntilClosed(_ port: Int, sending text: String, waitingAtMost seconds: Int) -> Double? {
        let fd = connect(port)
        defer { close(fd) }
        var wait = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        let began = ContinuousClock.now
        if !text.isEmpty { send(fd, text) }
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while recv(fd, &buffer, buffer.count, 0) > 0 {}
        let elapsed = began.duration(to: .now)
        let taken = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return taken < Double(seconds) - 0.1 ? taken : nil
    }
}

extension String.UTF8View {
    /// The bytes in slices of at most `maxLength`.
    func split(maxLength: Int) -> [ArraySlice<UInt8>] {
        let bytes = Array(self)
        return stride(from: 0, to: bytes.count, by: maxLength).map { bytes[$0..<Swift.min($0 + maxLength, bytes.count)] }
    }
}
