// Settlement files: the register's checks (IBAN, BIC, creditor identifier, mandate,
// names), the euro arithmetic, the refusals, and the SEPA messages validated against the
// official XSDs (shipped by PyPI's sepaxml, which make test installs) with xmllint: an
// epoch with no transfer, one partner, and the most partners a chain can hold.
import CalissonCrypto
import CalissonTestKit
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Ledger
import Spawning
import Testing
@testable import Settlement

func id(_ raw: String) -> Identifier { Identifier(raw)! }

@Suite(.onOwnThreads) struct RegisterTests {
    static let payer = RegisterFile.Payer(
        partner: "metropole", legalName: "Métropole Aix-Marseille-Provence", iban: "FR76 3000 6000 0112 3456 7890 189", bic: "AGRIFRPP",
        creditorId: CreditorIdentifier.make(country: "FR", business: "ZZZ", national: "123456"))

    static func file(_ partners: [RegisterFile.Entry]) -> RegisterFile { RegisterFile(payer: payer, partners: partners) }

    static func entry(_ partner: String, mandate: RegisterFile.Mandate? = nil) -> RegisterFile.Entry {
        RegisterFile.Entry(partner: partner, legalName: "Partenaire \(partner)", iban: "DE89370400440532013000", bic: "COBADEFFXXX", mandate: mandate)
    }

    func problem(_ change: (inout RegisterFile) -> Void) -> String? {
        var file = Self.file([Self.entry("rtm"), Self.entry("friche", mandate: .init(id: "CAL-FRICHE-1", signedOn: "2026-01-15"))])
        change(&file)
        do {
            _ = try file.validated()
            return nil
        } catch {
            return error.field
        }
    }

    @Test func aValidRegisterIsReadAndNormalized() throws {
        let register = try Self.file([Self.entry("rtm")]).validated()
        #expect(register.payer.iban == "FR7630006000011234567890189")
        #expect(register.payer.legalName == "Metropole Aix-Marseille-Provence")
        #expect(register.parties[id("rtm")]?.bic == "COBADEFFXXX")
        #expect(try CreditorIdentifier.validated("DE98ZZZ09999999999", "x") == "DE98ZZZ09999999999")
        // The RIB key and IBAN check digits of a generated French IBAN hold.
        let generated = IBAN.french(bank: "99999", branch: "00001", account: "0000000042A")
        #expect(try IBAN.validated(generated, "x") == generated)
        #expect(SEPAText.transliterated("Régie «des» transports & Cie") == "Regie des transports Cie")
    }

    @Test func eachMistakeNamesItsField() {
        #expect(problem { _ in } == nil)
        #expect(problem { $0.payer.iban = "FR7630006000011234567890188" } == "payer.iban")  // check digits
        #expect(problem { $0.payer.iban = "FR763000600001123456789018" } == "payer.iban")  // length
        #expect(problem { $0.payer.iban = "US64SVBKUS6S3300958879" } == "payer.iban")  // not SEPA
        #expect(problem { $0.payer.iban = "" } == "payer.iban")
        #expect(problem { $0.payer.iban = String(repeating: "9", count: 10_000) } == "payer.iban")
        #expect(problem { $0.payer.iban = "FR76300060000112345678901é9" } == "payer.iban")
        #expect(problem { $0.partners[0].bic = "COBA" } == "partners[0].bic")
        #expect(problem { $0.partners[0].bic = "COBA12FFXXX" } == "partners[0].bic")
        #expect(problem { $0.partners[0].legalName = "" } == "partners[0].legalName")
        #expect(problem { $0.partners[0].legalName = "«»" } == "partners[0].legalName")
        #expect(problem { $0.partners[0].legalName = String(repeating: "a", count: 71) } == "partners[0].legalName")
        #expect(problem { $0.partners[0].partner = "RTM" } == "partners[0].partner")
        #expect(problem { $0.partners[1].partner = "rtm" } == "partners[1].partner")  // twice
        #expect(problem { $0.partners[1].partner = "metropole" } == "partners[1].partner")  // the payer
        #expect(problem { $0.partners[1].mandate?.signedOn = "2026-02-30" } == "partners[1].mandate.signedOn")
        #expect(problem { $0.partners[1].mandate?.id = "has space" } == "partners[1].mandate.id")
        #expect(problem { $0.partners[1].mandate?.id = String(repeating: "A", count: 36) } == "partners[1].mandate.id")
        #expect(problem { $0.payer.creditorId = nil } == "partners[1].mandate")
        #expect(problem { $0.payer.creditorId = "FR00ZZZ123456" } == "payer.creditorId")
        #expect(problem { $0.partners = (0...256).map { RegisterTests.entry("p\($0)") } } == "partners")
    }

    @Test func unreadableFilesAreRefusedByName() throws {
        let directory = Scratch.directory("register")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (name, contents) in [("empty", Data()), ("text", Data("not json".utf8)), ("huge", Data(count: RegisterFile.byteCountMax + 1)),
                                 ("missing", Data(#"{"payer": {"partner": "metropole"}, "partners": []}"#.utf8))] {
            let path = "\(directory)/\(name).json"
            try contents.write(to: URL(fileURLWithPath: path))
            #expect(throws: RegisterError.self) { _ = try RegisterFile.load(path) }
        }
        #expect(throws: RegisterError.self) { _ = try RegisterFile.load("\(directory)/absent.json") }
        // A partner with two IBANs: refused, never read as Foundation alone reads it (the
        // first), where another tool reading the same file would pay the second.
        let twice = "\(directory)/twice.json"
        try Data(#"{"payer": {"partner": "metropole"}, "partners": [{"partner": "rtm", "iban": "FR7630006000011234567890189", "iban": "DE89370400440532013000"}]}"#.utf8)
            .write(to: URL(fileURLWithPath: twice))
        do {
            _ = try RegisterFile.load(twice)
            Issue.record("a register with two IBANs for one partner was read")
        } catch {
            #expect(error.reason.contains(#"the member "iban" appears twice"#) && error.reason.contains("partners[0]"), "\(error)")
        }
    }
}

@Suite(.onOwnThreads) struct SettlementFileTests {
    static let created = Date(timeIntervalSince1970: 1_796_000_000)

    /// A clearing where each partner `p<i>` has the net given, the payer ("metropole")
    /// taking the opposite of their sum, with instructions as the ledger's close makes them.
    static func clearing(_ nets: [(String, Int64)], tokenValue: UInt64 = 10_000, epoch: UInt64 = 7) -> CertifiedClearing {
        let payer = id("metropole")
        var statements: [Statement] = []
        var instructions: [Settlement] = []
        let payerNet = -nets.reduce(0) { $0 + $1.1 }
        let digest = SHA256.hash("obligations")
        for (partner, net) in nets + [("metropole", payerNet)] {
            statements.append(Statement(
                epoch: epoch, partner: id(partner), grossIn: net > 0 ? UInt64(net) : 0, grossOut: net < 0 ? UInt64(-net) : 0, net: net,
                obligationsHash: digest))
            guard partner != "metropole", net != 0 else { continue }
            instructions.append(net > 0 ? Settlement(from: payer, to: id(partner), amount: UInt64(net)) : Settlement(from: id(partner), to: payer, amount: UInt64(-net)))
        }
        let report = EpochReport(
            epoch: epoch, firstHeight: 1, lastHeight: 10, programmes: [], categories: [], acceptors: [],
            nets: statements.map { .init(partner: $0.partner, net: $0.net) }, totals: .init(), tokenValueMicroEuros: tokenValue)
        return CertifiedClearing(chainId: "calisson-test", report: report, instructions: instructions, statements: statements, checkpointHeight: 12, stateRoot: SHA256.hash("root"))
    }

    static func register(_ partners: [String], mandates: Set<String> = []) throws -> SettlementRegister {
        try RegisterTests.file(partners.map { RegisterTests.entry($0, mandate: mandates.contains($0) ? .init(id: "M-\($0)", signedOn: "2026-01-15") : nil) }).validated()
    }

    static func files(_ nets: [(String, Int64)], mandates: Set<String> = [], tokenValue: UInt64 = 10_000) throws -> SettlementFiles {
        try SettlementFiles(
            clearing: clearing(nets, tokenValue: tokenValue), register: register(nets.map(\.0), mandates: mandates), created: created, executionDate: "2026-12-04")
    }

    @Test func tokensBecomeCentsRoundedHalfUp() throws {
        #expect(try SettlementFiles.cents(3, tokenValue: 1_667, partner: id("a")) == 1)  // 0.5001 cent
        #expect(try SettlementFiles.cents(1, tokenValue: 4_999, partner: id("a")) == 0)
        #expect(try SettlementFiles.cents(1, tokenValue: 5_000, partner: id("a")) == 1)
        #expect(try SettlementFiles.cents(250, tokenValue: 10_000, partner: id("a")) == 250)
        #expect(try SettlementFiles.cents(9_999_999_999_900, tokenValue: 100, partner: id("a")) == 99_999_999_999)
        // The largest tokens × the largest value: no overflow, a refusal.
        #expect(throws: SettlementError.amountOverSEPAMaximum(id("a"), cents: (UInt128(LedgerLimits.totalMax) * 1_000_000_000 + 5_000) / 10_000)) {
            _ = try SettlementFiles.cents(LedgerLimits.totalMax, tokenValue: Parameters.tokenValueMicroEurosMax, partner: id("a"))
        }
        #expect(SettlementFiles.euros(0) == "0.00" && SettlementFiles.euros(7) == "0.07" && SettlementFiles.euros(123_456) == "1234.56")
        #expect(SettlementFiles.cents(euros: "1234.56") == 123_456 && SettlementFiles.cents(euros: "1.5") == nil && SettlementFiles.cents(euros: "-1.00") == nil)
    }

    @Test func paymentsCollectionsAndTheirRemittance() throws {
        let files = try Self.files([("rtm", 400), ("friche", -100), ("tri", -50), ("fonds", 0)], mandates: ["friche"])
        #expect(files.payments.map(\.partner.partner) == [id("rtm")])
        #expect(files.payments[0].cents == 400 && files.payments[0].direction == .toPartner)
        #expect(files.collections.map(\.partner.partner) == [id("friche"), id("tri")])
        let statement = Self.clearing([("rtm", 400)]).statements[0]
        #expect(files.payments[0].remittance == "CALISSON EPOCH 7 STATEMENT \(CertifiedClearing.statementHash(statement).hex)")
        #expect(files.payments[0].endToEndId.count <= 35)
        let creditTransfers = try #require(files.creditTransfers)
        #expect(creditTransfers.contains("<Ustrd>\(files.payments[0].remittance)</Ustrd>"))
        let directDebits = try #require(files.directDebits)
        #expect(directDebits.contains("<MndtId>M-friche</MndtId>") && !directDebits.contains("M-tri"))
        let owed = files.owedCSV.split(separator: "\r\n")
        #expect(owed.count == 3)
        #expect(owed[1].hasPrefix("7,friche,Partenaire friche,DE89370400440532013000,COBADEFFXXX,1.00,direct_debit,M-friche,"))
        #expect(owed[2].contains(",0.50,transfer_expected,,"))
        let accounting = files.accountingCSV.split(separator: "\r\n")
        #expect(accounting.count == 6)  // header, four partners and the payer
        #expect(accounting.contains { $0.hasPrefix("7,metropole,Metropole Aix-Marseille-Provence,0,250,-250,10000,0.00,counterparty,") })
        #expect(accounting.contains { $0.hasPrefix("7,rtm,Partenaire rtm,400,0,400,10000,4.00,credit_transfer,C7-") })
        #expect(accounting.contains { $0.hasPrefix("7,fonds,Partenaire fonds,0,0,0,10000,0.00,none,,") })
    }

    /// Every field a partner or a vote chose is one a spreadsheet takes as text: a partner
    /// id starting with '-', a mandate id starting with '+' and holding a comma.
    @Test func csvFieldsAreNeverFormulas() throws {
        let register = try RegisterTests.file([
            RegisterTests.entry("-cmd", mandate: .init(id: "+SUM(1,2)", signedOn: "2026-01-15")), RegisterTests.entry("rtm"),
        ]).validated()
        let files = try SettlementFiles(
            clearing: Self.clearing([("-cmd", -100), ("rtm", 100)]), register: register, created: Self.created, executionDate: "2026-12-04")
        let owed = files.owedCSV.split(separator: "\r\n")
        #expect(owed.count == 2 && owed[1].hasPrefix("7,'-cmd,Partenaire -cmd,") && owed[1].contains(",direct_debit,\"'+SUM(1,2)\",C7-"), "\(owed)")
        #expect(files.accountingCSV.split(separator: "\r\n").contains { $0.hasPrefix("7,'-cmd,") }, "\(files.accountingCSV)")
        for line in (files.owedCSV + files.accountingCSV).split(separator: "\r\n") {
            #expect(!line.split(separator: ",").contains { "=+-@".contains($0.first ?? " ") && Int($0) == nil && Double($0) == nil }, "\(line)")
        }
        #expect(SettlementFiles.field("\t=1") == "'\t=1" && SettlementFiles.field("\r=1") == "\"'\r=1\"")
        #expect(SettlementFiles.field("a\nb") == "\"a\nb\"" && SettlementFiles.field("a\rb") == "\"a\rb\"" && SettlementFiles.field("a\r\nb") == "\"a\r\nb\"")
    }

    /// A net under half a cent moves nothing and needs no bank details: a partner not in the
    /// register then stops nobody's payment.
    @Test func aNetUnderHalfACentNeedsNoRegisterEntry() throws {
        let files = try SettlementFiles(
            clearing: Self.clearing([("rtm", 400), ("tiny", 0), ("dust", -1)], tokenValue: 4_000), register: Self.register(["rtm"]), created: Self.created,
            executionDate: "2026-12-04")
        #expect(files.payments.map(\.partner.partner) == [id("rtm")] && files.collections.isEmpty)
    }

    /// Written again into the same directory without a kind of file (the mandate removed
    /// meanwhile): the earlier run's file of that kind is removed, not left to be uploaded.
    @Test func aFileAnEarlierRunWroteAndThisOneDoesNotIsRemoved() throws {
        let directory = Scratch.directory("settlement")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try Self.files([("rtm", 400), ("friche", -100)], mandates: ["friche"]).write(to: directory)
        #expect(first.contains { $0.hasSuffix("epoch-7-direct-debits.xml") })
        let second = try Self.files([("rtm", 400), ("friche", -100)]).write(to: directory)
        #expect(!second.contains { $0.hasSuffix("direct-debits.xml") })
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            == ["epoch-7-accounting.csv", "epoch-7-credit-transfers.xml", "epoch-7-owed.csv"])
    }

    @Test func whatDoesNotAddUpIsRefused() throws {
        #expect(throws: SettlementError.tokenValueNotSet(epoch: 7)) { _ = try Self.files([("rtm", 400)], tokenValue: 0) }
        // A partner paid but absent from the register.
        #expect(throws: SettlementError.notInRegister(id("rtm"))) {
            _ = try SettlementFiles(clearing: Self.clearing([("rtm", 400)]), register: Self.register([]), created: Self.created, executionDate: "2026-12-04")
        }
        // A statement that does not match the instruction.
        var clearing = Self.clearing([("rtm", 400)])
        clearing = CertifiedClearing(
            chainId: clearing.chainId, report: clearing.report, instructions: [Settlement(from: id("metropole"), to: id("rtm"), amount: 401)],
            statements: clearing.statements, checkpointHeight: 12, stateRoot: clearing.stateRoot)
        #expect(throws: SettlementError.self) {
            _ = try SettlementFiles(clearing: clearing, register: Self.register(["rtm"]), created: Self.created, executionDate: "2026-12-04")
        }
        // The register's payer is not the chain's counterparty.
        var other = RegisterTests.file([RegisterTests.entry("rtm")])
        other.payer.partner = "friche"
        #expect(throws: SettlementError.payerIsNotTheCounterparty(payer: id("friche"), instruction: "metropole → rtm 400")) {
            _ = try SettlementFiles(clearing: Self.clearing([("rtm", 400)]), register: other.validated(), created: Self.created, executionDate: "2026-12-04")
        }
        // Statements that net something and no instruction (no authority left to settle
        // with): refused, naming the partner, rather than files that move nothing.
        let orphaned = Self.clearing([("rtm", 400), ("tri", -150)])
        let without = CertifiedClearing(
            chainId: orphaned.chainId, report: orphaned.report, instructions: [], statements: orphaned.statements, checkpointHeight: 12,
            stateRoot: orphaned.stateRoot)
        #expect(throws: SettlementError.statementWithoutInstruction(id("rtm"), net: 400)) {
            _ = try SettlementFiles(clearing: without, register: Self.register(["rtm", "tri"]), created: Self.created, executionDate: "2026-12-04")
        }
    }

    // MARK: Against the official schemas

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The XSD from the sepaxml package in .venv (make test installs it).
    static func schema(_ name: String) -> String? {
        let lib = "\(root)/.venv/lib"
        let pythons = (try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []
        for python in pythons {
            let path = "\(lib)/\(python)/site-packages/sepaxml/schemas/\(name).xsd"
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        Issue.record("the \(name) schema is missing from .venv (sepaxml): run scripts/install-test-tools (make test does)")
        return nil
    }

    /// xmllint's verdict on `xml` against `schema`: nil when valid, else its complaint.
    static func validate(_ xml: String, _ schema: String) throws -> String? {
        let file = URL(fileURLWithPath: Scratch.file("settlement.xml"))
        try Data(xml.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        // A pipe no other child inherits (`ChildProcess` closes every other descriptor).
        let ran = try ChildProcess.run("/usr/bin/xmllint", ["--noout", "--schema", schema, file.path])
        return ran.exit == .exited(0) ? nil : String(decoding: ran.errors, as: UTF8.self)
    }

    /// The count and control sum a message states, and the sum of its amounts, in cents.
    static func controls(_ xml: String) throws -> (count: String, sum: UInt64?, amounts: [UInt64]) {
        let document = try XMLDocument(xmlString: xml)
        let count = try document.nodes(forXPath: "//*[local-name()='GrpHdr']/*[local-name()='NbOfTxs']").first?.stringValue ?? ""
        let sum = try document.nodes(forXPath: "//*[local-name()='GrpHdr']/*[local-name()='CtrlSum']").first?.stringValue
        let amounts = try document.nodes(forXPath: "//*[local-name()='InstdAmt']").compactMap { $0.stringValue.flatMap(SettlementFiles.cents(euros:)) }
        return (count, sum.flatMap(SettlementFiles.cents(euros:)), amounts)
    }

    @Test(arguments: [0, 1, 255])
    func messagesAreValidAgainstTheOfficialSchemas(partners: Int) throws {
        guard let pain001 = Self.schema("pain.001.001.09"), let pain008 = Self.schema("pain.008.001.08") else { return }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/xmllint") else {
            Issue.record("xmllint is missing: run scripts/install-test-tools (make test does)")
            return
        }
        // Half the partners are owed, half owe (every other one with a mandate); the
        // payer makes 256 partners with `partners` = 255, the most a chain holds.
        var nets: [(String, Int64)] = []
        for index in 0..<partners {
            let net = index % 2 == 0 ? Int64(1_000 + index * 37) : -Int64(500 + index)
            nets.append(("p\(index)", net))
        }
        let mandates = Set(nets.enumerated().filter { $0.offset % 4 == 1 }.map(\.element.0))
        let files = try Self.files(nets, mandates: mandates)
        #expect(files.payments.count == (partners + 1) / 2)
        #expect(files.collections.count == partners / 2)
        if partners == 0 {
            #expect(files.creditTransfers == nil && files.directDebits == nil)
            #expect(files.owedCSV == "epoch,partner,legal_name,iban,bic,amount_eur,collection,mandate_id,end_to_end_id,remittance\r\n")
            return
        }
        let creditTransfers = try #require(files.creditTransfers)
        #expect(try Self.validate(creditTransfers, pain001) == nil)
        let controls = try Self.controls(creditTransfers)
        #expect(controls.count == "\(files.payments.count)" && controls.amounts == files.payments.map(\.cents))
        #expect(controls.sum == controls.amounts.reduce(0, +))
        if partners == 1 {
            #expect(files.directDebits == nil)
        } else {
            let directDebits = try #require(files.directDebits)
            #expect(try Self.validate(directDebits, pain008) == nil)
            let debits = try Self.controls(directDebits)
            #expect(debits.count == "\(mandates.count)" && debits.sum == debits.amounts.reduce(0, +))
        }
        // A message that does not validate is caught by the same check (the test can fail).
        let broken = creditTransfers.replacingOccurrences(of: "<PmtMtd>TRF</PmtMtd>", with: "<PmtMtd>CASH</PmtMtd>")
        #expect(try Self.validate(broken, pain001) != nil)
    }
}
