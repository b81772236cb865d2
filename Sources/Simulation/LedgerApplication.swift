import Consensus
import CalissonCrypto
import Ledger
import Wire

/// What a simulated node executes under consensus, and keeps across its crashes (the
/// executed blocks and their state are durable, as the node's SQLite store makes them).
protocol SimulatedApplication {
    var height: UInt64 { get }
    var blocks: [CertifiedBlock] { get }
    /// Every command of every executed block, by id (the liveness check's record).
    var executed: Set<SHA256Digest> { get }
    /// The validator-set schedule the node hands back to its replica at a restart.
    var schedule: EpochSchedule { get }
    /// Executes the next final block: its state root and the validator set it installs.
    mutating func execute(_ certified: CertifiedBlock) -> (root: SHA256Digest, validators: ValidatorSet?)
    /// What the block just executed broke of the application's own invariants.
    func violations() -> [String]
}

extension CounterApplication: SimulatedApplication {
    func violations() -> [String] { [] }
}

/// The production ledger, over the in-memory state store, as a simulated node's
/// application: a genesis with partners (the validators), programmes, an epoch length
/// short enough for several clearings per run; signed transactions (simulated signatures,
/// checked by the ledger like real ones). After each block it checks what must hold
/// whatever consensus did: supply conservation in all and per programme, the net
/// positions of a closed epoch summing to zero.
struct LedgerApplication: SimulatedApplication {
    private(set) var ledger: Ledger<MemoryStateStore>
    private(set) var blocks: [CertifiedBlock] = []
    private(set) var executed: Set<SHA256Digest> = []
    private(set) var schedule: EpochSchedule
    private var lastClosed: UInt64?
    let citizens: [Ed25519PublicKey]
    var height: UInt64 { ledger.height }

    init(genesis: Genesis, schedule: EpochSchedule, citizens: [Ed25519PublicKey]) {
        ledger = Self.create(genesis)
        self.schedule = schedule
        self.citizens = citizens
    }

    /// The ledger at the genesis: a genesis that fails here is the simulator's own
    /// (`LedgerTraffic.genesis`), a bug, not input.
    private static func create(_ genesis: Genesis) -> Ledger<MemoryStateStore> {
        do { return try Ledger.create(genesis, in: MemoryStateStore()) } catch { preconditionFailure("the simulator's genesis: \(error)") }
    }

    mutating func execute(_ certified: CertifiedBlock) -> (root: SHA256Digest, validators: ValidatorSet?) {
        let outcome = ledger.execute(certified.block.commands, verify: simulatedVerify)
        executed.formUnion(certified.block.commandIDs)
        blocks.append(certified)
        lastClosed = outcome.closedEpoch
        var installed: ValidatorSet?
        if let keys = outcome.validators, let set = ValidatorSet(keys) {
            installed = set
            schedule.schedule(set, executedAt: certified.block.seq)
        }
        return (outcome.stateRoot, installed)
    }

    func violations() -> [String] {
        var found: [String] = []
        let height = ledger.height
        // Supply: issued = live + redeemed + expired + sunk, in all and per programme; the
        // live tokens are those the accounts hold.
        var live: Amount = 0
        var liveByProgramme: [Identifier: Amount] = [:]
        for citizen in citizens {
            for lot in ledger.account(citizen).lots {
                live += lot.amount
                liveByProgramme[lot.programme, default: 0] += lot.amount
            }
        }
        let totals = ledger.meta.totals
        if totals.issued != live + totals.redeemed + totals.expired + totals.sunk {
            found.append("supply at \(height): issued \(totals.issued) ≠ live \(live) + redeemed \(totals.redeemed) + expired \(totals.expired) + sunk \(totals.sunk)")
        }
        var programmeTotals = Programme.Totals()
        for id in ledger.meta.programmes {
            guard let programme = ledger.programme(id) else { continue }
            if programme.totals.live != liveByProgramme[id] ?? 0 {
                found.append("programme \(id) at \(height): live \(programme.totals.live), accounts hold \(liveByProgramme[id] ?? 0)")
            }
            if programme.totals.issued > programme.budget { found.append("programme \(id) at \(height): issued past its budget") }
            programmeTotals.issued += programme.totals.issued
            programmeTotals.redeemed += programme.totals.redeemed
            programmeTotals.expired += programme.totals.expired
            programmeTotals.sunk += programme.totals.sunk
        }
        if programmeTotals != totals { found.append("at \(height): the programmes' totals do not add up to the ledger's") }
        // A closed epoch's net positions sum to zero.
        if let epoch = lastClosed {
            let nets = ledger.partnerIDs.compactMap { ledger.statement(epoch: epoch, partner: $0)?.net }
            if nets.reduce(0, { $0 &+ $1 }) != 0 { found.append("epoch \(epoch) closed at \(height): net positions sum to \(nets.reduce(0, &+))") }
        }
        return found
    }
}

/// The consortium a ledger-mode run simulates and the traffic its clients send: every
/// validator a partner (issuer and acceptor), one programme each of waste sorting and
/// culture, citizens attributing and redeeming, some forged or garbage transactions.
/// Keys are simulated: a partner's signing key and a citizen's account are 32 bytes from
/// the seed, signatures `simulatedSignature` (the ledger checks them through the verify
/// closure it is given, as the node passes its cache).
struct LedgerTraffic {
    static let citizenCount = 24
    let genesis: Genesis
    let partners: [Identifier]
    let signingKeys: [Ed25519PublicKey]
    let citizens: [Ed25519PublicKey]
    private var random: SplitMix64
    private var nonces: [Ed25519PublicKey: UInt64] = [:]
    private var evidence: UInt64 = 0

    init(validators: [ValidatorID], seed: UInt64, epochLength: UInt64) {
        var keys = SplitMix64(seed: 0x1ED6_E200 &+ UInt64(validators.count))
        partners = validators.indices.map { Identifier("p\($0)")! }
        let signingKeys = validators.map { _ in Ed25519PublicKey(keys.bytes32()) }
        self.signingKeys = signingKeys
        citizens = (0..<Self.citizenCount).map { _ in Ed25519PublicKey(keys.bytes32()) }
        random = SplitMix64(seed: seed ^ 0x7AFF_1C)
        let file = GenesisFile(
            chainId: Simulation.chainId,
            parameters: .init(epochLength: epochLength, blocksPerDay: 200, transactionLifetimeMax: 10_000, approval: "2/3", sink: "p0"),
            partners: validators.indices.map { index in
                GenesisFile.PartnerEntry(
                    id: "p\(index)", name: "partner \(index)", roles: (index == 0 ? ["authority"] : []) + ["issuer", "acceptor", "validator"],
                    signingKey: signingKeys[index].bytes.hex, nodeKey: validators[index].bytes.hex, tlsKeyHash: nil)
            },
            validators: validators.indices.map { "p\($0)" },
            programmes: [
                .init(id: "tri", name: "Tri", category: "wasteSorting", rewardPerUnit: 10, issuers: validators.indices.map { "p\($0)" }, sponsor: "p0",
                      capPerAccount: 5_000, capPeriod: "day", walletCeiling: 3_000, budget: 1_000_000, expiryEpochs: 2),
                .init(id: "culture", name: "Culture", category: "event", rewardPerUnit: 50, issuers: validators.indices.map { "p\($0)" },
                      sponsor: "p\(validators.count - 1)", capPerAccount: 10_000, capPeriod: "week", walletCeiling: 5_000, budget: 500_000,
                      expiryEpochs: nil, demurrageBasisPoints: 300, transferable: true),
            ])
        genesis = Self.validated(file)
    }

    /// The simulator's own genesis: a failure is a bug in this file, not input.
    private static func validated(_ file: GenesisFile) -> Genesis {
        do { return try file.validated() } catch { preconditionFailure("the simulator's genesis does not validate: \(error)") }
    }

    private mutating func nonce(_ key: Ed25519PublicKey) -> UInt64 {
        nonces[key, default: 0] += 1
        return nonces[key]!
    }

    private func signed(_ transaction: Transaction, by key: Ed25519PublicKey) -> [UInt8] {
        SignedTransaction(transaction: transaction, signature: simulatedSignature(key, transaction.signingDigest ?? .zero)).wireBytes
    }

    /// The next transaction a client sends, valid or not, to expire well after the run.
    mutating func next(height: UInt64) -> [UInt8] {
        let citizen = Int(random.next() % UInt64(citizens.count))
        let partner = Int(random.next() % UInt64(partners.count))
        let expiry = height + 5_000
        switch random.next() % 10 {
        case 0, 1, 2, 3:
            evidence += random.next() % 25 == 0 ? 0 : 1  // sometimes a reused evidence commitment
            let programme = Identifier(random.next() % 3 == 0 ? "culture" : "tri")!
            var writer = WireWriter()
            writer.write(evidence)
            let body = TransactionBody.attribute(programme: programme, account: citizens[citizen], units: UInt32(1 + random.next() % 9),
                                                 evidence: SHA256.hash(writer.bytes))
            let key = signingKeys[partner]
            return signed(Transaction(chainId: Simulation.chainId, signer: .partner(partners[partner]), nonce: nonce(key), expiryHeight: expiry, body: body),
                          by: key)
        case 4, 5, 6:
            let body = TransactionBody.redeem(acceptor: partners[partner], amount: 1 + random.next() % 120, service: SHA256.hash(random.bytes(8)))
            let key = citizens[citizen]
            return signed(Transaction(chainId: Simulation.chainId, signer: .citizen(key), nonce: nonce(key), expiryHeight: expiry, body: body), by: key)
        case 7:
            let to = citizens[Int(random.next() % UInt64(citizens.count))]
            let body = TransactionBody.transfer(to: to, programme: Identifier("culture")!, amount: 1 + random.next() % 200)
            let key = citizens[citizen]
            return signed(Transaction(chainId: Simulation.chainId, signer: .citizen(key), nonce: nonce(key), expiryHeight: expiry, body: body), by: key)
        case 8:
            // Forged: a citizen's redemption signed by another key.
            let body = TransactionBody.redeem(acceptor: partners[partner], amount: 5, service: .zero)
            let key = citizens[citizen]
            return signed(Transaction(chainId: Simulation.chainId, signer: .citizen(key), nonce: nonce(key), expiryHeight: expiry, body: body),
                          by: signingKeys[partner])
        default:
            return random.bytes(Int(random.next() % 96))  // garbage
        }
    }
}
