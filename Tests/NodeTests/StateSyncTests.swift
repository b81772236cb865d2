// Joining from a snapshot (`StateSync`, `calisson-node sync`) against a running cluster of
// four: the database it writes holds exactly the certified state; a node that lies about a
// page, a value or its checkpoint is left for the next one; a walk interrupted or overtaken
// by a newer checkpoint keeps what it fetched; a node key that signed the checkpoint is
// refused; a flood of snapshot requests gets the node's budget. The end-to-end join from a
// snapshot is `JoiningTests`.
import CalissonCrypto
import CalissonTestKit
import Consensus
import Foundation
import Ledger
import LightClient
import Node
import Storage
import Synchronization
import Testing
import Transport

@Suite(.serialized, .onOwnThreads) struct StateSyncTests {
    /// A cluster with a stable checkpoint at 16 or above, and what a sync needs of it.
    final class Fixture: @unchecked Sendable {
        let cluster: ProcessCluster
        let configuration: NodeConfiguration
        let genesisSchedule: EpochSchedule

        init() throws {
            cluster = try ProcessCluster()
            configuration = try NodeConfigFile.load("\(cluster.net)/\(cluster.ids[0])/config.json")
            genesisSchedule = try NodeRuntime.replicaConfiguration(configuration).genesisSchedule
            try advance(pastCheckpoint: 16)
        }

        deinit {
            for client in clients.withLock({ $0 }) { client.close() }
            cluster.stopAll()
        }

        /// Submits activity until node 1 serves a stable checkpoint at `height` or above.
        func advance(pastCheckpoint height: UInt64) throws {
            for _ in 0..<60 where (checkpoint(1) ?? 0) < height {
                _ = try run("\(cluster.bin)/calisson-bench", ["workload", "--testnet", cluster.net, "--transactions", "20", "--citizens", "10"])
            }
            #expect(eventually(30) { (self.checkpoint(1) ?? 0) >= height }, "\(cluster.logs())")
            // Then idle, its last blocks certified (the primary completes the interval): the
            // checkpoint the tests read stays the newest.
            #expect(eventually(30) { self.checkpoint(1).map { $0 == self.cluster.status(1)?.height } ?? false }, "\(cluster.logs())")
        }

        /// The height of node `index`'s latest stable checkpoint.
        func checkpoint(_ index: Int) -> UInt64? {
            guard let client = try? client(index) else { return nil }
            defer { client.close() }
            guard let answer = try? Self.ask(client, [.certifiedState(StateKeys.validatorKeys)]).first,
                case let .certifiedState(height, _, _, _) = answer
            else { return nil }
            return height
        }

        func client(_ index: Int) throws -> TransportClient {
            try TransportClient(host: "127.0.0.1", port: cluster.clientPort(index), ca: cluster.ca, chainId: configuration.genesis.chainId)
        }

        static func ask(_ client: TransportClient, _ requests: [ClientRequest]) throws -> [ClientResponse] {
            try client.pipeline(requests.map(\.wireBytes), timeoutMilliseconds: 30_000).map { try ClientResponse(wireBytes: $0.get()) }
        }

        /// Node `index` as a source, its answers passed through `alter` (nil: as they are).
        /// The sources' connections, closed with the fixture (a node bounds the connections
        /// one client address keeps open).
        private let clients = Mutex<[TransportClient]>([])

        func source(_ index: Int, name: String? = nil, alter: (@Sendable (ClientRequest, ClientResponse) throws -> ClientResponse)? = nil) throws -> StateSync.Source {
            let connected = try client(index)
            clients.withLock { $0.append(connected) }
            let client = Mutex(connected)
            return StateSync.Source(name: name ?? cluster.ids[index]) { requests in
                let answers = try client.withLock { try Self.ask($0, requests) }
                guard let alter else { return answers }
                return try zip(requests, answers).map { try alter($0, $1) }
            }
        }

        func sync(into store: NodeStore, key: Ed25519PublicKey = Ed25519PrivateKey().publicKey, _ sources: [StateSync.Source]) -> (Result<StateSyncReport, StateSyncError>, [String]) {
            let lines = Locked<[String]>([])
            let sync = StateSync(
                genesis: configuration.genesis, genesisSchedule: genesisSchedule, nodeKey: key, store: store, sources: sources,
                log: { line in lines.withLock { $0.append(line) } })
            sync.roundsMax = 1
            sync.roundPauseSeconds = 0
            sync.batch = 64  // several requests even on a small state
            let result = Result { () throws(StateSyncError) in try sync.run() }
            return (result, lines.withLock { $0 })
        }
    }

    /// The database holds the certified state: its root is the checkpoint's, recomputed
    /// from its values; it starts at the checkpoint, with the block and certificate there.
    static func expectComplete(_ store: NodeStore, _ report: StateSyncReport) throws {
        #expect(try store.isInitialized && store.height == report.height && store.firstBlock == report.height)
        #expect(store.stateRoot == report.root)
        var memory = MemoryStateStore()
        var values: [(key: StateKey, value: [UInt8]?)] = []
        try store.forEachValue { values.append(($0, $1)) }
        let tree = StateTree.update(root: .zero, changes: values.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: memory)
        memory.commit(StateBatch(values: values, tree: tree))
        #expect(memory.root == report.root && values.count == report.records)
        #expect(try store.block(at: report.height)?.stateRoot == report.root)
        #expect(try store.block(at: report.height - 1) == nil)
        #expect(try store.checkpoint(atOrBelow: report.height)?.height == report.height)
    }

    @Test func liesAreLeftForTheNextNodeAndWhatWasFetchedIsKept() throws {
        let fixture = try Fixture()
        // A node forging a page, then one forging a value, then one forging its checkpoint
        // certificate: each is named and left; the honest node completes the sync.
        let forgedPage = try fixture.source(0, name: "page-liar") { request, answer in
            guard case var .treePages(pages) = answer, let last = pages.indices.last, var page = pages[last] else { return answer }
            page[page.count - 1] ^= 1
            pages[last] = page
            return .treePages(pages)
        }
        let forgedValue = try fixture.source(2, name: "value-liar") { _, answer in
            guard case var .stateValues(values) = answer, !values.isEmpty, var value = values[0] else { return answer }
            value.append(0)
            values[0] = value
            return .stateValues(values)
        }
        let forgedCertificate = try fixture.source(3, name: "certificate-liar") { _, answer in
            guard case let .certifiedState(height, certificate, value, proof) = answer else { return answer }
            var forged = certificate
            forged[forged.count / 2] ^= 1
            return .certifiedState(height: height, certificate: forged, value: value, proof: proof)
        }
        let store = try NodeStore(file: Scratch.file("sync.db"), create: true)
        let (result, lines) = fixture.sync(into: store, [forgedPage, forgedValue, forgedCertificate, try fixture.source(1)])
        let report = try #require(try? result.get(), "\(result) \(lines)")
        #expect(report.source == fixture.cluster.ids[1])
        #expect(lines.contains { $0.hasPrefix("page-liar cannot be trusted: ") && $0.contains("tree page") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("value-liar cannot be trusted: the value of state key") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("certificate-liar cannot be trusted: its latest checkpoint") }, "\(lines)")
        // The liars' honest pages were kept: the last node was not asked for them again.
        #expect(report.pagesReused > 0, "\(report)")
        try Self.expectComplete(store, report)
        // A database that holds a chain is not written over.
        let (again, _) = fixture.sync(into: store, [try fixture.source(1)])
        #expect(throws: StateSyncError.self) { try again.get() }
        if case let .failure(error) = again { #expect("\(error)".contains("already holds a chain"), "\(error)") }

        // Overtaken: the node serves a newer checkpoint and no longer has a page of the
        // one being walked. The walk starts again from the newer one, keeping its pages.
        let overtaken = Mutex(false)
        let moving = try fixture.source(1) { request, answer in
            guard case .treePages = request, case let .treePages(pages) = answer, !pages.isEmpty else { return answer }
            let first = overtaken.withLock { done in
                defer { done = true }
                return !done
            }
            guard first else { return answer }
            let served = fixture.checkpoint(1) ?? 0
            try fixture.advance(pastCheckpoint: served + 8)
            return .treePages([nil] + pages.dropFirst())
        }
        let second = try NodeStore(file: Scratch.file("sync-moved.db"), create: true)
        let (moved, movedLines) = fixture.sync(into: second, [moving])
        let movedReport = try #require(try? moved.get(), "\(moved) \(movedLines)")
        #expect(movedReport.restarts == 1 && movedReport.height > report.height, "\(movedReport)")
        #expect(movedLines.contains { $0.contains("is no longer served by") }, "\(movedLines)")
        try Self.expectComplete(second, movedReport)

        // A node that says a page of the checkpoint it serves is missing is not believed.
        let lacking = try fixture.source(1, name: "lacking") { _, answer in
            guard case let .treePages(pages) = answer, !pages.isEmpty else { return answer }
            return .treePages([nil] + pages.dropFirst())
        }
        let third = try NodeStore(file: Scratch.file("sync-lacking.db"), create: true)
        let (refused, _) = fixture.sync(into: third, [lacking])
        if case let .failure(error) = refused {
            #expect("\(error)".contains("lacking cannot be trusted: it serves checkpoint"), "\(error)")
        } else {
            Issue.record("a node lacking part of the state it serves was believed")
        }
        #expect(try !third.isInitialized)

        // Interrupted after a few pages: the next run resumes from them.
        let asked = Mutex(0)
        let failing = try fixture.source(1, name: "failing") { request, answer in
            guard case .treePages = request else { return answer }
            let count = asked.withLock { count in
                count += 1
                return count
            }
            if count > 2 { throw ClientError.closed("the test cut the link") }
            return answer
        }
        let (cut, _) = fixture.sync(into: third, [failing])
        #expect(throws: StateSyncError.self) { try cut.get() }
        let (resumed, resumedLines) = fixture.sync(into: third, [try fixture.source(1)])
        let resumedReport = try #require(try? resumed.get(), "\(resumed) \(resumedLines)")
        #expect(resumedReport.pagesReused > 0, "\(resumedReport)")
        try Self.expectComplete(third, resumedReport)
    }

    @Test func aKeyThatSignedTheCheckpointIsRefused() throws {
        let fixture = try Fixture()
        let client = try fixture.client(1)
        defer { client.close() }
        guard case let .certifiedState(_, certificate, _, _) = try Fixture.ask(client, [.certifiedState(StateKeys.validatorKeys)])[0],
            let signer = CheckpointCheck.signers(of: certificate)?.first
        else { Issue.record("no checkpoint certificate"); return }
        // The chain is idle: the sync takes the checkpoint just read, which this key signed.
        let store = try NodeStore(file: Scratch.file("sync-signer.db"), create: true)
        let (result, _) = fixture.sync(into: store, key: signer, [try fixture.source(1)])
        var refusal: StateSyncError?
        if case let .failure(error) = result, case .refused = error { refusal = error }
        #expect(try !store.isInitialized)
        let error = try #require(refusal)
        #expect("\(error)".contains("signed checkpoint") && "\(error)".contains("calisson-node restore"), "\(error)")

        // A flood of snapshot requests gets the node's budget, not more: once it is spent the
        // answers carry fewer pages than asked (ask again), and the node goes on answering.
        // (The root page of the checkpoint's state: the node stores the state at its checkpoints.)
        let asked = Array(repeating: try CheckpointCertificate(wireBytes: certificate).stateRoot, count: ClientRequest.snapshotItemsMax)
        let served = try Fixture.ask(client, Array(repeating: .treePages(asked), count: 40)).map { answer -> Int in
            guard case let .treePages(pages) = answer, pages.allSatisfy({ $0 != nil }) else { return -1 }
            return pages.count
        }
        #expect(served.allSatisfy { $0 >= 0 } && served.contains { $0 < asked.count }, "\(served)")
        #expect(served.reduce(0, +) < 40 * asked.count, "\(served)")
        guard case .status = try Fixture.ask(client, [.status])[0] else { Issue.record("no status after the flood"); return }
    }

    /// `calisson-node sync` for a new node: it replaces the empty database `init` made; and
    /// a sync that completed but was stopped before its rename is renamed by the next run
    /// (it was refused for holding a chain, and the operator was stuck).
    @Test func aSyncReplacesAnEmptyDatabaseAndFinishesOneLeftUnrenamed() throws {
        let fixture = try Fixture()
        var joiner = fixture.configuration
        joiner.databaseFile = Scratch.directory("joiner") + "/data/node.db"
        joiner.consensusKey = Ed25519PrivateKey()
        try NodeMaintenance.createDatabase(joiner.databaseFile)
        let sources = [NetworkEndpoint(host: "127.0.0.1", port: fixture.cluster.clientPort(1))]
        let first = try NodeMaintenance.syncFromSnapshot(configuration: joiner, sources: sources) { _ in }
        #expect(first.height >= 16)

        // Stopped after the import, before the rename: the staging file holds the chain.
        try FileManager.default.moveItem(atPath: joiner.databaseFile, toPath: joiner.databaseFile + ".sync")
        try NodeMaintenance.createDatabase(joiner.databaseFile)
        let lines = Mutex<[String]>([])
        let second = try NodeMaintenance.syncFromSnapshot(configuration: joiner, sources: sources) { line in lines.withLock { $0.append(line) } }
        #expect(second.height == first.height && second.root == first.root, "\(second) after \(first)")
        #expect(lines.withLock { $0 }.contains { $0.contains("holds a completed sync") }, "\(lines.withLock { $0 })")
        #expect(!FileManager.default.fileExists(atPath: joiner.databaseFile + ".sync"))
        let store = try NodeStore(file: joiner.databaseFile, readOnly: true)
        #expect(try store.isInitialized && store.height == first.height)
        // A database holding a chain is never replaced.
        store.close()
        #expect(throws: NodeMaintenance.Failure.self) { try NodeMaintenance.syncFromSnapshot(configuration: joiner, sources: sources) { _ in } }
    }
}
