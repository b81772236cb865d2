// The gateway against its own contract: Schemathesis (from PyPI, in .venv, installed by
// `make test` through scripts/install-test-tools) generates requests for every operation
// of Sources/Gateway/openapi.yaml, valid and invalid, against a live gateway in front of a
// live node, and checks every response: no 5xx other than those documented, status codes,
// content types, headers and bodies as the document says.
import CalissonTestKit
import CalissonCrypto
import Foundation
@testable import Gateway
import Ledger
import Node
import Settlement
import Testing
import Transport

@Suite(.serialized, .onOwnThreads) struct GatewaySchemaTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    /// A tool of the project's .venv, or nil with the test's issue recorded
    /// (scripts/install-test-tools installs them; make test runs it).
    static func venvTool(_ name: String) -> String? {
        let path = "\(root)/.venv/bin/\(name)"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            Issue.record("\(path) is missing: run scripts/install-test-tools (make test does)")
            return nil
        }
        return path
    }

    /// The gateway's list of integer path parameters (written in one form only:
    /// `RequestShapeMiddleware.integerPathParameters`) is the document's: every parameter
    /// `in: path` whose schema is `type: integer`.
    @Test func theIntegerPathParametersAreTheDocuments() throws {
        let lines = try String(contentsOfFile: "\(Self.root)/Sources/Gateway/openapi.yaml", encoding: .utf8)
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var found = Set<String>()
        // Each parameter reads `name: …` then `in: path`, then its description and schema,
        // up to the next parameter or the operation's responses.
        for (index, line) in lines.enumerated() where line == "in: path" && index > 0 {
            let name = String(lines[index - 1].split(separator: " ").last ?? "")
            let rest = lines[(index + 1)...].prefix { !$0.hasPrefix("name:") && !$0.hasPrefix("- name:") && $0 != "responses:" }
            if rest.contains("type: integer") { found.insert(name) }
        }
        #expect(!found.isEmpty)
        #expect(found == RequestShapeMiddleware.integerPathParameters, "the document's integer path parameters: \(found.sorted())")
    }

    /// The gateway's list of parameters with enumerated values, by which it names what a
    /// client sent wrong (`RequestShapeMiddleware.enumeratedParameters`), is the document's.
    @Test func theEnumeratedParametersAreTheDocuments() throws {
        let lines = try String(contentsOfFile: "\(Self.root)/Sources/Gateway/openapi.yaml", encoding: .utf8)
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var found: [String: [String]] = [:]
        for (index, line) in lines.enumerated() where (line == "in: path" || line == "in: query") && index > 0 {
            let name = String(lines[index - 1].split(separator: " ").last ?? "")
            let rest = lines[(index + 1)...].prefix { !$0.hasPrefix("name:") && !$0.hasPrefix("- name:") && $0 != "responses:" && !$0.hasPrefix("- $ref") }
            guard let start = rest.firstIndex(where: { $0.hasPrefix("enum:") }) else { continue }
            // `enum: [a, b]`, or `enum:` then `- a` lines.
            let flow = rest[start].dropFirst("enum:".count).trimmingCharacters(in: CharacterSet(charactersIn: " []"))
            let items = flow.isEmpty ? rest[(start + 1)...].prefix { $0.hasPrefix("- ") }.map { String($0.dropFirst(2)) } : flow.split(separator: ",").map(String.init)
            found[name] = items.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " '\"")) }
        }
        let listed = Dictionary(uniqueKeysWithValues: RequestShapeMiddleware.enumeratedParameters.values.map { ($0.name, $0.values) })
        #expect(found == listed && found.count == 2, "the document's enumerated parameters: \(found)")
        // A value outside them is named, with the values it may take.
        let error = DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "Cannot initialize Wait from invalid String value proven"))
        #expect(RequestShapeMiddleware.describe(error) == "the parameter wait: 'proven' is not one of true, false, certified")
        let broken = DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "Cannot initialize Wait from invalid String value a\nb"))
        #expect(RequestShapeMiddleware.describe(broken) == "the parameter wait: 'a\nb' is not one of true, false, certified")
    }

    @Test func everyOperationAnswersAsTheDocumentSays() async throws {
        guard let schemathesis = Self.venvTool("schemathesis") else { return }
        let cluster = try TestCluster(count: 1)
        let node = try cluster.startNodes()[0]
        defer { node.stop() }
        try await GatewayTests.blocking {
            var nonce: UInt64 = 0
            cluster.advance([node], to: 12, issuers: 1, nonce: &nonce)
        }
        var key = APIKey.generate(name: "schemathesis", scopes: [.read, .submit, .govern])
        key.entry.requestsPerSecond = 100_000
        var configuration = GatewayConfiguration(
            pool: NodePool(nodes: [NodeAddress(host: "127.0.0.1", port: node.transport.clientPort)], ca: cluster.ca, genesis: cluster.genesis, lagMax: 32),
            keys: [key.entry])
        configuration.port = 0
        configuration.signer = PartnerSigner(
            partner: Identifier("p0")!, key: cluster.signingKeys[0], evidence: EvidenceKey(Array(repeating: 3, count: 32)),
            log: try IdempotencyLog(path: "\(cluster.directory)/idempotency.log"))
        // With a register, the settlement files answer 200, 404 (epoch not closed) or 409.
        configuration.settlementRegister = try RegisterFile(
            payer: .init(partner: "p0", legalName: "Partner zero", iban: IBAN.french(bank: "99999", branch: "00001", account: "00000001000"), bic: "CALSFRPPXXX"),
            partners: []).validated()
        let server = try GatewayServer(configuration: configuration)
        let serving = Task(executorPreference: GatewayTests.executor) { try await server.run() }
        defer { serving.cancel() }
        #expect(try await GatewayTests.until(120) { server.port != nil })
        let port = try #require(server.port)

        let secret = key.secret
        // About 50 s alone; in the full suite on two shared cores, beside the tests that run
        // at once with it, it once took over 300 s. The bound is for a hang (the suite's
        // watchdog names one too), not a speed check.
        let ran = try await GatewayTests.blocking {
            try run(schemathesis, [
                "--config-file", "\(Self.root)/Tests/schemathesis.toml", "run", "\(Self.root)/Sources/Gateway/openapi.yaml", "--url", "http://127.0.0.1:\(port)",
                "--header", "Authorization: Bearer \(secret)", "--checks", "all", "--max-examples", "25", "--seed", "1606",
                "--request-timeout", "20", "--no-color",
            ], timeout: 1_200)
        }
        #expect(ran.status == 0, "schemathesis found problems:\n\(ran.output.suffix(6_000))\n\(ran.errors.suffix(2_000))")
    }
}
