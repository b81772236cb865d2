import CalissonCrypto
import Dispatch
import Ledger
import LightClient
import Synchronization
import Transport
import Wire

/// A node the gateway follows: its client port.
public struct NodeAddress: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: UInt16
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }
    public var description: String { "\(host):\(port)" }
}

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
/// in turn, starting with the one that answered last (fail-over: a node that does not
/// answer, answers an error, fails a check or is more than `lagMax` blocks behind the
/// newest certified checkpoint known is passed over, and its failure said); every answer
/// returned has passed `CertifiedReader`'s checks. The newest certified checkpoint is
/// learnt from every verified answer and from `refresh`, which asks every node.
///
/// The client transport is blocking: reads run on `queue`, never on the server's threads.
/// Each node keeps at most `idleClientsMax` open connections between requests.
public final class NodePool: Sendable {
    public static let idleClientsMax = 8

    public let nodes: [NodeAddress]
    public let genesis: Genesis
    public let lagMax: UInt64
    let ca: Certificate
    let timeoutMilliseconds: Int
    private let queue = DispatchQueue(label: "calisson.gateway.nodes", attributes: .concurrent)

    struct NodeState {
        var idle: [TransportClient] = []
        var trusted: TrustedValidators?
        var certifiedHeight: UInt64?
        var height: UInt64?
        var lastError: String?
    }
    private struct State {
        var nodes: [NodeState]
        var preferred = 0
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
        state = Mutex(State(nodes: nodes.map { _ in NodeState() }, freshness: Freshness(lagMax: lagMax), failures: nodes.map { _ in 0 }))
    }

    /// The newest certified checkpoint known (0: none yet).
    public var newestCertifiedHeight: UInt64 { state.withLock { $0.freshness.newest } }

    /// Each node's last known heights, or its last error.
    public var nodeStates: [(address: NodeAddress, height: UInt64?, certifiedHeight: UInt64?, error: String?)] {
        state.withLock { state in nodes.indices.map { (nodes[$0], state.nodes[$0].height, state.nodes[$0].certifiedHeight, state.nodes[$0].lastError) } }
    }

    /// Per node address: its answers not used since start.
    public var failureCounts: [(String, Int)] {
        state.withLock { state in nodes.indices.map { (nodes[$0].description, state.failures[$0]) } }
    }

    /// A state record, verified and fresh, from the first node that gives one.
    public func read(_ key: StateKey) async throws -> VerifiedRecord {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try self.readBlocking(key) }) }
        }
    }

    /// Asks every node for its newest certified checkpoint and status (verified), so that
    /// freshness follows the chain even when nobody reads.
    public func refresh() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                for index in self.nodes.indices { _ = try? self.attempt(index, key: StateKeys.meta) }
                continuation.resume()
            }
        }
    }

    func readBlocking(_ key: StateKey) throws -> VerifiedRecord {
        let first = state.withLock { $0.preferred }
        var failures: [(String, String)] = []
        for offset in nodes.indices {
            let index = (first + offset) % nodes.count
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

    /// One node: follow its handovers, read the record, check it, check its freshness.
    private func attempt(_ index: Int, key: StateKey) throws -> VerifiedRecord {
        do {
            let (record, height) = try withClient(index) { ask in
                let trusted = try CertifiedReader.trusted(genesis, ask: ask)
                state.withLock { $0.nodes[index].trusted = trusted }
                let record = try CertifiedReader.record(key, trusted: trusted, chainId: genesis.chainId, ask: ask)
                guard case let .status(status) = try ask(.status) else { throw CertifiedReadError.answer("not a status") }
                return (record, status.height)
            }
            let behind = try state.withLock { state -> UInt64 in
                state.nodes[index].certifiedHeight = record.height
                state.nodes[index].height = height
                state.nodes[index].lastError = nil
                state.freshness.learn(record.height, from: nodes[index].description)
                return try state.freshness.check(record.height)
            }
            return VerifiedRecord(record: record, source: nodes[index].description, behind: behind)
        } catch {
            state.withLock {
                $0.nodes[index].lastError = "\(error)"
                $0.failures[index] += 1
            }
            throw error
        }
    }

    /// Runs `body` with a connection to node `index`: an idle one if there is (the node may
    /// have closed it meanwhile: it closes idle clients; then once more on a new one), else
    /// a new one. A connection that failed is closed; one that worked is kept.
    private func withClient<T>(_ index: Int, _ body: ((ClientRequest) throws -> ClientResponse) throws -> T) throws -> T {
        func run(_ client: TransportClient) throws -> T {
            do {
                let result = try body { request in
                    try ClientResponse(wireBytes: try client.request(request.wireBytes, timeoutMilliseconds: timeoutMilliseconds))
                }
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
        return try run(try TransportClient(host: address.host, port: address.port, ca: ca, chainId: genesis.chainId, timeoutMilliseconds: timeoutMilliseconds))
    }

    /// Closes every idle connection.
    public func close() {
        let clients = state.withLock { state in
            defer { for index in state.nodes.indices { state.nodes[index].idle = [] } }
            return state.nodes.flatMap(\.idle)
        }
        for client in clients { client.close() }
    }
}
