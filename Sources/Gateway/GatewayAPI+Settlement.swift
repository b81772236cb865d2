import Foundation
import Ledger
import OpenAPIRuntime
import Settlement

extension GatewayAPI {
    /// A closed epoch's settlement file, from certified clearing and the register
    /// (Docs/SETTLEMENT.md): made on each request (an epoch of 256 partners takes
    /// milliseconds), never cached, so a register edited and reloaded is used at once.
    func getSettlementFile(_ input: Operations.getSettlementFile.Input) async throws -> Operations.getSettlementFile.Output {
        guard let register = settlementRegister else {
            return .serviceUnavailable(.init(body: .application_problem_plus_json(Problems.problem(
                "no-register", "No settlement register", 503, "this gateway was started without --settlement-register: it serves no settlement file"))))
        }
        guard let epoch = UInt64(exactly: input.path.epoch) else { return .badRequest(Problems.badRequest("epoch must be 0 or more")) }
        let pool = self.pool, chainId = pool.genesis.chainId
        let clearing: CertifiedClearing
        do {
            clearing = try await pool.blocking {
                try CertifiedClearing.read(epoch: epoch, chainId: chainId) { key in
                    let found = try pool.readBlocking(key)
                    return (found.record.value, found.record.height, found.record.root)
                }
            }
        } catch let error as SettlementError {
            guard case .epochNotClosed = error else { return .badGateway(Problems.badGateway(error)) }
            return .notFound(.init(body: .application_problem_plus_json(Problems.problem("not-found", "Not found", 404, "\(error)"))))
        } catch {
            return .badGateway(Problems.badGateway(error))
        }
        let files: SettlementFiles
        do { files = try SettlementFiles(clearing: clearing, register: register, created: Date(), executionDate: SettlementFiles.today()) } catch {
            return .conflict(.init(body: .application_problem_plus_json(Problems.problem("settlement-refused", "Settlement refused", 409, "\(error)"))))
        }
        func missing(_ what: String) -> Operations.getSettlementFile.Output {
            .notFound(.init(body: .application_problem_plus_json(Problems.problem("not-found", "Not found", 404, "epoch \(epoch) has \(what)"))))
        }
        switch input.path.file {
        case .credit_hyphen_transfers_period_xml:
            guard let xml = files.creditTransfers else { return missing("no credit transfer: no partner is owed money") }
            return .ok(.init(body: .xml(HTTPBody(xml))))
        case .direct_hyphen_debits_period_xml:
            guard let xml = files.directDebits else { return missing("no direct debit: no partner owing money has a mandate in the register") }
            return .ok(.init(body: .xml(HTTPBody(xml))))
        case .owed_period_csv: return .ok(.init(body: .csv(HTTPBody(files.owedCSV))))
        case .accounting_period_csv: return .ok(.init(body: .csv(HTTPBody(files.accountingCSV))))
        }
    }
}
