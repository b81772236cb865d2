// Fuzz target: the query CLI's command line. An input is split at NUL bytes into at most
// 32 arguments and parsed as `calisson` parses its command line, with every command's and
// option group's validation (durations finite and bounded, block counts bounded, host:port
// forms, flags that go together). Parsing may fail with an error for the user; it must
// never trap. Nothing is run: no node is asked, no file written.
import CalissonCLI
import FuzzSupport

enum Seeds {
    static let lines: [[String]] = [
        ["status", "--node", "127.0.0.1:7101", "--request-timeout", "inf"],
        ["balance", String(repeating: "ab", count: 32), "--genesis", "g.json", "--witness", "127.0.0.1:7103", "--max-lag", "18446744073709551615"],
        ["submit", "attribute", "--programme", "tri", "--account", String(repeating: "0", count: 64), "--evidence", "x", "--key", "k", "--as", "p0",
         "--expires-in", "18446744073709551615", "--timeout", "1e300"],
        ["submit", "propose", "set-validators", "--validators", "a,b", "--key", "k", "--as", "p0", "--deadline-in", "0"],
        ["submit", "redeem", "--acceptor", "friche", "--amount", "18446744073709551616", "--key", "k"],
        ["block", "9223372036854775808", "--json"],
        ["follow", "--from", "18446744073709551615", "--count", "1"],
        ["proposals", "--limit", "18446744073709551615"],
        ["tx", String(repeating: "f", count: 64), "--request-timeout", "-0.0"],
        ["key", "evidence", "--out", ""],
    ]

    static func all() -> [[UInt8]] {
        lines.map { line in Array(line.joined(separator: "\0").utf8) }
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Seeds.all)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let arguments = fuzzInput(data, size).split(separator: 0, omittingEmptySubsequences: false).prefix(32)
        .map { String(decoding: $0, as: UTF8.self) }
    _ = try? Calisson.parseAsRoot(arguments)
    return 0
}
