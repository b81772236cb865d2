import CalissonCrypto
import NIOCore
import NIOPosix
import Synchronization
import Transport
import LightClient
import Wire

/// Connections to the nodes' client ports on the gateway's own event loops (SwiftNIO's, on
/// which the server reads requests and runs their tasks), for the requests every
/// submission and read makes. A request asked from a task on an event loop goes out on
/// that loop's connection to the node and its answer resumes the task there: no thread
/// between the HTTP request and the node's answer. (`NodePool`'s blocking client crossed
/// four: a thread of its own, the client's libuv loop, and back; on two saturated cores
/// each crossing waited for a core.)
///
/// The client-port protocol is `ClientSession`'s (TLS by OpenSSL against the consortium
/// CA, the hellos, requests answered in order), the bytes carried by a NIO channel.
/// Per node and loop, connections are opened as requests need them: a new one when each
/// open one has `inFlightPerConnection` requests waiting, at most `connectionsMax` (fewer
/// when many event loops share `perNodeMax`, `budget`); past
/// that, requests share the least loaded one. A request not answered within its timeout
/// closes its connection (the answers are in order: a later answer cannot be matched to
/// an earlier request), failing the requests waiting on it; the next request opens another.
/// A request that failed because the node closed its connection (a reused one: a node
/// closes a client idle for `clientIdleSeconds`, and the close may cross the request; or
/// a new one the node accepted, then closed before answering) is sent once more on a new
/// one: every request here is a read or a submission of the same bytes, which a node takes
/// twice as once. A node that cannot be reached (no connection, no hellos) is not tried
/// again here: the pool moves to another node.
/// A long poll (a wait for finality or for the next block, answered when it ends) would
/// hold every answer behind it on a shared connection: it is asked `alone`, on a
/// connection of its own (kept for the next long poll), at most `budget(loops:).longPolls`
/// at once per node and loop, so that the gateway stays under a node's connections per
/// address whatever the number of its loops (one per core).
final class NodeConnections: Sendable {
    /// Half the node's `clientRequestsInFlightMax` (64): a connection never reaches the cap
    /// past which a node closes it.
    static let inFlightPerConnection = 32
    /// Shared connections per node and loop, at most (fewer when many loops share `perNodeMax`).
    static let connectionsMax = 4
    /// Connections to one node from the whole gateway, at most: under a node's 64 per client
    /// address (`clientConnectionsPerAddressMax`), with room left for the tools on the same
    /// host (`calisson`, a monitoring probe). The event loops share it (`budget`).
    static let perNodeMax = 56
    /// Connections of finished long polls kept for the next ones, per node and loop, at most.
    static let idleLongPollConnectionsMax = 4
    /// Bytes of the nodes' answers held before they are whole (a frame still arriving, a
    /// pipelined batch's answers not all come), at most, for all the event loops (each has
    /// its share, at least `heldBytesPerLoopMin`). An answer may be 8 MiB, and a lying node
    /// trickling one on each of its connections held hundreds of megabytes of the gateway's
    /// memory: past its share, a loop closes the largest connection of the node that holds
    /// the most (its requests fail over to another node).
    static let heldBytesMaxDefault = 256 << 20
    /// Four whole answers of the largest size: what the verified copy's sync asks at once
    /// (an honest batch is never cut, however many loops share the bound).
    static let heldBytesPerLoopMin = 4 * TransportLimits.frameSizeMax

    let nodes: [NodeAddress]
    private let group: any EventLoopGroup
    private let context: TLSContext
    private let chainId: String
    /// Per event loop (by identity), per node: its connections; touched on that loop only.
    private let perLoop: [ObjectIdentifier: LoopConnections]
    /// Requests sent to the nodes, and the writes that carried them.
    let traffic = Traffic()

    /// Requests sent to the nodes and the writes that carried them, counted from every loop:
    /// the requests asked during one turn of a loop leave in one write.
    final class Traffic: Sendable {
        let requests = Atomic<Int>(0)
        let writes = Atomic<Int>(0)
        /// Connections closed for holding the most when their loop held over its share of bytes.
        let cut = Atomic<Int>(0)
        func sent(_ count: Int) {
            requests.add(count, ordering: .relaxed)
            writes.add(1, ordering: .relaxed)
        }
    }

    init(
        nodes: [NodeAddress], ca: Certificate, chainId: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        heldBytesPerLoopMax: Int? = nil
    ) throws {
        self.nodes = nodes
        self.group = group
        self.chainId = chainId
        context = try TLSContext(role: .client, identity: nil, trustedCA: ca, mutual: false)
        let loops = Array(group.makeIterator())
        let budget = Self.budget(loops: loops.count)
        let heldShare = heldBytesPerLoopMax ?? max(Self.heldBytesPerLoopMin, Self.heldBytesMaxDefault / max(1, loops.count))
        var perLoop: [ObjectIdentifier: LoopConnections] = [:]
        for loop in loops {
            perLoop[ObjectIdentifier(loop)] = LoopConnections(loop: loop, nodeCount: nodes.count, budget: budget, heldMax: heldShare, traffic: traffic)
        }
        self.perLoop = perLoop
    }

    /// What each of `loops` event loops may open to one node: shared connections, long polls
    /// at once, idle long-poll connections kept; together at most `perNodeMax` (up to 28
    /// loops: past that, one shared connection and one long poll each). With the default
    /// group on 2 cores: 4, 21 and 3 per loop.
    static func budget(loops: Int) -> (shared: Int, longPolls: Int, idle: Int) {
        let perLoop = perNodeMax / max(1, loops)
        let shared = max(1, min(connectionsMax, perLoop / 4))
        let idle = min(idleLongPollConnectionsMax, perLoop / 8)
        return (shared, max(1, perLoop - shared - idle), idle)
    }

    /// Sends `requests` to node `index` pipelined on one connection and waits for their
    /// answers (at most `timeoutMilliseconds` each), in order; `alone`, on a connection
    /// that carries nothing else meanwhile (for long polls).
    func ask(_ index: Int, _ requests: [ClientRequest], timeoutMilliseconds: Int, alone: Bool = false) async throws(ClientError) -> [ClientResponse] {
        let loop = MultiThreadedEventLoopGroup.currentEventLoop.flatMap { perLoop[ObjectIdentifier($0)] != nil ? $0 : nil } ?? group.next()
        guard let connections = perLoop[ObjectIdentifier(loop)] else { throw .closed("no event loop for the node's connection") }
        let payloads = requests.map(\.wireBytes)
        if let large = payloads.first(where: { $0.count > WireLimits.envelopePayloadSizeMax }) {
            throw .refused("request of \(large.count) bytes over the limit of \(WireLimits.envelopePayloadSizeMax)")
        }
        let answers: [[UInt8]]
        do {
            answers = try await withCheckedThrowingContinuation { continuation in
                let send: @Sendable () -> Void = { [self] in
                    connections.send(payloads, to: index, address: nodes[index], context: context, chainId: chainId,
                                     timeoutMilliseconds: timeoutMilliseconds, alone: alone) { continuation.resume(with: $0) }
                }
                if loop.inEventLoop { send() } else { loop.execute(send) }
            }
        } catch let error as ClientError {
            throw error
        } catch {
            throw .closed("\(error)")
        }
        var responses: [ClientResponse] = []
        for answer in answers {
            do { responses.append(try ClientResponse(wireBytes: answer)) } catch { throw .refused("an answer that is not a client response: \(error)") }
        }
        return responses
    }

    /// Connections open to node `index` on all loops, shared or for long polls (waits for
    /// each loop: not from one).
    func openConnections(to index: Int, alone: Bool = false) -> Int {
        perLoop.values.reduce(0) { count, connections in
            count + ((try? connections.loop.submit { connections.openCount(index, alone: alone) }.wait()) ?? 0)
        }
    }

    /// Closes every connection (the gateway is stopping).
    func close() {
        for connections in perLoop.values {
            connections.loop.execute { connections.closeAll() }
        }
    }
}

/// One event loop's connections to every node. Every member is used on `loop` only (checked).
private final class LoopConnections: @unchecked Sendable {
    let loop: any NIOCore.EventLoop
    private var byNode: [[NodeConnection]]
    /// Per node: connections of finished long polls, and the long polls waiting.
    private var idleAlone: [[NodeConnection]]
    private var longPolls: [Int]
    /// The connections of long polls waiting (closed with the others when the gateway stops).
    private var busyAlone: [ObjectIdentifier: (node: Int, connection: NodeConnection)] = [:]
    private var stopping = false

    /// What this loop may open to each node (`NodeConnections.budget`).
    let budget: (shared: Int, longPolls: Int, idle: Int)
    private let traffic: NodeConnections.Traffic
    /// Bytes its connections hold before they are answers, and its share of the bound.
    private var held = 0
    private let heldMax: Int

    init(
        loop: any NIOCore.EventLoop, nodeCount: Int, budget: (shared: Int, longPolls: Int, idle: Int), heldMax: Int,
        traffic: NodeConnections.Traffic
    ) {
        self.loop = loop
        self.budget = budget
        self.heldMax = heldMax
        self.traffic = traffic
        byNode = Array(repeating: [], count: nodeCount)
        idleAlone = byNode
        longPolls = Array(repeating: 0, count: nodeCount)
    }

    func send(
        _ payloads: [[UInt8]], to index: Int, address: NodeAddress, context: TLSContext, chainId: String, timeoutMilliseconds: Int,
        alone: Bool, retried: Bool = false, completion: @escaping (Result<[[UInt8]], ClientError>) -> Void
    ) {
        loop.preconditionInEventLoop()
        guard !stopping else { return completion(.failure(.closed("the gateway is stopping"))) }
        if alone {
            guard longPolls[index] < budget.longPolls else {
                return completion(.failure(.refused("\(budget.longPolls) long polls already wait on \(address) from this event loop")))
            }
            idleAlone[index].removeAll { $0.isClosed }
            let reused = idleAlone[index].popLast()
            let connection = reused ?? NodeConnection(loop: loop, address: address, context: context, chainId: chainId, owner: self, traffic: traffic)
            longPolls[index] += 1
            busyAlone[ObjectIdentifier(connection)] = (index, connection)
            connection.send(payloads, timeoutMilliseconds: timeoutMilliseconds) { [self] result in
                longPolls[index] -= 1
                busyAlone[ObjectIdentifier(connection)] = nil
                if !connection.isClosed {
                    if idleAlone[index].count < budget.idle {
                        idleAlone[index].append(connection)
                    } else {
                        connection.close(reason: "enough idle connections")
                    }
                }
                if case .failure = result, reused != nil || connection.ready, !connection.cutOff, !retried {
                    return send(payloads, to: index, address: address, context: context, chainId: chainId, timeoutMilliseconds: timeoutMilliseconds,
                                alone: true, retried: true, completion: completion)
                }
                completion(result)
            }
            return
        }
        byNode[index].removeAll { $0.isClosed }
        let open = byNode[index]
        let connection: NodeConnection
        let reused: Bool
        if let quiet = open.min(by: { $0.inFlight < $1.inFlight }),
            quiet.inFlight < NodeConnections.inFlightPerConnection || open.count >= budget.shared
        {
            connection = quiet
            reused = true
        } else {
            connection = NodeConnection(loop: loop, address: address, context: context, chainId: chainId, owner: self, traffic: traffic)
            byNode[index].append(connection)
            reused = false
        }
        connection.send(payloads, timeoutMilliseconds: timeoutMilliseconds) { [self] result in
            if case .failure = result, reused || connection.ready, !connection.cutOff, !retried {
                return send(payloads, to: index, address: address, context: context, chainId: chainId, timeoutMilliseconds: timeoutMilliseconds,
                            alone: false, retried: true, completion: completion)
            }
            completion(result)
        }
    }

    func openCount(_ index: Int, alone: Bool) -> Int {
        loop.preconditionInEventLoop()
        return alone
            ? idleAlone[index].count { !$0.isClosed } + busyAlone.values.count { $0.node == index && !$0.connection.isClosed }
            : byNode[index].count { !$0.isClosed }
    }

    /// A connection holds `delta` bytes more (or fewer, negative). Past the loop's share, the
    /// node holding the most loses its connection holding the most: most likely the node
    /// that sends slowly or too much (a lying node's many connections, each under an honest
    /// answer under way, count together), and its requests fail over to another node.
    fileprivate func holding(_ delta: Int) {
        held += delta
        guard held > heldMax else { return }
        var open: [(node: Int, connection: NodeConnection)] = []
        for (node, connections) in byNode.enumerated() { open += connections.map { (node, $0) } }
        for (node, connections) in idleAlone.enumerated() { open += connections.map { (node, $0) } }
        open += busyAlone.values.map { ($0.node, $0.connection) }
        open.removeAll { $0.connection.isClosed || $0.connection.held == 0 }
        var perNode: [Int: Int] = [:]
        for (node, connection) in open { perNode[node, default: 0] += connection.held }
        guard let heaviest = perNode.max(by: { $0.value < $1.value })?.key,
            let largest = open.filter({ $0.node == heaviest }).max(by: { $0.connection.held < $1.connection.held })?.connection
        else { return }
        traffic.cut.add(1, ordering: .relaxed)
        largest.cut(reason: "answers of \(largest.held) bytes not whole yet, while this event loop's connections held \(held) bytes, over their share of \(heldMax)")
    }

    func closeAll() {
        loop.preconditionInEventLoop()
        stopping = true
        for connection in Array(byNode.joined()) + Array(idleAlone.joined()) + busyAlone.values.map(\.connection) { connection.close(reason: "the gateway is stopping") }
        byNode = byNode.map { _ in [] }
        idleAlone = byNode
    }
}

/// One connection to a node's client port, on its event loop: every method is called
/// there (checked).
private final class NodeConnection: @unchecked Sendable {
    private struct Waiting {
        var answers: [[UInt8]] = []
        let expected: Int
        let completion: (Result<[[UInt8]], ClientError>) -> Void
        let timeout: Scheduled<Void>
    }

    private let loop: any NIOCore.EventLoop
    private var session: ClientSession?
    private var channel: (any Channel)?
    /// The hellos were exchanged: the node accepted the connection (a failure after it is
    /// the node closing it, not the node being unreachable).
    private(set) var ready = false
    /// Requests sent (or to send once ready), oldest first; the answers come in this order.
    private var waiting: [Waiting] = []
    private var unsent: [[UInt8]] = []
    /// Requests asked during this turn of the loop, sent together at its end (`flushQueued`):
    /// one TLS record and one write for all, and the node reads them in one turn of its own,
    /// where one each cost both sides a record, a system call and a wake-up.
    private var outgoing: [[UInt8]] = []
    private var outgoingBytes = 0
    private var flushQueued = false
    /// Past this many bytes asked in a turn, they leave at once (one write holds a copy of
    /// them in the record being built, another in the socket's buffer).
    static let outgoingBytesMax = 256 << 10
    private(set) var isClosed = false
    /// Closed by the gateway (a request not answered in time, or answers held past the
    /// loop's share of bytes), not by the node: its requests are not sent again to the node.
    private(set) var cutOff = false
    var inFlight: Int { waiting.reduce(0) { $0 + $1.expected - $1.answers.count } }

    private let traffic: NodeConnections.Traffic
    /// Bytes held before they are answers (`LoopConnections.holding`): a frame arriving in
    /// the session, and the answers of a batch not all come.
    private(set) var held = 0
    private var answersHeld = 0
    private weak var owner: LoopConnections?

    init(
        loop: any NIOCore.EventLoop, address: NodeAddress, context: TLSContext, chainId: String, owner: LoopConnections,
        traffic: NodeConnections.Traffic
    ) {
        self.loop = loop
        self.owner = owner
        self.traffic = traffic
        do {
            session = try ClientSession(
                context: context, chainId: chainId,
                write: { [weak self] bytes in
                    guard let channel = self?.channel else { return }
                    channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
                },
                closeStream: { [weak self] in self?.channel?.close(promise: nil) },
                onReady: { [weak self] _ in self?.becameReady() },
                onResponse: { [weak self] result in self?.answered(result) },
                onClose: { [weak self] reason in self?.closed(reason) })
        } catch {
            closed("\(error)")
            return
        }
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { [weak self] channel in
                guard let self else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Reader(connection: self)) }
            }
        bootstrap.connect(host: address.host, port: Int(clamping: address.port)).whenComplete { [weak self] result in
            guard let self else { return }
            switch result {
            case let .success(channel):
                guard !isClosed else { return channel.close(promise: nil) }
                self.channel = channel
                session?.start()
            case let .failure(error):
                closed("cannot connect to \(address): \(error)")
            }
        }
    }

    func send(_ payloads: [[UInt8]], timeoutMilliseconds: Int, completion: @escaping (Result<[[UInt8]], ClientError>) -> Void) {
        loop.preconditionInEventLoop()
        guard !isClosed else { return completion(.failure(.closed("connection closed"))) }
        guard !payloads.isEmpty else { return completion(.success([])) }
        let timeout = loop.scheduleTask(in: .milliseconds(Int64(clamping: timeoutMilliseconds))) { [weak self] () -> Void in
            self?.cut(reason: "no answer in \(timeoutMilliseconds) ms")
        }
        waiting.append(Waiting(expected: payloads.count, completion: completion, timeout: timeout))
        guard ready else { return unsent += payloads }
        outgoing += payloads
        outgoingBytes += payloads.reduce(0) { $0 + $1.count }
        if outgoingBytes > Self.outgoingBytesMax { return sendOutgoing() }
        guard !flushQueued else { return }
        flushQueued = true
        loop.execute { [weak self] in
            self?.flushQueued = false
            self?.sendOutgoing()
        }
    }

    /// Sends the requests asked during the turn (after those sent once ready: `becameReady`).
    private func sendOutgoing() {
        let payloads = outgoing
        outgoing = []
        outgoingBytes = 0
        guard !isClosed, let session, !session.isClosed, !payloads.isEmpty else { return }
        session.send(requests: payloads)
        traffic.sent(payloads.count)
    }

    func close(reason: String) {
        loop.preconditionInEventLoop()
        if let session { session.close(reason: reason) } else { closed(reason) }
    }

    /// Closes the connection for a fault of the node's (`cutOff`).
    func cut(reason: String) {
        cutOff = true
        close(reason: reason)
    }

    fileprivate func received(_ buffer: ByteBuffer) {
        loop.preconditionInEventLoop()
        buffer.withUnsafeReadableBytes { session?.receive($0) }
        recount()
    }

    /// Tells the loop how many bytes this connection holds now.
    private func recount() {
        let now = isClosed ? 0 : (session?.bufferedBytes ?? 0) + answersHeld
        let delta = now - held
        held = now
        if delta != 0 { owner?.holding(delta) }
    }

    fileprivate func ended(_ reason: String) { session?.close(reason: reason) }

    private func becameReady() {
        ready = true
        let payloads = unsent
        unsent = []
        guard let session, !payloads.isEmpty else { return }
        session.send(requests: payloads)
        traffic.sent(payloads.count)
    }

    private func answered(_ result: Result<[UInt8], ClientError>) {
        guard !waiting.isEmpty else {
            // An answer nobody asked for: the node is broken or lying, and one sending them
            // without end would keep a loop decrypting them. The connection goes.
            if case .success = result { cut(reason: "the node sent an answer to no request") }
            return
        }
        switch result {
        case let .success(answer):
            waiting[0].answers.append(answer)
            answersHeld += answer.count
            guard waiting[0].answers.count == waiting[0].expected else { return }
            let done = waiting.removeFirst()
            answersHeld -= done.answers.reduce(0) { $0 + $1.count }
            done.timeout.cancel()
            done.completion(.success(done.answers))
        case let .failure(error):
            closed("\(error)")
        }
    }

    /// Fails every request waiting (once: later calls find nothing).
    private func closed(_ reason: String) {
        isClosed = true
        let failed = waiting
        waiting = []
        unsent = []
        outgoing = []
        outgoingBytes = 0
        answersHeld = 0
        recount()
        for request in failed {
            request.timeout.cancel()
            request.completion(.failure(.closed(reason)))
        }
        channel?.close(promise: nil)
        channel = nil
    }
}

/// Passes the bytes a node's connection reads to its session.
private final class Reader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private weak var connection: NodeConnection?

    init(connection: NodeConnection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection?.received(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection?.ended("closed by the node")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection?.ended("\(error)")
        context.close(promise: nil)
    }
}
