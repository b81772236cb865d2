// A small Métropole for the ledger tests: five partners, three programmes (expiring
// waste-sorting rewards, a demurrage culture pass that can be given away, a transit
// bonus spendable only on the network), deterministic keys, and helpers that sign and
// run blocks.
import CalissonCrypto
import Wire
@testable import Ledger

func id(_ raw: String) -> Identifier { Identifier(raw)! }

struct LedgerFixture {
    static let chainId = "calisson-test"
    let partnerKeys: [String: Ed25519PrivateKey]
    var ledger: Ledger<MemoryStateStore>
    var nonce: UInt64 = 0

    static func key(_ label: String) -> Ed25519PrivateKey {
        Ed25519PrivateKey(seed: SHA256.hash(label).bytes)!
    }

    static func citizen(_ n: Int) -> Ed25519PrivateKey { key("citizen \(n)") }

    static func genesisFile(epochLength: UInt64 = 10) -> GenesisFile {
        func partner(_ id: String, _ name: String, _ roles: [String], validator: Bool) -> GenesisFile.PartnerEntry {
            GenesisFile.PartnerEntry(
                id: id, name: name, roles: roles, signingKey: key("sign \(id)").publicKey.bytes.hex,
                nodeKey: validator ? key("node \(id)").publicKey.bytes.hex : nil, tlsKeyHash: nil)
        }
        return GenesisFile(
            chainId: chainId,
            parameters: .init(epochLength: epochLength, blocksPerDay: 100, transactionLifetimeMax: 50, proposalLifetimeMax: 1_000, approval: "2/3", sink: "fonds"),
            partners: [
                partner("metropole", "Métropole Aix-Marseille-Provence", ["authority", "issuer", "acceptor", "validator"], validator: true),
                partner("rtm", "Régie des transports", ["issuer", "acceptor", "validator"], validator: true),
                partner("tri", "Service déchets", ["issuer", "validator"], validator: true),
                partner("friche", "La Friche", ["acceptor", "issuer", "validator"], validator: true),
                partner("fonds", "Fonds commun", ["acceptor"], validator: false),
            ],
            validators: ["metropole", "rtm", "tri", "friche"],
            programmes: [
                .init(id: "recyclage", name: "Tri sélectif", category: "wasteSorting", rewardPerUnit: 10, issuers: ["tri"], sponsor: "metropole",
                      capPerAccount: 300, capPeriod: "month", walletCeiling: 500, budget: 100_000, expiryEpochs: 1, demurrageBasisPoints: nil,
                      acceptors: nil, transferable: false, startHeight: nil, endHeight: nil),
                .init(id: "culture", name: "Pass culture", category: "event", rewardPerUnit: 100, issuers: ["friche", "metropole"], sponsor: "friche",
                      capPerAccount: 1_000, capPeriod: "week", walletCeiling: 2_000, budget: 50_000, expiryEpochs: nil, demurrageBasisPoints: 200,
                      acceptors: ["friche", "rtm"], transferable: true, startHeight: nil, endHeight: nil),
                .init(id: "mobilite", name: "Bonus mobilité", category: "transit", rewardPerUnit: 5, issuers: ["rtm"], sponsor: "rtm",
                      capPerAccount: 200, capPeriod: "day", walletCeiling: 400, budget: 20_000, expiryEpochs: 3, demurrageBasisPoints: nil,
                      acceptors: ["rtm"], transferable: false, startHeight: nil, endHeight: nil),
            ])
    }

    init(epochLength: UInt64 = 10) {
        self.init(genesis: try! Self.genesisFile(epochLength: epochLength).validated())
    }

    init(genesis: Genesis) {
        ledger = try! Ledger.create(genesis, in: MemoryStateStore())
        var keys: [String: Ed25519PrivateKey] = [:]
        for partner in genesis.partners { keys[partner.id.rawValue] = Self.key("sign \(partner.id)") }
        partnerKeys = keys
    }

    mutating func nextNonce() -> UInt64 {
        nonce += 1
        return nonce
    }

    /// A partner's transaction, signed with its current key (or `key`).
    mutating func partnerTx(_ partner: String, _ body: TransactionBody, key: Ed25519PrivateKey? = nil, expiry: UInt64? = nil) -> [UInt8] {
        let tx = Transaction(chainId: Self.chainId, signer: .partner(id(partner)), nonce: nextNonce(),
                             expiryHeight: expiry ?? ledger.height + 10, body: body)
        return tx.signed(with: key ?? partnerKeys[partner]!).wireBytes
    }

    mutating func citizenTx(_ citizen: Int, _ body: TransactionBody) -> [UInt8] {
        let key = Self.citizen(citizen)
        let tx = Transaction(chainId: Self.chainId, signer: .citizen(key.publicKey), nonce: nextNonce(), expiryHeight: ledger.height + 10, body: body)
        return tx.signed(with: key).wireBytes
    }

    static func evidence(_ n: Int) -> Bytes32 { SHA256.hash("evidence \(n)") }

    mutating func attribute(_ issuer: String, _ programme: String, to citizen: Int, units: UInt32, evidence: Int) -> [UInt8] {
        partnerTx(issuer, .attribute(programme: id(programme), account: Self.citizen(citizen).publicKey, units: units, evidence: Self.evidence(evidence)))
    }

    mutating func redeem(_ citizen: Int, at acceptor: String, _ amount: Amount) -> [UInt8] {
        citizenTx(citizen, .redeem(acceptor: id(acceptor), amount: amount, service: SHA256.hash("ticket")))
    }

    /// Runs one block; returns each transaction's result.
    @discardableResult
    mutating func run(_ commands: [[UInt8]]) -> [TransactionResult] {
        ledger.execute(commands).results
    }

    /// Runs one transaction alone in a block.
    mutating func one(_ command: [UInt8]) -> TransactionResult { run([command])[0] }

    /// Empty blocks until the current epoch closes.
    mutating func closeEpoch() {
        let epoch = ledger.meta.epoch
        while ledger.meta.epoch == epoch { run([]) }
    }

    func balance(_ citizen: Int, _ programme: String? = nil) -> Amount {
        let account = ledger.account(Self.citizen(citizen).publicKey)
        return programme.map { account.balance(in: id($0)) } ?? account.balance
    }
}

extension TransactionResult {
    var rejection: LedgerRejection? { if case let .rejected(r) = self { return r } else { return nil } }
}
