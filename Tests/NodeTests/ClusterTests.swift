// Four validator nodes in one process, each with its own event loop, SQLite database and
// TLS identity, linked on 127.0.0.1: transactions submitted at any node become final on
// all of them with equal state roots; a node stopped and restarted from its database
// catches up; bad submissions are refused at admission.
import CalissonTestKit
import Consensus
import Fixtures
import CalissonCrypto
import Foundation
import Ledger
import LightClient
@testable import Node
@testable import Storage
import Testing
import Transport
import Wire

/// A consortium on loopback: CA, per-partner TLS, consensus and signing keys, genesis.
struct TestCluster {
    static let chainId = "calisson-cluster-test"
    let count: Int
    let directory: String
    let caKey = Ed25519PrivateKey(seed: SHA256.hash("cluster ca").bytes)!
    let ca: Certificate
    let tlsKeys: [Ed25519PrivateKey]
    let certificates: [Certificate]
    let nodeKeys: [Ed25519PrivateKey]
    let signingKeys: [Ed25519PrivateKey]
    let genesis: Genesis
    /// The genesis as a file would say it (what the CLI's --genesis reads).
    let genesisFile: GenesisFile

    /// `rules`: the ledger rules the chain starts with (nil: the first). `genesis` changes
    /// the genesis file last (a test's parameters).
    init(count: Int = 4, rules: UInt32? = nil, genesis change: (inout GenesisFile) -> Void = { _ in }) throws {
        self.count = count
        directory = Scratch.directory("cluster")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ca = try CertificateAuthority.makeRoot(name: "cluster CA", key: caKey)
        self.ca = ca
        let tlsKeys = (0..<count).map { Ed25519PrivateKey(seed: SHA256.hash("cluster tls \($0)").bytes)! }
        let nodeKeys = (0..<count).map { Ed25519PrivateKey(seed: SHA256.hash("cluster node \($0)").bytes)! }
        let signingKeys = (0..<count).map { Ed25519PrivateKey(seed: SHA256.hash("cluster sign \($0)").bytes)! }
        self.tlsKeys = tlsKeys
        self.nodeKeys = nodeKeys
        self.signingKeys = signingKeys
        var certificates: [Certificate] = []
        for index in 0..<count {
            certificates.append(try CertificateAuthority.issue(commonName: "p\(index)", subjectKey: tlsKeys[index].publicKey, ca: ca, caKey: caKey, serial: UInt64(index + 1)))
        }
        self.certificates = certificates
        var file = Fixture.validators(chainId: Self.chainId, nodeKeys: nodeKeys.map(\.publicKey), signingKeys: signingKeys.map(\.publicKey),
                                      tlsKeyHashes: certificates.map(\.publicKeyHash))
        file.parameters.epochLength = 50
        file.parameters.tokenValueMicroEuros = 10_000
        file.programmes[0].name = "Tri"
        file.programmes[0].category = "wasteSorting"
        file.programmes[0].rewardPerUnit = 10
        file.programmes[0].expiryEpochs = 100
        file.rules = rules
        change(&file)
        genesisFile = file
        genesis = try genesisFile.validated()
    }

    func configuration(_ index: Int) -> NodeConfiguration {
        var transport = TransportConfiguration(
            chainId: Self.chainId, selfID: "p\(index)", identity: TLSIdentity(certificate: certificates[index], key: tlsKeys[index]), ca: ca)
        transport.registry = Dictionary(uniqueKeysWithValues: certificates.map { ($0.commonName, $0.publicKeyHash) })
        transport.heartbeatMilliseconds = 100
        transport.reconnectMaxMilliseconds = 300
        var configuration = NodeConfiguration(genesis: genesis, databaseFile: "\(directory)/p\(index).db", consensusKey: nodeKeys[index], transport: transport)
        configuration.tickMilliseconds = 10
        return configuration
    }

    func attribute(by issuer: Int, to citizen: Int, nonce: UInt64) -> [UInt8] {
        Transaction.attribution(chainId: Self.chainId, by: "p\(issuer)", nonce: nonce, expiry: 500, to: Ed25519PublicKey(SHA256.hash("citizen \(citizen)")),
                                evidence: SHA256.hash("evidence \(issuer) \(nonce)"))
            .signed(with: signingKeys[issuer]).wireBytes
    }

    /// Governance makes p0...p(count-1) the validators: p0 proposes, p1 and p2 vote yes
    /// (the first proposal of the chain). True once node 0's ledger has the new set.
    func shrinkValidators(to count: Int, through nodes: [NodeRuntime]) -> Bool {
        func governance(_ index: Int, _ body: TransactionBody, nonce: UInt64) -> [UInt8] {
            Transaction(chainId: Self.chainId, signer: .partner(Identifier("p\(index)")!), nonce: nonce, expiryHeight: 400, body: body)
                .signed(with: signingKeys[index]).wireBytes
        }
        let smaller = (0..<count).map { Identifier("p\($0)")! }
        guard nodes[0].submit(governance(0, .propose(.setValidators(smaller), deadline: 300), nonce: 1_000)) == nil,
            eventually(30, { nodes[0].read { $0.proposal(1) != nil } == true }),
            nodes[1].submit(governance(1, .vote(proposal: 1, approve: true), nonce: 1_001)) == nil,
            nodes[2].submit(governance(2, .vote(proposal: 1, approve: true), nonce: 1_002)) == nil
        else { return false }
        return eventually { nodes[0].read { $0.meta.validators } == smaller }
    }

    /// Every node started, each with a client port (a free one), linked unless `linked` is
    /// false (the caller links them, `link`), with the node's idle fill unless `fill` is
    /// false (heights then move only with transactions). The caller stops them.
    func startNodes(linked: Bool = true, fill: Bool = true, decidedBytesMax: Int? = nil) throws -> [NodeRuntime] {
        let nodes = try (0..<count).map { index in
            var configuration = configuration(index)
            configuration.transport.clientPort = 0
            if !fill { configuration.checkpointFillMilliseconds = 0 }
            if let decidedBytesMax { configuration.blockContentsDecidedBytesMax = decidedBytesMax }
            return try NodeRuntime(configuration: configuration)
        }
        for node in nodes { try node.start() }
        if linked { Self.link(nodes) }
        return nodes
    }

    /// Every node started and linked, settled at a checkpoint of height 8 or more (the idle
    /// fill's): a cluster whose certified state a reader can ask now.
    func startSettled() throws -> [NodeRuntime] {
        let nodes = try startNodes()
        guard Self.settle(nodes, atLeast: TrustedValidators.checkpointInterval) else {
            for node in nodes { node.stop() }
            throw ProcessTestError("the nodes did not settle at a checkpoint: \(nodes.map(\.height))")
        }
        return nodes
    }

    /// The files a CLI run against this cluster reads, written into its directory: the CA's
    /// certificate, partner `signer`'s signing key, the genesis.
    func clientFiles(signer: Int) throws -> (ca: String, key: String, genesis: String) {
        let files = (ca: "\(directory)/ca.crt", key: "\(directory)/p\(signer)-signing.key", genesis: "\(directory)/genesis.json")
        try ca.pem.write(toFile: files.ca, atomically: true, encoding: .utf8)
        try KeyFile.write(signingKeys[signer], to: files.key)
        try JSONEncoder().encode(genesisFile).write(to: URL(fileURLWithPath: files.genesis))
        return files
    }

    /// Attributions to citizen 1, issued in turn by the first `issuers` nodes, until node 0
    /// reaches `height` (at most 400 nonces); `nonce` carries on from one call to the next.
    func advance(_ nodes: [NodeRuntime], to height: UInt64, issuers: Int, nonce: inout UInt64) {
        let last = nonce + 400
        while nodes[0].height < height, nonce < last {
            let before = nodes[0].height
            let issuer = Int(nonce % UInt64(issuers))
            _ = nodes[issuer].submit(attribute(by: issuer, to: 1, nonce: nonce))
            nonce += 1
            _ = eventually(5) { nodes[0].height > before }
        }
    }

    /// True once the idle ledger's blocks reach a checkpoint height on every node (an idle
    /// primary completes the interval with empty blocks, `checkpointFillMilliseconds`), at
    /// least `height`: a state that stays put and whose checkpoint certifies it.
    static func settle(_ nodes: [NodeRuntime], atLeast height: UInt64 = 1, within seconds: Double = 30) -> Bool {
        eventually(seconds) {
            let heights = Set(nodes.map(\.height))
            guard heights.count == 1, let settled = heights.first else { return false }
            return settled >= height && settled % TrustedValidators.checkpointInterval == 0
        }
    }

    /// Gives each node the others' addresses (their ports are known once started) as its
    /// bootstrap peers: kept when governance changes the partners (the ledger of these
    /// tests gives no endpoints), as a configuration's would be.
    static func link(_ nodes: [NodeRuntime]) {
        let peers = nodes.enumerated().map { PeerAddress(id: "p\($0.offset)", host: "127.0.0.1", port: $0.element.transport.peerPort) }
        for (index, node) in nodes.enumerated() {
            node.setBootstrapPeers(peers.filter { $0.id != "p\(index)" })
        }
    }
}

@Suite(.serialized, .onOwnThreads) struct ClusterTests {
    @Test func transactionsBecomeFinalOnEveryNodeAndARestartedNodeCatchesUp() throws {
        let cluster = try TestCluster()
        var nodes = try (0..<4).map { try NodeRuntime(configuration: cluster.configuration($0)) }
        for node in nodes { try node.start() }
        defer { for node in nodes { node.stop() } }
        TestCluster.link(nodes)

        // 120 attributions, submitted round-robin at every node.
        for nonce in 0..<120 {
            let issuer = nonce % 4
            #expect(nodes[(nonce + 1) % 4].submit(cluster.attribute(by: issuer, to: nonce % 17, nonce: UInt64(nonce))) == nil)
        }
        let issued = { (node: NodeRuntime) in node.read { $0.meta.totals.issued } ?? 0 }
        #expect(eventually { nodes.allSatisfy { issued($0) == 1_200 } }, "issued: \(nodes.map(issued))")
        #expect(TestCluster.settle(nodes), "\(nodes.map(\.height))")  // idle from here: the heights stay put
        let roots = Set(nodes.map { node in node.read { ($0.height, $0.stateRoot) }.map { "\($0.0) \($0.1.hex)" } ?? "" })
        #expect(roots.count == 1, "\(roots)")

        // Stop p3, keep going without it, restart it from its database: it catches up. It
        // comes back on a new port (its old one, an ephemeral port, may have been taken by
        // another connection meanwhile): the others follow its new address (`link`).
        nodes[3].stop()
        for nonce in 120..<160 {
            #expect(nodes[nonce % 3].submit(cluster.attribute(by: nonce % 3, to: nonce % 17, nonce: UInt64(nonce))) == nil)
        }
        #expect(eventually { nodes[0...2].allSatisfy { issued($0) == 1_600 } })
        nodes[3] = try NodeRuntime(configuration: cluster.configuration(3))
        try nodes[3].start()
        TestCluster.link(nodes)
        // New work makes the others' commits visible to it; state transfer fills the gap.
        for nonce in 160..<170 {
            _ = nodes[0].submit(cluster.attribute(by: 0, to: 1, nonce: UInt64(nonce)))
        }
        #expect(eventually { issued(nodes[3]) == 1_700 }, "p3 issued \(issued(nodes[3]))")
        #expect(TestCluster.settle(nodes), "\(nodes.map(\.height))")
        #expect(nodes[3].stateRoot == nodes[0].stateRoot)
        #expect(nodes.allSatisfy { $0.failure == nil })
        // Blocks of one transaction each, past a few more checkpoints: the safety logs are
        // compacted at each stable one, to a few dozen records (those above the last
        // checkpoint), not a few per block since genesis.
        for nonce in 170..<200 {
            let before = nodes[0].height
            _ = nodes[0].submit(cluster.attribute(by: 0, to: 2, nonce: UInt64(nonce)))
            _ = eventually(5) { nodes[0].height > before }
        }
        #expect(nodes[0].height >= 30)
        for node in nodes {
            func records() -> Int { (try? NodeStore(file: node.configuration.databaseFile, readOnly: true).safetyRecords().count) ?? .max }
            #expect(eventually(10) { records() <= 2 + 4 * 8 }, "\(records()) safety records at height \(node.height)")
        }
    }

    /// Governance removes p3 from the validator set: the node keeps the handover (the
    /// checkpoint that carries the change, certified by the old set), and a light client
    /// that trusts only the genesis follows it and checks a later checkpoint of the new set.
    @Test func lightClientsFollowAValidatorSetChange() throws {
        let cluster = try TestCluster()
        let nodes = try (0..<4).map { index in
            var configuration = cluster.configuration(index)
            if index == 0 { configuration.transport.clientPort = 0 }
            return try NodeRuntime(configuration: configuration)
        }
        for node in nodes { try node.start() }
        defer { for node in nodes { node.stop() } }
        TestCluster.link(nodes)
        #expect(cluster.shrinkValidators(to: 3, through: nodes), "\(String(describing: nodes[0].read { $0.proposal(1) }))")
        let record = nodes[0].read { $0.store.value(StateKeys.validatorKeys).flatMap { try? ValidatorKeys(wireBytes: $0) } }
        let changedAt = try #require(record.flatMap { $0 }).changedAt
        let boundary = TrustedValidators.boundary(changedAt: changedAt)
        // Before the boundary, a node's status names the set to come and the height it takes over.
        let client = try TransportClient(host: "127.0.0.1", port: nodes[0].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        func status() throws -> NodeStatus? {
            guard case let .status(status) = try ClientResponse(wireBytes: try client.request(ClientRequest.status.wireBytes)) else { return nil }
            return status
        }
        let pending = try #require(try status())
        #expect(pending.pendingValidators == ["p0", "p1", "p2"] && pending.pendingFromHeight.map { $0 > changedAt && $0 <= boundary + 1 } == true,
                "\(pending.pendingValidators) from \(String(describing: pending.pendingFromHeight)), changed at \(changedAt), boundary \(boundary)")
        #expect(pending.knownFinalHeight >= pending.height && pending.recentCertificates > 0 && pending.recentCertificatesSigned <= pending.recentCertificates)
        // Blocks until a checkpoint of the new epoch is stable.
        var nonce: UInt64 = 0
        while nodes[0].height < boundary + 2 * TrustedValidators.checkpointInterval + 2 && nonce < 200 {
            let before = nodes[0].height
            _ = nodes[Int(nonce % 3)].submit(cluster.attribute(by: Int(nonce % 3), to: Int(nonce), nonce: nonce))
            nonce += 1
            _ = eventually(5) { nodes[0].height > before }
        }
        let after = try #require(try status())
        #expect(after.pendingValidators.isEmpty && after.pendingFromHeight == nil, "\(after.pendingValidators)")
        guard case let .handovers(list) = try ClientResponse(wireBytes: try client.request(ClientRequest.handovers(after: 0).wireBytes)) else {
            Issue.record("no handovers answer")
            return
        }
        #expect(list.count == 1 && list.first.map { $0.height >= changedAt && $0.height <= boundary } == true, "\(list.map(\.height))")
        var trusted = TrustedValidators(genesis: cluster.nodeKeys.map(\.publicKey))
        for handover in list { try trusted.follow(handover, chainId: TestCluster.chainId) }
        guard case let .certifiedState(height, certificate, value, proof) = try ClientResponse(wireBytes: try client.request(
            ClientRequest.certifiedState(StateKeys.meta).wireBytes))
        else {
            Issue.record("no certified answer")
            return
        }
        #expect(height > boundary, "checkpoint \(height) is not in the new epoch (from \(boundary + 1))")
        #expect(trusted.keys(at: height) == cluster.nodeKeys[0..<3].map(\.publicKey))
        let root = try CheckpointCheck.verify(certificate, height: height, validators: trusted.keys(at: height), chainId: TestCluster.chainId)
        try proof.verifyInclusion(key: StateKeys.meta, value: try #require(value), root: root)
        #expect(nodes.allSatisfy { $0.failure == nil })

        // A validator restarted past the change reads the schedule back (written with the
        // block that changed it, not with every block since): it orders with the new set.
        nodes[1].stop()
        let restarted = try NodeRuntime(configuration: cluster.configuration(1))
        try restarted.start()
        defer { restarted.stop() }
        TestCluster.link([nodes[0], restarted, nodes[2], nodes[3]])
        #expect(restarted.replicaValidatorCount() == 3)
        let target = nodes[0].height + 3
        while nodes[0].height < target && nonce < 260 {
            let before = nodes[0].height
            _ = [nodes[0], restarted, nodes[2]][Int(nonce % 3)].submit(cluster.attribute(by: Int(nonce % 3), to: Int(nonce), nonce: nonce))
            nonce += 1
            _ = eventually(5) { nodes[0].height > before }
        }
        #expect(eventually { restarted.height == nodes[0].height && restarted.stateRoot == nodes[0].stateRoot },
                "the restarted validator is at \(restarted.height), the others at \(nodes[0].height)")
        #expect(restarted.failure == nil)
    }

    /// A partner admitted by governance (with its node key and TLS key hash) runs a node:
    /// the validators' TLS registry follows the ledger, so it may link; it catches up as a
    /// learner; a second vote puts it in the validator set and the five order blocks.
    @Test func aPartnerAdmittedByGovernanceJoinsTheValidators() throws {
        let cluster = try TestCluster()
        var nodes = try (0..<4).map { try NodeRuntime(configuration: cluster.configuration($0)) }
        for node in nodes { try node.start() }
        defer { for node in nodes { node.stop() } }
        TestCluster.link(nodes)
        let tlsKey = Ed25519PrivateKey(seed: SHA256.hash("joiner tls").bytes)!
        let nodeKey = Ed25519PrivateKey(seed: SHA256.hash("joiner node").bytes)!
        let signingKey = Ed25519PrivateKey(seed: SHA256.hash("joiner signing").bytes)!
        let certificate = try CertificateAuthority.issue(commonName: "p4", subjectKey: tlsKey.publicKey, ca: cluster.ca, caKey: cluster.caKey, serial: 44)
        let joiner = Partner(id: Identifier("p4")!, name: "joiner", roles: [.issuer, .acceptor, .validator], signingKey: signingKey.publicKey,
                             nodeKey: nodeKey.publicKey, tlsKeyHash: certificate.publicKeyHash)
        var nonce: UInt64 = 5_000
        func decide(_ action: GovernanceAction, proposal: UInt64, voters: Int) {
            nonce += 10
            let votes: [(Int, TransactionBody)] = [(0, .propose(action, deadline: 400))] + (1...voters).map { ($0, .vote(proposal: proposal, approve: true)) }
            for (index, body) in votes {
                let bytes = Transaction(chainId: TestCluster.chainId, signer: .partner(Identifier("p\(index)")!), nonce: nonce + UInt64(index),
                                        expiryHeight: 400, body: body).signed(with: cluster.signingKeys[index]).wireBytes
                #expect(nodes[index].submit(bytes) == nil)
                let before = nodes[0].height
                _ = eventually(10) { nodes[0].height > before }  // in order: the proposal before its votes
            }
        }
        decide(.admitPartner(joiner), proposal: 1, voters: 2)  // 3 of 4 active partners
        #expect(eventually { nodes[0].read { $0.partner(Identifier("p4")!)?.status == .active } == true })

        // The joiner's node: the others learn its address (an operator's config edit and restart).
        var transport = TransportConfiguration(chainId: TestCluster.chainId, selfID: "p4", identity: TLSIdentity(certificate: certificate, key: tlsKey), ca: cluster.ca)
        transport.heartbeatMilliseconds = 100
        transport.reconnectMaxMilliseconds = 300
        var configuration = NodeConfiguration(genesis: cluster.genesis, databaseFile: "\(cluster.directory)/p4.db", consensusKey: nodeKey, transport: transport)
        configuration.tickMilliseconds = 10
        let newcomer = try NodeRuntime(configuration: configuration)
        try newcomer.start()
        defer { newcomer.stop() }
        nodes.append(newcomer)
        TestCluster.link(nodes)
        #expect(eventually { newcomer.height == nodes[0].height && newcomer.stateRoot == nodes[0].stateRoot },
                "the newcomer is at \(newcomer.height), the others at \(nodes[0].height)")

        // Governance makes it a validator; after the boundary, five validators order blocks.
        decide(.setValidators((0..<5).map { Identifier("p\($0)")! }), proposal: 2, voters: 3)  // 4 of 5
        #expect(eventually { nodes[0].read { $0.meta.validators.count } == 5 })
        let boundary = TrustedValidators.boundary(changedAt: nodes[0].height)
        var next: UInt64 = 0
        while nodes[0].height < boundary + 10 && next < 150 {
            let before = nodes[0].height
            _ = nodes[Int(next % 5)].submit(cluster.attribute(by: Int(next % 4), to: Int(next), nonce: next))
            next += 1
            _ = eventually(5) { nodes[0].height > before }
        }
        #expect(nodes[0].height > boundary + 5, "stalled at \(nodes[0].height) after the boundary \(boundary)")
        #expect(eventually { Set(nodes.map { "\($0.height) \($0.stateRoot.hex)" }).count == 1 })
        #expect(nodes.allSatisfy { $0.failure == nil })
    }

    /// Governance rotates p3's signing and TLS keys: the old signing key is refused at
    /// once, the new one works; links presenting the old TLS key are closed, and p3's node,
    /// restarted with a certificate for the new key, links again.
    @Test func rotatedKeysReplaceTheOldOnes() throws {
        let cluster = try TestCluster()
        var nodes = try (0..<4).map { try NodeRuntime(configuration: cluster.configuration($0)) }
        for node in nodes { try node.start() }
        defer { for node in nodes { node.stop() } }
        TestCluster.link(nodes)
        #expect(eventually { nodes.allSatisfy { $0.transport.linkedPeers().count == 3 } })
        let newSigning = Ed25519PrivateKey(seed: SHA256.hash("p3 rotated signing").bytes)!
        let newTLS = Ed25519PrivateKey(seed: SHA256.hash("p3 rotated tls").bytes)!
        let newCertificate = try CertificateAuthority.issue(commonName: "p3", subjectKey: newTLS.publicKey, ca: cluster.ca, caKey: cluster.caKey, serial: 33)
        let rotation = GovernanceAction.rotateKeys(Identifier("p3")!, signingKey: newSigning.publicKey, nodeKey: cluster.nodeKeys[3].publicKey,
                                                   tlsKeyHash: newCertificate.publicKeyHash)
        for (index, body) in [(0, TransactionBody.propose(rotation, deadline: 400)), (1, .vote(proposal: 1, approve: true)), (2, .vote(proposal: 1, approve: true))] {
            let bytes = Transaction(chainId: TestCluster.chainId, signer: .partner(Identifier("p\(index)")!), nonce: 9_000 + UInt64(index),
                                    expiryHeight: 400, body: body).signed(with: cluster.signingKeys[index]).wireBytes
            #expect(nodes[index].submit(bytes) == nil)
            let before = nodes[0].height
            _ = eventually(10) { nodes[0].height > before }
        }
        // p3 itself may not see it before its restart: once the others execute the
        // rotation they refuse its old TLS key, possibly before it has the block's commits.
        #expect(eventually { nodes[0...2].allSatisfy { $0.read { $0.partner(Identifier("p3")!)?.signingKey == newSigning.publicKey } == true } })
        func attribution(signedWith key: Ed25519PrivateKey, nonce: UInt64) -> [UInt8] {
            Transaction.attribution(chainId: TestCluster.chainId, by: "p3", nonce: nonce, expiry: 400, to: Ed25519PublicKey(SHA256.hash("rotation citizen")),
                                    evidence: SHA256.hash("rotation \(nonce)")).signed(with: key).wireBytes
        }
        #expect(nodes[0].submit(attribution(signedWith: cluster.signingKeys[3], nonce: 9_100)) == .badSignature)
        #expect(nodes[0].submit(attribution(signedWith: newSigning, nonce: 9_101)) == nil)
        // The others no longer accept p3's old TLS key.
        #expect(eventually { nodes[0...2].allSatisfy { !$0.transport.linkedPeers().contains("p3") } }, "\(nodes[0].transport.linkedPeers())")
        // A change of the partners keeps the links of the peers still accepted.
        #expect(eventually { (0...2).allSatisfy { index in Set(nodes[index].transport.linkedPeers()) == Set((0...2).filter { $0 != index }.map { "p\($0)" }) } },
                "\(nodes[0...2].map { $0.transport.linkedPeers() })")
        // p3 comes back with the new certificate (on a new port, followed by `link`).
        nodes[3].stop()
        var configuration = cluster.configuration(3)
        configuration.transport.identity = TLSIdentity(certificate: newCertificate, key: newTLS)
        nodes[3] = try NodeRuntime(configuration: configuration)
        try nodes[3].start()
        TestCluster.link(nodes)
        #expect(eventually { nodes[0...2].allSatisfy { $0.transport.linkedPeers().contains("p3") } })
        #expect(eventually { nodes[3].height == nodes[0].height && nodes[3].stateRoot == nodes[0].stateRoot })
        #expect(nodes[3].read { $0.partner(Identifier("p3")!)?.signingKey == newSigning.publicKey } == true)
        // Having executed the rotation itself (a change of the partners), p3 keeps its links:
        // its peers are the bootstrap's (these tests' ledger gives no endpoints).
        #expect(eventually { nodes[3].transport.linkedPeers().count == 3 }, "\(nodes[3].transport.linkedPeers())")
    }

    /// A client that opens connection after connection hits the limit; the node keeps
    /// serving the clients it has, and takes new ones once some leave.
    @Test func theClientPortLimitsConnectionsAndKeepsServing() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        configuration.transport.clientConnectionsMax = 8
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let port = node.transport.clientPort
        let status = ClientRequest.status.wireBytes
        var flood: [TransportClient] = []
        defer { for client in flood { client.close() } }
        var refused = 0
        for _ in 0..<20 {
            // A refused connection fails at the handshake or at its first request.
            guard let client = try? TransportClient(host: "127.0.0.1", port: port, ca: cluster.ca, chainId: TestCluster.chainId, timeoutMilliseconds: 2_000),
                (try? client.request(status, timeoutMilliseconds: 2_000)) != nil
            else {
                refused += 1
                continue
            }
            flood.append(client)
        }
        #expect(flood.count == 8 && refused == 12, "\(flood.count) served, \(refused) refused")
        #expect(node.transport.counters.clientConnectionsRefused >= 12)
        // Those admitted are still served.
        for client in flood { #expect((try? client.request(status)) != nil) }
        // One leaves: a newcomer gets in.
        flood.removeLast().close()
        var admitted = false
        for _ in 0..<50 where !admitted {
            if let client = try? TransportClient(host: "127.0.0.1", port: port, ca: cluster.ca, chainId: TestCluster.chainId),
                (try? client.request(status)) != nil {
                admitted = true
                flood.append(client)
            } else {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        #expect(admitted)
    }

    /// A client pipelining requests on one connection: past `clientRequestsInFlightMax`
    /// requests in flight the node closes that connection at once; another client is
    /// served throughout, a newcomer is let in, and 16 pipelined requests are answered.
    @Test func aClientFloodingRequestsIsCutOffWhileOthersAreServed() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        configuration.transport.clientRequestsInFlightMax = 16
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let port = node.transport.clientPort
        let refusedBefore = node.transport.counters.refusedPeers
        let other = try TransportClient(host: "127.0.0.1", port: port, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { other.close() }

        // 100 waits for transactions that never come: the 17th is over the limit.
        let flood = try TransportClient(host: "127.0.0.1", port: port, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { flood.close() }
        let waits = (0..<100).map { index in
            ClientRequest.waitFinal(Bytes32([UInt8](repeating: UInt8(index), count: 32))!, timeoutMilliseconds: 30_000).wireBytes
        }
        let started = Date()
        let results = flood.pipeline(waits, timeoutMilliseconds: 10_000)
        #expect(results.allSatisfy { if case .failure(.closed) = $0 { return true } else { return false } }, "\(results.prefix(3))")
        #expect(Date().timeIntervalSince(started) < 10, "the connection was not closed at once")
        #expect(node.transport.counters.refusedPeers > refusedBefore)
        #expect((try? flood.request(ClientRequest.status.wireBytes)) == nil, "the flooding connection is still open")

        // Another client is served throughout, and a newcomer is let in.
        guard case .status? = try? ClientResponse(wireBytes: other.request(ClientRequest.status.wireBytes)) else {
            Issue.record("the other client is not served")
            return
        }
        let newcomer = try TransportClient(host: "127.0.0.1", port: port, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { newcomer.close() }
        // Within the limit, pipelined requests are all answered.
        let answers = newcomer.pipeline((0..<16).map { _ in ClientRequest.status.wireBytes })
        #expect(answers.allSatisfy { if case let .success(bytes) = $0, case .status? = try? ClientResponse(wireBytes: bytes) { true } else { false } })
    }

    /// Recovery checks the last blocks' commit certificates: a tampered database is refused.
    @Test func aNodeRefusesToStartOnATamperedDatabase() throws {
        let cluster = try TestCluster(count: 1)
        do {
            let node = try NodeRuntime(configuration: cluster.configuration(0))
            try node.start()
            for nonce in 0..<5 { _ = node.submit(cluster.attribute(by: 0, to: nonce, nonce: UInt64(nonce))) }
            #expect(eventually { node.read { $0.meta.totals.issued } == 50 })
            node.stop()
        }
        // The node restarts on its intact database.
        let again = try NodeRuntime(configuration: cluster.configuration(0))
        again.stop()
        let file = cluster.configuration(0).databaseFile
        // One bit of the last block's certificate flipped (a byte set to a fixed value was
        // sometimes the value it already had).
        let top = try NodeStore(file: file, readOnly: true)
        var certificate = try #require(try top.block(at: top.height)).certificate
        certificate[certificate.count - 1] ^= 0x01
        try Database(file: file, mode: .readWrite, create: false).statement("UPDATE blocks SET certificate = ? WHERE height = ?")
            .bind(1, certificate).bind(2, Int64(top.height)).run()
        #expect { _ = try NodeRuntime(configuration: cluster.configuration(0)) } throws: { error in
            guard case let .corrupt(reason) = error as? NodeError else { return false }
            return reason.contains(file)
        }
    }

    /// A database made under other consensus settings is refused at start, also one whose
    /// chain never changed its validators (the schedule it is checked by is written with
    /// the genesis: it was once written only by blocks, then only by those changing the set).
    @Test func aNodeRefusesADatabaseOfOtherConsensusSettings() throws {
        let cluster = try TestCluster(count: 1)
        let made = try NodeRuntime(configuration: cluster.configuration(0))  // the genesis recorded; no block
        made.stop()
        var other = cluster.configuration(0)
        other.replica = { configuration in
            var configuration = configuration
            configuration.checkpointInterval *= 2
            configuration.window *= 2
            return configuration
        }
        #expect { _ = try NodeRuntime(configuration: other) } throws: { error in
            guard case let .configuration(reason) = error as? NodeError else { return false }
            return reason.contains("another genesis validator set or consensus settings")
        }
    }

    @Test func badSubmissionsAreRefusedAtAdmission() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.metricsPort = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let good = cluster.attribute(by: 0, to: 1, nonce: 1)
        #expect(node.submit(good) == nil)
        #expect([.duplicate, .nonceUsed(1)].contains(node.submit(good)))  // waiting, or already applied
        var forged = good
        forged[forged.count - 1] ^= 1
        #expect(node.submit(forged) == .badSignature)
        #expect(node.submit([1, 2, 3]) != nil)
        let otherChain = Transaction(chainId: "elsewhere", signer: .partner(Identifier("p0")!), nonce: 2, expiryHeight: 9,
                                     body: .vote(proposal: 1, approve: true)).signed(with: cluster.signingKeys[0]).wireBytes
        #expect(node.submit(otherChain) == .wrongChain)
        // A body its signer can never have applied: refused before its signature is checked,
        // never carried in the mempool (a citizen's proposal, a partner's transfer).
        let citizen = Ed25519PrivateKey(seed: SHA256.hash("a citizen proposing").bytes)!
        let citizenProposal = Transaction(chainId: TestCluster.chainId, signer: .citizen(citizen.publicKey), nonce: 3, expiryHeight: 90,
                                          body: .propose(.setValidators([Identifier("p0")!]), deadline: 80)).signed(with: citizen).wireBytes
        #expect(node.submit(citizenProposal) == .malformed(Transaction.partnerOnly))
        let partnerTransfer = Transaction(chainId: TestCluster.chainId, signer: .partner(Identifier("p0")!), nonce: 4, expiryHeight: 90,
                                          body: .transfer(to: citizen.publicKey, programme: Identifier("tri")!, amount: 1))
            .signed(with: cluster.signingKeys[0]).wireBytes
        #expect(node.submit(partnerTransfer) == .malformed(Transaction.citizenOnly))
        // A single validator finalizes on its own.
        #expect(eventually { node.read { $0.meta.totals.issued } == 10 })
        // One submission at a time, the verifier idle: their signatures were checked on the
        // loop (the good one and the forged one at least), and the forged one refused there.
        let metrics = try httpGet(port: node.metricsPort, "/metrics")
        let onLoop = metrics.split(separator: "\n").first { $0.hasPrefix("calisson_verification_on_loop_total ") }.flatMap { Int($0.split(separator: " ")[1]) }
        #expect((onLoop ?? 0) >= 2, "\(onLoop.map(String.init) ?? "no such metric")")
    }

    /// /health and /metrics on the local HTTP port.
    @Test func metricsAndHealthAnswerOverHTTP() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.metricsPort = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        _ = node.submit(cluster.attribute(by: 0, to: 1, nonce: 1))
        #expect(eventually { node.height >= 1 })
        let health = try httpGet(port: node.metricsPort, "/health")
        #expect(health.hasPrefix("HTTP/1.1 200") && health.hasSuffix("ok: 1 validators of the current set reachable, quorum 1\n"), "\(health)")
        let metrics = try httpGet(port: node.metricsPort, "/metrics")
        #expect(metrics.contains("# TYPE calisson_height gauge") && metrics.contains("calisson_transactions_applied_total 1"))
        // Group commit: a lone validator's block, its safety records and its checkpoint are
        // written in the turn of the loop that decides them, one commit for all (written
        // one by one, they were at least two commits per block).
        func value(_ name: String) -> Int? {
            metrics.split(separator: "\n").first { $0.hasPrefix("calisson_\(name) ") }.flatMap { Int($0.split(separator: " ")[1]) }
        }
        let commits = try #require(value("storage_commits_total")), blocks = try #require(value("blocks_executed_total"))
        #expect(blocks >= 1 && commits >= 1 && commits <= blocks, "\(commits) commits for \(blocks) blocks")
        #expect(try httpGet(port: node.metricsPort, "/nothing").hasPrefix("HTTP/1.1 404"))
    }

    /// The client API: submit, then wait for finality; unknown ids time out with nil.
    /// An idle ledger certifies its last blocks (issue 18: a gateway reads certified state
    /// only): a fresh cluster cuts the empty blocks to its first checkpoint, and after one
    /// transaction the primary completes the interval, so a certified read shows it within
    /// about `checkpointFillMilliseconds`; then nothing more is cut while idle.
    @Test func anIdleLedgerCertifiesItsLastTransaction() throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let client = try TransportClient(host: "127.0.0.1", port: nodes[2].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        let trusted = TrustedValidators(genesis: cluster.nodeKeys.map(\.publicKey))
        func certified(_ citizen: Int) throws -> CertifiedRecord {
            try CertifiedReader.record(StateKeys.account(Ed25519PublicKey(SHA256.hash("citizen \(citizen)"))), trusted: trusted,
                                       chainId: TestCluster.chainId) { try ClientResponse(wireBytes: try client.request($0.wireBytes)) }
        }
        #expect(TestCluster.settle(nodes, atLeast: 8), "\(nodes.map(\.height))")
        #expect(nodes.allSatisfy { $0.height == 8 }, "a fresh ledger is completed to its first checkpoint only: \(nodes.map(\.height))")
        #expect(eventually(10) { (try? certified(9))?.height == 8 })

        #expect(nodes[1].submit(cluster.attribute(by: 1, to: 9, nonce: 1)) == nil)
        #expect(TestCluster.settle(nodes, atLeast: 16), "\(nodes.map(\.height))")
        var read: CertifiedRecord?
        #expect(eventually(10) { read = try? certified(9); return read?.height == 16 }, "\(String(describing: read))")
        let account = try read?.value.map { try Account(wireBytes: $0) }
        #expect(account?.balance == 10, "\(String(describing: account))")
        // Idle and certified: no block more.
        Thread.sleep(forTimeInterval: 1.5)
        #expect(nodes.allSatisfy { $0.height == 16 }, "\(nodes.map(\.height))")
    }

    /// The idle primary fills only while linked to a quorum: p0 (view 0's primary) linked
    /// to p1 alone (2 of 4; a quorum is 3) cuts nothing, however long; linked to all, it
    /// completes the first checkpoint in its view. Without the gate its null blocks, sent
    /// to too few, would time it out of its view alone, and an idle cluster would stay at 0.
    @Test func anIdlePrimaryFillsOnlyWhileLinkedToAQuorum() throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes(linked: false)
        defer { for node in nodes { node.stop() } }
        let addresses = nodes.enumerated().map { PeerAddress(id: "p\($0.offset)", host: "127.0.0.1", port: $0.element.transport.peerPort) }
        nodes[0].setBootstrapPeers([addresses[1]])
        nodes[1].setBootstrapPeers([addresses[0]])
        #expect(eventually(10) { nodes[0].transport.linkedPeers() == ["p1"] })
        Thread.sleep(forTimeInterval: 1.5)  // three times the wait (cluster's tick: 10 ms)
        #expect(nodes.allSatisfy { $0.height == 0 }, "\(nodes.map(\.height))")
        TestCluster.link(nodes)
        #expect(TestCluster.settle(nodes, atLeast: 8), "\(nodes.map(\.height))")
        let client = try TransportClient(host: "127.0.0.1", port: nodes[0].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        guard case let .status(status) = try ClientResponse(wireBytes: try client.request(ClientRequest.status.wireBytes)) else {
            Issue.record("no status")
            return
        }
        #expect(status.view == 0 && status.height == 8, "view \(status.view), height \(status.height)")
    }

    @Test func clientsSubmitAndWaitForFinality() throws {
        let cluster = try TestCluster(count: 1)
        var configuration = cluster.configuration(0)
        configuration.transport.clientPort = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        let client = try TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        let transaction = cluster.attribute(by: 0, to: 3, nonce: 7)
        guard case let .admitted(id) = try ClientResponse(wireBytes: try client.request(ClientRequest.submit(transaction).wireBytes)) else {
            Issue.record("not admitted")
            return
        }
        let final = try ClientResponse(wireBytes: try client.request(ClientRequest.waitFinal(id, timeoutMilliseconds: 10_000).wireBytes))
        guard case let .transaction(location?) = final else {
            Issue.record("not final: \(final)")
            return
        }
        #expect(location.applied && location.height >= 1)
        // Inclusion, checked from the block header and its commit certificate.
        guard case let .transactionProof(inclusion?) = try ClientResponse(wireBytes: try client.request(ClientRequest.transactionProof(id).wireBytes)) else {
            Issue.record("no inclusion proof")
            return
        }
        try InclusionCheck.verify(inclusion, transaction: id, validators: [cluster.nodeKeys[0].publicKey], chainId: TestCluster.chainId)
        // A node that states another position than the one its proof proves is caught (issue 16, item 10).
        let moved = TransactionInclusion(
            location: TransactionLocation(height: inclusion.location.height, position: inclusion.location.position + 11,
                                          applied: inclusion.location.applied, reason: inclusion.location.reason),
            commandCount: inclusion.commandCount, proof: inclusion.proof, certificate: inclusion.certificate)
        #expect(throws: CertificateError.self) {
            try InclusionCheck.verify(moved, transaction: id, validators: [cluster.nodeKeys[0].publicKey], chainId: TestCluster.chainId)
        }
        #expect(throws: CertificateError.self) {
            try InclusionCheck.verify(transaction: SHA256.hash("another"), height: inclusion.location.height, commandCount: inclusion.commandCount,
                                      proof: inclusion.proof, certificate: inclusion.certificate, validators: [cluster.nodeKeys[0].publicKey],
                                      chainId: TestCluster.chainId)
        }
        let history = try ClientResponse(wireBytes: try client.request(
            ClientRequest.accountTransactions(SHA256.hash("citizen 3"), limit: 5).wireBytes))
        #expect(history == .accountTransactions([AccountTransaction(id: id, location: location)]))
        // Following the chain: the next block is answered as soon as it is final (the
        // ledger idle first, its empty blocks to the checkpoint cut).
        #expect(TestCluster.settle([node], atLeast: 8), "height \(node.height)")
        let next = node.height + 1
        let follower = Locked<ClientResponse?>(nil)
        let following = Thread {
            let answer = try? TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
            let response = try? answer?.request(ClientRequest.blocks(from: next, limit: 8, waitMilliseconds: 20_000).wireBytes)
            follower.withLock { $0 = response.flatMap { try? ClientResponse(wireBytes: $0) } }
            answer?.close()
        }
        following.start()
        Thread.sleep(forTimeInterval: 0.2)
        _ = node.submit(cluster.attribute(by: 0, to: 4, nonce: 8))
        #expect(eventually { follower.withLock { $0 } != nil })
        if case let .blocks(list)? = follower.withLock({ $0 }) {
            #expect(list.first?.height == next && list.first?.transactionCount == 1)
        } else {
            Issue.record("no blocks: \(String(describing: follower.withLock { $0 }))")
        }
        // Certified answers: at the latest checkpoint, its certificate checked against the
        // validator set, the proof against the certified root.
        var nonce: UInt64 = 20
        while node.height < 16 && nonce < 60 {  // one block each: a checkpoint every 8
            let before = node.height
            _ = node.submit(cluster.attribute(by: 0, to: Int(nonce), nonce: nonce))
            nonce += 1
            _ = eventually(5) { node.height > before }
        }
        #expect(node.height >= 16)
        let key = StateKeys.account(Ed25519PublicKey(SHA256.hash("citizen 3")))
        guard case let .certifiedState(height, certificate, value, proof) = try ClientResponse(wireBytes: try client.request(
            ClientRequest.certifiedState(key).wireBytes))
        else {
            Issue.record("no certified answer")
            return
        }
        let root = try CheckpointCheck.verify(certificate, height: height, validators: [cluster.nodeKeys[0].publicKey], chainId: TestCluster.chainId)
        try proof.verifyInclusion(key: key, value: try #require(value), root: root)
        #expect(height % 8 == 0 && height >= 8)
        #expect(throws: CertificateError.self) {
            try CheckpointCheck.verify(certificate, height: height, validators: [cluster.signingKeys[0].publicKey], chainId: TestCluster.chainId)
        }
        var forged = certificate
        forged[forged.count - 1] ^= 1
        #expect(throws: CertificateError.badSignature(cluster.nodeKeys[0].publicKey)) {
            try CheckpointCheck.verify(forged, height: height, validators: [cluster.nodeKeys[0].publicKey], chainId: TestCluster.chainId)
        }
        // Padded with copies of its genuine vote (each a signature to check, and it passed):
        // refused before any signature is checked.
        var padded = WireWriter()
        padded.write(UInt32(3))
        for _ in 0..<3 { padded.writeFixed(Array(certificate.dropFirst(4))) }
        #expect(throws: CertificateError.malformed("\(cluster.nodeKeys[0].publicKey) signs twice")) {
            try CheckpointCheck.verify(padded.bytes, height: height, validators: [cluster.nodeKeys[0].publicKey], chainId: TestCluster.chainId)
        }
        // Certified reads while blocks commit and checkpoints prune what older ones reached:
        // every answer still proves against its own certificate, across checkpoints.
        let reads = Locked<(count: Int, failures: [String], heights: Set<UInt64>, done: Bool)>((0, [], [], false))
        let reading = DispatchGroup()
        reading.enter()
        Thread {
            defer { reading.leave() }
            guard let reader = try? TransportClient(host: "127.0.0.1", port: node.transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId) else {
                reads.withLock { $0.failures.append("no connection") }
                return
            }
            defer { reader.close() }
            while !reads.withLock({ $0.done }) {
                do {
                    guard case let .certifiedState(height, certificate, value, proof) = try ClientResponse(wireBytes: try reader.request(
                        ClientRequest.certifiedState(key).wireBytes))
                    else { throw ProcessTestError("not a certified answer") }
                    let root = try CheckpointCheck.verify(certificate, height: height, validators: [cluster.nodeKeys[0].publicKey], chainId: TestCluster.chainId)
                    try proof.verifyInclusion(key: key, value: try #require(value), root: root)
                    reads.withLock {
                        $0.count += 1
                        $0.heights.insert(height)
                    }
                } catch {
                    reads.withLock { $0.failures.append("\(error)") }
                }
                // Under the node's 2,000 requests per second per client: the reads wait less
                // for the turns' syncs now, and a loop without a pause went past it.
                usleep(1_000)
            }
        }.start()
        for _ in 0..<24 {
            let before = node.height
            _ = node.submit(cluster.attribute(by: 0, to: 3, nonce: nonce))  // citizen 3's account: the key read changes
            nonce += 1
            _ = eventually(5) { node.height > before }
        }
        reads.withLock { $0.done = true }
        reading.wait()
        let read = reads.withLock { $0 }
        #expect(read.failures.isEmpty && read.count > 0, "\(read.count) reads, failures: \(read.failures.prefix(3))")
        #expect(read.heights.count >= 2, "the reads spanned one checkpoint only: \(read.heights)")
        let unknown = try ClientResponse(wireBytes: try client.request(ClientRequest.waitFinal(SHA256.hash("nothing"), timeoutMilliseconds: 200).wireBytes))
        #expect(unknown == .transaction(nil))
        guard case let .refused(reason) = try ClientResponse(wireBytes: try client.request(ClientRequest.submit(transaction).wireBytes)) else {
            Issue.record("a duplicate was admitted")
            return
        }
        #expect(reason.contains("nonceUsed"))
    }
}

/// A blocking HTTP GET on loopback, the whole response as text.
func httpGet(port: UInt16, _ path: String) throws -> String {
    guard let response = HTTPEndpoint.get(port: port, path) else { throw NodeError.stopped("nothing answers on port \(port)") }
    return response
}

