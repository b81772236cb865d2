import ArgumentParser
import CalissonCrypto
import Foundation
import Glibc
import Histogram
import Ledger
import LightClient
import Node
import NodeProcesses
import Synchronization
import Transport
import Wire

/// End-to-end throughput and latency of a local cluster under signed Attribute (and
/// Redeem) transactions, pre-signed before the clock starts.
struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Finalized signed transactions per second and submit-to-finality latency on a local cluster.",
        discussion: """
            Starts an n-validator cluster on loopback (calisson-node testnet and run, release \
            binaries next to this one), or attaches to one (--attach, a testnet directory), \
            pre-signs the workload (not timed), then submits it open-loop at --rate \
            transactions per second, or closed-loop keeping --outstanding transactions \
            submitted but not yet final (--rate 0). Finality is read from the finalized-block \
            stream of the first node. Reports finalized transactions per second after the \
            warm-up, latency percentiles (HdrHistogram), CPU-seconds of all nodes (from \
            /proc; per transaction also in signature checks of this machine, which days of \
            different speed can compare), peak RSS per node, bytes on disk per transaction, \
            view changes, and the throughput as a fraction of this machine's verify ceiling \
            (calisson-bench ceiling).
            """)

    @Option(help: "Validators (when starting a cluster).") var validators = 4
    @Option(help: "A running testnet's directory (calisson-node testnet --out) to attach to instead of starting one.") var attach: String?
    @Option(help: "Pre-signed transactions to submit.") var transactions = 20_000
    @Option(help: "One redemption after every this many attributions (0: attributions only).") var redeemEvery = 0
    @Option(help: "Open loop: offered transactions per second (0: closed loop).") var rate = 0.0
    @Option(help: "Closed loop: transactions submitted but not yet final.") var outstanding = 2_000
    @Option(help: "Client connections submitting in parallel, spread over the nodes.") var connections = 16
    @Option(help: "Closed loop: submissions each connection sends pipelined before reading the answers (1 to 32; 1: one at a time).")
    var pipeline = 1
    @Option(help: "Seconds from the first submission that are not measured.") var warmup = 2.0
    @Option(help: "Seconds to wait for everything to be final.") var timeout = 180.0
    @Option(help: "A started cluster's blockWaitMilliseconds (absent: the node's default).") var blockWaitMs: UInt64?
    @Option(help: "A started cluster's blockCommandsMax, transactions per block at most (absent: the node's default, 1000).") var blockCommandsMax: Int?
    @Option(help: "A started cluster's stateWriteCheckpoints, checkpoints per write of the state (absent: the node's default, 4).")
    var stateWriteCheckpoints: UInt64?
    @Option(help: "First port of a started cluster.") var basePort: UInt16 = 7300
    @Option(help: "Citizen accounts the transactions go to.") var citizens = 2_000
    @Option(help: "Write the result (machine, commit, configuration, figures) as JSON to this file.") var json: String?
    @Flag(help: "Plain progress lines even on a terminal.") var plain = false

    func validate() throws {
        try checkCounts([
            (validators, "--validators", 1...100), (transactions, "--transactions", 1...10_000_000), (redeemEvery, "--redeem-every", 0...10_000_000),
            (outstanding, "--outstanding", 1...10_000_000), (connections, "--connections", 1...1_024), (citizens, "--citizens", 1...1_000_000),
            (blockCommandsMax ?? 1, "--block-commands-max", 1...10_000), (Int(clamping: blockWaitMs ?? 0), "--block-wait-ms", 0...1_000),
            (Int(clamping: stateWriteCheckpoints ?? 1), "--state-write-checkpoints", 1...64),
        ])
        guard (1...32).contains(pipeline) else { throw ValidationError("--pipeline is from 1 to 32") }
        guard pipeline == 1 || rate == 0 else { throw ValidationError("--pipeline is for the closed loop (--rate 0)") }
        try checkFinite([(rate, "--rate"), (warmup, "--warmup"), (timeout, "--timeout")])
    }

    func run() throws {
        let machine = Machine.describe()
        let cluster = try attach.map { try NodeProcesses(attachingTo: $0) } ?? NodeProcesses.bench(
            starting: validators, basePort: basePort, blockWaitMilliseconds: blockWaitMs, blockCommandsMax: blockCommandsMax,
            stateWriteCheckpoints: stateWriteCheckpoints)
        defer { cluster.stop() }
        let workload = try Workload(cluster: cluster, count: transactions, citizens: citizens, redeemEvery: redeemEvery)
        print("cluster: \(cluster.ids.count) validators, \(workload.signed.count) transactions pre-signed (\(cluster.describe))")
        let result = try Measurement(cluster: cluster, workload: workload, command: self).run()
        let verifyRate = CeilingCommand.singleCoreVerifyRate()
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let ceiling = Double(cores) * verifyRate / Double(cluster.ids.count)
        var report = result.report
        report["ceilingTransactionsPerSecond"] = Int(ceiling)
        report["fractionOfCeiling"] = (result.throughput / ceiling * 1_000).rounded() / 1_000
        let mode = rate > 0 ? "open loop at \(Int(rate)) tx/s offered" : "closed loop, \(outstanding) outstanding"
        print(String(format: "cluster: %.0f finalized tx/s (%@), %.2f of the verify ceiling (%.0f tx/s)", result.throughput, mode,
                     result.throughput / ceiling, ceiling))
        print(String(format: "  latency ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (%d transactions after the warm-up)",
                     result.latency(50), result.latency(90), result.latency(99), result.latencyMax, result.measured))
        let cpuPerTransaction = result.cpuSeconds / Double(max(1, result.finalized))
        // The same CPU counted in signature checks of this machine at this hour: a figure
        // that days of different speed on a shared machine can compare.
        report["cpuPerTransactionInSignatureChecks"] = (cpuPerTransaction * verifyRate * 100).rounded() / 100
        print(String(format: "  CPU: %.2f s for all nodes, %.3f CPU-s per 1,000 finalized transactions, %.1f signature checks' worth each (%.0f checks/s on one core now)",
                     result.cpuSeconds, cpuPerTransaction * 1_000, cpuPerTransaction * verifyRate, verifyRate))
        print("  peak RSS per node (MB): \(result.peakRSS.map { String(format: "%.0f", Double($0) / 1_048_576) }.joined(separator: ", "))")
        print(String(format: "  disk: %.0f bytes per transaction per node; view changes: %d; refused at admission: %d; not final: %d",
                     result.bytesPerTransaction, result.viewChanges, result.refused, result.pending))
        // Votes the nodes dropped without checking them, the replica having formed their
        // certificate (Docs/PROTOCOL.md), over the whole run: per block for a cluster the
        // bench started (an attached one's counters began when its nodes did, not with its
        // chain).
        let nodeMetrics = cluster.ids.indices.map { cluster.metrics($0) }
        let unchecked = nodeMetrics.reduce(0) { $0 + ($1["consensus_votes_unchecked_total"] ?? 0) }
        if attach == nil {
            let blocks = nodeMetrics.map { $0["height"] ?? 0 }.max() ?? 0
            let perBlock = unchecked / max(1, blocks) / Double(cluster.ids.count)
            report["votesUncheckedPerBlockPerNode"] = (perBlock * 100).rounded() / 100
            print(String(format: "  votes dropped unchecked: %.0f on %d nodes over %.0f blocks (%.2f per block and node)",
                         unchecked, cluster.ids.count, blocks, perBlock))
        } else {
            print(String(format: "  votes dropped unchecked: %.0f on %d nodes since they started", unchecked, cluster.ids.count))
        }
        if let json {
            let object: [String: Any] = [
                "mode": "cluster", "date": machine.date, "commit": machine.commit, "cpu": machine.cpu, "cores": cores,
                "configuration": [
                    "validators": cluster.ids.count, "transactions": transactions, "redeemEvery": redeemEvery, "rate": rate,
                    "outstanding": outstanding, "connections": connections, "pipeline": pipeline, "blockCommandsMax": blockCommandsMax ?? 0,
                    "stateWriteCheckpoints": stateWriteCheckpoints ?? 0, "warmupSeconds": warmup, "citizens": citizens,
                    "attached": attach != nil,
                ] as [String: Any],
                "results": report,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
            try data.write(to: URL(fileURLWithPath: json))
            print("cluster: results in \(json)")
        }
        if result.pending > 0 { throw ExitCode.failure }
    }
}

extension NodeProcesses {
    /// The benchmarks' testnet: the `calisson-node` beside this binary, epochs and
    /// transaction lifetimes longer than any run, in a new temporary directory.
    /// `configuredPeers`: no endpoints in the genesis, so that links go where the
    /// configurations' peers say (relays that delay them).
    static func bench(
        starting count: Int, basePort: UInt16, blockWaitMilliseconds: UInt64? = nil, blockCommandsMax: Int? = nil, stateWriteCheckpoints: UInt64? = nil,
        namespaces: Bool = false,
        configuredPeers: Bool = false,
        prepare: (NodeProcesses) throws -> Void = { _ in }
    ) throws -> NodeProcesses {
        let bin = Bundle.main.executableURL?.deletingLastPathComponent().path ?? ".build/release"
        return try NodeProcesses(
            starting: count, bin: bin, basePort: basePort,
            testnetArguments: ["--transaction-lifetime", "1000000", "--epoch-length", "1000000"] + (blockWaitMilliseconds.map { ["--block-wait-ms", "\($0)"] } ?? [])
                + (blockCommandsMax.map { ["--block-commands-max", "\($0)"] } ?? [])
                + (stateWriteCheckpoints.map { ["--state-write-checkpoints", "\($0)"] } ?? [])
                + (configuredPeers ? ["--no-endpoints"] : []),
            namespaces: namespaces, prepare: prepare)
    }
}

/// The pre-signed transactions, with their ids.
struct Workload {
    let signed: [[UInt8]]
    let ids: [Bytes32]
    /// The citizens' accounts the transactions credit or debit.
    let accounts: [AccountID]

    init(cluster: NodeProcesses, count: Int, citizens: Int, redeemEvery: Int) throws {
        let genesis = cluster.genesis
        guard let programme = genesis.programmes.first(where: { $0.id.rawValue == "recyclage" }) ?? genesis.programmes.first else {
            throw ValidationError("the genesis has no programme")
        }
        guard let acceptor = genesis.partners.first(where: { $0.roles.contains(.acceptor) })?.id else { throw ValidationError("no acceptor") }
        let issuers = programme.issuers
        let keys = try Dictionary(uniqueKeysWithValues: issuers.map { ($0, try KeyFile.readPrivateKey(at: "\(cluster.directory)/\($0.rawValue)/signing.key")) })
        guard let status = cluster.status(0) else { throw ValidationError("the first node does not answer") }
        let expiry = status.height.saturatingAdding(min(genesis.parameters.transactionLifetimeMax, 1_000_000) - 1)
        let people = (0..<citizens).map { Ed25519PrivateKey(seed: SHA256.hash("bench citizen \($0)").bytes)! }
        // Unique per run: nonces from the clock, evidence from the nonce.
        var nonce = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        var signed: [[UInt8]] = []
        signed.reserveCapacity(count)
        var attributions = 0
        while signed.count < count {
            nonce += 1
            // A redemption by a citizen rewarded a whole round of citizens earlier, so that
            // its tokens are final before it is submitted, whatever the interleaving.
            if redeemEvery > 0, attributions >= citizens, (signed.count + 1) % (redeemEvery + 1) == 0 {
                let spender = people[attributions % citizens]
                signed.append(Transaction(chainId: genesis.chainId, signer: .citizen(spender.publicKey), nonce: nonce, expiryHeight: expiry,
                                          body: .redeem(acceptor: acceptor, amount: 1, service: SHA256.hash("bench service \(nonce)")))
                    .signed(with: spender).wireBytes)
                continue
            }
            let issuer = issuers[attributions % issuers.count]
            signed.append(Transaction(chainId: genesis.chainId, signer: .partner(issuer), nonce: nonce, expiryHeight: expiry,
                                      body: .attribute(programme: programme.id, account: people[attributions % citizens].publicKey, units: 1,
                                                       evidence: SHA256.hash("bench evidence \(nonce)")))
                .signed(with: keys[issuer]!).wireBytes)
            attributions += 1
        }
        self.signed = signed
        ids = signed.map { SignedTransaction.idTag.hash($0) }
        accounts = people.map(\.publicKey)
    }
}

/// One run: submitters, the finality follower, and the figures.
final class Measurement: @unchecked Sendable {
    struct Result {
        var throughput: Double
        var histogram: Histogram<UInt64>
        var measured: Int
        var finalized: Int
        var pending: Int
        var refused: Int
        var cpuSeconds: Double
        var peakRSS: [Int]
        var bytesPerTransaction: Double
        var viewChanges: Int
        var report: [String: Any]

        func latency(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1_000 }
        var latencyMax: Double { Double(histogram.max) / 1_000 }
    }

    let cluster: NodeProcesses
    let workload: Workload
    let command: ClusterCommand
    let clock = ContinuousClock()
    let start: ContinuousClock.Instant
    /// Per transaction: submit time, µs since `start` (0: not submitted; `counted`: final).
    let submitted: Mutex<[Int64]>
    static let counted: Int64 = -1
    let state = Mutex(Shared())
    let permits: DispatchSemaphore

    struct Shared {
        var next = 0
        var finalized = 0
        var finalizedAfterWarmup = 0
        var firstAfterWarmup: Int64?
        var lastFinal: Int64 = 0
        var refused = 0
        var reasons: [String: Int] = [:]
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var done = false
        var failure: String?
    }

    init(cluster: NodeProcesses, workload: Workload, command: ClusterCommand) {
        self.cluster = cluster
        self.workload = workload
        self.command = command
        start = clock.now
        submitted = Mutex([Int64](repeating: 0, count: workload.signed.count))
        permits = DispatchSemaphore(value: command.rate > 0 ? 0 : command.outstanding)
    }

    func now() -> Int64 {
        let elapsed = clock.now - start
        return elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
    }

    func run() throws -> Result {
        let index = Dictionary(uniqueKeysWithValues: workload.ids.enumerated().map { ($0.element, $0.offset) })
        let heights = cluster.ids.indices.map { cluster.status($0)?.height ?? 0 }
        let views = cluster.ids.indices.map { cluster.status($0)?.view ?? 0 }
        let disk = cluster.diskBytes()
        let cpu = cluster.cpuSeconds()
        let warmupMicros = Int64(command.warmup * 1_000_000)

        // The follower: finalized blocks from the first node, each block's transaction ids.
        let follower = try cluster.client(0)
        let followed = DispatchGroup()
        followed.enter()
        let following = Thread { [self] in
            defer { followed.leave() }
            var next = (heights.first ?? 0).saturatingAdding(1)
            while !state.withLock({ $0.done }) {
                guard let bytes = try? follower.request(ClientRequest.blocks(from: next, limit: 64, waitMilliseconds: 500).wireBytes, timeoutMilliseconds: 10_000),
                    case let .blocks(blocks)? = try? ClientResponse(wireBytes: bytes)
                else { continue }
                for block in blocks {
                    guard let reply = try? follower.request(ClientRequest.blockTransactions(block.height).wireBytes),
                        case let .blockTransactions(ids?)? = try? ClientResponse(wireBytes: reply)
                    else { break }
                    let time = now()
                    // Each transaction counts once: one proposed again after a view change
                    // is in a later block too (refused there as a replay).
                    let times = submitted.withLock { sent in
                        ids.compactMap { id -> Int64? in
                            guard let item = index[id], sent[item] > 0 else { return nil }
                            defer { sent[item] = Self.counted }
                            return sent[item]
                        }
                    }
                    state.withLock { shared in
                        for sent in times where sent > 0 {
                            shared.finalized += 1
                            shared.lastFinal = time
                            if sent >= warmupMicros {
                                shared.finalizedAfterWarmup += 1
                                if shared.firstAfterWarmup == nil { shared.firstAfterWarmup = sent }
                                _ = shared.histogram.record(UInt64(max(1, time - sent)))
                            }
                        }
                    }
                    if command.rate == 0 { for _ in times { permits.signal() } }
                    next = block.height.saturatingAdding(1)
                }
            }
            follower.close()
        }
        following.start()

        // Submitters: each takes the next transaction, paced (open loop) or gated (closed loop).
        let group = DispatchGroup()
        for connection in 0..<command.connections {
            let client = try cluster.client(connection % cluster.ids.count)
            group.enter()
            Thread { [self] in
                defer { client.close(); group.leave() }
                while true {
                    let taken = state.withLock { shared -> Range<Int>? in
                        guard shared.next < workload.signed.count, shared.failure == nil else { return nil }
                        let first = shared.next
                        shared.next = min(first + command.pipeline, workload.signed.count)
                        return first..<shared.next
                    }
                    guard let items = taken else { return }
                    if command.rate > 0 {
                        let due = Int64(Double(items.lowerBound) / command.rate * 1_000_000)
                        let wait = due - now()
                        if wait > 0 { usleep(UInt32(min(wait, 1_000_000))) }
                    } else {
                        for _ in items { permits.wait() }
                    }
                    let time = now()
                    submitted.withLock { for item in items { $0[item] = time } }
                    // One at a time, or pipelined on the connection (the answers come in order).
                    let answers: [ClientResponse?] = items.count == 1
                        ? [(try? client.request(ClientRequest.submit(workload.signed[items.lowerBound]).wireBytes)).flatMap { try? ClientResponse(wireBytes: $0) }]
                        : client.pipeline(items.map { ClientRequest.submit(workload.signed[$0]).wireBytes }).map { result in
                            (try? result.get()).flatMap { try? ClientResponse(wireBytes: $0) }
                        }
                    for (item, answer) in zip(items, answers) {
                        guard case .admitted? = answer else {
                            submitted.withLock { $0[item] = 0 }
                            state.withLock { shared in
                                shared.refused += 1
                                if case let .refused(reason)? = answer { shared.reasons[reason, default: 0] += 1 } else { shared.reasons["no answer", default: 0] += 1 }
                            }
                            if command.rate == 0 { permits.signal() }
                            continue
                        }
                    }
                }
            }.start()
        }

        // Progress until everything submitted is final, or the timeout.
        let terminal = isatty(1) == 1 && !command.plain
        let total = workload.signed.count
        var lastPrint = Date.distantPast
        var lastCount = 0
        var lastTime = Date()
        let deadline = Date().addingTimeInterval(command.timeout)
        while true {
            Thread.sleep(forTimeInterval: terminal ? 0.25 : 1)
            let (finalized, refused, next) = state.withLock { ($0.finalized, $0.refused, $0.next) }
            let complete = next >= total && finalized + refused >= total
            if Date().timeIntervalSince(lastPrint) >= (terminal ? 0.25 : 5) || complete {
                let rate = Double(finalized - lastCount) / max(0.001, Date().timeIntervalSince(lastTime))
                lastCount = finalized
                lastTime = Date()
                lastPrint = Date()
                if terminal {
                    let width = 30, filled = width * finalized / max(1, total)
                    print("\r[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(finalized)/\(total) final, \(Int(rate)) tx/s   ",
                          terminator: "")
                    fflush(nil)
                } else {
                    print("  \(finalized)/\(total) final, \(Int(rate)) tx/s")
                }
            }
            if complete || Date() > deadline { break }
        }
        if terminal { print("") }
        state.withLock { $0.done = true }
        group.wait()
        followed.wait()

        let shared = state.withLock { $0 }
        let cpuUsed = cluster.cpuSeconds() - cpu
        let finalHeights = cluster.ids.indices.map { cluster.status($0)?.height ?? 0 }
        let finalViews = cluster.ids.indices.map { cluster.status($0)?.view ?? 0 }
        let diskGrowth = zip(cluster.diskBytes(), disk).map { $0 - $1 }
        let span = Double(shared.lastFinal - (shared.firstAfterWarmup ?? shared.lastFinal)) / 1_000_000
        let throughput = span > 0 ? Double(shared.finalizedAfterWarmup) / span : 0
        let bytesPerTransaction = Double(diskGrowth.reduce(0, +)) / Double(max(1, diskGrowth.count)) / Double(max(1, shared.finalized))
        let viewChanges = zip(finalViews, views).map { Int(clamping: $0) - Int(clamping: $1) }.max() ?? 0
        let rss = cluster.peakRSS()
        var histogram = shared.histogram
        if histogram.totalCount == 0 { _ = histogram.record(0) }
        let report: [String: Any] = [
            "finalizedTransactionsPerSecond": Int(throughput), "finalized": shared.finalized, "measuredAfterWarmup": shared.finalizedAfterWarmup,
            "refusedAtAdmission": shared.refused, "refusalReasons": shared.reasons, "notFinal": total - shared.finalized - shared.refused,
            "latencyMilliseconds": ["p50": Double(histogram.valueAtPercentile(50)) / 1_000, "p90": Double(histogram.valueAtPercentile(90)) / 1_000,
                                    "p99": Double(histogram.valueAtPercentile(99)) / 1_000, "max": Double(histogram.max) / 1_000],
            "cpuSecondsAllNodes": cpuUsed, "cpuSecondsPer1000Transactions": cpuUsed / Double(max(1, shared.finalized)) * 1_000,
            "peakRSSBytesPerNode": rss, "diskBytesPerTransactionPerNode": Int(bytesPerTransaction), "viewChanges": viewChanges,
            // The highest node's height: node 0 may have stopped answering (it trapped here).
            "blocks": (finalHeights.max() ?? 0) - min(heights.first ?? 0, finalHeights.max() ?? 0),
        ]
        return Result(
            throughput: throughput, histogram: histogram, measured: shared.finalizedAfterWarmup, finalized: shared.finalized,
            pending: total - shared.finalized - shared.refused, refused: shared.refused, cpuSeconds: cpuUsed, peakRSS: rss,
            bytesPerTransaction: bytesPerTransaction, viewChanges: viewChanges, report: report)
    }
}
