import Foundation

/// JSON read strictly, before Foundation's decoder reads it: a gateway's request bodies
/// (Docs/API.md, "Request bodies") and the files people write (`JSONFile`: a genesis, a node's
/// configuration, a key file), so that what is wrong is named, and so that the text is read
/// as any other JSON parser would read it.
///
/// A text is refused unless it is I-JSON (RFC 7493): valid JSON (RFC 8259: no trailing
/// comma, which Foundation would take) in UTF-8, with no character that is half of a
/// surrogate pair or a noncharacter, no object naming a member twice, and member names in
/// Unicode's normalization form C. Foundation's decoder, under the generated code, keeps
/// the first of two members of the same name, where other parsers keep the last, and
/// compares names by canonical equivalence, where other parsers compare code points: a
/// request that a partner's proxy or log reads one way would be acted on another. It is
/// nested at most `depthMax` deep.
///
/// Numbers are noted, not refused: a member the document does not define is ignored, as
/// JSON APIs do, whatever its value. But Foundation's decoder says only "the given data was
/// not valid JSON" when a member that is an integer holds a number it cannot read as one
/// (`1.5`, `1e30`, `9223372036854775808`; it reads `1e3` and `1.0` as 1,000 and 1): the
/// numbers of the text that are not whole numbers from -2^63 to 2^63 - 1 are noted with
/// their field, and that error is then answered with them (`explain`).
/// A refusal or a note names the field (`programmes[2].budget`, as `JSONFileError` does) and the fault.
public enum StrictJSON {
    public static let depthMax = 32
    /// The numbers noted, at most.
    public static let notesMax = 8

    /// Why a text is not acceptable: where (its byte offset and the field it is in, as
    /// `programmes[2].budget`; empty at the top level) and what.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public let offset: Int
        public let field: String
        public let fault: String
        public var description: String {
            "not acceptable JSON at byte \(offset) (\(field.isEmpty ? "the top level" : field)): \(fault)"
        }
    }

    public struct Report: Sendable {
        /// Why the text is refused; nil: it is I-JSON.
        public var problem: Problem?
        /// The numbers that are not whole Int64 numbers, each with its field (at most `notesMax`).
        public var numbers: [String] = []
    }

    /// What Foundation's `error` means when it is its bare "not valid JSON" (data corrupted,
    /// no field) for a text `check` accepted: that a member that must be an integer holds one
    /// of `numbers` (the report's). nil for any other error, or without numbers.
    public static func explain(_ error: DecodingError, numbers: [String]) -> String? {
        guard case let .dataCorrupted(context) = error, context.codingPath.isEmpty, !numbers.isEmpty else { return nil }
        let first = numbers.count == notesMax ? " (the first \(numbers.count))" : ""
        return "a member that must be an integer holds one of the numbers that are not whole numbers from -2^63 to 2^63 - 1\(first): \(numbers.joined(separator: "; "))"
    }

    /// What is wrong with `bytes`, and the numbers of it that the decoder cannot read as integers.
    public static func check(_ bytes: some Collection<UInt8>) -> Report {
        func scan(_ buffer: UnsafeBufferPointer<UInt8>) -> Report {
            var scanner = Scanner(bytes: buffer)
            do throws(Problem) {
                try scanner.document()
                return Report(problem: nil, numbers: scanner.numbers)
            } catch {
                return Report(problem: error, numbers: scanner.numbers)
            }
        }
        return bytes.withContiguousStorageIfAvailable(scan) ?? Array(bytes).withUnsafeBufferPointer(scan)
    }

    /// nil when `bytes` is I-JSON, else what is wrong and where.
    public static func problem(in bytes: some Collection<UInt8>) -> Problem? { check(bytes).problem }

    private struct Scanner {
        let bytes: UnsafeBufferPointer<UInt8>
        var at = 0
        /// The members and indices from the document's root to the value being read.
        var path: [PathPart] = []
        enum PathPart { case name(String), index(Int) }
        /// The numbers that are not whole Int64 numbers (`Report.numbers`).
        var numbers: [String] = []

        /// The field being read, as this project's messages name fields: `a.b[2].c`.
        var field: String {
            var text = ""
            for part in path {
                switch part {
                case let .index(index): text += "[\(index)]"
                case let .name(name): text += text.isEmpty ? name : ".\(name)"
                }
            }
            return text
        }

        func fail(_ what: String) -> Problem {
            Problem(offset: at, field: field, fault: what)
        }

        mutating func document() throws(Problem) {
            skipSpace()
            guard at < bytes.count else { throw fail("there is no JSON value, only white space or nothing") }
            try value(depth: 0)
            skipSpace()
            guard at == bytes.count else { throw fail("more follows the JSON value") }
        }

        mutating func skipSpace() {
            while at < bytes.count {
                switch bytes[at] {
                case 0x20, 0x09, 0x0A, 0x0D: at += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) throws(Problem) {
            guard at < bytes.count else { throw fail("the text ends where a value is expected") }
            switch bytes[at] {
            case UInt8(ascii: "{"): try object(depth: depth + 1)
            case UInt8(ascii: "["): try array(depth: depth + 1)
            case UInt8(ascii: "\""): _ = try string(keeping: false)
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            default: throw fail("\(Self.quoted(bytes[at])) cannot start a JSON value")
            }
        }

        mutating func literal(_ word: StaticString) throws(Problem) {
            let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            guard bytes.count - at >= expected.count, bytes[at..<(at + expected.count)].elementsEqual(expected) else {
                throw fail("expected `\(word)`")
            }
            at += expected.count
        }

        mutating func object(depth: Int) throws(Problem) {
            guard depth <= StrictJSON.depthMax else { throw fail("nested more than \(StrictJSON.depthMax) deep") }
            at += 1
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return }
            var names = Set<String>()
            repeat {
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\""), let name = try string(keeping: true) else {
                    throw fail("expected a member's name, in double quotes")
                }
                guard names.insert(name).inserted else {
                    throw fail("the member \"\(name.prefix(64))\" appears twice in this object (RFC 7493: names are unique)")
                }
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: ":") else { throw fail("expected `:` after the member's name") }
                at += 1
                skipSpace()
                path.append(.name(name))
                try value(depth: depth)
                path.removeLast()
            } while try !ended(by: UInt8(ascii: "}"), after: "a member")
        }

        mutating func array(depth: Int) throws(Problem) {
            guard depth <= StrictJSON.depthMax else { throw fail("nested more than \(StrictJSON.depthMax) deep") }
            at += 1
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return }
            var index = 0
            repeat {
                path.append(.index(index))
                try value(depth: depth)
                path.removeLast()
                index += 1
            } while try !ended(by: UInt8(ascii: "]"), after: "an element")
        }

        /// After a member or an element: a `,` and the next (never the closing bracket), or
        /// the closing bracket; whether the object or array ended.
        mutating func ended(by closing: UInt8, after what: String) throws(Problem) -> Bool {
            skipSpace()
            guard at < bytes.count else { throw fail("the text ends inside \(closing == UInt8(ascii: "}") ? "an object" : "an array")") }
            switch bytes[at] {
            case UInt8(ascii: ","):
                at += 1
                skipSpace()
                if at < bytes.count, bytes[at] == closing { throw fail(Self.trailingComma) }
                return false
            case closing:
                at += 1
                return true
            default:
                throw fail("expected `,` or `\(Character(Unicode.Scalar(closing)))` after \(what)")
            }
        }

        /// A string, from its opening quote, checked: its text (escapes resolved) when
        /// `keeping` (a member's name), else nil, made of nothing (a signed transaction's hex
        /// is most of a body).
        mutating func string(keeping: Bool) throws(Problem) -> String? {
            at += 1
            let start = at
            var text: [UInt8] = []
            var ascii = true
            while true {
                guard at < bytes.count else { throw fail("the text ends inside a string") }
                let byte = bytes[at]
                switch byte {
                case UInt8(ascii: "\""):
                    let raw = UnsafeBufferPointer(rebasing: bytes[start..<at])
                    at += 1
                    if keeping {
                        guard let decoded = String(validating: text, as: UTF8.self) else { throw fail("a string is not valid UTF-8") }
                        if text.contains(where: { $0 >= 0x80 }) { try checkName(decoded) }
                        return decoded
                    }
                    // Escapes are ASCII and checked: the raw bytes are UTF-8 if the text is.
                    if !ascii {
                        guard let decoded = String(validating: raw, as: UTF8.self) else { throw fail("a string is not valid UTF-8") }
                        if let found = decoded.unicodeScalars.first(where: Self.isNoncharacter) { throw fail(Self.noncharacter(found)) }
                    }
                    return nil
                case UInt8(ascii: "\\"):
                    at += 1
                    guard at < bytes.count else { throw fail("the text ends inside a string") }
                    let escaped = bytes[at]
                    at += 1
                    let resolved: UInt8
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): resolved = escaped
                    case UInt8(ascii: "b"): resolved = 0x08
                    case UInt8(ascii: "f"): resolved = 0x0C
                    case UInt8(ascii: "n"): resolved = 0x0A
                    case UInt8(ascii: "r"): resolved = 0x0D
                    case UInt8(ascii: "t"): resolved = 0x09
                    case UInt8(ascii: "u"):
                        let character = try unicodeEscape()
                        if keeping { text.append(contentsOf: character) }
                        continue
                    default: at -= 1; throw fail("\\\(Self.quoted(escaped)) is not a JSON escape")
                    }
                    if keeping { text.append(resolved) }
                case 0x00..<0x20:
                    throw fail("a control character (\(Self.quoted(byte))) in a string must be escaped")
                default:
                    if byte >= 0x80 { ascii = false }
                    if keeping { text.append(byte) }
                    at += 1
                }
            }
        }

        /// A member's name beyond ASCII: no noncharacter, and in Unicode's normalization form
        /// C. Swift compares strings by canonical equivalence, so Foundation's decoder reads
        /// `signing\u{212A}ey` (a Kelvin sign for the K) as the member `signingKey`, where other
        /// parsers see another name; names in NFC are equivalent only when they are equal.
        func checkName(_ name: String) throws(Problem) {
            if let found = name.unicodeScalars.first(where: Self.isNoncharacter) { throw fail(Self.noncharacter(found)) }
            let composed = name.precomposedStringWithCanonicalMapping
            guard composed.unicodeScalars.elementsEqual(name.unicodeScalars) else {
                throw fail("the member name \"\(name.prefix(64))\" is not in Unicode's normalization form C: parsers differ on whether it is \"\(composed.prefix(64))\"")
            }
        }

        /// U+FDD0 to U+FDEF, and the last two code points of every plane (RFC 7493, 2.1).
        static func isNoncharacter(_ scalar: Unicode.Scalar) -> Bool {
            (0xFDD0...0xFDEF).contains(scalar.value) || scalar.value & 0xFFFE == 0xFFFE
        }

        static func noncharacter(_ scalar: Unicode.Scalar) -> String {
            "U+\(String(scalar.value, radix: 16, uppercase: true)) is a noncharacter, which I-JSON does not allow in a string (RFC 7493)"
        }

        /// After `\u`: the character, in UTF-8 (a surrogate pair read whole).
        mutating func unicodeEscape() throws(Problem) -> [UInt8] {
            let first = try hex4()
            var scalar: UInt32 = first
            if (0xD800..<0xDC00).contains(first) {
                guard bytes.count - at >= 6, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                    throw fail("\\u\(String(first, radix: 16)) is half of a surrogate pair, without its second half")
                }
                at += 2
                let second = try hex4()
                guard (0xDC00..<0xE000).contains(second) else {
                    throw fail("\\u\(String(first, radix: 16)) is half of a surrogate pair, without its second half")
                }
                scalar = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            } else if (0xDC00..<0xE000).contains(first) {
                throw fail("\\u\(String(first, radix: 16)) is the second half of a surrogate pair, alone")
            }
            guard let character = Unicode.Scalar(scalar) else { throw fail("\\u escape is not a character") }
            guard !Self.isNoncharacter(character) else { throw fail(Self.noncharacter(character)) }
            return Array(String(Character(character)).utf8)
        }

        mutating func hex4() throws(Problem) -> UInt32 {
            guard bytes.count - at >= 4 else { throw fail("a \\u escape needs four hexadecimal digits") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let digit: UInt32
                switch bytes[at] {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(clamping: bytes[at] - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(clamping: bytes[at] - UInt8(ascii: "a")) + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(clamping: bytes[at] - UInt8(ascii: "A")) + 10
                default: throw fail("a \\u escape needs four hexadecimal digits")
                }
                value = value << 4 | digit
                at += 1
            }
            return value
        }

        /// A number, noted unless it is a whole number in Int64's range, with no fraction or exponent.
        mutating func number() throws(Problem) {
            let start = at
            let negative = bytes[at] == UInt8(ascii: "-")
            if negative { at += 1 }
            let digitsStart = at
            while at < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[at]) { at += 1 }
            let digits = at - digitsStart
            guard digits > 0 else { throw fail("a number needs digits") }
            guard digits == 1 || bytes[digitsStart] != UInt8(ascii: "0") else {
                at = start
                throw fail("\(text(from: start, to: digitsStart + digits)): a number does not start with 0 (RFC 8259)")
            }
            // The value, exactly: its significant digits (integer and fraction parts, leading
            // zeros dropped) times a power of ten.
            var significant = Array(bytes[digitsStart..<(digitsStart + digits)])
            var power = 0
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
                at += 1
                let fraction = at
                while at < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[at]) { at += 1 }
                guard at > fraction else { throw fail("a number's fraction needs digits") }
                significant += bytes[fraction..<at]
                power = -(at - fraction)
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                at += 1
                var exponentNegative = false
                if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") {
                    exponentNegative = bytes[at] == UInt8(ascii: "-")
                    at += 1
                }
                let exponentStart = at
                var exponent = 0
                while at < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[at]) {
                    // Past a million, far out of range (or far from whole) either way.
                    exponent = min(exponent * 10 + Int(clamping: bytes[at] - UInt8(ascii: "0")), 1_000_000)
                    at += 1
                }
                guard at > exponentStart else { throw fail("a number's exponent needs digits") }
                power += exponentNegative ? -exponent : exponent
            }
            let written = text(from: start, to: at)
            // Zero however written (`0.0`, `-0e5`) is a whole number in range.
            guard let first = significant.firstIndex(where: { $0 != UInt8(ascii: "0") }) else { return }
            significant.removeFirst(first)
            while significant.last == UInt8(ascii: "0") {
                significant.removeLast()
                power += 1
            }
            guard power >= 0 else { return note("\(written) is not a whole number") }
            // Within Int64: accumulated in UInt64, negatively bounded by 2^63.
            var magnitude: UInt64 = 0
            var fits = significant.count + power <= 19
            if fits {
                for digit in significant + Array(repeating: UInt8(ascii: "0"), count: power) {
                    let (times, o1) = magnitude.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(UInt64(clamping: digit - UInt8(ascii: "0")))
                    if o1 || o2 { fits = false }
                    magnitude = sum
                }
            }
            let bound: UInt64 = negative ? 1 << 63 : (1 << 63) - 1
            guard fits, magnitude <= bound else {
                return note("\(written) is out of range (-9223372036854775808 to 9223372036854775807)")
            }
            // Foundation reads `1e3` and `1.0` as integers, but not every whole number so
            // written past 2^53 (`9.223372036854775807e18`): noted, in case it is the one.
            if at - digitsStart > digits, magnitude > 1 << 53 {
                note("\(written) is written with a fraction or an exponent: past 2^53, write a whole number as its digits alone")
            }
        }

        mutating func note(_ what: String) {
            if numbers.count < StrictJSON.notesMax { numbers.append("\(field.isEmpty ? "the top level" : field): \(what)") }
        }

        func text(from start: Int, to end: Int) -> String {
            let shown = String(decoding: bytes[start..<min(end, start + 40)], as: UTF8.self)
            return end - start > 40 ? shown + "…" : shown
        }

        /// Foundation's decoder takes `[1,]`; RFC 8259 and most parsers do not.
        static let trailingComma = "a `,` with nothing after it: JSON has no trailing commas (RFC 8259)"

        static func quoted(_ byte: UInt8) -> String {
            (0x21..<0x7F).contains(byte) ? "`\(Character(Unicode.Scalar(byte)))`" : "byte 0x\(String(byte, radix: 16, uppercase: true))"
        }
    }
}
