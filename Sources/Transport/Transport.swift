import CalissonCrypto
import Foundation
import Logging
import Synchronization
import Wire

/// Where to reach a listener: an IPv4 address or a DNS name (resolved to IPv4 at each
/// connection), and a port.
public struct NetworkEndpoint: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// A validator the mesh keeps a link to, and where to dial it: its endpoints, tried in
/// turn (a dial that fails moves on to the next).
public struct PeerAddress: Hashable, Sendable {
    public typealias Endpoint = NetworkEndpoint

    public let id: String
    /// At least one.
    public let endpoints: [Endpoint]

    public init(id: String, host: String, port: UInt16) {
        self.init(id: id, endpoints: [Endpoint(host: host, port: port)])
    }

    public init(id: String, endpoints: [Endpoint]) {
        precondition(!endpoints.isEmpty, "a peer address has an endpoint")
        self.id = id
        self.endpoints = endpoints
    }
}

public struct TransportConfiguration: Sendable {
    public var chainId: String
    /// This node's partner id: the common name of its certificate.
    public var selfID: String
    public var identity: TLSIdentity
    public var ca: Certificate
    public var host = "127.0.0.1"
    /// The validator port (mutual TLS); 0 picks a free one.
    public var peerPort: UInt16 = 0
    /// The client port (server-authenticated TLS); nil: no client listener.
    public var clientPort: UInt16?
    public var peers: [PeerAddress] = []
    /// What this node's hello says of its release and ledger rules (nil: nothing).
    public var about: PeerVersion?
    /// The validator registry: partner id → SHA-256 of the TLS public key it must present
    /// (from the governance state). A peer not listed, or with another key, is refused.
    public var registry: [String: SHA256Digest] = [:]
    /// Serial numbers of certificates the consortium revoked.
    public var revokedSerials: Set<UInt64> = []
    public var heartbeatMilliseconds: UInt64 = 500
    /// A link silent this long is dead: closed, and redialled by its dialler. Generous:
    /// a peer's loop busy executing and committing a large block sends nothing meanwhile.
    public var deadAfterMilliseconds: UInt64 = 5_000
    public var handshakeTimeoutMilliseconds: UInt64 = 3_000
    /// Connections accepted on the peer port and not linked yet (their TLS handshake and
    /// hello under way), at most, and from one IP address. Past its address's share a new
    /// one is closed at accept; past the total, the oldest under way is closed to make room
    /// (a validator's handshake takes milliseconds: to keep it out, silent sockets would have
    /// to come faster than that). Anyone who reaches the port can connect; without a bound,
    /// connections held open for the handshake's 3 s took every file descriptor, and the
    /// validators' own links with them. A validator links once per peer.
    public var peerHandshakesMax = 64
    public var peerHandshakesPerAddressMax = 8
    /// New connections one IP address may open on the peer port and on the client port, per
    /// second on average, in bursts of at most `…AcceptsBurst`; past it a new one is closed
    /// at accept, before its TLS handshake (`AcceptRate`). A validator links once per peer
    /// and redials with back-off; a client keeps its connections.
    public var peerAcceptsPerSecond = 8
    public var peerAcceptsBurst = 32
    public var clientAcceptsPerSecond = 64
    public var clientAcceptsBurst = 256
    /// A peer that dials this node (the lower id dials) and has not linked this long after
    /// the start is named in a warning, once.
    public var dialerSilenceWarningMilliseconds: UInt64 = 30_000
    public var reconnectMinMilliseconds: UInt64 = 50
    public var reconnectMaxMilliseconds: UInt64 = 3_000
    /// Per link: above this many queued bytes gossip is dropped; above four times this,
    /// the link is closed (a slow consumer must not hold the node's memory).
    public var sendQueueBytesMax = 8 * 1024 * 1024
    /// A client link's answers not taken by its client (left unwritten by earlier turns),
    /// at most, and all client links' together (checked once a link holds over 1 MiB): past
    /// either the link is closed as a slow consumer when it is sent more. A client that asks
    /// and never reads cannot make the node hold its answers (256 such links, each closed
    /// only past a validator link's 32 MiB, were 8 GiB).
    public var clientSendQueueBytesMax = 32 * 1024 * 1024
    public var clientSendQueueTotalBytesMax = 256 * 1024 * 1024
    /// Transaction ids remembered to stop re-flooding (oldest forgotten first).
    public var gossipSeenMax = 200_000
    /// Client port limits (Docs/SECURITY.md, "The client port"). Connections at once, all
    /// clients together; past it a new connection is closed at accept.
    public var clientConnectionsMax = 256
    /// Connections at once from one IP address; past it a new one from there is closed at
    /// accept, so one host cannot take every place.
    public var clientConnectionsPerAddressMax = 64
    /// Requests one connection may have unanswered; one more closes that connection.
    public var clientRequestsInFlightMax = 64
    /// Requests per second one connection may send on average, in bursts of at most as
    /// many; a connection over it is closed (a token bucket, refilled each millisecond).
    public var clientRequestsPerSecondMax = 2_000
    /// The loop's time for clients' requests between two of its sleeps, in microseconds:
    /// past it, client links wait for their turn, served one request each in turn
    /// (`ClientTurns`), so that requests costly to answer cannot starve the consensus
    /// that shares the loop, nor one client the others.
    public var clientWorkMicrosecondsPerTurn: UInt64 = 10_000
    /// A client connection with no request unanswered that sends nothing for this long is
    /// closed (an idle client holds a place another could use).
    public var clientIdleMilliseconds: UInt64 = 30_000

    public init(chainId: String, selfID: String, identity: TLSIdentity, ca: Certificate) {
        self.chainId = chainId
        self.selfID = selfID
        self.identity = identity
        self.ca = ca
    }
}

public enum TransportEvent: Sendable, Equatable {
    case peerConnected(String, negotiated: String)
    case peerDisconnected(String, reason: String)
    /// A connection refused or closed for what it sent or presented.
    case refused(address: String, reason: String)
    /// A peer refused this node's link, saying why (logged as a warning).
    case refusedBy(peer: String, reason: String)
    /// A peer that dials this node (its id is lower) had not linked `dialerSilenceWarningMilliseconds` after the start (logged once).
    case dialerSilent(String)
}

/// Counters, read with `Transport.counters` (for the metrics endpoint and tests).
public struct TransportCounters: Sendable, Equatable {
    public var framesIn = 0
    public var framesOut = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public var refusedPeers = 0
    public var oversizedFrames = 0
    public var malformedFrames = 0
    public var gossipDropped = 0
    /// Gossip frames relayed to a peer the sender is not linked to (or has not said).
    public var gossipRelayed = 0
    /// Heartbeats from validators whose payload this release does not read.
    public var heartbeatsUnread = 0
    public var slowConsumersClosed = 0
    public var reconnects = 0
    /// Links a peer refused, saying why (`TransportKind.refusal`).
    public var refusedByPeers = 0
    public var clientConnectionsRefused = 0
    /// Of those, refused for the per-address limit.
    public var clientConnectionsPerAddressRefused = 0
    public var clientIdleClosed = 0
    public var clientRateLimited = 0
    /// Peer-port connections closed for the bounds on handshakes under way: a new one past
    /// its address's share, or the oldest when too many are (`peerHandshakesMax`,
    /// `peerHandshakesPerAddressMax`).
    public var peerHandshakesDropped = 0
    /// Connections closed at accept because their address opened more than its rate
    /// (`peerAcceptsPerSecond`, `clientAcceptsPerSecond`), per port.
    public var peerAcceptsRefused = 0
    public var clientAcceptsRefused = 0
    /// Connections that reached each port (accepted by the kernel), before any limit.
    public var peerConnectionsIncoming = 0
    public var clientConnectionsIncoming = 0
    /// Times a client link's frames waited for their turn of the loop's time for clients
    /// (`TransportConfiguration.clientWorkMicrosecondsPerTurn`).
    public var clientTurnsWaited = 0
    /// Sends and broadcasts from another thread that the loop refused (its queue full).
    public var loopRefused = 0
    public var handshakeFailures = 0
    /// Writes handed to the sockets of validator and client links (frames are gathered
    /// per loop turn: fewer writes than frames under load).
    public var socketWrites = 0
}

/// A client connection, as `Transport.onClientRequest` and `onClientClosed` name it: numbered
/// from 1 in the order the transport accepted them, never reused.
public struct ClientLink: Hashable, Sendable {
    public let number: UInt64
    public init(number: UInt64) { self.number = number }
}

/// The node's network: one mutual-TLS link to every other validator (the lower partner
/// id dials, so two nodes end with one link), reconnection with back-off and jitter,
/// heartbeats, bounded send queues, transaction gossip, and a client listener.
/// Thread-safe: public methods hand their work to the event loop; callbacks run on it.
public final class Transport: @unchecked Sendable {
    public private(set) var configuration: TransportConfiguration
    let loop: EventLoop
    let logger: Logger
    // Loop-thread state.
    private let peerContext: (server: TLSContext, client: TLSContext)
    private let clientContext: TLSContext?
    private var peerListener: TCPListener?
    private var clientListener: TCPListener?
    private var links: [String: Connection] = [:]
    private var dialing: Set<String> = []
    /// Per peer, the dials that failed since its last link: the next dial takes the
    /// endpoint this picks in turn.
    private var dialFailures: [String: Int] = [:]
    /// The last refusal logged as a warning, per peer (the same one again is logged at debug).
    private var refusalsLogged: [String: String] = [:]
    /// When the transport started, and the peers that dial this node and were said (once)
    /// not to have linked yet.
    private var startedAt: UInt64 = 0
    private var silentDialersWarned: Set<String> = []
    private lazy var backoff = RedialBackoff(minimum: configuration.reconnectMinMilliseconds, maximum: configuration.reconnectMaxMilliseconds)
    private var pending: Set<ObjectIdentifier> = []
    /// New connections per address on each port (`AcceptRate`).
    private lazy var peerAccepts = AcceptRate(perSecond: configuration.peerAcceptsPerSecond, burst: configuration.peerAcceptsBurst)
    private lazy var clientAccepts = AcceptRate(perSecond: configuration.clientAcceptsPerSecond, burst: configuration.clientAcceptsBurst)
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var heartbeat: LoopTimer?
    /// The hooks that write, at the end of each turn of the loop, the frames links gathered.
    private var turnHooks: [LoopPhaseHook] = []
    /// Links with frames gathered this turn.
    private var gatheringLinks: [Connection] = []
    /// The loop's time for clients' requests, and the client links waiting for their turn.
    private(set) lazy var clientTurns = ClientTurns(loop: loop, budgetMicroseconds: configuration.clientWorkMicrosecondsPerTurn)
    /// What each linked validator said of its own links (`LinkedPeers`, in its
    /// heartbeats): a transaction it gossips is relayed only to the peers it is not linked
    /// to; to all of them while it has said nothing (a node of an earlier release).
    private var peerLinks: [String: Set<String>] = [:]
    /// Peers whose unreadable heartbeat was logged as a warning (once per link).
    private var unreadHeartbeatsWarned: Set<String> = []
    private var seen = Set<SHA256Digest>()
    private var seenOrder: [SHA256Digest] = []
    private var seenStart = 0
    private var stopped = false
    private var random = SystemRandomNumberGenerator()
    private let countersLock = NSLock()
    private var countersValue = TransportCounters()
    /// Client connections accepted so far (each one's `ClientLink`).
    private var clientLinksNumbered: UInt64 = 0
    /// Connections made so far (each one's `Connection.number`).
    private var connectionsNumbered: UInt64 = 0

    /// The next connection's number (loop thread).
    func nextConnectionNumber() -> UInt64 {
        connectionsNumbered += 1
        return connectionsNumbered
    }

    /// What the client links' sockets have not taken yet, together (loop thread).
    func clientUnwrittenBytes() -> Int {
        connections.values.reduce(0) { $0 + ($1.isClient ? $1.stream.queuedBytes : 0) }
    }

    /// The next client connection's name (loop thread).
    func nextClientLink() -> ClientLink {
        clientLinksNumbered += 1
        return ClientLink(number: clientLinksNumbered)
    }

    /// Called on the loop thread.
    public var onMessage: (@Sendable (_ peer: String, _ kind: TransportKind, _ payload: [UInt8]) -> Void)?
    public var onGossip: (@Sendable (_ from: String, _ transaction: [UInt8]) -> Void)?
    public var onEvent: (@Sendable (TransportEvent) -> Void)?
    /// A client's request on `link`; answer through `respond` (at most once), from any thread.
    public var onClientRequest: (@Sendable (_ request: [UInt8], _ link: ClientLink, _ respond: @escaping @Sendable ([UInt8]) -> Void) -> Void)?
    /// A client connection closed: what waits on its behalf can be dropped (its answers
    /// would reach no one).
    public var onClientClosed: (@Sendable (_ link: ClientLink) -> Void)?
    /// At the end of every turn of the loop, before the frames gathered in it are written
    /// (the node commits the turn's writes there, then sends what depends on them).
    public var onTurnEnd: (@Sendable () -> Void)?

    public private(set) var peerPort: UInt16 = 0
    public private(set) var clientPort: UInt16 = 0

    public init(configuration: TransportConfiguration, loop: EventLoop, logger: Logger = Logger(label: "calisson.transport")) throws(OpenSSLError) {
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        peerContext = (
            try TLSContext(role: .server, identity: configuration.identity, trustedCA: configuration.ca, mutual: true),
            try TLSContext(role: .client, identity: configuration.identity, trustedCA: configuration.ca, mutual: true))
        clientContext = configuration.clientPort == nil
            ? nil : try TLSContext(role: .server, identity: configuration.identity, trustedCA: configuration.ca, mutual: false)
    }

    public var counters: TransportCounters { countersLock.withLock { countersValue } }
    @discardableResult
    func count<R>(_ change: (inout TransportCounters) -> R) -> R { countersLock.withLock { change(&countersValue) } }

    /// Whether the `count`th refusal of a kind is logged: the 1st, 2nd, 4th, 8th… (each is
    /// counted in /metrics, the count so far in the line), so that a peer or a client
    /// causing them by the thousand is named without flooding the log.
    public static func logsRefusal(_ count: Int) -> Bool { count > 0 && count & (count - 1) == 0 }

    /// Opens the listeners and starts dialling. Returns once listening (ports known).
    public func start() throws {
        precondition(!loop.isOnLoop, "start waits for the loop: called on it, it would wait for itself")
        let result = Mutex<Result<Void, Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        try loop.execute { [self] in
            result.withLock { $0 = Result { try self.startOnLoop() } }
            done.signal()
        }
        done.wait()
        try result.withLock { $0 }!.get()
    }

    private func startOnLoop() throws {
        logger.info("transport starting", metadata: ["openssl": "\(openSSLVersion)", "self": "\(configuration.selfID)"])
        let listener = TCPListener(loop: loop)
        try listener.listen(host: configuration.host, port: configuration.peerPort) { [weak self] stream in
            self?.accept(stream, client: false)
        }
        peerListener = listener
        peerPort = listener.port
        if let port = configuration.clientPort {
            let clients = TCPListener(loop: loop)
            try clients.listen(host: configuration.host, port: port) { [weak self] stream in self?.accept(stream, client: true) }
            clientListener = clients
            clientPort = clients.port
        }
        let timer = LoopTimer(loop: loop)
        timer.start(after: configuration.heartbeatMilliseconds, repeat: configuration.heartbeatMilliseconds) { [weak self] in self?.beat() }
        heartbeat = timer
        turnHooks = [LoopPhaseHook.Phase.beforePoll, .afterPoll].map { phase in
            LoopPhaseHook(loop: loop, phase: phase) { [weak self] in
                self?.writeGathered()
                if phase == .beforePoll { self?.clientTurns.turnBegins() }
            }
        }
        startedAt = now(loop)
        sayWhoDials()
        for peer in configuration.peers where configuration.selfID < peer.id { dial(peer) }
    }

    /// Logs which peers this node dials and which it waits for (the lower id dials): a node
    /// whose id sorts after every peer dials nobody, and says so.
    private func sayWhoDials() {
        let dials = configuration.peers.filter { configuration.selfID < $0.id }.map { "\($0.id)@\($0.endpoints.map(\.description).joined(separator: ","))" }
        let waits = configuration.peers.filter { $0.id < configuration.selfID }.map(\.id)
        logger.notice("links: the lower id dials", metadata: [
            "dials": "\(dials.isEmpty ? "nobody" : dials.joined(separator: ", "))",
            "waits for": "\(waits.isEmpty ? "nobody" : waits.joined(separator: ", "))",
        ])
    }

    /// Changes the validators to link with and the registry (a validator-set change, a
    /// key rotation, a revocation): dials new peers, closes links whose peer left or
    /// whose certificate no longer matches.
    /// Never lost: on the loop it acts at once; from another thread it waits for room in a
    /// full loop queue (only a stopping loop, which links nobody any more, drops it).
    public func update(peers: [PeerAddress], registry: [String: SHA256Digest], revokedSerials: Set<UInt64>) {
        loop.executeWaiting { [self] in
            let peersChanged = Set(configuration.peers) != Set(peers)
            configuration.peers = peers
            configuration.registry = registry
            configuration.revokedSerials = revokedSerials
            for (id, link) in links {
                let stillPeer = peers.contains { $0.id == id }
                if !stillPeer || admit(link.tls.peerCertificate, expected: nil) != nil {
                    link.close(reason: stillPeer ? "certificate no longer accepted" : "no longer a validator")
                }
            }
            if peersChanged { sayWhoDials() }
            for peer in peers where configuration.selfID < peer.id { dial(peer) }
        }
    }

    /// Closes every link and listener. The loop itself is the caller's to shut down.
    public func stop() {
        precondition(!loop.isOnLoop, "stop waits for the loop: called on it, it would wait for itself")
        let done = DispatchSemaphore(value: 0)
        guard loop.executeWaiting({ [self] in  // waits for room in a full queue
            stopped = true
            heartbeat?.close()
            peerListener?.close()
            clientListener?.close()
            for connection in connections.values { connection.close(reason: "stopping") }
            for hook in turnHooks { hook.close() }
            clientTurns.close()
            done.signal()
        }) else { return }
        done.wait()
    }

    // MARK: Sending

    /// Runs `work` at once on the loop thread; from another thread hands it to the loop,
    /// and a refusal (the queue full, counted in `loopRefused`, or the loop stopping) drops
    /// it: what goes through here is consensus and gossip traffic, which the protocol
    /// resends (view-change timers, regossip), never state that would be lost for good.
    private func onLoop(_ work: @escaping @Sendable () -> Void) -> Bool {
        if loop.isOnLoop {
            work()
            return true
        }
        do {
            try loop.execute(work)
            return true
        } catch {
            if error == .full { count { $0.loopRefused += 1 } }
            return false
        }
    }

    /// Sends a frame to one validator. On the loop thread it is sent at once, and false
    /// means there is no link to that peer now. From another thread it is handed to the
    /// loop, and false means the loop refused it (`onLoop`).
    @discardableResult
    public func send(_ payload: [UInt8], kind: TransportKind = .consensus, to peer: String) -> Bool {
        if loop.isOnLoop {
            guard let link = links[peer] else { return false }
            link.send(kind, payload)
            return true
        }
        return onLoop { [self] in links[peer]?.send(kind, payload) }
    }

    /// Sends a frame to every linked validator.
    public func broadcast(_ payload: [UInt8], kind: TransportKind = .consensus) {
        _ = onLoop { [self] in send(kind, payload, to: links.values) }
    }

    /// Floods a transaction to every validator, once: a node re-floods a transaction only
    /// the first time it sees it.
    public func gossip(_ transaction: [UInt8]) {
        _ = onLoop { [self] in
            guard remember(transaction) else { return }
            send(.gossip, transaction, to: links.values)
        }
    }

    /// Forgets that these transactions were seen (ids as `SignedTransaction.id`): their
    /// bytes, sent again, are flooded and relayed again. Their places in the order of
    /// forgetting the oldest are kept: an id seen again may be forgotten early, which costs
    /// at most a frame the mempool drops as a duplicate.
    public func forgetGossip(_ ids: [SHA256Digest]) {
        _ = onLoop { [self] in for id in ids { seen.remove(id) } }
    }

    /// Linked validators now (for tests and status).
    public func linkedPeers() -> [String] {
        precondition(!loop.isOnLoop, "linkedPeers waits for the loop: on it, call linkedPeersOnLoop")
        let result = Mutex<[String]>([])
        let done = DispatchSemaphore(value: 0)
        guard (try? loop.execute({ [self] in
            result.withLock { $0 = links.keys.sorted() }
            done.signal()
        })) != nil else { return [] }
        done.wait()
        return result.withLock { $0 }
    }

    /// What each linked validator said of its own links (for tests and status).
    func saidLinks() -> [String: Set<String>] {
        precondition(!loop.isOnLoop, "saidLinks waits for the loop")
        let result = Mutex<[String: Set<String>]>([:])
        let done = DispatchSemaphore(value: 0)
        guard (try? loop.execute({ [self] in
            result.withLock { $0 = peerLinks }
            done.signal()
        })) != nil else { return [:] }
        done.wait()
        return result.withLock { $0 }
    }

    /// Linked validators, read on the loop thread (from a callback).
    public func linkedPeersOnLoop() -> [String] {
        assert(loop.isOnLoop, "links are the loop thread's")
        return links.keys.sorted()
    }

    /// What each linked validator's hello said of its release and rules (nil: a node
    /// built before hellos said it), read on the loop thread.
    public func peerVersionsOnLoop() -> [String: PeerVersion?] {
        assert(loop.isOnLoop, "links are the loop thread's")
        return links.mapValues(\.peerVersion)
    }

    private static let gossipTag = TaggedHasher(tag: "calisson/command/v1")

    /// True the first time a transaction is seen.
    private func remember(_ transaction: [UInt8]) -> Bool {
        let id = Self.gossipTag.hash(transaction)
        guard seen.insert(id).inserted else { return false }
        seenOrder.append(id)
        if seenOrder.count - seenStart > configuration.gossipSeenMax {
            seen.remove(seenOrder[seenStart])
            seenStart += 1
            if seenStart > configuration.gossipSeenMax {
                seenOrder.removeFirst(seenStart)
                seenStart = 0
            }
        }
        return true
    }

    // MARK: Links

    private func dial(_ peer: PeerAddress) {
        guard !stopped, links[peer.id] == nil, !dialing.contains(peer.id) else { return }
        dialing.insert(peer.id)
        let endpoint = peer.endpoints[(dialFailures[peer.id] ?? 0) % peer.endpoints.count]
        let stream = TCPStream(loop: loop)
        // A SYN lost in a partition would otherwise be retried by the kernel for about two
        // minutes, long after the network heals: give up after `handshakeTimeoutMilliseconds`
        // (the pending connect then completes with ECANCELED) and dial again. Once
        // connected, `track` times the handshake out the same way.
        let deadline = LoopTimer(loop: loop)
        deadline.start(after: configuration.handshakeTimeoutMilliseconds) { [deadline, stream] in
            deadline.close()
            stream.close()
        }
        stream.connect(host: endpoint.host, port: endpoint.port) { [weak self, deadline] error in
            deadline.close()
            guard let self else { return }
            if let error {
                stream.close()
                self.dialing.remove(peer.id)
                self.dialFailed(peer.id, at: endpoint, "\(error)")
                return
            }
            do {
                let session = try TLSSession(context: self.peerContext.client, role: .client)
                let connection = Connection(transport: self, stream: stream, tls: session, expected: peer.id, isClient: false)
                self.track(connection)
                connection.begin()
            } catch {
                stream.close()
                self.dialing.remove(peer.id)
                self.dialFailed(peer.id, at: endpoint, "\(error)")
            }
        }
    }

    /// A dial to `peer` failed before a link: the next one takes its next endpoint.
    private func dialFailed(_ peer: String, at endpoint: PeerAddress.Endpoint, _ reason: String) {
        dialFailures[peer, default: 0] += 1
        scheduleRedial(peer, after: "\(endpoint): \(reason)")
    }

    /// Dials `peer` again after the backoff, at the address the configuration has for it
    /// then (it may have changed meanwhile, or the peer left).
    private func scheduleRedial(_ peer: String, after reason: String) {
        guard !stopped else { return }
        let delay = backoff.delay(for: peer, using: &random)
        logger.debug("redial scheduled", metadata: ["peer": "\(peer)", "ms": "\(delay)", "after": "\(reason)"])
        count { $0.reconnects += 1 }
        let timer = LoopTimer(loop: loop)
        timer.start(after: delay) { [weak self, timer] in
            timer.close()
            guard let self, let address = self.configuration.peers.first(where: { $0.id == peer }) else { return }
            self.dial(address)
        }
    }

    private func accept(_ stream: TCPStream, client: Bool) {
        guard !stopped else { return stream.close() }
        let host = stream.peerHost
        let admitted = client ? clientAccepts.take(host, now: now(loop)) : peerAccepts.take(host, now: now(loop))
        // The connection and its refusal counted at once: whoever reads the counters sees
        // either both or neither.
        guard admitted else {
            let refused = count { counters -> Int in
                if client {
                    counters.clientConnectionsIncoming += 1
                    counters.clientConnectionsRefused += 1
                    counters.clientAcceptsRefused += 1
                    return counters.clientAcceptsRefused
                }
                counters.peerConnectionsIncoming += 1
                counters.peerAcceptsRefused += 1
                return counters.peerAcceptsRefused
            }
            if Self.logsRefusal(refused) {
                logger.warning(
                    "\(client ? "client" : "peer-port") connection closed: its address opens connections faster than allowed",
                    metadata: [
                        "address": "\(stream.peerAddress)", "soFar": "\(refused)",
                        "rate": "\(client ? configuration.clientAcceptsPerSecond : configuration.peerAcceptsPerSecond)/s",
                    ])
            }
            return stream.close()
        }
        count { counters in if client { counters.clientConnectionsIncoming += 1 } else { counters.peerConnectionsIncoming += 1 } }
        if client {
            let clients = connections.values.filter(\.isClient)
            if clients.count(where: { $0.host == host }) >= configuration.clientConnectionsPerAddressMax {
                let refused = count {
                    $0.clientConnectionsRefused += 1
                    $0.clientConnectionsPerAddressRefused += 1
                    return $0.clientConnectionsPerAddressRefused
                }
                if Self.logsRefusal(refused) {
                    logger.warning("client refused: too many connections from its address", metadata: ["address": "\(stream.peerAddress)", "soFar": "\(refused)"])
                }
                return stream.close()
            }
            if clients.count >= configuration.clientConnectionsMax {
                // The oldest connection whose handshake and hello are still under way makes
                // room (silent sockets cannot keep every place); with none, the new one goes.
                let oldest = clients.filter { !$0.isEstablished }.min { $0.number < $1.number }
                let refused = count { $0.clientConnectionsRefused += 1; return $0.clientConnectionsRefused }
                if Self.logsRefusal(refused) {
                    logger.warning(oldest == nil ? "client refused: too many connections" : "client connection closed: too many, the oldest not linked yet closed",
                                   metadata: ["address": "\(stream.peerAddress)", "soFar": "\(refused)"])
                }
                guard let oldest else { return stream.close() }
                oldest.close(reason: "handshake not finished: room made for a newer one")
            }
        } else {
            let handshaking = connections.values.filter { !$0.isClient && !$0.isDialer && $0.peerID == nil }
            let fromHost = handshaking.count(where: { $0.host == host })
            if fromHost >= configuration.peerHandshakesPerAddressMax || handshaking.count >= configuration.peerHandshakesMax {
                let dropped = count { $0.peerHandshakesDropped += 1; return $0.peerHandshakesDropped }
                if Self.logsRefusal(dropped) {
                    logger.warning("peer-port connection closed: too many handshakes under way (from its address, or in all: the oldest closed)",
                                   metadata: ["address": "\(stream.peerAddress)", "soFar": "\(dropped)"])
                }
                guard fromHost < configuration.peerHandshakesPerAddressMax, let oldest = handshaking.min(by: { $0.number < $1.number }) else {
                    return stream.close()
                }
                oldest.close(reason: "handshake not finished: room made for a newer one")
            }
        }
        do {
            let context = client ? clientContext! : peerContext.server
            let connection = Connection(
                transport: self, stream: stream, tls: try TLSSession(context: context, role: .server), expected: nil, isClient: client)
            track(connection)
            connection.begin()
        } catch {
            stream.close()
        }
    }

    private func track(_ connection: Connection) {
        connections[ObjectIdentifier(connection)] = connection
        let timer = LoopTimer(loop: loop)
        timer.start(after: configuration.handshakeTimeoutMilliseconds) { [weak connection, timer] in
            timer.close()
            if let connection, connection.peerID == nil, !connection.isClient || !connection.isEstablished {
                connection.close(reason: "handshake timeout")
            }
        }
    }

    /// Checks a finished handshake's peer certificate against the registry.
    func admit(_ certificate: PeerCertificate?, expected: String?) -> String? {
        guard let certificate else { return "no certificate" }
        if configuration.revokedSerials.contains(certificate.serial) { return "certificate \(certificate.serial) is revoked" }
        guard let listed = configuration.registry[certificate.commonName] else { return "unknown partner '\(certificate.commonName)'" }
        guard listed == certificate.publicKeyHash else { return "key of '\(certificate.commonName)' differs from the registry's" }
        if let expected, expected != certificate.commonName { return "dialled \(expected), reached \(certificate.commonName)" }
        return nil
    }

    /// A link passed the handshake and the hello: it becomes the link to `peer`.
    func established(_ connection: Connection, peer: String) -> Bool {
        if !connection.isDialer {
            // The lower id dials: an inbound link must come from a lower id.
            guard peer < configuration.selfID else { return false }
        }
        if let old = links[peer], old !== connection { old.close(reason: "replaced by a new link") }
        links[peer] = connection
        dialing.remove(peer)
        dialFailures[peer] = nil
        refusalsLogged[peer] = nil
        backoff.linked(peer)
        logger.info("peer connected", metadata: [
            "peer": "\(peer)", "tls": "\(connection.negotiated)", "openssl": "\(openSSLVersion)",
            "version": "\(connection.peerVersion.map(\.description) ?? "not said")",
        ])
        onEvent?(.peerConnected(peer, negotiated: connection.negotiated))
        sayLinks()
        return true
    }

    func closed(_ connection: Connection, reason: String) {
        connections[ObjectIdentifier(connection)] = nil
        if connection.isClient { onClientClosed?(connection.clientLink) }
        if let peer = connection.peerID ?? connection.expected {
            if links[peer] === connection {
                links[peer] = nil
                peerLinks[peer] = nil
                unreadHeartbeatsWarned.remove(peer)
                logger.info("peer disconnected", metadata: ["peer": "\(peer)", "reason": "\(reason)"])
                onEvent?(.peerDisconnected(peer, reason: reason))
                sayLinks()
            }
            if connection.isDialer {
                dialing.remove(peer)
                // A dial that ended before its link (refused, handshake failed) tries the next endpoint.
                if connection.peerID == nil { dialFailures[peer, default: 0] += 1 }
                if configuration.peers.contains(where: { $0.id == peer }), links[peer] == nil {
                    scheduleRedial(peer, after: reason)
                }
            }
        }
    }

    /// A peer refused the link this node made or accepted, and said why.
    func refusedBy(_ connection: Connection, reason: String) {
        count { $0.refusedByPeers += 1 }
        let peer = connection.expected ?? connection.tls.peerCertificate?.commonName ?? connection.address
        if refusalsLogged[peer] != reason {
            refusalsLogged[peer] = reason
            logger.warning("refused by a peer", metadata: ["peer": "\(peer)", "address": "\(connection.address)", "reason": "\(reason)"])
            onEvent?(.refusedBy(peer: peer, reason: reason))
        } else {
            logger.debug("refused by a peer again", metadata: ["peer": "\(peer)", "reason": "\(reason)"])
        }
    }

    func refused(_ connection: Connection, reason: String) {
        count { $0.refusedPeers += 1 }
        logger.warning("connection refused", metadata: [
            "address": "\(connection.address)", "peer": "\(connection.tls.peerCertificate?.commonName ?? connection.expected ?? "unknown")",
            "reason": "\(reason)",
        ])
        onEvent?(.refused(address: connection.address, reason: reason))
    }

    func received(_ kind: TransportKind, _ payload: [UInt8], on connection: Connection) {
        guard let peer = connection.peerID else { return }
        switch kind {
        case .gossip:
            guard remember(payload) else { return }
            onGossip?(peer, payload)
            // Relayed to the linked validators the sender did not reach itself: none in a
            // full mesh, the others where a link is missing (or the sender has not said).
            let reached = peerLinks[peer]
            let targets = links.filter { $0.key != peer && reached?.contains($0.key) != true }.map(\.value)
            if !targets.isEmpty {
                count { $0.gossipRelayed += targets.count }
                send(.gossip, payload, to: targets)
            }
        case .consensus:
            onMessage?(peer, kind, payload)
        case .hello, .heartbeat, .request, .response, .refusal:
            break
        }
    }

    /// A validator's heartbeat that carries a payload: what it says of its links. One this
    /// release cannot read (malformed, or a later release's) leaves them unknown, so its
    /// gossip is relayed to every other peer as before; counted, and logged (a warning once
    /// per link, then at debug).
    func heard(_ payload: [UInt8], on connection: Connection) {
        guard let peer = connection.peerID, links[peer] === connection else { return }
        do {
            peerLinks[peer] = try LinkedPeers(payload: payload).peers
        } catch {
            peerLinks[peer] = nil
            count { $0.heartbeatsUnread += 1 }
            if unreadHeartbeatsWarned.insert(peer).inserted {
                logger.warning("a peer's heartbeat not read: its gossip is relayed to every peer", metadata: ["peer": "\(peer)", "reason": "\(error)"])
            } else {
                logger.debug("a peer's heartbeat not read", metadata: ["peer": "\(peer)", "reason": "\(error)"])
            }
        }
    }

    /// Tells every linked validator which validators this node is linked to now: when a
    /// link comes or goes, and at every heartbeat tick (one dropped with a full send queue
    /// is said again).
    private func sayLinks() {
        guard !links.isEmpty else { return }
        send(.heartbeat, LinkedPeers(peers: Set(links.keys)).payload, to: links.values)
    }

    func request(_ payload: [UInt8], on connection: Connection) {
        guard let handler = onClientRequest else { return }
        let target = LoopBound(connection)
        let number = connection.numberRequest()
        // The answer may come from the loop (most) or another thread; never lost while the
        // loop runs (`executeWaiting`); sent in the order of the requests.
        clientTurns.measure {
            handler(payload, connection.clientLink) { [loop] response in
                loop.executeWaiting { target.value?.finishRequest(number, response) }
            }
        }
    }

    /// Sends `payload` to each of `targets`, the frame made once for all of them.
    private func send(_ kind: TransportKind, _ payload: [UInt8], to targets: some Collection<Connection>) {
        guard payload.count <= WireLimits.envelopePayloadSizeMax, !targets.isEmpty else {
            for link in targets { link.send(kind, payload) }  // each refuses it, counted and logged
            return
        }
        let frame = FrameDecoder.frame(kind, payload)
        for link in targets { link.send(kind, frame: frame) }
    }

    /// `connection` gathered its first frame of this turn: written at the turn's end.
    func gathering(_ connection: Connection) { gatheringLinks.append(connection) }

    /// Writes what the links gathered this turn. Writing can close a link, whose callbacks
    /// may send again: a few rounds, then the next hook takes the rest.
    private func writeGathered() {
        onTurnEnd?()
        for _ in 0..<4 where !gatheringLinks.isEmpty {
            let links = gatheringLinks
            gatheringLinks = []
            for link in links { link.writeGathered() }
        }
    }

    private func beat() {
        let now = now(loop)
        if now >= startedAt + configuration.dialerSilenceWarningMilliseconds {
            for peer in configuration.peers where peer.id < configuration.selfID && links[peer.id] == nil && !silentDialersWarned.contains(peer.id) {
                silentDialersWarned.insert(peer.id)
                logger.warning(
                    "no link from a peer that dials this node",
                    metadata: ["peer": "\(peer.id)", "after ms": "\(now - startedAt)",
                               "check": "\(peer.id) runs, lists this node (\(configuration.selfID)) with an address it reaches, and its log for a refusal"])
                onEvent?(.dialerSilent(peer.id))
            }
        }
        sayLinks()
        for connection in Array(connections.values) {
            switch connection.beat(now: now, idleLimit: configuration.clientIdleMilliseconds, deadAfter: configuration.deadAfterMilliseconds) {
            case .keep: break
            case .heartbeat: connection.send(.heartbeat, [])
            case .closeIdle:
                count { $0.clientIdleClosed += 1 }
                connection.close(reason: "idle for \(configuration.clientIdleMilliseconds) ms")
            case .closeDead: connection.close(reason: "no frame for \(configuration.deadAfterMilliseconds) ms")
            }
        }
    }
}

/// A weak reference carried across threads and dereferenced only on the loop thread.
final class LoopBound<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
    init(_ value: T) { self.value = value }
}
