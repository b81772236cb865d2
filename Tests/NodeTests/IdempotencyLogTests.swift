// The gateway's idempotency log on its own: what it takes is what it can open again.

import CalissonTestKit
import Foundation
@testable import Gateway
import Testing

@Suite struct IdempotencyLogTests {
    /// Records stop at the file's byte cap, refused by name: the log a gateway wrote always
    /// opens again (the cap was checked only when opening, so large entries, such as
    /// proposals, could fill a log its gateway then refused to start on). The keys recorded
    /// before are kept across the reopening; the refused one is free again.
    @Test func recordsStopAtTheFilesCapAndTheLogOpensAgain() throws {
        let path = Scratch.file("idempotency.log")
        let cap = 1_000
        let log = try IdempotencyLog(path: path, byteCountMax: cap)
        func entry(_ number: Int) -> IdempotencyLog.Entry {
            IdempotencyLog.Entry(key: "key-\(number)", request: "request \(number)", transaction: String(repeating: "ab", count: 100))
        }
        var recorded = 0
        var refusal: IdempotencyLog.Full?
        for number in 0..<100 where refusal == nil {
            #expect(log.reserve("key-\(number)", request: "request \(number)") == .reserved)
            do {
                try log.record(entry(number))
                recorded += 1
            } catch let full as IdempotencyLog.Full {
                refusal = full
                log.release("key-\(number)")
            }
        }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(refusal?.description == "the idempotency log would pass 1000 bytes: its operator must rotate it")
        #expect(recorded >= 3 && size <= cap, "\(recorded) recorded, \(size) bytes")

        let reopened = try IdempotencyLog(path: path, byteCountMax: cap)
        #expect(reopened.reserve("key-0", request: "request 0") == .existing(entry(0)))
        #expect(reopened.reserve("key-\(recorded - 1)", request: "request \(recorded - 1)") == .existing(entry(recorded - 1)))
        #expect(reopened.reserve("key-\(recorded)", request: "request \(recorded)") == .reserved)
        #expect(throws: IdempotencyLog.Full.self) { try reopened.record(entry(recorded)) }
    }

    /// A crash in the middle of a line leaves it cut short: left out and cut from the file at
    /// the next start, so that the next line is not glued to it (the start after that once
    /// refused the whole log, naming the glued line).
    @Test func aLineCutShortIsCutOffAndTheNextStartsClean() throws {
        let path = Scratch.file("cut-short.log")
        func entry(_ number: Int) -> IdempotencyLog.Entry {
            IdempotencyLog.Entry(key: "key-\(number)", request: "request \(number)", transaction: "0011")
        }
        func record(_ log: IdempotencyLog, _ number: Int) throws {
            #expect(log.reserve("key-\(number)", request: "request \(number)") == .reserved)
            try log.record(entry(number))
        }
        try record(try IdempotencyLog(path: path), 1)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"key": "key-2", "request": "#.utf8))
        try handle.close()

        let afterCrash = try IdempotencyLog(path: path)
        #expect(afterCrash.reserve("key-1", request: "request 1") == .existing(entry(1)))
        try record(afterCrash, 2)
        let again = try IdempotencyLog(path: path)
        #expect(again.reserve("key-1", request: "request 1") == .existing(entry(1)))
        #expect(again.reserve("key-2", request: "request 2") == .existing(entry(2)))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 2 && text.hasSuffix("\n"), "\(text)")
    }
}
