// The command-line tools refuse extreme and absurd flag values with a sentence naming
// the flag, and never trap with a backtrace (issue 16, item 4): durations that are
// infinite or astronomically large, block counts at UInt64.max.
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
}
