import CalissonCrypto
import Consensus
import Dispatch
import Ledger
import LightClient
import Synchronization
import Transport
import Wire

/// A node the gateway follows: its client port.
public typealias NodeAddress = NetworkEndpoint

/// Why no node gave a verified, fresh answer: what each node did instead.
public struct NoVerifiedAnswer: Error, Sendable, CustomStringConvertible {
    public let failures: [(node: String, reason: String)]
    public var description: String { failures.map { "\($0.node): \($0.reason)" }.joined(separator: "; ") }
}

/// A state record the gateway may return: certified, proven, fresh, with where it came from.
public struct VerifiedRecord: Sendable {
    public let record: CertifiedRecord
    public let source: String
    /// Blocks behind the newest certified checkpoint the gateway knows.
    public let behind: UInt64
}

/// The nodes behind the gateway, as a light client of all of them. A read asks the nodes
/// in turn, starting with each healthy one in turn (fail-over: a node that does not
/// answer, answers an error, fails a check or is more than `lagMax` blocks behind the
/// newest certified checkpoint known is passed over, and its failure said); every answer
/// returned has passed `CertifiedReader`'s checks. The newest certified checkpoint is
/// learnt from every verified answer and from `refresh`, which asks every node.
///
/// Submissions, reads, inclusions, blocks and statuses go out on the gateway's event loops
/// (`NodeConnections`). Long polls (which would hold a pipelined connection's later
/// answers), the periodic refresh, the settlement's reads and the rare follow-up of many
/// validator-set changes use the blocking client transport on threads of their own
/// (`BlockingThreads`), never on the server's nor on libdispatch's; it keeps at most
/// `idleClientsMax` open connections per node between requests.
public final class NodePool: Sendable {
    public static let idleClientsMax = 8

    public let nodes: [NodeAddress]
    public let genesis: Genesis
    public let lagMax: UInt64
    let ca: Certificate
    let timeoutMilliseconds: Int
    private let threads = BlockingThreads(name: "calisson-gateway-nodes")
    /// The connections on the gateway's event loops for submissions and reads (nil when
    /// the CA cannot make a TLS context: the blocking path then says so on each request).
    private let connections: NodeConnections?
    /// Checkpoint certificates already checked (each read's certificate is one of a few).
    let checked = CheckedCheckpoints()

    struct NodeState {
        var idle: [TransportClient] = []
        var trusted: TrustedValidators?
        var certifiedHeight: UInt64?
        var height: UInt64?
        var lastError: String?
        /// Its last status (the node's word: CPU and transactions for the sobriety page).
        var status: NodeStatus?
    }
    private struct State {
        var nodes: [NodeState]
        var preferred = 0
        var nextSubmission = 0
        var nextRead = 0
        var freshness: Freshness
        /// Per node: answers not used (for /metrics).
        var failures: [Int]
    }
    private let state: Mutex<State>

    public init(nodes: [NodeAddress], ca: Certificate, genesis: Genesis, lagMax: UInt64, timeoutMilliseconds: Int = 5_000) {
        precondition(!nodes.isEmpty, "a gateway follows at least one node")
        self.nodes = nodes
        self.ca = ca
        self.genesis = genesis
        self.lagMax = lagMax
        self.timeoutMilliseconds = timeoutMilliseconds
        connections = try? NodeConnections(nodes: nodes, ca: ca, chainId: genesis.chainId)
        state = Mutex(State(nodes: nodes.map { _ in NodeState() }, freshness: Freshness(lagMax: lagMax), failures: nodes.map { _ in 0 }))
    }

    /// The newest certified checkpoint known (0: none yet).
    public var newestCertifiedHeight: UInt64 { state.withLock { $0.freshness.newest } }

    /// Each node's last known heights, or its last error.
    public var nodeStates: [(address: NodeAddress, height: UInt64?, certifiedHeight: UInt64?, error: String?)] {
        state.withLock { state in nodes.indices.map { (nodes[$0], state.nodes[$0].height, state.nodes[$0].certifiedHeight, state.nodes[$0].lastError) } }
    }

    /// Each node's last reported status (refreshed every 2 s), nil before one answered.
    public var nodeStatuses: [(address: NodeAddress, status: NodeStatus?)] {
        state.withLock { state in nodes.indices.map { (nodes[$0], state.nodes[$0].status) } }
    }

    /// Per node address: its answers not used since start.
    public var failureCounts: [(String, Int)] {
        state.withLock { state in nodes.indices.map { (nodes[$0].description, state.failures[$0]) } }
    }

    /// A state record, verified and fresh, from the first node that gives one.
    public func read(_ key: StateKey) async throws -> VerifiedRecord {
        var failures: [(String, String)] = []
        for index in readOrder() {
            do {
                let found = try await attempt(index, key: key)
                state.withLock { $0.preferred = index }
                return found
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// Node `index`'s answers to `requests`, pipelined on one connection: on the gateway's
    /// event loops, or on the blocking path without them.
    func ask(_ index: Int, _ requests: [ClientRequest], timeoutMilliseconds: Int? = nil) async throws -> [ClientResponse] {
        let wait = timeoutMilliseconds ?? self.timeoutMilliseconds
        if let connections { return try await connections.ask(index, requests, timeoutMilliseconds: wait) }
        return try await blocking { [self] in try withConnection(index, timeoutMilliseconds: wait) { _, askAll in try askAll(requests) } }
    }

    /// Asks every node for its newest certified checkpoint and status (verified), so that
    /// freshness follows the chain even when nobody reads.
    public func refresh() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            threads.submit {
                for index in self.nodes.indices { _ = try? self.attempt(index, key: StateKeys.meta, status: true) }
                continuation.resume()
            }
        }
    }

    /// The nodes in the order to send a submission to: each in turn first (round robin),
    /// so that admission's work (a signature check per transaction) is spread over them.
    func submissionOrder() -> [Int] {
        let first = state.withLock { state -> Int in
            defer { state.nextSubmission = (state.nextSubmission + 1) % nodes.count }
            return state.nextSubmission
        }
        return nodes.indices.map { (first + $0) % nodes.count }
    }

    /// The nodes in the order to read from: those whose last answer held, each in turn
    /// first (spreading the reads over them), then the others (a node that failed is tried
    /// last, not first every few reads).
    func readOrder() -> [Int] {
        let (first, healthy) = state.withLock { state -> (Int, [Bool]) in
            defer { state.nextRead = (state.nextRead + 1) % nodes.count }
            return (state.nextRead, state.nodes.map { $0.lastError == nil })
        }
        let rotated = nodes.indices.map { (first + $0) % nodes.count }
        return rotated.filter { healthy[$0] } + rotated.filter { !healthy[$0] }
    }

    /// The nodes in the order to ask them: the one that answered last first.
    func order() -> [Int] {
        let first = state.withLock { $0.preferred }
        return nodes.indices.map { (first + $0) % nodes.count }
    }

    /// Runs blocking client work on the pool's threads, off the server's.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            threads.submit { continuation.resume(with: Result { try body() }) }
        }
    }

    func readBlocking(_ key: StateKey) throws -> VerifiedRecord {
        var failures: [(String, String)] = []
        for index in readOrder() {
            do {
                let found = try attempt(index, key: key)
                state.withLock { $0.preferred = index }
                return found
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// The validator sets followed through node `index`'s handovers: on from those already
    /// followed through it (each handover's certificate is checked once per node).
    func trusted(_ index: Int, ask: (ClientRequest) throws -> ClientResponse) throws -> TrustedValidators {
        let trusted = try CertifiedReader.trusted(genesis, from: state.withLock { $0.nodes[index].trusted }, ask: ask)
        state.withLock { $0.nodes[index].trusted = trusted }
        return trusted
    }

    /// One node, asked on the event loops: follow its handovers, read the record, check it,
    /// check its freshness.
    private func attempt(_ index: Int, key: StateKey) async throws -> VerifiedRecord {
        do {
            let known = state.withLock { $0.nodes[index].trusted }
            let answers = try await ask(index, CertifiedReader.recordRequests(key, genesis: genesis, from: known))
            switch try CertifiedReader.record(key, genesis: genesis, from: known, answers: answers, checked: checked) {
            case let .record(trusted, record):
                state.withLock { $0.nodes[index].trusted = trusted }
                return try accepted(record, reported: nil, from: index)
            case let .moreHandovers(partly):
                // A node with many validator-set changes not yet followed: rare, blocking.
                state.withLock { $0.nodes[index].trusted = partly }
                return try await blocking { [self] in try attempt(index, key: key) }
            }
        } catch {
            failed(index, error)
            throw error
        }
    }

    /// One node: follow its handovers, read the record, check it, check its freshness; with
    /// `status`, also its reported height (for `refresh` and /v1/status, not every read).
    private func attempt(_ index: Int, key: StateKey, status: Bool = false) throws -> VerifiedRecord {
        do {
            let (record, reported) = try withConnection(index) { ask, askAll -> (CertifiedRecord, NodeStatus?) in
                // The node's handovers and the record in one round trip.
                let (trusted, record) = try CertifiedReader.record(
                    key, genesis: genesis, from: state.withLock { $0.nodes[index].trusted }, checked: checked, ask: ask, askAll: askAll)
                state.withLock { $0.nodes[index].trusted = trusted }
                guard status else { return (record, nil) }
                guard case let .status(reported) = try ask(.status) else { throw CertifiedReadError.answer("not a status") }
                return (record, reported)
            }
            return try accepted(record, reported: reported, from: index)
        } catch {
            failed(index, error)
            throw error
        }
    }

    /// A record node `index` gave that passed its checks: its height learnt, its freshness checked.
    private func accepted(_ record: CertifiedRecord, reported: NodeStatus?, from index: Int) throws -> VerifiedRecord {
        let behind = try state.withLock { state -> UInt64 in
            state.nodes[index].certifiedHeight = record.height
            if let reported {
                state.nodes[index].height = reported.height
                state.nodes[index].status = reported
            }
            state.nodes[index].lastError = nil
            state.freshness.learn(record.height, from: nodes[index].description)
            return try state.freshness.check(record.height)
        }
        return VerifiedRecord(record: record, source: nodes[index].description, behind: behind)
    }

    private func failed(_ index: Int, _ error: any Error) {
        state.withLock {
            $0.nodes[index].lastError = "\(error)"
            $0.failures[index] += 1
        }
    }

    /// Runs `body` with a connection to node `index`: an idle one if there is (the node may
    /// have closed it meanwhile: it closes idle clients; then once more on a new one), else
    /// a new one. A connection that failed is closed; one that worked is kept.
    func withClient<T>(
        _ index: Int, timeoutMilliseconds: Int? = nil, _ body: ((ClientRequest) throws -> ClientResponse) throws -> T
    ) throws -> T {
        try withoutActuallyEscaping(body) { body in
            try withConnection(index, timeoutMilliseconds: timeoutMilliseconds) { ask, _ in try body(ask) }
        }
    }

    /// As `withClient`, with a second way to ask: several requests pipelined on the
    /// connection at once, their answers in order.
    func withConnection<T>(
        _ index: Int, timeoutMilliseconds: Int? = nil,
        _ body: ((ClientRequest) throws -> ClientResponse, ([ClientRequest]) throws -> [ClientResponse]) throws -> T
    ) throws -> T {
        let wait = timeoutMilliseconds ?? self.timeoutMilliseconds
        func run(_ client: TransportClient) throws -> T {
            do {
                let result = try body({ request in
                    try ClientResponse(wireBytes: try client.request(request.wireBytes, timeoutMilliseconds: wait))
                }, { requests in
                    try client.pipeline(requests.map(\.wireBytes), timeoutMilliseconds: wait).map { try ClientResponse(wireBytes: try $0.get()) }
                })
                let kept = state.withLock { state -> Bool in
                    guard state.nodes[index].idle.count < Self.idleClientsMax else { return false }
                    state.nodes[index].idle.append(client)
                    return true
                }
                if !kept { client.close() }
                return result
            } catch {
                client.close()
                throw error
            }
        }
        if let idle = state.withLock({ $0.nodes[index].idle.popLast() }), let result = try? run(idle) { return result }
        let address = nodes[index]
        return try run(try TransportClient(host: address.host, port: address.port, ca: ca, chainId: genesis.chainId, timeoutMilliseconds: self.timeoutMilliseconds))
    }

    /// Closes every idle connection.
    public func close() {
        threads.stop()
        connections?.close()
        let clients = state.withLock { state in
            defer { for index in state.nodes.indices { state.nodes[index].idle = [] } }
            return state.nodes.flatMap(\.idle)
        }
        for client in clients { client.close() }
    }
}

/// What became of a transaction sent to the nodes.
public enum Submission: Sendable, Equatable {
    /// A node admitted it (or already had it, or had applied it: the same bytes).
    case accepted(source: String)
    /// A node's admission refused it, with the node's reason.
    case refused(String)
}

/// A final transaction, its inclusion verified.
public struct VerifiedInclusion: Sendable {
    public let inclusion: TransactionInclusion
    public let source: String
}

extension NodePool {
    /// Admission refusals that say the node is busy or stopping, not that the transaction
    /// is wrong (`AdmissionError`): another node may take it.
    static let transientRefusals = ["mempoolFull", "verifierBusy", "overloaded", "stopping", "noAnswer"]

    /// The height a node reports (its word: used only to set a new transaction's expiry,
    /// where a wrong height can only get the transaction refused or expired).
    public func reportedHeight() async throws -> UInt64 {
        var failures: [(String, String)] = []
        for index in order() {
            do {
                guard case let .status(status) = try await ask(index, [.status]).first else { throw CertifiedReadError.answer("not a status") }
                return status.height
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// Sends a signed transaction to the first node that takes the request, starting with
    /// each node in turn (fail-over on transport failures, node errors and busy nodes; a
    /// refusal by admission is final). The same
    /// bytes sent twice are the same transaction: a node that already has it answers
    /// `duplicate`, one that applied it `nonceUsed`, and both count as accepted here (the
    /// caller then finds it final, or, for a nonce used by other bytes, does not).
    public func submit(_ transaction: [UInt8]) async throws -> Submission {
        var failures: [(String, String)] = []
        for index in submissionOrder() {
            do {
                let response = try await ask(index, [.submit(transaction)]).first
                switch response {
                case .admitted: return .accepted(source: nodes[index].description)
                case let .refused(reason) where reason == "duplicate" || reason.hasPrefix("nonceUsed"):
                    return .accepted(source: nodes[index].description)
                case let .refused(reason) where Self.transientRefusals.contains(where: reason.hasPrefix):
                    failures.append((nodes[index].description, reason))  // this node is busy: try another
                case let .refused(reason): return .refused(reason)
                case let .error(reason): failures.append((nodes[index].description, reason))
                default: failures.append((nodes[index].description, "not an admission answer"))
                }
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// Waits (at most `milliseconds`) until the node `source` has the transaction final.
    public func waitFinal(_ id: Bytes32, at source: String, milliseconds: UInt32) async throws -> Bool {
        try await blocking { [self] in
            guard let index = nodes.firstIndex(where: { $0.description == source }) else { return false }
            let response = try withClient(index, timeoutMilliseconds: Int(milliseconds) + timeoutMilliseconds) { ask in
                try ask(.waitFinal(id, timeoutMilliseconds: milliseconds))
            }
            guard case let .transaction(location) = response else { return false }
            return location != nil
        }
    }

    /// A final transaction's place, from the first node whose inclusion proof and commit
    /// certificate hold (its position checked against the proof); nil when every node
    /// that answered says it has no such final transaction.
    public func inclusion(of id: Bytes32) async throws -> VerifiedInclusion? {
        var failures: [(String, String)] = []
        var absent = 0
        for index in order() {
            do {
                let (trusted, answer) = try await trustedWith(index, .transactionProof(id))
                guard case let .transactionProof(found) = answer else { throw CertifiedReadError.answer("not a proof") }
                guard let found else {
                    absent += 1
                    continue
                }
                do {
                    try InclusionCheck.verify(found, transaction: id, validators: trusted.keys(at: found.location.height), chainId: genesis.chainId)
                } catch {
                    throw CertifiedReadError.certificate(error)
                }
                return VerifiedInclusion(inclusion: found, source: nodes[index].description)
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        if absent > 0 { return nil }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// Node `index`'s validator sets, followed on through its handovers, and its answer to
    /// `request`, both in one round trip (a node with more handovers than one answer holds
    /// is followed on the blocking path, then asked `request` again).
    func trustedWith(_ index: Int, _ request: ClientRequest) async throws -> (TrustedValidators, ClientResponse) {
        let known = state.withLock { $0.nodes[index].trusted } ?? TrustedValidators(genesis: genesis.validatorKeys)
        let answers = try await ask(index, [.handovers(after: known.changedAt), request])
        guard answers.count == 2 else { throw CertifiedReadError.answer("\(answers.count) answers to 2 requests") }
        let (followed, complete) = try CertifiedReader.follow(answers[0], from: known, chainId: genesis.chainId)
        state.withLock { $0.nodes[index].trusted = followed }
        guard complete else {
            let all = try await blocking { [self] in try withClient(index) { ask in try self.trusted(index, ask: ask) } }
            guard let answer = try await ask(index, [request]).first else { throw CertifiedReadError.answer("no answer") }
            return (all, answer)
        }
        return (followed, answers[1])
    }
}

/// A final block whose transactions were checked against its commit certificate: they
/// hash to the digest that a quorum of the validators in force at its height signed.
public struct VerifiedBlockContents: Sendable {
    public let contents: BlockContents
    public let block: Block
    public let source: String
}

extension NodePool {
    /// Block `height`'s contents from the first node whose answer holds (fail-over on
    /// failures and on answers that do not hold); nil when no node has it (not final yet,
    /// or pruned everywhere).
    public func blockContents(_ height: UInt64) async throws -> VerifiedBlockContents? {
        var failures: [(String, String)] = []
        var absent = 0
        for index in readOrder() {
            do {
                let (trusted, answer) = try await trustedWith(index, .blockContents(height))
                guard case let .blockContents(found) = answer else { throw CertifiedReadError.answer("not a block's contents") }
                guard let found else {
                    absent += 1
                    continue
                }
                let block = try Block(wireBytes: found.body)
                guard found.height == height, block.seq == height else {
                    throw CertifiedReadError.answer("asked for block \(height), answered block \(block.seq)")
                }
                guard found.results.count == block.commands.count else {
                    throw CertifiedReadError.answer("block \(height) has \(block.commands.count) transactions and \(found.results.count) results")
                }
                // The node's word on what the block did besides: it must at least hold
                // together, or another node is asked.
                for record in found.decided {
                    guard let proposal = try? Proposal(wireBytes: record), proposal.status != .open else {
                        throw CertifiedReadError.answer("block \(height): a decided proposal's record is not a decided proposal")
                    }
                }
                guard found.opened.allSatisfy({ $0.position < UInt64(block.commands.count) }) else {
                    throw CertifiedReadError.answer("block \(height): a proposal opened at a position past its transactions")
                }
                do {
                    try InclusionCheck.verifyCommit(
                        digest: block.digest, height: height, certificate: found.certificate, validators: trusted.keys(at: height),
                        chainId: genesis.chainId)
                } catch {
                    throw CertifiedReadError.certificate(error)
                }
                return VerifiedBlockContents(contents: found, block: block, source: nodes[index].description)
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        if absent > 0 { return nil }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// The highest final height a node reports at or past `from`, waiting up to
    /// `milliseconds` for block `from` (a long poll); nil when none is final yet. The
    /// node's word: a hint of where the chain is, never a block.
    public func waitBlocks(from: UInt64, milliseconds: UInt32) async -> UInt64? {
        try? await blocking { [self] in
            // Each node in turn first: one lagging (or lying with nothing) does not hold the head.
            for index in readOrder() {
                let response = try? withClient(index, timeoutMilliseconds: Int(milliseconds) + timeoutMilliseconds) { ask in
                    try ask(.blocks(from: from, limit: ClientRequest.blocksMax, waitMilliseconds: milliseconds))
                }
                if case let .blocks(list) = response { return list.map(\.height).max() }
            }
            return nil
        }
    }
}
