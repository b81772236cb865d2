// The gateway's connections to the nodes on its event loops (`NodeConnections`): many
// requests at once share a few connections and each gets its own answer; a node that
// accepts and never answers fails its requests at their timeout without holding those of
// another node; a node that refuses the connection fails at once.
import CalissonCrypto
import CalissonTestKit
import Foundation
import LightClient
import NIOCore
import NIOPosix
import Synchronization
import Testing
import Wire

@testable import Gateway
@testable import Transport

@Suite(.onOwnThreads) struct NodeConnectionsTests {
    static func address(_ port: LoopbackPort) -> NodeAddress { NodeAddress(host: "127.0.0.1", port: port.port) }

    /// Ends a test's event loops from a thread of its own (not from the test's task).
    static func shutDown(_ group: MultiThreadedEventLoopGroup) {
        Thread { try? group.syncShutdownGracefully() }.start()
    }

    static func request(_ n: UInt8) -> ClientRequest {
        .transactionProof(Bytes32([n] + [UInt8](repeating: 0, count: 31))!)
    }

    /// An echo node and the gateway's connections to it on `threads` event loops.
    struct EchoFixture {
        let node: NodeConnectionsEchoNode
        let group: MultiThreadedEventLoopGroup
        let connections: NodeConnections

        init(delayMilliseconds: Int, idleMilliseconds: UInt64? = nil, threads: Int) throws {
            node = try NodeConnectionsEchoNode(delayMilliseconds: delayMilliseconds, idleMilliseconds: idleMilliseconds)
            group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            connections = try NodeConnections(nodes: [node.address], ca: node.ca, chainId: NodeConnectionsEchoNode.chainId, group: group)
        }

        /// The connections closed, the loops ended, the node stopped.
        func close() {
            connections.close()
            shutDown(group)
            node.stop()
        }
    }

    /// However many event loops (one per core), the gateway's connections to one node stay
    /// under the node's 64 per address, with room for the tools on the same host.
    @Test func theLoopsShareOneBudgetOfConnectionsPerNode() {
        #expect(NodeConnections.budget(loops: 2) == (4, 21, 3))
        for loops in 1...28 {
            let budget = NodeConnections.budget(loops: loops)
            #expect(budget.shared >= 1 && budget.longPolls >= 1 && budget.idle >= 0)
            #expect(loops * (budget.shared + budget.longPolls + budget.idle) <= NodeConnections.perNodeMax, "\(loops) loops: \(budget)")
        }
    }

    @Test func manyRequestsShareFewConnectionsAndEachGetsItsAnswer() async throws {
        let fixture = try EchoFixture(delayMilliseconds: 20, threads: 2)
        defer { fixture.close() }
        let (node, connections) = (fixture.node, fixture.connections)

        let count = 200
        let answers = try await withThrowingTaskGroup(of: (Int, [ClientResponse]).self) { tasks in
            for n in 0..<count {
                tasks.addTask { (n, try await connections.ask(0, [Self.request(UInt8(n)), Self.request(UInt8((n + 1) % 256))], timeoutMilliseconds: 10_000)) }
            }
            var answers: [Int: [ClientResponse]] = [:]
            for try await (n, responses) in tasks { answers[n] = responses }
            return answers
        }
        #expect(answers.count == count)
        for (n, responses) in answers {
            #expect(responses == [.error("\(n)"), .error("\((n + 1) % 256)")], "request \(n)")
        }
        #expect(node.served == 2 * count)
        // 400 requests, at most 32 in flight on a connection: more than one connection,
        // never more than the cap per loop.
        let open = connections.openConnections(to: 0)
        #expect(open >= 2 && open <= 2 * NodeConnections.connectionsMax, "\(open) connections")
    }

    /// The requests asked during one turn of a loop leave together: one write (one TLS
    /// record) for all, not one each.
    @Test func requestsAskedInOneTurnLeaveInOneWrite() async throws {
        let fixture = try EchoFixture(delayMilliseconds: 0, threads: 1)
        defer { fixture.close() }
        let connections = fixture.connections
        // The connection open and ready first (requests asked before then leave together
        // once it is).
        #expect(try await connections.ask(0, [Self.request(0)], timeoutMilliseconds: 30_000) == [.error("0")])
        let before = connections.traffic.writes.load(ordering: .relaxed)

        // The loop held busy while 30 requests are asked (fewer than a connection carries at
        // once, 32, so that all go on the one open): it then runs their sends in one turn.
        let count = 30
        let asked = Locked(0)
        let released = Locked(false)
        fixture.group.next().execute {
            let began = ContinuousClock.now
            while !released.withLock({ $0 }) && began.duration(to: .now) < .seconds(10) { usleep(1_000) }
        }
        let answers = try await withThrowingTaskGroup(of: (Int, [ClientResponse]).self) { tasks in
            for n in 1...count {
                tasks.addTask {
                    asked.withLock { $0 += 1 }
                    return (n, try await connections.ask(0, [Self.request(UInt8(n))], timeoutMilliseconds: 30_000))
                }
            }
            // Every task has begun asking; a little more for each to reach the loop's queue.
            #expect(eventually(10) { asked.withLock { $0 } == count })
            try await Task.sleep(for: .milliseconds(200))
            released.withLock { $0 = true }
            var answers: [Int: [ClientResponse]] = [:]
            for try await (n, responses) in tasks { answers[n] = responses }
            return answers
        }
        for n in 1...count { #expect(answers[n] == [.error("\(n)")], "request \(n)") }
        let writes = connections.traffic.writes.load(ordering: .relaxed) - before
        #expect(connections.traffic.requests.load(ordering: .relaxed) == count + 1)
        // One write when every send waited for the loop; two or three if some came late (a
        // task not yet at the loop after the wait above, in a loaded process).
        #expect(writes >= 1 && writes <= 3, "\(writes) writes for \(count) requests asked in one turn")
    }

    @Test func aConnectionTheNodeClosedIsReplaced() async throws {
        let fixture = try EchoFixture(delayMilliseconds: 0, idleMilliseconds: 1_500, threads: 1)
        defer { fixture.close() }
        let (node, connections) = (fixture.node, fixture.connections)

        for round in 0..<3 {
            #expect(try await connections.ask(0, [Self.request(UInt8(round))], timeoutMilliseconds: 30_000) == [.error("\(round)")])
            #expect(try await connections.ask(0, [Self.request(9)], timeoutMilliseconds: 30_000, alone: true) == [.error("9")])
            // The node closes both connections once idle for 1.5 s (the next round may send
            // on one as it closes: sent again on a new one).
            let closed = 2 * (round + 1)
            #expect(eventually(30) { node.idleClosed >= closed }, "round \(round): the node closed \(node.idleClosed) idle connections")
        }
    }

    @Test func aLongPollHoldsNoOtherRequestToItsNode() async throws {
        let fixture = try EchoFixture(delayMilliseconds: 0, threads: 1)
        defer { fixture.close() }
        let (node, connections) = (fixture.node, fixture.connections)

        // Held by the node until released, on a connection of its own.
        var long = [UInt8](repeating: 0, count: 32)
        long[0] = 7
        long[1] = NodeConnectionsEchoNode.holdUntilReleased
        let poll = ClientRequest.transactionProof(Bytes32(long)!)
        async let polled = connections.ask(0, [poll], timeoutMilliseconds: 120_000, alone: true)
        #expect(eventually(30) { connections.openConnections(to: 0, alone: true) == 1 }, "the long poll was not sent")
        // The other requests get their answers while the poll is held.
        for n in 0..<10 {
            #expect(try await connections.ask(0, [Self.request(UInt8(n))], timeoutMilliseconds: 60_000) == [.error("\(n)")])
        }
        node.releaseHeld()
        #expect(try await polled == [.error("7")])
        // Its connection is kept for the next long poll.
        #expect(connections.openConnections(to: 0, alone: true) == 1)
    }

    @Test func aNodeThatNeverAnswersFailsInTimeAndHoldsNoOtherNode() async throws {
        let node = try NodeConnectionsEchoNode(delayMilliseconds: 0)
        defer { node.stop() }
        let quiet = LoopbackPort(listening: true), refusing = LoopbackPort(listening: false)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let connections = try NodeConnections(nodes: [Self.address(quiet), node.address, Self.address(refusing)], ca: node.ca, chainId: NodeConnectionsEchoNode.chainId, group: group)
        defer { connections.close() }
        defer { Self.shutDown(group) }

        final class Flag: Sendable { let value = Atomic<Bool>(false) }
        let silentEnded = Flag()
        async let silent: Result<[ClientResponse], any Error> = {
            defer { silentEnded.value.store(true, ordering: .relaxed) }
            do { return .success(try await connections.ask(0, [Self.request(1)], timeoutMilliseconds: 15_000)) } catch { return .failure(error) }
        }()
        // Meanwhile the answering node answers twenty requests at once: they do not wait
        // for the silent one's timeout.
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for n in 0..<20 {
                tasks.addTask {
                    let answer = try await connections.ask(1, [Self.request(UInt8(n))], timeoutMilliseconds: 60_000)
                    #expect(answer == [.error("\(n)")])
                }
            }
            try await tasks.waitForAll()
        }
        let ended = silentEnded.value.load(ordering: .relaxed)
        #expect(!ended, "the other node's answers waited for the silent one's timeout")
        switch await silent {
        case .success: Issue.record("a node that never answers gave an answer")
        case let .failure(error): #expect("\(error)".contains("no answer in 15000 ms"), "\(error)")
        }

        // Its next request opens a new connection and fails the same way; a refused
        // connection fails at once (not at its timeout), naming the node.
        await #expect(throws: ClientError.self) { try await connections.ask(0, [Self.request(3)], timeoutMilliseconds: 200) }
        let refusedAt = ContinuousClock.now
        do {
            _ = try await connections.ask(2, [Self.request(4)], timeoutMilliseconds: 60_000)
            Issue.record("a refused connection gave an answer")
        } catch {
            #expect("\(error)".contains("cannot connect to \(Self.address(refusing))"), "\(error)")
        }
        #expect(ContinuousClock.now - refusedAt < .seconds(30), "a refused connection waited for its timeout")
    }
}

/// A node's client port that speaks the protocol by hand (TLS, the hellos, frames) and
/// answers each request with the bytes `answer` makes of it: whole frames, or not.
private final class HandmadeNode: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    final class Ended: Sendable { let count = Atomic<Int>(0) }
    private let tls: TLSSession
    private var decoder = FrameDecoder()
    private var helloSent = false
    private let ended: Ended
    private let answer: @Sendable ([UInt8]) -> [UInt8]

    init(context: TLSContext, ended: Ended, answer: @escaping @Sendable ([UInt8]) -> [UInt8]) throws {
        tls = try TLSSession(context: context, role: .server)
        self.ended = ended
        self.answer = answer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            let plaintext = try buffer.withUnsafeReadableBytes { try tls.receive($0) }
            if tls.isHandshakeDone && !helloSent {
                helloSent = true
                try tls.send(FrameDecoder.frame(.hello, Hello(versions: TransportLimits.protocolVersions, chainId: NodeConnectionsEchoNode.chainId, partnerID: "p0").wireBytes))
            }
            decoder.append(plaintext)
            while let envelope = try decoder.next() {
                guard envelope.kind == .request else { continue }
                try tls.send(answer(envelope.payload))
            }
        } catch {
            context.close(promise: nil)
        }
        let outgoing = tls.takeOutgoing()
        if !outgoing.isEmpty { context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: outgoing)), promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        ended.count.add(1, ordering: .relaxed)
        context.fireChannelInactive()
    }

    /// A handmade node listening on loopback on `group`: its port, its listener, and its
    /// connections ended so far.
    static func listen(on group: MultiThreadedEventLoopGroup, answer: @escaping @Sendable ([UInt8]) -> [UInt8]) async throws -> (port: UInt16, listener: any Channel, ended: Ended, ca: Certificate) {
        let caKey = Ed25519PrivateKey(seed: SHA256.hash("ca").bytes)!
        let ca = try CertificateAuthority.makeRoot(name: "Calisson test CA", key: caKey)
        let key = Ed25519PrivateKey(seed: SHA256.hash("tls 0").bytes)!
        let certificate = try CertificateAuthority.issue(commonName: "p0", subjectKey: key.publicKey, ca: ca, caKey: caKey, serial: 100)
        let server = try TLSContext(role: .server, identity: TLSIdentity(certificate: certificate, key: key), trustedCA: ca, mutual: false)
        let ended = Ended()
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try HandmadeNode(context: server, ended: ended, answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (UInt16(try #require(listener.localAddress?.port)), listener, ended, ca)
    }
}

extension NodeConnectionsTests {
    /// A node that answers what nobody asked (broken or lying: one sending answers without
    /// end would keep a loop decrypting them) loses its connection; the request it did
    /// answer gets that answer, and the next request opens another connection.
    @Test func aNodeAnsweringNoRequestLosesItsConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Self.shutDown(group) }
        let node = try await HandmadeNode.listen(on: group) { _ in
            let answer = ClientResponse.error("once").wireBytes
            return FrameDecoder.frame(.response, answer) + FrameDecoder.frame(.response, answer)
        }
        defer { node.listener.close(promise: Optional<EventLoopPromise<Void>>.none) }
        let connections = try NodeConnections(nodes: [NodeAddress(host: "127.0.0.1", port: node.port)], ca: node.ca, chainId: NodeConnectionsEchoNode.chainId, group: group)
        defer { connections.close() }

        for round in 1...2 {
            let answers: [ClientResponse] = try await connections.ask(0, [Self.request(1)], timeoutMilliseconds: 60_000)
            #expect(answers == [.error("once")])
            #expect(eventually(30) { node.ended.count.load(ordering: .relaxed) == round }, "round \(round): the connection that carried an answer to no request stayed open")
            #expect(connections.openConnections(to: 0) == 0)
        }
    }

    /// A node that trickles large answers (a frame announced at 4 MiB, 2 MiB of it sent, the
    /// rest never) cannot hold the gateway's memory: past the loop's share of bytes held,
    /// the connection holding the most is closed and its request fails at once, not at its
    /// timeout; another node's requests are answered meanwhile.
    @Test func aNodeTricklingAnswersIsCutOffPastTheBytesHeld() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Self.shutDown(group) }
        let trickler = try await HandmadeNode.listen(on: group) { _ in
            [0x00, 0x40, 0x00, 0x00] + [UInt8](repeating: 0, count: 2 << 20)  // 4 MiB announced
        }
        defer { trickler.listener.close(promise: Optional<EventLoopPromise<Void>>.none) }
        let echo = try NodeConnectionsEchoNode(delayMilliseconds: 0)
        defer { echo.stop() }
        let connections = try NodeConnections(
            nodes: [NodeAddress(host: "127.0.0.1", port: trickler.port), echo.address], ca: trickler.ca, chainId: NodeConnectionsEchoNode.chainId,
            group: group, heldBytesPerLoopMax: 1 << 20)
        defer { connections.close() }

        let started = ContinuousClock.now
        do {
            _ = try await connections.ask(0, [Self.request(1)], timeoutMilliseconds: 60_000)
            Issue.record("a trickled answer was taken whole")
        } catch {
            #expect("\(error)".contains("not whole yet") && "\(error)".contains("over their share of 1048576"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(30), "the trickled answer was cut at its timeout, not at the bound")
        #expect(connections.traffic.cut.load(ordering: .relaxed) == 1)
        for n in 0..<3 {
            let answers: [ClientResponse] = try await connections.ask(1, [Self.request(UInt8(n))], timeoutMilliseconds: 60_000)
            #expect(answers == [.error("\(n)")])
        }
        #expect(connections.traffic.cut.load(ordering: .relaxed) == 1)
    }

    /// The connection cut is the largest of the node holding the most: a lying node's many
    /// connections, each holding less than an honest answer under way, count together, and
    /// the honest answer is not the one cut.
    @Test func theNodeHoldingTheMostLosesAConnectionNotTheLargestAnswer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Self.shutDown(group) }
        let liar = try await HandmadeNode.listen(on: group) { _ in [0x00, 0x40, 0x00, 0x00] + [UInt8](repeating: 0, count: 300 << 10) }
        defer { liar.listener.close(promise: Optional<EventLoopPromise<Void>>.none) }
        let slow = try await HandmadeNode.listen(on: group) { _ in [0x00, 0x40, 0x00, 0x00] + [UInt8](repeating: 0, count: 600 << 10) }
        defer { slow.listener.close(promise: Optional<EventLoopPromise<Void>>.none) }
        let connections = try NodeConnections(
            nodes: [NodeAddress(host: "127.0.0.1", port: liar.port), NodeAddress(host: "127.0.0.1", port: slow.port)], ca: liar.ca,
            chainId: NodeConnectionsEchoNode.chainId, group: group, heldBytesPerLoopMax: 1_650 << 10)
        defer { connections.close() }

        final class Outcome: Sendable { let failures = Mutex<[String]>([]) }
        let slowOutcome = Outcome(), liarOutcome = Outcome()
        @Sendable func asking(_ node: Int, _ n: UInt8, alone: Bool, _ outcome: Outcome) async {
            let answered: Result<[ClientResponse], any Error> = await {
                do { return .success(try await connections.ask(node, [Self.request(n)], timeoutMilliseconds: 20_000, alone: alone)) } catch { return .failure(error) }
            }()
            if case let .failure(error) = answered { outcome.failures.withLock { $0.append("\(error)") } }
        }
        // Child tasks (not `Task {}`), so that they run on the suite's own threads: the
        // shared pool is held by other tests' blocking work in a full run.
        // In whatever order the bytes arrive, once over the share the liar's node holds the
        // most (1.2 MiB against 600 KiB): no need to wait for the honest answer first.
        async let slowAsk: Void = asking(1, 1, alone: false, slowOutcome)
        async let liar0: Void = asking(0, 0, alone: true, liarOutcome)
        async let liar1: Void = asking(0, 1, alone: true, liarOutcome)
        async let liar2: Void = asking(0, 2, alone: true, liarOutcome)
        async let liar3: Void = asking(0, 3, alone: true, liarOutcome)
        #expect(eventually(30) { connections.traffic.cut.load(ordering: .relaxed) >= 1 })
        #expect(eventually(15) { liarOutcome.failures.withLock { $0.count } == 1 }, "\(liarOutcome.failures.withLock { $0 })")
        #expect(liarOutcome.failures.withLock { $0 }.allSatisfy { $0.contains("not whole yet") })
        #expect(slowOutcome.failures.withLock { $0 }.isEmpty, "the honest node's answer under way was cut: \(slowOutcome.failures.withLock { $0 })")
        #expect(connections.traffic.cut.load(ordering: .relaxed) == 1)
        connections.close()
        _ = await (slowAsk, liar0, liar1, liar2, liar3)
    }
}
