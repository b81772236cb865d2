import CalissonCrypto
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Ledger

/// What the chain certified about one epoch's clearing, as settlement needs it.
public struct CertifiedClearing: Sendable {
    public let chainId: String
    public let report: EpochReport
    /// The settlement instructions the close computed, all to or from the authority.
    public let instructions: [Settlement]
    /// Every partner's statement of the epoch (their hashes go into the payments).
    public let statements: [Statement]
    /// The checkpoint all of it was read at, for the accounting file's provenance.
    public let checkpointHeight: UInt64
    public let stateRoot: SHA256Digest

    public init(
        chainId: String, report: EpochReport, instructions: [Settlement], statements: [Statement], checkpointHeight: UInt64, stateRoot: SHA256Digest
    ) {
        self.chainId = chainId
        self.report = report
        self.instructions = instructions
        self.statements = statements
        self.checkpointHeight = checkpointHeight
        self.stateRoot = stateRoot
    }

    /// Reads a closed epoch's clearing (report, instructions, every partner's statement)
    /// through `record`, which returns a state record verified at a checkpoint (the CLI's
    /// and the gateway's certified reads). Records of a closed epoch never change, so reads
    /// at successive checkpoints agree; the report's checkpoint is the one named.
    public static func read(
        epoch: UInt64, chainId: String, record: (StateKey) throws -> (value: [UInt8]?, height: UInt64, root: SHA256Digest)
    ) throws -> CertifiedClearing {
        let (reportBytes, height, root) = try record(StateKeys.epochReport(epoch))
        guard let reportBytes else { throw SettlementError.epochNotClosed(epoch: epoch, checkpoint: height) }
        let report = try EpochReport(wireBytes: reportBytes)
        let instructions = try record(StateKeys.settlement(epoch)).value.map { try SettlementList(wireBytes: $0).settlements } ?? []
        var statements: [Statement] = []
        for net in report.nets {
            guard let bytes = try record(StateKeys.statement(epoch, net.partner)).value else { throw SettlementError.statementMissing(net.partner) }
            statements.append(try Statement(wireBytes: bytes))
        }
        return CertifiedClearing(chainId: chainId, report: report, instructions: instructions, statements: statements, checkpointHeight: height, stateRoot: root)
    }

    /// The hash a payment's remittance information carries: SHA-256 of the statement
    /// record's bytes as the state holds them (`calisson statement --json` and the
    /// gateway give the same bytes' hash), so a partner ties a payment to its statement.
    public static func statementHash(_ statement: Statement) -> SHA256Digest { SHA256.hash(statement.wireBytes) }
}

/// Why no settlement files were produced; each names what to fix.
public enum SettlementError: Error, Equatable, Sendable, CustomStringConvertible {
    case epochNotClosed(epoch: UInt64, checkpoint: UInt64)
    case invalidDate(String)
    case tokenValueNotSet(epoch: UInt64)
    case notInRegister(Identifier)
    case payerIsNotTheCounterparty(payer: Identifier, instruction: String)
    case statementMissing(Identifier)
    case statementDisagrees(Identifier, net: Int64, instruction: String)
    case statementWithoutInstruction(Identifier, net: Int64)
    case amountOverSEPAMaximum(Identifier, cents: UInt128)
    case cannotWrite(String)
    case controlMismatch(String)

    public var description: String {
        switch self {
        case let .epochNotClosed(epoch, checkpoint): return "epoch \(epoch) is not closed at checkpoint \(checkpoint): it has no report yet"
        case let .invalidDate(raw): return "the execution date must be a date written YYYY-MM-DD, not '\(raw)'"
        case let .tokenValueNotSet(epoch):
            return "the token value was not set when epoch \(epoch) closed (parameters.tokenValueMicroEuros is 0): governance sets it with setParameters"
        case let .notInRegister(id): return "partner \(id) has a payment in this epoch but no entry in the settlement register"
        case let .payerIsNotTheCounterparty(payer, instruction):
            return "the register's payer is \(payer), but the chain's instruction \(instruction) does not involve it: the register names the wrong authority"
        case let .statementMissing(id): return "no certified statement of \(id) for this epoch"
        case let .statementDisagrees(id, net, instruction):
            return "the statement of \(id) says net \(net), the instruction says \(instruction): the answers do not belong together"
        case let .statementWithoutInstruction(id, net):
            return "the certified statement of \(id) nets \(net) tokens for this epoch, but the ledger's clearing gave it no instruction "
                + "(no authority partner left to settle with?): no file is written, rather than files that leave its money unmoved"
        case let .amountOverSEPAMaximum(id, cents): return "the payment of \(id) is \(cents) cents, over the SEPA maximum of 999,999,999.99 €"
        case let .cannotWrite(reason): return "cannot write the settlement files: \(reason)"
        case let .controlMismatch(reason): return "the file produced does not add up, so it was not written: \(reason)"
        }
    }
}

/// One euro payment between the Métropole and a partner.
public struct Payment: Sendable, Equatable {
    public enum Direction: Sendable, Equatable { case toPartner, fromPartner }
    public let partner: SettlementRegister.Party
    public let direction: Direction
    public let tokens: Amount
    public let cents: UInt64
    public let endToEndId: String
    public let remittance: String
    public let statementHash: SHA256Digest
}

/// An epoch's settlement in the forms the treasury uses: the SEPA credit transfers it
/// orders (pain.001.001.09), the direct debits it collects where a mandate is registered
/// (pain.008.001.08), the list of what partners owe, and a line per partner for the
/// accounting system. Integer cents throughout; the euro text is written from them.
public struct SettlementFiles: Sendable {
    public let epoch: UInt64
    public let payments: [Payment]
    public let collections: [Payment]
    /// nil when nobody is to be paid (a pain.001 file holds at least one transfer).
    public let creditTransfers: String?
    /// nil when no partner owing money has a mandate.
    public let directDebits: String?
    public let owedCSV: String
    public let accountingCSV: String

    /// The SEPA ceiling of one instruction: 999,999,999.99 €.
    public static let centsMax: UInt64 = 99_999_999_999

    /// Builds the files from certified clearing and the register. `created` is the
    /// messages' creation time; `executionDate` (YYYY-MM-DD) the day the bank is to pay
    /// and collect.
    public init(clearing: CertifiedClearing, register: SettlementRegister, created: Date, executionDate: String) throws(SettlementError) {
        let report = clearing.report
        epoch = report.epoch
        do { _ = try SEPADate.validated(executionDate, "executionDate") } catch { throw .invalidDate(executionDate) }
        guard report.tokenValueMicroEuros > 0 else { throw .tokenValueNotSet(epoch: epoch) }
        let statements = Dictionary(clearing.statements.map { ($0.partner, $0) }, uniquingKeysWith: { first, _ in first })
        let payer = register.payer.partner
        var payments: [Payment] = [], collections: [Payment] = []
        for instruction in clearing.instructions {
            let text = "\(instruction.from) → \(instruction.to) \(instruction.amount)"
            let direction: Payment.Direction
            let id: Identifier
            switch (instruction.from == payer, instruction.to == payer) {
            case (true, false): (direction, id) = (.toPartner, instruction.to)
            case (false, true): (direction, id) = (.fromPartner, instruction.from)
            default: throw .payerIsNotTheCounterparty(payer: payer, instruction: text)
            }
            guard let statement = statements[id] else { throw .statementMissing(id) }
            let signed = direction == .toPartner ? Int64(exactly: instruction.amount) : Int64(exactly: instruction.amount).map { -$0 }
            guard statement.net == signed else { throw .statementDisagrees(id, net: statement.net, instruction: text) }
            let cents = try Self.cents(instruction.amount, tokenValue: report.tokenValueMicroEuros, partner: id)
            // Less than half a cent: nothing a bank can move, and no bank details needed (a
            // partner not in the register stopped every payment of the epoch for nothing).
            guard cents > 0 else { continue }
            guard let party = register.parties[id] else { throw .notInRegister(id) }
            let hash = CertifiedClearing.statementHash(statement)
            let payment = Payment(
                partner: party, direction: direction, tokens: instruction.amount, cents: cents,
                endToEndId: Self.endToEndId(epoch: epoch, hash: hash), remittance: "CALISSON EPOCH \(epoch) STATEMENT \(hash.hex)", statementHash: hash)
            if direction == .toPartner { payments.append(payment) } else { collections.append(payment) }
        }
        // Every partner but the counterparty whose statement nets something has its
        // instruction: a clearing without one (governance removed the only authority) would
        // otherwise give files that move nobody's money, and no error.
        let instructed = Set(clearing.instructions.flatMap { [$0.from, $0.to] })
        if let orphan = clearing.statements.first(where: { $0.net != 0 && $0.partner != payer && !instructed.contains($0.partner) }) {
            throw .statementWithoutInstruction(orphan.partner, net: orphan.net)
        }
        payments.sort { $0.partner.partner < $1.partner.partner }
        collections.sort { $0.partner.partner < $1.partner.partner }
        self.payments = payments
        self.collections = collections
        let messageTag = SHA256.hash(Array("\(clearing.chainId)/\(epoch)".utf8)).hex.prefix(10).uppercased()
        let stamp = Self.timestamp(created)
        creditTransfers = payments.isEmpty ? nil : Self.pain001(
            payments, payer: register.payer, messageId: "CAL-\(messageTag)-E\(epoch)-CT", created: stamp, executionDate: executionDate)
        let debits = collections.filter { $0.partner.mandate != nil }
        directDebits = debits.isEmpty || register.creditorId == nil ? nil : Self.pain008(
            debits, payer: register.payer, creditorId: register.creditorId!, messageId: "CAL-\(messageTag)-E\(epoch)-DD", created: stamp,
            collectionDate: executionDate)
        if let creditTransfers { try Self.checkControls(creditTransfers, transaction: "CdtTrfTxInf", amount: "Amt/InstdAmt", expected: payments) }
        if let directDebits { try Self.checkControls(directDebits, transaction: "DrctDbtTxInf", amount: "InstdAmt", expected: debits) }
        owedCSV = Self.owed(collections, epoch: epoch)
        accountingCSV = Self.accounting(clearing, register: register, payments: payments + collections)
    }

    /// tokens × µ€ per token ÷ 10,000, rounded half up, in cents (128-bit: no overflow).
    static func cents(_ tokens: Amount, tokenValue: UInt64, partner: Identifier) throws(SettlementError) -> UInt64 {
        let product = UInt128(tokens) * UInt128(tokenValue)
        let cents = (product + 5_000) / 10_000
        guard cents <= UInt128(centsMax) else { throw .amountOverSEPAMaximum(partner, cents: cents) }
        return UInt64(cents)
    }

    /// "C<epoch>-<12 hex of the statement hash>": at most 34 characters (the limit is 35),
    /// unique per partner and epoch.
    static func endToEndId(epoch: UInt64, hash: SHA256Digest) -> String { "C\(epoch)-\(hash.hex.prefix(12).uppercased())" }

    /// Cents as a euro amount with two decimals: 1234 → "12.34".
    public static func euros(_ cents: UInt64) -> String {
        let remainder = cents % 100
        return "\(cents / 100).\(remainder < 10 ? "0" : "")\(remainder)"
    }

    /// Today's date in UTC, YYYY-MM-DD (the default execution date).
    public static func today() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd"
        return formatter.string(from: Date())
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    // MARK: XML (ISO 20022)

    static func element(_ name: String, _ children: [XMLElement]) -> XMLElement {
        let element = XMLElement(name: name)
        for child in children { element.addChild(child) }
        return element
    }

    static func text(_ name: String, _ value: String) -> XMLElement { XMLElement(name: name, stringValue: value) }

    static func amount(_ name: String, _ cents: UInt64) -> XMLElement {
        let element = text(name, euros(cents))
        element.addAttribute(XMLNode.attribute(withName: "Ccy", stringValue: "EUR") as! XMLNode)
        return element
    }

    static func account(_ name: String, _ iban: String) -> XMLElement { element(name, [element("Id", [text("IBAN", iban)])]) }
    static func agent(_ name: String, _ bic: String) -> XMLElement { element(name, [element("FinInstnId", [text("BICFI", bic)])]) }
    static func party(_ name: String, _ legalName: String) -> XMLElement { element(name, [text("Nm", legalName)]) }

    static func document(namespace: String, _ body: XMLElement) -> String {
        let root = element("Document", [body])
        root.addNamespace(XMLNode.namespace(withName: "", stringValue: namespace) as! XMLNode)
        let document = XMLDocument(rootElement: root)
        document.version = "1.0"
        document.characterEncoding = "UTF-8"
        return String(decoding: document.xmlData(options: [.nodePrettyPrint]), as: UTF8.self)
    }

    static func header(messageId: String, created: String, payments: [Payment], initiator: String) -> XMLElement {
        element("GrpHdr", [
            text("MsgId", messageId), text("CreDtTm", created), text("NbOfTxs", "\(payments.count)"),
            text("CtrlSum", euros(payments.reduce(0) { $0 + $1.cents })), party("InitgPty", initiator),
        ])
    }

    static func pain001(_ payments: [Payment], payer: SettlementRegister.Party, messageId: String, created: String, executionDate: String) -> String {
        let sum = euros(payments.reduce(0) { $0 + $1.cents })
        let transfers = payments.map { payment in
            element("CdtTrfTxInf", [
                element("PmtId", [text("EndToEndId", payment.endToEndId)]),
                element("Amt", [amount("InstdAmt", payment.cents)]),
                agent("CdtrAgt", payment.partner.bic), party("Cdtr", payment.partner.legalName), account("CdtrAcct", payment.partner.iban),
                element("RmtInf", [text("Ustrd", payment.remittance)]),
            ])
        }
        let information = element("PmtInf", [
            text("PmtInfId", messageId + "-1"), text("PmtMtd", "TRF"), text("BtchBookg", "false"), text("NbOfTxs", "\(payments.count)"),
            text("CtrlSum", sum), element("PmtTpInf", [element("SvcLvl", [text("Cd", "SEPA")])]),
            element("ReqdExctnDt", [text("Dt", executionDate)]), party("Dbtr", payer.legalName), account("DbtrAcct", payer.iban),
            agent("DbtrAgt", payer.bic), text("ChrgBr", "SLEV"),
        ] + transfers)
        return document(
            namespace: "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09",
            element("CstmrCdtTrfInitn", [header(messageId: messageId, created: created, payments: payments, initiator: payer.legalName), information]))
    }

    static func pain008(
        _ debits: [Payment], payer: SettlementRegister.Party, creditorId: String, messageId: String, created: String, collectionDate: String
    ) -> String {
        let sum = euros(debits.reduce(0) { $0 + $1.cents })
        let transactions = debits.map { debit in
            element("DrctDbtTxInf", [
                element("PmtId", [text("EndToEndId", debit.endToEndId)]),
                amount("InstdAmt", debit.cents),
                element("DrctDbtTx", [element("MndtRltdInf", [text("MndtId", debit.partner.mandate!.id), text("DtOfSgntr", debit.partner.mandate!.signedOn)])]),
                agent("DbtrAgt", debit.partner.bic), party("Dbtr", debit.partner.legalName), account("DbtrAcct", debit.partner.iban),
                element("RmtInf", [text("Ustrd", debit.remittance)]),
            ])
        }
        let scheme = element("CdtrSchmeId", [element("Id", [element("PrvtId", [element("Othr", [
            text("Id", creditorId), element("SchmeNm", [text("Prtry", "SEPA")]),
        ])])])])
        let information = element("PmtInf", [
            text("PmtInfId", messageId + "-1"), text("PmtMtd", "DD"), text("BtchBookg", "false"), text("NbOfTxs", "\(debits.count)"), text("CtrlSum", sum),
            element("PmtTpInf", [element("SvcLvl", [text("Cd", "SEPA")]), element("LclInstrm", [text("Cd", "CORE")]), text("SeqTp", "RCUR")]),
            text("ReqdColltnDt", collectionDate), party("Cdtr", payer.legalName), account("CdtrAcct", payer.iban), agent("CdtrAgt", payer.bic),
            text("ChrgBr", "SLEV"), scheme,
        ] + transactions)
        return document(
            namespace: "urn:iso:std:iso:20022:tech:xsd:pain.008.001.08",
            element("CstmrDrctDbtInitn", [header(messageId: messageId, created: created, payments: debits, initiator: payer.legalName), information]))
    }

    /// Reads a produced message back and checks it before anyone sends it to a bank: the
    /// group header's and the payment block's counts and control sums equal the count and
    /// the sum of the transactions it holds, which are the payments meant.
    static func checkControls(_ xml: String, transaction: String, amount: String, expected: [Payment]) throws(SettlementError) {
        do {
            let document = try XMLDocument(xmlString: xml)
            func values(_ path: String) throws -> [String] { try document.nodes(forXPath: path).compactMap(\.stringValue) }
            let root = "/*[local-name()='Document']/*"
            let amounts = try values("\(root)/*[local-name()='PmtInf']/*[local-name()='\(transaction)']/" + amount.split(separator: "/").map { "*[local-name()='\($0)']" }.joined(separator: "/"))
            let cents = amounts.compactMap(Self.cents(euros:))
            let counts = try values("\(root)/*/*[local-name()='NbOfTxs']")
            let sums = try values("\(root)/*/*[local-name()='CtrlSum']")
            let expectedSum = euros(expected.reduce(0) { $0 + $1.cents })
            guard cents.count == amounts.count, cents == expected.map(\.cents) else {
                throw SettlementError.controlMismatch("the amounts \(amounts) are not the payments' \(expected.map { euros($0.cents) })")
            }
            guard counts == ["\(expected.count)", "\(expected.count)"], sums == [expectedSum, expectedSum] else {
                throw SettlementError.controlMismatch("counts \(counts) and control sums \(sums), for \(expected.count) payments of \(expectedSum) €")
            }
        } catch let error as SettlementError {
            throw error
        } catch {
            throw .controlMismatch("\(error)")
        }
    }

    /// "12.34" → 1234; nil unless exactly digits, a dot and two digits.
    static func cents(euros: String) -> UInt64? {
        let parts = euros.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1].count == 2, let whole = UInt64(parts[0]), let fraction = UInt64(parts[1]) else { return nil }
        let (product, overflow) = whole.multipliedReportingOverflow(by: 100)
        return overflow ? nil : product + fraction
    }

    // MARK: CSV (RFC 4180)

    /// A text field quoted when it holds a separator, a quote or a line break; one a
    /// spreadsheet would take for a formula (=, +, -, @, or a tab or carriage return before
    /// one) is prefixed with an apostrophe. Every field a partner or a vote chose goes
    /// through it: names, partner ids (which may start with '-'), mandate ids.
    public static func field(_ value: String) -> String {
        var value = value
        // Bytes, not characters: "\r\n" is one Character, and a lone "\r" or "\n" is not it.
        if let first = value.utf8.first, Array("=+-@\t\r".utf8).contains(first) { value = "'" + value }
        guard value.utf8.contains(where: { Array(",\"\r\n".utf8).contains($0) }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    static func csv(_ header: [String], _ rows: [[String]]) -> String {
        ([header] + rows).map { $0.joined(separator: ",") + "\r\n" }.joined()
    }

    static func owed(_ collections: [Payment], epoch: UInt64) -> String {
        csv(
            ["epoch", "partner", "legal_name", "iban", "bic", "amount_eur", "collection", "mandate_id", "end_to_end_id", "remittance"],
            collections.map { debt in
                ["\(epoch)", field(debt.partner.partner.rawValue), field(debt.partner.legalName), debt.partner.iban, debt.partner.bic, euros(debt.cents),
                 debt.partner.mandate == nil ? "transfer_expected" : "direct_debit", field(debt.partner.mandate?.id ?? ""), debt.endToEndId, debt.remittance]
            })
    }

    static func accounting(_ clearing: CertifiedClearing, register: SettlementRegister, payments: [Payment]) -> String {
        let byPartner = Dictionary(payments.map { ($0.partner.partner, $0) }, uniquingKeysWith: { first, _ in first })
        let report = clearing.report
        return csv(
            ["epoch", "partner", "legal_name", "gross_in_tokens", "gross_out_tokens", "net_tokens", "token_value_micro_eur", "amount_eur",
             "instrument", "end_to_end_id", "statement_sha256", "checkpoint_height", "state_root"],
            clearing.statements.sorted { $0.partner < $1.partner }.map { statement in
                let payment = byPartner[statement.partner]
                let name = statement.partner == register.payer.partner ? register.payer.legalName : register.parties[statement.partner]?.legalName ?? ""
                let signed = payment.map { ($0.direction == .toPartner ? "" : "-") + euros($0.cents) } ?? "0.00"
                let instrument: String
                switch (payment?.direction, payment?.partner.mandate) {
                case (.toPartner?, _): instrument = "credit_transfer"
                case (.fromPartner?, _?): instrument = register.creditorId == nil ? "transfer_expected" : "direct_debit"
                case (.fromPartner?, nil): instrument = "transfer_expected"
                case (nil, _): instrument = statement.partner == register.payer.partner ? "counterparty" : "none"
                }
                return ["\(report.epoch)", field(statement.partner.rawValue), field(name), "\(statement.grossIn)", "\(statement.grossOut)", "\(statement.net)",
                        "\(report.tokenValueMicroEuros)", signed, instrument, payment?.endToEndId ?? "",
                        CertifiedClearing.statementHash(statement).hex, "\(clearing.checkpointHeight)", clearing.stateRoot.hex]
            })
    }

    // MARK: Files

    /// The file names this settlement writes, by kind.
    public func fileNames() -> [(kind: String, name: String)] {
        var names: [(String, String)] = []
        if creditTransfers != nil { names.append(("credit transfers (pain.001.001.09)", "epoch-\(epoch)-credit-transfers.xml")) }
        if directDebits != nil { names.append(("direct debits (pain.008.001.08)", "epoch-\(epoch)-direct-debits.xml")) }
        names.append(("owed by partners (CSV)", "epoch-\(epoch)-owed.csv"))
        names.append(("accounting (CSV)", "epoch-\(epoch)-accounting.csv"))
        return names
    }

    /// Writes the files into `directory` (created if missing); returns their paths.
    /// Each file is durable once this returns (`DurableFile`): a treasury imports what a
    /// crash cannot have torn.
    public func write(to directory: String) throws(SettlementError) -> [String] {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch { throw .cannotWrite("\(directory): \(error.localizedDescription)") }
        // A file of a kind this run does not make, left by an earlier run into the same
        // directory (a partner's mandate since removed: its old direct debit beside a new
        // owed.csv saying transfer_expected), is removed: a treasury uploading the folder
        // would collect twice.
        let made = Set(fileNames().map(\.name))
        for name in ["epoch-\(epoch)-credit-transfers.xml", "epoch-\(epoch)-direct-debits.xml"] where !made.contains(name) {
            let path = (directory as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: path) else { continue }
            do {
                try FileManager.default.removeItem(atPath: path)
                DurableFile.syncDirectory(of: path)
            } catch { throw .cannotWrite("\(path), an earlier run's file that this one does not make, cannot be removed: \(error.localizedDescription)") }
        }
        var paths: [String] = []
        let contents = [creditTransfers, directDebits, owedCSV, accountingCSV].compactMap { $0 }
        for ((_, name), text) in zip(fileNames(), contents) {
            let path = (directory as NSString).appendingPathComponent(name)
            do { try DurableFile.write(text, to: path) } catch { throw .cannotWrite("\(error)") }
            paths.append(path)
        }
        return paths
    }
}
