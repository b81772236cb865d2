// What an outsider can send a node does not stop it (issue 16): client requests at
// extreme heights are answered (item 1); each test names the item it covers.
import Consensus
import Crypto
import Foundation
import Ledger
import LightClient
import Node
import Storage
import Testing
import Transport
import Wire

@Suite(.serialized) struct HardeningTests {
    /// Heights at and past 2^63 (SQLite's integers are signed) in every request that takes
    /// one: the node answers "nothing there" and keeps serving (item 1).
    @Test func requestsAtExtremeHeightsAreAnsweredAndTheNodeStaysUp() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
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
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("calisson-extreme-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let store = try NodeStore(file: file, create: true)
        #expect(try store.block(at: UInt64.max) == nil)
        #expect(try store.block(at: 1 << 63) == nil)
        #expect(try store.handovers(after: UInt64.max, limit: 10).isEmpty)
        #expect(try store.checkpoint(atOrBelow: UInt64.max) == nil)
    }
}
