import ArgumentParser
import Consensus
import CalissonCrypto
import Foundation
import Histogram
import Logging
import Node
import Synchronization
import Transport
import Wire

/// The consensus ordering commands: n replicas in this process (or one process each:
/// `--processes`, OrderingProcesses.swift), each on its own event loop with its own
/// mutual-TLS transport on loopback. `chain`: the replicas alone, ordering
/// opaque unsigned payloads into a hash chain, so that the figure compares with BFT
/// implementations that order unsigned commands. `ledger`: the node's core (`NodeCore`)
/// ordering and executing signed attributions on in-memory storage (`CoreGroup`).
struct OrderingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ordering",
        abstract: "Ordered commands per second and ordering latency of the consensus (TLS on, no disk), alone or in the node's core with the ledger.",
        discussion: """
            Every replica signs and verifies every consensus message (Ed25519, each signature \
            once per replica: verify cache); safety records are kept in memory, not fsynced. \
            --application chain (default): the replicas alone; execution appends to a hash \
            chain; commands are made at the primary when it cuts a block, at most \
            --outstanding not yet executed (closed loop), each carrying its creation time; \
            latency is creation to execution at that replica; --processes runs each replica \
            in its own process. --application ledger: n node \
            cores (the node's admission, mempool and execution on the ledger, in-memory \
            storage); a client at the first keeps --outstanding signed attributions submitted \
            and not yet final; latency is submission to finality there.
            """)

    enum Application: String, ExpressibleByArgument, CaseIterable { case chain, ledger }

    @Option(help: "What the replicas order: chain (the consensus alone) or ledger (the node's core and the ledger).")
    var application: Application = .chain
    @Option(help: "Replicas.") var validators = 4
    @Option(help: "Commands per block (the primary cuts a block when this many wait).") var blockSize = 400
    @Option(help: "Bytes per command (at least 8: the creation time; chain only).") var payloadSize = 8
    @Option(help: "Commands made but not yet executed (closed loop).") var outstanding = 20_000
    @Option(help: "Signed attributions made before the run (ledger only; the run needs warm-up plus duration times the rate).")
    var transactions = 150_000
    @Option(help: "Measured seconds, after the warm-up.") var duration = 10.0
    @Option(help: "Warm-up seconds.") var warmup = 2.0
    @Option(help: "Consensus tick in milliseconds.") var tickMilliseconds: UInt64 = 5
    @Flag(help: "One process per replica (chain only), as BFT implementations are measured: the CPU counted is the replicas' processes'.")
    var processes = false
    @Option(help: "Write the result as JSON to this file.") var json: String?

    func validate() throws {
        try checkFinite([(duration, "--duration"), (warmup, "--warmup")])
        guard (1...100).contains(validators), (1...100_000).contains(blockSize), (8...1 << 20).contains(payloadSize),
            (blockSize...10_000_000).contains(outstanding), (1...10_000_000).contains(transactions), duration > 0, (1...60_000).contains(tickMilliseconds)
        else {
            throw ValidationError(
                "validators 1–100, block size 1–100000, payload 8 bytes–1 MiB, outstanding from the block size to 10000000, "
                    + "transactions 1–10000000, duration > 0, tick 1–60000 ms")
        }
        guard !processes || application == .chain else { throw ValidationError("--processes runs the chain application only") }
    }

    func run() throws {
        let machine = Machine.describe()
        let group: any OrderingRun
        switch application {
        case .chain where processes:
            group = try ProcessOrderingGroup(count: validators, blockSize: blockSize, payloadSize: payloadSize, outstanding: outstanding,
                                             tickMilliseconds: tickMilliseconds)
        case .chain:
            group = try OrderingGroup(count: validators, blockSize: blockSize, payloadSize: payloadSize, outstanding: outstanding,
                                      tickMilliseconds: tickMilliseconds)
        case .ledger:
            print("ordering: signing \(transactions) attributions before the run")
            group = try CoreGroup(count: validators, blockSize: blockSize, outstanding: outstanding, tickMilliseconds: tickMilliseconds,
                                  transactions: transactions)
        }
        defer { group.stop() }
        try group.start()
        Thread.sleep(forTimeInterval: warmup)
        let (startCount, startTime) = group.measureFrom()
        let viewsBefore = group.view()
        let cpuMeasured = group.cpuSeconds()
        Thread.sleep(forTimeInterval: duration)
        let (endCount, endTime, latency) = group.measureTo()
        let views = group.view() - viewsBefore
        let cpuEnd = group.cpuSeconds()
        let seconds = Double(endTime - startTime) / 1e9
        let rate = Double(endCount - startCount) / seconds
        var client: [String: Int] = [:]
        switch application {
        case .chain:
            print(String(format: "ordering: %d replicas, blocks of %d, %d-byte commands: %.0f commands/s over %.1f s", validators, blockSize,
                         payloadSize, rate, seconds))
            print(String(format: "  latency ms (creation to execution at the primary): p50 %.1f  p90 %.1f  p99 %.1f  max %.1f", latency.p50,
                         latency.p90, latency.p99, latency.max))
        case .ledger:
            print(String(format: "ordering: %d node cores with the ledger, blocks of %d, signed attributions: %.0f final/s over %.1f s", validators,
                         blockSize, rate, seconds))
            print(String(format: "  latency ms (submission to finality at the first core): p50 %.1f  p90 %.1f  p99 %.1f  max %.1f", latency.p50,
                         latency.p90, latency.p99, latency.max))
            if let cores = group as? CoreGroup {
                let totals = cores.clientTotals
                client = ["finalTotal": Int(clamping: endCount), "refused": totals.refused, "unanswered": totals.unanswered]
                print("  client: \(totals.refused) refused at admission, \(totals.unanswered) not final within 60 s")
                if totals.exhausted { throw ValidationError("the \(transactions) signed attributions ran out before the end: give --transactions more") }
            }
        }
        print(String(format: "  CPU: %.2f s in the measured window (all replicas, %@), %.3f CPU-s per 1,000 commands; view changes %d",
                     cpuEnd - cpuMeasured, group.processCount == 1 ? "one process" : "\(group.processCount) processes",
                     (cpuEnd - cpuMeasured) / max(1, Double(endCount - startCount)) * 1_000, views))
        if group.failure != nil { throw ValidationError("a replica failed: \(group.failure!)") }
        if let json {
            let object: [String: Any] = [
                "mode": "ordering", "date": machine.date, "commit": machine.commit, "cpu": machine.cpu,
                "cores": Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
                "configuration": ["application": application.rawValue, "validators": validators, "blockSize": blockSize, "payloadSize": payloadSize, "outstanding": outstanding,
                                  "durationSeconds": duration, "warmupSeconds": warmup, "tickMilliseconds": tickMilliseconds, "tls": true,
                                  "processes": group.processCount,
                                  "transactions": application == .ledger ? transactions : 0] as [String: Any],
                "results": [
                    "commandsPerSecond": Int(rate),
                    "latencyMilliseconds": ["p50": latency.p50, "p90": latency.p90, "p99": latency.p99, "max": latency.max],
                    "cpuSecondsPer1000Commands": (cpuEnd - cpuMeasured) / max(1, Double(endCount - startCount)) * 1_000,
                    "viewChanges": views,
                    "client": client,
                ] as [String: Any],
            ]
            try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]).write(to: URL(fileURLWithPath: json))
        }
    }
}

/// The replicas and what they measured (`--application chain`).
final class OrderingGroup: OrderingRun, @unchecked Sendable {
    let replicas: [OrderingReplica]

    init(count: Int, blockSize: Int, payloadSize: Int, outstanding: Int, tickMilliseconds: UInt64) throws {
        let setup = try OrderingSetup(count: count).decoded()
        let origin = monotonicNanoseconds()
        replicas = try (0..<count).map { index in
            try setup.replica(index, blockSize: blockSize, payloadSize: payloadSize, outstanding: outstanding, tickMilliseconds: tickMilliseconds,
                              origin: origin)
        }
    }

    func start() throws {
        for replica in replicas { try replica.start() }
        let addresses = replicas.map { PeerAddress(id: "r\($0.index)", host: "127.0.0.1", port: $0.transport.peerPort) }
        for replica in replicas {
            replica.transport.update(peers: addresses.filter { $0.id != "r\(replica.index)" }, registry: replica.transport.configuration.registry,
                                     revokedSerials: [])
        }
    }

    var failure: String? { replicas.compactMap { $0.failure }.first }

    /// Commands executed by replica 0 so far, and now (ns since the origin); resets its histogram.
    func measureFrom() -> (UInt64, Int64) {
        replicas[0].snapshot(reset: true)
    }

    func measureTo() -> (UInt64, Int64, LatencySummary) {
        let (count, time) = replicas[0].snapshot(reset: false)
        return (count, time, LatencySummary(replicas[0].histogram.withLock { $0 }))
    }

    func stop() { for replica in replicas { replica.stop() } }

    /// The highest view any replica entered.
    func view() -> Int { replicas.map { $0.views.withLock { $0 } }.max() ?? 0 }

    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }
}

/// One replica: the consensus state machine, its TLS transport and a hash-chain
/// "application", driven by its event loop.
final class OrderingReplica: @unchecked Sendable {
    let index: Int
    let loop: EventLoop
    let transport: Transport
    let payloadSize: Int
    let outstanding: Int
    let tickMilliseconds: UInt64
    /// CLOCK_MONOTONIC nanoseconds at the run's origin: the same in every process of a run
    /// (`--processes`), so that a command's creation time reads alike at every replica.
    let origin: Int64
    let chainId: String
    let cache = VerifyCache(capacity: 200_000)
    // Loop-thread state.
    var replica: Replica<NodeSigner>
    var byPeer: [String: ValidatorID]
    var byKey: [ValidatorID: String]
    var ticker: RepeatingTask?
    var chain = SHA256Digest.zero
    var made = 0
    var recent: [UInt64: CertifiedBlock] = [:]
    // Read from other threads.
    let executed = Mutex<UInt64>(0)
    let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three))
    let views = Mutex(0)
    private let failureValue = Mutex<String?>(nil)
    var failure: String? { failureValue.withLock { $0 } }

    init(index: Int, key: Ed25519PrivateKey, configuration: ReplicaConfiguration, transport configurationOfTransport: TransportConfiguration,
         peers: [String: ValidatorID], payloadSize: Int, outstanding: Int, tickMilliseconds: UInt64, origin: Int64) throws {
        self.index = index
        self.payloadSize = payloadSize
        self.outstanding = outstanding
        self.tickMilliseconds = tickMilliseconds
        self.origin = origin
        chainId = configuration.chainId
        loop = EventLoop(name: "ordering-\(index)")
        var logger = Logger(label: "calisson.ordering")
        logger.logLevel = .error
        transport = try Transport(configuration: configurationOfTransport, loop: loop, logger: logger)
        replica = Replica(configuration: configuration, signer: NodeSigner(key: key))
        byPeer = peers
        byKey = Dictionary(uniqueKeysWithValues: peers.map { ($0.value, $0.key) })
    }

    func nanoseconds() -> Int64 { monotonicNanoseconds() - origin }

    func start() throws {
        transport.onMessage = { [weak self] peer, _, payload in self?.received(payload, from: peer) }
        try transport.start()
        let started = DispatchSemaphore(value: 0)
        try loop.execute { [self] in
            ticker = RepeatingTask(loop: loop, every: tickMilliseconds) { [weak self] in self?.tick() }
            started.signal()
        }
        started.wait()
    }

    func stop() {
        let done = DispatchSemaphore(value: 0)
        if (try? loop.execute({ [self] in ticker?.cancel(); done.signal() })) != nil { done.wait() }
        transport.stop()
        loop.shutdown()
    }

    func snapshot(reset: Bool) -> (UInt64, Int64) {
        let result = DispatchSemaphore(value: 0)
        let value = Mutex<(UInt64, Int64)>((0, 0))
        guard (try? loop.execute({ [self] in
            value.withLock { $0 = (executed.withLock { $0 }, nanoseconds()) }
            if reset { histogram.withLock { $0.reset() } }
            result.signal()
        })) != nil else { return (0, 0) }
        result.wait()
        return value.withLock { $0 }
    }

    // MARK: Loop thread

    private var pending: Int { max(0, outstanding - made) }

    private func tick() {
        step(.tick(pendingCommands: pending))
    }

    private func received(_ payload: [UInt8], from peer: String) {
        guard let sender = byPeer[peer], let message = try? Message(wireBytes: payload) else { return }
        if replica.takesUnchecked(message, from: sender) { return }  // as the node: a vote no longer needed
        guard cache.verifyAll(message.signatureChecks(chainId: chainId)) else { return }
        step(.message(message, from: sender))
    }

    /// Steps the replica as the node does (`ReplicaDriver`), with no disk: the safety
    /// records stay in the replica's memory.
    private func step(_ input: Input) {
        ReplicaDriver.drive(input, step: { replica.step($0) }, persist: { _ in }, perform: perform)
    }

    private func perform(_ action: Action) -> Input? {
        switch action {
        case .persist, .evidence, .rejected, .enteredEpoch:
            break
        case let .send(message, to):
            if let peer = byKey[to] { _ = transport.send(message.wireBytes, to: peer) }
        case let .broadcast(message):
            transport.broadcast(message.wireBytes)
        case let .requestPayload(seq, commandsMax):
            return .payload(seq: seq, commands: makeCommands(min(commandsMax, pending)))
        case let .execute(certified):
            return execute(certified)
        case let .serveState(fromSeq, to, blocksMax):
            let blocks = (fromSeq..<fromSeq.saturatingAdding(UInt64(blocksMax))).compactMap { recent[$0] }
            if let peer = byKey[to], !blocks.isEmpty { _ = transport.send(Message.stateResponse(blocks).wireBytes, to: peer) }
        case let .enteredView(view):
            views.withLock { $0 = max($0, Int(view)) }
        case let .stateDiverged(seq, _, _):
            failureValue.withLock { $0 = "state diverged at \(seq)" }
        }
        return nil
    }

    /// Commands carrying their creation time (ns since the origin) in their first 8 bytes.
    private func makeCommands(_ count: Int) -> [[UInt8]] {
        let now = UInt64(nanoseconds())
        made += count
        return (0..<count).map { _ in
            var command = [UInt8](repeating: 0, count: payloadSize)
            withUnsafeBytes(of: now.littleEndian) { command.replaceSubrange(0..<8, with: $0) }
            return command
        }
    }

    private func execute(_ certified: CertifiedBlock) -> Input {
        let block = certified.block
        chain = SHA256.hash(chain.bytes + block.digest.bytes)
        recent[block.seq] = certified
        recent[block.seq &- 256] = nil
        let now = UInt64(nanoseconds())
        histogram.withLock { histogram in
            for command in block.commands where command.count >= 8 {
                let created = command.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
                if created <= now { _ = histogram.record(max(1, (now - created) / 1_000)) }
            }
        }
        // The commands this replica made are no longer outstanding once executed.
        made = max(0, made - block.commands.count)
        executed.withLock { $0 += UInt64(block.commands.count) }
        return .executed(seq: block.seq, stateRoot: chain, validators: nil)
    }
}
