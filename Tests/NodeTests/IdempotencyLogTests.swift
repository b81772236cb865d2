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

    /// Clients that may sign share the log's room once it runs short: past three quarters
    /// of its keys or bytes, one that holds its share is refused new keys, naming what it
    /// holds, while another still records; before that any client takes keys. Its retries
    /// still answer; a key given up frees its place; the shares hold across a reopening (each
    /// line names its client).
    @Test func eachClientHoldsItsShareOfTheLogOnceItRunsShort() throws {
        let path = Scratch.file("shared.log")
        func entry(_ key: String, client: String? = nil) -> IdempotencyLog.Entry {
            IdempotencyLog.Entry(key: key, request: "request \(key)", transaction: String(repeating: "ab", count: 100), client: client)
        }
        func take(_ log: IdempotencyLog, _ key: String, _ client: String) throws -> IdempotencyLog.Reservation {
            let reservation = log.reserve(key, request: "request \(key)", client: client)
            if reservation == .reserved { try log.record(entry(key)) }
            return reservation
        }
        // Three clients, 12 keys: a share is 4 keys, and the log runs short at 9.
        let log = try IdempotencyLog(path: path, byteCountMax: 300_000, keysMax: 12, sharers: 3)
        for number in 0..<9 { #expect(try take(log, "flood-\(number)", "flooder") == .reserved, "key \(number): the log has room") }
        guard case let .share(share) = try take(log, "flood-9", "flooder") else {
            Issue.record("the flooder took a tenth key of the log running short")
            return
        }
        #expect(share.entries == 9 && share.entriesMax == 4 && share.bytesMax == 100_000, "\(share)")
        #expect(share.description.hasPrefix("'flooder' holds 9 keys in"), "\(share)")
        #expect(try take(log, "flood-0", "flooder") == .existing(entry("flood-0", client: "flooder")))
        #expect(try take(log, "till-0", "till") == .reserved)
        // A reservation given up is no longer held.
        #expect(log.reserve("till-1", request: "request till-1", client: "till") == .reserved)
        #expect(log.reserve("till-2", request: "request till-2", client: "till") == .reserved)
        #expect(log.reserve("till-3", request: "request till-3", client: "till") == .full)  // 12 keys, recorded or reserved
        log.release("till-2")
        #expect(log.reserve("till-3", request: "request till-3", client: "till") == .reserved)
        try log.record(entry("till-1"))
        try log.record(entry("till-3"))

        let reopened = try IdempotencyLog(path: path, byteCountMax: 300_000, keysMax: 14, sharers: 3)
        guard case .share = reopened.reserve("flood-10", request: "request flood-10", client: "flooder") else {
            Issue.record("the flooder's keys were not counted after a reopening")
            return
        }
        #expect(reopened.reserve("till-4", request: "request till-4", client: "till") == .reserved)  // its fourth
        guard case let .share(till) = reopened.reserve("till-5", request: "request till-5", client: "till") else {
            Issue.record("the till took a fifth key of the log running short")
            return
        }
        #expect(till.entries == 4 && till.entriesMax == 4 && till.bytes > 0, "\(till)")
        #expect(reopened.reserve("other-0", request: "request other-0", client: "other") == .reserved)

        // By bytes: lines of about 2,300 bytes, two clients sharing 10,000 (short at 7,500).
        let bytes = try IdempotencyLog(path: Scratch.file("bytes.log"), byteCountMax: 10_000, sharers: 2)
        func large(_ key: String, _ client: String) throws -> IdempotencyLog.Reservation {
            let reservation = bytes.reserve(key, request: key, client: client)
            guard reservation == .reserved else { return reservation }
            do { try bytes.record(IdempotencyLog.Entry(key: key, request: key, transaction: String(repeating: "cd", count: 1_100))) } catch let share as IdempotencyLog.Share {
                return .share(share)
            }
            return reservation
        }
        #expect(try large("a-0", "a") == .reserved && large("a-1", "a") == .reserved && large("a-2", "a") == .reserved)
        // The fourth line would take the log past 7,500 bytes and "a" past its 5,000.
        guard case let .share(byBytes) = try large("a-3", "a") else {
            Issue.record("a client past its share of the bytes wrote a line")
            return
        }
        #expect(byBytes.bytes > 5_000 && byBytes.bytesMax == 5_000, "\(byBytes)")
        #expect(bytes.reserve("a-3", request: "a-3", client: "a") == .reserved, "the key refused was not given back")
        bytes.release("a-3")
        #expect(try large("b-0", "b") == .reserved)
    }
}
