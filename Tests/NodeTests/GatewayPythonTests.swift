// Language neutrality shown: the Python client in examples/python (standard library and
// PyNaCl, from .venv) passes the transaction test vectors, then runs a back-end's day
// against a live gateway in front of four validators: a reward the gateway signs, a
// redemption the Python wallet signs (retried without a second effect), an amount past
// the ledger's bound refused, the account read, the event feed filtered by account.
import CalissonTestKit
import CalissonCrypto
import Foundation
@testable import Gateway
import Ledger
import Testing
import Wire

@Suite(.serialized, .onOwnThreads) struct GatewayPythonTests {
    static let python = "\(GatewaySchemaTests.root)/.venv/bin/python"
    static let examples = "\(GatewaySchemaTests.root)/examples/python"

    @Test func thePythonClientPassesTheVectorsAndRunsABackEndsDay() async throws {
        guard GatewaySchemaTests.venvTool("python") != nil else { return }
        let vectors = try await GatewayTests.blocking { try run(Self.python, ["\(Self.examples)/vectors.py"]) }
        #expect(vectors.status == 0 && vectors.output.contains("0 failed"), "\(vectors.output)\n\(vectors.errors)")

        let cluster = try TestCluster(rules: LedgerRules.resultsCommitted)  // results proven (the certified feed)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        try await GatewayTests.blocking {
            var nonce: UInt64 = 1
            cluster.advance(nodes, to: 10, issuers: 4, nonce: &nonce)  // a first checkpoint
        }
        let backEnd = APIKey.generate(name: "python", scopes: [.read, .submit])
        let (_, serving, port) = try await GatewayTests.start(
            nodes, cluster, keys: [backEnd.entry], signer: try GatewaySubmissionTests.signer(cluster, 0))
        defer { serving.cancel() }

        let day = try await GatewayTests.blocking {
            try run(Self.python, [
                "\(Self.examples)/walkthrough.py", "--gateway", "http://127.0.0.1:\(port)", "--key", backEnd.secret, "--programme", "tri",
                "--acceptor", "p3",
            ], timeout: 240)
        }
        #expect(day.status == 0 && day.output.contains("walkthrough: ok"), "\(day.output)\n\(day.errors)")
        // What the Python wallet did is on the chain: 5 units of 10, less 20 redeemed, less
        // the batch's two redemptions of 1 (each once, though the batch was sent twice).
        let wallet = Ed25519PrivateKey(seed: SHA256.hash("walkthrough wallet").bytes)!.publicKey
        #expect(nodes[0].read { $0.account(wallet).balance } == 28, "\(day.output)")
    }
}
