import Consensus
import CalissonCrypto
import Foundation
import LightClient
import Ledger
import Logging
import NodeCore
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
    /// How long transactions gather before the primary cuts a block that is not full: it
    /// does at the `blockWaitTicks`-th tick with transactions waiting (40–60 ms with the
    /// defaults). A block costs every validator three signed rounds, its writes and an
    /// fsync whatever its size, so waiting a little under moderate load makes fewer, larger
    /// blocks (Docs/BENCHMARKS.md, "Block wait"); a full block is cut at once.
    public var blockWaitMilliseconds: UInt64 = NodeConfiguration.blockWaitMillisecondsDefault
    public static let blockWaitMillisecondsDefault: UInt64 = 60
    /// The most transactions a block the primary cuts carries (and at most 4 MiB of them,
    /// `NodeCoreSettings.blockBytesMax`). Larger blocks spread each block's fixed cost
    /// (three signed rounds, a commit, an fsync) over more transactions when clients keep
    /// the mempool full (Docs/BENCHMARKS.md, "Larger blocks": a sixth less CPU per
    /// transaction at 1,000 than at 400 under a full mempool), and take longer to execute.
    public var blockCommandsMax = NodeConfiguration.blockCommandsMaxDefault
    public static let blockCommandsMaxDefault = 1_000
    /// `blockWaitMilliseconds` in ticks, rounded up, at least one.
    public var blockWaitTicks: UInt64 { max(1, Self.ticks(blockWaitMilliseconds, tick: tickMilliseconds)) }
    /// How long the primary waits with no transaction to order before it completes the
    /// checkpoint interval with empty blocks: the state after the last transactions is then
    /// certified, so light clients and gateways (which read certified state only) see it
    /// within about this long of an idle spell, at the cost of at most `checkpointInterval`
    /// − 1 empty blocks after each (Docs/NODE.md, "Checkpoints when idle"). 0: never.
    public var checkpointFillMilliseconds: UInt64 = NodeConfiguration.checkpointFillMillisecondsDefault
    public static let checkpointFillMillisecondsDefault: UInt64 = 500
    /// `checkpointFillMilliseconds` in ticks, rounded up (0 stays 0: never).
    public var checkpointFillTicks: UInt64 { Self.ticks(checkpointFillMilliseconds, tick: tickMilliseconds) }

    static func ticks(_ milliseconds: UInt64, tick: UInt64) -> UInt64 {
        let tick = max(1, tick)
        return milliseconds / tick + (milliseconds % tick == 0 ? 0 : 1)
    }
    public var replica: @Sendable (ReplicaConfiguration) -> ReplicaConfiguration = { $0 }
    /// Transactions waiting in the mempool; beyond, submissions are refused.
    public var mempoolCountMax = 100_000
    /// The bytes of decided proposals' records a block's contents answer carries, the others
    /// named by number (`StoreAnswers.decidedBytesMax`; not in the configuration file: tests
    /// set it low to see the others asked for).
    public var blockContentsDecidedBytesMax = StoreAnswers.decidedBytesMax
    /// Local HTTP port for `/metrics` (Prometheus text) and `/health`; nil: none.
    public var metricsPort: UInt16?
    /// The database's memory: mapped window and page cache (Docs/STORAGE.md).
    public var storage = NodeStore.Tuning.default
    /// The state is written at every this many checkpoints (its root is computed and
    /// certified at every one; those in between are served from memory): a page or a value
    /// changed in several of them is written once, at the cost of holding their changes in
    /// memory and executing up to this many checkpoint intervals of blocks again at a
    /// restart (Docs/STORAGE.md, "The state every few checkpoints").
    public var stateWriteCheckpoints = NodeConfiguration.stateWriteCheckpointsDefault
    public static let stateWriteCheckpointsDefault: UInt64 = 4
    public static let stateWriteCheckpointsMax: UInt64 = 64
    /// Retention: the node keeps the bodies of this many latest blocks and drops older
    /// ones at its checkpoints (headers, certificates, results and the state stay); nil
    /// keeps every body (Docs/OPERATIONS.md, "Retention").
    public var retainBlocks: UInt64?
    /// The least `retainBlocks` a configuration file or `calisson-node prune` accepts: a
    /// peer that was down catches up by fetching the blocks it missed from the others.
    public static let retainBlocksMin: UInt64 = 1_000
    /// The newest ledger rules this node executes: `LedgerRules.newest`; lower only in
    /// tests (`calisson-node run --rules-newest`, test builds), to play a binary built
    /// before an upgrade.
    public var rulesNewest = LedgerRules.newest
    #if CALISSON_FAULTS
    /// Test builds only: the WAL's sync (`fdatasync`'s contract), to make it fail or hang.
    public var walSync: (@Sendable (Int32) -> Int32)?
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

/// A validator node: the shell around a `NodeCore` (the replica, the ledger, the mempool,
/// admission and the clients waiting). The shell owns the I/O: the libuv event loop and
/// the transport, the SQLite store the core writes through (`StoredState`), the
/// verifier's threads, the metrics endpoint. It feeds the core its inputs on the loop
/// thread and carries out the effects the core answers (NodeRuntime+Effects.swift).
/// Public methods hand their work to the loop.
public final class NodeRuntime: @unchecked Sendable {
    public let configuration: NodeConfiguration
    let loop = EventLoop(name: "calisson-node")
    let logger: Logger
    public let transport: Transport
    let store: NodeStore
    var answers: StoreAnswers { StoreAnswers(store: store) }
    /// The node's logic (loop thread only).
    var core: Core
    /// The effects of this turn's drives, carried out once the turn's writes are
    /// committed (loop thread, `endTurn`).
    var held: [NodeEffect] = []
    /// Write batches committed (each synced in its commit, or by the syncer: one sync may cover several).
    var batchesCommitted = 0
    /// Whether the turns' commits are synced by `syncer` rather than in the commit: from
    /// `start` (loop thread; NodeRuntime+Effects.swift, "The sync off the loop").
    var syncsOffLoop = false
    /// Syncs the WAL after the commits of `syncsOffLoop`; reports to the loop (`synced`).
    lazy var syncer = WALSyncer(databaseFile: configuration.databaseFile, sync: Self.walSync(configuration)) { [weak self] through, failure in
        guard let self else { return }
        _ = loop.executeWaiting { self.synced(through: through, failure) }
    }
    /// How late the consensus clock's ticks come (loop thread): a tick late by L means the
    /// loop was busy for about L without answering anything (a block executed, the state
    /// written, a sync before it moved off the loop); `/metrics`' `loop_lag_seconds`.
    var loopLag = LagHistogram()
    var lastTick: ContinuousClock.Instant?
    /// How long the loop waits for a turn's sync before it goes on without it (the turn's
    /// effects then leave when the syncer reports): a local SSD's sync mostly takes 1–2 ms,
    /// its tail tens of milliseconds (Docs/BENCHMARKS.md, "The sync off the loop").
    static let syncWait = Duration.milliseconds(3)
    /// Commits made without a sync, and the highest the syncer reported (loop thread).
    var commitsMade: UInt64 = 0
    var commitsSynced: UInt64 = 0
    /// Effects waiting for the sync of the commit numbered beside them, in order, with the
    /// block height stored once that commit is (loop thread).
    var unsynced: [(commit: UInt64, height: UInt64, effects: [NodeEffect])] = []
    /// The highest block whose commit is synced (loop thread). Blocks above it are not shown
    /// to clients: a block's commit certificate may carry this node's own vote, which may
    /// leave the node only once recorded on disk (`ClientAnswers.visibleHeight`).
    var syncedHeight: UInt64 = 0
    /// The last answer to a `blocks` wait (loop thread): the clients following the chain
    /// wait for the same next block, read and encoded once for all of them.
    var lastBlocksAnswer: (from: UInt64, count: UInt32, bytes: [UInt8])?
    /// WAL checkpoint failures already logged (loop thread).
    var checkpointFailuresLogged = 0
    /// The peers dialled besides those the ledger gives: the configuration's, or those of
    /// `setBootstrapPeers` (loop thread).
    lazy var bootstrapPeers: [PeerAddress] = configuration.transport.peers
    /// Pages and values the client port may still serve to nodes joining from a snapshot
    /// (loop thread): refilled each tick up to `snapshotItemsPerSecond`, so that a sync
    /// takes at most about a tenth of the loop (an item is a few microseconds of SQLite)
    /// whatever the clients ask; past it, answers carry fewer items and the joiner asks again.
    var snapshotItemsBudget = NodeRuntime.snapshotItemsPerSecond
    public static let snapshotItemsPerSecond = 16_384
    /// Clients the core may answer, by token (loop thread).
    var clients: [ClientToken: Client] = [:]
    var nextClient: UInt64 = 0
    /// The waits each client connection has in the core, and the connection of each
    /// (loop thread): dropped when it closes (`clientClosed`).
    var waitsByLink: [ClientLink: Set<ClientToken>] = [:]
    var linkOfWait: [ClientToken: ClientLink] = [:]
    /// Clients waiting for an answer, at most (the core bounds its waiters the same way).
    public static let waitersMax = 100_000
    #if CALISSON_FAULTS
    /// Test builds only: rewrites what the node sends (Byzantine.swift).
    var byzantine: ByzantineShell?
    #endif
    let verifyCache = VerifyCache(capacity: 1 << 17)
    var ticker: RepeatingTask?
    /// The timer of the state's writes in slices (`writeStateSlice`).
    var stateSlicer: RepeatingTask?
    var metrics: HTTPEndpoint?
    /// Signature verification runs here, off the loop, in batches over all cores.
    let verifier = DispatchQueue(label: "calisson.verifier")
    lazy var batchVerifier = BatchVerifier(cache: verifyCache)
    let verificationQueue = Mutex<[VerificationItem]>([])
    /// Items waiting for the verifier; beyond, consensus messages are dropped and
    /// submissions refused (counted).
    public static let verificationPendingMax = 20_000
    var droppedForVerification = 0
    /// Where a set of checks is verified: on the loop or by the verifier (loop thread).
    var verificationPlace = VerificationPlace()
    /// Sets of checks verified on the loop (`verifyOnLoop`).
    var checkedOnLoop = 0
    /// Whether building the filter of the state's keys failed once (logged once).
    var keyFilterFailed = false
    /// When the runtime was made, for the uptime a status reports.
    let started = ContinuousClock.now
    let heightValue = Mutex<UInt64>(0)
    let rootValue = Mutex<SHA256Digest>(.zero)
    let stoppedValue = Mutex<String?>(nil)
    let upgradeValue = Mutex<ScheduledUpgrade?>(nil)

    public init(configuration: NodeConfiguration, logger: Logger = Logger(label: "calisson.node")) throws {
        self.configuration = configuration
        self.logger = logger
        let genesis = configuration.genesis
        // A schema is made in a file that is not there only (a test's, a bench's: `run`
        // refuses a missing one first). A file that is there and holds none (cut to zero
        // bytes) is refused: taken as new, it would have forgotten the votes it signed.
        let isNew = !FileManager.default.fileExists(atPath: configuration.databaseFile)
        store = try NodeStore(file: configuration.databaseFile, create: isNew, tuning: configuration.storage)
        if try store.hasLegacyTree() {
            let pages = try StoredState.convertLegacyTree(store)
            logger.notice("state tree converted to pages (storage schema 5)", metadata: ["pages": "\(pages)"])
        }
        let genesisToRecord = try store.isInitialized ? try Self.checkGenesis(genesis, of: store) : nil
        let replicaConfiguration = try Self.replicaConfiguration(configuration)
        var schedule = replicaConfiguration.genesisSchedule
        if let bytes = try store.extra(Core.scheduleExtra) {
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
        }
        try Self.verifyLastBlocks(store, schedule: schedule, chainId: genesis.chainId)
        if let digest = genesisToRecord {  // only once every check above has passed
            try store.setExtra(Self.genesisExtra, digest.bytes)
            logger.notice("genesis digest recorded in the database", metadata: ["genesis": "\(digest.hex)"])
        }
        var settings = NodeCoreSettings()
        settings.mempoolCountMax = configuration.mempoolCountMax
        settings.waitersMax = Self.waitersMax
        settings.rulesNewest = configuration.rulesNewest
        let cache = verifyCache
        // The state's root computed at the checkpoint heights and the state written at every
        // few of them, each validator at its own (its place in the genesis' list), so that the
        // cluster's largest writes fall on different blocks (Docs/STORAGE.md); the blocks above
        // the stored state's height are executed again as the core starts. The tree updated at every block smaller than
        // `treeEveryBlockBelow` too.
        let state = StoredState(
            store: store, stateInterval: replicaConfiguration.checkpointInterval, writeEvery: configuration.stateWriteCheckpoints,
            writeOffset: UInt64(clamping: genesis.validators.firstIndex { $0.rawValue == configuration.transport.selfID } ?? 0),
            treeEveryBlockBelow: Self.treeEveryBlockBelow)
        state.retainBlocks = configuration.retainBlocks
        // Read strictly: a failed read taken for "no block above the state" would skip the
        // blocks to execute again (and a height read as 0 trapped here).
        let heights = try store.heights()
        let replaying = heights.height >= heights.stateHeight ? heights.height - heights.stateHeight : 0
        core = try Core(
            storage: state, genesis: genesis, replica: replicaConfiguration, signer: NodeSigner(key: configuration.consensusKey),
            peers: configuration.transport.peers.map(\.id), settings: settings,
            verifySignature: { check in cache.contains(check) || check.verify() })
        if replaying > 0 {
            logger.notice("blocks above the stored state executed again", metadata: ["blocks": "\(replaying)", "height": "\(heights.height)"])
        }
        // Voted rules newer than this binary's apply from the next block: say so and stay down.
        if let missing = core.ledger.upgradeMissing(newest: configuration.rulesNewest) {
            throw NodeError.upgradeNeeded(NodeCoreError.upgradeMessage(missing, newest: configuration.rulesNewest))
        }
        for warning in genesis.warnings { logger.warning("\(warning)") }
        for problem in Self.keyProblems(
            core.ledger, partner: configuration.transport.selfID, nodeKey: configuration.consensusKey.publicKey,
            tlsKeyHash: configuration.transport.identity.certificate.publicKeyHash)
        {
            logger.warning("\(problem)", metadata: ["partner": "\(configuration.transport.selfID)"])
        }
        var transportConfiguration = configuration.transport
        transportConfiguration.registry = Self.registry(core.ledger)
        transportConfiguration.peers = Self.peers(core.ledger, bootstrap: configuration.transport.peers, selfID: configuration.transport.selfID)
        core.peers = transportConfiguration.peers.map(\.id)
        transportConfiguration.about = PeerVersion(software: Release.version, rules: configuration.rulesNewest)
        transport = try Transport(configuration: transportConfiguration, loop: loop)
        heightValue.withLock { $0 = core.ledger.height }
        rootValue.withLock { $0 = core.ledger.stateRoot }
        syncedHeight = core.ledger.height
        #if CALISSON_FAULTS
        if let mode = configuration.byzantine {
            byzantine = ByzantineShell(
                mode: mode, signer: NodeSigner(key: configuration.consensusKey), chainId: genesis.chainId,
                seed: configuration.byzantineSeed)
            logger.warning("test build: this node is Byzantine", metadata: ["mode": "\(mode)", "seed": "\(configuration.byzantineSeed)"])
        }
        #endif
    }

    /// What keeps this node's keys from serving its partner, as the ledger has the partner
    /// now: a node key that is not the validator's (the node follows without voting) and a
    /// TLS certificate whose key is not the registered one (every peer refuses its links).
    /// Warned at start, not refused: a key rotation voted for later makes them right.
    static func keyProblems(_ ledger: Ledger<StoredState>, partner raw: String, nodeKey: Ed25519PublicKey, tlsKeyHash: SHA256Digest) -> [String] {
        guard let id = Identifier(raw), let partner = ledger.partner(id) else {
            return ["partner \(raw) is not in the ledger: this node follows the chain without voting, and peers refuse its links"]
        }
        var problems: [String] = []
        if ledger.meta.validators.contains(id), partner.nodeKey != nodeKey {
            problems.append("the node key is not validator \(raw)'s in the ledger (\(partner.nodeKey?.bytes.hex ?? "none")): this node follows the chain "
                + "without voting (configure the key the ledger names, or vote the rotation to this one, \(nodeKey.bytes.hex))")
        }
        if let registered = partner.tlsKeyHash, registered != tlsKeyHash {
            problems.append("the TLS certificate's key hash \(tlsKeyHash.hex) is not \(raw)'s in the ledger (\(registered.hex)): every peer refuses this node's links")
        } else if partner.tlsKeyHash == nil {
            problems.append("\(raw) has no TLS key hash in the ledger: no peer can check this node's certificate, and none links with it")
        }
        return problems
    }

    /// The WAL's sync: `fdatasync`, or in test builds the configuration's.
    static func walSync(_ configuration: NodeConfiguration) -> @Sendable (Int32) -> Int32 {
        #if CALISSON_FAULTS
        if let sync = configuration.walSync { return sync }
        #endif
        return { fdatasync($0) }
    }

    /// Where the database records the digest of the genesis it was created with.
    static var genesisExtra: String { Core.genesisExtra }

    /// The consensus settings of a node with this configuration (the genesis set, the tick
    /// the blocks wait, the tests' changes).
    public static func replicaConfiguration(_ configuration: NodeConfiguration) throws -> ReplicaConfiguration {
        let genesis = configuration.genesis
        guard let genesisSet = ValidatorSet(genesis.validatorKeys) else { throw NodeError.configuration("genesis validators have no node keys") }
        var replicaConfiguration = ReplicaConfiguration(chainId: genesis.chainId, validators: genesisSet)
        replicaConfiguration.batchTicks = configuration.blockWaitTicks
        replicaConfiguration.batchCommandsMax = configuration.blockCommandsMax
        replicaConfiguration.checkpointFillTicks = configuration.checkpointFillTicks
        return configuration.replica(replicaConfiguration)
    }

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
        for height in max(store.firstBlock, top > startupCheckedBlocks ? top - startupCheckedBlocks + 1 : 1)...top {
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
        transport.onMessage = { [weak self] peer, _, payload in
            #if CALISSON_FAULTS
            if self?.core.validatorsByPartner[peer] != nil { self?.byzantine?.received(payload) }
            #endif
            self?.run(.peerMessage(payload, from: peer))
        }
        transport.onGossip = { [weak self] _, transaction in self?.run(.submit(transaction, client: nil)) }
        transport.onEvent = { [weak self] event in
            // A peer that (re)connects may have missed our gossip: the core sends it part of
            // the mempool (a transaction the peer still lacks reaches it inside its block).
            guard case let .peerConnected(peer, _) = event else { return }
            self?.run(.peerConnected(peer))
        }
        transport.onClientRequest = { [weak self] request, link, respond in self?.answer(request, link: link, respond) }
        transport.onClientClosed = { [weak self] link in self?.clientClosed(link) }
        transport.onTurnEnd = { [weak self] in self?.endTurn() }
        syncer.start()
        try transport.start()
        let failure = Mutex<String?>(nil)
        let ready = DispatchSemaphore(value: 0)
        do {
            try loop.execute { [self] in
                syncsOffLoop = true
                ticker = RepeatingTask(loop: loop, every: configuration.tickMilliseconds) { [weak self] in self?.tick() }
                // Half a period after each tick: a turn of the loop of its own.
                let tick = configuration.tickMilliseconds
                let (first, overflow) = tick.addingReportingOverflow(tick / 2)
                stateSlicer = RepeatingTask(loop: loop, every: tick, first: overflow ? tick : first) { [weak self] in self?.writeStateSlice() }
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
        // `height`, not the store: the loop runs now, and a SQLite connection is one thread's.
        logger.info("node started", metadata: ["partner": "\(configuration.transport.selfID)", "height": "\(height)"])
    }

    public func stop() {
        transport.stop()
        try? loop.execute { [self] in  // refused: the loop is already stopping, and closes them
            ticker?.cancel()
            stateSlicer?.cancel()
            metrics?.stop()
        }
        loop.shutdown()
        syncer.stop()  // its reports are refused by the stopped loop; SQLite's close syncs what is left
        store.close()  // the loop has ended: nothing writes any more; the database's lock is released
    }

    /// Blocks with fewer transactions than this update the state tree; larger ones leave
    /// it to the next checkpoint height (`StoredState.updatesTree`, Docs/STORAGE.md).
    public static let treeEveryBlockBelow = 256

    /// The last executed height and state root (any thread).
    public var height: UInt64 { heightValue.withLock { $0 } }
    public var stateRoot: SHA256Digest { rootValue.withLock { $0 } }
    /// Why the node stopped itself (a storage failure, a diverged state), if it did.
    public var failure: String? { stoppedValue.withLock { $0 } }
    /// The upgrade the node stopped for (rules newer than `Configuration.rulesNewest`), if
    /// that is why it stopped.
    public var missingUpgrade: ScheduledUpgrade? { upgradeValue.withLock { $0 } }

    /// Submits a signed transaction: checked, kept in the mempool, gossiped. Nil when
    /// admitted, else why not.
    public func submit(_ transaction: [UInt8]) -> AdmissionError? {
        precondition(!loop.isOnLoop, "submit waits for the loop: called on it, it would wait for itself")
        let result = Mutex<AdmissionError?>(nil)
        let done = DispatchSemaphore(value: 0)
        do {
            try loop.execute { [self] in
                submit(transaction) { outcome in
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

    /// Replaces the peers the node dials besides those the ledger gives (its
    /// configuration's bootstrap peers), for nodes whose ports are known only once started
    /// (the tests' in-process clusters): they are kept when governance changes the partners,
    /// as the configuration's are. Hands the change to the loop.
    public func setBootstrapPeers(_ peers: [PeerAddress]) {
        _ = loop.executeWaiting { [self] in
            bootstrapPeers = peers
            transport.update(
                peers: Self.peers(core.ledger, bootstrap: peers, selfID: configuration.transport.selfID), registry: transport.configuration.registry,
                revokedSerials: transport.configuration.revokedSerials)
        }
    }

    /// Reads the ledger on the loop thread (queries, tests).
    public func read<T: Sendable>(_ body: @escaping @Sendable (Ledger<StoredState>) -> T) -> T? {
        precondition(!loop.isOnLoop, "read waits for the loop: called on it, it would wait for itself")
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        guard (try? loop.execute({ [self] in
            let value = body(core.ledger)
            result.withLock { $0 = value }
            done.signal()
        })) != nil else { return nil }
        done.wait()
        return result.withLock { $0 }
    }

    /// The size of the consensus epoch's validator set (for tests: nil once stopped).
    func replicaValidatorCount() -> Int? {
        precondition(!loop.isOnLoop, "replicaValidatorCount waits for the loop: called on it, it would wait for itself")
        let result = Mutex<Int?>(nil)
        let done = DispatchSemaphore(value: 0)
        guard (try? loop.execute({ [self] in
            result.withLock { $0 = core.replica.epoch.validators.count }
            done.signal()
        })) != nil else { return nil }
        done.wait()
        return result.withLock { $0 }
    }

    /// The port /metrics and /health answer on (0 until started, or without one).
    public var metricsPort: UInt16 { metrics?.port ?? 0 }
}

/// Counts of durations by upper bound, a Prometheus histogram's (cumulative when printed).
struct LagHistogram {
    static let bounds: [Double] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]
    /// Per bound, the durations at most it and above the bound before; the last slot, above every bound.
    private(set) var counts = [Int](repeating: 0, count: LagHistogram.bounds.count + 1)
    private(set) var sum = 0.0
    private(set) var count = 0

    mutating func record(_ seconds: Double) {
        counts[Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count] += 1
        sum += seconds
        count += 1
    }

    /// The exposition lines of `name` (a histogram in seconds).
    func lines(_ name: String, help: String) -> [String] {
        var lines = ["# HELP \(name) \(help)", "# TYPE \(name) histogram"]
        var cumulative = 0
        for (bound, count) in zip(Self.bounds, counts) {
            cumulative += count
            lines.append("\(name)_bucket{le=\"\(String(format: "%g", bound))\"} \(cumulative)")  // 0.005 … 1
        }
        lines += ["\(name)_bucket{le=\"+Inf\"} \(count)", "\(name)_sum \(sum)", "\(name)_count \(count)"]
        return lines
    }
}

/// The node's core, on the SQLite store.
typealias Core = NodeCore<StoredState, NodeSigner>

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
    /// The partners voted ledger rules newer than this binary's, in force from the next block.
    case upgradeNeeded(String)

    public var description: String {
        switch self {
        case let .configuration(reason): return "configuration: \(reason)"
        case let .corrupt(reason): return "corrupt database: \(reason)"
        case let .diverged(reason): return "diverged: \(reason)"
        case let .stopped(reason): return "stopped: \(reason)"
        case let .upgradeNeeded(reason): return reason
        }
    }
}

/// This release of Calisson's node (its hello, `calisson status`, `/metrics`, `--version`).
/// The ledger rules it executes are `LedgerRules.newest`.
public enum Release {
    public static let version = "0.8.1"
}
