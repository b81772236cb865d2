// The mempool's cut of a proposal: oldest first, commands in flight skipped, and a byte
// budget that keeps a block under the transport's frame limit whatever the command cap.
import CalissonCrypto
import Testing
import Wire
@testable import Consensus

@Suite struct MempoolTests {
    static func filled(_ sizes: [Int]) throws -> Mempool {
        var mempool = Mempool(countMax: 100, inFlightTicks: 10)
        for (index, size) in sizes.enumerated() {
            try mempool.insert(id: SHA256.hash("command \(index)"), bytes: [UInt8](repeating: UInt8(index), count: size))
        }
        return mempool
    }

    @Test func aCutStopsAtTheByteBudgetButTakesAtLeastOne() throws {
        var mempool = try Self.filled([400, 300, 200, 100])
        // 400 + 300 fit in 750; 200 more would not: the cut stops there, in order (no smaller one skipped ahead).
        #expect(mempool.take(10, bytesMax: 750, tick: 1).map(\.count) == [400, 300])
        // The rest, next tick: 200 + 100.
        #expect(mempool.take(10, bytesMax: 750, tick: 2).map(\.count) == [200, 100])
        // A first command larger than the budget is taken alone (else it would never leave).
        var large = try Self.filled([1_000, 10])
        #expect(large.take(10, bytesMax: 500, tick: 1).map(\.count) == [1_000])
        // Without a budget, the count cap alone.
        var counted = try Self.filled([1, 1, 1])
        #expect(counted.take(2, tick: 1).count == 2)
    }

    /// The mempool holds at most `bytesMax` bytes as well as `countMax` commands: large
    /// commands (16 KiB each) cannot take gigabytes under the count; what leaves frees room.
    @Test func insertsStopAtTheByteBoundAndRemovalsFreeRoom() throws {
        var mempool = Mempool(countMax: 100, bytesMax: 1_000, inFlightTicks: 10)
        for index in 0..<3 { try mempool.insert(id: SHA256.hash("large \(index)"), bytes: [UInt8](repeating: 1, count: 300)) }
        #expect(throws: Mempool.Refusal.full) { try mempool.insert(id: SHA256.hash("large 3"), bytes: [UInt8](repeating: 1, count: 300)) }
        try mempool.insert(id: SHA256.hash("small"), bytes: [UInt8](repeating: 1, count: 100))
        #expect(mempool.byteCount == 1_000 && mempool.count == 4)
        mempool.remove([SHA256.hash("large 0"), SHA256.hash("not held")])
        #expect(mempool.byteCount == 700)
        try mempool.insert(id: SHA256.hash("large 3"), bytes: [UInt8](repeating: 1, count: 300))
        mempool.clear()
        #expect(mempool.byteCount == 0)
    }

    /// A command no block may carry any more (its expiry passed) is forgotten once a block
    /// passes it, with its owner's share and its bytes: a backup kept one its primary had
    /// refused as expired, counted it as work to order, and asked for view changes alone.
    @Test func expiredCommandsAreForgottenAsTheChainPassesThem() throws {
        var mempool = Mempool(countMax: 100, inFlightTicks: 10)
        let owner = try #require(Bytes32(SHA256.hash("owner").bytes))
        for (index, expiry) in [UInt64(12), 10, .max, 11].enumerated() {
            try mempool.insert(id: SHA256.hash("command \(index)"), bytes: [UInt8](repeating: 1, count: 10), owner: owner, expiry: expiry)
        }
        #expect(mempool.removeExpired(before: 10) == 0)  // a block at 10 may still carry the one expiring at 10
        #expect(mempool.removeExpired(before: 11) == 1 && mempool.count == 3 && !mempool.contains(SHA256.hash("command 1")))
        #expect(mempool.removeExpired(before: 13) == 2 && mempool.count == 1 && mempool.byteCount == 10)
        #expect(mempool.held(by: owner).count == 1 && mempool.pendingCount(tick: 0) == 1)
        #expect(mempool.removeExpired(before: .max) == 0)  // no bound known: never expired
        // Forgotten, it may come again (no duplicate left behind).
        try mempool.insert(id: SHA256.hash("command 1"), bytes: [1], expiry: 20)
        #expect(mempool.count == 2)
    }

    @Test func commandsInFlightAreNotCutAgainUntilTheirTicksPass() throws {
        var mempool = try Self.filled([10, 10])
        #expect(mempool.take(1, tick: 1).count == 1)
        #expect(mempool.take(5, tick: 2).map { $0[0] } == [1])  // the first is in flight
        #expect(mempool.take(5, tick: 12).count == 2)  // its proposal may have died: cut again
    }

    /// Once three quarters full, an owner holding a quarter of the room adds nothing more;
    /// the others fill the rest; what leaves in blocks gives it room again. Commands of no
    /// one (the simulator's) are never held to a share.
    @Test func anOwnerFloodingTheMempoolLeavesTheLastQuarterToOthers() throws {
        var mempool = Mempool(countMax: 100, inFlightTicks: 10)
        let flood = SHA256.hash("partner flood"), other = SHA256.hash("partner other")
        func insert(_ name: String, _ owner: Bytes32) throws { try mempool.insert(id: SHA256.hash(name), bytes: [1], owner: owner) }
        // While there is room, one owner may take three quarters.
        for index in 0..<75 { try insert("flood \(index)", flood) }
        #expect(mempool.isPastShare(flood) && !mempool.isPastShare(other))
        #expect(throws: Mempool.Refusal.share) { try insert("flood 75", flood) }
        #expect(throws: Mempool.Refusal.duplicate) { try insert("flood 0", flood) }
        for index in 0..<25 { try insert("other \(index)", other) }
        #expect(mempool.isFull)
        #expect(throws: Mempool.Refusal.full) { try insert("other 25", other) }
        // Blocks take the flood's commands: below three quarters full, it may add again.
        mempool.remove(Set((0..<26).map { SHA256.hash("flood \($0)") }))
        #expect(mempool.held(by: flood) == (49, 49) && !mempool.isPastShare(flood))
        try insert("flood 75", flood)
        #expect(mempool.isPastShare(flood))
        // By bytes as well: a quarter of the bytes past three quarters of them.
        var bytes = Mempool(countMax: 1_000, bytesMax: 400, inFlightTicks: 10)
        try bytes.insert(id: SHA256.hash("large"), bytes: [UInt8](repeating: 0, count: 300), owner: flood)
        #expect(throws: Mempool.Refusal.share) { try bytes.insert(id: SHA256.hash("small"), bytes: [0], owner: flood) }
        try bytes.insert(id: SHA256.hash("small"), bytes: [0], owner: other)
        try bytes.insert(id: SHA256.hash("anyone's"), bytes: [0])
        bytes.clear()
        #expect(bytes.held(by: flood) == (0, 0))
    }
}
