// The gateway's connections to the nodes on its event loops (`NodeConnections`): many
// requests at once share a few connections and each gets its own answer; a node that
// accepts and never answers fails its requests at their timeout without holding those of
// another node; a node that refuses the connection fails at once.
import CalissonCrypto
import CalissonTestKit
import Foundation
import LightClient
import NIOPosix
import Synchronization
import Testing
import Wire

@testable import Gateway
@testable import Transport

@Suite(.onOwnThreads) struct NodeConnectionsTests {
    /// A loopback port listening with a backlog and never accepting: a connection opens
    /// (the kernel completes it) and nothing is ever answered. `listening: false` binds
    /// without listening: a connection is refused at once.
    final class QuietPort {
        let socket: Int32
        let port: UInt16

        init(listening: Bool) {
            let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
            if listening { _ = listen(socket, 64) }
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
            self.socket = socket
            port = UInt16(bigEndian: address.sin_port)
        }

        deinit { Foundation.close(socket) }
        var address: NodeAddress { NodeAddress(host: "127.0.0.1", port: port) }
    }

    /// Ends a test's event loops from a thread of its own (not from the test's task).
    static func shutDown(_ group: MultiThreadedEventLoopGroup) {
        Thread { try? group.syncShutdownGracefully() }.start()
    }

    static func request(_ n: UInt8) -> ClientRequest {
        .transactionProof(Bytes32([n] + [UInt8](repeating: 0, count: 31))!)
    }

    @Test func manyRequestsShareFewConnectionsAndEachGetsItsAnswer() async throws {
        let node = try NodeConnectionsEchoNode(delayMilliseconds: 20)
        defer { node.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let connections = try NodeConnections(nodes: [node.address], ca: node.ca, chainId: NodeConnectionsEchoNode.chainId, group: group)
        defer { connections.close() }
        defer { Self.shutDown(group) }

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

    @Test func aNodeThatNeverAnswersFailsInTimeAndHoldsNoOtherNode() async throws {
        let node = try NodeConnectionsEchoNode(delayMilliseconds: 0)
        defer { node.stop() }
        let quiet = QuietPort(listening: true), refusing = QuietPort(listening: false)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let connections = try NodeConnections(nodes: [quiet.address, node.address, refusing.address], ca: node.ca, chainId: NodeConnectionsEchoNode.chainId, group: group)
        defer { connections.close() }
        defer { Self.shutDown(group) }

        final class Flag: Sendable { let value = Atomic<Bool>(false) }
        let silentEnded = Flag()
        async let silent: Result<[ClientResponse], any Error> = {
            defer { silentEnded.value.store(true, ordering: .relaxed) }
            do { return .success(try await connections.ask(0, [Self.request(1)], timeoutMilliseconds: 5_000)) } catch { return .failure(error) }
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
        case let .failure(error): #expect("\(error)".contains("no answer in 5000 ms"), "\(error)")
        }

        // Its next request opens a new connection and fails the same way; a refused
        // connection fails at once (not at its timeout), naming the node.
        await #expect(throws: ClientError.self) { try await connections.ask(0, [Self.request(3)], timeoutMilliseconds: 200) }
        let refusedAt = ContinuousClock.now
        do {
            _ = try await connections.ask(2, [Self.request(4)], timeoutMilliseconds: 60_000)
            Issue.record("a refused connection gave an answer")
        } catch {
            #expect("\(error)".contains("cannot connect to \(refusing.address)"), "\(error)")
        }
        #expect(ContinuousClock.now - refusedAt < .seconds(30), "a refused connection waited for its timeout")
    }
}
