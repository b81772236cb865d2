// Small rules of the gateway, each alone: the order nodes are read from after a failure,
// the dashboard's page cache key, the bounds of what it keeps in memory.
import Testing
import Wire

@testable import Gateway

struct GatewayRulesTests {
    /// A node whose answer failed is read from last for `failedRecentlySeconds`, even once a
    /// refresh held (its error cleared): one that answers the 2 s refresh but stalls reads
    /// would otherwise be first again every few reads. The others take turns first.
    @Test func aNodeThatFailedIsReadLastForTenSeconds() {
        let now = ContinuousClock.now
        var nodes = Array(repeating: NodePool.NodeState(), count: 3)
        #expect(NodePool.readOrder(first: 1, nodes, now: now) == [1, 2, 0])

        nodes[1].lastError = "no answer in 5000 ms"
        nodes[1].failedAt = now
        #expect(NodePool.readOrder(first: 1, nodes, now: now) == [2, 0, 1])
        #expect(NodePool.readOrder(first: 0, nodes, now: now) == [0, 2, 1])
        // The refresh held: the error is cleared, the failure still counts for 10 s.
        nodes[1].lastError = nil
        #expect(NodePool.readOrder(first: 1, nodes, now: now + .seconds(9)) == [2, 0, 1])
        #expect(NodePool.readOrder(first: 1, nodes, now: now + .seconds(11)) == [1, 2, 0])
        // An error not cleared keeps it last whatever the time.
        nodes[1].lastError = "refused"
        #expect(NodePool.readOrder(first: 1, nodes, now: now + .seconds(3_600)) == [2, 0, 1])
        // Every node failed: the same turns, none left out.
        for index in nodes.indices { nodes[index].lastError = "down" }
        #expect(NodePool.readOrder(first: 2, nodes, now: now) == [2, 0, 1])
    }

    /// The same page by another spelling is the same entry of the page cache: a client
    /// cannot make every request miss it (each miss asks the nodes).
    @Test func aPageHasOneKeyWhateverItsSpelling() {
        let key = Dashboard.pageKey("/fr/partners")
        #expect(key == "/fr/partners")
        for spelling in ["/fr//partners", "//fr/partners", "/fr/partners/", "/fr///partners//"] {
            #expect(Dashboard.pageKey(spelling) == key, "\(spelling)")
        }
        #expect(Dashboard.pageKey("/en/partners") != key)
        #expect(Dashboard.pageKey("/") == "/" && Dashboard.pageKey("") == "/" && Dashboard.pageKey("//") == "/")
    }

    /// The epoch reports kept are bounded by their bytes as well as their count, the oldest
    /// forgotten first, the newest kept whatever its size.
    @Test func theReportsKeptAreBoundedByBytesAndCount() {
        var reports = NewestByNumber<String>(countMax: 4, bytesMax: 1_000)
        for epoch in UInt64(0)..<4 { reports.insert("report \(epoch)", for: epoch, bytes: 200) }
        #expect(reports.count == 4 && reports.bytes == 800)
        reports.insert("report 4", for: 4, bytes: 200)  // past the count: epoch 0 goes
        #expect(reports.count == 4 && reports[0] == nil && reports[4] == "report 4")
        reports.insert("report 5", for: 5, bytes: 700)  // past the bytes: 1, 2 and 3 go
        #expect(reports[1] == nil && reports[2] == nil && reports[3] == nil, "\(reports.bytes) bytes kept")
        #expect(reports[4] == "report 4" && reports[5] == "report 5" && reports.bytes == 900)
        reports.insert("huge", for: 6, bytes: 5_000)  // alone over the bound: kept, alone
        #expect(reports.count == 1 && reports[6] == "huge" && reports.bytes == 5_000)
        reports.insert("again", for: 6, bytes: 10)  // replaced: its bytes counted once
        #expect(reports.count == 1 && reports.bytes == 10)
        // An older epoch asked late is kept as the newest insertion, its elders forgotten.
        reports.insert("late", for: 2, bytes: 995)
        #expect(reports[2] == "late" && reports[6] == nil && reports.bytes == 995)
        #expect(ReportCache.bytesMax == 64 << 20 && ReportCache.countMax == 4_096)
    }

    /// A refusal's reason is kept cut (a node's may be kilobytes, and 100,000 are kept).
    @Test func aRefusalsReasonIsKeptCut() throws {
        let relayed = RelayedTransactions()
        let id = try #require(Bytes32([UInt8](repeating: 7, count: 32)))
        relayed.remember(id, .refused(reason: String(repeating: "é", count: 2_000)))
        guard case let .refused(reason)? = relayed.state(of: id) else {
            Issue.record("not remembered as refused")
            return
        }
        #expect(reason.utf8.count <= RelayedTransactions.reasonBytesMax + 3 && reason.hasSuffix("…"), "\(reason.utf8.count) bytes")
        let short = try #require(Bytes32([UInt8](repeating: 8, count: 32)))
        relayed.remember(short, .refused(reason: "nonce used"))
        #expect(relayed.state(of: short) == .refused(reason: "nonce used"))
    }
}
