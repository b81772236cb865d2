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
    /// The validators that verified the record's certificate.
    public let trusted: TrustedValidators
}

/// The nodes behind the gateway, as a light client of all of them. A read asks the nodes
/// in turn, starting with each healthy one in turn (fail-over: a node that does not
/// answer, answers an error, fails a check or is more than `lagMax` blocks behind the
/// newest certified checkpoint known is passed over, and its failure said); every answer
/// returned has passed `CertifiedReader`'s checks. The newest certified checkpoint is
/// learnt from every verified answer and from `refresh`, which asks every node.
///
/// Every request goes to the nodes on the gateway's event loops (`NodeConnections`), long
/// polls on connections of their own. Blocking work (the idempotency log's fsync, the
/// settlement's reads, which the settlement code asks synchronously) runs on threads of
/// the pool's own (`BlockingThreads`), never on the server's nor on libdispatch's.
public final class NodePool: Sendable {
    public let nodes: [NodeAddress]
    public let genesis: Genesis
    public let lagMax: UInt64
    let ca: Certificate
    let timeoutMilliseconds: Int
    private let threads = BlockingThreads(name: "calisson-gateway-nodes")
    /// Per node: chunks of batches in flight to it (`batchChunksInFlightMax`).
    private let batchChunks: [AsyncLimiter]
    /// The connections to the nodes, on the gateway's event loops; or why there are none
    /// (the CA cannot make a TLS context), said on each request.
    private let connections: Result<NodeConnections, ClientError>
    /// Checkpoint certificates already checked (each read's certificate is one of a few).
    let checked = CheckedCheckpoints()
    /// The verified copy of the state that reads are answered from when it is fresh
    /// (`followMirror`); nil: every read asks a node.
    public let mirror: StateMirror?

    struct NodeState {
        var trusted: TrustedValidators?
        var certifiedHeight: UInt64?
        var height: UInt64?
        var lastError: String?
        /// When its last answer failed, and why (a refresh that holds clears `lastError`,
        /// not these).
        var failedAt: ContinuousClock.Instant?
        var lastFailure: String?
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
        var mirrorRefusals = 0
        var mirrorReads = 0
    }
    private let state: Mutex<State>

    /// `mirrorPagesMax`: the tree pages the verified copy of the state may hold (0: no copy).
    public init(
        nodes: [NodeAddress], ca: Certificate, genesis: Genesis, lagMax: UInt64, timeoutMilliseconds: Int = 5_000, mirrorPagesMax: Int = 0
    ) {
        precondition(!nodes.isEmpty, "a gateway follows at least one node")
        self.nodes = nodes
        mirror = mirrorPagesMax > 0 ? StateMirror(pagesMax: mirrorPagesMax) : nil
        self.ca = ca
        self.genesis = genesis
        self.lagMax = lagMax
        self.timeoutMilliseconds = timeoutMilliseconds
        batchChunks = nodes.map { _ in AsyncLimiter(Self.batchChunksInFlightMax) }
        do { connections = .success(try NodeConnections(nodes: nodes, ca: ca, chainId: genesis.chainId)) } catch {
            connections = .failure(.tls("\(error)"))
        }
        state = Mutex(State(nodes: nodes.map { _ in NodeState() }, freshness: Freshness(lagMax: lagMax), failures: nodes.map { _ in 0 }))
    }

    /// The newest certified checkpoint known (0: none yet).
    public var newestCertifiedHeight: UInt64 { state.withLock { $0.freshness.newest } }

    /// Each node's last known heights, or its last error; and why its last failed answer
    /// failed while the node is passed over for it (`failedRecentlySeconds`), though a
    /// later answer held (a node whose block contents the certified state refuted answers
    /// the gateway's refresh as any other).
    public var nodeStates: [(address: NodeAddress, height: UInt64?, certifiedHeight: UInt64?, error: String?, recentFailure: String?)] {
        let now = ContinuousClock.now
        return state.withLock { state in
            nodes.indices.map { index in
                let node = state.nodes[index]
                let recent = node.failedAt.map { $0.duration(to: now) <= .seconds(Self.failedRecentlySeconds) } ?? false
                return (nodes[index], node.height, node.certifiedHeight, node.lastError, recent ? node.lastFailure : nil)
            }
        }
    }

    /// Each node's last reported status (refreshed every 2 s), nil before one answered.
    public var nodeStatuses: [(address: NodeAddress, status: NodeStatus?)] {
        state.withLock { state in nodes.indices.map { (nodes[$0], state.nodes[$0].status) } }
    }

    /// Per node address: its answers not used since start.
    public var failureCounts: [(String, Int)] {
        state.withLock { state in nodes.indices.map { (nodes[$0].description, state.failures[$0]) } }
    }

    /// A state record, verified and fresh: from the verified copy when it is fresh enough,
    /// otherwise from the first node that gives one.
    public func read(_ key: StateKey) async throws -> VerifiedRecord {
        if let found = mirrored(key) { return found }
        let (found, index) = try await fromNodes(key)
        state.withLock { $0.preferred = index }
        return found
    }

    /// `key` from the first node, in the reads' order, that gives a verified, fresh answer,
    /// and that node.
    private func fromNodes(_ key: StateKey) async throws -> (record: VerifiedRecord, index: Int) {
        var failures: [(String, String)] = []
        for index in readOrder() {
            do {
                return (try await attempt(index, key: key), index)
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// The record from the verified copy, checked as a node's answer is (the certificate
    /// against the validators that verified the copy's checkpoint, the proof against its
    /// root) and for freshness; nil when there is no copy, it is stale, or a check fails
    /// (counted: not expected, the copy was checked as it was made).
    private func mirrored(_ key: StateKey) -> VerifiedRecord? {
        guard let mirror, let (answer, checkpoint) = mirror.answer(key) else { return nil }
        do {
            let record = try CertifiedReader.record(key, answer: answer, trusted: checkpoint.trusted, chainId: genesis.chainId, checked: checked)
            let behind = try state.withLock { state in
                let behind = try state.freshness.check(record.height)
                state.mirrorReads += 1
                return behind
            }
            return VerifiedRecord(record: record, source: "\(checkpoint.source) (the gateway's verified copy)", behind: behind, trusted: checkpoint.trusted)
        } catch is FreshnessError {
            return nil
        } catch {
            state.withLock { $0.mirrorRefusals += 1 }
            return nil
        }
    }

    /// Keeps the verified copy at the newest certified checkpoint: every `periodMilliseconds`,
    /// asks a node (in the reads' order) for its latest checkpoint, verified, and when it is
    /// newer than the copy's, copies what changed from that node. A failure is logged and
    /// the copy stays as it was (reads go to the nodes once it is stale); a state larger
    /// than the copy may hold ends the copy until the gateway restarts (a state grows: each
    /// try would fetch the bound's worth of pages again, to drop them). No checkpoint can
    /// be newer than the copy's before the block a checkpoint interval above it is final:
    /// the question waits for that block (a long poll, answered at once under load), so that
    /// an idle chain costs the nodes two requests every 10 s.
    ///
    /// `log(message, trouble)`: `trouble` false for what happens in normal operation (a
    /// node that served a newer checkpoint while the copy was fetching, under load; the
    /// copy back after a failure), true for the rest.
    public func followMirror(periodMilliseconds: Int = 100, log: @escaping @Sendable (String, _ trouble: Bool) -> Void) async {
        guard let mirror else { return }
        var lastError: String?, lastLogged = ContinuousClock.now - .seconds(3_600)
        while !Task.isCancelled {
            if let held = mirror.checkpoint?.height, lastError == nil {
                _ = await waitBlocks(from: held.saturatingAdding(TrustedValidators.checkpointInterval), milliseconds: 10_000, limit: 1)
            }
            do {
                // The newest certified checkpoint a node serves (any record carries it; the
                // validators those of this answer's own check).
                let (found, index) = try await fromNodes(StateKeys.validatorKeys)
                if mirror.checkpoint.map({ $0.height < found.record.height }) ?? true {
                    let checkpoint = StateMirror.Checkpoint(
                        height: found.record.height, root: found.record.root, certificate: found.record.certificate, trusted: found.trusted,
                        source: nodes[index].description)
                    try await mirror.sync(to: checkpoint, offLoop: { body in try await self.blocking(body) }) { requests in
                        try await self.ask(index, requests)
                    }
                }
                if lastError != nil { log("the verified copy of the state is now at checkpoint \(found.record.height)", false) }
                lastError = nil
            } catch {
                // The gateway stopping (its node connections closed under the sync): no trouble.
                if Task.isCancelled { return }
                if case MirrorSyncError.tooLarge = error {
                    return log("the verified copy of the state: \(error); no copy until the gateway restarts (--mirror-pages-max)", true)
                }
                // The first failure after a success, then at most one a minute (a node's
                // message changes with the order the nodes were asked in). A node that moved
                // on while the copy fetched (a sync longer than a checkpoint interval, under
                // load) is no trouble: the next sync asks for the newer checkpoint and keeps
                // the pages fetched.
                let text = "the verified copy of the state: \(error)"
                if lastError == nil || ContinuousClock.now - lastLogged > .seconds(60) {
                    var moved = false
                    if case MirrorSyncError.moved = error { moved = true }
                    log(text, !moved)
                    lastLogged = .now
                }
                lastError = text
            }
            try? await Task.sleep(for: .milliseconds(max(1, periodMilliseconds)))
        }
    }

    /// Reads answered from the verified copy, and those it refused by the pool's checks
    /// (none expected).
    public var mirrorReads: Int { state.withLock { $0.mirrorReads } }
    public var mirrorRefusals: Int { state.withLock { $0.mirrorRefusals } }

    /// Requests sent to the nodes, and the writes that carried them (those asked during one
    /// turn of an event loop leave together).
    /// And the connections cut for holding too many bytes of answers not yet whole.
    public var nodeTraffic: (requests: Int, writes: Int, cut: Int) {
        guard case let .success(connections) = connections else { return (0, 0, 0) }
        let traffic = connections.traffic
        return (traffic.requests.load(ordering: .relaxed), traffic.writes.load(ordering: .relaxed), traffic.cut.load(ordering: .relaxed))
    }

    /// Node `index`'s answers to `requests`, pipelined on one connection (`alone`: on a
    /// connection carrying nothing else meanwhile, for a long poll).
    func ask(_ index: Int, _ requests: [ClientRequest], timeoutMilliseconds: Int? = nil, alone: Bool = false) async throws -> [ClientResponse] {
        let answers = try await connections.get().ask(
            index, requests, timeoutMilliseconds: timeoutMilliseconds ?? self.timeoutMilliseconds, alone: alone)
        guard answers.count == requests.count else { throw CertifiedReadError.answer("\(answers.count) answers to \(requests.count) requests") }
        return answers
    }

    /// Asks every node for its newest certified checkpoint and status (verified), so that
    /// freshness follows the chain even when nobody reads.
    public func refresh() async {
        for index in nodes.indices { _ = try? await attempt(index, key: StateKeys.meta, status: true) }
    }

    /// One refresh for every caller meanwhile: those that come while one runs wait for it
    /// rather than start another (requests that need a first answer, not one each).
    func sharedRefresh() async {
        let task = sharedRefreshTask.withLock { running -> Task<Void, Never> in
            if let running { return running }
            let task = Task { [self] in
                await refresh()
                sharedRefreshTask.withLock { $0 = nil }
            }
            running = task
            return task
        }
        await task.value
    }
    private let sharedRefreshTask = Mutex<Task<Void, Never>?>(nil)
    /// The final blocks fetched and checked, the newest 256 within 32 MiB: the same block asked
    /// again (`GET /v1/blocks/{height}`, a proposal's number, feeds) costs no node a request
    /// and no signature check.
    let checkedBlocks = Mutex(NewestByNumber<VerifiedBlockContents>(countMax: 256, bytesMax: 32 << 20))
    /// The upgrade schedule as certified at a checkpoint (`rules(ofBlock:)`): the rules of
    /// every block up to that checkpoint, which no later vote changes.
    let scheduleCertified = Mutex<(schedule: UpgradeSchedule, checkpoint: UInt64)?>(nil)

    /// The nodes in the order to send a submission to: each in turn first (round robin),
    /// so that admission's work (a signature check per transaction) is spread over them.
    func submissionOrder() -> [Int] {
        let first = state.withLock { state -> Int in
            defer { state.nextSubmission = (state.nextSubmission + 1) % nodes.count }
            return state.nextSubmission
        }
        return nodes.indices.map { (first + $0) % nodes.count }
    }

    /// The nodes in the order to read from: those whose last answer held and that failed
    /// none for `failedRecentlySeconds`, each in turn first (spreading the reads over them),
    /// then the others (a node that failed is tried last, not first every few reads; one
    /// that answers the 2 s refresh but stalls the rest too).
    func readOrder() -> [Int] {
        let (first, nodes) = state.withLock { state -> (Int, [NodeState]) in
            defer { state.nextRead = (state.nextRead + 1) % state.nodes.count }
            return (state.nextRead, state.nodes)
        }
        return Self.readOrder(first: first, nodes, now: .now)
    }

    /// `readOrder`'s rule, given the node to start from, the nodes' states and the time.
    static func readOrder(first: Int, _ nodes: [NodeState], now: ContinuousClock.Instant) -> [Int] {
        let healthy = nodes.map { node in
            node.lastError == nil && node.failedAt.map { $0.duration(to: now) > .seconds(failedRecentlySeconds) } ?? true
        }
        let rotated = nodes.indices.map { (first + $0) % nodes.count }
        return rotated.filter { healthy[$0] } + rotated.filter { !healthy[$0] }
    }

    /// The nodes in the order to ask them: the one that answered last first.
    func order() -> [Int] {
        let first = state.withLock { $0.preferred }
        return nodes.indices.map { (first + $0) % nodes.count }
    }

    /// Runs blocking work (a file sync, synchronous reads) on the pool's threads, off the server's.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            threads.submit { continuation.resume(with: Result { try body() }) }
        }
    }

    /// `read`, for synchronous code on the pool's threads (`blocking`): waits for it.
    /// Never from an event loop or a task: it blocks its thread.
    func readBlocking(_ key: StateKey) throws -> VerifiedRecord {
        let result = Mutex<Result<VerifiedRecord, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let found: Result<VerifiedRecord, any Error>
            do { found = .success(try await read(key)) } catch { found = .failure(error) }
            result.withLock { $0 = found }
            done.signal()
        }
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// The validator sets followed through node `index`'s handovers: on from those already
    /// followed through it (each handover's certificate is checked once per node), asking
    /// again while an answer is full.
    func trusted(_ index: Int) async throws -> TrustedValidators {
        var trusted = state.withLock { $0.nodes[index].trusted } ?? TrustedValidators(genesis: genesis.validatorKeys)
        while true {
            let (followed, complete) = try CertifiedReader.follow(
                try await ask(index, [.handovers(after: trusted.changedAt)])[0], from: trusted, chainId: genesis.chainId)
            trusted = followed
            state.withLock { $0.nodes[index].trusted = followed }
            if complete { return trusted }
        }
    }

    /// One node: follow its handovers and read the record in one round trip, check it,
    /// check its freshness; with `status`, also its reported height (for `refresh` and
    /// /v1/status, not every read).
    private func attempt(_ index: Int, key: StateKey, status: Bool = false) async throws -> VerifiedRecord {
        do {
            let known = state.withLock { $0.nodes[index].trusted }
            let requests = CertifiedReader.recordRequests(key, genesis: genesis, from: known)
            let answers = try await ask(index, requests + (status ? [.status] : []))
            var reported: NodeStatus?
            if status {
                guard case let .status(found) = answers[requests.count] else { throw CertifiedReadError.answer("not a status") }
                reported = found
            }
            switch try CertifiedReader.record(key, genesis: genesis, from: known, answers: Array(answers.prefix(requests.count)), checked: checked) {
            case let .record(trusted, record):
                state.withLock { $0.nodes[index].trusted = trusted }
                return try accepted(record, trusted: trusted, reported: reported, from: index)
            case let .moreHandovers(partly):
                // A node with more validator-set changes not yet followed than one answer
                // holds: follow the rest, then ask the record again.
                state.withLock { $0.nodes[index].trusted = partly }
                let trusted = try await self.trusted(index)
                let record = try CertifiedReader.record(
                    key, answer: try await ask(index, [.certifiedState(key)])[0], trusted: trusted, chainId: genesis.chainId, checked: checked)
                return try accepted(record, trusted: trusted, reported: reported, from: index)
            }
        } catch {
            failed(index, error)
            throw error
        }
    }

    /// A record node `index` gave that passed its checks: its height learnt, its freshness checked.
    private func accepted(_ record: CertifiedRecord, trusted: TrustedValidators, reported: NodeStatus?, from index: Int) throws -> VerifiedRecord {
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
        return VerifiedRecord(record: record, source: nodes[index].description, behind: behind, trusted: trusted)
    }

    static let failedRecentlySeconds: Int64 = 10

    func failed(_ index: Int, _ error: any Error) {
        state.withLock {
            $0.nodes[index].lastError = "\(error)"
            $0.nodes[index].lastFailure = "\(error)"
            $0.nodes[index].failedAt = .now
            $0.failures[index] += 1
        }
    }

    /// Closes every connection.
    public func close() {
        threads.stop()
        if case let .success(connections) = connections { connections.close() }
    }
}

/// What became of a transaction sent to the nodes.
public enum Submission: Sendable, Equatable {
    /// A node admitted it (or already had it: the same bytes; `held`).
    case accepted(source: String, held: Bool = false)
    /// A node refused it as `nonceUsed`: the signer's nonce is recorded, by these bytes
    /// applied or by another transaction; which, only a proof of these bytes' place says.
    case nonceHeld(source: String)
    /// A node's admission refused it, with the node's reason.
    case refused(String)
}

/// A transaction's place and result, checked (`ResultCheck`), and the node that answered.
public struct VerifiedTransactionResult: Sendable {
    public let result: VerifiedResult
    public let source: String
}

/// A final transaction, its inclusion verified.
public struct VerifiedInclusion: Sendable {
    public let inclusion: TransactionInclusion
    public let source: String
}

extension NodePool {
    /// Admission refusals that say the node is busy or stopping, not that the transaction
    /// is wrong (`AdmissionError`): another node may take it.
    static let transientRefusals = ["mempoolFull", "mempoolShare", "verifierBusy", "overloaded", "stopping", "noAnswer"]

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
    /// `duplicate`, counted as accepted here; one that applied it, or another transaction
    /// with its nonce, `nonceUsed` (`nonceHeld`: the caller looks for its place).
    public func submit(_ transaction: [UInt8]) async throws -> Submission {
        var failures: [(String, String)] = []
        for index in submissionOrder() {
            do {
                switch admission(try await ask(index, [.submit(transaction)]).first, from: index) {
                case let .success(submission): return submission
                case let .failure(failure): failures.append((failure.node, failure.reason))  // busy or failed: try another
                }
            } catch {
                failures.append((nodes[index].description, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// What node `index`'s answer to a submission says: taken (admitted, or the same bytes
    /// already held or applied), refused for good, or a failure (busy, an error, not an
    /// admission answer) after which another node is tried.
    private func admission(_ response: ClientResponse?, from index: Int) -> Result<Submission, AdmissionFailure> {
        let node = nodes[index].description
        switch response {
        case .admitted: return .success(.accepted(source: node))
        case let .refused(reason) where reason == "duplicate": return .success(.accepted(source: node, held: true))
        case let .refused(reason) where reason.hasPrefix("nonceUsed"): return .success(.nonceHeld(source: node))
        case let .refused(reason) where Self.transientRefusals.contains(where: reason.hasPrefix): return .failure(AdmissionFailure(node, reason))
        case let .refused(reason): return .success(.refused(reason))
        case let .error(reason): return .failure(AdmissionFailure(node, reason))
        default: return .failure(AdmissionFailure(node, "not an admission answer"))
        }
    }

    /// A node that did not take or refuse a submission, and why.
    private struct AdmissionFailure: Error {
        let node: String, reason: String
        init(_ node: String, _ reason: String) {
            self.node = node
            self.reason = reason
        }
    }

    /// Transactions of one batch sent to a node in one pipelined write, at most.
    static let batchChunkMax = 32
    /// Chunks of batches in flight to one node at once, at most, whatever the number of
    /// batches: 192 requests, which with the 48 requests the server answers at once stay
    /// under what one event loop's 4 connections to a node may carry (the node closes a
    /// connection past 64 in flight), even when every chunk lands on one loop.
    static let batchChunksInFlightMax = 6

    /// Sends signed transactions as `submit` sends one each, in chunks pipelined on one
    /// connection: the answers in the same order. A transaction for which no node answered
    /// (every node unreachable, failing or busy) throws `NoVerifiedAnswer` for the whole
    /// batch, after the others were sent (sending it again is harmless: same bytes).
    public func submit(batch transactions: [[UInt8]]) async throws -> [Submission] {
        let chunks = stride(from: 0, to: transactions.count, by: Self.batchChunkMax).map { $0..<min($0 + Self.batchChunkMax, transactions.count) }
        let answers = try await withThrowingTaskGroup(of: (Range<Int>, [Submission]).self) { group in
            for range in chunks {
                group.addTask { [self] in (range, try await submitChunk(Array(transactions[range]))) }
            }
            var answers = [Submission?](repeating: nil, count: transactions.count)
            for try await (range, submissions) in group {
                for (offset, submission) in submissions.enumerated() { answers[range.lowerBound + offset] = submission }
            }
            return answers.compactMap { $0 }
        }
        guard answers.count == transactions.count else { throw CertifiedReadError.answer("\(answers.count) answers to \(transactions.count) submissions") }
        return answers
    }

    private func submitChunk(_ transactions: [[UInt8]]) async throws -> [Submission] {
        var answers = [Submission?](repeating: nil, count: transactions.count)
        var failures: [(String, String)] = []
        for index in submissionOrder() {
            let left = answers.indices.filter { answers[$0] == nil }
            if left.isEmpty { break }
            let responses: [ClientResponse]
            await batchChunks[index].acquire()
            defer { batchChunks[index].release() }
            do { responses = try await ask(index, left.map { .submit(transactions[$0]) }) } catch {
                failures.append((nodes[index].description, "\(error)"))
                continue
            }
            for (item, response) in zip(left, responses) {
                switch admission(response, from: index) {
                case let .success(submission): answers[item] = submission
                case let .failure(failure): failures.append((failure.node, failure.reason))
                }
            }
        }
        let given = answers.compactMap { $0 }
        guard given.count == transactions.count else { throw NoVerifiedAnswer(failures: failures) }
        return given
    }

    /// Waits (at most `milliseconds`) until the node `source` has the transaction final.
    public func waitFinal(_ id: Bytes32, at source: String, milliseconds: UInt32) async throws -> Bool {
        guard let index = nodes.firstIndex(where: { $0.description == source }) else { return false }
        let response = try await ask(
            index, [.waitFinal(id, timeoutMilliseconds: milliseconds)], timeoutMilliseconds: Int(clamping: milliseconds) + timeoutMilliseconds, alone: true)
        guard case let .transaction(location) = response[0] else { return false }
        return location != nil
    }

    /// A final transaction's place, from the first node whose inclusion proof and commit
    /// certificate hold (its position checked against the proof); nil when every node
    /// that answered says it has no such final transaction.
    public func inclusion(of id: Bytes32) async throws -> VerifiedInclusion? {
        try await firstFound(in: order()) { [self] index -> VerifiedInclusion? in
            let (trusted, answer) = try await trustedWith(index, .transactionProof(id))
            guard case let .transactionProof(found) = answer else { throw CertifiedReadError.answer("not a proof") }
            guard let found else { return nil }
            do {
                try InclusionCheck.verify(found, transaction: id, validators: trusted.keys(at: found.location.height), chainId: genesis.chainId)
            } catch let error as CertificateError {
                throw CertifiedReadError.certificate(error)
            }
            return VerifiedInclusion(inclusion: found, source: nodes[index].description)
        }
    }

    /// A final transaction's place and result (`ResultCheck`): the first node whose answer
    /// proves the result certified; failing that, the first whose answer holds with the
    /// result not certified yet (its latest stable checkpoint below the block) or not
    /// committed (a block under older ledger rules), the result then the node's word and
    /// said to be. A node that states another result than its block committed is passed
    /// over, and when no node proves it, named in the error. When no node can prove a
    /// result (none has a stable checkpoint yet, or their release predates the request)
    /// and none was caught lying, the place alone, proven (`inclusion`), the result said to
    /// be the node's word. Nil when every node that answered says it has no such final
    /// transaction.
    ///
    /// A certified rejection is confirmed with the other nodes: a rejection does not use
    /// the nonce, so the same bytes may have applied in a later block, and a node could
    /// prove the earlier, rejected copy. At most one copy applies, so an applied copy any
    /// node proves is the transaction's result.
    public func result(of id: Bytes32) async throws -> VerifiedTransactionResult? {
        var uncertified: VerifiedTransactionResult?
        var caught = false
        let certified: VerifiedTransactionResult?
        do {
            certified = try await firstFound(in: order()) { [self] index -> VerifiedTransactionResult? in
                let result: VerifiedTransactionResult?
                do { result = try await proven(id, at: index) } catch let error as CertifiedReadError {
                    if case .answer = error {} else { caught = true }
                    throw error
                }
                guard let result else { return nil }
                guard result.result.isCertified else {
                    if uncertified == nil { uncertified = result }
                    throw CertifiedReadError.answer("its result is not certified yet")
                }
                return result
            }
        } catch {
            if let uncertified { return uncertified }
            guard !caught else { throw error }
            guard let found = try await inclusion(of: id) else { return nil }
            return VerifiedTransactionResult(
                result: VerifiedResult(location: found.inclusion.location, certification: .unproven("\(error)")), source: found.source)
        }
        guard let certified else { return uncertified }
        guard !certified.result.location.applied else { return certified }
        for index in order() where nodes[index].description != certified.source {
            if let other = try? await proven(id, at: index), other.result.isCertified, other.result.location.applied { return other }
        }
        return certified
    }

    /// Node `index`'s answer to `transactionResult(id)`, checked (`ResultCheck`); nil when
    /// the node says it has no such final transaction. Throws `CertifiedReadError.answer`
    /// when the node gives no proof, another `CertifiedReadError` when its proof does not hold.
    private func proven(_ id: Bytes32, at index: Int) async throws -> VerifiedTransactionResult? {
        let (trusted, answer) = try await trustedWith(index, .transactionResult(id))
        if case let .error(reason) = answer { throw CertifiedReadError.answer(reason) }
        guard case let .transactionResult(found) = answer else { throw CertifiedReadError.answer("not a result proof") }
        guard let found else { return nil }
        let verified = try ResultCheck.verify(found, transaction: id, trusted: trusted, chainId: genesis.chainId, checked: checked)
        return VerifiedTransactionResult(result: verified, source: nodes[index].description)
    }

    /// The first answer found, asking the nodes in `order` in turn (fail-over on failures
    /// and on answers that do not hold); nil when a node that answered says it has none
    /// and no node found it.
    func firstFound<T>(in order: [Int], _ find: (Int) async throws -> T?) async throws -> T? {
        var failures: [(String, String)] = []
        var absent = 0
        for index in order {
            do {
                if let found = try await find(index) { return found }
                absent += 1
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
        guard complete else { return (try await trusted(index), try await ask(index, [request])[0]) }
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
    /// `excluding`: nodes not to ask (their contents were refuted), nor to take kept contents of.
    public func blockContents(_ height: UInt64, excluding: Set<Int> = []) async throws -> VerifiedBlockContents? {
        if let kept = checkedBlocks.withLock({ $0[height] }), !excluding.contains(where: { nodes[$0].description == kept.source }) { return kept }
        let found = try await firstFound(in: readOrder().filter { !excluding.contains($0) }) { [self] index -> VerifiedBlockContents? in
            do { return try await checkedContents(height, from: index) } catch let error as CertifiedReadError {
                // Contents that do not hold: the node is passed over for a while
                // (`readOrder`), not asked first again at the next block. (Not for a timeout
                // or a connection lost, which the refresh judges: a node marked failed is not
                // up for `/health`.)
                failed(index, error)
                throw error
            } catch let error as WireError {
                failed(index, CertifiedReadError.answer("block \(height): \(error)"))
                throw error
            }
        }
        if let found {
            // A final block never changes: kept checked. Its body twice (as received and
            // decoded), with its results and decided proposals.
            let contents = found.contents
            let bytes = 2 * contents.body.count + contents.certificate.count + contents.results.reduce(0) { $0 + $1.count + 16 }
                + contents.decided.reduce(0) { $0 + $1.count + 16 } + 256
            checkedBlocks.withLock { $0.insert(found, for: height, bytes: bytes) }
        }
        return found
    }

    /// Node `index`'s contents of block `height`, checked against the block's commit
    /// certificate and for holding together; nil when the node has no such block.
    private func checkedContents(_ height: UInt64, from index: Int) async throws -> VerifiedBlockContents? {
        let (trusted, answer) = try await trustedWith(index, .blockContents(height))
        guard case let .blockContents(answered) = answer else { throw CertifiedReadError.answer("not a block's contents") }
        guard var found = answered else { return nil }
        let block = try Block(wireBytes: found.body)
        guard found.height == height, block.seq == height else {
            throw CertifiedReadError.answer("asked for block \(height), answered block \(block.seq)")
        }
        guard found.results.count == block.commands.count else {
            throw CertifiedReadError.answer("block \(height) has \(block.commands.count) transactions and \(found.results.count) results")
        }
        do throws(CertificateError) {
            try InclusionCheck.verifyCommit(
                digest: block.digest, height: height, certificate: found.certificate, validators: trusted.keys(at: height), chainId: genesis.chainId)
        } catch {
            throw CertifiedReadError.certificate(error)
        }
        // The node's word on what the block did besides: it must at least hold
        // together, or another node is asked. Each decided proposal is decided by one of
        // the block's proposals or votes, once, at its height: a node naming more (to
        // have the gateway fetch records by the thousand from it) is refused before any.
        let decisions = found.decided.count + found.decidedLeftOut.count
        if decisions > 0 {
            let governance = Self.governanceTransactions(block)
            guard decisions <= governance else {
                throw CertifiedReadError.answer("block \(height): \(decisions) proposals decided by its \(governance) proposals and votes")
            }
        }
        found = try await withDecidedLeftOut(found, from: index)
        var decided: Set<UInt64> = []
        for record in found.decided {
            guard let proposal = try? Proposal(wireBytes: record), proposal.status.decidedAt == height, decided.insert(proposal.id).inserted else {
                throw CertifiedReadError.answer("block \(height): a decided proposal's record is not that of a proposal it decided, once")
            }
        }
        guard found.opened.allSatisfy({ $0.position < UInt64(block.commands.count) }) else {
            throw CertifiedReadError.answer("block \(height): a proposal opened at a position past its transactions")
        }
        return VerifiedBlockContents(contents: found, block: block, source: nodes[index].description)
    }

    /// How many of `block`'s transactions propose or vote: the most proposals it can decide.
    static func governanceTransactions(_ block: Block) -> Int {
        block.commands.reduce(0) { count, command in
            switch (try? SignedTransaction(wireBytes: command))?.transaction.body {
            case .propose?, .vote?: count + 1
            default: count
            }
        }
    }

    /// `found` with the records of the decided proposals it names by number only
    /// (`BlockContents.decidedLeftOut`), asked of the node that answered, in chunks: its
    /// word, as the records the answer carries are.
    private func withDecidedLeftOut(_ found: BlockContents, from index: Int) async throws -> BlockContents {
        guard !found.decidedLeftOut.isEmpty else { return found }
        var decided = found.decided
        for start in stride(from: 0, to: found.decidedLeftOut.count, by: Self.batchChunkMax) {
            let ids = found.decidedLeftOut[start..<min(start + Self.batchChunkMax, found.decidedLeftOut.count)]
            for (id, answer) in zip(ids, try await ask(index, ids.map { .state(StateKeys.proposal($0)) })) {
                guard case let .state(_, _, record?, _) = answer, (try? Proposal(wireBytes: record))?.id == id else {
                    throw CertifiedReadError.answer("block \(found.height): the record of proposal \(id), which it decided, is not that proposal's")
                }
                decided.append(record)
            }
        }
        return BlockContents(
            height: found.height, body: found.body, certificate: found.certificate, results: found.results, closedEpoch: found.closedEpoch,
            decided: decided, opened: found.opened)
    }

    /// Whether block `height` is final: a node shows its digest with a commit certificate
    /// of a quorum of the validators in force at that height (the block's contents are not
    /// needed for that). False when no node shows one that holds.
    public func isFinal(_ height: UInt64) async -> Bool {
        let found = try? await firstFound(in: readOrder()) { [self] index -> Bool? in
            let (trusted, answer) = try await trustedWith(index, .block(height))
            guard case let .block(summary) = answer else { throw CertifiedReadError.answer("not a block") }
            guard let summary else { return nil }
            guard summary.height == height else { throw CertifiedReadError.answer("asked for block \(height), answered block \(summary.height)") }
            do {
                try InclusionCheck.verifyCommit(
                    digest: summary.digest, height: height, certificate: summary.certificate, validators: trusted.keys(at: height), chainId: genesis.chainId)
            } catch let error as CertificateError {
                throw CertifiedReadError.certificate(error)
            }
            return true
        }
        return found == true
    }

    /// The highest final height a node reports at or past `from`, waiting up to
    /// `milliseconds` for block `from` (a long poll), among the `limit` blocks from it; nil
    /// when none is final yet. The node's word: a hint of where the chain is, never a block.
    public func waitBlocks(from: UInt64, milliseconds: UInt32, limit: UInt32 = ClientRequest.blocksMax) async -> UInt64? {
        // Each node in turn first: one lagging (or lying with nothing) does not hold the head.
        for index in readOrder() {
            let response = try? await ask(
                index, [.blocks(from: from, limit: limit, waitMilliseconds: milliseconds)],
                timeoutMilliseconds: Int(clamping: milliseconds) + timeoutMilliseconds, alone: true)
            if case let .blocks(list) = response?[0] { return list.map(\.height).max() }
        }
        return nil
    }
}

/// At most `limit` holders at once; the others wait, first come first served.
final class AsyncLimiter: Sendable {
    private struct State {
        var available: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ limit: Int) { state = Mutex(State(available: max(1, limit))) }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let granted = state.withLock { state -> Bool in
                guard state.available > 0 else {
                    state.waiting.append(continuation)
                    return false
                }
                state.available -= 1
                return true
            }
            if granted { continuation.resume() }
        }
    }

    /// Hands the place to the first waiting, if any.
    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.available += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
