import ArgumentParser
import Ledger
import Simulation
import Wire

@main
struct CalissonSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calisson-sim",
        abstract: "Run the deterministic cluster simulator: PBFT under injected faults, checked for safety and liveness.",
        discussion: """
            Every fault follows from the seed, so a failing seed replays exactly: \
            `calisson-sim --seed S` prints its trace.
            """)

    @Option(help: "Run this one seed and print its trace.")
    var seed: UInt64?

    @Option(help: "Run seeds first-seed ..< first-seed + seeds.")
    var seeds = 100

    @Option(help: "First seed of a multi-seed run.")
    var firstSeed: UInt64 = 1

    @Option(help: "Validators (4, 7, 10, ...).")
    var validators = 4

    @Option(help: "Fault mix: all (every fault kind, drawn per seed) or none.")
    var faults = "all"

    @Option(help: "Ticks of the safety phase (faults on).")
    var safetyTicks = 1_500

    @Option(help: "Ticks of the liveness phase (healed).")
    var livenessTicks = 2_500

    @Option(help: "Force every Byzantine validator to this behaviour: equivocatingPrimary, silent, corruptSignatures, wrongView, twins.")
    var byzantine: String?

    @Flag(help: "Print each trace event as it happens.")
    var liveTrace = false

    @Option(help: "What the replicas run: counter (a bare replica over a hash chain, with validator-set changes) or ledger (the node's core: admission, mempool, the production ledger on simulated storage with faults, its invariants checked after every block).")
    var application = "counter"

    /// Bounds that keep a run finite and its arithmetic exact: a mistaken flag is named, never a trap.
    static let validatorsRange = 4...100
    static let ticksMax = 10_000_000
    static let seedsMax = 1_000_000

    func validate() throws {
        guard Self.validatorsRange.contains(validators) else {
            throw ValidationError("--validators must be from \(Self.validatorsRange.lowerBound) to \(Self.validatorsRange.upperBound) (3f + 1 tolerates f faults), not \(validators)")
        }
        for (name, ticks) in [("--safety-ticks", safetyTicks), ("--liveness-ticks", livenessTicks)] where !(1...Self.ticksMax).contains(ticks) {
            throw ValidationError("\(name) must be from 1 to \(Self.ticksMax), not \(ticks)")
        }
        guard (1...Self.seedsMax).contains(seeds) else { throw ValidationError("--seeds must be from 1 to \(Self.seedsMax), not \(seeds)") }
        guard ["all", "none"].contains(faults) else { throw ValidationError("--faults must be all or none, not '\(faults)'") }
        guard ApplicationKind(rawValue: application) != nil else { throw ValidationError("unknown application '\(application)' (counter or ledger)") }
    }

    func run() throws {
        let range = seed.map { $0...$0 } ?? firstSeed...firstSeed.saturatingAdding(UInt64(max(1, seeds)) - 1)
        var totals = SimulationReport(seed: 0, validators: validators)
        var failed: [UInt64] = []
        var blocks: UInt64 = 0
        var upgraded = 0, categorised = 0
        var equivocationsRecorded: UInt64 = 0
        var endpointsListed = 0
        let clock = ContinuousClock()
        let started = clock.now
        for s in range {
            var configuration = SimulationConfiguration()
            configuration.validators = validators
            configuration.seed = s
            configuration.safetyTicks = safetyTicks
            configuration.livenessTicks = livenessTicks
            configuration.liveTrace = liveTrace
            guard let kind = ApplicationKind(rawValue: application) else {
                throw ValidationError("unknown application '\(application)' (counter or ledger)")
            }
            configuration.application = kind
            configuration.faults = faults == "none" ? .none : .all(seed: s, faultsMax: (validators - 1) / 3)
            if let byzantine {
                guard let behaviour = ByzantineBehaviour(rawValue: byzantine) else {
                    throw ValidationError("unknown Byzantine behaviour '\(byzantine)'")
                }
                configuration.faults.byzantine = Array(repeating: behaviour, count: (validators - 1) / 3)
            }
            let report = Simulation.run(configuration)
            blocks += report.finalizedHeight
            totals.viewChanges += report.viewChanges
            totals.epochChanges += report.epochChanges
            totals.stateTransfers += report.stateTransfers
            totals.crashes += report.crashes
            totals.byzantineMessages += report.byzantineMessages
            totals.droppedSignatures += report.droppedSignatures
            totals.votesUnchecked += report.votesUnchecked
            totals.rejectedMessages += report.rejectedMessages
            totals.evidence += report.evidence
            totals.storageFaults += report.storageFaults
            totals.storageStops += report.storageStops
            totals.blocksExecutedAgain += report.blocksExecutedAgain
            totals.storageFaultsFired.merge(report.storageFaultsFired) { $0 + $1 }
            if report.rulesInForce >= LedgerRules.newest { upgraded += 1 }
            if report.acceptanceByCategory { categorised += 1 }
            if report.endpointsListed { endpointsListed += 1 }
            equivocationsRecorded += report.equivocationsRecorded
            totals.commandsAdmitted += report.commandsAdmitted
            totals.commandsSubmitted += report.commandsSubmitted
            totals.safetyViolations += report.safetyViolations.map { "seed \(s): \($0)" }
            totals.livenessViolations += report.livenessViolations.map { "seed \(s): \($0)" }
            if !report.passed || seed != nil {
                if !report.passed { failed.append(s) }
                print("seed \(s): \(report.passed ? "passed" : "FAILED"); replay with: calisson-sim --seed \(s) --validators \(validators) --application \(application)")
                for line in report.trace.suffix(seed != nil ? 80 : 12) { print("  \(line)") }
                if seed != nil { print("  rejections: \(report.rejectionReasons.sorted { $0.key < $1.key })") }
            }
        }
        let seconds = Double((clock.now - started).components.attoseconds) / 1e18 + Double((clock.now - started).components.seconds)
        print("""
            calisson-sim: \(range.count) seeds, \(validators) validators, faults \(faults)
              safety violations     \(totals.safetyViolations.count)
              liveness violations   \(totals.livenessViolations.count)
              blocks finalized      \(blocks)
              commands submitted    \(totals.commandsSubmitted)\(application == "ledger" ? ", \(totals.commandsAdmitted) admitted" : "")
              view changes          \(totals.viewChanges)
              epoch changes         \(totals.epochChanges)
              state transfers       \(totals.stateTransfers)
              crashes               \(totals.crashes)
              byzantine messages    \(totals.byzantineMessages)
              bad signatures dropped \(totals.droppedSignatures)
              votes taken unchecked \(totals.votesUnchecked)
              rejected messages     \(totals.rejectedMessages)
              equivocation evidence \(totals.evidence)
              upgrade crossed       \(application == "ledger" ? "\(upgraded) of \(range.count) runs (rules \(LedgerRules.newest) in force at the end), acceptance by category passed in \(categorised), every partner's endpoints set in \(endpointsListed)" : "not in counter runs")
              evidence recorded     \(application == "ledger" ? "\(equivocationsRecorded) equivocations reported by honest partners and recorded by the ledger" : "not in counter runs")
              storage faults        \(totals.storageFaults) armed, \(totals.storageStops) stopped a node; fired: \(totals.storageFaultsFired.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
              executed again        \(totals.blocksExecutedAgain) blocks, by restarted nodes from their storage (the state durable at checkpoints)
              wall time             \(String(Int(seconds * 10) / 10)) s, \(Int(Double(blocks) / max(seconds, 1e-9))) simulated blocks/s
            """)
        if !failed.isEmpty {
            print("failed seeds: \(failed.map(String.init).joined(separator: " "))")
            throw ExitCode.failure
        }
    }
}
