// A small Métropole for the ledger tests: five partners, three programmes (expiring
// waste-sorting rewards, a demurrage culture pass that can be given away, a transit
// bonus spendable only on the network), deterministic keys, and helpers that sign and
// run blocks.
import CalissonCrypto
import Fixtures
import Wire
@testable import Ledger

func id(_ raw: String) -> Identifier { Identifier(raw)! }

struct LedgerFixture {
    static let chainId = "calisson-test"
    let partnerKeys: [String: Ed25519PrivateKey]
    var ledger: Ledger<MemoryStateStore>
    var nonce: UInt64 = 0

    static func key(_ label: String) -> Ed25519PrivateKey { Fixture.key(label) }

    static func citizen(_ n: Int) -> Ed25519PrivateKey { key("citizen \(n)") }

    /// The small Métropole (`Fixture.smallMetropole`) with epochs of `epochLength` blocks.
    static func genesisFile(epochLength: UInt64 = 10) -> GenesisFile {
        var file = Fixture.smallMetropole(chainId: chainId)
        file.parameters.epochLength = epochLength
        return file
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
        Transaction.attribution(chainId: Self.chainId, by: issuer, nonce: nextNonce(), expiry: ledger.height + 10, programme: programme,
                                to: Self.citizen(citizen).publicKey, units: units, evidence: Self.evidence(evidence))
            .signed(with: partnerKeys[issuer]!).wireBytes
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
