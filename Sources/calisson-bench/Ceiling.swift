import ArgumentParser
import CalissonCrypto
import Foundation
import Spawning
import Wire

/// What this machine could verify at most: every validator checks every transaction's
/// signature once, and on one machine the validators share its cores.
struct CeilingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ceiling",
        abstract: "Measure this machine's single-core Ed25519 verify rate and print the verify ceiling for signed transactions.",
        discussion: """
            ceiling = cores × single-core verify rate ÷ validators: the most signed transactions \
            per second a cluster of that many validators on this machine can verify, each \
            signature once per node. End-to-end figures are reported as a fraction of it.
            """)

    @Option(help: "Validators sharing this machine.")
    var validators = 4

    @Option(help: "Signatures per round.")
    var signatures = 2_000

    @Option(help: "Rounds; the best one counts.")
    var rounds = 3

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        try checkCounts([(validators, "--validators", 1...100), (signatures, "--signatures", 1...1_000_000), (rounds, "--rounds", 1...1_000)])
    }

    /// Ed25519 verifications per second on one core: the best of `rounds` rounds.
    static func singleCoreVerifyRate(signatures: Int = 2_000, rounds: Int = 3) -> Double {
        var random = SplitMix64(seed: 7)
        let keys = (0..<16).map { _ in Ed25519PrivateKey(seed: random.bytes32().bytes)! }
        let domain = SigningDomain(chainId: "calisson-bench", purpose: .transaction)!
        let checks = (0..<signatures).map { index -> SignatureCheck in
            let payload = random.bytes(120)
            let key = keys[index % keys.count]
            return domain.check(payload, signature: domain.sign(payload, with: key), publicKey: key.publicKey)
        }
        let clock = ContinuousClock()
        var best = Double.infinity
        for _ in 0..<rounds {
            let start = clock.now
            precondition(checks.allSatisfy { $0.verify() }, "a signature did not verify")
            let elapsed = clock.now - start
            best = min(best, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
        return Double(signatures) / best
    }

    func run() throws {
        guard validators > 0, signatures > 0, rounds > 0 else { throw ValidationError("counts must be positive") }
        let rate = Self.singleCoreVerifyRate(signatures: signatures, rounds: rounds)
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let ceiling = Double(cores) * rate / Double(validators)
        let machine = Machine.describe()
        if json {
            let object: [String: Any] = [
                "date": machine.date, "commit": machine.commit, "cpu": machine.cpu, "cores": cores, "validators": validators,
                "verifyPerSecondOneCore": Int(rate), "ceilingTransactionsPerSecond": Int(ceiling),
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("calisson-bench ceiling: \(machine.cpu), \(cores) cores, commit \(machine.commit), \(machine.date)")
            print(String(format: "  Ed25519 verify, one core: %.0f signatures/s (best of %d rounds of %d)", rate, rounds, signatures))
            print(String(format: "  ceiling for %d validators on this machine: %.0f signed transactions/s (%d × %.0f ÷ %d)",
                         validators, ceiling, cores, rate, validators))
        }
    }
}

/// What every benchmark run records about where it ran.
enum Machine {
    static func describe() -> (cpu: String, commit: String, date: String) {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let cpu = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        var commit = "unknown"
        if let ran = try? ChildProcess.run("/usr/bin/env", ["git", "rev-parse", "--short", "HEAD"]) {
            let text = String(decoding: ran.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if ran.exit == .exited(0), !text.isEmpty { commit = text }
        }
        let formatter = ISO8601DateFormatter()
        return (cpu, commit, formatter.string(from: Date()))
    }
}
