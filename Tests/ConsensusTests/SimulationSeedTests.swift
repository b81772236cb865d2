// Runs the deterministic cluster simulator on fixed seeds: a fault-free run must finish
// everything; 200 seeds (4 and 7 validators) with every fault kind must show no safety
// violation (no two honest replicas finalizing different blocks at one height, every
// final block with a valid certificate, equal state roots) and no liveness violation
// (after healing, every command final on every honest replica, all at one height). Runs are short to keep CI fast; `calisson-sim` runs long ones.
import CalissonTestKit
import Ledger
import Testing
import Wire
@testable import Simulation

@Suite(.onOwnThreads) struct SimulationSeedTests {
    static func configuration(seed: UInt64, validators: Int = 4, faults: FaultMix) -> SimulationConfiguration {
        var configuration = SimulationConfiguration()
        configuration.seed = seed
        configuration.validators = validators
        configuration.faults = faults
        configuration.safetyTicks = 300
        configuration.livenessTicks = 900
        configuration.commandsPerTick = 1
        return configuration
    }

    @Test func faultFreeRunFinalizesEverything() {
        let report = Simulation.run(Self.configuration(seed: 1, faults: .none))
        #expect(report.passed, "\(report.safetyViolations + report.livenessViolations)")
        #expect(report.finalizedHeight > 50)
        #expect(report.viewChanges == 0)
    }

    @Test func sameSeedReplaysExactly() {
        let a = Simulation.run(Self.configuration(seed: 7, faults: .all(seed: 7, faultsMax: 1)))
        let b = Simulation.run(Self.configuration(seed: 7, faults: .all(seed: 7, faultsMax: 1)))
        #expect(a.trace == b.trace)
        #expect(a.finalizedHeight == b.finalizedHeight && a.byzantineMessages == b.byzantineMessages)
    }

    @Test(arguments: 0..<4)
    func twoHundredSeedsWithAllFaultsAreSafeAndLive(batch: Int) {
        for seed in UInt64(batch * 50 + 1)...UInt64(batch * 50 + 50) {
            let validators = seed % 5 == 0 ? 7 : 4
            let report = Simulation.run(Self.configuration(seed: seed, validators: validators,
                                                           faults: .all(seed: seed, faultsMax: (validators - 1) / 3)))
            #expect(report.safetyViolations.isEmpty, "seed \(seed): \(report.safetyViolations) \(report.trace.suffix(10))")
            #expect(report.livenessViolations.isEmpty, "seed \(seed) (\(validators) validators): \(report.livenessViolations) \(report.trace.suffix(14))")
        }
    }

    /// The node's core (admission, mempool, the production ledger, persistence on simulated
    /// storage) under consensus with every fault kind, storage faults and a validator-set
    /// change by governance included: signed attributions, redemptions, transfers, forgeries
    /// and garbage; equal state roots at equal heights, supply conserved and clearings
    /// netting to zero after every block, everything final.
    @Test(arguments: 0..<2)
    func theLedgerUnderAllFaultsIsSafeLiveAndConserved(batch: Int) {
        var changes = 0, upgraded = 0, evidenceSeen = 0, evidenceRecorded: UInt64 = 0
        for seed in UInt64(batch * 10 + 1)...UInt64(batch * 10 + 10) {
            let validators = seed % 5 == 0 ? 7 : 4
            var configuration = Self.configuration(seed: seed, validators: validators, faults: .all(seed: seed, faultsMax: (validators - 1) / 3))
            configuration.application = .ledger
            configuration.commandsPerTick = 2
            let report = Simulation.run(configuration)
            #expect(report.passed, "seed \(seed) (\(validators) validators): \(report.safetyViolations + report.livenessViolations) \(report.trace.suffix(12))")
            changes += report.epochChanges
            if report.rulesInForce >= 2 { upgraded += 1 }
            evidenceSeen += report.evidence
            evidenceRecorded += report.equivocationsRecorded
        }
        // Governance's validator-set changes take effect (a run with f Byzantine
        // validators may stall the proposal's votes until the end of its safety phase),
        // and so does the upgrade voted at the start (again, further ahead, when faults
        // stalled its votes past its height): nodes cross its height under faults.
        #expect(changes >= 5, "\(changes) validator-set changes in 10 seeds")
        #expect(upgraded >= 8, "the upgrade reached in \(upgraded) of 10 seeds")
        // Equivocations honest nodes caught are reported by their partners and, from rules 3,
        // recorded by the ledger: its reconstruction of what each signature covers is the
        // consensus's (the simulated signatures are over the same digests).
        #expect(evidenceSeen == 0 || evidenceRecorded > 0, "\(evidenceSeen) equivocations caught, \(evidenceRecorded) recorded")
    }

    /// The ledger's checks are live: a fault-free ledger run clears epochs and issues tokens.
    @Test func aLedgerRunClearsEpochs() {
        var configuration = Self.configuration(seed: 3, faults: .none)
        configuration.application = .ledger
        configuration.commandsPerTick = 2
        var simulation = Simulation(configuration)
        let report = simulation.run()
        #expect(report.passed, "\(report.safetyViolations + report.livenessViolations)")
        let ledger = simulation.nodes[0].core?.ledger
        #expect((ledger?.meta.epoch ?? 0) >= 3, "epoch \(ledger?.meta.epoch ?? 0)")
        #expect((ledger?.meta.totals.issued ?? 0) > 0 && (ledger?.meta.totals.redeemed ?? 0) > 0)
        // The upgrade voted at the start (to the newest rules) is in force, and acceptance by category passed.
        #expect(report.rulesInForce == LedgerRules.newest && report.acceptanceByCategory, "rules \(report.rulesInForce), \(report.trace.suffix(8))")
        // From rules 4 the partners set their endpoints, the last one's by a governance vote.
        #expect(report.endpointsListed, "\(report.trace.suffix(8))")
        // Admission refused the garbage and the forgeries, and took the rest.
        #expect(simulation.admitted.count > 100 && simulation.admitted.count < report.commandsSubmitted, "\(simulation.admitted.count) of \(report.commandsSubmitted)")
    }

    /// A ledger run whose only faults are the storage's (nodes stop, come back, catch up).
    static func ledgerWithStorageFaults(seed: UInt64) -> SimulationConfiguration {
        var faults = FaultMix.none
        faults.storageFaults = true
        var configuration = configuration(seed: seed, faults: faults)
        configuration.application = .ledger
        configuration.commandsPerTick = 2
        return configuration
    }

    /// Storage faults fire and the nodes they stop come back from their storage: a
    /// read error, a full disk, a crash as a write completes.
    @Test func storageFaultsStopNodesThatComeBack() {
        var stops = 0, executedAgain = 0
        var fired: [String: Int] = [:]
        for seed in UInt64(101)...104 {
            let report = Simulation.run(Self.ledgerWithStorageFaults(seed: seed))
            #expect(report.passed, "seed \(seed): \(report.safetyViolations + report.livenessViolations) \(report.trace.suffix(12))")
            stops += report.storageStops
            executedAgain += report.blocksExecutedAgain
            fired.merge(report.storageFaultsFired) { $0 + $1 }
        }
        #expect(stops > 0)
        // The state is durable at the checkpoints: nodes that came back executed the blocks
        // after the last one again (each checked against the root it recorded).
        #expect(executedAgain > 0)
        // Each kind fired: a read error while a block executes, a full disk, a crash as a write completes.
        #expect(fired.keys.sorted() == [StorageFault.crashDuringWrite, .diskFull, .readError].map { "\($0)" }.sorted(), "\(fired)")
    }

    /// State transfer under a byte budget so small that every answer carries one block (the
    /// budget keeps an answer under the transport's frame limit when blocks are large): nodes
    /// that fell behind still catch up, the runs stay safe and live.
    @Test func stateTransferAnswersOneBlockAtATimeUnderATinyBudget() {
        var transfers = 0, blocksMax = 0
        for seed in UInt64(101)...103 {
            var configuration = Self.ledgerWithStorageFaults(seed: seed)
            configuration.stateResponseBytesMax = 1
            let report = Simulation.run(configuration)
            #expect(report.passed, "seed \(seed): \(report.safetyViolations + report.livenessViolations) \(report.trace.suffix(12))")
            transfers += report.stateTransfers
            blocksMax = max(blocksMax, report.stateTransferBlocksMax)
        }
        #expect(transfers > 0, "no node needed a state transfer: the budget was not exercised")
        #expect(blocksMax == 1, "an answer carried \(blocksMax) blocks under a budget of 1 byte")
    }

    @Test func networkFaultsWithoutByzantineReplicasAreLive() {
        for seed in UInt64(1)...20 {
            var faults = FaultMix.all(seed: seed, faultsMax: 1)
            faults.byzantine = []
            let report = Simulation.run(Self.configuration(seed: seed, faults: faults))
            #expect(report.passed, "seed \(seed): \(report.safetyViolations + report.livenessViolations) \(report.trace.suffix(12))")
        }
    }
}
