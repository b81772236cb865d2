import ArgumentParser

@main
struct CalissonBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calisson-bench",
        abstract: "Measure Calisson: the signature/Merkle hot path, ledger execution, storage, the TLS transport, and whole clusters.",
        subcommands: [
            HotPathCommand.self, LedgerCommand.self, TransportCommand.self, StorageCommand.self, WorkloadCommand.self, CeilingCommand.self,
            ClusterCommand.self, OrderingCommand.self, OrderingReplicaCommand.self, SweepCommand.self, ChaosCommand.self, GatewayBenchCommand.self, DashboardBenchCommand.self,
            SettlementBenchCommand.self, JoinCommand.self,
        ])
}

struct HotPathCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hotpath",
        abstract: "Self-check the crypto kernels, then time them side by side with their OpenSSL baselines.",
        discussion: """
            Every figure is a ratio of two measurements taken in this process, alternating \
            rounds of each side, so machine load affects both alike. Exits non-zero if a \
            self-check fails (a kernel disagreeing with OpenSSL or a known answer).
            """)

    @Option(help: "Rounds per measurement; each side keeps its best round.")
    var rounds = 5

    @Flag(help: "Skip the timing, run only the self-check.")
    var checkOnly = false

    func validate() throws {
        try checkCounts([(rounds, "--rounds", 1...1_000)])
    }

    func run() throws {
        var report = HotPath()
        try report.selfCheck()
        if !checkOnly { report.measure(rounds: rounds) }
    }
}

/// Counts given as flags, each within its range (what the machine and the node's own
/// bounds allow), so that none can trap in an allocation or a conversion.
func checkCounts(_ values: [(Int, String, ClosedRange<Int>)]) throws {
    for (value, option, range) in values where !range.contains(value) {
        throw ValidationError("\(option) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
    }
}

/// Durations and rates given as flags: finite, not negative, and at most a million (seconds,
/// or transactions per second), so that converting them to integers cannot trap.
func checkFinite(_ values: [(Double, String)]) throws {
    for (value, option) in values where !(value.isFinite && value >= 0 && value <= 1_000_000) {
        throw ValidationError("\(option) must be a number from 0 to 1000000, not \(value)")
    }
}
