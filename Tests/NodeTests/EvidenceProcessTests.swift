// Equivocation evidence, end to end with the node's Byzantine test mode: the Métropole's
// node (the primary of view 0) run with `--byzantine equivocate` proposes two blocks for
// one height (or, once a view change under load moved on from it, votes twice for one
// height: a CI run found no evidence in 120 transactions before it did); an honest node
// logs the evidence; the partners vote ledger rules 3 and the
// suspension policy; a partner reports the evidence from the log with the CLI; every node
// checks it and the Métropole is suspended, once (a second report is `evidenceKnown`).
import CalissonCrypto
import CalissonTestKit
import Foundation
import Ledger
import Testing

@Suite(.serialized, .onOwnThreads) struct EvidenceProcessTests {
    @Test func anEquivocatingValidatorIsReportedAndSuspended() throws {
        // Byzantine from its first start: restarted into the mode, it could come back after
        // the others had moved to a view it does not lead (a loaded machine), and propose nothing.
        let cluster = try ProcessCluster(rules: LedgerRules.acceptanceByCategory) { nodes in
            nodes.extraArguments[0] = ["--byzantine", "equivocate", "--byzantine-seed", "7"]
        }
        defer { cluster.stopAll() }
        #expect(eventually(30) { cluster.ids.indices.allSatisfy { (cluster.status($0)?.peers.count ?? 0) == cluster.ids.count - 1 } },
                "not linked\n\(cluster.logs())")

        let signed = cluster.signed
        // Proposed by the transit operator, passed by two more of the four partners (2/3).
        func pass(_ proposal: [String]) throws { try cluster.pass(proposal, by: "rtm", voters: ["tri-metropole", "friche"]) }
        var activity = 0
        func attribute() throws {
            activity += 1
            _ = try cluster.calisson(["submit", "attribute", "--programme", "recyclage", "--account", String(repeating: "ef", count: 32),
                                      "--evidence", "activity \(activity)"] + signed("tri-metropole"))
        }

        // Past the three transactions that pass it, each of which may take an idle cluster's
        // height to the next checkpoint (up to eight).
        let upgradeHeight = try #require(cluster.status(1)?.height) + 64
        try pass(["schedule-upgrade", "--name", "evidence", "--height", "\(upgradeHeight)", "--rules", "\(LedgerRules.evidence)"])
        while (cluster.status(1)?.height ?? 0) < upgradeHeight && activity < 60 { try attribute() }
        try pass(["set-equivocation-policy", "--equivocators", "suspend"])

        // The evidence an honest node logged (blocks go on until the primary's equivocation is caught).
        func loggedEvidence() -> String? {
            for id in cluster.ids.dropFirst() {
                let log = (try? String(contentsOfFile: "\(cluster.net)/\(id).log", encoding: .utf8)) ?? ""
                if let range = log.range(of: #"evidence=[0-9a-f]+"#, options: .regularExpression) {
                    return String(log[range].dropFirst("evidence=".count))
                }
            }
            return nil
        }
        while loggedEvidence() == nil && activity < 120 { try attribute() }
        let evidence = try #require(loggedEvidence(), "no honest node logged equivocation evidence\n\(cluster.logs())")
        let reported = try cluster.calisson(["submit", "report-equivocation", "--evidence", evidence] + signed("rtm"))
        #expect(ProcessCluster.applied(reported), "\(reported.output) \(reported.errors)")
        let metropole = try ProcessCluster.fields(try cluster.calisson(["partner", "metropole", "--json"]))
        #expect(metropole["status"] == "suspended", "\(metropole)")
        let again = try cluster.calisson(["submit", "report-equivocation", "--evidence", evidence] + signed("friche"))
        #expect(again.status != 0 && again.output.contains("evidenceKnown"), "\(again.output) \(again.errors)")
    }
}
