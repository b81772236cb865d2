import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import Settlement

/// The dashboard's pages, rendered: each page of a running gateway asked once a round,
/// rounds spaced past the page cache's 2 seconds so that every request is a render (the
/// reads from the nodes and the HTML), timed from this client on loopback.
struct DashboardBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Render time (p50, p99, max) and weight of every dashboard page of a running gateway (KEEP=1 make run starts one).",
        discussion: "Goals: every page under 100 ms at the gateway (p99) and under 100 KB (Docs/DASHBOARD.md).")

    @Option(help: "The gateway's port on 127.0.0.1.") var port = 8_000
    @Option(help: "Rounds: each asks every page once, 2.1 s apart (past the page cache).") var rounds = 40
    @Option(help: "Programme pages to include (ids).") var programme: [String] = ["recyclage", "culture", "mobilite"]
    @Option(help: "Write the figures as JSON to this file.") var json: String?

    func validate() throws {
        guard (1...10_000).contains(rounds) else { throw ValidationError("--rounds must be 1...10000") }
        guard (1...65_535).contains(port) else { throw ValidationError("--port must be 1...65535, not \(port)") }
    }

    func run() throws {
        var pages = ["/fr/", "/en/", "/fr/partners", "/fr/governance", "/fr/validators", "/fr/sobriety", "/fr/lookup?q=1"]
        pages += programme.map { "/fr/programmes/\($0)" }
        var times: [String: [Double]] = [:], sizes: [String: Int] = [:]
        let connection = try HTTPConnection(port: port)
        for round in 0..<rounds {
            if round > 0 { Thread.sleep(forTimeInterval: 2.1) }
            for page in pages {
                let began = DispatchTime.now().uptimeNanoseconds
                let (status, body) = try connection.request("GET", page, key: "")
                let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - began) / 1e6
                guard status == 200 else { throw ValidationError("\(page): status \(status): \(String(decoding: body.prefix(300), as: UTF8.self))") }
                times[page, default: []].append(milliseconds)
                sizes[page] = body.count
            }
        }
        var all: [Double] = []
        var report: [[String: Any]] = []
        for page in pages {
            let sorted = (times[page] ?? []).sorted()
            all += sorted
            let figures = Self.percentiles(sorted)
            print(page.padding(toLength: 28, withPad: " ", startingAt: 0)
                + String(format: " p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms  %6d bytes", figures.p50, figures.p99, figures.max, sizes[page] ?? 0))
            report.append(["page": page, "p50Milliseconds": figures.p50, "p99Milliseconds": figures.p99, "maxMilliseconds": figures.max, "bytes": sizes[page] ?? 0])
        }
        let overall = Self.percentiles(all.sorted())
        let heaviest = sizes.values.max() ?? 0
        print(String(format: "all pages, %d renders: p50 %.1f ms, p99 %.1f ms, max %.1f ms (goal: p99 under 100 ms); heaviest page %d bytes (goal: under 102400)",
                     all.count, overall.p50, overall.p99, overall.max, heaviest))
        if let json {
            let machine = Machine.describe()
            let document: [String: Any] = [
                "machine": ["cpu": machine.cpu, "commit": machine.commit, "date": machine.date], "rounds": rounds, "pages": report,
                "all": ["renders": all.count, "p50Milliseconds": overall.p50, "p99Milliseconds": overall.p99, "maxMilliseconds": overall.max],
                "heaviestBytes": heaviest,
            ]
            try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        }
    }

    static func percentiles(_ sorted: [Double]) -> (p50: Double, p99: Double, max: Double) {
        guard !sorted.isEmpty else { return (0, 0, 0) }
        func at(_ fraction: Double) -> Double { sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded(.up)))] }
        return (at(0.5), at(0.99), sorted[sorted.count - 1])
    }
}

/// The settlement of an epoch with the most partners a chain holds (255 and the payer),
/// half paid and half collecting (every other one with a mandate): the register checked,
/// the messages built, read back and checked, the four files written.
struct SettlementBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlement",
        abstract: "Time to produce an epoch's settlement files for 256 partners (goal: under a second).")

    @Option(help: "Partners besides the payer (at most 255).") var partners = 255
    @Option(help: "Runs (the median and the maximum are reported).") var runs = 20

    func validate() throws {
        guard (1...255).contains(partners), (1...10_000).contains(runs) else { throw ValidationError("--partners is 1...255, --runs 1...10000") }
    }

    func run() throws {
        let payer = Identifier("metropole")!
        var statements: [Statement] = [], instructions: [Settlement] = [], entries: [RegisterFile.Entry] = []
        var payerNet: Int64 = 0
        for index in 0..<partners {
            let id = Identifier("partenaire-\(index)")!
            let net: Int64 = index % 2 == 0 ? 10_000 + Int64(index) * 37 : -5_000 - Int64(index)
            payerNet -= net
            statements.append(Statement(epoch: 12, partner: id, grossIn: net > 0 ? net.magnitude : 0, grossOut: net < 0 ? net.magnitude : 0, net: net,
                                        obligationsHash: SHA256.hash("obligations")))
            instructions.append(net > 0 ? Settlement(from: payer, to: id, amount: net.magnitude) : Settlement(from: id, to: payer, amount: net.magnitude))
            let branch = String(repeating: "0", count: 5 - "\(index + 1)".count) + "\(index + 1)"
            entries.append(.init(partner: id.rawValue, legalName: "Partenaire métropolitain n° \(index)", iban: IBAN.french(bank: "99999", branch: branch, account: "00000001000"),
                                 bic: "CALSFRPPXXX", mandate: index % 4 == 1 ? .init(id: "CAL-\(index)-2026", signedOn: "2026-01-15") : nil))
        }
        statements.append(Statement(epoch: 12, partner: payer, grossIn: 0, grossOut: payerNet.magnitude, net: payerNet, obligationsHash: SHA256.hash("obligations")))
        let report = EpochReport(
            epoch: 12, firstHeight: 1, lastHeight: 1_000, programmes: [], categories: [], acceptors: [],
            nets: statements.map { .init(partner: $0.partner, net: $0.net) }, totals: .init(), tokenValueMicroEuros: 10_000)
        let clearing = CertifiedClearing(chainId: "calisson-bench", report: report, instructions: instructions, statements: statements, checkpointHeight: 1_000,
                                         stateRoot: SHA256.hash("root"))
        let file = RegisterFile(
            payer: .init(partner: "metropole", legalName: "Métropole Aix-Marseille-Provence", iban: IBAN.french(bank: "99999", branch: "00000", account: "00000000001"),
                         bic: "CALSFRPPXXX", creditorId: CreditorIdentifier.make(country: "FR", business: "ZZZ", national: "999999")),
            partners: entries)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("calisson-settlement-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var seconds: [Double] = []
        var produced: SettlementFiles?
        for _ in 0..<runs {
            let began = DispatchTime.now().uptimeNanoseconds
            let register = try file.validated()
            let files = try SettlementFiles(clearing: clearing, register: register, created: Date(), executionDate: "2026-12-04")
            _ = try files.write(to: directory)
            seconds.append(Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9)
            produced = files
        }
        seconds.sort()
        let files = produced!
        print(String(format: "settlement of %d partners and the payer: %d transfers, %d collections (%d direct debits): median %.1f ms, max %.1f ms over %d runs (goal: under 1000 ms)",
                     partners, files.payments.count, files.collections.count, files.collections.filter { $0.partner.mandate != nil }.count,
                     seconds[seconds.count / 2] * 1_000, seconds[seconds.count - 1] * 1_000, runs))
    }
}
