import ArgumentParser
import CalissonCrypto
import Fixtures
import Foundation
import Ledger
import Wire

struct LedgerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Execute Attribute and Redeem blocks against a large state and time execution and the state-root update.",
        discussion: """
            Two ledgers run side by side in this process: one whose state holds --accounts \
            accounts, and a baseline holding --baseline-accounts. Each measured block runs \
            on both, alternately, so load on the machine affects both alike; the ratio shows \
            how the cost grows with the state. Signatures are real and verified before the \
            timing starts, as the node does at admission; execution finds them in the verify \
            cache (each transaction's signature is checked once per node).
            """)

    @Option(help: "Accounts in the large state.")
    var accounts = 1_000_000

    @Option(help: "Accounts in the baseline state.")
    var baselineAccounts = 10_000

    @Option(help: "Transactions per measured block.")
    var blockSize = 1_000

    @Option(help: "Measured blocks of each kind (Attribute, then Redeem).")
    var blocks = 10

    func validate() throws {
        try checkCounts([
            (accounts, "--accounts", 1...100_000_000), (baselineAccounts, "--baseline-accounts", 1...100_000_000),
            (blockSize, "--block-size", 1...10_000), (blocks, "--blocks", 1...100_000),
        ])
    }

    func run() throws {
        print("calisson-bench ledger: \(accounts) accounts vs a baseline of \(baselineAccounts), blocks of \(blockSize)")
        var big = try LedgerWorkload(accounts: accounts)
        var small = try LedgerWorkload(accounts: baselineAccounts)
        for kind in LedgerWorkload.Kind.allCases {
            var bigTimes = BlockTimes(), smallTimes = BlockTimes()
            for round in 0..<blocks {
                let bigBlock = big.block(kind, size: blockSize, round: round)
                let smallBlock = small.block(kind, size: blockSize, round: round)
                bigTimes.add(big.run(bigBlock))
                smallTimes.add(small.run(smallBlock))
            }
            print("  \(kind) blocks of \(blockSize), median of \(blocks):")
            print("    \(accounts) accounts:  \(bigTimes.summary(blockSize: blockSize))")
            print("    \(baselineAccounts) accounts:  \(smallTimes.summary(blockSize: blockSize))")
            print("    state-root update, ratio large/baseline state: \(String(format: "%.2f", bigTimes.medianCommit / smallTimes.medianCommit))")
        }
    }
}

struct BlockTimes {
    var stage: [Double] = []
    var commit: [Double] = []
    var applied: [Int] = []

    mutating func add(_ sample: (stage: Double, commit: Double, applied: Int)) {
        stage.append(sample.stage)
        commit.append(sample.commit)
        applied.append(sample.applied)
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    var medianCommit: Double { Self.median(commit) }

    func summary(blockSize: Int) -> String {
        let execution = Self.median(stage), update = Self.median(commit)
        let rate = Double(blockSize) / (execution + update)
        return String(format: "%.0f tx/s; execution %.2f ms, state-root update %.2f ms per block (%d applied)",
                      rate, execution * 1_000, update * 1_000, applied.min() ?? 0)
    }
}

/// A ledger with `accounts` citizens holding tokens, and signed blocks to run on it.
struct LedgerWorkload {
    enum Kind: String, CaseIterable { case attribute = "Attribute", redeem = "Redeem" }

    static let chainId = "calisson-bench"
    var ledger: Ledger<MemoryStateStore>
    let issuerKey = Ed25519PrivateKey(seed: SHA256.hash("bench issuer").bytes)!
    /// Citizens with real keys (they sign redemptions); the rest of the state is filler.
    let citizens: [Ed25519PrivateKey]
    let cache = VerifyCache(capacity: 1 << 17)
    var nonce: UInt64 = 0
    var evidence: UInt64 = 0
    var random = SplitMix64(seed: 42)
    let accounts: Int

    init(accounts: Int) throws {
        self.accounts = accounts
        var file = Fixture.solo(chainId: Self.chainId, key: issuerKey.publicKey, programme: "bench")
        file.parameters = .init(epochLength: 1_000_000, blocksPerDay: 1_000_000, transactionLifetimeMax: 100, proposalLifetimeMax: 100, sink: "metropole")
        ledger = try Ledger.create(try file.validated(), in: MemoryStateStore())
        citizens = (0..<4_096).map { Ed25519PrivateKey(seed: SHA256.hash("citizen \($0)").bytes)! }

        // Filler: every account gets tokens, in blocks of 10,000 unsigned-but-accepted
        // attributions (the verifier is bypassed here only; this part is not timed).
        var filler = SplitMix64(seed: UInt64(accounts))
        var start = 0
        while start < accounts {
            let end = min(start + 10_000, accounts)
            var commands: [[UInt8]] = []
            for index in start..<end {
                let account = index < citizens.count ? citizens[index].publicKey : Ed25519PublicKey(filler.bytes32())
                commands.append(attribution(to: account, units: 1_000, signed: false))
            }
            let outcome = ledger.execute(commands, verify: { _ in true })
            precondition(outcome.results.allSatisfy { $0 == .applied }, "filler attribution rejected: \(outcome.results.first { $0 != .applied }!)")
            start = end
        }
    }

    mutating func attribution(to account: AccountID, units: UInt32, signed: Bool) -> [UInt8] {
        nonce += 1
        evidence += 1
        let tx = Transaction.attribution(chainId: Self.chainId, by: "metropole", nonce: nonce, expiry: ledger.height + 50, programme: "bench", to: account,
                                         units: units, evidence: SHA256.hash("\(evidence)"))
        return signed ? tx.signed(with: issuerKey).wireBytes : SignedTransaction(transaction: tx, signature: Ed25519Signature(.zero)).wireBytes
    }

    /// A block of signed transactions, verified now (admission) so execution hits the cache.
    mutating func block(_ kind: Kind, size: Int, round: Int) -> [[UInt8]] {
        var commands: [[UInt8]] = []
        var checks: [SignatureCheck] = []
        for index in 0..<size {
            let citizen = citizens[(round * size + index) % citizens.count]
            let signed: SignedTransaction
            switch kind {
            case .attribute:
                // Half to accounts with real keys, half anywhere in the state.
                let account = index % 2 == 0 ? citizen.publicKey : Ed25519PublicKey(random.bytes32())
                signed = try! SignedTransaction(wireBytes: attribution(to: account, units: 10, signed: true))
            case .redeem:
                nonce += 1
                let tx = Transaction(chainId: Self.chainId, signer: .citizen(citizen.publicKey), nonce: nonce, expiryHeight: ledger.height + 50,
                                     body: .redeem(acceptor: Identifier("metropole")!, amount: 7, service: .zero))
                signed = tx.signed(with: citizen)
            }
            commands.append(signed.wireBytes)
            let key = kind == .attribute ? issuerKey.publicKey : citizen.publicKey
            checks.append(SignatureCheck(publicKey: key, digest: signed.transaction.signingDigest!, signature: signed.signature))
        }
        cache.insert(contentsOf: BatchVerifier().verify(checks).enumerated().filter(\.element).map { checks[$0.offset] })
        return commands
    }

    /// Runs a block: seconds staging (executing transactions), seconds committing (the
    /// state-root update and the store write), transactions applied.
    mutating func run(_ commands: [[UInt8]]) -> (stage: Double, commit: Double, applied: Int) {
        let clock = ContinuousClock()
        let start = clock.now
        let staged = ledger.stage(commands, verify: { [cache] in cache.contains($0) })
        let middle = clock.now
        _ = ledger.commit(staged)
        let end = clock.now
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        return (seconds(middle - start), seconds(end - middle), staged.results.filter { $0 == .applied }.count)
    }
}
