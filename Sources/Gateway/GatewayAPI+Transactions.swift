import CalissonCrypto
import Ledger
import LightClient
import OpenAPIRuntime
import Synchronization
import Wire

/// Relaying signed transactions and finding them once final. A transaction is named by the
/// hash of its bytes, so a retried request never has a second effect: the same bytes are
/// the same transaction, which a node already holds (`duplicate`) or has applied.
extension GatewayAPI {
    /// How long `POST /v1/transactions` waits for finality before answering 202.
    static let finalityWaitMilliseconds: UInt32 = 30_000

    func submitTransaction(_ input: Operations.submitTransaction.Input) async throws -> Operations.submitTransaction.Output {
        guard case let .json(body) = input.body, let bytes = Hex.decode(body.transaction), bytes.count <= SignedTransaction.byteCountMax else {
            return .badRequest(Problems.badRequest("transaction must be the hex of at most \(SignedTransaction.byteCountMax) bytes"))
        }
        do { _ = try SignedTransaction(wireBytes: bytes) } catch {
            return .unprocessableContent(.init(body: .application_problem_plus_json(Problems.problem(
                "not-a-transaction", "Not a signed transaction", 422,
                "the bytes are not a signed transaction in its canonical wire form (Docs/WIRE.md): \(error)"))))
        }
        switch await relay(bytes, wait: Awaited(input.query.wait)) {
        case let .final(state): return .ok(.init(body: .json(state)))
        case let .pending(state, location): return .accepted(.init(headers: .init(Location: location), body: .json(state)))
        case let .refused(problem), let .nonceHeld(problem): return .unprocessableContent(.init(body: .application_problem_plus_json(problem)))
        case let .failed(response): return .badGateway(response)
        }
    }

    /// Transactions in one batch, at most (the document's `maxItems`).
    static let batchCountMax = 256

    /// Every item checked before anything is sent; the batch counts as its transactions
    /// against the key's rate; each answered as `relay` answers without waiting.
    func submitTransactionBatch(_ input: Operations.submitTransactionBatch.Input) async throws -> Operations.submitTransactionBatch.Output {
        guard case let .json(body) = input.body else { return .badRequest(Problems.badRequest("a JSON body is needed")) }
        let items = body.transactions
        guard (1...Self.batchCountMax).contains(items.count) else {
            return .badRequest(Problems.badRequest("transactions must hold 1 to \(Self.batchCountMax) signed transactions, not \(items.count)"))
        }
        var batch: [(bytes: [UInt8], transaction: SignedTransaction)] = []
        for (index, hex) in items.enumerated() {
            guard let bytes = Hex.decode(hex), bytes.count <= SignedTransaction.byteCountMax else {
                return .badRequest(Problems.badRequest("transactions[\(index)] must be the hex of at most \(SignedTransaction.byteCountMax) bytes"))
            }
            do { batch.append((bytes, try SignedTransaction(wireBytes: bytes))) } catch {
                return .unprocessableContent(.init(body: .application_problem_plus_json(Problems.problem(
                    "not-a-transaction", "Not a signed transaction", 422,
                    "transactions[\(index)] is not a signed transaction in its canonical wire form (Docs/WIRE.md): \(error); nothing was sent"))))
            }
        }
        if let charge = AccessMiddleware.charge, items.count > 1 {
            guard items.count <= charge.rate else {
                return .badRequest(Problems.badRequest(
                    "a batch of \(items.count) transactions is over the key's rate of \(charge.rate) per second: send at most \(charge.rate) at once"))
            }
            if let wait = charge.take(items.count - 1) {
                return .tooManyRequests(.init(
                    headers: .init(Retry_hyphen_After: Int32(clamping: wait)),
                    body: .application_problem_plus_json(Problems.problem(
                        "rate-limited", "Too many requests", 429, "a batch of \(items.count) transactions is over what the key has left of its rate this second"))))
            }
        }
        let submissions: [Submission]
        do { submissions = try await pool.submit(batch: batch.map(\.bytes)) } catch { return .badGateway(Problems.badGateway(error)) }
        var states: [Schemas.TransactionState] = []
        for (item, submission) in zip(batch, submissions) {
            let id = SignedTransaction.idTag.hash(item.bytes)
            switch submission {
            case let .accepted(node, _):
                relayed.remember(id, .pending(source: node, expiry: item.transaction.transaction.expiryHeight))
                states.append(.init(id: id.hex, status: .pending, source: node))
            case .nonceHeld:
                // Applied already (final: its place), or the nonce is another transaction's.
                if let found = try? await pool.inclusion(of: id) {
                    states.append(Self.state(id, found))
                    continue
                }
                relayed.remember(id, .refused(reason: Self.nonceHeldReason))
                states.append(.init(id: id.hex, status: .refused, reason: "the node refused the transaction: \(Self.nonceHeldReason)"))
            case let .refused(reason):
                // Refused now (expired, say) but perhaps final already: an earlier send went through.
                if let found = try? await pool.inclusion(of: id) {
                    states.append(Self.state(id, found))
                    continue
                }
                relayed.remember(id, .refused(reason: reason))
                states.append(.init(id: id.hex, status: .refused, reason: "the node refused the transaction: \(reason)"))
            }
        }
        return .ok(.init(body: .json(.init(transactions: states))))
    }

    func getTransaction(_ input: Operations.getTransaction.Input) async throws -> Operations.getTransaction.Output {
        guard let id = Bytes32(hex: input.path.id.lowercased()) else { return .badRequest(Problems.badRequest("id must be 64 hexadecimal digits")) }
        do {
            guard let found = try await pool.result(of: id) else {
                switch relayed.state(of: id) {
                case let .pending(_, expiry) where pool.newestCertifiedHeight > expiry:
                    // Every block up to its expiry is final and none has it: it never will.
                    return .ok(.init(body: .json(.init(
                        id: id.hex, status: .refused, reason: "expired: not included by its expiry height \(expiry)"))))
                case let .pending(source, _): return .ok(.init(body: .json(.init(id: id.hex, status: .pending, source: source))))
                case .refused(let reason): return .ok(.init(body: .json(.init(id: id.hex, status: .refused, reason: reason))))
                case nil:
                    return .notFound(.init(body: .application_problem_plus_json(Problems.problem(
                        "not-found", "Not found", 404, "transaction \(id.hex) is not final on the nodes followed, and this gateway did not relay it"))))
                }
            }
            return .ok(.init(body: .json(Self.state(id, found))))
        } catch {
            return .badGateway(Problems.badGateway(error))
        }
    }

    /// A transaction found by the finality watch: its block was checked against its commit
    /// certificate, and the block holds it at `position`; its result proven when the
    /// certified state confirmed it (`final.confirmed`).
    static func state(_ final: FinalTransaction) -> Components.Schemas.TransactionState {
        let location = final.location
        var state = Components.Schemas.TransactionState(
            id: final.id.hex, status: .final, height: int(location.height), position: int(location.position),
            result: location.applied ? .applied : .rejected, reason: location.reason, inclusionVerified: true, source: final.source)
        state.proposal = final.proposal.map(int)
        switch final.confirmed {
        case let .result(checkpoint)?:
            state.resultVerified = true
            state.resultCheckpoint = int(checkpoint)
        case .notCommitted?: state.resultVerified = false
        case nil: break
        }
        return state
    }

    /// A transaction found by its inclusion proof (checked against its block's certificate).
    static func state(_ id: Bytes32, _ found: VerifiedInclusion) -> Components.Schemas.TransactionState {
        state(FinalTransaction(id: id, location: found.inclusion.location, source: found.source))
    }

    /// A transaction found with its result's proof (`ResultCheck`): its inclusion checked,
    /// and its result too when a certified checkpoint covers its block.
    static func state(_ id: Bytes32, _ found: VerifiedTransactionResult) -> Components.Schemas.TransactionState {
        var state = state(FinalTransaction(id: id, location: found.result.location, source: found.source))
        if case let .certified(checkpoint, _, _) = found.result.certification {
            state.resultVerified = true
            state.resultCheckpoint = int(checkpoint)
        } else {
            state.resultVerified = false
        }
        return state
    }
}

/// What became of a submission, before it is put in its operation's answer (each
/// operation has its own generated answer type; `SubmitAnswer`s map onto them).
enum SubmitAnswer: Error {
    case final(Components.Schemas.TransactionState)
    case pending(Components.Schemas.TransactionState, location: String)
    case badRequest(Components.Responses.BadRequest)
    case conflict(Components.Schemas.Problem)
    case unprocessable(Components.Schemas.Problem)
    case unavailable(Components.Schemas.Problem)
    case badGateway(Components.Responses.BadGateway)

    init(_ relayed: GatewayAPI.Relayed) {
        switch relayed {
        case let .final(state): self = .final(state)
        case let .pending(state, location): self = .pending(state, location: location)
        case let .refused(problem), let .nonceHeld(problem): self = .unprocessable(problem)
        case let .failed(response): self = .badGateway(response)
        }
    }

    static func badRequest(_ detail: String) -> SubmitAnswer { .badRequest(Problems.badRequest(detail)) }
}

extension GatewayAPI {
    func reward(_ input: Operations.reward.Input) async throws -> Operations.reward.Output {
        guard case let .json(reward) = input.body else { return .init(SubmitAnswer.badRequest("a JSON body is needed")) }
        let key = input.headers.Idempotency_hyphen_Key
        guard let programme = Identifier(reward.programme) else { return .badRequest(Problems.badIdentifier(reward.programme)) }
        guard let account = Bytes32(hex: reward.account.lowercased()) else { return .badRequest(Problems.badRequest("account must be 64 hexadecimal digits")) }
        guard let units = UInt32(exactly: reward.units), units >= 1 else { return .badRequest(Problems.badRequest("units must be from 1 to \(UInt32.max)")) }
        guard !reward.evidence.isEmpty, reward.evidence.count <= 1_024 else { return .badRequest(Problems.badRequest("evidence must be 1 to 1024 characters")) }
        let request = SHA256.hash("\(programme)\u{0}\(account.hex)\u{0}\(units)\u{0}\(reward.evidence)").hex
        return .init(await signOnce(key: key, request: request, wait: Awaited(input.query.wait)) { (signer: PartnerSigner) throws(SubmitAnswer) -> TransactionBody in
            let evidence: Bytes32
            if let given = Bytes32(hex: reward.evidence) {
                evidence = given
            } else if let evidenceKey = signer.evidence {
                evidence = evidenceKey.commitment(of: reward.evidence, for: .evidence)
            } else {
                throw SubmitAnswer.unprocessable(Problems.problem(
                    "no-evidence-key", "No evidence key", 422,
                    "evidence text goes on chain only as a keyed hash, and this gateway holds no evidence key: send a 64-hex commitment"))
            }
            return .attribute(programme: programme, account: Ed25519PublicKey(account), units: units, evidence: evidence)
        })
    }

    /// A transaction this gateway signs for its partner, once per Idempotency-Key: the key
    /// is reserved, the body built (`body` may refuse with an answer), the transaction
    /// signed with a nonce derived from the key and recorded (synced) before it is sent;
    /// a retry of the same key and request sends the recorded bytes again.
    func signOnce(
        key: String, request: String, wait: Awaited, body: (PartnerSigner) throws(SubmitAnswer) -> TransactionBody
    ) async -> SubmitAnswer {
        guard let signer else {
            return .unavailable(Problems.problem(
                "no-signer", "No partner key", 503, "this gateway holds no partner's signing key (calisson-gateway run --partner --signing-key)"))
        }
        guard IdempotencyLog.isValid(key) else {
            return .badRequest("Idempotency-Key must be 1 to \(IdempotencyLog.keyLengthMax) characters of A-Z, a-z, 0-9, '.', '_', ':', '~', '-'")
        }
        let bytes: [UInt8]
        switch signer.log.reserve(key, request: request, client: AccessMiddleware.client ?? "") {
        case let .existing(entry):
            bytes = Hex.decode(entry.transaction) ?? []
            let id = SignedTransaction.idTag.hash(bytes)
            // Final already: that is the answer, the bytes not sent again. Its result as
            // `result(of:)` confirms it (a node may prove an earlier, rejected copy). Looked
            // for at most 10 s (a loaded cluster's answer took a whole client timeout): a look
            // that fails or runs out sends the same bytes again, as before, and their
            // admission says the rest (`nonceHeld`).
            let pool = pool
            let found = await Self.by(ContinuousClock.now + .seconds(10)) { try? await pool.result(of: id) }
            if let found {
                // Rejected because another transaction holds its nonce (signed again after
                // the log was lost, while the first was still on its way): never sent again.
                if case .nonceUsedElsewhere = found.result.certification {
                    try? await markRefused(key, log: signer.log)
                    return .unprocessable(Problems.problem("refused", "Refused by admission", 422, "the node refused the transaction: \(Self.nonceHeldReason)"))
                }
                let state = Self.state(id, found)
                return wait == .certifiedResult ? SubmitAnswer(await certify(state, until: ContinuousClock.now + .milliseconds(Self.finalityWaitMilliseconds)))
                    : .final(state)
            }
            // Its bytes found their nonce held by another transaction once, and are not
            // final: never sent again (once that transaction's record expired, they would
            // apply, a second effect).
            if let refused = entry.refused {
                return .unprocessable(Problems.problem("refused", "Refused by admission", 422, "the node refused the transaction: \(refused)"))
            }
        case .conflict:
            return .conflict(Problems.problem("idempotency-key-reused", "Idempotency-Key reused", 409, "the key '\(key.prefix(64))' was used with another request"))
        case .inFlight:
            return .conflict(Problems.problem(
                "idempotency-key-in-flight", "Idempotency-Key in flight", 409, "a request with the key '\(key.prefix(64))' is being signed: retry shortly"))
        case .full:
            return .unavailable(Problems.problem(
                "idempotency-log-full", "Idempotency log full", 503, "the gateway's idempotency log holds \(IdempotencyLog.entryCountMax) keys: its operator must rotate it"))
        case let .share(share):
            return .unavailable(Problems.problem("idempotency-log-share", "Idempotency log share full", 503, share.description))
        case .reserved:
            let built: TransactionBody
            let expiry: UInt64
            do {
                built = try body(signer)
                expiry = try await expiryHeight()
            } catch let answer as SubmitAnswer {
                signer.log.release(key)
                return answer
            } catch {
                signer.log.release(key)
                return .badGateway(Problems.badGateway(error))
            }
            bytes = Transaction(
                chainId: pool.genesis.chainId, signer: .partner(signer.partner), nonce: IdempotencyLog.nonce(partner: signer.partner.rawValue, key: key),
                expiryHeight: expiry, body: built
            ).signed(with: signer.key).wireBytes
            // Appended and synced on the node pool's threads: an fsync blocks, and the server's tasks run on its event loops.
            let entry = IdempotencyLog.Entry(key: key, request: request, transaction: Hex.encode(bytes)), log = signer.log
            do { try await pool.blocking { try log.record(entry) } } catch {
                signer.log.release(key)  // not recorded, so not sent
                if let full = error as? IdempotencyLog.Full {
                    return .unavailable(Problems.problem("idempotency-log-full", "Idempotency log full", 503, full.description))
                }
                if let share = error as? IdempotencyLog.Share {
                    return .unavailable(Problems.problem("idempotency-log-share", "Idempotency log share full", 503, share.description))
                }
                return .unavailable(Problems.problem("idempotency-log", "Idempotency log unavailable", 503, "the gateway could not record the transaction: \(error)"))
            }
        }
        let relayed = await relay(bytes, wait: wait)
        if case .nonceHeld = relayed {
            // Recorded before answering: a later retry is answered so, never sent.
            do { try await markRefused(key, log: signer.log) } catch {
                return .unavailable(Problems.problem("idempotency-log", "Idempotency log unavailable", 503, "the gateway could not record the refusal: \(error)"))
            }
        }
        return SubmitAnswer(relayed)
    }

    /// Records in the log that `key`'s transaction is never to be sent again (synced, on
    /// the node pool's threads: an fsync blocks).
    private func markRefused(_ key: String, log: IdempotencyLog) async throws {
        try await pool.blocking { try log.markRefused(key, reason: Self.nonceHeldReason) }
    }

    /// Why bytes whose signer's nonce is recorded, and which no node proves final, are
    /// refused: another transaction holds the nonce (for a partner's key, most likely its
    /// first signing, before the gateway's log was lost).
    static let nonceHeldReason =
        "nonceUsed: the signer's nonce is held by another transaction, applied; these bytes were not, and are not sent again"

    /// A height for a new transaction's expiry: a node's height plus at most 300 blocks,
    /// within the chain's `transactionLifetimeMax` (as certified, or the genesis's before
    /// the first checkpoint). The height is the node's word: a wrong one can only get the
    /// transaction refused (`expiryTooFar`) or expired, never applied twice.
    func expiryHeight() async throws -> UInt64 {
        var lifetime = pool.genesis.parameters.transactionLifetimeMax
        if let found = try? await pool.read(StateKeys.parameters), let value = found.record.value, let parameters = try? Parameters(wireBytes: value) {
            lifetime = parameters.transactionLifetimeMax
        }
        return try await pool.reportedHeight().saturatingAdding(min(lifetime, 300))
    }

    /// What a submission waits for before it is answered (`?wait=`).
    enum Awaited: Sendable {
        /// A node's admission (`false`).
        case admission
        /// The transaction's finality, its place proven (`true`, the default).
        case finality
        /// Its result proven too, by the certified state (`certified`).
        case certifiedResult

        init(_ wait: Components.Parameters.Wait?) {
            switch wait {
            case ._false?: self = .admission
            case .certified?: self = .certifiedResult
            case ._true?, nil: self = .finality
            }
        }
    }

    /// What became of signed bytes sent to the nodes.
    enum Relayed {
        case final(Components.Schemas.TransactionState)
        case pending(Components.Schemas.TransactionState, location: String)
        case refused(Components.Schemas.Problem)
        /// Refused as `nonceUsed`, and no node proves these bytes final: the nonce is
        /// another transaction's.
        case nonceHeld(Components.Schemas.Problem)
        case failed(Components.Responses.BadGateway)
    }

    /// Sends signed bytes, waits for what `wait` asks (at most 30 s in all), and says where
    /// they are: final with its verified inclusion (and its result proven, for
    /// `.certifiedResult`: `certify`), or pending (`.admission` answers as soon as a node
    /// admitted it, without looking for it).
    ///
    /// A wait is served by the finality watch (its ticket taken before the bytes are sent),
    /// which finds the transaction in a final block checked against its certificate; the
    /// request's place goes to another request meanwhile, since waiting asks no node. The
    /// same bytes already held or applied by the node are looked for first by their
    /// inclusion proof (final perhaps before the ticket). Without a ticket (too many wait,
    /// or no certified checkpoint known yet) the wait is a long poll to the node that took
    /// the transaction, holding the place. A transaction the watch did not see in time is
    /// looked for by its inclusion proof with a place again, or said pending (202) when no
    /// place comes.
    ///
    /// The 30 s count from the request's start, the admission's time included: the watch
    /// and the long poll end a second before them, leaving that second for the proof asked
    /// then, and no look at the nodes is waited for past them (a review found `wait=true`
    /// could take 30 s plus 10 s per node followed, behind nodes that stall).
    func relay(_ bytes: [UInt8], wait: Awaited) async -> Relayed {
        let deadline = ContinuousClock.now + .milliseconds(Int(clamping: Self.finalityWaitMilliseconds))
        let relayed = await relay(bytes, waitForFinality: wait != .admission, until: deadline)
        guard wait == .certifiedResult, case let .final(state) = relayed else { return relayed }
        return await certify(state, until: deadline)
    }

    /// Whole milliseconds left until `instant` (0 once it has passed).
    static func milliseconds(until instant: ContinuousClock.Instant) -> Int {
        let left = instant - .now
        guard left > .zero else { return 0 }
        let parts = left.components
        return Int(clamping: parts.seconds.saturatingMultiplying(1_000).saturatingAdding(parts.attoseconds / 1_000_000_000_000_000))
    }

    private func relay(_ bytes: [UInt8], waitForFinality wait: Bool, until deadline: ContinuousClock.Instant) async -> Relayed {
        let id = SignedTransaction.idTag.hash(bytes)
        let ticket = wait ? watch.take(id, client: AccessMiddleware.client ?? "") : nil
        defer { if let ticket { watch.forget(ticket) } }
        let source: String, held: Bool
        do {
            switch try await pool.submit(bytes) {
            case let .accepted(node, alreadyHeld):
                (source, held) = (node, alreadyHeld)
                let expiry = (try? SignedTransaction(wireBytes: bytes))?.transaction.expiryHeight ?? UInt64.max
                relayed.remember(id, .pending(source: node, expiry: expiry))
            case let .refused(reason):
                // Refused now (expired, say) but perhaps final already: an earlier send went through.
                if let found = try? await pool.inclusion(of: id) { return .final(Self.state(id, found)) }
                relayed.remember(id, .refused(reason: reason))
                return .refused(Problems.problem("refused", "Refused by admission", 422, "the node refused the transaction: \(reason)"))
            case .nonceHeld:
                // These bytes applied (their place is proven), or another transaction holds the
                // nonce: then refused at once (no wait for a finality that cannot come), and
                // so remembered. Looked for within the request's time; a look that fails or
                // runs out is no proof of absence.
                let pool = pool
                let looked = await Self.by(deadline) { () -> Result<VerifiedInclusion?, any Error>? in
                    do { return .success(try await pool.inclusion(of: id)) } catch { return .failure(error) }
                }
                switch looked {
                case let .success(found?)?: return .final(Self.state(id, found))
                case .success(nil)?: break
                case let .failure(error)?: return .failed(Problems.badGateway(error))
                case nil: return .failed(Problems.badGateway(NoVerifiedAnswer(failures: [("nodes", "no answer in time about a transaction whose nonce is used")])))
                }
                relayed.remember(id, .refused(reason: Self.nonceHeldReason))
                return .nonceHeld(Problems.problem("refused", "Refused by admission", 422, "the node refused the transaction: \(Self.nonceHeldReason)"))
            }
        } catch {
            return .failed(Problems.badGateway(error))
        }
        let pending = Relayed.pending(.init(id: id.hex, status: .pending, source: source), location: "/v1/transactions/\(id.hex)")
        // Not waiting: admitted is the answer (already final, the transaction's URL says so).
        guard wait else { return pending }
        let pool = pool
        if held, let found = await Self.by(deadline, { try? await pool.inclusion(of: id) }) { return .final(Self.state(id, found)) }
        let waitEnd = deadline - .seconds(1)
        if let ticket {
            HeldPlace.current?.release()
            if let final = await watch.wait(ticket, milliseconds: Self.milliseconds(until: waitEnd)) { return .final(Self.state(final)) }
            // Not seen in time: its proof is asked of a node, with a place again.
            guard await HeldPlace.current?.retake() ?? true else { return pending }
        } else {
            let milliseconds = UInt32(clamping: Self.milliseconds(until: waitEnd))
            _ = await Self.by(deadline) { try? await pool.waitFinal(id, at: source, milliseconds: milliseconds) }
        }
        if let found = await Self.by(deadline, { try? await pool.inclusion(of: id) }) { return .final(Self.state(id, found)) }
        return pending
    }

    /// A final transaction's state once the certified state proves its result, until
    /// `deadline`; then pending (202) with the state as it is, `resultVerified` false.
    ///
    /// The proof is its block's certified events (`EventFeed.events(at:certified:)`: the
    /// block's results checked whole against the record they committed, once a certified
    /// checkpoint at or above the block is known), fetched once for the certified feed and
    /// every wait in that block. An applied result is the answer (at most one copy of a
    /// transaction applies). A rejection is answered as `GET /v1/transactions/{id}`
    /// answers it (`NodePool.result(of:)`): the same bytes may have applied in a later
    /// block, and a copy rejected as `nonceUsed` is not proof of the transaction's own
    /// result. A block executed under ledger rules before 7 committed no results: its
    /// result is answered at once, said to be the node's word. The request's place is given
    /// back while it waits (the reads are the feed's, not the request's), and taken again
    /// for a rejection's proof. No look starts past `deadline`, and none is waited for past
    /// it (`Self.by`): a node that stalls cannot hold the answer beyond the time promised.
    private func certify(_ state: Components.Schemas.TransactionState, until deadline: ContinuousClock.Instant) async -> Relayed {
        var unproven = state
        unproven.resultVerified = false
        let location = "/v1/transactions/\(state.id)"
        guard let id = Bytes32(hex: state.id), let height = state.height.flatMap({ UInt64(exactly: $0) }),
            let position = state.position.flatMap({ UInt64(exactly: $0) })
        else { return .pending(unproven, location: location) }
        HeldPlace.current?.release()
        let feed = feed, pool = pool
        // The pause between two looks: a checkpoint comes every few blocks.
        var pause = 100
        while ContinuousClock.now < deadline {
            let final = await Self.by(deadline) {
                try? await feed.events(at: height, certified: true)?.lazy.compactMap(\.final).first { $0.id == id && $0.location.position == position }
            }
            switch (final, final?.confirmed) {
            case let (final?, .notCommitted?): return .final(Self.state(final))
            case let (final?, .result?) where final.location.applied: return .final(Self.state(final))
            case (_?, .result?):
                guard await HeldPlace.current?.retake() ?? true else { break }
                if let found = await Self.by(deadline, { try? await pool.result(of: id) }) {
                    switch found.result.certification {
                    case .certified, .nonceUsedElsewhere, .notCommitted: return .final(Self.state(id, found))
                    case .notYetCertified, .unproven: break  // a node behind the checkpoint answered: ask again
                    }
                }
                HeldPlace.current?.release()
            default: break  // no checkpoint at or above the block yet, or no node gave contents that hold
            }
            // The whole time is waited for: the last pause ends at the deadline.
            try? await Task.sleep(until: min(ContinuousClock.now + .milliseconds(pause), deadline))
            pause = min(1_000, pause * 2)
        }
        return .pending(unproven, location: location)
    }

    /// What `work` gives if it ends before `deadline`, else nil at the deadline (`work`
    /// then runs on unwaited; it must hold nothing of the request's, such as its place).
    private static func by<T: Sendable>(_ deadline: ContinuousClock.Instant, _ work: @escaping @Sendable () async -> T?) async -> T? {
        await withCheckedContinuation { continuation in
            let waiting = ResumedOnce(continuation)
            let timer = Task {
                try? await Task.sleep(until: deadline)
                waiting.resume(nil)
            }
            Task {
                waiting.resume(await work())
                timer.cancel()
            }
        }
    }
}

/// A continuation resumed once, by whichever of several tasks comes first.
final class ResumedOnce<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, Never>?>
    init(_ continuation: CheckedContinuation<T, Never>) { self.continuation = Mutex(continuation) }
    func resume(_ value: T) { continuation.withLock { $0.take() }?.resume(returning: value) }
}

/// The transactions this gateway relayed and are not known final: admitted (pending) or
/// refused, with the admission's reason. In memory, the newest `countMax`: what the
/// gateway can say of a transaction the nodes do not have final.
final class RelayedTransactions: Sendable {
    static let countMax = 100_000
    enum State: Sendable, Equatable {
        case pending(source: String, expiry: UInt64)
        case refused(reason: String)
    }
    private struct Entries {
        var states: [Bytes32: State] = [:]
        var order: [Bytes32] = []
        var first = 0
    }
    private let entries = Mutex(Entries())

    /// A refusal's reason kept, at most (a node's may be 4 KiB: 100,000 of them, 400 MB).
    static let reasonBytesMax = 512

    func remember(_ id: Bytes32, _ state: State) {
        var state = state
        if case let .refused(reason) = state, reason.utf8.count > Self.reasonBytesMax {
            state = .refused(reason: String(decoding: reason.utf8.prefix(Self.reasonBytesMax), as: UTF8.self) + "…")
        }
        entries.withLock { entries in
            if entries.states.updateValue(state, forKey: id) == nil { entries.order.append(id) }
            // Forget the oldest past the bound (the order array is compacted now and then).
            while entries.states.count > Self.countMax, entries.first < entries.order.count {
                entries.states[entries.order[entries.first]] = nil
                entries.first += 1
            }
            if entries.first > Self.countMax {
                entries.order.removeFirst(entries.first)
                entries.first = 0
            }
        }
    }

    func state(of id: Bytes32) -> State? { entries.withLock { $0.states[id] } }
}
