// What an outsider can send a node does not stop it (issue 16): client requests at
// extreme heights are answered (item 1); a database is refused with another genesis
// (item 3); idle, crowding and flooding clients are cut off while others are served
// (item 5); a submission the node cannot take says why (item 7); /health counts only
// validators of the current set (item 8); a stale certified answer is refused by the
// query CLI's freshness rule (item 9). Each test names the item it covers.
import CalissonTestKit
import Consensus
import CalissonCrypto
import Foundation
import Ledger
import LightClient
@testable import Node
@testable import Storage
import Testing
@testable import Transport
import Wire

@Suite(.serialized, .onOwnThreads) struct HardeningTests {
    /// Heights at and past 2^63 (SQLite's integers are signed) in every request that takes
    /// one: the node answers "nothing there" and keeps serving (item 1).
    @Test func requestsAtExtremeHeightsAreAnsweredAndTheNodeStaysUp() throws {
        let cluster = try TestCluster(count: 1)
        let node = try cluster.startNodes()[0]
        defer { node.stop() }
        let client = try TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        func ask(_ request: ClientRequest) throws -> ClientResponse {
            try ClientResponse(wireBytes: try client.request(request.wireBytes, timeoutMilliseconds: 5_000))
        }
        for height in [UInt64(1) << 63, UInt64.max, UInt64.max - 1, UInt64(Int64.max)] {
            #expect(try ask(.block(height)) == .block(nil))
            #expect(try ask(.blockTransactions(height)) == .blockTransactions(nil))
            #expect(try ask(.handovers(after: height)) == .handovers([]))
            #expect(try ask(.blocks(from: height, limit: UInt32.max, waitMilliseconds: 0)) == .blocks([]))
        }
        #expect(try ask(.accountTransactions(SHA256.hash("anyone"), limit: UInt32.max)) == .accountTransactions([]))
        guard case .status = try ask(.status) else {
            Issue.record("the node stopped answering")
            return
        }
    }

    /// The store itself answers such heights with nothing (item 1, below the node).
    @Test func theStoreAnswersHeightsPastInt64WithNothing() throws {
        let file = Scratch.file("extreme.db")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let store = try NodeStore(file: file, create: true)
        #expect(try store.block(at: UInt64.max) == nil)
        #expect(try store.block(at: 1 << 63) == nil)
        #expect(try store.handovers(after: UInt64.max, limit: 10).isEmpty)
        #expect(try store.checkpoint(atOrBelow: UInt64.max) == nil)
    }

    /// A database created with one genesis is refused, by a sentence, under another: the
    /// recorded digest (item 3), and for a database from before the digest was recorded,
    /// the stored consensus schedule, never a trap in the replica.
    @Test func aDatabaseIsRefusedUnderAnotherGenesis() throws {
        let one = try TestCluster(count: 1)
        let two = try TestCluster(count: 2)
        let node = try NodeRuntime(configuration: one.configuration(0))
        try node.start()
        _ = node.submit(one.attribute(by: 0, to: 1, nonce: 1))
        #expect(eventually { node.height >= 1 })
        node.stop()
        var other = two.configuration(0)
        other.databaseFile = one.configuration(0).databaseFile
        #expect(throws: NodeError.self) { _ = try NodeRuntime(configuration: other) }
        do { _ = try NodeRuntime(configuration: other) } catch {
            #expect("\(error)".contains("was created with another genesis"), "\(error)")
        }
        // A database from before the record: the right genesis records it; another is refused
        // (here by the last block's certificate or the schedule) without recording anything.
        try Database(file: other.databaseFile, mode: .readWrite, create: false).execute("DELETE FROM meta WHERE name = 'extra.genesis'")
        #expect(throws: (any Error).self) { _ = try NodeRuntime(configuration: other) }
        #expect(try NodeStore(file: other.databaseFile, readOnly: true).extra("genesis") == nil)
        let again = try NodeRuntime(configuration: one.configuration(0))
        #expect(try again.store.extra("genesis") == one.genesis.digest.bytes)
        try again.start()
        again.stop()
    }

    /// Idle clients are closed after `clientIdleMilliseconds`, an address past its quota is
    /// refused, a client over the request rate is cut off; a well-behaved client is served
    /// throughout (item 5). Idleness on one node (a 1.5 s limit, the good client asking
    /// every 100 ms: a loaded machine once stretched a 400 ms limit's margin to nothing),
    /// crowding and flooding on another whose idle limit (60 s) cannot close the crowd while
    /// a loaded machine connects it.
    @Test func idleCrowdingAndFloodingClientsAreCutOffWhileOthersAreServed() throws {
        func start(idleMilliseconds: UInt64) throws -> (NodeRuntime, TestCluster) {
            let cluster = try TestCluster(count: 1)
            var configuration = cluster.configuration(0)
            configuration.transport.clientPort = 0
            configuration.transport.clientIdleMilliseconds = idleMilliseconds
            configuration.transport.clientConnectionsPerAddressMax = 6
            configuration.transport.clientRequestsPerSecondMax = 50
            let node = try NodeRuntime(configuration: configuration)
            try node.start()
            return (node, cluster)
        }
        func connect(_ node: NodeRuntime, _ cluster: TestCluster) -> TransportClient? {
            try? TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId, timeoutMilliseconds: 2_000)
        }
        func served(_ client: TransportClient) -> Bool {
            guard let bytes = try? client.request(ClientRequest.status.wireBytes, timeoutMilliseconds: 2_000),
                case .status? = try? ClientResponse(wireBytes: bytes) else { return false }
            return true
        }

        // Idle: three clients connect (TLS and hello) and send nothing, and a fourth sends
        // only heartbeats (they kept a place for ever once).
        let (quick, quickCluster) = try start(idleMilliseconds: 1_500)
        defer { quick.stop() }
        let good = try #require(connect(quick, quickCluster))
        defer { good.close() }
        let idle = (0..<4).compactMap { _ in connect(quick, quickCluster) }
        defer { for client in idle { client.close() } }
        #expect(idle.count == 4)
        for _ in 0..<25 {  // 2.5 s: the good client asks every 100 ms, the idle ones nothing
            #expect(served(good))
            idle.last?.sendHeartbeat()
            Thread.sleep(forTimeInterval: 0.1)
        }
        // However late the node's idle timer runs: the good client goes on asking every
        // 100 ms meanwhile (well under the 50 requests a second it may send).
        let deadline = Date().addingTimeInterval(10)
        while quick.transport.counters.clientIdleClosed < 4 && Date() < deadline {
            #expect(served(good))
            idle.last?.sendHeartbeat()
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(quick.transport.counters.clientIdleClosed >= 4)
        for client in idle { #expect(!served(client), "an idle client was not closed") }

        // Crowding: one address may hold 6 connections (the steady one among them).
        let (node, cluster) = try start(idleMilliseconds: 60_000)
        defer { node.stop() }
        let steady = try #require(connect(node, cluster))
        defer { steady.close() }
        var crowd = (0..<5).compactMap { _ in connect(node, cluster) }.filter(served)
        defer { for client in crowd { client.close() } }
        #expect(crowd.count == 5)
        let refusedBefore = node.transport.counters.clientConnectionsPerAddressRefused
        if let extra = connect(node, cluster) {
            #expect(!served(extra), "a 7th connection from one address was served")
            extra.close()
        }
        #expect(node.transport.counters.clientConnectionsPerAddressRefused > refusedBefore)
        #expect(served(steady))
        for client in crowd { client.close() }
        crowd = []

        // Flooding: 200 pipelined requests at once, over 50 per second: cut off.
        #expect(eventually(5) {
            guard let flood = connect(node, cluster) else { return false }
            defer { flood.close() }
            let results = flood.pipeline((0..<200).map { _ in ClientRequest.status.wireBytes }, timeoutMilliseconds: 5_000)
            return results.contains { if case .failure = $0 { true } else { false } }
        })
        #expect(node.transport.counters.clientRateLimited >= 1)
        #expect(served(steady))
    }

    /// A long wait is no idleness: a client answered after a 1,500 ms `waitFinal` and asking
    /// again 200 ms later is served, with a 1,000 ms idle limit (the idle clock restarts at
    /// each answer, not only at each request). The limit leaves 800 ms for a loaded
    /// machine's scheduling (400 ms against 200 failed once in CI).
    @Test func aLongPollIsNotCutOffAsIdle() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        configuration.transport.clientIdleMilliseconds = 1_000
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let client = try TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        let waited = try ClientResponse(wireBytes: try client.request(
            ClientRequest.waitFinal(SHA256.hash("never"), timeoutMilliseconds: 1_500).wireBytes, timeoutMilliseconds: 5_000))
        #expect(waited == .transaction(nil))
        Thread.sleep(forTimeInterval: 0.2)
        guard case .status? = try? ClientResponse(wireBytes: client.request(ClientRequest.status.wireBytes, timeoutMilliseconds: 2_000)) else {
            Issue.record("the client was cut off as idle right after its long wait was answered")
            return
        }
        #expect(node.transport.counters.clientIdleClosed == 0)
    }

    /// A wait ends with its connection: a client that opens waits and closes, again and
    /// again, cannot fill the node's 100,000 places for waits (its waits once stayed until
    /// their deadline, and every gateway's and `follow`'s wait was then refused).
    @Test func aClientsWaitsEndWithItsConnection() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        configuration.metricsPort = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let height = node.height
        for round in 0..<3 {
            let client = try TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
            let waits = (0..<32).map { ClientRequest.waitFinal(SHA256.hash("never \(round) \($0)"), timeoutMilliseconds: 30_000).wireBytes }
                + (0..<32).map { _ in ClientRequest.blocks(from: height + 1_000, limit: 1, waitMilliseconds: 30_000).wireBytes }
            _ = client.pipeline(waits, timeoutMilliseconds: 100)  // sent; no answer comes in 100 ms
            #expect(eventually(10) { nodeMetric(node, "client_waits") == 64 }, "round \(round): \(String(describing: nodeMetric(node, "client_waits")))")
            client.close()
            #expect(eventually(10) { nodeMetric(node, "client_waits") == 0 }, "round \(round): \(String(describing: nodeMetric(node, "client_waits")))")
        }
        // A wait on an open connection is still answered.
        let client = try TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        let waited = try ClientResponse(wireBytes: try client.request(
            ClientRequest.waitFinal(SHA256.hash("never"), timeoutMilliseconds: 200).wireBytes, timeoutMilliseconds: 5_000))
        #expect(waited == .transaction(nil))
        #expect(nodeMetric(node, "client_waits") == 0)
    }

    /// A submission the node cannot take says why: a stopping node, a full loop queue
    /// (item 7), never "mempool full" for either.
    @Test func aRefusedSubmissionSaysWhy() throws {
        let cluster = try TestCluster(count: 1)
        let node = try NodeRuntime(configuration: cluster.configuration(0))
        try node.start()
        // The loop busy and its queue full: overloaded.
        let release = DispatchSemaphore(value: 0), busy = DispatchSemaphore(value: 0)
        try node.loop.execute {
            busy.signal()
            release.wait()
        }
        busy.wait()
        while (try? node.loop.execute({})) != nil {}
        #expect(node.submit(cluster.attribute(by: 0, to: 1, nonce: 1)) == .overloaded)
        release.signal()
        #expect(eventually { node.submit(cluster.attribute(by: 0, to: 1, nonce: 2)) == nil })
        node.stop()
        #expect(node.submit(cluster.attribute(by: 0, to: 1, nonce: 3)) == .stopping)
    }

    /// One signer flooding a node's mempool is refused past its share (`mempoolShare`, before
    /// its signature is checked) once the mempool runs short; another signer's transactions
    /// are still taken, until the mempool is full. No quorum (one node of two started), so
    /// no block empties the mempool meanwhile.
    @Test func aSignerFloodingTheMempoolLeavesRoomToOthers() throws {
        let cluster = try TestCluster(count: 2)
        var configuration = cluster.configuration(0)
        configuration.mempoolCountMax = 8
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        for nonce in 1...6 { #expect(node.submit(cluster.attribute(by: 0, to: 1, nonce: UInt64(nonce))) == nil) }
        #expect(node.submit(cluster.attribute(by: 0, to: 1, nonce: 7)) == .mempoolShare)
        #expect(node.submit(cluster.attribute(by: 0, to: 1, nonce: 1)) == .duplicate)
        for nonce in 1...2 { #expect(node.submit(cluster.attribute(by: 1, to: 1, nonce: UInt64(nonce))) == nil) }
        #expect(node.submit(cluster.attribute(by: 1, to: 1, nonce: 3)) == .mempoolFull)
    }

    /// The node's operator endpoint (/metrics, /health) against a client that misbehaves:
    /// HEAD answered with GET's head and no body, another method 405; a crowd of idle
    /// connections past 64 closed as soon as accepted (counted), the rest closed once their
    /// 5 s are up, after which the endpoint answers again: a scraper leaking connections
    /// never holds more of the node's file descriptors than that.
    @Test func theOperatorEndpointBoundsWhatAClientHolds() throws {
        let cluster = try TestCluster()
        var configuration = cluster.configuration(0)
        configuration.metricsPort = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let port = Int(node.metricsPort)

        let head = Raw.connect(port)
        Raw.send(head, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        var answer = "", closed = false
        while !closed {
            let part = Raw.read(head, seconds: 3)
            answer += part.text
            closed = part.closed || part.text.isEmpty
        }
        close(head)
        let (status, body) = (answer.split(separator: "\r\n").first ?? "", answer.components(separatedBy: "\r\n\r\n").dropFirst().joined())
        #expect(status == "HTTP/1.1 200 OK" && answer.contains("Content-Length: ") && body.isEmpty, "\(answer.prefix(300))")
        let post = Raw.exchange(port, "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        #expect(post.hasPrefix("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"), "\(post.prefix(300))")

        let began = ContinuousClock.now
        let crowd = (0..<80).map { _ in Raw.connect(port) }
        defer { for fd in crowd { close(fd) } }
        // The 16 past the 64 at once; then the 64 at their deadline (5 s), not before 4 s.
        #expect(Raw.closedByServer(crowd, expecting: 16, seconds: 3) == 16)
        #expect(Raw.closedByServer(crowd, expecting: 80, seconds: 10) == 80)
        #expect(began.duration(to: .now) > .seconds(4))
        let metrics = HTTPEndpoint.get(port: node.metricsPort, "/metrics") ?? ""
        #expect(metrics.contains("calisson_metrics_connections_refused_total 16"), "\(metrics.prefix(300))")
    }

    /// /health counts the validators of the current set only: after a change to {p0, p1, p2}
    /// with p1 and p2 stopped, p0 is still linked to p3 but has no quorum (item 8).
    @Test func healthCountsOnlyValidatorsOfTheCurrentSet() throws {
        let cluster = try TestCluster()
        let nodes = try (0..<4).map { index in
            var configuration = cluster.configuration(index)
            if index == 0 { configuration.metricsPort = 0 }
            return try NodeRuntime(configuration: configuration)
        }
        for node in nodes { try node.start() }
        defer { for node in nodes { node.stop() } }
        TestCluster.link(nodes)
        #expect(cluster.shrinkValidators(to: 3, through: nodes))
        // Blocks until the new set is the consensus epoch's.
        var nonce: UInt64 = 0
        while nodes[0].replicaValidatorCount() != 3, nonce < 200 {
            let before = nodes[0].height
            _ = nodes[Int(nonce % 3)].submit(cluster.attribute(by: Int(nonce % 3), to: Int(nonce), nonce: nonce))
            nonce += 1
            _ = eventually(5) { nodes[0].height > before }
        }
        #expect(nodes[0].replicaValidatorCount() == 3)
        let healthy = HTTPEndpoint.get(port: nodes[0].metricsPort, "/health") ?? ""
        #expect(healthy.contains("200") && healthy.contains("3 validators of the current set reachable, quorum 2"), "\(healthy)")
        nodes[1].stop()
        nodes[2].stop()
        #expect(eventually { nodes[0].transport.linkedPeers() == ["p3"] })
        let health = HTTPEndpoint.get(port: nodes[0].metricsPort, "/health") ?? ""
        #expect(health.contains("503") && health.contains("1 validators of the current set reachable"), "\(health)")
    }

    /// A node left behind answers with a checkpoint certified long ago: the query CLI
    /// refuses it when a witness knows a newer one, and once it has seen a newer one
    /// itself (its memory), and says how far behind every answer is (item 9).
    @Test func aStaleCertifiedAnswerIsRefused() throws {
        let calisson = try productsDirectory() + "/calisson"
        let cluster = try TestCluster()
        let genesisPath = "\(cluster.directory)/genesis.json", caPath = "\(cluster.directory)/ca.crt"
        try JSONEncoder().encode(cluster.genesisFile).write(to: URL(fileURLWithPath: genesisPath))
        try cluster.ca.pem.write(toFile: caPath, atomically: true, encoding: .utf8)
        var nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        var nonce: UInt64 = 0
        cluster.advance(nodes, to: 24, issuers: 3, nonce: &nonce)
        nodes[3].stop()
        let left = nodes[3].height
        cluster.advance(nodes, to: left + 3 * Freshness.lagMaxDefault, issuers: 3, nonce: &nonce)
        // p3 back, alone: it answers from the checkpoints it had.
        var alone = cluster.configuration(3)
        alone.transport.clientPort = 0
        nodes[3] = try NodeRuntime(configuration: alone)
        try nodes[3].start()
        let stale = "127.0.0.1:\(nodes[3].transport.clientPort)", fresh = "127.0.0.1:\(nodes[0].transport.clientPort)"
        let base = ["balance", SHA256.hash("citizen 1").hex, "--genesis", genesisPath, "--ca", caPath, "--chain", TestCluster.chainId,
                    "--checkpoints", "\(cluster.directory)/checkpoints.json"]

        // Nothing to compare with yet: the stale answer is all this client knows.
        let first = try run(calisson, base + ["--node", stale])
        #expect(first.status == 0, "\(first.errors)")
        // A witness knows better.
        let witnessed = try run(calisson, base + ["--node", stale, "--witness", fresh])
        #expect(witnessed.status != 0 && witnessed.errors.contains("blocks behind the newest certified checkpoint known"), "\(witnessed.output) \(witnessed.errors)")
        #expect(witnessed.errors.contains("from witness \(fresh)"), "\(witnessed.errors)")
        // The fresh node: answered, with how far behind it is; remembered.
        let current = try run(calisson, base + ["--node", fresh, "--witness", stale])
        #expect(current.status == 0 && current.output.contains("blocks behind the newest certified checkpoint known"), "\(current.output) \(current.errors)")
        // The stale node again, no witness: this client's memory refuses to go back.
        let again = try run(calisson, base + ["--node", stale])
        #expect(again.status != 0 && again.errors.contains("this client's memory"), "\(again.output) \(again.errors)")
        // A looser bound lets it through, saying how far behind it is.
        let loose = try run(calisson, base + ["--node", stale, "--max-lag", "1000"])
        #expect(loose.status == 0 && loose.output.contains("blocks behind the newest certified checkpoint known ("), "\(loose.output) \(loose.errors)")
        // A bare file name is a file of the working directory (its directory, "", is not made).
        let bare = try run("/bin/sh", ["-c", "cd \"$0\" && exec \"$@\"", cluster.directory, calisson] + base.dropLast(2) + ["--checkpoints", "bare.json", "--node", fresh])
        #expect(bare.status == 0, "\(bare.output) \(bare.errors)")
        #expect(FileManager.default.fileExists(atPath: "\(cluster.directory)/bare.json"))
    }
}
