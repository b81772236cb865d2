import Consensus
import CalissonCrypto
import Fixtures
import Ledger
import Wire

/// What must hold of a ledger whatever consensus did, checked after every block of a
/// ledger run: supply conservation in all and per programme (the live tokens being those
/// the `citizens` hold), no programme past its budget, the net positions of the last
/// closed epoch summing to zero.
func ledgerViolations<S: StateStore>(_ ledger: Ledger<S>, citizens: [Ed25519PublicKey]) -> [String] {
    var found: [String] = []
    let height = ledger.height
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
    if ledger.meta.epoch > 0 {
        let epoch = ledger.meta.epoch - 1
        let nets = ledger.partnerIDs.compactMap { ledger.statement(epoch: epoch, partner: $0)?.net }
        if nets.reduce(0, { $0 &+ $1 }) != 0 { found.append("epoch \(epoch) closed by \(height): net positions sum to \(nets.reduce(0, &+))") }
    }
    return found
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
    /// The genesis validators' partners (`p0`, `p1`, ...): every one an issuer and acceptor.
    let partners: [Identifier]
    let signingKeys: [Ed25519PublicKey]
    /// A partner with a validator's role and node key that is not in the genesis set
    /// (`p<n>`), for governance to admit (validator-set changes).
    let learner: Identifier?
    let citizens: [Ed25519PublicKey]
    private var random: SplitMix64
    private var nonces: [Ed25519PublicKey: UInt64] = [:]
    private var evidence: UInt64 = 0

    /// A node's TLS key hash in the genesis: simulated nodes speak no TLS, but a validator
    /// needs one to be named (ledger rules 6).
    static func tlsKeyHash(_ node: ValidatorID) -> SHA256Digest { SHA256.hash(node.rawRepresentation) }

    init(validators: [ValidatorID], learner learnerKey: ValidatorID?, seed: UInt64, epochLength: UInt64) {
        var keys = SplitMix64(seed: 0x1ED6_E200 &+ UInt64(validators.count))
        partners = validators.indices.map { Identifier("p\($0)")! }
        let signingKeys = validators.map { _ in Ed25519PublicKey(keys.bytes32()) }
        self.signingKeys = signingKeys
        citizens = (0..<Self.citizenCount).map { _ in Ed25519PublicKey(keys.bytes32()) }
        let learnerSigningKey = Ed25519PublicKey(keys.bytes32())
        learner = learnerKey.map { _ in Identifier("p\(validators.count)")! }
        var learners: [GenesisFile.PartnerEntry] = []
        if let learnerKey {
            learners.append(GenesisFile.PartnerEntry(
                id: "p\(validators.count)", name: "partner \(validators.count)", roles: ["validator"],
                signingKey: learnerSigningKey.bytes.hex, nodeKey: learnerKey.bytes.hex, tlsKeyHash: Self.tlsKeyHash(learnerKey).hex))
        }
        random = SplitMix64(seed: seed ^ 0x7AFF_1C)
        var file = Fixture.validators(chainId: Simulation.chainId, nodeKeys: validators, signingKeys: signingKeys,
                                      tlsKeyHashes: validators.map(Self.tlsKeyHash))
        file.partners += learners
        file.parameters = .init(
            epochLength: epochLength, blocksPerDay: 200, transactionLifetimeMax: 10_000, proposalLifetimeMax: Self.proposalLifetime, approval: "2/3",
            sink: "p0")
        // Tight limits, so that runs meet them: a daily cap, a wallet ceiling, budgets.
        file.programmes = [
            .init(id: "tri", name: "Tri", category: "wasteSorting", rewardPerUnit: 10, issuers: validators.indices.map { "p\($0)" }, sponsor: "p0",
                  capPerAccount: 5_000, capPeriod: "day", walletCeiling: 3_000, budget: 1_000_000, expiryEpochs: 2),
            .init(id: "culture", name: "Culture", category: "event", rewardPerUnit: 50, issuers: validators.indices.map { "p\($0)" },
                  sponsor: "p\(validators.count - 1)", capPerAccount: 10_000, capPeriod: "week", walletCeiling: 5_000, budget: 500_000,
                  expiryEpochs: nil, demurrageBasisPoints: 300, transferable: true),
        ]
        genesis = Fixture.validated(file)
    }

    /// How long a governance proposal may stay open (blocks): past any run's length.
    static let proposalLifetime: UInt64 = 5_000

    /// Genesis partner `proposer`'s proposal of `action`.
    mutating func proposal(_ action: GovernanceAction, by proposer: Int, height: UInt64) -> [UInt8] {
        partnerTransaction(proposer, .propose(action, deadline: height + Self.proposalLifetime), height: height)
    }

    /// Every other genesis partner's yes vote on proposal `number`.
    mutating func votes(on number: UInt64, except proposer: Int, height: UInt64) -> [[UInt8]] {
        partners.indices.filter { $0 != proposer }.map { partnerTransaction($0, .vote(proposal: number, approve: true), height: height) }
    }

    /// Genesis partner `reporter`'s report of a validator's equivocation.
    mutating func report(_ evidence: EquivocationEvidence, by reporter: Int, height: UInt64) -> [UInt8] {
        partnerTransaction(reporter, .reportEquivocation(evidence), height: height)
    }

    /// Genesis partner `index` says where its node listens.
    mutating func setEndpoints(_ endpoints: [PeerEndpoint], by index: Int, height: UInt64) -> [UInt8] {
        partnerTransaction(index, .setEndpoints(endpoints), height: height)
    }

    private mutating func partnerTransaction(_ index: Int, _ body: TransactionBody, height: UInt64) -> [UInt8] {
        let key = signingKeys[index]
        return signed(Transaction(chainId: Simulation.chainId, signer: .partner(partners[index]), nonce: nonce(key), expiryHeight: height + 5_000, body: body),
                      by: key)
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
