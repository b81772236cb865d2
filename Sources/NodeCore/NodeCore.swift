import Consensus
import CalissonCrypto
import Ledger
import LightClient
import Storage
import Wire

/// A client of the shell waiting for an answer: the core answers through effects naming it.
public struct ClientToken: Hashable, Sendable {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
}

/// What a node core is given.
public enum NodeInput: Sendable {
    /// One tick of the consensus clock.
    case tick
    /// A consensus payload from a linked peer (a partner id).
    case peerMessage([UInt8], from: String)
    /// A peer (re)linked: it may have missed the mempool's gossip.
    case peerConnected(String)
    /// A transaction to admit: from a client (answered by `.admission`) or from gossip (nil).
    case submit([UInt8], client: ClientToken?)
    /// A client waits for transaction `id` to be final, for at most `ticks`.
    case waitFinal(SHA256Digest, ticks: UInt64, client: ClientToken)
    /// A client waits for block `from` to be final, for at most `ticks`.
    case waitBlocks(from: UInt64, limit: UInt32, ticks: UInt64, client: ClientToken)
    /// The outcome of a `.verify` effect.
    case verified(PendingCheck, VerificationOutcome)
    /// These clients' connection closed: their waits are dropped (no answer would reach
    /// them, and they would hold places of `waitersMax` until their deadline).
    case clientsGone(Set<ClientToken>)
}

/// Work waiting for its signatures to be checked, handed back with the outcome.
public enum PendingCheck: Sendable {
    /// A consensus message from `peer`: its `checks` signatures, its payload's `bytes`
    /// (what it holds of the peer's verification share while it waits: `verifying`).
    case consensus(Message, from: ValidatorID, peer: String, checks: Int, bytes: Int)
    case admission(Admission)
    /// Equivocation evidence the replica found: counted and reported once both of its
    /// signatures are checked (one of its votes may have been taken unchecked:
    /// `Replica.takesUnchecked`).
    case evidence(Equivocation)

    /// A transaction past admission's cheap checks.
    public struct Admission: Sendable {
        public let bytes: [UInt8]
        public let id: SHA256Digest
        public let signer: TransactionSigner
        public let nonce: UInt64
        /// Its expiry height: the mempool forgets it once no block may carry it.
        public let expiry: UInt64
        public let client: ClientToken?
    }
}

public enum VerificationOutcome: Sendable {
    case valid
    case invalid
    /// The verifier's queue is full: nothing was checked.
    case busy
}

/// What a node core asks its shell to do, in the order given. Storage is not an effect:
/// the core writes through `NodeStorage` before it returns, so every effect of a drive
/// comes after the writes it depends on (a vote is sent only once recorded).
public enum NodeEffect: Sendable {
    /// A consensus message to one peer (a partner id), or to every linked peer.
    case send(Message, to: String)
    case broadcast(Message)
    /// A raw frame (the Byzantine test modes' extra traffic), consensus or gossip.
    case sendFrame([UInt8], gossip: Bool, to: String)
    /// A transaction to every linked peer (regossip), or flooded once (newly admitted).
    case broadcastGossip([UInt8])
    case gossip([UInt8])
    /// The ids of transactions a final block rejected: a rejection does not use the nonce,
    /// so the same bytes may be sent again (once the citizen has the tokens, say), and
    /// gossip must then carry them again rather than drop them as seen.
    case forgetGossip([Bytes32])
    /// Check these signatures (off the loop), then give back `.verified(pending, outcome)`.
    case verify([SignatureCheck], PendingCheck)
    /// A client's submission: admitted (nil) or refused.
    case admission(ClientToken, AdmissionError?)
    case respond(ClientToken, ClientResponse)
    /// Answer a client with the final blocks from `from` (at most `limit`), read from storage.
    case respondBlocks(ClientToken, from: UInt64, limit: UInt32)
    /// The ledger's partners changed: who may link, and with which key, may have.
    case partnersChanged
    case event(NodeEvent)
    /// The core stopped: a storage failure or a diverged state. It takes no more input.
    case stopped(String)
}

/// What happened, for the shell's logs and counters and the simulator's checks.
public enum NodeEvent: Sendable {
    case undecodable(peer: String, error: String)
    case badSignature(peer: String)
    case rejected(Rejection, from: ValidatorID)
    case evidence(Equivocation)
    case enteredView(UInt64)
    case enteredEpoch(firstSeq: UInt64, validators: Int)
    case executed(height: UInt64, stateRoot: SHA256Digest)
    case handover(changedAt: UInt64, checkpoint: UInt64)
    /// A consensus message dropped with the verifier full.
    case verificationDropped
    /// A consensus message dropped unchecked: its peer's share of the verifier was full.
    case peerVerificationDropped(peer: String, checks: Int, bytes: Int)
}

/// Why a submitted transaction was not admitted to the mempool.
public enum AdmissionError: Error, Equatable, Sendable {
    case malformed(String)
    case wrongChain
    case expired(expiryHeight: UInt64, height: UInt64)
    case badSignature
    case unknownSigner
    case mempoolFull
    /// The mempool is three quarters full and this transaction's signer holds a quarter of
    /// it or more: the others keep the rest (`Mempool.isPastShare`). Try again once its
    /// transactions are in blocks.
    case mempoolShare
    /// The signature checks waiting for the verifier are at their bound: the node is
    /// busy, try again shortly.
    case verifierBusy
    /// The node's event loop has its queue full: try again shortly.
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

/// The settings of a node core that are not the replica's.
public struct NodeCoreSettings: Sendable {
    /// Transactions waiting in the mempool; beyond, submissions are refused.
    public var mempoolCountMax = 100_000
    /// Their bytes, at most (a transaction is at most 16 KiB: the count alone allowed 1.6
    /// GB of them); an honest one is some 200 bytes, so the count binds first for those.
    public var mempoolBytesMax = 128 << 20
    /// A transaction cut into a proposal is not cut again for this many ticks (the
    /// proposal may have died in a view change).
    public var inFlightTicks: UInt64 = 200
    /// Every this many ticks, transactions still waiting are flooded again (at most
    /// `regossipCountMax`): gossip can be lost while links come and go.
    public var regossipTicks: UInt64 = 100
    public var regossipCountMax = 1_000
    /// Mempool entries sent to a peer that (re)links, at most.
    public var reconnectGossipMax = 4_096
    /// A node that executed nothing for this many ticks asks a peer for the blocks above
    /// its height (a restarted node in an idle cluster hears no commit to tell it it is behind).
    public var catchUpTicks: UInt64 = 50
    /// Clients waiting at once, at most; beyond, a wait is answered with an error.
    public var waitersMax = 100_000
    /// The newest ledger rules this node executes (`LedgerRules.newest`; lower only in
    /// tests, to play a binary built before an upgrade): before the first block whose
    /// rules are newer, the core stops (`NodeCoreError.upgradeNeeded`).
    public var rulesNewest = LedgerRules.newest
    /// The commands of a proposed block, in bytes, at most (its first whatever its size):
    /// a proposal stays under the transport's frame limit (`WireLimits.envelopePayloadSizeMax`,
    /// 8 MiB) however large the transactions and the block's command cap.
    public var blockBytesMax = 4 << 20
    /// The blocks of one state-transfer answer, in bytes, at most (its first whatever its
    /// size): 64 blocks of large transactions would pass the frame limit, and a node that
    /// can never be sent the blocks it misses never catches up.
    public var stateResponseBytesMax = 4 << 20
    /// What one peer's consensus messages may hold of the verifier at once: signatures to
    /// check, and the messages' bytes. Past either, its next message is dropped unchecked
    /// (consensus resends): a validator sending large messages full of signatures (a view
    /// change may carry tens of thousands) cannot fill the verifier's queue and the node's
    /// memory, nor crowd out the others' votes.
    public var peerVerificationChecksMax = 65_536
    public var peerVerificationBytesMax = 32 << 20
    /// And its messages: the verifier's queue holds 20,000 at most (`NodeRuntime`), and one
    /// peer's single-signature messages (checkpoint votes for heights that need none, say)
    /// filled it under the checks' share, every other validator's votes then dropped.
    public var peerVerificationMessagesMax = 2_048
    /// A peer whose consensus message carried a bad signature is distrusted: an honest
    /// validator sends only signatures it made or checked, so junk is a fault or an attack,
    /// and checking it costs a core. Each bad message raises the peer's level (at most 16);
    /// its messages are then dropped unchecked for 2^level ticks (at most
    /// `distrustTicksMax`), and after that it holds at most its share halved per level, with
    /// no message past it. A level is forgiven every `distrustForgivenTicks` ticks without one.
    public var distrustTicksMax: UInt64 = 3_000
    public var distrustForgivenTicks: UInt64 = 500

    public init() {}
}

/// A validator's logic as a value: the consensus replica, the ledger over `NodeStorage`,
/// the mempool and admission rules, clients waiting, catch-up. It is given inputs and
/// answers effects; it has no clock, no thread and no I/O of its own besides the storage
/// calls. The node (`NodeRuntime`: libuv, SQLite, the verifier's threads) and the
/// simulator (n cores, simulated network and storage) both drive it with `drive`.
public struct NodeCore<Storage: NodeStorage, Signer: ConsensusSigner> {
    public let settings: NodeCoreSettings
    public let storage: Storage
    public internal(set) var ledger: Ledger<Storage.State>
    public internal(set) var replica: Replica<Signer>
    public internal(set) var schedule: EpochSchedule
    public internal(set) var mempool: Mempool
    /// The partners this node links to, in a fixed order (catch-up asks them in turn); the
    /// shell keeps it up to date.
    public var peers: [String] { didSet { peers.sort() } }
    /// The partners whose links are up now, as the shell sees them before each tick; nil:
    /// it cannot tell (the simulator's network). An idle primary completes a checkpoint
    /// interval only while its links reach a quorum (`Replica.reachesQuorum`).
    public var linkedPeers: [String]?
    /// Verifies a signature while a block executes (the node: its verifier's cache first).
    let verifySignature: (SignatureCheck) -> Bool
    public internal(set) var tickCount: UInt64 = 0
    var lastProgressTick: UInt64 = 0
    var catchUpRound = 0
    /// Clients waiting for a transaction to be final, with the tick they give up at.
    var waiters: [SHA256Digest: [(client: ClientToken, until: UInt64)]] = [:]
    /// Clients following the chain: the height they wait for, their limit, their deadline.
    var blockWaiters: [(from: UInt64, limit: UInt32, client: ClientToken, until: UInt64)] = []
    public internal(set) var waiterCount = 0
    public internal(set) var validatorsByPartner: [String: ValidatorID] = [:]
    public internal(set) var partnersByValidator: [ValidatorID: String] = [:]
    /// Why the core stopped, once it did.
    public internal(set) var failure: String?
    /// The upgrade this core stopped for (its rules are newer than `settings.rulesNewest`).
    public internal(set) var missingUpgrade: ScheduledUpgrade?
    public internal(set) var counters = Counters()
    /// The effects of the drive under way.
    var effects: [NodeEffect] = []
    /// Partners' signing keys as admission reads them, at the ledger height they were read
    /// at (a partner's keys change only by an executed block): one record read and decoded
    /// per partner and block instead of one per transaction.
    var signingKeys: (height: UInt64, keys: [Identifier: Ed25519PublicKey]) = (0, [:])
    /// What each peer's consensus messages hold of the verifier now (checks, bytes): added
    /// when one is handed to it, taken back with its outcome. Keyed by linked partners.
    var verifying: [String: (checks: Int, bytes: Int, messages: Int)] = [:]
    /// Peers whose consensus messages carried bad signatures lately: their level at the
    /// last one, and the tick of it (`NodeCoreSettings.distrustTicksMax`).
    var distrusted: [String: (level: Int, at: UInt64)] = [:]

    public struct Counters: Sendable {
        public var admitted = 0, refused = 0, blocksExecuted = 0, applied = 0, rejected = 0
        public var undecodable = 0, badSignatures = 0, consensusRejected = 0, equivocations = 0, verificationDropped = 0
        /// Consensus messages dropped unchecked: their peer's share of the verifier was full
        /// (`NodeCoreSettings.peerVerificationChecksMax`, `peerVerificationBytesMax`).
        public var peerVerificationDropped = 0
        /// Consensus messages dropped unchecked: their peer is distrusted for a bad signature
        /// (`NodeCoreSettings.distrustTicksMax`).
        public var distrustedDropped = 0
        /// Votes dropped unchecked: the replica no longer needed them (`Replica.takesUnchecked`).
        public var votesUnchecked = 0
        /// Whether this validator's commit vote is in the certificates of the latest 64
        /// blocks executed, a bit per block (the lowest the latest): a certificate holds the
        /// first quorum of votes, so a healthy validator is in most, not all.
        public var recentCertificatesSignedBits: UInt64 = 0
        public var recentCertificates = 0
        public var recentCertificatesSigned: Int { (recentCertificatesSignedBits & (recentCertificates >= 64 ? .max : (1 << recentCertificates) - 1)).nonzeroBitCount }

        mutating func certificate(signed: Bool) {
            recentCertificatesSignedBits = recentCertificatesSignedBits << 1 | (signed ? 1 : 0)
            recentCertificates = min(64, recentCertificates + 1)
        }
    }

    /// A core over `storage`: a new storage gets the genesis; one already written is
    /// resumed (its ledger, the validator-set schedule and the safety log it holds). The
    /// shell checks first that the storage belongs to this genesis and configuration.
    public init(
        storage: Storage, genesis: Genesis, replica configuration: ReplicaConfiguration, signer: Signer, peers: [String],
        settings: NodeCoreSettings = NodeCoreSettings(), verifySignature: @escaping (SignatureCheck) -> Bool
    ) throws {
        precondition(settings.regossipTicks > 0 && settings.catchUpTicks > 0, "the core's periods are at least one tick (code, not input)")
        self.storage = storage
        self.settings = settings
        self.peers = peers.sorted()
        self.verifySignature = verifySignature
        if try storage.isInitialized {
            var resumed = try Ledger(chainId: genesis.chainId, store: storage.state)
            try Self.replay(storage, &resumed, settings: settings, verifySignature: verifySignature)
            ledger = resumed
        } else {
            ledger = try Ledger.create(genesis, in: storage.state)
            // The schedule too, so that a database's consensus settings are checked at every
            // start (it is written again only by a block that changes the validators).
            try storage.persistGenesis(extras: [Self.genesisExtra: genesis.digest.bytes, Self.scheduleExtra: configuration.genesisSchedule.wireBytes])
        }
        schedule = try storage.extra(Self.scheduleExtra).map { try EpochSchedule(wireBytes: $0) } ?? configuration.genesisSchedule
        var safety = SafetyLog()
        for record in try storage.safetyRecords() { safety.apply(record) }
        replica = Replica(configuration: configuration, signer: signer, safety: safety, lastExecuted: try storage.heights().top, schedule: schedule)
        mempool = Mempool(countMax: settings.mempoolCountMax, bytesMax: settings.mempoolBytesMax, inFlightTicks: settings.inFlightTicks)
        refreshDirectory()
    }

    /// Executes again the stored blocks above the state's height (a storage that writes
    /// the state only at some heights), each checked against the root it recorded.
    static func replay(
        _ storage: Storage, _ ledger: inout Ledger<Storage.State>, settings: NodeCoreSettings, verifySignature: (SignatureCheck) -> Bool
    ) throws {
        // Read strictly: a failed read taken for a height ended the replay early, and the
        // next blocks were executed on a stale state.
        var heights = try storage.heights()
        while heights.state < heights.top {
            let height = heights.state + 1
            guard let certified = try storage.certifiedBlock(at: height) else {
                throw NodeCoreError.replay("block \(height) is not stored whole (the state is at \(height - 1), the last block at \(heights.top))")
            }
            // A body damaged and still decodable is not executed: its certificate names it.
            guard certified.block.seq == height, certified.certificate.digest == certified.block.digest else {
                throw NodeCoreError.replay("block \(height)'s stored body is not the block its commit certificate names (damaged)")
            }
            if let missing = ledger.upgradeMissing(newest: settings.rulesNewest) {
                throw NodeCoreError.upgradeNeeded(missing, newest: settings.rulesNewest)
            }
            let commands = certified.block.commands
            _ = try storage.reading { ledger.execute(commands, verify: verifySignature) }
            try storage.replayed(height)
            heights = try storage.heights()
        }
    }

    /// Where the storage keeps the digest of the genesis it was created with, and the
    /// validator-set schedule.
    public static var genesisExtra: String { "genesis" }
    public static var scheduleExtra: String { "schedule" }

    /// Handles `input` and everything it leads to; returns the effects for the shell to
    /// carry out, in order. A stopped core returns none.
    public mutating func drive(_ input: NodeInput) -> [NodeEffect] {
        guard failure == nil else { return [] }
        effects = []
        do {
            try handle(input)
        } catch {
            failure = "\(error)"
            if case let .upgradeNeeded(upgrade, _) = error as? NodeCoreError { missingUpgrade = upgrade }
            effects.append(.stopped("\(error)"))
        }
        let out = effects
        effects = []
        return out
    }

    /// The shell could not make the core's writes durable (its commit failed): the core
    /// stops as if the storage had failed inside a drive. Returns the `.stopped` effect.
    public mutating func stop(_ reason: String) -> [NodeEffect] {
        guard failure == nil else { return [] }
        failure = reason
        return [.stopped(reason)]
    }

    mutating func handle(_ input: NodeInput) throws {
        switch input {
        case .tick: try tick()
        case let .peerMessage(payload, peer): try received(payload, from: peer)
        case let .peerConnected(peer):
            for entry in mempool.entries.prefix(settings.reconnectGossipMax) { effects.append(.sendFrame(entry.bytes, gossip: true, to: peer)) }
            if let validator = validatorsByPartner[peer] { try step(.linked(validator)) }
        case let .submit(bytes, client): admit(bytes, client: client)
        case let .waitFinal(id, ticks, client):
            guard waiterCount < settings.waitersMax else { return effects.append(.respond(client, .error("too many clients waiting"))) }
            waiters[id, default: []].append((client, tickCount.saturatingAdding(max(1, ticks))))
            waiterCount += 1
        case let .waitBlocks(from, limit, ticks, client):
            if from <= storage.height { return effects.append(.respondBlocks(client, from: from, limit: limit)) }
            guard waiterCount < settings.waitersMax else { return effects.append(.respond(client, .error("too many clients waiting"))) }
            blockWaiters.append((from, limit, client, tickCount.saturatingAdding(max(1, ticks))))
            waiterCount += 1
        case let .clientsGone(tokens):
            dropWaiters(tokens)
        case let .verified(.consensus(message, sender, peer, checks, bytes), outcome):
            if let held = verifying[peer] {
                let left = (checks: held.checks - checks, bytes: held.bytes - bytes, messages: held.messages - 1)
                verifying[peer] = left.checks <= 0 && left.bytes <= 0 && left.messages <= 0 ? nil : left
            }
            switch outcome {
            case .valid: try step(.message(message, from: sender))
            case .invalid:
                counters.badSignatures += 1
                distrusted[peer] = (min(distrust(of: peer) + 1, 16), tickCount)
                effects.append(.event(.badSignature(peer: peer)))
            case .busy:
                counters.verificationDropped += 1
                effects.append(.event(.verificationDropped))
            }
        case let .verified(.evidence(equivocation), outcome):
            switch outcome {
            case .valid:
                counters.equivocations += 1
                effects.append(.event(.evidence(equivocation)))
            case .invalid:
                // A vote taken unchecked whose signature is bad: its sender (the signer, on
                // its own link) is named, as for any bad signature.
                counters.badSignatures += 1
                if case let .vote(vote) = equivocation.first {
                    effects.append(.event(.badSignature(peer: partnersByValidator[vote.signer] ?? "\(vote.signer)")))
                }
            case .busy: counters.verificationDropped += 1
            }
        case let .verified(.admission(admission), outcome):
            let refusal: AdmissionError? = switch outcome {
            case .valid: accept(admission)
            case .invalid: .badSignature
            case .busy: .verifierBusy
            }
            answer(admission.client, refusal)
        }
    }

    mutating func tick() throws {
        tickCount += 1
        if tickCount % 10 == 0 { expireWaiters() }
        if tickCount % settings.regossipTicks == 0 {
            for entry in mempool.entries.prefix(settings.regossipCountMax) { effects.append(.broadcastGossip(entry.bytes)) }
        }
        if tickCount - lastProgressTick >= settings.catchUpTicks {
            lastProgressTick = tickCount
            if !peers.isEmpty {
                let peer = peers[catchUpRound % peers.count]
                catchUpRound += 1
                effects.append(.send(.stateRequest(fromSeq: ledger.height + 1), to: peer))
            }
        }
        replica.reachesQuorum = reachesQuorum
        try step(.tick(pendingCommands: mempool.pendingCount(tick: tickCount)))
    }

    /// This node and the validators it is linked to make a quorum of the set in force.
    var reachesQuorum: Bool {
        guard let linkedPeers else { return true }
        let validators = replica.epoch.validators
        let linked = linkedPeers.count { validatorsByPartner[$0].map(validators.contains) ?? false }
        return linked + (validators.contains(replica.id) ? 1 : 0) >= validators.quorum
    }

    /// A peer's level of distrust now: its level at its last bad signature, less one per
    /// `distrustForgivenTicks` since (0: trusted).
    public func distrust(of peer: String) -> Int {
        guard let entry = distrusted[peer] else { return 0 }
        let forgiven = (tickCount - entry.at) / max(1, settings.distrustForgivenTicks)
        return forgiven >= UInt64(clamping: entry.level) ? 0 : entry.level - Int(clamping: forgiven)
    }

    mutating func received(_ payload: [UInt8], from peer: String) throws {
        guard let sender = validatorsByPartner[peer] else { return }
        let distrust = distrust(of: peer)
        if distrust == 0 {
            distrusted[peer] = nil
        } else if let entry = distrusted[peer], tickCount - entry.at < min(1 << entry.level, settings.distrustTicksMax) {
            counters.distrustedDropped += 1
            return
        }
        let message: Message
        do { message = try Message(wireBytes: payload) } catch {
            counters.undecodable += 1
            return effects.append(.event(.undecodable(peer: peer, error: "\(error)")))
        }
        // Every signature the message carries is checked (by the shell, off its loop)
        // before the replica sees it, but for a vote the replica no longer needs.
        if replica.takesUnchecked(message, from: sender) {
            counters.votesUnchecked += 1
            return
        }
        let checks = message.signatureChecks(chainId: ledger.chainId)
        guard !checks.isEmpty else { return try step(.message(message, from: sender)) }
        // A message past the share is taken when little else of its peer waits (a sixteenth
        // of the share): an honest NewView of many validators may carry more checks than the
        // share, and its sender's few votes must not stop it. So a peer holds at most the
        // share and one such message.
        // A distrusted peer's share is halved per level, with no message past it.
        let held = verifying[peer, default: (0, 0, 0)]
        let share = (checks: settings.peerVerificationChecksMax >> distrust, bytes: settings.peerVerificationBytesMax >> distrust)
        let fits = checks.count <= share.checks - held.checks && payload.count <= share.bytes - held.bytes
        let littleWaits = distrust == 0 && held.checks <= share.checks / 16 && held.bytes <= share.bytes / 16
        guard fits || littleWaits, held.messages < max(1, settings.peerVerificationMessagesMax >> distrust) else {
            counters.peerVerificationDropped += 1
            return effects.append(.event(.peerVerificationDropped(peer: peer, checks: checks.count, bytes: payload.count)))
        }
        verifying[peer] = (held.checks + checks.count, held.bytes + payload.count, held.messages + 1)
        effects.append(.verify(checks, .consensus(message, from: sender, peer: peer, checks: checks.count, bytes: payload.count)))
    }

    /// Partner id ↔ node key, from the ledger's partners (validators and others alike).
    mutating func refreshDirectory() {
        validatorsByPartner = [:]
        partnersByValidator = [:]
        for id in ledger.partnerIDs {
            guard let key = ledger.partner(id)?.nodeKey else { continue }
            validatorsByPartner[id.rawValue] = key
            partnersByValidator[key] = id.rawValue
        }
    }

}
