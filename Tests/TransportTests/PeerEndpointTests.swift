// Where a peer is dialled (peers found in the ledger, Docs/OPERATIONS.md): a peer listed
// with several endpoints is reached at the next one when a dial fails, a DNS name is
// resolved (to loopback here: "localhost"), and a peer whose address changes is dialled
// at its new one, all on loopback.
import CalissonTestKit
import Foundation
import Testing
@testable import Transport

@Suite(.serialized, .onOwnThreads) struct PeerEndpointTests {
    @Test func aPeerIsReachedAtItsNextEndpointAndByName() throws {
        let consortium = try Consortium(count: 2)
        let waiting = try Node(consortium.configuration(1))  // p1: the higher id waits
        defer { waiting.stop() }
        let dead = LoopbackPort(listening: false)
        var configuration = consortium.configuration(0)
        configuration.peers = [PeerAddress(id: "p1", endpoints: [
            .init(host: "127.0.0.1", port: dead.port), .init(host: "localhost", port: waiting.transport.peerPort),
        ])]
        let dialling = try Node(configuration)
        defer { dialling.stop() }
        #expect(eventually(10) { dialling.transport.linkedPeers() == ["p1"] && waiting.transport.linkedPeers() == ["p0"] })
        #expect(dialling.transport.counters.reconnects >= 1, "the first endpoint was tried and failed")
    }

    @Test func aPeerThatMovesIsDialledAtItsNewAddress() throws {
        let consortium = try Consortium(count: 2)
        let dead = LoopbackPort(listening: false)
        var configuration = consortium.configuration(0)
        configuration.peers = [PeerAddress(id: "p1", host: "127.0.0.1", port: dead.port)]
        let dialling = try Node(configuration)
        defer { dialling.stop() }
        #expect(eventually(5) { dialling.transport.counters.reconnects >= 2 }, "dials to the old address fail and are retried")
        let moved = try Node(consortium.configuration(1))
        defer { moved.stop() }
        dialling.transport.update(
            peers: [PeerAddress(id: "p1", host: "127.0.0.1", port: moved.transport.peerPort)], registry: consortium.registry, revokedSerials: [])
        #expect(eventually(10) { dialling.transport.linkedPeers() == ["p1"] })
    }
}

/// A client's pipelined requests are answered in their order, however the node's answers
/// come: a read answered off the loop at once, a submission once admitted (the client
/// matches answers to requests by order).
@Suite(.onOwnThreads) struct ClientAnswerOrderTests {
    @Test func answersReadyOutOfOrderAreSentInTheRequestsOrder() throws {
        let consortium = try Consortium(count: 1)
        var configuration = consortium.configuration(0)
        configuration.clientPort = 0
        let node = try Node(configuration)
        defer { node.stop() }
        // The first byte says how long to wait before answering, in tens of milliseconds,
        // from another thread: the first request's answer is ready last.
        node.transport.onClientRequest = { request, _, respond in
            LaterThread.shared.after(milliseconds: 10 * Int(request.first ?? 0)) { respond(request) }
        }
        let client = try TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: consortium.ca, chainId: Consortium.chainId)
        defer { client.close() }
        let requests: [[UInt8]] = [[30, 1], [0, 2], [15, 3], [0, 4], [1, 5]]
        let answers = client.pipeline(requests).map { try? $0.get() }
        #expect(answers == requests.map { $0 })
    }
}
