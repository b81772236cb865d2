// Where a peer is dialled (peers found in the ledger, Docs/OPERATIONS.md): a peer listed
// with several endpoints is reached at the next one when a dial fails, a DNS name is
// resolved (to loopback here: "localhost"), and a peer whose address changes is dialled
// at its new one, all on loopback.
import CalissonTestKit
import Foundation
import Testing
@testable import Transport

@Suite(.serialized, .onOwnThreads) struct PeerEndpointTests {
    /// A loopback port bound but not listening, held while the test runs: a dial there is
    /// refused at once.
    final class DeadPort {
        let socket: Int32
        let port: UInt16

        init() {
            let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
            self.socket = socket
            port = UInt16(bigEndian: address.sin_port)
        }

        deinit { Foundation.close(socket) }
    }

    @Test func aPeerIsReachedAtItsNextEndpointAndByName() throws {
        let consortium = try Consortium(count: 2)
        let waiting = try Node(consortium.configuration(1))  // p1: the higher id waits
        defer { waiting.stop() }
        let dead = DeadPort()
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
        let dead = DeadPort()
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
