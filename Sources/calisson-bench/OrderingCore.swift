import ArgumentParser
import Consensus
import CalissonCrypto
import Fixtures
import Foundation
import Histogram
import Ledger
import LightClient
import Logging
import Node
import NodeCore
import Simulation
import Synchronization
import Transport
import Wire

/// What `ordering` measures: either run is started, measured between two points and
/// stopped by `OrderingCommand`.
protocol OrderingRun: AnyObject {
    func start() throws
    func stop()
    var failure: String? { get }
    /// Commands final at the measuring replica so far, and now (ns since the origin);
    /// resets the latency histogram.
    func measureFrom() -> (UInt64, Int64)
    func measureTo() -> (UInt64, Int64, LatencySummary)
    /// The highest view any replica entered.
    func view() -> Int
    /// CPU-seconds (user and system) of the processes the replicas run in, so far.
    func cpuSeconds() -> Double
    /// How many processes they are.
    var processCount: Int { get }
}

extension OrderingRun {
    func cpuSeconds() -> Double { OrderingGroup.processCPUSeconds() }
    var processCount: Int { 1 }
}

/// Latency percentiles in milliseconds, from a histogram of microseconds.
struct LatencySummary: Sendable {
    var p50: Double, p90: Double, p99: Double, max: Double

    init(p50: Double, p90: Double, p99: Double, max: Double) {
        (self.p50, self.p90, self.p99, self.max) = (p50, p90, p99, max)
    }

    init(_ histogram: Histogram<UInt64>) {
        let at = { (p: Double) in Double(histogram.valueAtPercentile(p)) / 1_000 }
        self.init(p50: at(50), p90: at(90), p99: at(99), max: Double(histogram.max) / 1_000)
    }
}

/// `ordering --application ledger`: n node cores (`NodeCore`: the node's admission,
/// mempool, consensus driving and the ledger's execution, the same code the node runs)
/// over in-memory storage (`SimulatedStorage`, no fault armed), each on its own event loop
/// with its own mutual-TLS transport on loopback. A closed-loop client at the first
/// replica keeps `outstanding` signed attributions submitted and not yet final, each
/// submitted as the client port does (`.submit`, then `.waitFinal` once admitted);
/// latency is from submission to the answer that it is final. Signature checks run on
/// each replica's loop, through its verify cache (the node hands them to verifier
/// threads: the same work, in one process of two cores).
final class CoreGroup: OrderingRun {
    static let chainId = "calisson-ordering"
    let replicas: [CoreReplica]

    init(count: Int, blockSize: Int, outstanding: Int, tickMilliseconds: UInt64, transactions: Int) throws {
        let caKey = Ed25519PrivateKey()
        let ca = try CertificateAuthority.makeRoot(name: "ordering bench CA", key: caKey)
        let nodeKeys = (0..<count).map { _ in Ed25519PrivateKey() }
        let tlsKeys = (0..<count).map { _ in Ed25519PrivateKey() }
        let signingKeys = (0..<count).map { _ in Ed25519PrivateKey() }
        var certificates: [Certificate] = []
        for index in 0..<count {
            certificates.append(try CertificateAuthority.issue(
                commonName: "p\(index)", subjectKey: tlsKeys[index].publicKey, ca: ca, caKey: caKey, serial: UInt64(index + 1)))
        }
        let registry = Dictionary(uniqueKeysWithValues: certificates.map { ($0.commonName, $0.publicKeyHash) })
        let genesis = try Self.genesis(nodeKeys: nodeKeys.map(\.publicKey), signingKeys: signingKeys.map(\.publicKey))
        guard let set = ValidatorSet(genesis.validatorKeys) else { throw ValidationError("bad validator set") }
        var configuration = ReplicaConfiguration(chainId: Self.chainId, validators: set)
        configuration.batchCommandsMax = blockSize
        configuration.viewChangeTimeoutTicks = max(40, 800 / tickMilliseconds)
        configuration.viewChangeTimeoutTicksMax = configuration.viewChangeTimeoutTicks * 8
        let workload = Self.attributions(transactions, by: signingKeys[0])
        let origin = ContinuousClock.now
        let partners = (0..<count).map { "p\($0)" }
        replicas = try (0..<count).map { index in
            var transport = TransportConfiguration(
                chainId: Self.chainId, selfID: partners[index], identity: TLSIdentity(certificate: certificates[index], key: tlsKeys[index]), ca: ca)
            transport.registry = registry
            return try CoreReplica(
                index: index, genesis: genesis, configuration: configuration, key: nodeKeys[index], transport: transport,
                peers: partners.filter { $0 != partners[index] }, client: index == 0 ? (workload, outstanding) : nil,
                tickMilliseconds: tickMilliseconds, origin: origin)
        }
    }

    /// One partner per replica, each an issuer and validator; one programme whose budget
    /// and caps no run reaches; epochs and lifetimes longer than any run.
    static func genesis(nodeKeys: [Ed25519PublicKey], signingKeys: [Ed25519PublicKey]) throws -> Genesis {
        var file = Fixture.validators(chainId: chainId, nodeKeys: nodeKeys, signingKeys: signingKeys, programme: "bench")
        file.parameters = .init(epochLength: 1 << 30, blocksPerDay: 1 << 30, transactionLifetimeMax: 1 << 30, sink: "p0")
        return try file.validated()
    }

    /// `count` attributions by partner `p0`, one unit each to a new account, signed (on
    /// every core: this is before the run).
    static func attributions(_ count: Int, by key: Ed25519PrivateKey) -> [[UInt8]] {
        let chunk = 4_096
        let chunks = (count + chunk - 1) / chunk
        let signed = Mutex([[[UInt8]]](repeating: [], count: chunks))
        DispatchQueue.concurrentPerform(iterations: chunks) { part in
            var random = SplitMix64(seed: UInt64(part) &+ 0x0DE2_1A6)
            var made: [[UInt8]] = []
            for index in part * chunk..<min(count, (part + 1) * chunk) {
                var evidence = WireWriter()
                evidence.write(UInt64(index))
                let transaction = Transaction.attribution(
                    chainId: chainId, by: "p0", nonce: UInt64(index + 1), expiry: 1 << 30, programme: "bench", to: Ed25519PublicKey(random.bytes32()),
                    evidence: SHA256.hash(evidence.bytes))
                made.append(transaction.signed(with: key).wireBytes)
            }
            signed.withLock { $0[part] = made }
        }
        return signed.withLock { $0.flatMap { $0 } }
    }

    func start() throws {
        for replica in replicas { try replica.start() }
        let addresses = replicas.map { PeerAddress(id: $0.partner, host: "127.0.0.1", port: $0.transport.peerPort) }
        for replica in replicas {
            replica.transport.update(peers: addresses.filter { $0.id != replica.partner }, registry: replica.transport.configuration.registry,
                                     revokedSerials: [])
        }
        // The client starts once every core is linked to all the others (on a loaded
        // machine linking can take seconds, which the warm-up must not count on).
        let deadline = Date().addingTimeInterval(60)
        for replica in replicas {
            while replica.transport.linkedPeers().count < replicas.count - 1 {
                guard Date() < deadline else { throw ValidationError("\(replica.partner) is not linked to the others after 60 s") }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        try replicas[0].startClient()
    }

    func stop() { for replica in replicas { replica.stop() } }

    var failure: String? { replicas.compactMap(\.failure).first }

    func measureFrom() -> (UInt64, Int64) { replicas[0].snapshot(reset: true) }

    func measureTo() -> (UInt64, Int64, LatencySummary) {
        let (count, time) = replicas[0].snapshot(reset: false)
        return (count, time, LatencySummary(replicas[0].histogram.withLock { $0 }))
    }

    func view() -> Int { replicas.map { $0.views.withLock { $0 } }.max() ?? 0 }

    /// Transactions the client submitted that were refused at admission, and that it
    /// stopped waiting for; whether it ran out of signed transactions.
    var clientTotals: (refused: Int, unanswered: Int, exhausted: Bool) { replicas[0].clientTotals.withLock { $0 } }
}

/// One replica of `CoreGroup`: a node core, its transport and its loop; the first one
/// also carries the closed-loop client.
final class CoreReplica: @unchecked Sendable {
    typealias Core = NodeCore<SimulatedStorage, NodeSigner>
    let index: Int
    let partner: String
    let loop: EventLoop
    let transport: Transport
    let tickMilliseconds: UInt64
    let origin: ContinuousClock.Instant
    let cache = VerifyCache(capacity: 1 << 18)
    // Loop-thread state.
    var core: Core
    var ticker: RepeatingTask?
    var workload: [[UInt8]]
    var nextTransaction = 0
    let outstanding: Int
    var waiting: [ClientToken: Int64] = [:]
    // Read from other threads.
    let final = Mutex<UInt64>(0)
    let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three))
    let views = Mutex(0)
    let clientTotals = Mutex((refused: 0, unanswered: 0, exhausted: false))
    private let failureValue = Mutex<String?>(nil)
    var failure: String? { failureValue.withLock { $0 } }

    init(index: Int, genesis: Genesis, configuration: ReplicaConfiguration, key: Ed25519PrivateKey, transport configurationOfTransport: TransportConfiguration,
         peers: [String], client: (workload: [[UInt8]], outstanding: Int)?, tickMilliseconds: UInt64, origin: ContinuousClock.Instant) throws {
        self.index = index
        partner = configurationOfTransport.selfID
        self.tickMilliseconds = tickMilliseconds
        self.origin = origin
        workload = client?.workload ?? []
        outstanding = client?.outstanding ?? 0
        loop = EventLoop(name: "ordering-\(index)")
        var logger = Logger(label: "calisson.ordering")
        logger.logLevel = .error
        transport = try Transport(configuration: configurationOfTransport, loop: loop, logger: logger)
        let cache = cache
        core = try Core(storage: SimulatedStorage(), genesis: genesis, replica: configuration, signer: NodeSigner(key: key), peers: peers,
                        verifySignature: { check in cache.contains(check) || check.verify() })
    }

    func nanoseconds() -> Int64 {
        let elapsed = ContinuousClock.now - origin
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }

    func start() throws {
        transport.onMessage = { [weak self] peer, _, payload in self?.run(.peerMessage(payload, from: peer)) }
        transport.onGossip = { [weak self] _, transaction in self?.run(.submit(transaction, client: nil)) }
        transport.onEvent = { [weak self] event in
            if case let .peerConnected(peer, _) = event { self?.run(.peerConnected(peer)) }
        }
        try transport.start()
        try onLoopAndWait { [self] in ticker = RepeatingTask(loop: loop, every: tickMilliseconds) { [weak self] in self?.run(.tick) } }
    }

    /// The client starts submitting.
    func startClient() throws {
        try onLoopAndWait { [self] in run(nil) }
    }

    func stop() {
        try? onLoopAndWait { [self] in ticker?.cancel() }
        transport.stop()
        loop.shutdown()
    }

    func snapshot(reset: Bool) -> (UInt64, Int64) {
        let value = Mutex<(UInt64, Int64)>((0, 0))
        try? onLoopAndWait { [self] in
            value.withLock { $0 = (final.withLock { $0 }, nanoseconds()) }
            if reset { histogram.withLock { $0.reset() } }
        }
        return value.withLock { $0 }
    }

    private func onLoopAndWait(_ body: @escaping @Sendable () -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        try loop.execute {
            body()
            done.signal()
        }
        done.wait()
    }

    // MARK: Loop thread

    /// Gives `input` (if any) to the core and carries out its effects, as the node's shell
    /// does; then the client tops up what it has in flight, and so on until nothing is left.
    private func run(_ input: NodeInput?) {
        var inputs = input.map { [$0] } ?? []
        while true {
            while !inputs.isEmpty {
                let input = inputs.removeFirst()
                guard core.failure == nil else { return }
                for effect in core.drive(input) {
                    switch perform(effect) {
                    case nil: break
                    case let .now(next)?: inputs.insert(next, at: 0)
                    case let .later(next)?: inputs.append(next)
                    }
                }
            }
            inputs = topUp()
            if inputs.isEmpty { return }
        }
    }

    /// An input an effect calls for: before any other input queued (a client's wait
    /// registered before a later input could make its transaction final), or after them.
    enum Next { case now(NodeInput), later(NodeInput) }

    private func perform(_ effect: NodeEffect) -> Next? {
        switch effect {
        case .send, .broadcast, .sendFrame, .broadcastGossip, .gossip, .forgetGossip:
            transport.carryOut(effect)
        case let .verify(checks, pending):
            return .later(.verified(pending, cache.verifyAll(checks) ? .valid : .invalid))
        case let .admission(token, refusal):
            if refusal != nil {
                waiting[token] = nil
                clientTotals.withLock { $0.refused += 1 }
            } else if waiting[token] != nil {
                let id = SignedTransaction.idTag.hash(workload[Int(token.rawValue)])
                return .now(.waitFinal(id, ticks: 60_000 / tickMilliseconds, client: token))
            }
        case let .respond(token, response):
            guard let submitted = waiting.removeValue(forKey: token) else { break }
            if case .transaction(_?) = response {
                let now = nanoseconds()
                final.withLock { $0 += 1 }
                histogram.withLock { _ = $0.record(UInt64(max(1, (now - submitted) / 1_000))) }
            } else {
                clientTotals.withLock { $0.unanswered += 1 }
            }
        case .respondBlocks, .partnersChanged:
            break
        case let .event(.enteredView(view)):
            views.withLock { $0 = max($0, Int(clamping: view)) }
        case .event:
            break
        case let .stopped(reason):
            failureValue.withLock { $0 = "p\(index) stopped: \(reason)" }
            ticker?.cancel()
        }
        return nil
    }

    /// The client's submissions that keep `outstanding` in flight; a token is the index of
    /// its transaction in the workload.
    private func topUp() -> [NodeInput] {
        guard outstanding > 0, waiting.count < outstanding else { return [] }
        let count = min(outstanding - waiting.count, workload.count - nextTransaction)
        if count <= 0 {
            clientTotals.withLock { $0.exhausted = true }
            return []
        }
        let now = nanoseconds()
        defer { nextTransaction += count }
        return (nextTransaction..<nextTransaction + count).map { index in
            let token = ClientToken(UInt64(index))
            waiting[token] = now
            return .submit(workload[index], client: token)
        }
    }
}
