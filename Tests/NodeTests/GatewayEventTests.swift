// The gateway's event feed end to end: four validators on loopback, a governance vote
// that shrinks the validator set, blocks across an epoch close; the feed read whole from
// block 1, then read again in two parts (a disconnect, then Last-Event-ID) with no gap and
// no duplicate; filters; malformed positions refused.
import CalissonTestKit
import CalissonCrypto
import Foundation
@testable import Gateway
import Ledger
import LightClient
import Storage
import Synchronization
import Testing
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// A Server-Sent Events client over a plain socket (HTTP/1.1, chunked), blocking: the
/// test reads a feed as a browser would, and can drop it mid-stream.
struct FeedReader {
    struct Event: Equatable, Sendable {
        let id: String
        let name: String
        let json: String
        var data: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:] }
    }

    /// A TCP connection to the gateway on loopback (the caller closes it).
    static func connect(port: Int) throws -> Int32 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw GatewayError("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(socket)
            throw GatewayError("connect: \(errno)")
        }
        return socket
    }

    /// A feed opened and left unread: its status, and the socket to close.
    static func hold(port: Int, key: String) throws -> (status: Int, socket: Int32) {
        let socket = try connect(port: port)
        let request = "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\n\r\n"
        _ = request.withCString { send(socket, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 4_096)
        let count = recv(socket, &buffer, buffer.count, 0)
        let head = String(decoding: buffer[0..<max(0, count)], as: UTF8.self)
        return (Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0, socket)
    }

    /// The status and the events read until `enough` says so or `seconds` pass.
    static func read(
        port: Int, path: String, key: String, lastEventID: String? = nil, seconds: Double = 60, enough: ([Event]) -> Bool
    ) throws -> (status: Int, events: [Event]) {
        let socket = try connect(port: port)
        defer { close(socket) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer \(key)\r\n"
        if let lastEventID { request += "Last-Event-ID: \(lastEventID)\r\n" }
        request += "\r\n"
        _ = request.withCString { send(socket, $0, strlen($0), 0) }

        let deadline = Date().addingTimeInterval(seconds)
        var raw: [UInt8] = []
        func more() -> Bool {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let count = recv(socket, &buffer, buffer.count, 0)
            if count > 0 { raw += buffer[0..<count] }
            return count != 0 && Date() < deadline
        }
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = raw.indices.dropLast(3).first { Array(raw[$0..<$0 + 4]) == separator }
            if headerEnd == nil, !more() { throw GatewayError("no response headers") }
        }
        let head = String(decoding: raw[0..<headerEnd!], as: UTF8.self)
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        raw.removeFirst(headerEnd! + 4)
        guard status == 200 else { return (status, []) }

        // Chunks, then events (blank-line separated) out of the decoded text.
        var text = "", events: [Event] = []
        while !enough(events) {
            if let lineEnd = raw.indices.dropLast().first(where: { raw[$0] == 13 && raw[$0 + 1] == 10 }),
                let size = Int(String(decoding: raw[0..<lineEnd], as: UTF8.self), radix: 16), raw.count >= lineEnd + 2 + size + 2
            {
                guard size > 0 else { break }  // the last chunk: the server ended the stream
                text += String(decoding: raw[(lineEnd + 2)..<(lineEnd + 2 + size)], as: UTF8.self)
                raw.removeFirst(lineEnd + 2 + size + 2)
                while let end = text.range(of: "\n\n") {
                    var id = "", name = "", data = ""
                    for line in text[..<end.lowerBound].split(separator: "\n") {
                        if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
                        if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                        if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
                    }
                    text.removeSubrange(..<end.upperBound)
                    guard !id.isEmpty else { continue }  // a comment or the retry field
                    events.append(Event(id: id, name: name, json: data))
                    if enough(events) { break }
                }
                continue
            }
            if !more() { break }
        }
        return (status, events)
    }
}

@Suite(.serialized, .onOwnThreads) struct GatewayEventTests {
    /// A feed opened with no position starts at the next block, whatever a node says its
    /// height is: behind a node saying 2^64 − 1 (it started 4,096 blocks past the newest
    /// certified checkpoint, and the consumer waited for blocks that would take hours), the
    /// next transaction's event comes.
    @Test func aFeedFromNowStartsAtAFinalBlockWhateverANodeSays() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startSettled()
        defer { for node in nodes { node.stop() } }
        let liar = try Liar(before: nodes[1], of: cluster, lie: .height)
        defer { liar.stop() }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let (_, serving, port) = try await GatewayTests.start([NodeAddress(host: "127.0.0.1", port: liar.port)], cluster, keys: [reader.entry])
        defer { serving.cancel() }
        try await GatewayTests.untilHealthy(port)

        let reading = Task { try await GatewayTests.blocking {
            try FeedReader.read(port: port, path: "/v1/events?kind=transaction", key: reader.secret, seconds: 30) { !$0.isEmpty }
        } }
        // The feed is open (its start chosen) before the transaction is sent.
        var open = false
        for _ in 0..<300 where !open {
            open = try await GatewayTests.get(port, "/metrics", key: nil).text.contains("calisson_gateway_feeds_open 1")
            if !open { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(open, "the feed did not open")
        let attribution = cluster.attribute(by: 0, to: 5, nonce: 77)
        #expect(nodes[0].submit(attribution) == nil)
        let (status, events) = try await reading.value
        #expect(status == 200 && events.first?.data["id"] as? String == SignedTransaction.idTag.hash(attribution).hex, "\(status) \(events)")
    }

    /// The nodes answer a block's contents with no decided proposal's record (as past
    /// `StoreAnswers.decidedBytesMax` bytes of them): the feed asks for each by number.
    @Test func theFeedResumesWithNoGapAndNoDuplicate() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes(decidedBytesMax: 0)
        defer { for node in nodes { node.stop() } }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let feeder = APIKey.generate(name: "feeder", scopes: [.read])
        let (_, serving, port) = try await GatewayTests.start(nodes, cluster, keys: [reader.entry, feeder.entry])
        defer { serving.cancel() }
        let key = reader.secret

        // A decided proposal, then blocks past the first epoch close (epochs of 50 blocks).
        #expect(try await GatewayTests.blocking { cluster.shrinkValidators(to: 3, through: nodes) })
        try await GatewayTests.blocking {
            var nonce: UInt64 = 1
            cluster.advance(nodes, to: 53, issuers: 3, nonce: &nonce)
        }
        // The last block with a transaction: empty blocks may follow it (the idle primary
        // completes the checkpoint interval), and make no event.
        let top: UInt64 = try {
            let store = try NodeStore(file: "\(cluster.directory)/p0.db", readOnly: true)
            var height = nodes[0].height
            while height > 0, try store.block(at: height)?.transactions.isEmpty ?? true { height -= 1 }
            return height
        }()
        #expect(top >= 53)
        @Sendable func reachedTop(_ events: [FeedReader.Event]) -> Bool {
            events.contains { ($0.data["height"] as? Int).map { UInt64($0) >= top } ?? false }
        }

        let whole = try await GatewayTests.blocking { try FeedReader.read(port: port, path: "/v1/events?from=1", key: key, enough: reachedTop) }
        #expect(whole.status == 200)
        let events = whole.events
        #expect(reachedTop(events), "\(events.count) events, the last \(events.last?.id ?? "none")")
        // In order, each once; every transaction's id once.
        let positions = events.map { event -> [Int] in event.id.split(separator: ".").map { Int($0) ?? -1 } }
        #expect(zip(positions, positions.dropFirst()).allSatisfy { $0.lexicographicallyPrecedes($1) })
        let ids = events.filter { $0.name == "transaction" }.compactMap { $0.data["id"] as? String }
        let store = try NodeStore(file: "\(cluster.directory)/p0.db", readOnly: true)
        let stored = try (1..<top).reduce(0) { $0 + (try store.block(at: $1)?.transactions.count ?? 0) }
        let below = events.filter { $0.name == "transaction" && ($0.data["height"] as? Int ?? Int.max) < Int(top) }
        #expect(Set(ids).count == ids.count && below.count == stored, "\(below.count) transaction events below \(top), \(stored) stored")
        #expect(events.contains { $0.name == "transaction" && $0.data["kind"] as? String == "propose" && $0.data["result"] as? String == "applied" })
        let decision = events.first { $0.name == "governance" }
        #expect(decision?.data["proposal"] as? Int == 1 && decision?.data["status"] as? String == "passed", "\(decision?.data ?? [:])")
        // What the nodes answered: the record left out, named; within the budget, carried.
        let answers = StoreAnswers(store: store)
        let decided = UInt64(try #require(decision?.data["height"] as? Int))
        let bare = try #require(try answers.blockContents(decided, decidedBytesMax: 0))
        let carried = try #require(try answers.blockContents(decided))
        #expect(bare.decided.isEmpty && bare.decidedLeftOut == [1] && carried.decidedLeftOut.isEmpty)
        #expect(carried.decided.compactMap { try? Proposal(wireBytes: $0).id } == [1])
        #expect(try ClientResponse(wireBytes: ClientResponse.blockContents(bare).wireBytes) == .blockContents(bare))
        // Without names left out, the answer is what a node before them sent: nothing after the proposals opened.
        let old = ClientResponse.blockContents(carried).wireBytes
        #expect(try ClientResponse(wireBytes: old) == .blockContents(carried))
        #expect(throws: WireError.self, "the names present and empty: a second encoding of the same answer") {
            try ClientResponse(wireBytes: old + [0, 0, 0, 0])
        }
        #expect(old.count + 4 + 8 == ClientResponse.blockContents(BlockContents(
            height: carried.height, body: carried.body, certificate: carried.certificate, results: carried.results, closedEpoch: carried.closedEpoch,
            decided: carried.decided, opened: carried.opened, decidedLeftOut: [7])).wireBytes.count)
        let epoch = events.first { $0.name == "epoch" }
        #expect(epoch?.data["epoch"] as? Int == 0 && epoch?.data["height"] as? Int == 50, "\(epoch?.data ?? [:])")

        // Certified: the same events, each once a checkpoint at or above its block confirms it
        // (the decision's record, the proposal opened, the epoch's report closed at 50); the
        // results are the node's word on this chain of rules 1, and said to be.
        let certified = try await GatewayTests.blocking {
            try FeedReader.read(port: port, path: "/v1/events?from=1&certified=true", key: key, enough: reachedTop)
        }
        #expect(certified.status == 200 && certified.events.map(\.id) == events.map(\.id))
        for (plain, confirmed) in zip(events, certified.events) {
            var data = confirmed.data
            #expect((data["checkpoint"] as? Int ?? 0) >= (data["height"] as? Int ?? .max), "\(confirmed.json)")
            if confirmed.name == "transaction" { #expect(data["resultVerified"] as? Bool == false, "\(confirmed.json)") }
            data["checkpoint"] = nil
            data["resultVerified"] = nil
            let bare = String(decoding: try JSONSerialization.data(withJSONObject: data, options: [.sortedKeys]), as: UTF8.self)
            let word = String(decoding: try JSONSerialization.data(withJSONObject: plain.data, options: [.sortedKeys]), as: UTF8.self)
            #expect(bare == word)
        }

        // Dropped after a few events, resumed with Last-Event-ID: the same events, none twice.
        let first = try await GatewayTests.blocking { try FeedReader.read(port: port, path: "/v1/events?from=1", key: key) { $0.count >= 7 } }
        #expect(first.events.count == 7)
        let last = first.events.last?.id ?? ""
        let rest = try await GatewayTests.blocking {
            try FeedReader.read(port: port, path: "/v1/events?from=1", key: key, lastEventID: last, enough: reachedTop)
        }
        #expect(first.events + rest.events == events, "resumed after \(last): \(rest.events.prefix(3).map(\.id))")

        // Filters.
        let governance = try await GatewayTests.blocking {
            try FeedReader.read(port: port, path: "/v1/events?from=1&kind=governance,epoch", key: key) { $0.count >= 2 }
        }
        #expect(governance.events.map(\.name) == ["governance", "epoch"])
        let citizen = Ed25519PublicKey(SHA256.hash("citizen 1")).bytes.hex
        let mine = try await GatewayTests.blocking {
            try FeedReader.read(port: port, path: "/v1/events?from=1&kind=transaction&account=\(citizen.uppercased())", key: key) { $0.count >= 5 }
        }
        #expect(mine.events.count == 5 && mine.events.allSatisfy { $0.data["account"] as? String == citizen })

        // Malformed positions and filters are refused by name; no key, no feed.
        for (path, id) in [("/v1/events", "12"), ("/v1/events", "x.1"), ("/v1/events", "18446744073709551615.0"), ("/v1/events?kind=blocks", nil)] {
            let refused = try await GatewayTests.blocking { try FeedReader.read(port: port, path: path, key: key, lastEventID: id) { _ in true } }
            #expect(refused.status == 400, "\(path) Last-Event-ID \(id ?? "-")")
        }
        #expect(try await GatewayTests.blocking { try FeedReader.read(port: port, path: "/v1/events", key: "wrong") { _ in true } }.status == 401)

        // One key cannot take every feed: 32 open, the 33rd refused, another key served. (A
        // feed its client left keeps its place until the gateway next writes to it, within
        // 15 s: this key has none of those.)
        let feeds = feeder.secret
        let held = try await GatewayTests.blocking { try (0..<EventFeed.consumersPerClientMax).map { _ in try FeedReader.hold(port: port, key: feeds) } }
        #expect(held.allSatisfy { $0.status == 200 }, "\(held.map(\.status))")
        #expect(try await GatewayTests.blocking { try FeedReader.read(port: port, path: "/v1/events", key: feeds) { _ in true } }.status == 503)
        let another = try await GatewayTests.blocking { try FeedReader.hold(port: port, key: key) }
        #expect(another.status == 200)
        for feed in held + [another] { close(feed.socket) }

        // A consumer that stops taking events (its buffer is full) has its stream ended
        // after the last event it took, counted; resuming from there loses nothing (above).
        let feed = EventFeed(pool: NodePool(
            nodes: nodes.map { NodeAddress(host: "127.0.0.1", port: $0.transport.clientPort) }, ca: cluster.ca, genesis: cluster.genesis, lagMax: 32))
        feed.advance(to: top)
        var taken: [String] = []
        await feed.produce(from: FeedPosition(height: 1), filter: FeedFilter()) { text in
            guard taken.count < 6 else { return false }
            taken.append(text)
            return true
        }
        #expect(taken.count == 6 && feed.slowConsumersClosed.load(ordering: .relaxed) == 1)
        #expect(taken.dropFirst().map { $0.split(separator: "\n")[0] } == events.prefix(5).map { "id: \($0.id)" })

        // A filter that matches nothing still writes every 16 blocks: the walk goes at its
        // consumer's pace, and stops when it leaves (here, at the second comment).
        var quiet: [String] = []
        var nobody = FeedFilter()
        nobody.kinds = [.transaction]
        nobody.account = String(repeating: "ab", count: 32)
        await feed.produce(from: FeedPosition(height: 1), filter: nobody) { text in
            quiet.append(text)
            return quiet.count < 3
        }
        #expect(quiet.dropFirst() == [": at block 16\n\n", ": at block 32\n\n"], "\(quiet)")
    }
}

/// When the gateway shuts down (SIGTERM), its event feeds end first (`FeedCloser`): an open
/// stream waiting for the next block ends at once instead of holding the server's graceful
/// shutdown until its next keep-alive (15 s; `Cluster/local/down.sh` gives 10 s).
@Suite(.onOwnThreads) struct EventFeedShutdownTests {
    @Test func closingTheFeedEndsAWaitingStreamAtOnce() async throws {
        let cluster = try TestCluster(count: 1)
        let pool = NodePool(nodes: [NodeAddress(host: "127.0.0.1", port: 1)], ca: cluster.ca, genesis: cluster.genesis, lagMax: 32)
        defer { pool.close() }
        let feed = EventFeed(pool: pool)
        #expect(feed.openConsumer(client: "test") == nil)
        let body = feed.stream(from: FeedPosition(height: 1), filter: FeedFilter(), client: "test")
        var chunks = body.makeAsyncIterator()
        let first = try await chunks.next().map { String(decoding: $0, as: UTF8.self) }
        #expect(first?.hasPrefix("retry:") == true, "\(String(describing: first))")
        feed.closeAll()
        // Without the close, the next chunk would be a keep-alive 15 s later.
        let next = try await chunks.next()
        #expect(next == nil, "the stream went on: \(String(decoding: next ?? [], as: UTF8.self))")
        #expect(feed.consumers == 0)
        // A stream opened after the close ends at once too.
        #expect(feed.openConsumer(client: "late") == nil)
        var late = feed.stream(from: FeedPosition(height: 1), filter: FeedFilter(), client: "late").makeAsyncIterator()
        while try await late.next() != nil {}
    }

    /// A feed's buffer full: the producer waits while the consumer's connection takes
    /// events (a consumer catching up from far behind, as fast as its connection goes, was
    /// ended as too slow once 1,024 events were ahead of it), and gives up on one that takes
    /// none for its time.
    @Test func aFullBufferWaitsForAConsumerThatReadsAndEndsOneThatDoesNot() async throws {
        let taken = EventFeed.Counter()
        let given = EventFeed.bufferedEventsMax + 50
        taken.value.store(50 - 3, ordering: .relaxed)  // three past the buffer's room
        let reader = Task(executorPreference: OwnThreads.shared) {
            for _ in 0..<4 {
                try await Task.sleep(for: .milliseconds(200))
                taken.value.add(1, ordering: .relaxed)
            }
        }
        let started = ContinuousClock.now
        // A patient bound: the reader's turns may come late on a loaded machine (a CI run
        // saw none for over 5 s while a cluster of processes started beside it).
        #expect(await EventFeed.room(given: given, taken: taken, slowSeconds: 60))
        #expect(ContinuousClock.now - started >= .milliseconds(700), "room before the consumer took enough")
        try await reader.value
        // Nothing taken for the slow time: too slow.
        #expect(await EventFeed.room(given: given + 1, taken: taken, slowSeconds: 1) == false)
    }

    /// A feed's buffer is bounded by bytes too (a proposal's event is some 9 KB): one event
    /// of the whole byte share waiting leaves no room until the connection takes it; an
    /// empty buffer takes an event whatever its size. The blocks' events kept for the feeds
    /// are bounded by bytes as by blocks, the oldest dropped first.
    @Test func aFeedsBufferAndTheCacheAreBoundedByBytes() async throws {
        let taken = EventFeed.Counter()
        #expect(await EventFeed.room(given: 1, givenBytes: EventFeed.bufferedBytesMax, taken: taken, slowSeconds: 1) == false)
        #expect(await EventFeed.room(given: 0, givenBytes: 0, taken: taken, slowSeconds: 1))
        taken.value.add(1, ordering: .relaxed)
        taken.bytes.add(EventFeed.bufferedBytesMax, ordering: .relaxed)
        #expect(await EventFeed.room(given: 1, givenBytes: EventFeed.bufferedBytesMax, taken: taken, slowSeconds: 1))

        func block(_ height: UInt64, bytes: Int) -> [FeedEvent] {
            [FeedEvent(height: height, index: 0, kind: .governance, programmes: [], partners: [], accounts: [], data: String(repeating: "x", count: bytes))]
        }
        var cache: [UInt64: [FeedEvent]] = [:]
        var bytes = 0
        for height in UInt64(1)...10 {
            cache[height] = block(height, bytes: 1_000)
            bytes += cache[height]!.reduce(0) { $0 + $1.byteCount }
            EventFeed.trim(&cache, bytes: &bytes, blocksMax: 512, bytesMax: 4_000)
        }
        #expect(cache.keys.sorted() == [8, 9, 10] && bytes == cache.values.joined().reduce(0) { $0 + $1.byteCount })
        EventFeed.trim(&cache, bytes: &bytes, blocksMax: 2, bytesMax: 4_000)
        #expect(cache.keys.sorted() == [9, 10])
        // A block larger than the bound alone is not kept.
        cache[11] = block(11, bytes: 10_000)
        bytes += cache[11]!.reduce(0) { $0 + $1.byteCount }
        EventFeed.trim(&cache, bytes: &bytes, blocksMax: 512, bytesMax: 4_000)
        #expect(cache.isEmpty && bytes == 0)
    }

    /// The verified copy's follower stopped with the gateway (its task cancelled, the node
    /// connections closed under a sync in flight) logs nothing as trouble: a graceful stop
    /// logged a warning for it.
    @Test func theCopyStoppedWithTheGatewayIsNoTrouble() async throws {
        let cluster = try TestCluster(count: 1)
        let silent = LoopbackPort(listening: true)  // the sync's request waits: nothing answers
        let pool = NodePool(nodes: [NodeAddress(host: "127.0.0.1", port: silent.port)], ca: cluster.ca, genesis: cluster.genesis,
                            lagMax: 32, timeoutMilliseconds: 60_000, mirrorPagesMax: 1_000)
        let logged = Mutex<[String]>([])
        let follower = Task { await pool.followMirror { message, trouble in if trouble { logged.withLock { $0.append(message) } } } }
        try await Task.sleep(for: .milliseconds(300))
        follower.cancel()
        pool.close()
        await follower.value
        #expect(logged.withLock { $0 }.isEmpty, "\(logged.withLock { $0 })")
    }
}
