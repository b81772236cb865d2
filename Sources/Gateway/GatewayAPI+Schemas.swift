import CalissonCrypto
import Ledger
import LightClient
import OpenAPIRuntime
import Wire

/// A state record read for an answer: decoded, or why not (absent, no verified answer,
/// undecodable).
enum RecordProblem: Error {
    case absent(VerifiedRecord)
    case failed(any Error)

    var isNotFound: Bool { if case .absent = self { true } else { false } }

    func notFound(what: String) -> Components.Responses.NotFound {
        var detail = "\(what) does not exist"
        if case let .absent(found) = self { detail += " (its absence proven at checkpoint \(found.record.height), from \(found.source))" }
        return .init(body: .application_problem_plus_json(Problems.problem("not-found", "Not found", 404, detail)))
    }

    var badGateway: Components.Responses.BadGateway {
        switch self {
        case let .failed(error): return Problems.badGateway(error)
        case .absent: return Problems.badGateway(NoVerifiedAnswer(failures: []))
        }
    }
}

/// RFC 9457 problem documents; `type` URNs are listed in Docs/API.md.
enum Problems {
    static func problem(_ type: String, _ title: String, _ status: Int32, _ detail: String, nodes: [Components.Schemas.NodeError]? = nil)
        -> Components.Schemas.Problem
    {
        RefusalLog.problem(type, detail)
        return .init(_type: "urn:calisson:problem:\(type)", title: title, status: status, detail: detail, nodes: nodes)
    }

    static func badRequest(_ detail: String) -> Components.Responses.BadRequest {
        .init(body: .application_problem_plus_json(problem("bad-request", "Bad request", 400, detail)))
    }

    static func badIdentifier(_ raw: String) -> Components.Responses.BadRequest {
        badRequest("'\(raw.prefix(64))' is not an identifier (1 to 32 of a-z, 0-9, '-')")
    }

    static func badGateway(_ error: any Error) -> Components.Responses.BadGateway {
        let nodes = (error as? NoVerifiedAnswer)?.failures.map { Components.Schemas.NodeError(address: $0.node, error: $0.reason) }
        return .init(body: .application_problem_plus_json(problem(
            "no-verified-answer", "No verified answer", 502,
            "no node gave an answer that is certified by a quorum, proven and fresh: \(error)", nodes: nodes)))
    }

    static func notReady(nodes: [Components.Schemas.NodeState]) -> Components.Schemas.Problem {
        problem(
            "not-ready", "Not ready", 503, "no certified checkpoint verified yet",
            nodes: nodes.compactMap { node in node.error.map { Components.Schemas.NodeError(address: node.address, error: $0) } })
    }
}

extension GatewayAPI {
    /// Heights, epochs and amounts in JSON: every one is below 2^63 by the ledger's bounds
    /// (`LedgerLimits`); `clamping` states it without a trap.
    static func int(_ value: UInt64) -> Int64 { Int64(clamping: value) }

    static func verification(_ found: VerifiedRecord) -> Components.Schemas.Verification {
        .init(checkpointHeight: int(found.record.height), stateRoot: found.record.root.hex, behindBlocks: int(found.behind), source: found.source, certified: true)
    }

    /// Reads and decodes one record.
    static func record<T: WireDecodable>(_ key: StateKey, _ type: T.Type, _ pool: NodePool) async -> Result<(T, VerifiedRecord), RecordProblem> {
        let found: VerifiedRecord
        do { found = try await pool.read(key) } catch { return .failure(.failed(error)) }
        guard let bytes = found.record.value else { return .failure(.absent(found)) }
        do { return .success((try T(wireBytes: bytes), found)) } catch { return .failure(.failed(error)) }
    }

    static func status(_ status: PartnerStatus) -> Components.Schemas.Partner.statusPayload {
        switch status {
        case .active: return .active
        case .suspended: return .suspended
        case .removed: return .removed
        }
    }

    static func schema(_ programme: Programme, _ found: VerifiedRecord) -> Components.Schemas.Programme {
        let category: Components.Schemas.Programme.categoryPayload = switch programme.category {
        case .transit: .transit
        case .wasteSorting: .wasteSorting
        case .event: .event
        case .energy: .energy
        case .other: .other
        }
        let period: Components.Schemas.Programme.capPeriodPayload = switch programme.capPeriod {
        case .day: .day
        case .week: .week
        case .month: .month
        }
        let lifetime: Components.Schemas.Lifetime = switch programme.lifetime {
        case let .expiry(epochs): .init(kind: .expiry, epochs: Int64(epochs))
        case let .demurrage(basisPoints): .init(kind: .demurrage, basisPointsPerEpoch: Int32(basisPoints))
        }
        let totals = programme.totals
        return .init(
            id: programme.id.rawValue, name: programme.name, category: category, sponsor: programme.sponsor.rawValue,
            rewardPerUnit: int(programme.rewardPerUnit), capPerAccount: int(programme.capPerAccount), capPeriod: period,
            walletCeiling: int(programme.walletCeiling), budget: int(programme.budget), lifetime: lifetime,
            acceptors: programme.acceptors.map(\.rawValue), issuers: programme.issuers.map(\.rawValue), transferable: programme.transferable,
            startHeight: int(programme.startHeight), endHeight: int(programme.endHeight), status: programme.status == .active ? .active : .closed,
            totals: .init(issued: int(totals.issued), redeemed: int(totals.redeemed), expired: int(totals.expired), sunk: int(totals.sunk), live: int(totals.live)),
            verification: verification(found))
    }

    static func schema(_ proposal: Proposal, _ found: VerifiedRecord) -> Components.Schemas.Proposal {
        var decided: UInt64?, reason: String?
        let status: Components.Schemas.Proposal.statusPayload
        switch proposal.status {
        case .open: status = proposal.deadline < found.record.height ? .expired : .open
        case let .passed(height): (status, decided) = (.passed, height)
        case let .rejected(height): (status, decided) = (.rejected, height)
        case let .failed(height, why): (status, decided, reason) = (.failed, height, why)
        }
        return .init(
            id: int(proposal.id), proposer: proposal.proposer.rawValue, action: "\(proposal.action)", deadline: int(proposal.deadline),
            yes: proposal.yes.map(\.rawValue), no: proposal.no.map(\.rawValue), status: status, decidedAtHeight: decided.map(int),
            failureReason: reason, verification: verification(found))
    }
}
