import Consensus
import CalissonCrypto
import Foundation
import LightClient
import Ledger
import Logging
import Storage
import Synchronization
import Transport
import Wire

/// Signs consensus messages with the node's Ed25519 key.
public struct NodeSigner: ConsensusSigner {
    let key: Ed25519PrivateKey
    public var id: ValidatorID { key.publicKey }
    public init(key: Ed25519PrivateKey) { self.key = key }
    public func sign(_ digest: SHA256Digest) -> Ed25519Signature { key.signature(for: digest.bytes) }
}

public struct NodeConfiguration: Sendable {
    public var genesis: Genesis
    public var databaseFile: String
    public var consensusKey: Ed25519PrivateKey
    public var transport: TransportConfiguration
    /// The consensus clock: one tick every this many milliseconds.
    public var tickMilliseconds: UInt64 = 20
    public var replica: @Sendable (ReplicaConfiguration) -> ReplicaConfiguration = { $0 }
    /// Transactions waiting in the mempool; beyond, submissions are refused.
    public var mempoolCountMax = 100_000
    /// Local HTTP port for `/metrics` (Prometheus text) and `/health`; nil: none.
    public var metricsPort: UInt16?
    /// The database's memory: mapped window and page cache (Docs/STORAGE.md).
    public var storage = NodeStore.Tuning.default
    #if CALISSON_FAULTS
    /// Test builds only: misbehave towards the other validators (Byzantine.swift).
    public var byzantine: ByzantineMode?
    /// The seed of the Byzantine mode's choices, logged at start so that a run can be replayed.
    public var byzantineSeed: UInt64 = 0
    #endif

    public init(genesis: Genesis, databaseFile: String, consensusKey: Ed25519PrivateKey, transport: TransportConfiguration) {
        self.genesis = genesis
        self.databaseFile = databaseFile
        self.consensusKey = consensusKey
        self.transport = transport
    }
}

/// Why a submitted transaction was not admitted to the mempool.
public enum AdmissionError: Error, Equatable, Sendable {
    case malformed(String)
    case wrongChain
    case expired(expiryHeight: UInt64, height: UInt64)
    case badSignature
    case unknownSigner
    case mempoolFull
    /// The signature checks waiting for the verifier are at their bound
    /// (`verificationPendingMax`): the node is busy, try again shortly.
    case verifierBusy
    /// The node's event loop has `EventLoop.queueCountMax` items waiting: try again shortly.
    case overloaded
    /// The node is shutting down.
    case stopping
    /// Admission gave no answer in this time (the node is overloaded or stopping).
    case noAnswer(milliseconds: Int)
    /// The same transaction is already waiting in the mempool.
    case duplicate
    /// The signer already used this nonce in an applied transaction (the same one, or a
    /// replay with other contents) that has not expired.
    case nonceUsed(UInt64)
}

/// A validator node: the consensus replica, the ledger on the SQLite store, and the
/// transport, driven by one event loop. Everything consensus and ledger touch happens on
/// the loop thread; public methods hand their work to it.
public final class NodeRuntime: @unchecked Sendable {
    public let configuration: NodeConfiguration
    let loop = EventLoop(name: "calisson-node")
    let logger: Logger
    public let transport: Transport
    // Loop-thread state.
    let store: NodeStore
    var answers: StoreAnswers { StoreAnswers(store: store) }
    var ledger: Ledger<StoredState>
    var replica: Replica<NodeSigner>
    var schedule: EpochSchedule
    var mempool: [(id: SHA256Digest, bytes: [UInt8])] = []
    var mempoolIDs: Set<SHA256Digest> = []
    /// Transactions put in a proposal, by the tick they were taken at: not proposed again
    /// until `inFlightTicksMax` ticks pass (the proposal may have died in a view change).
    var inFlight: [SHA256Digest: UInt64] = [:]
    var tickCount: UInt64 = 0
    static let inFlightTicksMax: UInt64 = 200
    /// Every this many ticks, transactions still waiting are flooded again (gossip can
    /// be lost while links come and go; peers that have them drop the copies).
    static let regossipTicks: UInt64 = 100
    /// Mempool entries sent to a peer that (re)connects, at most.
    static let reconnectGossipMax = 4_096
    /// A node that executed nothing for this many ticks asks a peer for blocks above its
    /// height (a restarted node in an idle cluster hears no commits to tell it it is behind).
    static let catchUpTicks: UInt64 = 50
    var lastProgressTick: UInt64 = 0
    /// Clients waiting for a transaction to be final, with the tick they give up at.
    var waiters: [SHA256Digest: [(respond: @Sendable ([UInt8]) -> Void, until: UInt64)]] = [:]
    var waiterCount = 0
    public static let waitersMax = 100_000
    /// Clients following the chain: the height they wait for, their limit, their deadline.
    var blockWaiters: [(from: UInt64, limit: UInt32, respond: @Sendable ([UInt8]) -> Void, until: UInt64)] = []
    var catchUpRound = 0
    #if CALISSON_FAULTS
    var byzantine: ByzantineShell?
    #endif
    var validatorsByPartner: [String: ValidatorID] = [:]
    var partnersByValidator: [ValidatorID: String] = [:]
    let verifyCache = VerifyCache(capacity: 1 << 17)
    var ticker: RepeatingTask?
    var pendingSafety: [SafetyRecord] = []
    var metrics: HTTPEndpoint?
    /// Signature verification runs here, off the loop, in batches over all cores.
    let verifier = DispatchQueue(label: "calisson.verifier")
    lazy var batchVerifier = BatchVerifier(cache: verifyCache)
    let verificationQueue = Mutex<[VerificationItem]>([])
    /// Items waiting for the verifier; beyond, consensus messages are dropped and
    /// submissions refused (counted).
    public static let verificationPendingMax = 20_000
    var droppedForVerification = 0
    /// What peers sent that the node refused (a misbehaving or stale peer shows here).
    var consensusUndecodable = 0
    var consensusBadSignatures = 0
    var consensusRejected = 0
    var equivocations = 0
    /// Counters for /metrics (loop thread).
    var admitted = 0, refused = 0, blocksExecuted = 0, applied = 0, rejected = 0
    /// When the runtime was made, for the uptime a status reports.
    let started = ContinuousClock.now
    private let heightValue = Mutex<UInt64>(0)
    private let rootValue = Mutex<SHA256Digest>(.zero)
    private let stoppedValue = Mutex<String?>(nil)

    public init(configuration: NodeConfiguration, logger: Logger = Logger(label: "calisson.node")) throws {
        self.configuration = configuration
        self.logger = logger
        let genesis = configuration.genesis
        store = try NodeStore(file: configuration.databaseFile, create: true, tuning: configuration.storage)
        if try store.hasLegacyTree() {
            let pages = try StoredState.convertLegacyTree(store)
            logger.notice("state tree converted to pages (storage schema 5)", metadata: ["pages": "\(pages)"])
        }
        let state = StoredState(store: store)
        var genesisToRecord: SHA256Digest?
        if store.isInitialized {
            genesisToRecord = try Self.checkGenesis(genesis, of: store)
            ledger = try Ledger(chainId: genesis.chainId, store: state)
        } else {
            ledger = try Ledger.create(genesis, in: state)
            try state.persistGenesis(extras: [Self.genesisExtra: genesis.digest.bytes])
        }
        let genesisKeys = genesis.validatorKeys
        guard let genesisSet = ValidatorSet(genesisKeys) else { throw NodeError.configuration("genesis validators have no node keys") }
        var replicaConfiguration = ReplicaConfiguration(chainId: genesis.chainId, validators: genesisSet)
        replicaConfiguration = configuration.replica(replicaConfiguration)
        if let bytes = try store.extra("schedule") {
            schedule = try EpochSchedule(wireBytes: bytes)
            // A database written under other consensus settings (another genesis set, window
            // or checkpoint interval) would break the replica's invariants: refuse it here.
            guard schedule.checkpointInterval == replicaConfiguration.checkpointInterval, schedule.window == replicaConfiguration.window,
                schedule.epochs.first?.validators == replicaConfiguration.validators
            else {
                throw NodeError.configuration(
                    "\(configuration.databaseFile) was written under another genesis validator set or consensus settings than this configuration's: "
                        + "start it with the genesis and settings it was created with, or start from an empty database")
            }
        } else {
            schedule = replicaConfiguration.genesisSchedule
        }
        try Self.verifyLastBlocks(store, schedule: schedule, chainId: genesis.chainId)
        if let digest = genesisToRecord {  // only once every check above has passed
            try store.setExtra(Self.genesisExtra, digest.bytes)
            logger.notice("genesis digest recorded in the database", metadata: ["genesis": "\(digest.hex)"])
        }
        var safety = SafetyLog()
        for bytes in try store.safetyRecords() { safety.apply(try SafetyRecord(wireBytes: bytes)) }
        replica = Replica(
            configuration: replicaConfiguration, signer: NodeSigner(key: configuration.consensusKey), safety: safety,
            lastExecuted: store.height, schedule: schedule)
        var transportConfiguration = configuration.transport
        transportConfiguration.registry = Self.registry(ledger)
        transport = try Transport(configuration: transportConfiguration, loop: loop)
        refreshValidatorDirectory()
        heightValue.withLock { $0 = ledger.height }
        rootValue.withLock { $0 = ledger.stateRoot }
        #if CALISSON_FAULTS
        if let mode = configuration.byzantine {
            byzantine = ByzantineShell(
                mode: mode, signer: NodeSigner(key: configuration.consensusKey), chainId: genesis.chainId,
                seed: configuration.byzantineSeed)
            logger.warning("test build: this node is Byzantine", metadata: ["mode": "\(mode)", "seed": "\(configuration.byzantineSeed)"])
        }
        #endif
    }

    /// Where the database records the digest of the genesis it was created with.
    static let genesisExtra = "genesis"

    /// The database must have been created with this genesis. One created before the
    /// digest was recorded returns it, to be recorded once the schedule and the last
    /// blocks' certificates have been checked against this genesis.
    static func checkGenesis(_ genesis: Genesis, of store: NodeStore) throws -> SHA256Digest? {
        let digest = genesis.digest
        guard let recorded = try store.extra(genesisExtra) else { return digest }
        guard recorded == digest.bytes else {
            throw NodeError.configuration(
                "\(store.file) was created with another genesis (digest \(Hex.encode(recorded)), this configuration's is \(digest.hex)): "
                    + "start it with the genesis it was created with, or start from an empty database")
        }
        return nil
    }

    /// Blocks whose certificates are checked at start.
    public static let startupCheckedBlocks: UInt64 = 8

    /// Recovery: the last blocks on disk must be what their commit certificates say, signed
    /// by a quorum of the validators in force at their heights. A database that fails this
    /// was damaged or tampered with; the node refuses to start on it.
    static func verifyLastBlocks(_ store: NodeStore, schedule: EpochSchedule, chainId: String) throws {
        let top = store.height
        guard top > 0 else { return }
        for height in (top > startupCheckedBlocks ? top - startupCheckedBlocks + 1 : 1)...top {
            guard let record = try store.block(at: height) else { throw NodeError.corrupt("\(store.file): block \(height) is missing") }
            let certificate: CommitCertificate
            do { certificate = try CommitCertificate(wireBytes: record.certificate) } catch {
                throw NodeError.corrupt("\(store.file): block \(height)'s certificate does not decode: \(error)")
            }
            let digestCertified = certificate.digest
            guard digestCertified == record.digest else { throw NodeError.corrupt("\(store.file): block \(height)'s certificate is for another block") }
            if let body = record.body {
                guard let block = try? Block(wireBytes: body), block.digest == record.digest else {
                    throw NodeError.corrupt("\(store.file): block \(height)'s body does not match its digest")
                }
                if let problem = schedule.validators(at: height).commitCertificateProblem(CertifiedBlock(block: block, certificate: certificate)) {
                    throw NodeError.corrupt("\(store.file): block \(height): \(problem)")
                }
            }
            let checks = certificate.commits.map { $0.check(chainId: chainId) }
            guard checks.allSatisfy({ $0.verify() }) else { throw NodeError.corrupt("\(store.file): block \(height)'s certificate has a bad signature") }
        }
    }

    /// Starts the transport and the consensus clock.
    public func start() throws {
        transport.onMessage = { [weak self] peer, _, payload in self?.received(payload, from: peer) }
        transport.onGossip = { [weak self] _, transaction in self?.admit(transaction, gossip: false) }
        transport.onEvent = { [weak self] event in
            // A peer that (re)connects may have missed our gossip: send it our mempool.
            // At most `reconnectGossipMax` of it: this runs on the loop, and a mempool of
            // millions would hold it for seconds. A transaction the peer still lacks reaches it
            // in full inside the block that carries it.
            guard case let .peerConnected(peer, _) = event, let self else { return }
            for entry in self.mempool.prefix(Self.reconnectGossipMax) { self.transport.send(entry.bytes, kind: .gossip, to: peer) }
        }
        transport.onClientRequest = { [weak self] request, respond in self?.answer(request, respond) }
        try transport.start()
        let failure = Mutex<String?>(nil)
        let ready = DispatchSemaphore(value: 0)
        do {
            try loop.execute { [self] in
                ticker = RepeatingTask(loop: loop, every: configuration.tickMilliseconds) { [weak self] in self?.tick() }
                if let port = configuration.metricsPort {
                    let endpoint = HTTPEndpoint(loop: loop)
                    do {
                        try endpoint.start(host: "127.0.0.1", port: port) { [weak self] path in
                            self?.http(path) ?? HTTPEndpoint.Response(status: 503, body: "stopping\n")
                        }
                        metrics = endpoint
                    } catch {
                        failure.withLock { $0 = "metrics port \(port): \(error)" }
                    }
                }
                ready.signal()
            }
        } catch {
            throw NodeError.stopped("the event loop refused the start (\(error))")
        }
        ready.wait()
        if let reason = failure.withLock({ $0 }) { throw NodeError.configuration(reason) }
        logger.info("node started", metadata: ["partner": "\(configuration.transport.selfID)", "height": "\(store.height)"])
    }

    public func stop() {
        transport.stop()
        try? loop.execute { [self] in  // refused: the loop is already stopping, and closes them
            ticker?.cancel()
            metrics?.stop()
        }
        loop.shutdown()
    }

    /// The last executed height and state root (any thread).
    public var height: UInt64 { heightValue.withLock { $0 } }
    public var stateRoot: SHA256Digest { rootValue.withLock { $0 } }
    /// Why the node stopped itself (a storage failure, a diverged state), if it did.
    public var failure: String? { stoppedValue.withLock { $0 } }

    /// Submits a signed transaction: checked, kept in the mempool, gossiped. Nil when
    /// admitted, else why not.
    public func submit(_ transaction: [UInt8]) -> AdmissionError? {
        let result = Mutex<AdmissionError?>(nil)
        let done = DispatchSemaphore(value: 0)
        do {
            try loop.execute { [self] in
                admit(transaction, gossip: true) { outcome in
                    result.withLock { $0 = outcome }
                    done.signal()
                }
            }
        } catch {
            return error == .stopping ? .stopping : .overloaded
        }
        // The verifier answers within a batch; a node stopping meanwhile never does.
        guard done.wait(timeout: .now() + .milliseconds(Self.submitWaitMillisecondsMax)) == .success else {
            return .noAnswer(milliseconds: Self.submitWaitMillisecondsMax)
        }
        return result.withLock { $0 }
    }

    /// How long `submit` waits for admission's answer (the signature check, queued).
    public static let submitWaitMillisecondsMax = 60_000

    /// Reads the ledger on the loop thread (queries, tests).
    public func read<T: Sendable>(_ body: @escaping @Sendable (Ledger<StoredState>) -> T) -> T? {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        guard (try? loop.execute({ [self] in
            let value = body(ledger)
            result.withLock { $0 = value }
            done.signal()
        })) != nil else { return nil }
        done.wait()
        return result.withLock { $0 }
    }

    /// The size of the consensus epoch's validator set (for tests: nil once stopped).
    func replicaValidatorCount() -> Int? {
        let result = Mutex<Int?>(nil)
        let done = DispatchSemaphore(value: 0)
        guard (try? loop.execute({ [self] in
            result.withLock { $0 = replica.epoch.validators.count }
            done.signal()
        })) != nil else { return nil }
        done.wait()
        return result.withLock { $0 }
    }

    /// The port /metrics and /health answer on (0 until started, or without one).
    public var metricsPort: UInt16 { metrics?.port ?? 0 }

    // MARK: Loop thread

    /// `/metrics` in the Prometheus text format, `/health` 200 when the node can take part
    /// in consensus (running, and linked to enough validators of the current set that,
    /// with itself if it is one, they make a quorum), 503 otherwise.
    private func http(_ path: String) -> HTTPEndpoint.Response {
        switch path {
        case "/health":
            if let failure = stoppedValue.withLock({ $0 }) { return HTTPEndpoint.Response(status: 503, body: "stopped: \(failure)\n") }
            let (reachable, quorum) = reachableValidators()
            guard reachable >= quorum else {
                return HTTPEndpoint.Response(
                    status: 503, body: "\(reachable) validators of the current set reachable (this node included if it is one); a quorum needs \(quorum)\n")
            }
            return HTTPEndpoint.Response(status: 200, body: "ok: \(reachable) validators of the current set reachable, quorum \(quorum)\n")
        case "/metrics":
            return HTTPEndpoint.Response(status: 200, contentType: "text/plain; version=0.0.4", body: metricsText())
        default:
            return HTTPEndpoint.Response(status: 404, body: "try /metrics or /health\n")
        }
    }

    /// The Prometheus text of every counter and gauge (loop thread).
    private func metricsText() -> String {
        let linked = transport.linkedPeersOnLoop().count
        let counters = transport.counters
        var lines: [String] = []
        func metric(_ name: String, _ kind: String, _ help: String, _ value: some Numeric) {
            lines += ["# HELP calisson_\(name) \(help)", "# TYPE calisson_\(name) \(kind)", "calisson_\(name) \(value)"]
        }
        metric("height", "gauge", "Last executed block height.", ledger.height)
        metric("view", "gauge", "Consensus view within the epoch.", replica.view)
        metric("epoch_first_height", "gauge", "First height of the current consensus epoch.", replica.epoch.firstSeq)
        metric("ledger_epoch", "gauge", "Current ledger (clearing) epoch.", ledger.meta.epoch)
        metric("mempool_transactions", "gauge", "Transactions waiting.", mempool.count)
        metric("linked_validators", "gauge", "Validators with a live link.", linked)
        metric("admitted_total", "counter", "Transactions admitted to the mempool.", admitted)
        metric("admission_refused_total", "counter", "Transactions refused at admission.", refused)
        metric("blocks_executed_total", "counter", "Blocks executed since start.", blocksExecuted)
        metric("transactions_applied_total", "counter", "Transactions applied since start.", applied)
        metric("process_cpu_milliseconds_total", "counter", "CPU time used by the node process (user and system), milliseconds.", ProcessUsage.cpuMilliseconds())
        metric("transactions_rejected_total", "counter", "Transactions rejected by the ledger since start.", rejected)
        metric("verification_dropped_total", "counter", "Messages and submissions dropped with the verifier full.", droppedForVerification)
        metric("consensus_undecodable_total", "counter", "Consensus messages from validators that did not decode.", consensusUndecodable)
        metric("consensus_bad_signatures_total", "counter", "Consensus messages with a signature that does not verify.", consensusBadSignatures)
        metric("consensus_rejected_total", "counter", "Signed consensus messages the protocol rules refused (stale, out of window, conflicting).", consensusRejected)
        metric("equivocations_total", "counter", "Conflicting signed messages from one validator (evidence).", equivocations)
        metric("transport_frames_in_total", "counter", "Frames received.", counters.framesIn)
        metric("transport_frames_out_total", "counter", "Frames sent.", counters.framesOut)
        metric("transport_bytes_in_total", "counter", "Bytes received (TLS records).", counters.bytesIn)
        metric("transport_bytes_out_total", "counter", "Bytes sent (TLS records).", counters.bytesOut)
        metric("transport_refused_total", "counter", "Connections refused (certificates, hellos, frames).", counters.refusedPeers)
        metric("transport_handshake_failures_total", "counter", "TLS handshakes failed.", counters.handshakeFailures)
        metric("transport_oversized_frames_total", "counter", "Frames over the size limit.", counters.oversizedFrames)
        metric("transport_malformed_frames_total", "counter", "Frames that did not decode.", counters.malformedFrames)
        metric("transport_gossip_dropped_total", "counter", "Gossip dropped for a full send queue.", counters.gossipDropped)
        metric("transport_slow_consumers_total", "counter", "Links closed for not reading.", counters.slowConsumersClosed)
        metric("transport_reconnects_total", "counter", "Redials scheduled.", counters.reconnects)
        metric("transport_loop_refused_total", "counter", "Sends from other threads the full event loop refused.", counters.loopRefused)
        metric("client_connections_refused_total", "counter", "Client connections refused at accept (all limits).", counters.clientConnectionsRefused)
        metric("client_connections_per_address_refused_total", "counter", "Client connections refused for the per-address limit.",
               counters.clientConnectionsPerAddressRefused)
        metric("client_idle_closed_total", "counter", "Client connections closed for idling.", counters.clientIdleClosed)
        metric("client_rate_limited_total", "counter", "Client connections closed for sending over the request rate.", counters.clientRateLimited)
        metric("loop_queue_refused_total", "counter", "Work the event loop refused with its queue full.", loop.refusedFull)
        metric("loop_queue_peak", "gauge", "The most work items that waited for the event loop at once.", loop.queueCountPeak)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Validators of the current set this node can count on now: those it is linked to,
    /// and itself if it is one; and the quorum of that set. Links to partners that are not
    /// validators of the set (removed ones, observers) do not count.
    func reachableValidators() -> (reachable: Int, quorum: Int) {
        let set = replica.epoch.validators
        let linked = Set(transport.linkedPeersOnLoop())
        let own = configuration.consensusKey.publicKey
        let reachable = set.validators.count { key in key == own || partnersByValidator[key].map(linked.contains) == true }
        return (reachable, set.quorum)
    }

    /// Answers a client on the loop thread (the store and ledger are read here): what
    /// `ClientAnswers` says, a submission through admission, a wait as a waiter.
    private func answer(_ bytes: [UInt8], _ respond: @escaping @Sendable ([UInt8]) -> Void) {
        let request: ClientRequest
        do { request = try ClientRequest(wireBytes: bytes).bounded } catch { return respond(ClientResponse.error("\(error)").wireBytes) }
        let outcome = ClientAnswers(store: store, ledger: ledger).outcome(of: request) {
            NodeStatus(
                partner: configuration.transport.selfID, height: ledger.height, stateRoot: ledger.stateRoot, view: replica.view,
                epochFirstSeq: replica.epoch.firstSeq, peers: transport.linkedPeersOnLoop(), mempool: UInt64(mempool.count),
                transactionsApplied: UInt64(clamping: applied), cpuMilliseconds: ProcessUsage.cpuMilliseconds(),
                uptimeMilliseconds: UInt64(clamping: started.duration(to: .now).components.seconds) &* 1_000)
        }
        switch outcome {
        case let .answer(response):
            respond(response.wireBytes)
        case let .submit(transaction):
            admit(transaction, gossip: true) { [weak self] refusal in
                if let refusal {
                    self?.refused += 1
                    respond(ClientResponse.refused("\(refusal)").wireBytes)
                } else {
                    respond(ClientResponse.admitted(id: SignedTransaction.idTag.hash(transaction)).wireBytes)
                }
            }
        case let .waitFinal(id, timeout):
            guard waiterCount < Self.waitersMax else { return respond(ClientResponse.error("too many clients waiting").wireBytes) }
            waiters[id, default: []].append((respond, tickCount + max(1, UInt64(timeout) / configuration.tickMilliseconds)))
            waiterCount += 1  // answered at execution or at the deadline
        case let .waitBlocks(from, limit, wait):
            guard waiterCount < Self.waitersMax else { return respond(ClientResponse.error("too many clients waiting").wireBytes) }
            blockWaiters.append((from, limit, respond, tickCount + max(1, UInt64(wait) / configuration.tickMilliseconds)))
            waiterCount += 1  // answered when block `from` is final, or at the deadline
        }
    }

    /// Who may link, with which TLS key: the active partners with a registered TLS key hash,
    /// as the ledger has them now (the genesis ones, then governance's admissions, key
    /// rotations, suspensions and removals).
    static func registry(_ ledger: Ledger<StoredState>) -> [String: SHA256Digest] {
        var registry: [String: SHA256Digest] = [:]
        for id in ledger.partnerIDs {
            guard let partner = ledger.partner(id), partner.status == .active, let hash = partner.tlsKeyHash else { continue }
            registry[id.rawValue] = hash
        }
        return registry
    }

    /// Partner id ↔ node key, from the ledger's partners (validators and others alike).
    private func refreshValidatorDirectory() {
        validatorsByPartner = [:]
        partnersByValidator = [:]
        for id in ledger.partnerIDs {
            guard let key = ledger.partner(id)?.nodeKey else { continue }
            validatorsByPartner[id.rawValue] = key
            partnersByValidator[key] = id.rawValue
        }
    }

    /// Admission, on the loop: the cheap checks here, the signature on the verifier (off
    /// the loop, batched across cores, cache first), then `accept` back on the loop.
    /// `done` runs on the loop with nil (admitted) or the reason.
    private func admit(_ bytes: [UInt8], gossip: Bool, done: @escaping (AdmissionError?) -> Void = { _ in }) {
        guard mempool.count < configuration.mempoolCountMax else { return done(.mempoolFull) }
        guard bytes.count <= SignedTransaction.byteCountMax else { return done(.malformed("over \(SignedTransaction.byteCountMax) bytes")) }
        let signed: SignedTransaction
        do { signed = try SignedTransaction(wireBytes: bytes) } catch { return done(.malformed("\(error)")) }
        let tx = signed.transaction
        guard tx.chainId == ledger.chainId, let digest = tx.signingDigest else { return done(.wrongChain) }
        guard tx.expiryHeight > ledger.height else { return done(.expired(expiryHeight: tx.expiryHeight, height: ledger.height)) }
        let key: Ed25519PublicKey
        switch tx.signer {
        case let .citizen(account): key = account
        case let .partner(id):
            guard let partner = ledger.partner(id) else { return done(.unknownSigner) }
            key = partner.signingKey
        }
        let id = SignedTransaction.idTag.hash(bytes)
        guard !mempoolIDs.contains(id) else { return done(.duplicate) }
        let check = SignatureCheck(publicKey: key, digest: digest, signature: signed.signature)
        let queued = verify([check]) { [weak self] valid in
            guard let self else { return }
            guard valid else { return done(.badSignature) }
            done(self.accept(bytes, id: id, signer: tx.signer, nonce: tx.nonce, gossip: gossip))
        }
        if !queued { done(.verifierBusy) }
    }

    /// Back on the loop after the signature checked out: the checks that depend on state
    /// that may have moved meanwhile, then the mempool and gossip.
    private func accept(_ bytes: [UInt8], id: SHA256Digest, signer: TransactionSigner, nonce: UInt64, gossip: Bool) -> AdmissionError? {
        guard mempool.count < configuration.mempoolCountMax else { return .mempoolFull }
        // Already applied (the same signer and nonce is recorded until the expiry passes).
        guard ledger.store.value(StateKeys.used(signer, nonce: nonce)) == nil else { return .nonceUsed(nonce) }
        guard mempoolIDs.insert(id).inserted else { return .duplicate }
        admitted += 1
        mempool.append((id, bytes))
        if gossip { transport.gossip(bytes) }
        return nil
    }

    // MARK: Verification, off the loop

    /// Hands signature checks to the verifier queue; `then` runs on the loop with whether
    /// all of them hold. False (and `then` never runs) when `verificationPendingMax` items
    /// already wait: the caller refuses or drops (consensus resends).
    private func verify(_ checks: [SignatureCheck], then: @escaping (Bool) -> Void) -> Bool {
        let item = VerificationItem(checks: checks, then: then)
        let schedule = verificationQueue.withLock { queue -> Bool? in
            guard queue.count < Self.verificationPendingMax else { return nil }
            queue.append(item)
            return queue.count == 1
        }
        guard let schedule else {
            droppedForVerification += 1
            return false
        }
        if schedule { verifier.async { [weak self] in self?.drainVerification() } }
        return true
    }

    /// On the verifier queue: every waiting item's checks in one batch (all cores, cache
    /// first), then the results back to the loop in one hand-over.
    private func drainVerification() {
        let items = verificationQueue.withLock { queue in
            let items = queue
            queue = []
            return items
        }
        guard !items.isEmpty else { return }
        let checks = items.flatMap(\.checks)
        var results: [Bool] = []
        for start in stride(from: 0, to: checks.count, by: BatchVerifier.batchCountMax) {
            results += batchVerifier.verify(Array(checks[start..<min(checks.count, start + BatchVerifier.batchCountMax)]))
        }
        var outcomes: [Bool] = []
        var offset = 0
        for item in items {
            outcomes.append(results[offset..<(offset + item.checks.count)].allSatisfy { $0 })
            offset += item.checks.count
        }
        let handOver = VerifiedItems(items: items, outcomes: outcomes)
        // Never lost while the node runs: a full loop queue makes the verifier wait for room
        // (back-pressure: submissions then wait, and past `verificationPendingMax` are refused).
        if !loop.executeWaiting({ for (item, valid) in zip(handOver.items, handOver.outcomes) { item.then(valid) } }) {
            logger.notice("verified work dropped: the node is stopping", metadata: ["items": "\(items.count)"])
        }
    }

    private func tick() {
        tickCount += 1
        #if CALISSON_FAULTS
        if byzantine != nil {
            for (peer, gossip, payload) in byzantine!.extra(to: transport.configuration.peers.map(\.id).sorted()) {
                transport.send(payload, kind: gossip ? .gossip : .consensus, to: peer)
            }
        }
        #endif
        if tickCount % 10 == 0 { expireWaiters() }
        if tickCount % Self.regossipTicks == 0 {
            for entry in mempool.prefix(1_000) { transport.broadcast(entry.bytes, kind: .gossip) }
        }
        if tickCount - lastProgressTick >= Self.catchUpTicks {
            lastProgressTick = tickCount
            let peers = transport.configuration.peers.map(\.id).sorted()
            if !peers.isEmpty {
                let peer = peers[catchUpRound % peers.count]
                catchUpRound += 1
                transport.send(Message.stateRequest(fromSeq: ledger.height + 1).wireBytes, to: peer)
            }
        }
        let waiting = mempool.count - inFlight.values.filter { tickCount - $0 < Self.inFlightTicksMax }.count
        step(.tick(pendingCommands: waiting))
    }

    private func received(_ payload: [UInt8], from peer: String) {
        guard let sender = validatorsByPartner[peer] else { return }
        #if CALISSON_FAULTS
        byzantine?.received(payload)
        #endif
        let message: Message
        do { message = try Message(wireBytes: payload) } catch {
            consensusUndecodable += 1
            logger.warning("undecodable consensus message", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return
        }
        // Every signature the message carries is checked (off the loop, cache first)
        // before the replica sees it.
        let checks = message.signatureChecks(chainId: ledger.chainId)
        guard !checks.isEmpty else { return step(.message(message, from: sender)) }
        _ = verify(checks) { [weak self] valid in
            guard let self else { return }
            guard valid else {
                self.consensusBadSignatures += 1
                self.logger.warning("bad signature in a consensus message", metadata: ["peer": "\(peer)"])
                return
            }
            self.step(.message(message, from: sender))
        }
    }

    private func step(_ input: Input) {
        guard stoppedValue.withLock({ $0 }) == nil else { return }
        var inputs = [input]
        while !inputs.isEmpty {
            let actions = replica.step(inputs.removeFirst())
            do {
                inputs += try perform(actions)
            } catch {
                stopSelf("\(error)")
                return
            }
        }
    }

    /// Performs the replica's actions in order; persists come first (persist before send).
    private func perform(_ actions: [Action]) throws -> [Input] {
        var feedback: [Input] = []
        for action in actions {
            if case let .persist(record) = action {
                pendingSafety.append(record)
                continue
            }
            try flushSafety()
            switch action {
            case .persist:
                break
            case let .send(message, to):
                if let peer = partnersByValidator[to] { send(message, to: peer) }
            case let .broadcast(message):
                broadcast(message)
            case let .requestPayload(seq, commandsMax):
                feedback.append(.payload(seq: seq, commands: takePayload(commandsMax)))
            case let .execute(certified):
                feedback.append(try execute(certified))
            case let .serveState(fromSeq, to, blocksMax):
                guard let peer = partnersByValidator[to] else { break }
                var blocks: [CertifiedBlock] = []
                for height in fromSeq..<fromSeq.saturatingAdding(UInt64(blocksMax)) {
                    guard let record = try store.block(at: height), let body = record.body,
                        let block = try? Block(wireBytes: body), let certificate = try? CommitCertificate(wireBytes: record.certificate)
                    else { break }
                    blocks.append(CertifiedBlock(block: block, certificate: certificate))
                }
                if !blocks.isEmpty { transport.send(Message.stateResponse(blocks).wireBytes, to: peer) }
            case let .evidence(equivocation):
                equivocations += 1
                logger.warning("equivocation evidence", metadata: ["first": "\(equivocation.first)"])
            case let .rejected(reason, from):
                consensusRejected += 1
                logger.debug("consensus message rejected", metadata: ["from": "\(partnersByValidator[from] ?? "?")", "reason": "\(reason)"])
            case let .enteredView(view):
                logger.info("entered view", metadata: ["view": "\(view)"])
            case let .enteredEpoch(epoch):
                logger.info("entered epoch", metadata: ["firstSeq": "\(epoch.firstSeq)", "validators": "\(epoch.validators.count)"])
            case let .stateDiverged(seq, ours, certified):
                throw NodeError.diverged("state root at \(seq) is \(ours.hex), the quorum certified \(certified.hex)")
            }
        }
        try flushSafety()
        return feedback
    }

    private func send(_ message: Message, to peer: String) {
        #if CALISSON_FAULTS
        if byzantine != nil {
            for (peer, payload) in byzantine!.outgoing(message, to: [peer]) { transport.send(payload, to: peer) }
            return
        }
        #endif
        transport.send(message.wireBytes, to: peer)
    }

    private func broadcast(_ message: Message) {
        #if CALISSON_FAULTS
        if byzantine != nil {
            let peers = transport.configuration.peers.map(\.id).sorted()
            for (peer, payload) in byzantine!.outgoing(message, to: peers) { transport.send(payload, to: peer) }
            return
        }
        #endif
        transport.broadcast(message.wireBytes)
    }

    private func flushSafety() throws {
        guard !pendingSafety.isEmpty else { return }
        try store.appendSafety(pendingSafety.map(\.wireBytes))
        var stabilized = false
        for case let .stable(certificate, _) in pendingSafety {
            try store.putCheckpoint(height: certificate.seq, certificate: certificate.wireBytes)
            stabilized = true
        }
        pendingSafety = []
        // A stable checkpoint lets the log drop what is below it: it is replaced by the
        // records of its fold (the replica's, which is what was just persisted), in one
        // transaction. Without it the log grew by a few records per block, for ever, and
        // a restart folded all of them.
        if stabilized, let records = replica.safety.compacted { try store.compactSafety(records.map(\.wireBytes)) }
        try pruneHistory()
    }

    /// The checkpoint served to light clients: the latest certified one this node has
    /// executed. History (retired tree nodes, replaced values) older than it is dropped.
    var prunedThrough: UInt64 = 0
    private func pruneHistory() throws {
        guard let (height, certificate) = try store.checkpoint(atOrBelow: store.height), height > prunedThrough else { return }
        try recordHandover(at: height, certificate: certificate)
        try store.pruneHistory(through: height)
        prunedThrough = height
    }

    /// At each newly served checkpoint (its state still provable): if its validator keys
    /// record a change not handed over yet, keep the record, its proof and the certificate,
    /// so that light clients can follow the change long after (Docs/QUERY.md).
    private func recordHandover(at height: UInt64, certificate bytes: [UInt8]) throws {
        let certificate = try CheckpointCertificate(wireBytes: bytes)
        let key = StateKeys.validatorKeys
        let proof = StateTree.proof(for: key, root: certificate.stateRoot, nodes: ledger.store)
        guard let leaf = proof.terminal, leaf.key == key,
            let value = try store.values(of: key, after: height).first(where: { StateTree.valueHash($0) == leaf.valueHash }),
            let record = try? ValidatorKeys(wireBytes: value)
        else { return }  // a chain from before the record existed
        if lastHandover == nil { lastHandover = try store.lastHandover() }
        guard record.changedAt > lastHandover ?? 0 else { return }
        try store.putHandover(
            changedAt: record.changedAt, height: height,
            record: Handover(height: height, certificate: bytes, value: value, proof: proof).wireBytes)
        lastHandover = record.changedAt
        logger.notice("validator-set change handed over", metadata: ["changedAt": "\(record.changedAt)", "checkpoint": "\(height)"])
    }
    private var lastHandover: UInt64?

    private func takePayload(_ max: Int) -> [[UInt8]] {
        var commands: [[UInt8]] = []
        for entry in mempool where commands.count < max {
            if let taken = inFlight[entry.id], tickCount - taken < Self.inFlightTicksMax { continue }
            inFlight[entry.id] = tickCount
            commands.append(entry.bytes)
        }
        return commands
    }

    /// Executes a final block, persists it with its state, and returns the replica's feedback.
    private func execute(_ certified: CertifiedBlock) throws -> Input {
        let block = certified.block
        let commands = block.commands
        let outcome = try store.reading {
            ledger.execute(commands, verify: { [verifyCache] check in verifyCache.contains(check) || check.verify() })
        }
        let ids = block.commandIDs
        var newSet: ValidatorSet?
        if let keys = outcome.validators, let set = ValidatorSet(keys) {
            newSet = set
            schedule.schedule(set, executedAt: block.seq)
        }
        let record = BlockRecord(
            height: block.seq, digest: block.digest, body: block.wireBytes, certificate: certified.certificate.wireBytes,
            stateRoot: outcome.stateRoot,
            transactions: zip(zip(ids, outcome.results), outcome.accounts).map { pair, accounts in
                TransactionRecord(id: pair.0, result: StoreAnswers.result(pair.1), accounts: accounts.map(\.bytes))
            })
        var extras = ["schedule": schedule.wireBytes]
        if let events = StoreAnswers.eventsExtra(
            closedEpoch: outcome.closedEpoch, decided: outcome.decidedProposals, opened: outcome.openedProposals) {
            extras[StoreAnswers.eventsExtraName(block.seq)] = events
        }
        try ledger.store.persist(record, extras: extras)
        for (position, (id, result)) in zip(ids, outcome.results).enumerated() {
            guard let waiting = waiters.removeValue(forKey: id) else { continue }
            waiterCount -= waiting.count
            let answer = ClientResponse.transaction(StoreAnswers.location(height: block.seq, position: position, result: StoreAnswers.result(result)))
            for waiter in waiting { waiter.respond(answer.wireBytes) }
        }
        answerBlockWaiters(expiredOnly: false)
        try pruneHistory()
        let executed = Set(ids)
        mempool.removeAll { executed.contains($0.id) }
        mempoolIDs.subtract(executed)
        for id in ids { inFlight[id] = nil }
        if outcome.validators != nil || outcome.partnersChanged { refreshValidatorDirectory() }
        if outcome.partnersChanged {
            // Links of partners no longer registered (or with another key now) are closed;
            // a newly admitted partner may link.
            let registry = Self.registry(ledger)
            if registry != transport.configuration.registry {
                transport.update(peers: transport.configuration.peers, registry: registry, revokedSerials: transport.configuration.revokedSerials)
                logger.notice("TLS registry updated from governance", metadata: ["partners": "\(registry.keys.sorted())"])
            }
        }
        lastProgressTick = tickCount
        blocksExecuted += 1
        for result in outcome.results { if result == .applied { applied += 1 } else { rejected += 1 } }
        heightValue.withLock { $0 = block.seq }
        rootValue.withLock { $0 = outcome.stateRoot }
        return .executed(seq: block.seq, stateRoot: outcome.stateRoot, validators: newSet)
    }

    /// Answers the clients following the chain whose next block is now final (or whose
    /// wait is over).
    private func answerBlockWaiters(expiredOnly: Bool) {
        guard !blockWaiters.isEmpty else { return }
        var kept: [(from: UInt64, limit: UInt32, respond: @Sendable ([UInt8]) -> Void, until: UInt64)] = []
        for waiter in blockWaiters {
            let ready = !expiredOnly && waiter.from <= store.height
            guard ready || waiter.until <= tickCount else {
                kept.append(waiter)
                continue
            }
            waiterCount -= 1
            let list = (try? answers.blocks(from: waiter.from, limit: waiter.limit)) ?? []
            waiter.respond(ClientResponse.blocks(list).wireBytes)
        }
        blockWaiters = kept
    }

    private func expireWaiters() {
        answerBlockWaiters(expiredOnly: true)
        for id in Array(waiters.keys) {
            guard let waiting = waiters[id] else { continue }
            let (due, left) = (waiting.filter { $0.until <= tickCount }, waiting.filter { $0.until > tickCount })
            guard !due.isEmpty else { continue }
            waiters[id] = left.isEmpty ? nil : left
            waiterCount -= due.count
            for waiter in due { waiter.respond(ClientResponse.transaction(nil).wireBytes) }
        }
    }

    private func stopSelf(_ reason: String) {
        stoppedValue.withLock { $0 = reason }
        logger.critical("node stopped", metadata: ["reason": "\(reason)"])
        ticker?.cancel()
    }
}

/// Signature checks waiting for the verifier, and what to do on the loop with the result.
final class VerificationItem: @unchecked Sendable {
    let checks: [SignatureCheck]
    /// Runs on the loop thread only.
    let then: (Bool) -> Void
    init(checks: [SignatureCheck], then: @escaping (Bool) -> Void) {
        self.checks = checks
        self.then = then
    }
}

struct VerifiedItems: @unchecked Sendable {
    let items: [VerificationItem]
    let outcomes: [Bool]
}

public enum NodeError: Error, Equatable, Sendable, CustomStringConvertible {
    case configuration(String)
    /// The database fails recovery's checks (named file, what is wrong).
    case corrupt(String)
    case diverged(String)
    case stopped(String)

    public var description: String {
        switch self {
        case let .configuration(reason): return "configuration: \(reason)"
        case let .corrupt(reason): return "corrupt database: \(reason)"
        case let .diverged(reason): return "diverged: \(reason)"
        case let .stopped(reason): return "stopped: \(reason)"
        }
    }
}
