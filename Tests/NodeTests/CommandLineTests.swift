// The command-line tools refuse extreme and absurd flag values with a sentence naming
// the flag, and never trap with a backtrace (issue 16, item 4): durations that are
// infinite or astronomically large, block counts at UInt64.max. Reference text goes on
// chain only as a keyed hash (item 13).
import Foundation
import Testing

@Suite struct CommandLineTests {
    @Test func extremeFlagValuesAreRefusedByName() throws {
        let calisson = try productsDirectory() + "/calisson"
        let key = FileManager.default.temporaryDirectory.appendingPathComponent("calisson-cli-\(UUID().uuidString).key").path
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
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("calisson-evidence-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try run(calisson, ["key", "generate", "--out", "\(directory)/signing.key"])
        let account = String(repeating: "ab", count: 32)
        let attribute = ["submit", "attribute", "--key", "\(directory)/signing.key", "--as", "p0", "--programme", "tri", "--account", account,
                         "--evidence", "trip log #A-0412", "--node", "127.0.0.1:1", "--ca", "\(directory)/none.crt"]
        let refused = try run(calisson, attribute)
        #expect(refused.status == 64 && refused.errors.contains("keyed hash") && refused.errors.contains("--evidence-key"), "\(refused.errors)")
        let redeem = try run(calisson, ["submit", "redeem", "--key", "\(directory)/signing.key", "--acceptor", "p0", "--amount", "1",
                                        "--service", "ticket 12", "--node", "127.0.0.1:1", "--ca", "\(directory)/none.crt"])
        #expect(redeem.status == 64 && redeem.errors.contains("--service"), "\(redeem.errors)")
        // With evidence.key beside the signing key, the commitment is made and the command goes on
        // (to fail later, at the missing CA: no node is needed to show the key was taken).
        let made = try run(calisson, ["key", "evidence", "--out", "\(directory)/evidence.key"])
        #expect(made.status == 0, "\(made.errors)")
        let keyed = try run(calisson, attribute)
        #expect(!keyed.errors.contains("keyed hash") && keyed.errors.contains("none.crt"), "\(keyed.errors)")
    }
}
