// The command-line tools refuse extreme and absurd flag values with a sentence naming
// the flag, and never trap with a backtrace (issue 16, item 4): durations that are
// infinite or astronomically large, block counts at UInt64.max. Reference text goes on
// chain only as a keyed hash (item 13). The cluster scripts honour the caller's BASE_PORT
// and a Byzantine test node logs the seed it runs with (item 12).
import CalissonTestKit
import Foundation
import Spawning
import Testing

@Suite(.onOwnThreads) struct CommandLineTests {
    @Test func extremeFlagValuesAreRefusedByName() throws {
        let calisson = try productsDirectory() + "/calisson"
        let key = Scratch.file("cli.key")
        defer { try? FileManager.default.removeItem(atPath: key) }
        _ = try run(calisson, ["key", "generate", "--out", key])
        let max = "18446744073709551615"
        let cases: [([String], String)] = [
            (["status", "--request-timeout", "inf"], "--request-timeout"),
            (["status", "--request-timeout", "1e300"], "--request-timeout"),
            (["status", "--request-timeout", "nan"], "--request-timeout"),
            (["status", "--request-timeout", "-1"], "--request-timeout"),
            (["submit", "redeem", "--key", key, "--acceptor", "p0", "--amount", "1", "--expires-in", max], "--expires-in"),
            (["submit", "redeem", "--key", key, "--acceptor", "p0", "--amount", "1", "--timeout", "1e300"], "--timeout"),
            (["submit", "propose", "close-programme", "--target", "t", "--key", key, "--as", "p0", "--deadline-in", max], "--deadline-in"),
            (["block", "18446744073709551616"], "height"),
        ]
        for (arguments, flag) in cases {
            let ran = try run(calisson, arguments, timeout: 30)
            #expect(ran.status == 64, "\(arguments): exit \(ran.status)")
            #expect(ran.errors.contains(flag), "\(arguments): \(ran.errors)")
            #expect(!ran.errors.contains("Fatal error") && !ran.errors.contains("Backtrace") && !ran.errors.contains("Crash"), "\(arguments): \(ran.errors)")
        }
    }

    /// Evidence and service text is refused without an evidence key (it would go on chain
    /// as a plain hash anyone can test guesses against); with one, it is committed under it.
    @Test func referenceTextNeedsAnEvidenceKey() throws {
        let calisson = try productsDirectory() + "/calisson"
        let directory = Scratch.directory("evidence")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try run(calisson, ["key", "generate", "--out", "\(directory)/signing.key"])
        let account = String(repeating: "ab", count: 32)
        let attribute = ["submit", "attribute", "--key", "\(directory)/signing.key", "--as", "p0", "--programme", "tri", "--account", account,
                         "--evidence", "trip log #A-0412", "--node", "127.0.0.1:1", "--ca", "\(directory)/none.crt"]
        let refused = try run(calisson, attribute)
        #expect(refused.status == 1 && refused.errors.contains("keyed hash") && refused.errors.contains("--evidence-key"), "\(refused.errors)")
        #expect(!refused.errors.contains("Usage:"), "\(refused.errors)")  // the command line was right
        let redeem = try run(calisson, ["submit", "redeem", "--key", "\(directory)/signing.key", "--acceptor", "p0", "--amount", "1",
                                        "--service", "ticket 12", "--node", "127.0.0.1:1", "--ca", "\(directory)/none.crt"])
        #expect(redeem.status == 1 && redeem.errors.contains("--service"), "\(redeem.errors)")
        // With evidence.key beside the signing key, the commitment is made and the command goes on
        // (to fail later, at the missing CA: no node is needed to show the key was taken).
        let made = try run(calisson, ["key", "evidence", "--out", "\(directory)/evidence.key"])
        #expect(made.status == 0, "\(made.errors)")
        let keyed = try run(calisson, attribute)
        #expect(!keyed.errors.contains("keyed hash") && keyed.errors.contains("none.crt"), "\(keyed.errors)")
    }

    /// `Cluster/local/up.sh` takes the BASE_PORT it is given, not the one a previous
    /// cluster left in $CALISSON_HOME/env (item 12). A stand-in calisson-node records the
    /// arguments `testnet` gets, and fails so that the script stops there.
    @Test func upHonoursTheCallersBasePort() throws {
        let directory = Scratch.directory("up")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: "\(directory)/home", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(directory)/bin", withIntermediateDirectories: true)
        try "BASE_PORT=7100\n".write(toFile: "\(directory)/home/env", atomically: true, encoding: .utf8)
        try "#!/bin/sh\necho \"$@\" > \(directory)/arguments\nexit 3\n".write(toFile: "\(directory)/bin/calisson-node", atomically: true, encoding: .utf8)
        chmod("\(directory)/bin/calisson-node", 0o755)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Cluster/local/up.sh").standardized.path
        let environment = ProcessInfo.processInfo.environment.merging(
            ["BASE_PORT": "17300", "CALISSON_HOME": "\(directory)/home", "BIN": "\(directory)/bin", "SKIP_BUILD": "1"]) { $1 }
        try ChildProcess("/bin/bash", [script, "1"], environment: environment, output: .null, errors: .null).wait()
        let arguments = (try? String(contentsOfFile: "\(directory)/arguments", encoding: .utf8)) ?? ""
        #expect(arguments.contains("--base-port 17300"), "testnet got: \(arguments)")
    }

    /// A Byzantine test node logs the seed of its choices, and takes one to replay a run (item 12).
    @Test func aByzantineNodeLogsItsSeed() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("seed")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let basePort = UInt16.random(in: 0..<200) * 100 + 10_050
        let written = try run("\(bin)/calisson-node", ["testnet", "--validators", "1", "--out", directory, "--base-port", "\(basePort)"])
        #expect(written.status == 0, "\(written.errors)")
        let genesis = try JSONDecoder().decode(GenesisProbe.self, from: Data(contentsOf: URL(fileURLWithPath: "\(directory)/genesis.json")))
        let process = try ChildProcess(
            "\(bin)/calisson-node", ["run", "--config", "\(directory)/\(genesis.validators[0])/config.json", "--byzantine", "garbage", "--byzantine-seed", "4242"],
            output: .null, errors: .pipe)
        defer {
            process.send(SIGTERM)
            process.wait()
        }
        let errors = process.errors!
        let logged = Locked<String>("")
        let reader = Thread {
            while true {
                let chunk = errors.availableData
                if chunk.isEmpty { return }
                logged.withLock { $0 += String(decoding: chunk, as: UTF8.self) }
            }
        }
        reader.start()
        #expect(eventually(20) { logged.withLock { $0 }.contains("seed=4242") }, "\(logged.withLock { $0 })")
    }
}

private struct GenesisProbe: Decodable { let validators: [String] }
