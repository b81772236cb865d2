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

    /// Clients that may sign share the log's room: one that fills its share of the keys or
    /// of the bytes is refused new keys, naming what it holds, while another still records;
    /// its retries still answer; a key given up frees its place; the shares hold across a
    /// reopening (each line names its client).
    @Test func eachClientHoldsItsShareOfTheLog() throws {
        let path = Scratch.file("shared.log")
        func entry(_ key: String) -> IdempotencyLog.Entry {
            IdempotencyLog.Entry(key: key, request: "request \(key)", transaction: String(repeating: "ab", count: 100))
        }
        func take(_ log: IdempotencyLog, _ key: String, _ client: String) throws -> IdempotencyLog.Reservation {
            let reservation = log.reserve(key, request: "request \(key)", client: client)
            if reservation == .reserved { try log.record(entry(key)) }
            return reservation
        }
        // Three clients: 3 keys each, 100,000 bytes each (a line is about 300).
        let log = try IdempotencyLog(path: path, byteCountMax: 300_000, keysMax: 9, sharers: 3)
        for number in 0..<3 { #expect(try take(log, "flood-\(number)", "flooder") == .reserved) }
        guard case let .share(share) = try take(log, "flood-3", "flooder") else {
            Issue.record("a fourth key of the flooder's was taken")
            return
        }
        #expect(share.entries == 3 && share.entriesMax == 3 && share.bytesMax == 100_000, "\(share)")
        #expect(share.description.hasPrefix("'flooder' holds 3 keys in"), "\(share)")
        #expect(try take(log, "flood-0", "flooder") == .existing(IdempotencyLog.Entry(key: "flood-0", request: "request flood-0", transaction: String(repeating: "ab", count: 100), client: "flooder")))
        #expect(try take(log, "till-0", "till") == .reserved)
        // A reservation given up is no longer held.
        #expect(log.reserve("till-1", request: "request till-1", client: "till") == .reserved)
        #expect(log.reserve("till-2", request: "request till-2", client: "till") == .reserved)
        #expect(log.reserve("till-3", request: "request till-3", client: "till") != .reserved)
        log.release("till-2")
        #expect(log.reserve("till-3", request: "request till-3", client: "till") == .reserved)

        let reopened = try IdempotencyLog(path: path, byteCountMax: 300_000, keysMax: 9, sharers: 3)
        #expect(reopened.reserve("flood-4", request: "request flood-4", client: "flooder") != .reserved)
        #expect(reopened.reserve("till-4", request: "request till-4", client: "till") == .reserved)
        #expect(reopened.reserve("till-5", request: "request till-5", client: "till") == .reserved)
        #expect(reopened.reserve("till-6", request: "request till-6", client: "till") != .reserved)

        // By bytes: lines of about 2,300 bytes, two clients of 5,000 bytes each.
        let bytes = try IdempotencyLog(path: Scratch.file("bytes.log"), byteCountMax: 10_000, sharers: 2)
        func large(_ key: String, _ client: String) throws -> IdempotencyLog.Reservation {
            let reservation = bytes.reserve(key, request: key, client: client)
            if reservation == .reserved { try bytes.record(IdempotencyLog.Entry(key: key, request: key, transaction: String(repeating: "cd", count: 1_100))) }
            return reservation
        }
        #expect(try large("a-0", "a") == .reserved && large("a-1", "a") == .reserved && large("a-2", "a") == .reserved)
        guard case let .share(byBytes) = try large("a-3", "a") else {
            Issue.record("a client past its share of the bytes took a key")
            return
        }
        #expect(byBytes.bytes >= 5_000 && byBytes.bytesMax == 5_000, "\(byBytes)")
        #expect(try large("b-0", "b") == .reserved)
    }
}
