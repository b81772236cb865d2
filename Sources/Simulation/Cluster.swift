import Consensus
import CalissonCrypto
import NodeCore
import Wire

/// What counter runs execute under consensus: a chain of state roots,
/// root_h = H(root_{h-1} || block digest), the set of executed commands, and the
/// validator-set schedule (a reconfiguration command installs a new set, as a governance
/// vote does in ledger runs). Durable: it survives its node's crashes, as a node's SQLite
/// store does.
struct CounterApplication {
    private static let rootTag = TaggedHasher(tag: "calisson/sim/root")
    static let reconfigurationPrefix = Array("calisson/sim/validators".utf8)
    var blocks: [CertifiedBlock] = []
    var executed: Set<SHA256Digest> = []
    var root = SHA256Digest.zero
    var schedule: EpochSchedule
    var height: UInt64 { UInt64(blocks.count) }

    init(schedule: EpochSchedule) { self.schedule = schedule }

    /// Executes a block: its state root, and the validator set it installs, if any.
    mutating func execute(_ certified: CertifiedBlock) -> (root: SHA256Digest, validators: ValidatorSet?) {
        var installed: ValidatorSet?
        for (command, id) in zip(certified.block.commands, certified.block.commandIDs) where executed.insert(id).inserted {
            if let set = Self.validators(in: command) { installed = set }
        }
        root = Self.rootTag.hash(root.bytes + certified.block.digest.bytes)
        blocks.append(certified)
        // The same durable write as the block: the schedule is the restart's.
        if let installed { schedule.schedule(installed, executedAt: certified.block.seq) }
        return (root, installed)
    }

    static func reconfiguration(_ validators: ValidatorSet) -> [UInt8] {
        var writer = WireWriter()
        writer.writeFixed(reconfigurationPrefix)
        writer.write(validators)
        return writer.bytes
    }

    static func validators(in command: [UInt8]) -> ValidatorSet? {
        guard command.starts(with: reconfigurationPrefix) else { return nil }
        return try? ValidatorSet(wireBytes: Array(command.dropFirst(reconfigurationPrefix.count)))
    }
}

/// One simulated replica. A counter run steps a bare `Replica` over `CounterApplication`
/// and the simulator's own mempool; a ledger run drives a `NodeCore` (the node's own
/// logic: admission, mempool, the ledger, persistence) over `SimulatedStorage`.
struct SimulatedNode {
    let index: Int
    let signer: SimulatedSigner
    var id: ValidatorID { signer.id }
    var replica: Replica<SimulatedSigner>?
    /// Durable state: survives crashes.
    var safety = SafetyLog()
    var application: CounterApplication?
    /// Ledger runs: the node's core (nil while the node is down) and its storage (durable).
    var core: NodeCore<SimulatedStorage, SimulatedSigner>?
    var storage: SimulatedStorage?
    /// Ledger runs: the highest block this node reported executed (and so persisted).
    var executedHeight: UInt64 = 0
    /// Volatile: lost on a crash (gossip refills it in a real node). A command cut into a
    /// proposal may be cut again after `inFlightTicks` (the proposal can die: lost, or the
    /// view changed); duplicates are harmless: execution skips commands already executed.
    var mempool = Mempool(countMax: .max, inFlightTicks: Self.inFlightTicks)
    static let inFlightTicks: UInt64 = 150
    var byzantine: ByzantineBehaviour?
    var restartAt: Int?
    /// Every `skewPeriod`-th tick is skipped: this node's clock runs slow.
    var skewPeriod = 0

    init(index: Int, signer: SimulatedSigner) {
        self.index = index
        self.signer = signer
    }

    var isUp: Bool { replica != nil || core != nil }
    /// The height of the last block executed (durably).
    var height: UInt64 { storage?.height ?? application?.height ?? 0 }
    /// The validator-set schedule of the node's chain.
    var schedule: EpochSchedule? { core?.schedule ?? application?.schedule }
    /// Every command of every block executed (durably).
    var executed: Set<SHA256Digest> {
        if let storage { return Set(storage.blocks.flatMap(\.block.commandIDs)) }
        return application?.executed ?? []
    }
    var summary: String { replica?.summary ?? core?.replica.summary ?? "down" }

    mutating func admit(_ id: SHA256Digest, _ bytes: [UInt8]) {
        try? mempool.insert(id: id, bytes: bytes)  // a duplicate is dropped; the simulated mempool has no bound
    }
}

/// A binary heap of messages in flight, ordered by delivery tick then send order, so
/// that runs are exactly repeatable.
struct Network {
    struct Packet {
        let at: Int
        let order: Int
        let from: Int
        let to: Int
        let message: Message
        func precedes(_ other: Packet) -> Bool { (at, order) < (other.at, other.order) }
    }

    private var heap: [Packet] = []
    private var order = 0
    var count: Int { heap.count }

    mutating func push(at: Int, from: Int, to: Int, _ message: Message) {
        order += 1
        heap.append(Packet(at: at, order: order, from: from, to: to, message: message))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop(dueBy tick: Int) -> Packet? {
        guard let first = heap.first, first.at <= tick else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < heap.count, heap[left].precedes(heap[smallest]) { smallest = left }
                if right < heap.count, heap[right].precedes(heap[smallest]) { smallest = right }
                if smallest == parent { break }
                heap.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first
    }
}
