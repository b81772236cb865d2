import CalissonCrypto
import Foundation
import Ledger
import LightClient
import OpenAPIRuntime
import Transport
import Wire

// Submissions as plain JSON: proposals and votes that the gateway signs for its partner
// (once per Idempotency-Key, as rewards), and redemptions and transfers that a citizen's
// wallet signed (the gateway encodes the fields, checks the signature, relays the bytes).

extension SubmitAnswer {
    typealias State = Components.Schemas.TransactionState

    /// The answer in an operation's own type, given its cases.
    func output<Output>(
        ok: (State) -> Output, accepted: (State, String) -> Output, badRequest: (Components.Responses.BadRequest) -> Output,
        conflict: (Components.Schemas.Problem) -> Output, unprocessable: (Components.Responses.Refused) -> Output,
        unavailable: (Components.Responses.ServiceUnavailable) -> Output, badGateway: (Components.Responses.BadGateway) -> Output
    ) -> Output {
        switch self {
        case let .final(state): return ok(state)
        case let .pending(state, location): return accepted(state, location)
        case let .badRequest(response): return badRequest(response)
        case let .conflict(problem): return conflict(problem)
        case let .unprocessable(problem): return unprocessable(.init(body: .application_problem_plus_json(problem)))
        case let .unavailable(problem): return unavailable(.init(body: .application_problem_plus_json(problem)))
        case let .badGateway(response): return badGateway(response)
        }
    }
}

extension Operations.reward.Output {
    init(_ answer: SubmitAnswer) {
        self = answer.output(
            ok: { .ok(.init(body: .json($0))) }, accepted: { .accepted(.init(headers: .init(Location: $1), body: .json($0))) }, badRequest: Self.badRequest,
            conflict: { .conflict(.init(body: .application_problem_plus_json($0))) }, unprocessable: Self.unprocessableContent, unavailable: Self.serviceUnavailable, badGateway: Self.badGateway)
    }
}

extension Operations.propose.Output {
    init(_ answer: SubmitAnswer) {
        self = answer.output(
            ok: { .ok(.init(body: .json($0))) }, accepted: { .accepted(.init(headers: .init(Location: $1), body: .json($0))) }, badRequest: Self.badRequest,
            conflict: { .conflict(.init(body: .application_problem_plus_json($0))) }, unprocessable: Self.unprocessableContent, unavailable: Self.serviceUnavailable, badGateway: Self.badGateway)
    }
}

extension Operations.vote.Output {
    init(_ answer: SubmitAnswer) {
        self = answer.output(
            ok: { .ok(.init(body: .json($0))) }, accepted: { .accepted(.init(headers: .init(Location: $1), body: .json($0))) }, badRequest: Self.badRequest,
            conflict: { .conflict(.init(body: .application_problem_plus_json($0))) }, unprocessable: Self.unprocessableContent, unavailable: Self.serviceUnavailable, badGateway: Self.badGateway)
    }
}

// Redemptions and transfers have no Idempotency-Key, so no 409: the same request is the
// same bytes, the same transaction. (`conflict` is never given to them.)
extension Operations.redeem.Output {
    init(_ answer: SubmitAnswer) {
        self = answer.output(
            ok: { .ok(.init(body: .json($0))) }, accepted: { .accepted(.init(headers: .init(Location: $1), body: .json($0))) }, badRequest: Self.badRequest,
            conflict: { .unprocessableContent(.init(body: .application_problem_plus_json($0))) },
            unprocessable: Self.unprocessableContent, unavailable: Self.serviceUnavailable, badGateway: Self.badGateway)
    }
}

extension Operations.transfer.Output {
    init(_ answer: SubmitAnswer) {
        self = answer.output(
            ok: { .ok(.init(body: .json($0))) }, accepted: { .accepted(.init(headers: .init(Location: $1), body: .json($0))) }, badRequest: Self.badRequest,
            conflict: { .unprocessableContent(.init(body: .application_problem_plus_json($0))) },
            unprocessable: Self.unprocessableContent, unavailable: Self.serviceUnavailable, badGateway: Self.badGateway)
    }
}

extension GatewayAPI {
    /// Blocks from now until a proposal's vote closes, unless the request says.
    static let deadlineInDefault: UInt64 = 5_000

    func propose(_ input: Operations.propose.Input) async throws -> Operations.propose.Output {
        guard case let .json(request) = input.body else { return .init(SubmitAnswer.badRequest("a JSON body is needed")) }
        let action: GovernanceAction
        do { action = try Self.action(request.action) } catch { return .init(error) }
        // Given, it must be in range (a negative one is not "not given").
        let deadlineIn = request.deadlineIn.map { UInt64(exactly: $0) ?? 0 } ?? Self.deadlineInDefault
        guard (1...LedgerLimits.blockSpanMax).contains(deadlineIn) else {
            return .init(SubmitAnswer.badRequest("deadlineIn must be from 1 to \(LedgerLimits.blockSpanMax) blocks"))
        }
        // Of the action as asked (for parameters: the fields given, before the others are
        // taken from those in force), so that a retry is the same request whatever changed.
        let fingerprint = SHA256.hash("propose\u{0}\(Hex.encode(action.wireBytes))\u{0}\(deadlineIn)").hex
        let height: UInt64
        do { height = try await pool.reportedHeight() } catch { return .badGateway(Problems.badGateway(error)) }
        var signed = action
        if request.action.kind == .setParameters {
            // The fields left out keep their values in force (certified), as the CLI's
            // `set-parameters` does: taking the defaults silently reset them (a token value
            // set back to 0 stopped the settlement files).
            // Before any certified checkpoint, those of the genesis (as for a transaction's expiry).
            let inForce: Parameters
            switch await Self.record(StateKeys.parameters, Parameters.self, pool) {
            case let .success((current, _)): inForce = current
            case .failure(.absent): inForce = pool.genesis.parameters  // every chain has them from its genesis
            case let .failure(.failed(error)):
                guard pool.newestCertifiedHeight == 0 else { return .badGateway(Problems.badGateway(error)) }
                inForce = pool.genesis.parameters
            }
            do { signed = try Self.action(request.action, parametersInForce: inForce) } catch { return .init(error) }
        }
        if action.rulesIntroduced > LedgerRules.initial {
            // Below its rules the ledger reads the action as an unknown kind (as older code
            // does): say why rather than sign it, when a certified answer says so (without
            // one, as on a chain with no checkpoint yet, the ledger decides).
            var schedule: UpgradeSchedule?
            switch await Self.record(StateKeys.upgrades, UpgradeSchedule.self, pool) {
            case let .success((found, _)): schedule = found
            case .failure(.absent): schedule = UpgradeSchedule()
            case .failure(.failed): schedule = nil
            }
            // The next block's rules: the height is a node's word, so it saturates (a node
            // saying 2^64 − 1 trapped the gateway here).
            if let schedule, schedule.rules(atHeight: height.saturatingAdding(1)) < action.rulesIntroduced {
                let rules = schedule.rules(atHeight: height.saturatingAdding(1))
                let coming = schedule.upgrades.first { $0.rules >= action.rulesIntroduced }
                return .init(SubmitAnswer.unprocessable(Problems.problem(
                    "rules-not-in-force", "Not in the ledger rules in force", 422,
                    "\(request.action.kind.rawValue) needs ledger rules \(action.rulesIntroduced); rules \(rules) are in force"
                        + (coming.map { " (upgrade \($0.name) brings rules \($0.rules) from height \($0.height))" } ?? " and no upgrade to them is voted"))))
            }
        }
        var answer = await signOnce(key: input.headers.Idempotency_hyphen_Key, request: fingerprint, wait: Awaited(input.query.wait)) { _ in
            .propose(signed, deadline: height.saturatingAdding(deadlineIn))
        }
        // Applied: say its number (the block's events name the proposals it opened; the
        // finality watch's answer has it already), else asked of a node with a place again
        // (the wait gave it back), else left out.
        if case var .final(state) = answer, state.result == .applied, state.proposal == nil, let height = state.height.flatMap({ UInt64(exactly: $0) }),
            let position = state.position.flatMap({ UInt64(exactly: $0) }), await HeldPlace.current?.retake() ?? true,
            let found = try? await pool.blockContents(height)
        {
            state.proposal = found.contents.opened.first { $0.position == position }.map { Self.int($0.proposal) }
            answer = .final(state)
        }
        return .init(answer)
    }

    func vote(_ input: Operations.vote.Input) async throws -> Operations.vote.Output {
        guard case let .json(request) = input.body else { return .init(SubmitAnswer.badRequest("a JSON body is needed")) }
        guard let proposal = UInt64(exactly: request.proposal), proposal >= 1 else {
            return .init(SubmitAnswer.badRequest("proposal numbers start at 1"))
        }
        let fingerprint = SHA256.hash("vote\u{0}\(proposal)\u{0}\(request.approve)").hex
        return .init(await signOnce(key: input.headers.Idempotency_hyphen_Key, request: fingerprint, wait: Awaited(input.query.wait)) { _ in
            .vote(proposal: proposal, approve: request.approve)
        })
    }

    func redeem(_ input: Operations.redeem.Input) async throws -> Operations.redeem.Output {
        guard case let .json(request) = input.body else { return .init(SubmitAnswer.badRequest("a JSON body is needed")) }
        guard let acceptor = Identifier(request.acceptor) else { return .badRequest(Problems.badIdentifier(request.acceptor)) }
        guard let amount = UInt64(exactly: request.amount), (1...LedgerLimits.amountMax).contains(amount) else {
            return .init(SubmitAnswer.badRequest("amount must be from 1 to \(LedgerLimits.amountMax)"))
        }
        guard let service = Bytes32(hex: request.service.lowercased()) else { return .init(SubmitAnswer.badRequest("service must be 64 hexadecimal digits")) }
        return .init(await relayCitizen(
            account: request.account, nonce: request.nonce, expiryHeight: request.expiryHeight, signature: request.signature,
            body: .redeem(acceptor: acceptor, amount: amount, service: service), wait: Awaited(input.query.wait)))
    }

    func transfer(_ input: Operations.transfer.Input) async throws -> Operations.transfer.Output {
        guard case let .json(request) = input.body else { return .init(SubmitAnswer.badRequest("a JSON body is needed")) }
        guard let programme = Identifier(request.programme) else { return .badRequest(Problems.badIdentifier(request.programme)) }
        guard let to = Bytes32(hex: request.to.lowercased()) else { return .init(SubmitAnswer.badRequest("to must be 64 hexadecimal digits")) }
        guard let amount = UInt64(exactly: request.amount), (1...LedgerLimits.amountMax).contains(amount) else {
            return .init(SubmitAnswer.badRequest("amount must be from 1 to \(LedgerLimits.amountMax)"))
        }
        return .init(await relayCitizen(
            account: request.account, nonce: request.nonce, expiryHeight: request.expiryHeight, signature: request.signature,
            body: .transfer(to: Ed25519PublicKey(to), programme: programme, amount: amount), wait: Awaited(input.query.wait)))
    }

    /// A citizen's transaction from its fields and signature: encoded, its signature
    /// checked here (so that a wallet's mistake is named, with the digest it should have
    /// signed), then relayed.
    func relayCitizen(account: String, nonce: Int64, expiryHeight: Int64, signature: String, body: TransactionBody, wait: Awaited) async -> SubmitAnswer {
        guard let key = Bytes32(hex: account.lowercased()) else { return .badRequest("account must be 64 hexadecimal digits") }
        guard let nonce = UInt64(exactly: nonce) else { return .badRequest("nonce must be 0 or more") }
        guard let expiry = UInt64(exactly: expiryHeight), expiry >= 1 else { return .badRequest("expiryHeight must be 1 or more") }
        guard let raw = Hex.decode(signature.lowercased()), let parsed = Ed25519Signature(rawRepresentation: raw) else {
            return .badRequest("signature must be 128 hexadecimal digits")
        }
        let transaction = Transaction(chainId: pool.genesis.chainId, signer: .citizen(Ed25519PublicKey(key)), nonce: nonce, expiryHeight: expiry, body: body)
        guard let digest = transaction.signingDigest else { return .badRequest("the chain id cannot sign") }
        let signed = SignedTransaction(transaction: transaction, signature: parsed)
        guard SignatureCheck(publicKey: Ed25519PublicKey(key), digest: digest, signature: signed.signature).verify() else {
            return .unprocessable(Problems.problem(
                "bad-signature", "Bad signature", 422,
                "the signature does not verify under account \(key.hex) over the transaction's signing digest \(digest.hex) (transaction bytes \(Hex.encode(transaction.wireBytes)); Docs/WIRE.md)"))
        }
        return SubmitAnswer(await relay(signed.wireBytes, wait: wait))
    }

    // MARK: Governance actions from JSON

    /// The action a request describes, each mistake a 400 naming its field; parameters
    /// left out of a `setParameters` take their values in `parametersInForce`, or their
    /// defaults without it.
    static func action(_ request: Components.Schemas.GovernanceAction, parametersInForce: Parameters? = nil) throws(SubmitAnswer) -> GovernanceAction {
        do { return try buildAction(request, parametersInForce: parametersInForce) } catch let answer as SubmitAnswer {
            throw answer
        } catch let error as GenesisError {
            throw .badRequest("\(error.field): \(error.reason)")
        } catch {
            throw .badRequest("action: \(error)")
        }
    }

    private static func buildAction(_ request: Components.Schemas.GovernanceAction, parametersInForce: Parameters?) throws -> GovernanceAction {
        func target() throws -> Identifier {
            guard let raw = request.target else { throw SubmitAnswer.badRequest("action.target is needed for \(request.kind.rawValue)") }
            guard let id = Identifier(raw) else { throw SubmitAnswer.badRequest(Problems.badIdentifier(raw)) }
            return id
        }
        func key(_ raw: String?, _ field: String) throws -> Bytes32? {
            guard let raw else { return nil }
            guard let key = Bytes32(hex: raw.lowercased()) else { throw SubmitAnswer.badRequest("action.\(field) must be 64 hexadecimal digits") }
            return key
        }
        /// A definition in the genesis file's form, decoded as the genesis file is (its
        /// bounds, its field names), then checked as the genesis checks it.
        func entry<Entry: Decodable>(_ value: (some Encodable)?, _ field: String, as type: Entry.Type) throws -> Entry {
            guard let value else { throw SubmitAnswer.badRequest("action.\(field) is needed for \(request.kind.rawValue)") }
            do { return try JSONFile.decode(Entry.self, bytes: Array(try JSONEncoder().encode(value)), path: "action.\(field)") } catch {
                throw SubmitAnswer.badRequest("\(error)")
            }
        }
        // A field the kind does not use is a mistake, said rather than ignored.
        let used: Set<String>
        switch request.kind {
        case .admitPartner: used = ["partner"]
        case .setPartnerEndpoints: used = ["target", "endpoints"]
        case .cancelUpgrade: used = ["target"]
        case .suspendPartner, .reinstatePartner, .removePartner, .closeProgramme: used = ["target"]
        case .rotateKeys: used = ["target", "signingKey", "nodeKey", "tlsKeyHash"]
        case .createProgramme, .amendProgramme: used = ["programme"]
        case .setValidators: used = ["validators"]
        case .setParameters: used = ["parameters"]
        case .scheduleUpgrade: used = ["upgrade"]
        case .setPartnerCategory: used = ["target", "category"]
        case .setProgrammeAcceptance: used = ["target", "categories"]
        case .setEquivocationPolicy: used = ["suspend"]
        }
        let present: [(String, Bool)] = [
            ("target", request.target != nil), ("partner", request.partner != nil), ("programme", request.programme != nil),
            ("validators", request.validators != nil), ("parameters", request.parameters != nil), ("signingKey", request.signingKey != nil),
            ("nodeKey", request.nodeKey != nil), ("tlsKeyHash", request.tlsKeyHash != nil), ("upgrade", request.upgrade != nil),
            ("category", request.category != nil), ("categories", request.categories != nil), ("suspend", request.suspend != nil),
            ("endpoints", request.endpoints != nil),
        ]
        for (field, isPresent) in present where isPresent && !used.contains(field) {
            throw SubmitAnswer.badRequest("action.\(field) is not used by \(request.kind.rawValue) (it takes \(used.sorted().joined(separator: ", ")))")
        }
        switch request.kind {
        case .admitPartner:
            let partner = try entry(request.partner, "partner", as: GenesisFile.PartnerEntry.self)
            // A mistake names its field (`action`'s catch), not the genesis whose reader this is.
            return .admitPartner(try partner.partner("action.partner"), endpoints: try partner.peerEndpoints("action.partner"))
        case .cancelUpgrade: return .cancelUpgrade(try target())
        case .setPartnerEndpoints:
            guard let listed = request.endpoints else { throw SubmitAnswer.badRequest("action.endpoints is needed for setPartnerEndpoints (empty: none)") }
            return .setPartnerEndpoints(try target(), try GenesisFile.endpoints(listed, "action.endpoints"))
        case .suspendPartner: return .setPartnerStatus(try target(), .suspended)
        case .reinstatePartner: return .setPartnerStatus(try target(), .active)
        case .removePartner: return .setPartnerStatus(try target(), .removed)
        case .closeProgramme: return .closeProgramme(try target())
        case .rotateKeys:
            guard let signing = try key(request.signingKey, "signingKey") else { throw SubmitAnswer.badRequest("action.signingKey is needed for rotateKeys") }
            return .rotateKeys(
                try target(), signingKey: Ed25519PublicKey(signing), nodeKey: try key(request.nodeKey, "nodeKey").map(Ed25519PublicKey.init),
                tlsKeyHash: try key(request.tlsKeyHash, "tlsKeyHash"))
        case .createProgramme:
            return .createProgramme(try entry(request.programme, "programme", as: GenesisFile.ProgrammeEntry.self).programme("action.programme"))
        case .amendProgramme:
            return .amendProgramme(try entry(request.programme, "programme", as: GenesisFile.ProgrammeEntry.self).programme("action.programme"))
        case .setValidators:
            guard let validators = request.validators, !validators.isEmpty else { throw SubmitAnswer.badRequest("action.validators is needed for setValidators") }
            return .setValidators(try validators.map { raw in
                guard let id = Identifier(raw) else { throw SubmitAnswer.badRequest(Problems.badIdentifier(raw)) }
                return id
            })
        case .setParameters:
            return .setParameters(try entry(request.parameters, "parameters", as: GenesisFile.ParametersEntry.self).parameters("action.parameters", over: parametersInForce))
        case .scheduleUpgrade:
            guard let upgrade = request.upgrade else { throw SubmitAnswer.badRequest("action.upgrade is needed for scheduleUpgrade") }
            guard let name = Identifier(upgrade.name) else { throw SubmitAnswer.badRequest(Problems.badIdentifier(upgrade.name)) }
            guard let height = UInt64(exactly: upgrade.height), height >= 1 else { throw SubmitAnswer.badRequest("action.upgrade.height must be 1 or more") }
            guard let rules = UInt32(exactly: upgrade.rules), (LedgerRules.initial...LedgerRules.newest).contains(rules) else {
                throw SubmitAnswer.badRequest(LedgerRules.scheduleRefusal("action.upgrade.rules", upgrade.rules))
            }
            return .scheduleUpgrade(ScheduledUpgrade(name: name, height: height, rules: rules))
        case .setPartnerCategory:
            return .setPartnerCategory(try target(), request.category.flatMap { Category(name: $0.rawValue) })
        case .setProgrammeAcceptance:
            guard let names = request.categories else { throw SubmitAnswer.badRequest("action.categories is needed for setProgrammeAcceptance (empty: none)") }
            let categories = names.compactMap { Category(name: $0.rawValue) }.sorted { $0.rawValue < $1.rawValue }
            guard Set(categories).count == categories.count else { throw SubmitAnswer.badRequest("action.categories lists a category twice") }
            return .setProgrammeAcceptance(try target(), categories)
        case .setEquivocationPolicy:
            guard let suspend = request.suspend else { throw SubmitAnswer.badRequest("action.suspend is needed for setEquivocationPolicy") }
            return .setEquivocationPolicy(suspend: suspend)
        }
    }
}
