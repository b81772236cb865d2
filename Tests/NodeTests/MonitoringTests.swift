// The operator's kit of Cluster/monitoring (Docs/OPERATIONS.md, "Monitoring"): the
// alerting rules pass promtool's checks and unit tests, every metric the rules and the
// Grafana dashboard read is one a node exports, and a node's /metrics passes promtool's lint.
import CalissonTestKit
import Foundation
import Ledger
import LightClient
import Node
import Wire
import Testing

@Suite(.serialized, .onOwnThreads) struct MonitoringTests {
    static let kit = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Cluster/monitoring").standardized.path
    static let promtool = "/usr/bin/promtool"

    func promtool(_ arguments: [String]) throws -> Ran? {
        guard FileManager.default.isExecutableFile(atPath: Self.promtool) else {
            Issue.record("promtool is missing: run scripts/install-test-tools (make test does)")
            return nil
        }
        return try run(Self.promtool, arguments)
    }

    @Test func theAlertingRulesPassPromtoolsChecksAndUnitTests() throws {
        guard let checked = try promtool(["check", "rules", "\(Self.kit)/calisson-alerts.yml"]) else { return }
        #expect(checked.status == 0, "\(checked.output) \(checked.errors)")
        let tested = try #require(try promtool(["test", "rules", "\(Self.kit)/calisson-alerts.test.yml"]))
        #expect(tested.status == 0 && tested.output.contains("SUCCESS"), "\(tested.output) \(tested.errors)")
        let config = try #require(try promtool(["check", "config", "\(Self.kit)/prometheus.yml"]))
        #expect(config.status == 0, "\(config.output) \(config.errors)")
    }

    /// A lone validator past its first checkpoint: its /metrics lints clean, names every
    /// metric the kit reads, and counts its own commit votes as received.
    @Test func theKitReadsOnlyMetricsANodeExports() throws {
        let cluster = try TestCluster(count: 1)
        defer { try? FileManager.default.removeItem(atPath: cluster.directory) }
        var configuration = cluster.configuration(0)
        configuration.metricsPort = 0
        configuration.blockWaitMilliseconds = 0
        let node = try NodeRuntime(configuration: configuration)
        try node.start()
        defer { node.stop() }
        var nonce: UInt64 = 1
        cluster.advance([node], to: 10, issuers: 1, nonce: &nonce)
        #expect(eventually { ((try? httpGet(port: node.metricsPort, "/metrics")) ?? "").contains("calisson_validator_commits_received_total{validator=\"p0\"}") })
        let response = try httpGet(port: node.metricsPort, "/metrics")
        let body = String(response[try #require(response.range(of: "\r\n\r\n")).upperBound...])
        let received = body.split(separator: "\n").first { $0.hasPrefix("calisson_validator_commits_received_total{validator=\"p0\"} ") }
        #expect(received.flatMap { UInt64($0.split(separator: " ")[1]) }.map { $0 >= 8 } == true, "\(body)")
        #expect(body.contains("calisson_validator_commits_missed_total{validator=\"p0\"} 0"), "its own votes are never missed")
        func gauge(_ name: String) -> String? {
            body.split(separator: "\n").first { $0.hasPrefix("calisson_\(name) ") }.map { String($0.split(separator: " ")[1]) }
        }
        // A lone validator: every certificate is its own vote.
        #expect(gauge("recent_certificates") != "0" && gauge("recent_certificates") == gauge("recent_certificates_signed"), "\(body)")
        #expect(gauge("pending_validator_set_from_height") == "0")
        // The ticks' lateness: a histogram whose buckets count up to every tick.
        let buckets = body.split(separator: "\n").filter { $0.hasPrefix("calisson_loop_lag_seconds_bucket{") }.compactMap { Int($0.split(separator: " ")[1]) }
        let ticks = try #require(gauge("loop_lag_seconds_count").flatMap { Int($0) })
        #expect(ticks > 0 && buckets.count == 9 && buckets == buckets.sorted() && buckets.last == ticks, "\(buckets), \(ticks) ticks")

        // A histogram's series are its name's _bucket, _sum and _count (the docs name it alone).
        let exported = Set(body.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.flatMap { line -> [String] in
            let parts = line.split(separator: " ").map(String.init)
            return parts[3] == "histogram" ? ["", "_bucket", "_sum", "_count"].map { parts[2] + $0 } : [parts[2]]
        })
        let pattern = try NSRegularExpression(pattern: "calisson_[a-z_]+")
        for file in ["calisson-alerts.yml", "grafana-dashboard.json"] {
            let text = try String(contentsOfFile: "\(Self.kit)/\(file)", encoding: .utf8)
            let names = Set(pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { Range($0.range, in: text).map { String(text[$0]) } })
            #expect(names.count > 10, "\(file) reads \(names)")
            #expect(names.subtracting(exported).isEmpty, "\(file) reads metrics no node exports: \(names.subtracting(exported).sorted())")
        }

        let metricsFile = Scratch.file("metrics.txt")
        defer { try? FileManager.default.removeItem(atPath: metricsFile) }
        try body.write(toFile: metricsFile, atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: Self.promtool) else { return }
        let lint = try run("/bin/sh", ["-c", "\(Self.promtool) check metrics < \(metricsFile)"])
        #expect(lint.status == 0, "promtool check metrics: \(lint.output) \(lint.errors)")
    }

    /// A status carries what an operator asks (behind or caught up, the set to come, its
    /// own votes); one from a node built before those fields still decodes, with defaults.
    @Test func aStatusCarriesTheOperatorsFieldsAndAnOlderOneStillDecodes() throws {
        let status = NodeStatus(
            partner: "rtm", height: 90, stateRoot: .zero, view: 2, epochFirstSeq: 1, peers: ["metropole"], mempool: 3, knownFinalHeight: 97,
            pendingValidators: ["metropole", "rtm", "friche"], pendingFromHeight: 129, recentCertificates: 100, recentCertificatesSigned: 74,
            software: "0.2.0", rulesNewest: 2, rulesInForce: 1, pendingUpgrades: [ScheduledUpgrade(name: Identifier("categories")!, height: 200, rules: 2)],
            peerReleases: [.init(peer: "metropole", software: "0.2.0", rules: 2), .init(peer: "tri", software: "", rules: 0)])
        #expect(try NodeStatus(wireBytes: status.wireBytes) == status)
        let fields = Dictionary(uniqueKeysWithValues: status.operatorFields)
        #expect(fields["final"] == "7 blocks behind (97 known final)")
        #expect(fields["pendingValidators"] == "metropole,rtm,friche from height 129")
        #expect(fields["ownVotes"] == "in 74 of the last 100 blocks' commit certificates")
        #expect(fields["release"] == "0.2.0 (ledger rules up to 2; in force: 1)")
        #expect(fields["pendingUpgrades"] == "categories: rules 2 from height 200")
        #expect(fields["peerReleases"] == "metropole 0.2.0 (rules 2), tri not said")
        // The forms of older builds: everything up to the uptime; up to the certificates.
        let older = NodeStatus(partner: "rtm", height: 90, stateRoot: .zero, view: 2, epochFirstSeq: 1, peers: ["metropole"], mempool: 3)
        let versions = 4 + 4 + 4 + 4 + 4  // an empty software string, the two rules, two empty lists
        let beforeVersions = Array(older.wireBytes.dropLast(versions))
        let middle = try NodeStatus(wireBytes: beforeVersions)
        #expect(middle.form == .beforeVersions && middle.knownFinalHeight == 90 && middle.software.isEmpty)
        #expect(middle.wireBytes == beforeVersions, "decoding stays canonical: the older form is encoded as it came")
        #expect(Dictionary(uniqueKeysWithValues: middle.operatorFields)["release"]?.hasPrefix("not said") == true)
        let cut = Array(beforeVersions.dropLast(8 + 4 + 8 + 4 + 4))  // known final, pending count, from, certificates, signed
        let decoded = try NodeStatus(wireBytes: cut)
        #expect(decoded.form == .beforeOperatorFields && decoded.partner == "rtm" && decoded.height == 90 && decoded.knownFinalHeight == 90
                && decoded.pendingFromHeight == nil)
        #expect(decoded.wireBytes == cut, "decoding stays canonical: the older form is encoded as it came")
        #expect(Dictionary(uniqueKeysWithValues: decoded.operatorFields)["final"] == "caught up (no later final block known)")
        var lying = status
        lying.recentCertificatesSigned = 101
        #expect(throws: WireError.self) { _ = try NodeStatus(wireBytes: lying.wireBytes) }
    }

    /// The dashboard is JSON Grafana imports: unique panel ids, a title and a query per panel.
    @Test func theDashboardIsWellFormed() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(Self.kit)/grafana-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let ids = panels.compactMap { $0["id"] as? Int }
        #expect(ids.count == panels.count && Set(ids).count == ids.count)
        for panel in panels where panel["type"] as? String != "row" {
            #expect(!(panel["title"] as? String ?? "").isEmpty)
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty && targets.allSatisfy { !($0["expr"] as? String ?? "").isEmpty }, "\(panel["title"] ?? "")")
        }
    }
}
