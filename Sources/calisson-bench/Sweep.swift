import ArgumentParser
import Foundation
import Spawning

/// A grid of `ordering` or `cluster` runs, each in a fresh process of this binary, with
/// the results gathered as JSON and CSV and drawn as SVG (and PNG where a converter is
/// installed).
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run a grid of ordering or cluster measurements; write JSON, CSV and plots.",
        discussion: """
            Each point runs `calisson-bench ordering` or `calisson-bench cluster` in its own \
            process (nothing carries over from one point to the next) with --json, and the \
            sweep gathers the results into DIR/sweep.json and DIR/sweep.csv, and draws \
            DIR/throughput-vs-load.svg, DIR/latency-vs-throughput.svg and \
            DIR/throughput-vs-validators.svg (and .png beside each when rsvg-convert is \
            installed, else ImageMagick's convert). The offered load is --outstanding for ordering (commands in flight) \
            and --rate for cluster (transactions per second, open loop).
            """)

    enum Mode: String, ExpressibleByArgument { case ordering, cluster }

    @Option(help: "ordering or cluster.") var mode: Mode = .ordering
    @Option(help: "Validator counts, comma-separated.") var validators = "4,7,10"
    @Option(help: "Block sizes (ordering), comma-separated.") var blockSizes = "100,400"
    @Option(help: "Payload sizes in bytes (ordering), comma-separated.") var payloadSizes = "8"
    @Option(help: "Offered loads, comma-separated: commands in flight (ordering) or transactions per second (cluster).") var loads = "400,1000,4000"
    @Option(help: "Seconds measured per point (ordering).") var duration = 5.0
    @Option(help: "Transactions per point (cluster).") var transactions = 3_000
    @Option(help: "Directory for the results.") var out = "sweep"

    /// A comma-separated list of `kind` (whole numbers, numbers), each within `range`.
    static func values<T: LosslessStringConvertible & Comparable>(_ list: String, _ option: String, _ kind: String, in range: ClosedRange<T>) throws -> [T] {
        let values = list.split(separator: ",").map { T($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0.map(range.contains) == true }) else {
            throw ValidationError("--\(option): \(kind) from \(range.lowerBound) to \(range.upperBound), comma-separated, not \"\(list.prefix(100))\"")
        }
        return values.map { $0! }
    }

    func validate() throws {
        guard duration.isFinite, duration > 0, duration <= 86_400 else { throw ValidationError("--duration: seconds, more than 0 and at most 86400, not \(duration)") }
        guard (1...10_000_000).contains(transactions) else { throw ValidationError("--transactions: 1 to 10000000, not \(transactions)") }
    }

    func run() throws {
        // The bounds of `ordering` and `cluster` (their --validators, --block-size,
        // --payload-size, --outstanding and --rate).
        let validatorCounts = try Self.values(validators, "validators", "whole numbers", in: 1...100)
        let blocks = mode == .ordering ? try Self.values(blockSizes, "block-sizes", "whole numbers", in: 1...100_000) : [0]
        let payloads = mode == .ordering ? try Self.values(payloadSizes, "payload-sizes", "whole numbers", in: 8...(1 << 20)) : [0]
        let offered = try Self.values(loads, "loads", "numbers", in: 1.0...1_000_000)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        guard let me = Bundle.main.executablePath else { throw ValidationError("cannot find this executable") }
        let machine = Machine.describe()
        var points: [[String: Any]] = []
        let total = validatorCounts.count * blocks.count * payloads.count * offered.count
        var index = 0
        for n in validatorCounts {
            for block in blocks {
                for payload in payloads {
                    for load in offered {
                        index += 1
                        let file = "\(out)/point-\(index).json"
                        var arguments: [String]
                        switch mode {
                        case .ordering:
                            arguments = ["ordering", "--validators", "\(n)", "--block-size", "\(block)", "--payload-size", "\(payload)",
                                         "--outstanding", "\(max(Int(load), block))", "--duration", "\(duration)", "--json", file]
                        case .cluster:
                            arguments = ["cluster", "--validators", "\(n)", "--rate", "\(load)", "--transactions", "\(transactions)", "--plain",
                                         "--json", file]
                        }
                        print("sweep \(index)/\(total): calisson-bench \(arguments.dropLast(2).joined(separator: " "))")
                        let exit = try ChildProcess(me, arguments, output: .null).wait()
                        guard let data = try? Data(contentsOf: URL(fileURLWithPath: file)),
                            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                            let results = object["results"] as? [String: Any]
                        else {
                            print("  no result (\(exit)); skipped")
                            continue
                        }
                        let latency = results["latencyMilliseconds"] as? [String: Double] ?? [:]
                        let throughput = (results["commandsPerSecond"] ?? results["finalizedTransactionsPerSecond"]) as? Int ?? 0
                        points.append([
                            "validators": n, "blockSize": block, "payloadSize": payload, "offered": load, "throughput": throughput,
                            "p50": latency["p50"] ?? 0, "p90": latency["p90"] ?? 0, "p99": latency["p99"] ?? 0, "max": latency["max"] ?? 0,
                            "viewChanges": results["viewChanges"] as? Int ?? 0,
                        ])
                        print(String(format: "  %d/s, p50 %.1f ms, p99 %.1f ms", throughput, latency["p50"] ?? 0, latency["p99"] ?? 0))
                    }
                }
            }
        }
        let summary: [String: Any] = ["mode": mode.rawValue, "date": machine.date, "commit": machine.commit, "cpu": machine.cpu,
                                      "cores": Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), "points": points]
        try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys, .prettyPrinted]).write(to: URL(fileURLWithPath: "\(out)/sweep.json"))
        let columns = ["validators", "blockSize", "payloadSize", "offered", "throughput", "p50", "p90", "p99", "max", "viewChanges"]
        let csv = ([columns.joined(separator: ",")] + points.map { point in columns.map { "\(point[$0] ?? "")" }.joined(separator: ",") })
            .joined(separator: "\n") + "\n"
        try csv.write(toFile: "\(out)/sweep.csv", atomically: true, encoding: .utf8)

        let unit = mode == .ordering ? "commands/s" : "transactions/s"
        let loadName = mode == .ordering ? "commands in flight" : "offered transactions/s"
        func label(_ point: [String: Any]) -> String {
            mode == .ordering ? "n=\(point["validators"]!), block \(point["blockSize"]!), \(point["payloadSize"]!) B" : "n=\(point["validators"]!)"
        }
        func value(_ point: [String: Any], _ key: String) -> Double { (point[key] as? Double) ?? Double(point[key] as? Int ?? 0) }
        let groups = Dictionary(grouping: points, by: label).sorted { $0.key < $1.key }
        var charts: [(String, Chart)] = []
        charts.append(("throughput-vs-load", Chart(
            title: "Throughput vs offered load (\(mode.rawValue))", xLabel: loadName, yLabel: unit,
            series: groups.map { Chart.Series(name: $0.key, points: $0.value.map { (value($0, "offered"), value($0, "throughput")) }.sorted { $0.0 < $1.0 }) })))
        var latencySeries: [Chart.Series] = []
        for (name, group) in groups {
            for percentile in ["p50", "p99"] {
                latencySeries.append(Chart.Series(name: "\(name) \(percentile)",
                                                  points: group.map { (value($0, "throughput"), value($0, percentile)) }.sorted { $0.0 < $1.0 }))
            }
        }
        charts.append(("latency-vs-throughput", Chart(title: "Latency percentiles vs throughput (\(mode.rawValue))", xLabel: unit, yLabel: "ms",
                                                      series: latencySeries)))
        let byShape = Dictionary(grouping: points) { mode == .ordering ? "block \($0["blockSize"]!), \($0["payloadSize"]!) B" : "best rate" }
        charts.append(("throughput-vs-validators", Chart(
            title: "Best throughput vs validators (\(mode.rawValue))", xLabel: "validators", yLabel: unit,
            series: byShape.sorted { $0.key < $1.key }.map { name, group in
                let best = Dictionary(grouping: group) { value($0, "validators") }.map { ($0.key, $0.value.map { value($0, "throughput") }.max() ?? 0) }
                return Chart.Series(name: name, points: best.sorted { $0.0 < $1.0 })
            })))
        // rsvg-convert (librsvg), else ImageMagick's convert.
        let converter = ["/usr/bin/rsvg-convert", "/usr/local/bin/rsvg-convert", "/usr/bin/convert", "/usr/local/bin/convert"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        for (name, chart) in charts {
            let path = "\(out)/\(name).svg"
            try chart.svg().write(toFile: path, atomically: true, encoding: .utf8)
            if let converter {
                let arguments = converter.hasSuffix("rsvg-convert") ? ["-o", "\(out)/\(name).png", path] : [path, "\(out)/\(name).png"]
                _ = try? ChildProcess(converter, arguments).wait()
            }
        }
        print("sweep: \(points.count) points in \(out)/sweep.json and sweep.csv; plots \(charts.map { "\($0.0).svg" }.joined(separator: ", "))"
              + (converter == nil ? " (no rsvg-convert or convert: no PNG)" : " and .png"))
    }
}

/// A line chart drawn as SVG: linear axes from zero, one polyline with markers per series.
struct Chart {
    struct Series {
        let name: String
        let points: [(Double, Double)]
    }

    let title: String
    let xLabel: String
    let yLabel: String
    let series: [Series]

    static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#000000", "#aec7e8",
        "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5",
    ]

    /// A round upper bound for an axis and its tick step.
    static func scale(_ maximum: Double) -> (top: Double, step: Double) {
        guard maximum > 0 else { return (1, 0.2) }
        let magnitude = pow(10, floor(log10(maximum)))
        for factor in [1.0, 2, 2.5, 5, 10] where factor * magnitude >= maximum {
            return (factor * magnitude, factor * magnitude / 5)
        }
        return (10 * magnitude, 2 * magnitude)
    }

    static func format(_ value: Double) -> String {
        value >= 10_000 ? String(format: "%.0fk", value / 1_000) : (value == value.rounded() ? String(format: "%.0f", value) : String(format: "%.1f", value))
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    func svg(width: Double = 760, height: Double = 460) -> String {
        let left = 80.0, right = 220.0, top = 40.0, bottom = 60.0
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let (xTop, xStep) = Self.scale(series.flatMap { $0.points.map(\.0) }.max() ?? 1)
        let (yTop, yStep) = Self.scale(series.flatMap { $0.points.map(\.1) }.max() ?? 1)
        func x(_ value: Double) -> Double { left + value / xTop * plotWidth }
        func y(_ value: Double) -> Double { top + plotHeight - value / yTop * plotHeight }
        var lines = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(Self.escape(title))</text>",
        ]
        var tick = 0.0
        while tick <= xTop + xStep / 2 {
            lines.append("<line x1=\"\(x(tick))\" y1=\"\(top)\" x2=\"\(x(tick))\" y2=\"\(top + plotHeight)\" stroke=\"#e5e5e5\"/>")
            lines.append("<text x=\"\(x(tick))\" y=\"\(top + plotHeight + 18)\" text-anchor=\"middle\">\(Self.format(tick))</text>")
            tick += xStep
        }
        tick = 0
        while tick <= yTop + yStep / 2 {
            lines.append("<line x1=\"\(left)\" y1=\"\(y(tick))\" x2=\"\(left + plotWidth)\" y2=\"\(y(tick))\" stroke=\"#e5e5e5\"/>")
            lines.append("<text x=\"\(left - 8)\" y=\"\(y(tick) + 4)\" text-anchor=\"end\">\(Self.format(tick))</text>")
            tick += yStep
        }
        lines.append("<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#333\"/>")
        lines.append("<text x=\"\(left + plotWidth / 2)\" y=\"\(height - 18)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>")
        lines.append("<text transform=\"translate(20 \(top + plotHeight / 2)) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>")
        for (index, serie) in series.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            let path = serie.points.map { "\(x($0.0)),\(y($0.1))" }.joined(separator: " ")
            lines.append("<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>")
            for point in serie.points { lines.append("<circle cx=\"\(x(point.0))\" cy=\"\(y(point.1))\" r=\"3.5\" fill=\"\(color)\"/>") }
            let legendY = top + 14 + Double(index) * 18
            lines.append("<line x1=\"\(left + plotWidth + 14)\" y1=\"\(legendY - 4)\" x2=\"\(left + plotWidth + 34)\" y2=\"\(legendY - 4)\" stroke=\"\(color)\" stroke-width=\"2\"/>")
            lines.append("<text x=\"\(left + plotWidth + 40)\" y=\"\(legendY)\">\(Self.escape(serie.name))</text>")
        }
        lines.append("</svg>")
        return lines.joined(separator: "\n") + "\n"
    }
}
