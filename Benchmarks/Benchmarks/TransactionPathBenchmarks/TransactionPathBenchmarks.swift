// The per-transaction path of a validator, as the node runs it: signed attributions
// submitted to a node core (admission: decoding, the cheap checks, the signature checked
// and cached, the mempool), cut into a block, ordered (one validator: its own quorum),
// executed on the ledger (the state tree's update and root), and persisted in SQLite
// (`StoredState`, one transaction, fsynced) before the clients are answered. An iteration
// is one block of `batch` transactions; the transactions are signed before measurement
// starts (a client's work, not the node's).
//
// Allocations are what the thresholds check (Thresholds/, `benchmark thresholds check`):
// a change that allocates more per transaction fails it. Times are compared side by side
// with the build before (Docs/BENCHMARKS.md): the fsync makes them the disk's as much as ours.
import Benchmark
import CalissonCrypto
import Consensus
import Fixtures
import Foundation
import Ledger
import Node
import NodeCore
import Storage
import Wire

/// One validator's node core on its own SQLite file, and the signer of its clients.
final class TransactionPath {
    typealias Core = NodeCore<StoredState, NodeSigner>
    static let chainId = "calisson-path"
    let directory: String
    let signing = Fixture.key("path signing")
    let cache = VerifyCache(capacity: 1 << 16)
    var core: Core
    var nonce: UInt64 = 0
    var random = SplitMix64(seed: 0xA77_1B)
    var token: UInt64 = 0

    init(batch: Int) throws {
        directory = NSTemporaryDirectory() + "calisson-path-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let node = Fixture.key("path node")
        var file = Fixture.validators(chainId: Self.chainId, nodeKeys: [node.publicKey], signingKeys: [signing.publicKey])
        file.parameters.transactionLifetimeMax = 1 << 20
        let genesis = try file.validated()
        guard let set = ValidatorSet(genesis.validatorKeys) else { throw StorageError.corrupt(file: directory, reason: "no validator set") }
        var configuration = ReplicaConfiguration(chainId: Self.chainId, validators: set)
        configuration.batchCommandsMax = batch
        let store = try NodeStore(file: "\(directory)/node.db", create: true)
        let cache = cache
        core = try Core(storage: StoredState(store: store), genesis: genesis, replica: configuration, signer: NodeSigner(key: node), peers: [],
                        verifySignature: { check in cache.contains(check) || check.verify() })
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// `count` attributions by the one partner, each to a new account.
    func signed(_ count: Int) -> [[UInt8]] {
        (0..<count).map { _ in
            nonce += 1
            return Transaction.attribution(chainId: Self.chainId, by: "p0", nonce: nonce, expiry: 1 << 19, to: Ed25519PublicKey(random.bytes32()),
                                           evidence: SHA256.hash(random.bytes(16)))
                .signed(with: signing).wireBytes
        }
    }

    /// Gives `input` to the core and what its effects call for, as the node's shell does
    /// (signature checks answered at once, through the cache).
    func run(_ input: NodeInput) {
        var inputs = [input]
        var next = 0
        while next < inputs.count {
            for effect in core.drive(inputs[next]) {
                switch effect {
                case let .verify(checks, pending):
                    inputs.append(.verified(pending, cache.verifyAll(checks) ? .valid : .invalid))
                case let .stopped(reason):
                    fatalError("the node core stopped: \(reason)")
                default:
                    break
                }
            }
            next += 1
        }
    }

    /// Submits `transactions` as clients, then ticks until they are final.
    func block(_ transactions: [[UInt8]]) {
        let height = core.ledger.height
        for transaction in transactions {
            token += 1
            run(.submit(transaction, client: ClientToken(token)))
        }
        for _ in 0..<100 where core.ledger.height == height || core.mempool.count > 0 { run(.tick) }
        precondition(core.ledger.height > height && core.mempool.count == 0, "the block was not final after 100 ticks")
    }
}

let batch = 50

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal],
        warmupIterations: 3,
        // Always the same 200 blocks (the time bound is not reached): the same state's growth
        // and the same checkpoints every run, so the same allocations.
        maxDuration: .seconds(120),
        maxIterations: 200,
        // Allocations per block of 50 (a block at a checkpoint allocates twice a plain one:
        // the percentiles spread): a few per cent of noise (dictionary growth, SQLite's
        // page cache) is tolerated; a change that allocates more per transaction is not.
        thresholds: [.mallocCountTotal: .init(relative: [.p90: 10])]
    )

    nonisolated(unsafe) var path: TransactionPath?
    Benchmark("Transaction_path_block_of_50", closure: { benchmark in
        guard let path else { return }
        let transactions = path.signed(batch)
        benchmark.startMeasurement()
        path.block(transactions)
        benchmark.stopMeasurement()
    }, setup: {
        path = try TransactionPath(batch: batch)
    }, teardown: {
        path?.remove()
        path = nil
    })
}
