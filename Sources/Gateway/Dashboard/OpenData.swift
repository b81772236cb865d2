import CalissonCrypto
import Foundation
import HTTPTypes
import Hummingbird
import Ledger
import LightClient
import NIOCore
import Settlement
import Wire

/// The proof documents and the open data (Docs/DASHBOARD.md, Docs/OPEN-DATA.md).
extension Dashboard {
    // MARK: Proofs

    /// Everything needed to check a figure without trusting the gateway: the record's key
    /// and bytes, the Merkle proof to the state root, the checkpoint certificate and the
    /// validator keys in force that signed it.
    struct ProofDocument: Encodable {
        struct Terminal: Encodable {
            let key: String
            let valueHash: String
        }

        let record: String
        let key: String
        let value: String?
        let checkpointHeight: UInt64
        let stateRoot: String
        let certificate: String
        let validators: [String]
        let siblings: [String]
        let terminal: Terminal?
        let source: String
        let howToCheck: String
    }

    static let howToCheck = """
        1. The certificate (Docs/WIRE.md, checkpoint certificate) holds signatures of more than two thirds of `validators` \
        over (chain id, checkpointHeight, stateRoot); the validators are those of the genesis, followed through every \
        certified handover (Docs/QUERY.md). 2. The Merkle proof: hash `value` as a leaf under `key`, then with each of \
        `siblings` from the deepest up (Docs/STORAGE.md, the state tree) to obtain `stateRoot`; with `value` null, \
        `terminal` (or its absence) proves no record is stored under `key`. 3. Decode `value` (Docs/WIRE.md).
        """

    /// The state key of a public record: supply (the ledger's meta record), parameters,
    /// validator-keys, programme/<id>, partner/<id>, proposal/<n>, epoch-report/<n>.
    static func publicKey(_ kind: String, _ id: String?) -> StateKey? {
        switch (kind, id) {
        case ("supply", nil): return StateKeys.meta
        case ("parameters", nil): return StateKeys.parameters
        case ("validator-keys", nil): return StateKeys.validatorKeys
        case let ("programme", raw?): return Identifier(raw).map(StateKeys.programme)
        case let ("partner", raw?): return Identifier(raw).map(StateKeys.partner)
        case let ("proposal", raw?): return UInt64(raw).map(StateKeys.proposal)
        case let ("epoch-report", raw?): return UInt64(raw).map(StateKeys.epochReport)
        default: return nil
        }
    }

    func proof(_ kind: String, _ id: String?) async -> Response {
        guard let key = Self.publicKey(kind, id) else {
            return Self.text(.notFound, "no such public record: try /proofs/supply, /proofs/parameters, /proofs/validator-keys, /proofs/programme/<id>, /proofs/partner/<id>, /proofs/proposal/<n>, /proofs/epoch-report/<n>\n")
        }
        let found: VerifiedRecord
        do { found = try await pool.read(key) } catch { return Self.text(.badGateway, "no verified answer: \(error)\n") }
        let record = found.record
        let document = ProofDocument(
            record: kind + (id.map { "/\($0)" } ?? ""), key: key.hex, value: record.value.map { Hex.encode($0) }, checkpointHeight: record.height,
            stateRoot: record.root.hex, certificate: Hex.encode(record.certificate), validators: record.validators.map(\.bytes.hex),
            siblings: record.proof?.siblings.map(\.hex) ?? [], terminal: record.proof?.terminal.map { .init(key: $0.key.hex, valueHash: $0.valueHash.hex) },
            source: found.source, howToCheck: Self.howToCheck)
        return Self.json(document)
    }

    static func json(_ value: some Encodable, headers: HTTPFields = [:]) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var fields = headers
        fields[.contentType] = "application/json"
        fields[.accessControlAllowOrigin] = "*"
        return Response(status: .ok, headers: fields, body: Self.body(ByteBuffer(bytes: body)))
    }

    /// A body written in parts of 32 KiB past 64 KiB, each waiting for the connection to
    /// take the last: a large answer (open data runs to megabytes) written as one buffer
    /// kept the connection unwritable until nearly all of it was taken, and a slow client
    /// still reading it was cut as stalled (`StalledReaderTimeout`).
    static func body(_ buffer: ByteBuffer) -> ResponseBody {
        let part = 32 << 10
        guard buffer.readableBytes > 2 * part else { return ResponseBody(byteBuffer: buffer) }
        return ResponseBody(contentLength: buffer.readableBytes) { writer in
            var rest = buffer
            while let slice = rest.readSlice(length: min(part, rest.readableBytes)), slice.readableBytes > 0 {
                try await writer.write(slice)
            }
            try await writer.finish(nil)
        }
    }

    static func text(_ status: HTTPResponse.Status, _ text: String, type: String = "text/plain; charset=utf-8", headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = type
        return Response(status: status, headers: fields, body: Self.body(ByteBuffer(string: text)))
    }

    // MARK: Open data

    /// Epochs one request covers at most, and by default (the latest closed ones).
    static let openDataEpochsMax: UInt64 = 500
    static let openDataEpochsDefault: UInt64 = 100
    /// Rows one answer holds at most (500 epochs of 4,096 programmes would be two million,
    /// seconds of CPU and hundreds of megabytes for one public GET): past it, `400` says how
    /// many epochs fit.
    static let openDataRowsMax = 50_000
    static let licence = "Licence Ouverte 2.0 (Etalab), https://www.etalab.gouv.fr/licence-ouverte-open-licence/"

    /// The open data's tables: one row per epoch and programme, category, acceptor or
    /// partner, or one per epoch; the columns of each are in Docs/OPEN-DATA.md.
    enum Table: String, CaseIterable {
        case epochs, programmes, categories, acceptors, partners

        var columns: [String] {
            let figures = ["attributions", "units", "issued", "redeemed", "expired", "sunk"]
            switch self {
            case .epochs: return ["epoch", "first_height", "last_height", "supply_issued", "supply_redeemed", "supply_expired", "supply_sunk", "token_value_micro_eur"]
            case .programmes: return ["epoch", "programme", "category"] + figures + ["budget_left"]
            case .categories: return ["epoch", "category"] + figures
            case .acceptors: return ["epoch", "acceptor", "redemptions", "amount"]
            case .partners: return ["epoch", "partner", "net"]
            }
        }

        /// The rows one report gives, as text cells (numbers in decimal, no grouping).
        func rows(_ report: EpochReport) -> [[String]] {
            let epoch = "\(report.epoch)"
            func figures(_ f: EpochReport.Figures) -> [String] { ["\(f.attributions)", "\(f.units)", "\(f.issued)", "\(f.redeemed)", "\(f.expired)", "\(f.sunk)"] }
            switch self {
            case .epochs:
                let t = report.totals
                return [[epoch, "\(report.firstHeight)", "\(report.lastHeight)", "\(t.issued)", "\(t.redeemed)", "\(t.expired)", "\(t.sunk)", "\(report.tokenValueMicroEuros)"]]
            case .programmes:
                return report.programmes.map { [epoch, $0.programme.rawValue, "\($0.category)"] + figures($0.figures) + ["\($0.budgetLeft)"] }
            case .categories: return report.categories.map { [epoch, "\($0.category)"] + figures($0.figures) }
            case .acceptors: return report.acceptors.map { [epoch, $0.acceptor.rawValue, "\($0.redemptions)", "\($0.amount)"] }
            case .partners: return report.nets.map { [epoch, $0.partner.rawValue, "\($0.net)"] }
            }
        }

        /// How many rows `rows(report)` gives, without making them.
        func rowCount(_ report: EpochReport) -> Int {
            switch self {
            case .epochs: 1
            case .programmes: report.programmes.count
            case .categories: report.categories.count
            case .acceptors: report.acceptors.count
            case .partners: report.nets.count
            }
        }

        /// The rows as JSON objects: ids and categories as strings, the rest as numbers.
        func objects(_ rows: [[String]]) -> [[String: JSONValue]] {
            let text: Set<String> = ["programme", "category", "acceptor", "partner"]
            return rows.map { row in
                var object: [String: JSONValue] = [:]
                for (column, cell) in zip(columns, row) {
                    object[column] = text.contains(column) ? .text(cell) : Int64(cell).map(JSONValue.number) ?? .text(cell)
                }
                return object
            }
        }
    }

    func openData(_ file: String, from: String?, to: String?) async -> Response {
        let parts = file.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let table = Table(rawValue: String(parts[0])), parts[1] == "csv" || parts[1] == "json" else {
            return Self.text(.notFound, "no such table: \(Table.allCases.map { "\($0.rawValue).csv, \($0.rawValue).json" }.joined(separator: ", ")) (Docs/OPEN-DATA.md)\n")
        }
        let meta: LedgerMeta
        do { meta = try await self.meta().0 } catch { return Self.text(.badGateway, "no verified answer: \(error)\n") }
        let closed = meta.epoch  // epochs 0..<closed are closed
        guard closed > 0 else { return Self.table(table, [], csv: parts[1] == "csv", range: nil) }
        let last: UInt64, first: UInt64
        switch (from.map { UInt64($0) }, to.map { UInt64($0) }) {
        case (nil, nil): (first, last) = (closed > Self.openDataEpochsDefault ? closed - Self.openDataEpochsDefault : 0, closed - 1)
        case let (start??, nil): (first, last) = (start, min(closed - 1, start.saturatingAdding(Self.openDataEpochsMax - 1)))
        case let (nil, end??): (first, last) = (end >= Self.openDataEpochsMax ? end - Self.openDataEpochsMax + 1 : 0, min(end, closed - 1))
        case let (start??, end??): (first, last) = (start, min(end, closed - 1))
        default: return Self.text(.badRequest, "from and to are epoch numbers (0 to 2^64−1)\n")
        }
        guard first <= last else { return Self.table(table, [], csv: parts[1] == "csv", range: nil) }
        guard last - first < Self.openDataEpochsMax else {
            return Self.text(.badRequest, "at most \(Self.openDataEpochsMax) epochs a request (asked \(first) to \(last)): ask in pages with from and to\n")
        }
        // The rows counted as the reports come: a range past the bound is refused at the
        // report that crosses it, not after every report of the range was fetched and held
        // (500 reports of thousands of programmes, hundreds of megabytes, for a 400).
        var found: [CertifiedReport] = []
        var rows = 0
        do {
            for epoch in first...last {
                guard let entry = try await report(epoch) else { continue }
                rows += table.rowCount(entry.report)
                guard rows <= Self.openDataRowsMax else {
                    let fit = found.last.map { "epochs \(first) to \($0.report.epoch) fit" } ?? "epoch \(entry.report.epoch) alone has more"
                    return Self.text(.badRequest, "at most \(Self.openDataRowsMax) rows a request: epochs \(first) to \(last) of \(table.rawValue) have more; "
                        + "\(fit): ask in pages with from and to\n")
                }
                found.append(entry)
            }
        } catch { return Self.text(.badGateway, "no verified answer: \(error)\n") }
        return Self.table(table, found, csv: parts[1] == "csv", range: (first, last))
    }

    private func report(_ epoch: UInt64) async throws -> CertifiedReport? { try await reports.report(epoch, pool: pool) }

    /// A cell of an open-data CSV: a number as it is; text (ids a vote or a partner chose:
    /// one may start with '-') never a formula a spreadsheet would run, quoted if it must be.
    static func csvCell(_ cell: String) -> String {
        Int64(cell) != nil || UInt64(cell) != nil ? cell : SettlementFiles.field(cell)
    }

    static func table(_ table: Table, _ reports: [CertifiedReport], csv: Bool, range: (UInt64, UInt64)?) -> Response {
        let headers: HTTPFields = [.init("Link")!: "<https://www.etalab.gouv.fr/licence-ouverte-open-licence/>; rel=\"license\"", .accessControlAllowOrigin: "*"]
        var rows: [[String]] = []
        var certified: [[String: String]] = []
        for entry in reports {
            rows += table.rows(entry.report)
            certified.append(["epoch": "\(entry.report.epoch)", "checkpointHeight": "\(entry.found.record.height)", "stateRoot": entry.found.record.root.hex,
                              "proof": "/proofs/epoch-report/\(entry.report.epoch)"])
        }
        if csv {
            var text = table.columns.joined(separator: ",") + "\r\n"
            for row in rows { text += row.map(csvCell).joined(separator: ",") + "\r\n" }
            return Self.text(.ok, text, type: "text/csv; charset=utf-8; header=present", headers: headers)
        }
        return Self.json(OpenDataDocument(
            table: table.rawValue, licence: licence, columns: table.columns, fromEpoch: range?.0, toEpoch: range?.1, rows: table.objects(rows),
            certification: certified),
            headers: headers)
    }

    struct OpenDataDocument: Encodable {
        let table: String
        let licence: String
        let columns: [String]
        let fromEpoch: UInt64?
        let toEpoch: UInt64?
        let rows: [[String: JSONValue]]
        /// Per epoch, the checkpoint its report was verified at and where its proof is.
        let certification: [[String: String]]
    }

    enum JSONValue: Encodable {
        case number(Int64)
        case text(String)
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case let .number(value): try container.encode(value)
            case let .text(value): try container.encode(value)
            }
        }
    }

    /// `/open-data/v1/epochs/<n>.json`: one report, whole, with its certification.
    func openDataReport(_ file: String) async -> Response {
        guard file.hasSuffix(".json"), let epoch = UInt64(file.dropLast(5)) else {
            return Self.text(.notFound, "an epoch's report is /open-data/v1/epochs/<epoch>.json\n")
        }
        let entry: CertifiedReport?
        do { entry = try await report(epoch) } catch { return Self.text(.badGateway, "no verified answer: \(error)\n") }
        guard let entry else { return Self.text(.notFound, "epoch \(epoch) is not closed: it has no report yet\n") }
        var tables: [String: [[String: JSONValue]]] = [:]
        for table in Table.allCases { tables[table.rawValue] = table.objects(table.rows(entry.report)) }
        return Self.json(EpochDocument(
            epoch: epoch, licence: Self.licence, tables: tables, checkpointHeight: entry.found.record.height, stateRoot: entry.found.record.root.hex,
            proof: "/proofs/epoch-report/\(epoch)"), headers: [.init("Link")!: "<https://www.etalab.gouv.fr/licence-ouverte-open-licence/>; rel=\"license\""])
    }

    struct EpochDocument: Encodable {
        let epoch: UInt64
        let licence: String
        let tables: [String: [[String: JSONValue]]]
        let checkpointHeight: UInt64
        let stateRoot: String
        let proof: String
    }
}
