// The sync off the loop (NodeRuntime+Effects.swift, "The sync off the loop"): a node
// commits each turn's writes and goes on while a thread of its own syncs them; what
// depends on those writes (its votes, the finality it tells clients, the height it
// reports) waits for the sync. A node whose disk does not sync keeps executing what the
// others finalize, fetching what it missed, admitting and relaying transactions, but
// says nothing of its own writes; one whose sync fails stops, and restarted it catches up.
import CalissonCrypto
import CalissonTestKit
import Consensus
import Foundation
import Ledger
import LightClient
@testable import Node
import NodeCore
import Synchronization
import Testing
import Transport

/// A disk whose syncs wait while the gate is closed.
final class SyncGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var closed = true
    let syncs = Atomic<Int>(0)

    func sync(_ descriptor: Int32) -> Int32 {
        condition.lock()
        while closed { condition.wait() }
        condition.unlock()
        syncs.add(1, ordering: .relaxed)
        return fdatasync(descriptor)
    }

    func open() {
        condition.lock()
        closed = false
        condition.broadcast()
        condition.unlock()
    }
}

/// A value of the node's /metrics (its metrics port), nil if absent.
func nodeMetric(_ node: NodeRuntime, _ name: String) -> Int? {
    guard let text = try? httpGet(port: node.metricsPort, "/metrics"),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix("calisson_\(name) ") })
    else { return nil }
    return Int(line.split(separator: " ")[1])
}

@Suite(.serialized, .onOwnThreads) struct WALSyncTests {
    @Test func aNodeActsOnItsWritesOnlyOnceTheyAreSynced() throws {
        let cluster = try TestCluster()
        let gate = SyncGate()
        let nodes = try (0..<4).map { index in
            var configuration = cluster.configuration(index)
            configuration.transport.clientPort = 0
            if index == 3 {
                configuration.walSync = { gate.sync($0) }
                configuration.metricsPort = 0
            }
            return try NodeRuntime(configuration: configuration)
        }
        for node in nodes { try node.start() }
        defer {
            gate.open()  // before the stop, which waits for the sync in progress
            for node in nodes { node.stop() }
        }
        TestCluster.link(nodes)

        // p3's disk never finishes a sync: the three others finalize without its votes; p3
        // executes the blocks it learns are final (its loop does not wait for the disk), but
        // reports no height.
        var nonce: UInt64 = 0
        cluster.advance(nodes, to: 6, issuers: 3, nonce: &nonce)
        #expect(nodes[0].height >= 6)
        #expect(eventually(10) { nodes[3].read { $0.height } == nodes[0].height }, "p3 executed up to \(nodes[3].read { $0.height } ?? 0)")
        #expect(nodes[3].height == 0, "p3 reported height \(nodes[3].height) before any of its writes was synced")

        // Blocks it missed (cut off while the others finalize three more) it learns by state
        // transfer: its requests depend on nothing it wrote, so they do not wait for the disk.
        let addresses = nodes.enumerated().map { PeerAddress(id: "p\($0.offset)", host: "127.0.0.1", port: $0.element.transport.peerPort) }
        nodes[3].setBootstrapPeers([])
        for index in 0..<3 { nodes[index].setBootstrapPeers(addresses.filter { $0.id != "p\(index)" && $0.id != "p3" }) }
        #expect(eventually(10) { nodes[3].transport.linkedPeers().isEmpty })
        let missed = nodes[0].height + 3
        cluster.advance(Array(nodes[0..<3]), to: missed, issuers: 3, nonce: &nonce)
        #expect(nodes[0].height >= missed)
        TestCluster.link(nodes)
        #expect(eventually(10) { nodes[3].read { $0.height } == nodes[0].height }, "p3 executed up to \(nodes[3].read { $0.height } ?? 0) of \(nodes[0].height)")
        #expect(nodes[3].height == 0, "p3 reported height \(nodes[3].height) before any of its writes was synced")
        // A submission to it is admitted at once and gossiped (the mempool is in memory: an
        // admission claims nothing written), so the others make it final without p3; p3
        // executes it, but a client already waiting on p3 for its finality hears only once
        // p3's block is on disk (and, its answers leaving in order, so does that client's
        // submission pipelined behind the wait).
        let issued = { (node: NodeRuntime) in node.read { $0.meta.totals.issued } ?? 0 }
        let target = issued(nodes[0]) + 20
        let waited = cluster.attribute(by: 3, to: 5, nonce: 0), other = cluster.attribute(by: 3, to: 5, nonce: 1)
        let id = SignedTransaction.idTag.hash(waited)
        let connect = { try TransportClient(host: "127.0.0.1", port: nodes[3].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId) }
        let waiting = try connect(), submitting = try connect()
        defer { waiting.close(); submitting.close() }
        let answers = Mutex<[ClientResponse?]?>(nil)
        Thread {
            let results = waiting.pipeline(
                [ClientRequest.waitFinal(id, timeoutMilliseconds: 30_000).wireBytes, ClientRequest.submit(waited).wireBytes], timeoutMilliseconds: 40_000)
            answers.withLock { $0 = results.map { try? ClientResponse(wireBytes: $0.get()) } }
        }.start()
        let admission = try ClientResponse(wireBytes: submitting.request(ClientRequest.submit(other).wireBytes))
        #expect(admission == .admitted(id: SignedTransaction.idTag.hash(other)), "p3's admission while its disk hangs: \(admission)")
        #expect(eventually(20) { nodes.allSatisfy { issued($0) == target } }, "issued: \(nodes.map(issued)), expected \(target)")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(answers.withLock { $0 } == nil, "p3 told a waiting client its transaction was final before its block was synced")
        #expect(nodes[3].height == 0)
        #expect(gate.syncs.load(ordering: .relaxed) == 0)
        // Nor does it show a client the blocks it executed, nor the inclusion proof: their
        // commit certificates may carry its own votes, not recorded on its disk yet.
        let reader = try connect()
        defer { reader.close() }
        let read = { (request: ClientRequest) in try ClientResponse(wireBytes: reader.request(request.wireBytes)) }
        #expect(try read(.blocks(from: 1, limit: 100, waitMilliseconds: 0)) == .blocks([]))
        #expect(try read(.block(1)) == .block(nil))
        #expect(try read(.transactionProof(id)) == .transactionProof(nil))
        // Nor that the transaction is final, asked after its block executed: not found by a
        // lookup or an account's list, and a wait asked now hears once the block is synced
        // (it is stored: the core's waiter for it was answered at execution, held since).
        #expect(try read(.transaction(id)) == .transaction(nil))
        #expect(try read(.accountTransactions(SHA256.hash("citizen 5"), limit: 10)) == .accountTransactions([]))
        let late = try connect()
        defer { late.close() }
        let lateAnswer = Mutex<ClientResponse??>(nil)
        Thread {
            let result = late.pipeline([ClientRequest.waitFinal(id, timeoutMilliseconds: 30_000).wireBytes], timeoutMilliseconds: 40_000)
            lateAnswer.withLock { $0 = .some(result.first.flatMap { try? ClientResponse(wireBytes: $0.get()) }) }
        }.start()
        Thread.sleep(forTimeInterval: 0.3)
        #expect(lateAnswer.withLock { $0 } == nil, "p3 told a client asking after execution that the transaction was final before its block was synced")

        // The disk syncs again: everything waiting goes out, in order.
        gate.open()
        #expect(eventually(10) { answers.withLock { $0 } != nil })
        #expect(eventually(10) { lateAnswer.withLock { $0 } != nil })
        guard case let .transaction(lateLocation?)?? = lateAnswer.withLock({ $0 }) else {
            Issue.record("p3's answer to the late wait: \(String(describing: lateAnswer.withLock { $0 }))")
            return
        }
        #expect(lateLocation.applied)
        let waitAnswers = answers.withLock { $0 } ?? []
        guard waitAnswers.count == 2, case let .transaction(location?)? = waitAnswers[0] else {
            Issue.record("p3's answers to the waiting client: \(waitAnswers)")
            return
        }
        #expect(location.applied)
        #expect(waitAnswers[1] == .admitted(id: id))
        #expect(eventually(10) { nodes[3].height == nodes[0].height && nodes[3].height >= 6 })
        #expect(gate.syncs.load(ordering: .relaxed) > 0)
        // (eventually: the idle primary's empty blocks may land between the two reads)
        #expect(eventually(10) { (try? read(.blocks(from: 1, limit: 100, waitMilliseconds: 0)).blockCount) == nodes[3].height })
        guard case let .transactionProof(inclusion?) = try read(.transactionProof(id)) else {
            Issue.record("p3 gave no inclusion proof once synced")
            return
        }
        #expect(inclusion.location.height == location.height)
        #expect(eventually(10) { Set(nodes.map(\.stateRoot)).count == 1 })
        #expect((nodeMetric(nodes[3], "storage_wal_syncs_total") ?? 0) > 0)
        #expect(nodes.allSatisfy { $0.failure == nil })
    }

    /// What leaves at once and what waits for the turn's sync: at once only what claims
    /// nothing the node wrote; its votes, the blocks it serves (their certificates may carry
    /// its vote), what it tells clients of finality and the height it reports wait.
    @Test func onlyWhatClaimsNothingWrittenLeavesBeforeTheSync() {
        let signer = NodeSigner(key: Ed25519PrivateKey(seed: SHA256.hash("a validator").bytes)!)
        let block = Block(seq: 1, commands: [[1]])
        let vote = Message.vote(Signed(Vote(kind: .commit, view: 0, seq: 1, digest: block.digest), chainId: "c", signer: signer))
        let served = CertifiedBlock(block: block, certificate: CommitCertificate(commits: []))
        let atOnce: [NodeEffect] = [
            .send(.stateRequest(fromSeq: 1), to: "p1"), .admission(ClientToken(1), nil), .admission(ClientToken(2), .duplicate), .gossip([1]),
            .broadcastGossip([1]),
        ]
        let afterTheSync: [NodeEffect] = [
            .send(.stateResponse([served]), to: "p1"), .broadcast(vote), .send(vote, to: "p1"), .respond(ClientToken(3), .transaction(nil)),
            .respondBlocks(ClientToken(4), from: 1, limit: 1), .event(.executed(height: 1, stateRoot: .zero)),
        ]
        for effect in atOnce { #expect(NodeRuntime.dependsOnNothingWritten(effect), "\(effect)") }
        for effect in afterTheSync { #expect(!NodeRuntime.dependsOnNothingWritten(effect), "\(effect)") }
    }

    @Test func aNodeWhoseSyncFailsStopsAndCatchesUpOnceRestarted() throws {
        let cluster = try TestCluster()
        let syncs = Atomic<Int>(0)
        var nodes = try (0..<4).map { index in
            var configuration = cluster.configuration(index)
            configuration.transport.clientPort = 0
            if index == 3 {
                configuration.walSync = { descriptor in
                    guard syncs.add(1, ordering: .relaxed).newValue > 5 else { return fdatasync(descriptor) }
                    errno = EIO
                    return -1
                }
            }
            return try NodeRuntime(configuration: configuration)
        }
        for node in nodes { try node.start() }
        defer { for node in nodes { node.stop() } }
        TestCluster.link(nodes)

        var nonce: UInt64 = 0
        cluster.advance(nodes, to: 12, issuers: 3, nonce: &nonce)
        #expect(eventually(10) { nodes[3].failure != nil })
        let failure = nodes[3].failure ?? ""
        #expect(failure.contains("p3.db-wal") && failure.contains("could not be synced") && failure.contains("Input/output error"), "\(failure)")
        #expect(nodes[3].height < nodes[0].height)
        // Stopped, it answers no read from its state (after a turn rolled back, its state in
        // memory may be ahead of its file), and says why.
        let client = try TransportClient(host: "127.0.0.1", port: nodes[3].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        for request in [ClientRequest.status, .state(StateKeys.meta)] {
            let answer = try ClientResponse(wireBytes: try client.request(request.wireBytes))
            guard case let .error(reason) = answer else {
                Issue.record("a stopped node answered \(request): \(answer)")
                continue
            }
            #expect(reason.contains("this node stopped") && reason.contains("could not be synced"), "\(reason)")
        }
        client.close()
        // The others go on without it; restarted on a sound disk, it catches up.
        cluster.advance(nodes, to: nodes[0].height + 3, issuers: 3, nonce: &nonce)
        nodes[3].stop()
        var configuration = cluster.configuration(3)
        configuration.transport.clientPort = 0
        nodes[3] = try NodeRuntime(configuration: configuration)
        try nodes[3].start()
        TestCluster.link(nodes)
        cluster.advance(nodes, to: nodes[0].height + 3, issuers: 3, nonce: &nonce)
        #expect(eventually(20) { nodes[3].height == nodes[0].height && nodes[3].stateRoot == nodes[0].stateRoot },
                "p3 at \(nodes[3].height), p0 at \(nodes[0].height)")
        #expect(nodes.allSatisfy { $0.failure == nil })
    }
}

extension ClientResponse {
    /// The number of blocks in a `blocks` answer (nil for another answer).
    fileprivate var blockCount: UInt64? {
        guard case let .blocks(list) = self else { return nil }
        return UInt64(list.count)
    }
}
