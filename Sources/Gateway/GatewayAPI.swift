import CalissonCrypto
import Ledger
import LightClient
import OpenAPIRuntime
import Settlement
import Wire

/// The operations of Sources/Gateway/openapi.yaml: each state answer read through the
/// node pool (certified, proven, fresh), mapped to the document's schemas. A record that
/// is proven absent is a 404; a path value of the wrong form a 400; no verified answer
/// from any node a 502 naming what each node did.
struct GatewayAPI: APIProtocol {
    let pool: NodePool
    let signer: PartnerSigner?
    let feed: EventFeed
    /// The submissions waiting for finality (`relay`), served from the feed's checked blocks.
    let watch: FinalityWatch
    var settlementRegister: SettlementRegister? = nil
    let relayed = RelayedTransactions()

    typealias Schemas = Components.Schemas

    // MARK: Health and status

    /// From what the pool already knows (refreshed every 2 s), so that an open endpoint
    /// costs the nodes nothing: ready when a checkpoint was verified and a node's last
    /// answer was.
    func getHealth(_ input: Operations.getHealth.Input) async throws -> Operations.getHealth.Output {
        let newest = pool.newestCertifiedHeight
        let up = pool.nodeStates.filter { $0.error == nil && $0.certifiedHeight != nil }.map(\.address.description)
        guard newest > 0, !up.isEmpty else {
            let errors = pool.nodeStates.compactMap { node in node.error.map { "\(node.address): \($0)" } }
            let text = "no verified, fresh answer yet\(errors.isEmpty ? "" : ": " + errors.joined(separator: "; "))"
            RefusalLog.problem("not-ready", text)  // the log's line says why, as for a problem document
            return .serviceUnavailable(.init(body: .plainText(HTTPBody(text + "\n"))))
        }
        return .ok(.init(body: .plainText(HTTPBody("ok: certified checkpoint \(newest), nodes answering \(up.joined(separator: ", "))\n"))))
    }

    /// The nodes as the gateway's refresh (every 2 s) last found them: asked again for each
    /// request, a node that stalls held each one 5 s, and a key's 50 requests a second took
    /// every place of the gateway. Before any checkpoint is verified (a gateway just
    /// started), the request waits for a refresh, one for all such requests.
    func getStatus(_ input: Operations.getStatus.Input) async throws -> Operations.getStatus.Output {
        if pool.newestCertifiedHeight == 0 { await pool.sharedRefresh() }
        let nodes = pool.nodeStates.map { node in
            Schemas.NodeState(
                address: node.address.description, reachable: node.error == nil && node.height != nil, height: node.height.map(Self.int),
                certifiedHeight: node.certifiedHeight.map(Self.int), error: node.error, recentFailure: node.recentFailure)
        }
        guard pool.newestCertifiedHeight > 0 else {
            return .serviceUnavailable(.init(headers: .init(Retry_hyphen_After: 5), body: .application_problem_plus_json(Problems.notReady(nodes: nodes))))
        }
        let copy = pool.mirror.map { mirror in
            let counts = mirror.counts, checkpoint = mirror.checkpoint
            return Schemas.CopyState(
                checkpointHeight: Self.int(checkpoint?.height ?? 0), source: checkpoint?.source, pages: Int64(clamping: counts.pages),
                values: Int64(clamping: counts.values), pagesMax: Int64(clamping: mirror.pagesMax), lastError: mirror.lastError)
        }
        return .ok(.init(body: .json(Schemas.Status(
            chainId: pool.genesis.chainId, genesisDigest: pool.genesis.digest.hex, newestCertifiedHeight: Self.int(pool.newestCertifiedHeight),
            lagMax: Self.int(pool.lagMax), nodes: nodes, copy: copy))))
    }

    // MARK: Records

    func getAccount(_ input: Operations.getAccount.Input) async throws -> Operations.getAccount.Output {
        guard let key = Bytes32(hex: input.path.account.lowercased()) else {
            return .badRequest(Problems.badRequest("account must be 64 hexadecimal digits"))
        }
        let found: VerifiedRecord
        do { found = try await pool.read(StateKeys.account(Ed25519PublicKey(key))) } catch { return .badGateway(Problems.badGateway(error)) }
        // An account with no tokens has no record: proven absent, it is an empty account.
        let account: Account
        do { account = try found.record.value.map { try Account(wireBytes: $0) } ?? Account() } catch { return .badGateway(Problems.badGateway(error)) }
        // Demurrage owed since each lot was last realized, by the ledger's rule: needs the
        // epoch and the programmes' rates, certified too.
        var pending: [Int: Amount] = [:]
        let melting = account.lots.indices.filter { account.lots[$0].expiresAtEpoch == Lot.noExpiry }
        if !melting.isEmpty {
            let meta: LedgerMeta
            switch await Self.record(StateKeys.meta, LedgerMeta.self, pool) {
            case let .success((value, _)): meta = value
            case let .failure(problem): return .badGateway(problem.badGateway)
            }
            // Each programme read once, however many of its lots the account holds.
            var programmes: [Identifier: Programme] = [:]
            for index in melting where account.lots[index].meltedFromEpoch < meta.epoch {
                let lot = account.lots[index]
                if programmes[lot.programme] == nil {
                    switch await Self.record(StateKeys.programme(lot.programme), Programme.self, pool) {
                    case let .success((programme, _)): programmes[lot.programme] = programme
                    case let .failure(problem): return .badGateway(problem.badGateway)
                    }
                }
                guard case let .demurrage(basisPoints)? = programmes[lot.programme]?.lifetime else { continue }
                pending[index] = lot.amount - Lot.afterDemurrage(lot.amount, basisPoints: basisPoints, fromEpoch: lot.meltedFromEpoch, to: meta.epoch)
            }
        }
        let lots = account.lots.enumerated().map { index, lot in
            let melts = lot.expiresAtEpoch == Lot.noExpiry
            return Schemas.Lot(
                programme: lot.programme.rawValue, amount: Self.int(lot.amount),
                expiresAfterEpoch: melts ? nil : Self.int(lot.expiresAtEpoch), demurrage: melts,
                meltedFromEpoch: melts ? Self.int(lot.meltedFromEpoch) : nil, pendingDemurrage: melts ? Self.int(pending[index] ?? 0) : nil)
        }
        let owed = pending.values.reduce(Amount(0), +)
        return .ok(.init(body: .json(Schemas.Account(
            account: key.hex, balance: Self.int(account.balance), balanceAfterDemurrage: Self.int(account.balance - owed), lots: lots,
            verification: Self.verification(found)))))
    }

    func getProgramme(_ input: Operations.getProgramme.Input) async throws -> Operations.getProgramme.Output {
        guard let id = Identifier(input.path.programme) else { return .badRequest(Problems.badIdentifier(input.path.programme)) }
        switch await Self.record(StateKeys.programme(id), Programme.self, pool) {
        case let .failure(problem): return problem.isNotFound ? .notFound(problem.notFound(what: "programme \(id)")) : .badGateway(problem.badGateway)
        case let .success((programme, found)): return .ok(.init(body: .json(Self.schema(programme, found))))
        }
    }

    func getPartner(_ input: Operations.getPartner.Input) async throws -> Operations.getPartner.Output {
        guard let id = Identifier(input.path.partner) else { return .badRequest(Problems.badIdentifier(input.path.partner)) }
        switch await Self.record(StateKeys.partner(id), Partner.self, pool) {
        case let .failure(problem): return problem.isNotFound ? .notFound(problem.notFound(what: "partner \(id)")) : .badGateway(problem.badGateway)
        case let .success((partner, found)):
            let roles = [(Roles.issuer, Schemas.Partner.rolesPayloadPayload.issuer), (.acceptor, .acceptor), (.validator, .validator), (.authority, .authority)]
                .filter { partner.roles.contains($0.0) }.map(\.1)
            // Its endpoints are a record of their own (rules 4), verified on its own.
            let endpoints: [PeerEndpoint], endpointsFound: VerifiedRecord
            switch await Self.record(StateKeys.partnerEndpoints(id), EndpointList.self, pool) {
            case let .success((list, listed)): (endpoints, endpointsFound) = (list.endpoints, listed)
            case let .failure(.absent(listed)): (endpoints, endpointsFound) = ([], listed)
            case let .failure(problem): return .badGateway(problem.badGateway)
            }
            return .ok(.init(body: .json(Schemas.Partner(
                id: partner.id.rawValue, name: partner.name, roles: roles, status: Self.status(partner.status),
                signingKey: partner.signingKey.bytes.hex, nodeKey: partner.nodeKey?.bytes.hex, endpoints: endpoints.map(\.description),
                verification: Self.verification(found), endpointsVerification: Self.verification(endpointsFound)))))
        }
    }

    func getSupply(_ input: Operations.getSupply.Input) async throws -> Operations.getSupply.Output {
        switch await Self.record(StateKeys.meta, LedgerMeta.self, pool) {
        case let .failure(problem): return .badGateway(problem.badGateway)
        case let .success((meta, found)):
            let totals = meta.totals
            return .ok(.init(body: .json(Schemas.Supply(
                height: Self.int(meta.height), epoch: Self.int(meta.epoch), issued: Self.int(totals.issued), redeemed: Self.int(totals.redeemed),
                expired: Self.int(totals.expired), sunk: Self.int(totals.sunk), live: Self.int(totals.live),
                validators: meta.validators.map(\.rawValue), partners: meta.partners.map(\.rawValue), programmes: meta.programmes.map(\.rawValue),
                verification: Self.verification(found)))))
        }
    }

    func getStatement(_ input: Operations.getStatement.Input) async throws -> Operations.getStatement.Output {
        guard let id = Identifier(input.path.partner) else { return .badRequest(Problems.badIdentifier(input.path.partner)) }
        guard let epoch = UInt64(exactly: input.path.epoch) else { return .badRequest(Problems.badRequest("epoch must be 0 or more")) }
        switch await Self.record(StateKeys.statement(epoch, id), Statement.self, pool) {
        case let .failure(problem):
            return problem.isNotFound ? .notFound(problem.notFound(what: "a statement of \(id) for epoch \(epoch)")) : .badGateway(problem.badGateway)
        case let .success((statement, found)):
            return .ok(.init(body: .json(Schemas.Statement(
                epoch: Self.int(statement.epoch), partner: statement.partner.rawValue, grossIn: Self.int(statement.grossIn),
                grossOut: Self.int(statement.grossOut), net: statement.net, obligationsHash: statement.obligationsHash.hex,
                sha256: CertifiedClearing.statementHash(statement).hex, verification: Self.verification(found)))))
        }
    }

    func getValidators(_ input: Operations.getValidators.Input) async throws -> Operations.getValidators.Output {
        let meta: LedgerMeta, found: VerifiedRecord
        switch await Self.record(StateKeys.meta, LedgerMeta.self, pool) {
        case let .success((value, record)): (meta, found) = (value, record)
        case let .failure(problem): return .badGateway(problem.badGateway)
        }
        let keys: ValidatorKeys
        switch await Self.record(StateKeys.validatorKeys, ValidatorKeys.self, pool) {
        case let .success((value, _)): keys = value
        case let .failure(problem): return .badGateway(problem.badGateway)
        }
        // The keys are those of the listed validators with a node key, in order; paired
        // only when they are as many (both records certified, perhaps a checkpoint apart).
        let paired = keys.keys.count == meta.validators.count
        return .ok(.init(body: .json(Schemas.Validators(
            validators: meta.validators.enumerated().map { index, id in .init(partner: id.rawValue, nodeKey: paired ? keys.keys[index].bytes.hex : nil) },
            changedAt: Self.int(keys.changedAt), verification: Self.verification(found)))))
    }

    func getBlock(_ input: Operations.getBlock.Input) async throws -> Operations.getBlock.Output {
        guard let height = UInt64(exactly: input.path.height), height >= 1 else { return .badRequest(Problems.badRequest("block heights start at 1")) }
        let found: VerifiedBlockContents?
        do { found = try await pool.blockContents(height) } catch { return .badGateway(Problems.badGateway(error)) }
        guard let found else {
            return .notFound(.init(body: .application_problem_plus_json(Problems.problem(
                "not-found", "Not found", 404, "block \(height) is not final on the nodes followed (or its body was pruned)"))))
        }
        let transactions = zip(found.block.commands, found.contents.results).map { command, result in
            Schemas.Block.transactionsPayloadPayload(
                id: SignedTransaction.idTag.hash(command).hex, result: StoreAnswers.isApplied(result) ? .applied : .rejected, reason: StoreAnswers.reason(result))
        }
        return .ok(.init(body: .json(Schemas.Block(
            height: Self.int(height), transactions: transactions, closedEpoch: found.contents.closedEpoch.map(Self.int), commitVerified: true,
            source: found.source))))
    }

    func getProposal(_ input: Operations.getProposal.Input) async throws -> Operations.getProposal.Output {
        guard let number = UInt64(exactly: input.path.proposal), number >= 1 else { return .badRequest(Problems.badRequest("proposal numbers start at 1")) }
        switch await Self.record(StateKeys.proposal(number), Proposal.self, pool) {
        case let .failure(problem): return problem.isNotFound ? .notFound(problem.notFound(what: "proposal \(number)")) : .badGateway(problem.badGateway)
        case let .success((proposal, found)): return .ok(.init(body: .json(Self.schema(proposal, found))))
        }
    }
}
