import ArgumentParser
import Foundation
import Ledger
import Settlement

struct SettlementCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlement",
        abstract: "Write a closed epoch's settlement files: SEPA credit transfers (pain.001.001.09), direct debits (pain.008.001.08), what partners owe and the accounting lines (CSV).",
        discussion: "Net positions, instructions and statements are read certified: --genesis is required (payment files are never written on one node's word); bank details come from the register (Docs/SETTLEMENT.md).")
    @OptionGroup var connection: Connection
    @Argument(help: "The closed epoch.") var epoch: UInt64
    @Option(help: "The settlement register (JSON): the payer's and each partner's legal name, IBAN, BIC, mandate.") var register: String
    @Option(help: "The directory to write the files into (created if missing).") var out: String
    @Option(help: "The day the bank is to pay and collect, YYYY-MM-DD (default: today, UTC).") var executionDate: String?

    func validate() throws {
        // Without the genesis the answers are checked against the root the node itself
        // gives: a lying node could have payments written to any partner, any amount.
        guard connection.genesis != nil else {
            throw ValidationError("--genesis is required: settlement files pay and collect money, and are written from certified answers only (Docs/SETTLEMENT.md)")
        }
    }

    func run() throws {
        let checked: SettlementRegister
        do { checked = try RegisterFile.load(register) } catch { throw CommandError("--register \(error)") }
        let date = executionDate ?? SettlementFiles.today()
        let trusted = try connection.trustedValidators()
        let clearing: CertifiedClearing
        do {
            clearing = try CertifiedClearing.read(epoch: epoch, chainId: connection.chain) { key in try connection.record(key, trusted: trusted) }
        } catch let error as SettlementError { throw CommandError("\(error)") }
        let files: SettlementFiles
        do { files = try SettlementFiles(clearing: clearing, register: checked, created: Date(), executionDate: date) } catch { throw CommandError("\(error)") }
        let paths: [String]
        do { paths = try files.write(to: out) } catch { throw CommandError("\(error)") }
        var fields: [(String, String)] = [
            ("epoch", "\(epoch)"), ("tokenValueMicroEuros", "\(clearing.report.tokenValueMicroEuros)"),
            ("payments", "\(files.payments.count), \(SettlementFiles.euros(files.payments.reduce(0) { $0 + $1.cents })) EUR"),
            ("collections", "\(files.collections.count), \(SettlementFiles.euros(files.collections.reduce(0) { $0 + $1.cents })) EUR"),
        ]
        for ((kind, _), path) in zip(files.fileNames(), paths) { fields.append((kind, path)) }
        if files.creditTransfers == nil { fields.append(("credit transfers", "none: no partner is owed money this epoch")) }
        fields.append(connection.proofLine(clearing.checkpointHeight, clearing.stateRoot))
        connection.emit(fields)
    }
}
