// A transaction's result proven (ledger rules 7): a node's answer to `transactionResult`
// checked by `ResultCheck`, by the gateway's `GET /v1/transactions/{id}` and by the query
// CLI's `tx --genesis`; a node that states another result than its block committed is
// caught wherever it is asked.
import CalissonCrypto
import CalissonTestKit
import Consensus
import Foundation
@testable import Gateway
import Ledger
@testable import LightClient
@testable import Node
import Spawning
import Storage
import Synchronization
import Testing
import Transport
import Wire

extension GatewayTests {
    /// The height where a node has `id` final (its database read on the side), if it has.
    static func finalHeight(_ id: Bytes32, at node: NodeRuntime) -> UInt64? {
        (try? NodeStore(file: node.configuration.databaseFile, readOnly: true).transaction(id))??.height
    }

    /// An attribution that applies, then the same gesture's evidence again under another
    /// nonce, rejected (`evidenceUsed`), both final and a checkpoint above them certified
    /// (the idle fill): their ids.
    static func appliedThenRejected(_ cluster: TestCluster, _ nodes: [NodeRuntime]) async throws -> [Bytes32] {
        let applied = cluster.attribute(by: 1, to: 5, nonce: 1)
        let reused = Transaction.attribution(
            chainId: TestCluster.chainId, by: "p1", nonce: 2, expiry: 500, to: Ed25519PublicKey(SHA256.hash("citizen 6")), evidence: SHA256.hash("evidence 1 1")
        ).signed(with: cluster.signingKeys[1]).wireBytes
        let ids = [applied, reused].map { SignedTransaction.idTag.hash($0) }
        _ = nodes[1].submit(applied)
        #expect(try await Self.until(30) { nodes.allSatisfy { node in (node.read { $0.meta.totals.issued } ?? 0) > 0 } })
        _ = nodes[2].submit(reused)
        #expect(try await Self.blocking { eventually(30) { nodes.allSatisfy { Self.finalHeight(ids[1], at: $0) != nil } } })
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: (Self.finalHeight(ids[1], at: nodes[0]) ?? 0) + 1) })
        return ids
    }

    /// A gateway in front of `liar` then an honest node (`nodes[2]`), healthy.
    static func startBeside(_ liar: Liar, _ nodes: [NodeRuntime], _ cluster: TestCluster, keys: [APIKey]) async throws -> (serving: Task<Void, any Error>, port: Int) {
        let (_, serving, port) = try await start(
            [NodeAddress(host: "127.0.0.1", port: liar.port), NodeAddress(host: "127.0.0.1", port: nodes[2].transport.clientPort)], cluster, keys: keys)
        try await untilHealthy(port)
        return (serving, port)
    }

    /// The certified feed at `path` behind `liar` alone gives no event in 6 s; why, as the
    /// status says while the liar is passed over for it (`recentFailure`: `error` is the
    /// last answer's, which a refresh clears).
    static func refusedBehind(_ liar: Liar, _ cluster: TestCluster, path: String, key: (secret: String, entry: APIKey)) async throws -> (port: Int, serving: Task<Void, any Error>, failure: String) {
        let (_, serving, port) = try await start([NodeAddress(host: "127.0.0.1", port: liar.port)], cluster, keys: [key.entry])
        try await untilHealthy(port)
        let refused = try await blocking { try FeedReader.read(port: port, path: path, key: key.secret, seconds: 6) { !$0.isEmpty } }
        #expect(refused.status == 200 && refused.events.isEmpty, "\(refused.events.map(\.json))")
        let status = try await get(port, "/v1/status", key: key.secret)
        return (port, serving, (status.body["nodes"] as? [[String: Any]])?.first?["recentFailure"] as? String ?? status.text)
    }

    @Test func aTransactionsResultIsProvenAndALieAboutItIsCaught() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let ids = try await Self.appliedThenRejected(cluster, nodes)

        // The node's answers, checked.
        let trusted = TrustedValidators(genesis: cluster.genesis.validatorKeys)
        let client = try TransportClient(host: "127.0.0.1", port: nodes[0].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        var answers: [ResultProof] = []
        for id in ids {
            guard case let .transactionResult(found?) = try ClientResponse(wireBytes: try client.request(ClientRequest.transactionResult(id).wireBytes)) else {
                Issue.record("no result proof for \(id.hex)")
                return
            }
            let verified = try ResultCheck.verify(found, transaction: id, trusted: trusted, chainId: TestCluster.chainId)
            guard case let .certified(checkpoint, _, signers) = verified.certification else {
                Issue.record("not certified: \(verified.certification)")
                return
            }
            #expect(checkpoint >= verified.location.height && signers.count >= 3)
            answers.append(found)
        }
        #expect(answers[0].inclusion.location.applied && !answers[1].inclusion.location.applied)
        #expect(answers[1].inclusion.location.reason == "evidenceUsed" && answers[1].committed == [1, 19])

        // Each way a node could misstate a result is caught.
        let honest = answers[0]
        let location = honest.inclusion.location
        func with(location: TransactionLocation? = nil, committed: [UInt8]?? = nil, proof: MerkleProof?? = nil, record: [UInt8]?? = nil) -> ResultProof {
            ResultProof(
                inclusion: TransactionInclusion(
                    location: location ?? honest.inclusion.location, commandCount: honest.inclusion.commandCount, proof: honest.inclusion.proof,
                    certificate: honest.inclusion.certificate),
                committed: committed ?? honest.committed, resultProof: proof ?? honest.resultProof, checkpointHeight: honest.checkpointHeight,
                checkpointCertificate: honest.checkpointCertificate, record: record ?? honest.record, recordProof: honest.recordProof)
        }
        let rejectedLocation = TransactionLocation(height: location.height, position: location.position, applied: false, reason: "evidenceUsed")
        let misstated: [(String, ResultProof)] = [
            ("said rejected", with(location: rejectedLocation)),
            ("said rejected, its bytes forged to match", with(location: rejectedLocation, committed: .some([1, 19]))),
            ("a proof of another shape", with(proof: .some(MerkleProof(leafIndex: 0, leafCount: 2, siblings: [SHA256.hash("forged")])))),
            ("no proof", with(committed: .some(nil), proof: .some(nil))),
            ("another record", with(record: .some(BlockResults(count: 2, root: SHA256.hash("forged")).wireBytes))),
            ("said rejected for another reason", Liar.forged(honest)),
        ]
        for (lie, answer) in misstated {
            #expect(throws: CertifiedReadError.self, "a node that \(lie)") { try ResultCheck.verify(answer, transaction: ids[0], trusted: trusted, chainId: TestCluster.chainId) }
        }
        // The rejection's wording must be the one its bytes commit.
        let reworded = TransactionLocation(height: answers[1].inclusion.location.height, position: answers[1].inclusion.location.position, applied: false, reason: "tooManyLots")
        let rewordedAnswer = ResultProof(
            inclusion: TransactionInclusion(
                location: reworded, commandCount: answers[1].inclusion.commandCount, proof: answers[1].inclusion.proof, certificate: answers[1].inclusion.certificate),
            committed: answers[1].committed, resultProof: answers[1].resultProof, checkpointHeight: answers[1].checkpointHeight,
            checkpointCertificate: answers[1].checkpointCertificate, record: answers[1].record, recordProof: answers[1].recordProof)
        #expect(throws: CertifiedReadError.self) { try ResultCheck.verify(rewordedAnswer, transaction: ids[1], trusted: trusted, chainId: TestCluster.chainId) }
        // Figures the node words otherwise are not shown: the committed ones are.
        let embellished = ResultProof(
            inclusion: TransactionInclusion(
                location: TransactionLocation(height: reworded.height, position: reworded.position, applied: false, reason: "evidenceUsed(forged figures)"),
                commandCount: answers[1].inclusion.commandCount, proof: answers[1].inclusion.proof, certificate: answers[1].inclusion.certificate),
            committed: answers[1].committed, resultProof: answers[1].resultProof, checkpointHeight: answers[1].checkpointHeight,
            checkpointCertificate: answers[1].checkpointCertificate, record: answers[1].record, recordProof: answers[1].recordProof)
        let shown = try ResultCheck.verify(embellished, transaction: ids[1], trusted: trusted, chainId: TestCluster.chainId)
        #expect(shown.location.reason == "evidenceUsed" && shown.isCertified, "\(shown)")

        // The gateway: verified results; behind a liar alone a 502, beside an honest node the truth.
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry])
        defer { serving.cancel() }
        for (id, result) in zip(ids, ["applied", "rejected"]) {
            let found = try await Self.get(port, "/v1/transactions/\(id.hex)", key: reader.secret)
            #expect(found.status == 200 && found.body["result"] as? String == result && found.body["resultVerified"] as? Bool == true
                    && (found.body["resultCheckpoint"] as? Int ?? 0) >= (found.body["height"] as? Int ?? .max), "\(found.text)")
        }
        let liar = try Liar(relayingTo: nodes[1].transport.clientPort, ca: cluster.ca, caKey: cluster.caKey, chainId: TestCluster.chainId, lie: .result)
        defer { liar.stop() }
        let liarAddress = NodeAddress(host: "127.0.0.1", port: liar.port)
        for (behind, expected) in [([liarAddress], 502), ([liarAddress, NodeAddress(host: "127.0.0.1", port: nodes[2].transport.clientPort)], 200)] {
            let (_, lied, liedPort) = try await Self.start(behind, cluster, keys: [reader.entry])
            defer { lied.cancel() }
            let reply = try await Self.get(liedPort, "/v1/transactions/\(ids[0].hex)", key: reader.secret)
            #expect(reply.status == expected, "\(behind): \(reply.text)")
            if expected == 200 {
                #expect(reply.body["result"] as? String == "applied" && reply.body["resultVerified"] as? Bool == true, "\(reply.text)")
                // The public lookup page shows the proven result, not the liar's (it once
                // showed the node's word under "Inclusion verified").
                let page = try await Self.get(liedPort, "/en/lookup?q=\(ids[0].hex)", key: reader.secret)
                #expect(page.status == 200 && page.text.contains("<dd>applied</dd>") && page.text.contains("Result verified: the one the block committed"),
                        "\(page.text)")
            } else {
                #expect(reply.text.contains("cannot be trusted"), "\(reply.text)")
            }
        }

        // The query CLI: the proof line says the result is proven; a liar makes it fail.
        let bin = try productsDirectory()
        let (caFile, _, genesis) = try cluster.clientFiles(signer: 0)
        func tx(_ port: UInt16, _ id: Bytes32) throws -> Ran {
            try run("\(bin)/calisson", ["tx", id.hex, "--node", "127.0.0.1:\(port)", "--ca", caFile, "--chain", TestCluster.chainId, "--genesis", genesis], timeout: 60)
        }
        let told = try tx(nodes[3].transport.clientPort, ids[1])
        #expect(told.status == 0 && told.output.contains("rejected: evidenceUsed") && told.output.contains("its result is the one the block committed"),
                "\(told.output) \(told.errors)")
        let lied = try tx(liar.port, ids[0])
        #expect(lied.status != 0 && lied.errors.contains("cannot be trusted"), "\(lied.output) \(lied.errors)")
    }

    /// A block's results checked whole against its record, as the certified event feed
    /// checks them: every way of misstating one is caught, figures are shown as committed.
    @Test func aBlocksResultsAreCheckedWholeAgainstTheirRecord() throws {
        let short = LedgerRejection.insufficientFunds(available: 2, asked: 5)
        let stored: [[UInt8]] = [
            [0], StoreAnswers.result(.rejected(short), committed: true), StoreAnswers.result(.rejected(.malformed("a field too long")), committed: true),
        ]
        let value = BlockResults(leaves: try #require(StoreAnswers.committedLeaves(stored))).wireBytes
        func record(_ value: [UInt8]?, at height: UInt64 = 16) -> CertifiedRecord { CertifiedRecord(value: value, height: height, root: SHA256.hash("root")) }
        func check(_ results: [[UInt8]], _ record: CertifiedRecord) throws -> ResultCheck.BlockResultsCheck {
            try ResultCheck.verifyBlock(results, height: 16, record: record)
        }

        #expect(try check(stored, record(value)) == .certified(checkpoint: 16, reasons: [nil, "\(short)", "\(LedgerRejection.malformed("a field too long"))"]))
        #expect(try check(stored, record(value, at: 15)) == .notYetCertified(checkpoint: 15))
        #expect(try check(stored, record(nil)) == .notCommitted(checkpoint: 16))
        #expect(try check([], record(nil)) == .certified(checkpoint: 16, reasons: []), "a block without transactions writes no record")
        // Figures the node words otherwise are replaced by the committed ones.
        let form = short.committedBytes
        let framed: [UInt8] = [2, 0, UInt8(form.count)] + form
        var embellished = stored
        embellished[1] = framed + Array("insufficientFunds(available: 9, asked: 9)".utf8)
        #expect(try check(embellished, record(value)) == .certified(checkpoint: 16, reasons: [nil, "\(short)", "\(LedgerRejection.malformed("a field too long"))"]))

        var flipped = stored
        flipped[0] = StoreAnswers.result(.rejected(short), committed: true)
        flipped[1] = [0]
        var reworded = stored
        reworded[1] = framed + Array("tooManyLots".utf8)
        var uncommitted = stored
        uncommitted[1] = StoreAnswers.result(.rejected(short))
        let misstated: [(String, [[UInt8]], CertifiedRecord)] = [
            ("flips them", flipped, record(value)),
            ("leaves one out", Array(stored.dropLast()), record(value)),
            ("adds one", stored + [[0]], record(value)),
            ("words a rejection as another reason", reworded, record(value)),
            ("gives one without its committed form", uncommitted, record(value)),
            ("gives them against another record", stored, record(BlockResults(count: 3, root: SHA256.hash("forged")).wireBytes)),
            ("gives them against a record that does not decode", stored, record([1, 2, 3])),
        ]
        for (lie, results, record) in misstated {
            #expect(throws: CertifiedReadError.self, "a node that \(lie)") { try check(results, record) }
        }
    }

    /// The certified event feed (`certified=true`) sends each block's results as the block
    /// committed them: behind a node that flips them in its blocks' contents and an honest
    /// one, the truth; behind that node alone, nothing (its plain feed has its word, as
    /// documented).
    @Test func aCertifiedFeedSendsTheResultsBlocksCommittedAndNeverALiars() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let ids = try await Self.appliedThenRejected(cluster, nodes).map(\.hex)
        // A proposal opened and decided (the same validators again): its opening and its
        // decision are confirmed too, under rules 7 where every opening must be named.
        #expect(try await Self.blocking { cluster.shrinkValidators(to: 4, through: nodes) })
        #expect(try await Self.until(30) { nodes[0].read { $0.proposal(1)?.status.decidedAt != nil } == true })
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: nodes[0].height + 1) })

        let liar = try Liar(before: nodes[1], of: cluster, lie: .blockResults)
        defer { liar.stop() }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let path = "/v1/events?from=1&kind=transaction&certified=true"
        do {
            let (serving, port) = try await Self.startBeside(liar, nodes, cluster, keys: [reader.entry])
            defer { serving.cancel() }
            let feed = try await Self.blocking { try FeedReader.read(port: port, path: path, key: reader.secret) { $0.count >= 2 } }
            let events = feed.events.map(\.data)
            #expect(feed.status == 200 && events.compactMap { $0["id"] as? String } == ids, "\(feed.events.map(\.json))")
            #expect(events.first?["result"] as? String == "applied" && events.last?["result"] as? String == "rejected"
                    && events.last?["reason"] as? String == "evidenceUsed", "\(feed.events.map(\.json))")
            #expect(events.allSatisfy { $0["resultVerified"] as? Bool == true && ($0["checkpoint"] as? Int ?? 0) >= ($0["height"] as? Int ?? .max) })
            let governance = try await Self.blocking {
                try FeedReader.read(port: port, path: "/v1/events?from=1&kind=transaction,governance&certified=true", key: reader.secret) {
                    $0.contains { $0.name == "governance" }
                }
            }
            let opened = governance.events.first { $0.data["kind"] as? String == "propose" }
            let decided = governance.events.first { $0.name == "governance" }
            #expect(opened?.data["proposal"] as? Int == 1 && opened?.data["resultVerified"] as? Bool == true, "\(governance.events.map(\.json))")
            #expect(decided?.data["proposal"] as? Int == 1 && decided?.data["status"] as? String == "passed" && decided?.data["checkpoint"] != nil,
                    "\(governance.events.map(\.json))")
        }
        let (port, serving, failure) = try await Self.refusedBehind(liar, cluster, path: path, key: reader)
        defer { serving.cancel() }
        #expect(failure.contains("are not those the block committed"), "\(failure)")
        let word = try await Self.blocking { try FeedReader.read(port: port, path: "/v1/events?from=1&kind=transaction", key: reader.secret) { $0.count >= 2 } }
        #expect(word.events.first?.data["result"] as? String == "rejected", "the plain feed carries the node's word: \(word.events.map(\.json))")

        // A node's error text, quoted in the stream's comments, cannot write an event of its
        // own there: a line break in it would end the comment.
        let forged = "down\n\nid: 98.0\nevent: epoch\ndata: {\"epoch\":9,\"height\":98,\"checkpoint\":104}\n\n"
        #expect(EventFeed.comment(forged).filter { $0 == "\n" }.count == 2 && EventFeed.comment(forged).hasPrefix(": down\\u{a}"))
        let writer = try Liar(before: nodes[1], of: cluster, lie: .handoversError(forged))
        defer { writer.stop() }
        let (_, written, writtenPort) = try await Self.start([NodeAddress(host: "127.0.0.1", port: writer.port)], cluster, keys: [reader.entry])
        defer { written.cancel() }
        for path in ["/v1/events?from=1", "/v1/events?from=1&certified=true"] {
            let read = try await Self.blocking { try FeedReader.read(port: writtenPort, path: path, key: reader.secret, seconds: 4) { !$0.isEmpty } }
            #expect(read.status == 200 && read.events.isEmpty, "\(path): \(read.events.map(\.json))")
        }
    }

    /// Under ledger rules 8 each block commits the proposals it decided and the epoch it
    /// closed: a node that leaves them out of a block's contents is caught by the certified
    /// feed, which then takes them from another node; the plain feed has the node's word.
    @Test func aCertifiedFeedCatchesDecisionsAndEpochClosesLeftOut() async throws {
        let cluster = try TestCluster(rules: LedgerRules.eventsCommitted)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        // A proposal decided, then blocks past the first epoch close (epochs of 50 blocks).
        #expect(try await Self.blocking { cluster.shrinkValidators(to: 4, through: nodes) })
        try await Self.blocking {
            var nonce: UInt64 = 1
            cluster.advance(nodes, to: 52, issuers: 3, nonce: &nonce)
        }
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: nodes[0].height + 1) })
        let liar = try Liar(before: nodes[1], of: cluster, lie: .omittedEvents)
        defer { liar.stop() }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let path = "/v1/events?from=1&kind=governance,epoch&certified=true"
        @Sendable func both(_ events: [FeedReader.Event]) -> Bool { Set(events.map(\.name)) == ["governance", "epoch"] }
        do {
            let (serving, port) = try await Self.startBeside(liar, nodes, cluster, keys: [reader.entry])
            defer { serving.cancel() }
            let feed = try await Self.blocking { try FeedReader.read(port: port, path: path, key: reader.secret, enough: both) }
            let decided = feed.events.first { $0.name == "governance" }, closed = feed.events.first { $0.name == "epoch" }
            #expect(decided?.data["proposal"] as? Int == 1 && decided?.data["status"] as? String == "passed", "\(feed.events.map(\.json))")
            #expect(closed?.data["epoch"] as? Int == 0 && closed?.data["height"] as? Int == 50 && closed?.data["checkpoint"] != nil, "\(feed.events.map(\.json))")
        }
        let (port, serving, failure) = try await Self.refusedBehind(liar, cluster, path: path, key: reader)
        defer { serving.cancel() }
        #expect(failure.contains("decided proposals [1], the node says []") || failure.contains("closed epoch 0, the node says none"), "\(failure)")
        let word = try await Self.blocking {
            try FeedReader.read(port: port, path: "/v1/events?from=1&kind=governance,epoch", key: reader.secret, seconds: 4) { !$0.isEmpty }
        }
        #expect(word.status == 200 && word.events.isEmpty, "the plain feed has the node's word: \(word.events.map(\.json))")
    }

    /// `tx --genesis` against a node with no stable checkpoint yet: the transaction's place,
    /// proven, and its result said to be the node's word (the command failed on the node's
    /// error instead, the fallback written for it never reached).
    @Test func aTransactionBeforeTheFirstCheckpointIsPlacedByTheQueryCLI() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes(fill: false)
        defer { for node in nodes { node.stop() } }
        let bytes = cluster.attribute(by: 0, to: 1, nonce: 1)
        _ = nodes[0].submit(bytes)
        #expect(eventually(30) { nodes.allSatisfy { $0.height >= 1 } })
        let bin = try productsDirectory()
        let (caFile, _, genesis) = try cluster.clientFiles(signer: 0)
        let id = SignedTransaction.idTag.hash(bytes)
        let ran = try await Self.blocking {
            try run("\(bin)/calisson", ["tx", id.hex, "--node", "127.0.0.1:\(nodes[1].transport.clientPort)", "--ca", caFile, "--chain", TestCluster.chainId,
                                        "--genesis", genesis], timeout: 60)
        }
        #expect(ran.status == 0 && ran.output.contains("applied") && ran.output.contains("the node gave no proof of the result"), "\(ran.output) \(ran.errors)")
    }

    /// A node naming more decided proposals than a block has proposals and votes (to have
    /// the gateway ask it for their records, chunk after chunk, every feed and wait held
    /// behind) is refused on the block's own transactions before any record is asked, and
    /// passed over for the next blocks.
    @Test func aNodeNamingDecisionsABlockCannotHaveIsRefusedAtOnce() async throws {
        let cluster = try TestCluster(rules: LedgerRules.eventsCommitted)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        try await Self.blocking {
            var nonce: UInt64 = 1
            cluster.advance(nodes, to: 6, issuers: 3, nonce: &nonce)
        }
        let store = try NodeStore(file: "\(cluster.directory)/p0.db", readOnly: true)
        let busy = try #require(try (1...nodes[0].height).first { try store.block(at: $0)?.transactions.isEmpty == false })
        let liar = try Liar(before: nodes[1], of: cluster, lie: .inventedDecisions)
        defer { liar.stop() }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        do {
            let (_, serving, port) = try await Self.start([NodeAddress(host: "127.0.0.1", port: liar.port)], cluster, keys: [reader.entry])
            defer { serving.cancel() }
            try await Self.untilHealthy(port)
            let refused = try await Self.get(port, "/v1/blocks/\(busy)", key: reader.secret)
            #expect(refused.status == 502 && refused.text.contains("proposals decided by its 0 proposals and votes"), "\(refused.text)")
            let status = try await Self.get(port, "/v1/status", key: reader.secret)
            let failure = (status.body["nodes"] as? [[String: Any]])?.first?["recentFailure"] as? String ?? status.text
            #expect(failure.contains("proposals decided by its 0 proposals and votes"), "\(failure)")
        }
        let (serving, port) = try await Self.startBeside(liar, nodes, cluster, keys: [reader.entry])
        defer { serving.cancel() }
        let block = try await Self.get(port, "/v1/blocks/\(busy)", key: reader.secret)
        #expect(block.status == 200 && block.body["source"] as? String != "127.0.0.1:\(liar.port)", "\(block.text)")
    }

    /// `wait=certified`: a submission is answered once the certified state proves its
    /// result, whatever a node behind the gateway says of it; `wait=true` answers at
    /// finality with the result of the block it was found in (here the liar's).
    @Test func aSubmissionWaitingForItsCertifiedResultGetsTheResultItsBlockCommitted() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        // Blocks' results flipped by the first node the gateway asks; the second is honest.
        let liar = try Liar(before: nodes[1], of: cluster, lie: .blockResults)
        defer { liar.stop() }
        let submitter = APIKey.generate(name: "back-end", scopes: [.read, .submit])
        let (serving, port) = try await Self.startBeside(liar, nodes, cluster, keys: [submitter.entry])
        defer { serving.cancel() }
        func submit(_ bytes: [UInt8], wait: String) async throws -> Reply {
            try await Self.post(port, "/v1/transactions?wait=\(wait)", key: submitter.secret, json: ["transaction": Hex.encode(bytes)])
        }
        let applied = cluster.attribute(by: 1, to: 5, nonce: 1)
        let proven = try await submit(applied, wait: "certified")
        #expect(proven.status == 200 && proven.body["status"] as? String == "final" && proven.body["result"] as? String == "applied"
                && proven.body["resultVerified"] as? Bool == true && (proven.body["resultCheckpoint"] as? Int ?? 0) >= (proven.body["height"] as? Int ?? .max),
                "\(proven.text)")
        // The same gesture's evidence again: rejected, and proven so.
        let reused = Transaction.attribution(
            chainId: TestCluster.chainId, by: "p1", nonce: 2, expiry: 500, to: Ed25519PublicKey(SHA256.hash("citizen 6")), evidence: SHA256.hash("evidence 1 1")
        ).signed(with: cluster.signingKeys[1]).wireBytes
        let rejected = try await submit(reused, wait: "certified")
        #expect(rejected.status == 200 && rejected.body["result"] as? String == "rejected" && rejected.body["reason"] as? String == "evidenceUsed"
                && rejected.body["resultVerified"] as? Bool == true, "\(rejected.text)")
        // Without `certified`, the answer at finality carries no proof of the result (it may
        // be the liar's word, and says nothing of it).
        let third = cluster.attribute(by: 1, to: 7, nonce: 3)
        let final = try await submit(third, wait: "true")
        #expect(final.status == 200 && final.body["status"] as? String == "final" && final.body["resultVerified"] == nil, "\(final.text)")
        let unknown = try await submit(cluster.attribute(by: 1, to: 8, nonce: 4), wait: "proven")
        #expect(unknown.status == 400 && unknown.text.contains("the parameter wait: 'proven' is not one of true, false, certified"), "\(unknown.text)")
    }

    /// Under the first ledger rules a block commits no results: the gateway says the result
    /// is the node's word (`resultVerified` false), the CLI says why.
    @Test func aResultOfABlockThatCommittedNoneIsSaidToBeTheNodesWord() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let transaction = cluster.attribute(by: 1, to: 5, nonce: 1)
        let id = SignedTransaction.idTag.hash(transaction)
        _ = nodes[1].submit(transaction)
        #expect(try await Self.blocking { eventually(30) { nodes.allSatisfy { Self.finalHeight(id, at: $0) != nil } } })
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: (Self.finalHeight(id, at: nodes[0]) ?? 0) + 1) })
        let reader = APIKey.generate(name: "reader", scopes: [.read, .submit])
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry])
        defer { serving.cancel() }
        let found = try await Self.get(port, "/v1/transactions/\(id.hex)", key: reader.secret)
        #expect(found.status == 200 && found.body["result"] as? String == "applied" && found.body["inclusionVerified"] as? Bool == true
                && found.body["resultVerified"] as? Bool == false && found.body["resultCheckpoint"] == nil, "\(found.text)")
        // A submission waiting for its result proven is answered once its block is
        // confirmed, said to be the node's word rather than waiting for a proof that cannot come.
        let waited = try await Self.post(
            port, "/v1/transactions?wait=certified", key: reader.secret, json: ["transaction": Hex.encode(cluster.attribute(by: 1, to: 6, nonce: 2))])
        #expect(waited.status == 200 && waited.body["result"] as? String == "applied" && waited.body["resultVerified"] as? Bool == false, "\(waited.text)")
        let bin = try productsDirectory()
        let (caFile, _, genesis) = try cluster.clientFiles(signer: 0)
        let told = try run("\(bin)/calisson", [
            "tx", id.hex, "--node", "127.0.0.1:\(nodes[0].transport.clientPort)", "--ca", caFile, "--chain", TestCluster.chainId, "--genesis", genesis,
        ], timeout: 60)
        #expect(told.status == 0 && told.output.contains("committed no results"), "\(told.output) \(told.errors)")
    }

    /// Before any stable checkpoint no node can prove a result: the gateway answers the
    /// proven place and says the result is the node's word, rather than fail.
    @Test func aResultNoNodeCanProveYetIsServedAsTheNodesWord() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes(fill: false)
        defer { for node in nodes { node.stop() } }
        let transaction = cluster.attribute(by: 1, to: 5, nonce: 1)
        let id = SignedTransaction.idTag.hash(transaction)
        _ = nodes[1].submit(transaction)
        #expect(try await Self.blocking { eventually(30) { nodes.allSatisfy { Self.finalHeight(id, at: $0) != nil } } })
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let (_, serving, port) = try await Self.start(nodes, cluster, keys: [reader.entry])
        defer { serving.cancel() }
        let found = try await Self.get(port, "/v1/transactions/\(id.hex)", key: reader.secret)
        #expect(found.status == 200 && found.body["result"] as? String == "applied" && found.body["inclusionVerified"] as? Bool == true
                && found.body["resultVerified"] as? Bool == false, "\(found.text)")
        #expect(nodes[0].height < TrustedValidators.checkpointInterval, "a checkpoint came: \(nodes[0].height)")
    }

    /// A node joining from a snapshot keeps the checkpoint block's results as a peer gives
    /// them, and proves them later to its own clients: results that are not those the block
    /// committed to the certified state are the peer's lie, left for the next peer.
    @Test func aSnapshotPeerCannotPlantResults() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes(fill: false)
        defer { for node in nodes { node.stop() } }
        // One attribution a block, up to the first checkpoint: its block holds one.
        try await Self.blocking {
            var nonce: UInt64 = 0
            cluster.advance(nodes, to: TrustedValidators.checkpointInterval, issuers: 4, nonce: &nonce)
        }
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: TrustedValidators.checkpointInterval) }, "\(nodes.map(\.height))")
        func source(_ index: Int, forging: Bool) throws -> StateSync.Source {
            let client = Mutex(try TransportClient(host: "127.0.0.1", port: nodes[index].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId))
            return StateSync.Source(name: forging ? "results-liar" : "p\(index)") { requests in
                let answers = try client.withLock { connection in
                    try connection.pipeline(requests.map(\.wireBytes), timeoutMilliseconds: 30_000).map { try ClientResponse(wireBytes: $0.get()) }
                }
                guard forging else { return answers }
                return answers.map { answer in
                    // Each result of the block the other way round, as stored results.
                    guard case let .blockContents(contents?) = answer else { return answer }
                    let flipped = contents.results.map { StoreAnswers.isApplied($0) ? StoreAnswers.result(.rejected(.evidenceUsed), committed: true) : [0] }
                    return .blockContents(BlockContents(
                        height: contents.height, body: contents.body, certificate: contents.certificate, results: flipped, closedEpoch: contents.closedEpoch,
                        decided: contents.decided, opened: contents.opened))
                }
            }
        }
        let checkpointBlock = try #require(try NodeStore(file: nodes[0].configuration.databaseFile, readOnly: true).block(at: TrustedValidators.checkpointInterval))
        #expect(!checkpointBlock.transactions.isEmpty, "the checkpoint's block holds no transaction: nothing to forge")
        let store = try NodeStore(file: Scratch.file("results-sync.db"), create: true)
        let lines = Locked<[String]>([])
        let sync = StateSync(
            genesis: cluster.genesis, genesisSchedule: try NodeRuntime.replicaConfiguration(cluster.configuration(0)).genesisSchedule,
            nodeKey: Ed25519PrivateKey().publicKey, store: store, sources: [try source(1, forging: true), try source(2, forging: false)],
            log: { line in lines.withLock { $0.append(line) } })
        sync.roundsMax = 1
        sync.roundPauseSeconds = 0
        let report = try sync.run()
        #expect(report.source == "p2", "\(lines.withLock { $0 })")
        #expect(lines.withLock { $0 }.contains { $0.hasPrefix("results-liar cannot be trusted: block 8's results are not those it committed") }, "\(lines.withLock { $0 })")
        #expect(try store.block(at: report.height)?.transactions.map(\.result) == checkpointBlock.transactions.map(\.result))
    }

    /// A node joining from a snapshot gives its first block's events from the certified
    /// state, not from the peer: the epoch it closed (the state's epoch starts right after
    /// it), the proposals it opened (its applied proposals, the last numbers the state
    /// handed out) and, under rules 8, those it decided (`BlockEvents`); without them a
    /// gateway's certified feed would refuse that block's contents from it.
    @Test func aSyncedNodeTakesItsFirstBlocksEventsFromTheState() throws {
        let cluster = try TestCluster(rules: LedgerRules.eventsCommitted)
        let sync = StateSync.self
        func propose(_ nonce: UInt64) -> [UInt8] {
            Transaction(chainId: TestCluster.chainId, signer: .partner(Identifier("p0")!), nonce: nonce, expiryHeight: 90,
                        body: .propose(.setValidators([Identifier("p0")!]), deadline: 80)).signed(with: cluster.signingKeys[0]).wireBytes
        }
        // An attribution, an applied proposal, a rejected one, an applied one.
        let block = Block(seq: 48, commands: [cluster.attribute(by: 1, to: 5, nonce: 1), propose(2), propose(3), propose(4)])
        let results = [[0], [0], StoreAnswers.result(.rejected(.evidenceUsed), committed: true), [0]]
        var meta = LedgerMeta()
        (meta.epoch, meta.epochStartHeight, meta.nextProposal) = (3, 49, 7)
        let opened = [OpenedProposal(position: 1, proposal: 5), OpenedProposal(position: 3, proposal: 6)]
        let extra = try #require(try sync.checkpointEvents(
            48, block: block, results: results, meta: meta.wireBytes, events: BlockEvents(decided: [4, 2], closedEpoch: 2, opened: opened).wireBytes))
        #expect(extra == StoreAnswers.eventsExtra(closedEpoch: 2, decided: [4, 2], opened: opened))
        // A record that disagrees with the block and the ledger's record is not taken.
        #expect(throws: StateSyncError.self) {
            try sync.checkpointEvents(48, block: block, results: results, meta: meta.wireBytes, events: BlockEvents(decided: [4], closedEpoch: 2, opened: []).wireBytes)
        }
        // No epoch closed (it started earlier), no record of decisions (rules 7, or none).
        meta.epochStartHeight = 41
        #expect(try sync.checkpointEvents(48, block: block, results: results, meta: meta.wireBytes, events: nil)
                == StoreAnswers.eventsExtra(closedEpoch: nil, decided: [], opened: opened))
        #expect(try sync.checkpointEvents(48, block: Block(seq: 48, commands: [cluster.attribute(by: 1, to: 5, nonce: 1)]), results: [[0]], meta: meta.wireBytes, events: nil) == nil)
        // A state that numbered fewer proposals than the block opened, or no ledger record: refused.
        meta.nextProposal = 2
        #expect(throws: StateSyncError.self) { try sync.checkpointEvents(48, block: block, results: results, meta: meta.wireBytes, events: nil) }
        #expect(throws: StateSyncError.self) { try sync.checkpointEvents(48, block: block, results: results, meta: nil, events: nil) }
    }

    /// A rejection does not use the nonce: the same bytes, sent again once the citizen has
    /// the tokens, apply in a later block. A node that proves the earlier, rejected copy (here
    /// by replaying its answer from before) is overruled by another node that proves the
    /// copy that applied: the gateway confirms a certified rejection with the other nodes,
    /// the query CLI with its witnesses.
    @Test func aNodeProvingARejectedCopyIsOverruledByTheCopyThatApplied() async throws {
        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let citizen = Ed25519PrivateKey(seed: SHA256.hash("a citizen short of tokens").bytes)!
        let redeem = Transaction(
            chainId: TestCluster.chainId, signer: .citizen(citizen.publicKey), nonce: 1, expiryHeight: 500,
            body: .redeem(acceptor: Identifier("p0")!, amount: 5, service: SHA256.hash("a bus ticket"))
        ).signed(with: citizen).wireBytes
        let id = SignedTransaction.idTag.hash(redeem)
        _ = nodes[1].submit(redeem)
        #expect(try await Self.blocking { eventually(30) { nodes.allSatisfy { Self.finalHeight(id, at: $0) != nil } } })
        let rejectedAt = try #require(Self.finalHeight(id, at: nodes[0]))
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: rejectedAt + 1) })
        let client = try TransportClient(host: "127.0.0.1", port: nodes[0].transport.clientPort, ca: cluster.ca, chainId: TestCluster.chainId)
        defer { client.close() }
        let recorded = try ClientResponse(wireBytes: try client.request(ClientRequest.transactionResult(id).wireBytes))
        guard case let .transactionResult(rejected?) = recorded else {
            Issue.record("no result proof: \(recorded)")
            return
        }
        let trusted = TrustedValidators(genesis: cluster.genesis.validatorKeys)
        let first = try ResultCheck.verify(rejected, transaction: id, trusted: trusted, chainId: TestCluster.chainId)
        #expect(first.isCertified && first.location.reason?.hasPrefix("insufficientFunds") == true, "\(first)")

        // Tokens, then the same bytes again: they apply in a later block.
        let reward = Transaction.attribution(
            chainId: TestCluster.chainId, by: "p1", nonce: 77, expiry: 500, to: citizen.publicKey, evidence: SHA256.hash("a gesture for the citizen")
        ).signed(with: cluster.signingKeys[1]).wireBytes
        _ = nodes[1].submit(reward)
        #expect(try await Self.blocking { eventually(30) { nodes.allSatisfy { Self.finalHeight(SignedTransaction.idTag.hash(reward), at: $0) != nil } } })
        // To one node, not the primary: gossip carries the bytes again, since every node
        // forgot it had seen them once their first copy was rejected (`forgetGossip`).
        #expect(nodes[2].submit(redeem) == nil)
        #expect(try await Self.blocking { eventually(30) { nodes.allSatisfy { (Self.finalHeight(id, at: $0) ?? 0) > rejectedAt } } })
        let appliedAt = try #require(Self.finalHeight(id, at: nodes[0]))
        #expect(try await Self.blocking { TestCluster.settle(nodes, atLeast: appliedAt + 1) })

        let liar = try Liar(
            relayingTo: nodes[1].transport.clientPort, ca: cluster.ca, caKey: cluster.caKey, chainId: TestCluster.chainId, lie: .replayedResult(recorded))
        defer { liar.stop() }
        let reader = APIKey.generate(name: "reader", scopes: [.read])
        let behind = [NodeAddress(host: "127.0.0.1", port: liar.port), NodeAddress(host: "127.0.0.1", port: nodes[2].transport.clientPort)]
        let (_, serving, port) = try await Self.start(behind, cluster, keys: [reader.entry])
        defer { serving.cancel() }
        let found = try await Self.get(port, "/v1/transactions/\(id.hex)", key: reader.secret)
        #expect(found.status == 200 && found.body["result"] as? String == "applied" && found.body["height"] as? Int == Int(appliedAt)
                && found.body["resultVerified"] as? Bool == true, "\(found.text)")

        let bin = try productsDirectory()
        let (caFile, _, genesis) = try cluster.clientFiles(signer: 0)
        let told = try run("\(bin)/calisson", [
            "tx", id.hex, "--node", "127.0.0.1:\(liar.port)", "--ca", caFile, "--chain", TestCluster.chainId, "--genesis", genesis,
            "--witness", "127.0.0.1:\(nodes[3].transport.clientPort)", "--checkpoints", "none",
        ], timeout: 60)
        #expect(told.status != 0 && told.errors.contains("hid the copy that applied"), "\(told.output) \(told.errors)")
    }
}
