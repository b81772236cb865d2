import Ledger

/// The dashboard's languages: French first (the Métropole's), English available.
enum Language: String, Sendable, CaseIterable {
    case fr, en

    /// The text in this language.
    func callAsFunction(_ fr: String, _ en: String) -> String { self == .fr ? fr : en }

    var other: Language { self == .fr ? .en : .fr }

    /// An integer with the language's digit grouping: 1 234 567 (a narrow no-break space)
    /// in French, 1,234,567 in English.
    func number<T: BinaryInteger>(_ value: T) -> String {
        let digits = String(value.magnitude)
        var grouped = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { grouped += self == .fr ? "\u{202F}" : "," }
            grouped.append(digit)
        }
        return (value < 0 ? "−" : "") + grouped
    }

    /// `part / whole` as a percentage with one decimal (integer arithmetic), "—" when whole is 0.
    func percent(_ part: UInt64, of whole: UInt64) -> String {
        guard whole > 0 else { return "—" }
        let tenths = UInt64(clamping: (UInt128(part) * 1_000 + UInt128(whole) / 2) / UInt128(whole))
        return "\(number(tenths / 10))\(self == .fr ? "," : ".")\(tenths % 10)\u{00A0}%"
    }

    func category(_ category: Category) -> String {
        switch category {
        case .transit: return self("Mobilité", "Transit")
        case .wasteSorting: return self("Tri des déchets", "Waste sorting")
        case .event: return self("Culture et événements", "Culture and events")
        case .energy: return self("Énergie", "Energy")
        case .other: return self("Autre", "Other")
        }
    }
}

/// HTML text, escaped where it comes from data.
enum HTML {
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// A table with a caption, column headers and rows (cells already HTML); the first
    /// cell of each row is its header. `numeric`: the columns aligned right.
    static func table(_ caption: String, _ headers: [String], _ rows: [[String]], numeric: Set<Int> = []) -> String {
        var html = "<div class=\"scroll\"><table><caption>\(caption)</caption><thead><tr>"
        for (index, header) in headers.enumerated() { html += "<th scope=\"col\"\(numeric.contains(index) ? " class=\"n\"" : "")>\(header)</th>" }
        html += "</tr></thead><tbody>"
        for row in rows {
            html += "<tr>"
            for (index, cell) in row.enumerated() {
                let align = numeric.contains(index) ? " class=\"n\"" : ""
                html += index == 0 ? "<th scope=\"row\"\(align)>\(cell)</th>" : "<td\(align)>\(cell)</td>"
            }
            html += "</tr>"
        }
        return html + "</tbody></table></div>"
    }

    /// Key figures as a description list.
    static func figures(_ items: [(String, String)]) -> String {
        "<dl class=\"figures\">" + items.map { "<div><dt>\($0.0)</dt><dd>\($0.1)</dd></div>" }.joined() + "</dl>"
    }
}

/// Charts drawn on the server as inline SVG: no script, no asset. Each has a title and a
/// description (its accessible name), and its figures are also given as a table next to it.
enum Chart {
    struct Series {
        let name: String
        /// One of the palette's classes (`s0`…`s3`), colours with 3:1 contrast on white.
        let style: Int
        let values: [UInt64]
    }

    /// Vertical grouped bars: one group per label, one bar per series.
    static func bars(id: String, title: String, description: String, labels: [String], series: [Series], language: Language) -> String {
        let width = 640, height = 240, left = 64, bottom = 28, top = 12
        let maximum = max(1, series.flatMap(\.values).max() ?? 1)
        let groups = max(1, labels.count)
        let groupWidth = (width - left - 8) / groups
        let barWidth = max(2, (groupWidth - 6) / max(1, series.count))
        let plot = height - bottom - top
        var svg = "<figure><svg viewBox=\"0 0 \(width) \(height)\" role=\"img\" aria-labelledby=\"\(id)-t \(id)-d\" focusable=\"false\">"
        svg += "<title id=\"\(id)-t\">\(HTML.escape(title))</title><desc id=\"\(id)-d\">\(HTML.escape(description))</desc>"
        // The axis: zero and the maximum, labelled.
        svg += "<line class=\"axis\" x1=\"\(left)\" y1=\"\(top + plot)\" x2=\"\(width - 4)\" y2=\"\(top + plot)\"/>"
        svg += "<text class=\"tick\" x=\"\(left - 6)\" y=\"\(top + 10)\" text-anchor=\"end\">\(language.number(maximum))</text>"
        svg += "<text class=\"tick\" x=\"\(left - 6)\" y=\"\(top + plot)\" text-anchor=\"end\">0</text>"
        for (group, label) in labels.enumerated() {
            let x0 = left + group * groupWidth + 3
            for (index, entry) in series.enumerated() {
                let value = group < entry.values.count ? entry.values[group] : 0
                let barHeight = Int(clamping: (UInt128(value) * UInt128(plot)) / UInt128(maximum))
                svg += "<rect class=\"s\(entry.style)\" x=\"\(x0 + index * barWidth)\" y=\"\(top + plot - barHeight)\" width=\"\(max(1, barWidth - 1))\" height=\"\(barHeight)\"/>"
            }
            if labels.count <= 16 || group % ((labels.count + 15) / 16) == 0 {
                svg += "<text class=\"tick\" x=\"\(x0 + groupWidth / 2)\" y=\"\(height - 8)\" text-anchor=\"middle\">\(HTML.escape(label))</text>"
            }
        }
        svg += "</svg>"
        if series.count > 1 {
            svg += "<figcaption><ul class=\"legend\">"
            for entry in series { svg += "<li><span class=\"key s\(entry.style)\" aria-hidden=\"true\"></span>\(HTML.escape(entry.name))</li>" }
            svg += "</ul></figcaption>"
        }
        return svg + "</figure>"
    }

    /// A horizontal bar split in parts (each a share of the total), with its legend.
    static func stacked(id: String, title: String, parts: [(name: String, style: Int, value: UInt64)], language: Language) -> String {
        let width = 640, height = 28
        let total = max(1, parts.reduce(UInt64(0)) { $0 + $1.value })
        var svg = "<figure><svg viewBox=\"0 0 \(width) \(height)\" role=\"img\" aria-labelledby=\"\(id)-t\" focusable=\"false\">"
        let summary = parts.map { "\($0.name) \(language.number($0.value)) (\(language.percent($0.value, of: total)))" }.joined(separator: ", ")
        svg += "<title id=\"\(id)-t\">\(HTML.escape(title)): \(HTML.escape(summary))</title>"
        var x = 0
        for part in parts where part.value > 0 {
            let partWidth = Int(clamping: (UInt128(part.value) * UInt128(width)) / UInt128(total))
            svg += "<rect class=\"s\(part.style)\" x=\"\(x)\" y=\"0\" width=\"\(partWidth)\" height=\"\(height)\"/>"
            x += partWidth
        }
        svg += "</svg><figcaption><ul class=\"legend\">"
        for part in parts {
            svg += "<li><span class=\"key s\(part.style)\" aria-hidden=\"true\"></span>\(HTML.escape(part.name)): \(language.number(part.value)) (\(language.percent(part.value, of: total)))</li>"
        }
        return svg + "</ul></figcaption></figure>"
    }
}
