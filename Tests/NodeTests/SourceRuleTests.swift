// A build check for the rule on numbers from outside (Docs/SECURITY.md, "Numbers from
// outside"): an integer conversion that can trap (`Int(x)`, `UInt32(x)`, `map(Int.init)`... without
// `clamping:`, `truncatingIfNeeded:`, `exactly:` or `bitPattern:`) may appear in Sources
// only where it was reviewed: each such line is listed in Tests/outside-numbers.allowed.
// A new one fails this test until it is made non-trapping or reviewed and listed.
import CalissonTestKit
import Foundation
import Testing

@Suite(.onOwnThreads) struct SourceRuleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
    /// `Int(x)`, and `Int.init` called or passed as a function (`map(Int.init)`, which once
    /// trapped on a flag's value unseen by the first form alone).
    static let pattern = try! NSRegularExpression(
        pattern: #"\b(Int|Int8|Int16|Int32|Int64|UInt|UInt8|UInt16|UInt32|UInt64)(\.init\b)?(\((?!clamping:|truncatingIfNeeded:|exactly:|bitPattern:|bigEndian:|littleEndian:|ascii:|\d[\d_]*\)|0x[0-9a-fA-F_]+\))|(?<=init)(?!\())"#)

    static func matches(_ code: String) -> Bool { pattern.firstMatch(in: code, range: NSRange(code.startIndex..., in: code)) != nil }

    @Test func thePatternSeesEveryForm() {
        for code in ["let n = Int(text)", "values.map(Int.init)", "UInt64.init(value)", "x = Int32(y) + 1"] {
            #expect(Self.matches(code), "\(code)")
        }
        for code in ["Int(clamping: x)", "UInt64.init(clamping: x)", "Int(exactly: d)", "Int(42)", "UInt8(0xff)", "Interval(x)", "let i: Int = 0"] {
            #expect(!Self.matches(code), "\(code)")
        }
    }

    /// Every line of Sources with a conversion that can trap, as "path<TAB>trimmed line".
    static func conversions() throws -> [String] {
        let sources = root.appendingPathComponent("Sources")
        guard let walker = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil) else { return [] }
        var found: [String] = []
        for case let url as URL in walker where url.pathExtension == "swift" {
            let path = String(url.standardized.path.dropFirst(root.path.count + 1))
            for line in try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
                let text = String(line)
                let code = text.components(separatedBy: "//").first ?? text
                if matches(code) {
                    found.append("\(path)\t\(text.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        return found.sorted()
    }

    @Test func everyTrappingConversionWasReviewed() throws {
        let allowedFile = Self.root.appendingPathComponent("Tests/outside-numbers.allowed")
        let allowed = Set(try String(contentsOf: allowedFile, encoding: .utf8).split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") })
        let found = try Self.conversions()
        #expect(found.count > 100, "the scan found only \(found.count) conversions: is it reading Sources?")
        let unreviewed = found.filter { !allowed.contains($0) }
        #expect(unreviewed.isEmpty, """
            integer conversions that can trap, not reviewed: make each non-trapping (clamping:, exactly:, a range check) \
            or, where its value is bounded, list the line in Tests/outside-numbers.allowed:
            \(unreviewed.joined(separator: "\n"))
            """)
        let gone = allowed.subtracting(found)
        #expect(gone.isEmpty, "lines listed in Tests/outside-numbers.allowed no longer in Sources (remove them):\n\(gone.sorted().joined(separator: "\n"))")
    }
}
