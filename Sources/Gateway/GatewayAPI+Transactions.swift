import CalissonCrypto
import Ledger
import LightClient
import OpenAPIRuntime
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
        let id = SignedTransaction.idTag.hash(bytes)
        let source: String
        do {
            switch try await pool.submit(bytes) {
            case let .accepted(node): source = node
            case let .refused(reason):
                return .unprocessableContent(.init(body: .application_problem_plus_json(Problems.problem(
                    "refused", "Refused by admission", 422, "the node refused the transaction: \(reason)"))))
            }
        } catch {
            return .badGateway(Problems.badGateway(error))
        }
        if input.query.wait ?? true {
            _ = try? await pool.waitFinal(id, at: source, milliseconds: Self.finalityWaitMilliseconds)
        }
        if let found = try? await pool.inclusion(of: id) { return .ok(.init(body: .json(Self.state(id, found)))) }
        return .accepted(.init(
            headers: .init(Location: "/v1/transactions/\(id.hex)"),
            body: .json(.init(id: id.hex, status: .pending, source: source))))
    }

    func getTransaction(_ input: Operations.getTransaction.Input) async throws -> Operations.getTransaction.Output {
        guard let id = Bytes32(hex: input.path.id.lowercased()) else { return .badRequest(Problems.badRequest("id must be 64 hexadecimal digits")) }
        do {
            guard let found = try await pool.inclusion(of: id) else {
                return .notFound(.init(body: .application_problem_plus_json(Problems.problem(
                    "not-found", "Not found", 404, "transaction \(id.hex) is not final on the nodes followed (pending, or unknown)"))))
            }
            return .ok(.init(body: .json(Self.state(id, found))))
        } catch {
            return .badGateway(Problems.badGateway(error))
        }
    }

    static func state(_ id: Bytes32, _ found: VerifiedInclusion) -> Components.Schemas.TransactionState {
        let location = found.inclusion.location
        return .init(
            id: id.hex, status: .final, height: int(location.height), position: int(location.position),
            result: location.applied ? .applied : .rejected, reason: location.reason, inclusionVerified: true, source: found.source)
    }
}
