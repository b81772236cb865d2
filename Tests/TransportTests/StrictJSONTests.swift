// The gateway's check of request bodies (StrictJSON): what Foundation's decoder would
// accept silently (a member named twice) or refuse without saying where (a number it cannot
// represent) is refused with the place and the fault named.
import Foundation
import Transport
import Testing
import Wire

struct StrictJSONTests {
    static func problem(_ text: String) -> String? {
        StrictJSON.problem(in: Array(text.utf8))?.description
    }

    @Test func validBodiesPass() {
        for body in [
            #"{"programme": "mobilite", "units": 1, "evidence": "trip \u00e9\ud83d\ude80 \"A\"\n"}"#,
            #"{"transactions": ["ab", "cd"], "deadlineIn": 0}"#,
            #"{"units": 9223372036854775807, "floor": -9223372036854775808, "zero": 0, "minus": -0}"#,
            #"  {"a": [true, false, null, {}, [], {"b": [1, [2]]}]}  "#,
            "{\"name\": \"Amina’s café\", \"café\": \"\u{1F680}\"}",
        ] {
            #expect(Self.problem(body) == nil, "\(body)")
        }
    }

    @Test func aFaultIsNamedWithItsPlace() throws {
        let cases: [(String, [String])] = [
            (#"{"units": 1, "units": 2}"#, ["\"units\" appears twice", "(the top level)"]),
            (#"{"a": {"x": 1, "\u0078": 2}}"#, ["\"x\" appears twice", "(a)"]),
            (#"{"transactions": ["ab", 01]}"#, ["(transactions[1])", "does not start with 0"]),
            (#"{"a/b~c": [1, 2, {"d": 01}]}"#, ["(a/b~c[2].d)"]),
            (#"{"units": 1,}"#, ["no trailing commas"]),
            (#"[1, ]"#, ["no trailing commas"]),
            (#"{"units": 1, 2}"#, ["expected a member's name"]),
            (#"{"units" 1}"#, ["expected `:`"]),
            (#"{"units": 1} {}"#, ["more follows"]),
            (#"{"units": tru}"#, ["expected `true`"]),
            (#"{"units": +1}"#, ["`+` cannot start a JSON value"]),
            (#"{"s": "\ud800"}"#, ["half of a surrogate pair"]),
            (#"{"s": "\udc00"}"#, ["second half"]),
            (#"{"s": "\q"}"#, ["\\`q` is not a JSON escape"]),
            (#"{"s": "\uFFFF"}"#, ["U+FFFF is a noncharacter"]),
            (#"{"s": "\uFDD0"}"#, ["U+FDD0 is a noncharacter"]),
            (#"{"s": "\uD83F\uDFFE"}"#, ["U+1FFFE is a noncharacter"]),
            // A Kelvin sign for the K: Foundation would read the member `signingKey`.
            (#"{"signing\u212Aey": "ab"}"#, ["is not in Unicode's normalization form C"]),
            ("{\"e\u{301}\": 1}", ["normalization form C"]),
            ("{\"s\": \"a\u{01}b\"}", ["control character (byte 0x1)"]),
            ("", ["there is no JSON value"]),
            ("   ", ["there is no JSON value"]),
            (#"{"s": "abc"#, ["ends inside a string"]),
            (#"[1, 2"#, ["ends inside an array"]),
            (String(repeating: "[", count: 40) + String(repeating: "]", count: 40), ["nested more than 32 deep"]),
            (String(repeating: "[", count: 1_000_000), ["nested more than 32 deep"]),
        ]
        for (body, expected) in cases {
            let problem = try #require(Self.problem(body), "\(body.prefix(80)) was accepted")
            for part in expected {
                #expect(problem.contains(part), "\(body.prefix(80)): \(problem)")
            }
        }
        // Numbers that are not whole Int64 numbers are noted with their place, not refused
        // (a member the document does not define is ignored, whatever it holds).
        let numbers: [(String, [String])] = [
            (#"{"units": 1.5}"#, ["units: 1.5 is not a whole number"]),
            (#"{"units": 1e3, "b": [2E-1, 1.0, 1.25e1]}"#, ["b[0]: 2E-1 is not a whole number", "b[2]: 1.25e1"]),
            (#"{"units": 9223372036854775808}"#, ["units: 9223372036854775808 is out of range"]),
            (#"{"units": -9223372036854775809}"#, ["units: -9223372036854775809 is out of range"]),
            (#"{"units": 18446744073709551615}"#, ["units: 18446744073709551615 is out of range"]),
            (#"{"units": 1e19, "v": 1e999999999999, "w": 1e-999999999999}"#, ["units: 1e19 is out of range", "v: 1e999999999999 is out of range", "w: 1e-999999999999 is not a whole number"]),
            (#"{"units": 123456789012345678901234567890123456789012345678901234567890}"#, ["is out of range", "…"]),
            (#"[1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5]"#, ["[0]: 1.5", "[7]: 8.5"]),
        ]
        for (body, expected) in numbers {
            let report = StrictJSON.check(Array(body.utf8))
            #expect(report.problem == nil, "\(body)")
            let noted = report.numbers.joined(separator: "; ")
            for part in expected { #expect(noted.contains(part), "\(body): \(noted)") }
        }
        #expect(StrictJSON.check(Array(#"[1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5]"#.utf8)).numbers.count == StrictJSON.notesMax)
        // Whole numbers in range however written, as Foundation's decoder reads them.
        let whole = #"{"a": -9223372036854775808, "b": 9223372036854775807, "c": -0, "d": 1e3, "e": 1.0, "f": 0.0e99, "g": 1.50e1, "#
            + #""h": 9007199254740992.0, "j": 100e-2, "k": 0e-999999999999}"#
        #expect(StrictJSON.check(Array(whole.utf8)).numbers == [])
        // Past 2^53 with a fraction or an exponent: noted, as Foundation may not read it.
        let past = StrictJSON.check(Array(#"[9.223372036854775807e18, 12345678901234567.0, 9.223372036854775808e18]"#.utf8)).numbers
        #expect(past.count == 3 && past[0].contains("[0]: 9.223372036854775807e18 is written with a fraction or an exponent") && past[2].contains("out of range"), "\(past)")

        // Invalid UTF-8 in a string.
        let invalid = Array(#"{"s": ""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        #expect(StrictJSON.problem(in: invalid)?.description.contains("not valid UTF-8") == true)
        // Noncharacters written as themselves (UTF-8 of U+FFFF, U+FDEF), in a value and a name.
        let rawValue = Array(#"{"s": "a"#.utf8) + [0xEF, 0xBF, 0xBF] + Array(#"b"}"#.utf8)
        #expect(StrictJSON.problem(in: rawValue)?.description.contains("U+FFFF is a noncharacter") == true)
        let rawName = Array(#"{"a"#.utf8) + [0xEF, 0xB7, 0xAF] + Array(#"": 1}"#.utf8)
        #expect(StrictJSON.problem(in: rawName)?.description.contains("U+FDEF is a noncharacter") == true)
        let invalidName = Array(#"{""#.utf8) + [0xFF] + Array(#"": 1}"#.utf8)
        #expect(StrictJSON.problem(in: invalidName)?.description.contains("not valid UTF-8") == true)
        // 32 deep is accepted.
        #expect(Self.problem(String(repeating: "[", count: 32) + String(repeating: "]", count: 32)) == nil)
    }

    /// The files people write are read the same way (`JSONFile`): a member named twice, a
    /// trailing comma or a number that is not an integer where one is needed is refused with
    /// its field, never read as Foundation alone would read it (the first of two values) or
    /// refused as "not valid JSON".
    @Test func filesAreReadStrictlyWithTheFieldNamed() throws {
        struct Settings: Decodable { let port: Int; let peers: [String] }
        func reason(_ text: String) -> String {
            switch Result(catching: { () throws(JSONFileError) in try JSONFile.decode(Settings.self, bytes: Array(text.utf8), path: "node.json") }) {
            case .success: return "accepted"
            case let .failure(error): return error.description
            }
        }
        #expect(reason(#"{"port": 7100, "peers": []}"#) == "accepted")
        #expect(reason(#"{"port": 7100, "port": 7200, "peers": []}"#).hasPrefix(#"node.json: not acceptable JSON at byte 21: the member "port" appears twice"#))
        #expect(reason(#"{"port": 7100, "peers": ["a",]}"#) == "node.json: peers: not acceptable JSON at byte 29: a `,` with nothing after it: JSON has no trailing commas (RFC 8259)")
        #expect(reason(#"{"port": 7100.5, "peers": []}"#) == "node.json: a member that must be an integer holds one of the numbers that are not whole numbers from -2^63 to 2^63 - 1: port: 7100.5 is not a whole number")
        #expect(reason(#"{"port": "7100", "peers": []}"#) == "node.json: port: wrong type (expected a whole number)")
    }

    /// Against Foundation's parser, on bodies mutated at random (a fixed seed): the check
    /// never accepts what Foundation refuses, and refuses what Foundation accepts only for
    /// the faults it adds (a member twice, half a surrogate pair, the depth, a trailing
    /// comma, which Foundation takes), and never traps.
    @Test func itAgreesWithFoundationOnMutatedBodies() throws {
        let seeds = [
            #"{"programme": "mobilite", "account": "abab", "units": 12, "evidence": "trip \u00e9 \"A\"", "x": [true, null, -0, 1.5e3]}"#,
            #"{"transactions": ["0a1b", "ffff"], "action": {"kind": "setParameters", "parameters": {"a": 1, "b": [{}]}}}"#,
            "{\"name\": \"Amina’s café \\ud83d\\ude80\"}",
        ].map { Array($0.utf8) }
        let alphabet = Array(#"{}[]":,\ -+.eE0123456789tfnulrsaubx"#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xFF]
        var random = SplitMix64(seed: 0x1d5e_7a11)
        var accepted = 0
        for round in 0..<20_000 {
            var body = seeds[round % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let at = Int.random(in: 0...body.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0 where at < body.count: body[at] = alphabet.randomElement(using: &random)!
                case 1: body.insert(alphabet.randomElement(using: &random)!, at: at)
                case 2 where at < body.count: body.remove(at: at)
                default:
                    let end = Int.random(in: at...body.count, using: &random)
                    body.insert(contentsOf: body[at..<end], at: at)
                }
            }
            let ours = StrictJSON.check(body).problem
            let theirs = (try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])) != nil
            if ours == nil {
                accepted += 1
                #expect(theirs, "accepted, Foundation refuses: \(String(decoding: body, as: UTF8.self))")
            } else if theirs, let ours {
                let stricter = ["appears twice", "surrogate pair", "nested more than", "trailing commas", "noncharacter", "normalization form C"].contains { ours.description.contains($0) }
                #expect(stricter, "refused, Foundation accepts: \(String(decoding: body, as: UTF8.self)): \(ours)")
            }
        }
        // The mutations leave some bodies valid: the agreement is on both sides.
        #expect(accepted > 500, "\(accepted) of 20,000 accepted")
    }
}
