// A scheduled upgrade crossed by a real cluster (Docs/OPERATIONS.md, "Upgrades"): four
// validators, one of them left on a binary that executes ledger rules up to 1 (the debug
// build's `--rules-newest 1`, as a release built before the upgrade). The partners vote
// `schedule-upgrade` to rules 2; the nodes report the pending upgrade and each other's
// releases; at the height the old node stops by itself with the upgrade it lacks (exit
// status 3) and refuses to start again on the old binary, while the others cross the
// height and apply a rules-2 action (a partner's category). Started on the new binary,
// the stopped node catches up from its database and agrees with the others.
import CalissonCrypto
import CalissonTestKit
import Foundation
import Ledger
import LightClient
import Node
import Testing

@Suite(.serialized, .onOwnThreads) struct UpgradeProcessTests {
    @Test func theClusterCrossesTheHeightAndAnOldBinaryStopsBeforeIt() throws {
        let cluster = try ProcessCluster(rules: LedgerRules.initial)
        defer { cluster.stopAll() }
        let old = 3  // friche
        #expect(eventually(30) { cluster.ids.indices.allSatisfy { (cluster.status($0)?.peers.count ?? 0) == cluster.ids.count - 1 } },
                "not linked\n\(cluster.logs())")
        cluster.nodes.extraArguments[old] = ["--rules-newest", "1"]
        cluster.kill(old)
        try cluster.start(old)
        #expect(eventually(30) { cluster.status(0)?.peerReleases.first { $0.peer == "friche" }?.rules == 1 },
                "the old node's hello does not say rules 1: \(String(describing: cluster.status(0)?.peerReleases))\n\(cluster.logs())")
        #expect(cluster.status(old)?.rulesNewest == 1 && cluster.status(0)?.rulesNewest == LedgerRules.newest)

        let signed = cluster.signed
        // Proposed by the Métropole, passed by two more of the four partners (2/3).
        func pass(_ proposal: [String]) throws { try cluster.pass(proposal, by: "metropole", voters: ["rtm", "tri-metropole"]) }

        // Each transaction of an idle cluster takes the height to the next checkpoint (up to
        // eight: the primary completes the interval), so the height is set well past the
        // three transactions that pass it.
        let height = try #require(cluster.status(1)?.height)
        let upgradeHeight = height + 64
        try pass(["schedule-upgrade", "--name", "categories", "--height", "\(upgradeHeight)", "--rules", "2"])
        let pending = cluster.status(0)?.pendingUpgrades ?? []
        #expect(pending == [ScheduledUpgrade(name: Identifier("categories")!, height: upgradeHeight, rules: 2)], "\(pending)")
        // Rules this release does not implement are refused before anything is signed (a
        // typo such as 50, once voted, would stop every node at the height).
        let typo = try cluster.calisson(["submit", "propose", "schedule-upgrade", "--name", "typo", "--height", "\(upgradeHeight + 100)", "--rules", "50"] + signed("metropole"))
        #expect(typo.status != 0 && typo.errors.contains("--rules must be from 1 to \(LedgerRules.newest), the ledger rules this release implements, not 50"),
                "\(typo.output) \(typo.errors)")
        let metrics = cluster.nodes.metrics(0)
        #expect(metrics["upgrade_pending_height{name=\"categories\",rules=\"2\"}"] == Double(upgradeHeight), "\(metrics.filter { $0.key.contains("upgrade") })")
        #expect(metrics["peer_rules{peer=\"friche\",software=\"\(Release.version)\"}"] == 1, "\(metrics.filter { $0.key.contains("peer_rules") })")
        #expect(metrics["build_info{software=\"\(Release.version)\",rules=\"\(LedgerRules.newest)\"}"] == 1)

        // Before the height the CLI says why a rules-2 action would not be taken.
        let early = try cluster.calisson(["submit", "propose", "set-partner-category", "--target", "friche", "--category", "event"] + signed("metropole"))
        #expect(early.status != 0 && early.errors.contains(
            "set-partner-category needs ledger rules 2; rules 1 are in force (upgrade categories brings rules 2 from height \(upgradeHeight))"),
            "\(early.output) \(early.errors)")

        // Blocks until the height is behind the others: the old node stops by itself before it.
        var units = 0
        while (cluster.status(1)?.height ?? 0) < upgradeHeight + 2 && units < 60 {
            units += 1
            _ = try cluster.calisson(["submit", "attribute", "--programme", "recyclage", "--account", String(repeating: "ab", count: 32),
                                      "--evidence", "towards the upgrade \(units)"] + signed("metropole"))
        }
        let exit = cluster.nodes.waitForExit(old, within: 60)
        #expect(exit == 3, "the old node's exit: \(String(describing: exit))\n\(cluster.logs())")
        let log = (try? String(contentsOfFile: "\(cluster.net)/friche.log", encoding: .utf8)) ?? ""
        #expect(log.contains("upgrade categories is in force from height \(upgradeHeight) and needs ledger rules 2; this binary implements rules up to 1"),
                "\(log.suffix(2_000))")
        #expect(cluster.status(0)?.rulesInForce == 2 && (cluster.status(0)?.pendingUpgrades.isEmpty ?? false))

        // Rules 2 on the others: a partner's category.
        try pass(["set-partner-category", "--target", "friche", "--category", "event"])

        // The old binary refuses to start at all now; the new one catches up.
        try cluster.start(old)
        #expect(cluster.nodes.waitForExit(old, within: 60) == 3, "the old binary started past the upgrade\n\(cluster.logs())")
        cluster.nodes.extraArguments[old] = nil
        try cluster.start(old)
        _ = try cluster.calisson(["submit", "attribute", "--programme", "recyclage", "--account", String(repeating: "cd", count: 32),
                                  "--evidence", "after the upgrade"] + signed("metropole"))
        let settled = { () -> Bool in
            let states = cluster.ids.indices.compactMap { cluster.status($0) }
            return states.count == cluster.ids.count && Set(states.map { "\($0.height) \($0.stateRoot.hex)" }).count == 1
        }
        #expect(eventually(60, settled), "the upgraded node does not catch up\n\(cluster.logs())")
        #expect(cluster.status(old)?.rulesInForce == 2)
        #expect(cluster.noneDied, "a node died\n\(cluster.logs())")
    }
}
