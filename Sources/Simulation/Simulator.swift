import Consensus
import NodeCore
import CalissonCrypto
import Wire

/// Faults a run may inject. Every random choice comes from the run's one seed.
public struct FaultMix: Sendable, Equatable {
    public var lossRate = 0.0
    public var duplicateRate = 0.0
    public var delayTicks: ClosedRange<Int> = 1...1
    public var partitions = false
    public var crashes = false
    public var tickSkew = false
    /// Governance replaces a validator during the run: a learner node is admitted and an
    /// honest genesis validator removed (the set keeps its size). In a ledger run, by a
    /// `setValidators` proposal and the other partners' votes, as transactions.
    public var validatorChanges = false
    /// Ledger runs: storage failures (a read error, a full disk, a crash in the middle of
    /// a write), each stopping the node, which restarts from what its storage holds.
    public var storageFaults = false
    public var byzantine: [ByzantineBehaviour] = []

    public init() {}

    public static let none = FaultMix()

    /// Everything at once: 0-30% loss, duplication, delay and reordering, partitions,
    /// crash-restarts, skewed clocks, a validator-set change, storage faults (ledger runs),
    /// and Byzantine validators (up to f).
    public static func all(seed: UInt64, faultsMax: Int) -> FaultMix {
        var random = SplitMix64(seed: seed ^ 0xFA17)
        var mix = FaultMix()
        mix.lossRate = Double(random.next() % 31) / 100
        mix.duplicateRate = Double(random.next() % 11) / 100
        mix.delayTicks = 1...(1 + Int(random.next() % 8))
        mix.partitions = true
        mix.crashes = true
        mix.tickSkew = true
        mix.validatorChanges = true
        mix.storageFaults = true
        let kinds = ByzantineBehaviour.allCases
        mix.byzantine = (0..<faultsMax).map { _ in kinds[Int(random.next() % UInt64(kinds.count))] }
        return mix
    }
}

public enum ByzantineBehaviour: String, CaseIterable, Sendable {
    /// As primary, sends different blocks to different replicas.
    case equivocatingPrimary
    /// Sends nothing at all.
    case silent
    /// Corrupts the signature of half of what it sends.
    case corruptSignatures
    /// Re-signs its votes and proposals for other views.
    case wrongView
    /// Two replicas share one identity, each running the honest code and each talking to
    /// a different half of the cluster: the identity equivocates without meaning to.
    case twins
}

public struct SimulationConfiguration: Sendable {
    public var validators = 4
    public var seed: UInt64 = 1
    public var faults = FaultMix.none
    /// Ticks with faults, then ticks after healing in which everything must finish.
    public var safetyTicks = 1_500
    public var livenessTicks = 2_500
    /// Commands submitted per tick (on average) until the last part of the liveness phase.
    public var commandsPerTick = 3
    public var checkpointInterval: UInt64 = 8
    public var window: UInt64 = 32
    public var batchCommandsMax = 64
    /// Idle ticks before the primary completes the checkpoint interval with null blocks
    /// (`ReplicaConfiguration.checkpointFillTicks`; 0: never). With it, every honest
    /// replica must end the run at a stable checkpoint of its last height.
    public var checkpointFillTicks: UInt64 = 25
    /// The node cores' byte budget of a state-transfer answer (`NodeCoreSettings`); a test
    /// makes it tiny, so that every answer carries one block.
    public var stateResponseBytesMax = NodeCoreSettings().stateResponseBytesMax
    /// Print trace events as they happen (debugging a seed that hangs or crashes).
    public var liveTrace = false
    /// What the replicas order and execute.
    public var application = ApplicationKind.counter
    /// The ledger's epoch length (blocks) in `.ledger` runs: several clearings per run.
    public var ledgerEpochLength: UInt64 = 20

    public init() {}
}

public enum ApplicationKind: String, CaseIterable, Sendable {
    /// A hash chain of the commands (fast; validator-set changes as commands).
    case counter
    /// The node's own core (`NodeCore`: admission, mempool, the production ledger,
    /// persistence) over simulated storage with faults: signed attributions, redemptions,
    /// transfers, forgeries and garbage from simulated clients, and the ledger's invariants
    /// checked after every block; validator-set changes by governance transactions.
    case ledger
}

public struct SimulationReport: Sendable {
    public var seed: UInt64
    public var validators: Int
    public var finalizedHeight: UInt64 = 0
    public var commandsSubmitted = 0
    /// Ledger runs: commands some honest node admitted (garbage and forgeries are refused).
    public var commandsAdmitted = 0
    /// Views entered after view 0, counted per epoch.
    public var viewChanges = 0
    /// Epochs entered after the genesis one (validator-set changes in force).
    public var epochChanges = 0
    public var stateTransfers = 0
    /// The most blocks one state-transfer answer of a node core carried.
    public var stateTransferBlocksMax = 0
    public var crashes = 0
    public var byzantineMessages = 0
    public var rejectedMessages = 0
    /// Rejections by reason, for the trace of a failing seed.
    public var rejectionReasons: [String: Int] = [:]
    public var droppedSignatures = 0
    /// Votes the replicas took without checking their signature (`Replica.takesUnchecked`).
    public var votesUnchecked = 0
    public var evidence = 0
    /// Ledger runs: storage faults armed, those that fired (by kind), and the stops they caused.
    public var storageFaults = 0
    public var storageFaultsFired: [String: Int] = [:]
    /// Blocks that restarted nodes executed again from their storage (the state being
    /// durable only at the checkpoint heights).
    public var blocksExecutedAgain = 0
    public var storageStops = 0
    /// Ledger runs, on the most advanced honest node at the end: the ledger rules in force
    /// (the newest once the upgrade voted at the start is reached), and whether the
    /// acceptance by category proposed from then on passed.
    public var rulesInForce: UInt32 = 0
    public var acceptanceByCategory = false
    /// Equivocations the ledger recorded from the evidence honest nodes' partners reported.
    public var equivocationsRecorded: UInt64 = 0
    /// Whether every partner's endpoints were set, by itself or by governance (rules 4).
    public var endpointsListed = false
    public var safetyViolations: [String] = []
    public var livenessViolations: [String] = []
    public var trace: [String] = []

    public init(seed: UInt64, validators: Int) {
        self.seed = seed
        self.validators = validators
    }

    public var passed: Bool { safetyViolations.isEmpty && livenessViolations.isEmpty }
}
