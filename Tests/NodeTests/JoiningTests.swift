// The joining walk-through of Docs/OPERATIONS.md, as the script an operator can follow
// (Cluster/join): a new partner's keys, its certificate, its admission with its node's
// endpoint, its node's configuration, its database from a snapshot of the latest certified
// checkpoint, its catch-up as a learner (the founding nodes dial it at the endpoint the
// ledger gives) and its promotion to validator, on a local cluster of four
// (Cluster/local/up.sh) on loopback.
import CalissonTestKit
import Foundation
import Spawning
import Testing

@Suite(.serialized, .onOwnThreads) struct JoiningTests {
    /// Replaying the chain from the genesis, or from a snapshot.
    @Test(arguments: [false, true]) func aNewPartnerJoinsAndValidatesByTheWalkThrough(fromSnapshot: Bool) throws {
        let bin = try productsDirectory()
        let home = Scratch.directory("join")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path
        let environment = ProcessInfo.processInfo.environment.merging([
            "CALISSON_HOME": home, "BIN": bin, "SKIP_BUILD": "1",
            // Ports no other test of the run is given (base + 0...9, base + 1000...1004).
            "BASE_PORT": "\(PortBlock.reserve())",
            // With a snapshot, its database is written at the latest certified checkpoint
            // (`calisson-node sync`) before it starts.
            "FROM_SNAPSHOT": fromSnapshot ? "1" : "0",
        ]) { $1 }
        func script(_ path: String, _ arguments: [String] = []) throws -> Ran {
            try run("/usr/bin/env", ["bash", "\(root)/\(path)"] + arguments, environment: environment, timeout: 300)
        }
        let up = try script("Cluster/local/up.sh", ["4"])
        defer {
            _ = try? script("Cluster/local/down.sh")
            try? FileManager.default.removeItem(atPath: home)
        }
        #expect(up.status == 0, "\(up.output)\n\(up.errors)")
        guard up.status == 0 else { return }
        let joined = try script("Cluster/join")
        #expect(joined.status == 0 && joined.output.contains("join: done"), "\(joined.output)\n\(joined.errors)")
        // Its id sorts after every founding partner's: they dialled it at the endpoint its
        // admission put in the ledger, with no edit nor restart.
        let listed = joined.output.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("endpoints") }
        #expect(listed?.contains("127.0.0.1:") == true, "\(joined.output)")
        let founderLog = (try? String(contentsOfFile: "\(home)/logs/metropole.log", encoding: .utf8)) ?? ""
        #expect(founderLog.contains("peers updated from the ledger") && founderLog.contains("velo-azur@127.0.0.1:"), "\(founderLog.suffix(3_000))")
        // What an operator reads on the way: the learner caught up, the set to come, its votes counted.
        #expect(joined.output.contains("final: caught up"), "\(joined.output)")
        #expect(joined.output.contains("pendingValidators: metropole,rtm,tri-metropole,friche,velo-azur from height"), "\(joined.output)")
        #expect(joined.output.contains("velo-azur "), "the validators listed: \(joined.output)")
        // From a snapshot, its database started at a checkpoint above the genesis, with the whole state.
        let synced = joined.output.split(separator: "\n").first { $0.contains("node.db: checkpoint ") }
        #expect((synced != nil) == fromSnapshot, "\(joined.output)")
        if fromSnapshot {
            let checkpoint = synced.flatMap { $0.split(separator: " ").drop { $0 != "checkpoint" }.dropFirst().first }.flatMap { UInt64($0.dropLast()) }
            #expect((checkpoint ?? 0) >= 8, "\(joined.output)")
            #expect(joined.output.contains(" records in ") && joined.output.contains("restarts from a newer checkpoint"), "\(joined.output)")
        }
    }
}
