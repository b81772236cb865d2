// The gateway's verified copy of the state (`StateMirror`), against a node made of a
// dictionary of every tree page and value ever written: after each sync the copy answers
// every key as the certified tree does (value and proof), and holds exactly that tree's
// pages and its keys' values, nothing of the trees before; it asks only for what changed;
// a node that lies about a page or a value, or has pruned the checkpoint, fails the sync
// with the copy left as it was; a state past its bound drops the copy.
import CalissonCrypto
import Foundation
import Gateway
import Ledger
import LightClient
import Synchronization
import Testing
import Wire

@Suite struct StateMirrorTests {
    /// A node's store: every page and every value ever made (a checkpoint's are all there),
    /// the current tree's root, and what it was asked.
    final class FakeNode: TreePageSource, @unchecked Sendable {
        var pages: [SHA256Digest: TreePage] = [:]
        var values: [SHA256Digest: [UInt8]] = [:]
        var current: [StateKey: [UInt8]] = [:]
        var root = SHA256Digest.zero
        var height: UInt64 = 0
        var pagesAsked = 0
        var valuesAsked = 0
        /// Round trips that asked for values.
        var valueRoundTrips = 0
        /// Tampering: a page or a value answered with other bytes, or as not held.
        var lie: ((inout [UInt8]?) -> Void)?
        var lieAboutValues: ((inout [UInt8]?) -> Void)?

        func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? { pages[root] }

        /// One checkpoint's changes (nil: the key deleted).
        func apply(_ changes: [StateKey: [UInt8]?]) {
            let update = StateTree.update(root: root, changes: changes.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: self)
            for (hash, page) in update.created { pages[hash] = page }
            for (key, value) in changes {
                if let value {
                    values[StateTree.valueHash(value)] = value
                    current[key] = value
                } else {
                    current[key] = nil
                }
            }
            root = update.root
            height += 8
        }

        func answer(_ requests: [ClientRequest]) -> [ClientResponse] {
            if requests.contains(where: { if case .stateValues = $0 { true } else { false } }) { valueRoundTrips += 1 }
            return requests.map { request in
                switch request {
                case let .treePages(hashes):
                    pagesAsked += hashes.count
                    return .treePages(hashes.map { hash in
                        var bytes = pages[hash]?.encoded()
                        lie?(&bytes)
                        return bytes
                    })
                case let .stateValues(references):
                    valuesAsked += references.count
                    return .stateValues(references.map { reference in
                        var value = values[reference.valueHash]
                        lieAboutValues?(&value)
                        return value
                    })
                default: return .error("not asked in this test")
                }
            }
        }

        var checkpoint: StateMirror.Checkpoint {
            StateMirror.Checkpoint(height: height, root: root, certificate: [], trusted: TrustedValidators(genesis: []), source: "fake node")
        }

        /// The pages of the current tree.
        func reachable() -> Set<SHA256Digest> {
            var found = Set<SHA256Digest>()
            var pending = root == .zero ? [] : [root]
            while let hash = pending.popLast() {
                guard let page = pages[hash], found.insert(hash).inserted else { continue }
                for entry in page.entries {
                    if case let .branch(left, right) = entry.node {
                        for child in [left, right] where child != .zero && page.node(child) == nil { pending.append(child) }
                    }
                }
            }
            return found
        }
    }

    static func sync(_ mirror: StateMirror, _ node: FakeNode) async throws(MirrorSyncError) {
        try await mirror.sync(to: node.checkpoint) { requests in node.answer(requests) }
    }

    /// Every key (present, deleted, never written) answered as the certified tree does.
    static func expectSame(_ mirror: StateMirror, _ node: FakeNode, keys: [StateKey], _ comment: Comment) {
        #expect(mirror.checkpoint?.height == node.height, comment)
        #expect(mirror.counts.pages == node.reachable().count, comment)
        #expect(mirror.counts.values == node.current.count, comment)
        for key in keys {
            guard let (answer, checkpoint) = mirror.answer(key), case let .certifiedState(height, _, value, proof) = answer else {
                Issue.record("no answer for \(key.hex), \(comment)")
                return
            }
            #expect(height == node.height && checkpoint.root == node.root, comment)
            #expect(value == node.current[key], comment)
            if let value {
                #expect(throws: Never.self, comment) { try proof.verifyInclusion(key: key, value: value, root: node.root) }
            } else {
                #expect(throws: Never.self, comment) { try proof.verifyAbsence(key: key, root: node.root) }
            }
        }
    }

    @Test func theCopyFollowsEveryCheckpointWithOnlyWhatChanged() async throws {
        var random = SplitMix64(seed: 21)
        let keys = (0..<600).map { _ in random.bytes32() }
        let node = FakeNode()
        let mirror = StateMirror(pagesMax: 100_000, chunk: 64)
        #expect(mirror.answer(keys[0]) == nil)  // no copy yet: the reads ask the nodes

        // An empty state (root zero), then a first state of 400 keys.
        try await Self.sync(mirror, node)
        Self.expectSame(mirror, node, keys: Array(keys.prefix(20)), "empty")
        node.apply(Dictionary(uniqueKeysWithValues: keys.prefix(400).map { ($0, .some(Array("v0 \($0.hex)".utf8))) }))
        try await Self.sync(mirror, node)
        Self.expectSame(mirror, node, keys: keys, "first")
        #expect(node.pagesAsked == node.reachable().count)

        // Checkpoints of a few changes each: new keys, new values, deletions, values back to earlier ones.
        for round in 1...30 {
            var changes: [StateKey: [UInt8]?] = [:]
            for _ in 0..<Int(random.next() % 12 + 1) {
                let key = keys[Int(random.next() % UInt64(keys.count))]
                let pick = random.next() % 5
                changes[key] = pick == 0 ? .some(nil) : .some(Array("v\(pick) \(key.hex)".utf8))
            }
            let pagesBefore = node.pagesAsked, valuesBefore = node.valuesAsked
            let held = mirror.counts.pages
            node.apply(changes)
            try await Self.sync(mirror, node)
            Self.expectSame(mirror, node, keys: keys, "round \(round)")
            // Only what changed is asked: at most a page per level per key changed, and
            // never more values than keys changed.
            #expect(node.pagesAsked - pagesBefore <= changes.count * 5 + 1, "round \(round)")
            #expect(node.pagesAsked - pagesBefore < held, "round \(round)")
            #expect(node.valuesAsked - valuesBefore <= changes.count, "round \(round)")
        }

        // Everything deleted: the copy is empty again.
        node.apply(Dictionary(uniqueKeysWithValues: node.current.keys.map { ($0, [UInt8]?.none) }))
        try await Self.sync(mirror, node)
        Self.expectSame(mirror, node, keys: keys, "all deleted")
        #expect(mirror.counts.pages == 0 && mirror.counts.values == 0)
        // An older or the same checkpoint asks nothing.
        let asked = node.pagesAsked
        try await Self.sync(mirror, node)
        #expect(node.pagesAsked == asked)
    }

    @Test func aNodeThatLiesOrPrunedLeavesTheCopyAsItWas() async throws {
        var random = SplitMix64(seed: 5)
        let keys = (0..<200).map { _ in random.bytes32() }
        let node = FakeNode()
        let mirror = StateMirror(pagesMax: 100_000)
        node.apply(Dictionary(uniqueKeysWithValues: keys.prefix(150).map { ($0, .some(Array("a \($0.hex)".utf8))) }))
        try await Self.sync(mirror, node)
        let before = node.height
        node.apply(Dictionary(uniqueKeysWithValues: keys.suffix(80).map { ($0, .some(Array("b \($0.hex)".utf8))) }))
        let expected = node.current

        // A page with one byte changed: it does not hash to its name.
        node.lie = { bytes in if var changed = bytes { changed[changed.count - 1] ^= 1; bytes = changed } }
        await #expect(throws: MirrorSyncError.self) { try await Self.sync(mirror, node) }
        #expect(mirror.checkpoint?.height == before)
        #expect(mirror.lastError?.contains("cannot be trusted") == true)
        // A value that is not the leaf's.
        node.lie = nil
        node.lieAboutValues = { value in value = value.map { $0 + [0] } }
        await #expect(throws: MirrorSyncError.self) { try await Self.sync(mirror, node) }
        #expect(mirror.checkpoint?.height == before)
        // The checkpoint no longer held (pruned): moved.
        node.lieAboutValues = { value in value = nil }
        do {
            try await Self.sync(mirror, node)
            Issue.record("a sync from a node that lacks the values succeeded")
        } catch {
            guard case .moved = error else { Issue.record("\(error)"); return }
        }
        #expect(mirror.counts.failures == 3)
        // Through all of it, the copy answered the checkpoint it had; an honest answer now
        // completes the sync, reusing the pages fetched by the failed ones.
        for key in keys.prefix(10) {
            guard case let .certifiedState(height, _, _, _) = mirror.answer(key)?.0 else { Issue.record("no answer"); return }
            #expect(height == before)
        }
        node.lieAboutValues = nil
        let pagesAsked = node.pagesAsked
        try await Self.sync(mirror, node)
        #expect(node.pagesAsked == pagesAsked)
        #expect(node.current == expected)
        Self.expectSame(mirror, node, keys: keys, "after the honest answer")
    }

    /// A sync cut short while it fetches the values (the node moved on to a newer
    /// checkpoint) keeps those it fetched: the next asks only for the others. (Without this
    /// a copy far behind under load never caught up.)
    @Test func aSyncCutShortKeepsTheValuesItFetched() async throws {
        var random = SplitMix64(seed: 9)
        let keys = (0..<400).map { _ in random.bytes32() }
        let node = FakeNode()
        let mirror = StateMirror(pagesMax: 100_000, chunk: 50)
        node.apply(Dictionary(uniqueKeysWithValues: keys.map { ($0, .some(Array("v \($0.hex)".utf8))) }))
        // The node answers three requests of values (150), then holds none of them.
        var answered = 0
        node.lieAboutValues = { value in
            answered += 1
            if answered > 150 { value = nil }
        }
        do {
            try await Self.sync(mirror, node)
            Issue.record("a sync from a node that moved on succeeded")
        } catch {
            guard case .moved = error else { Issue.record("\(error)"); return }
        }
        #expect(mirror.checkpoint == nil && node.valuesAsked == 200)
        node.lieAboutValues = nil
        let (pagesAsked, valuesAsked, roundTrips) = (node.pagesAsked, node.valuesAsked, node.valueRoundTrips)
        try await Self.sync(mirror, node)
        #expect(node.pagesAsked == pagesAsked, "pages asked again")
        #expect(node.valuesAsked - valuesAsked == keys.count - 150, "\(node.valuesAsked - valuesAsked) values asked again")
        // 250 values in requests of 50, four sent together: two round trips.
        #expect(node.valueRoundTrips - roundTrips == 2)
        Self.expectSame(mirror, node, keys: keys, "after the sync cut short")
    }

    @Test func aStateLargerThanTheBoundDropsTheCopy() async throws {
        var random = SplitMix64(seed: 8)
        let keys = (0..<300).map { _ in random.bytes32() }
        let node = FakeNode()
        let mirror = StateMirror(pagesMax: 40, chunk: 16)
        node.apply(Dictionary(uniqueKeysWithValues: keys.prefix(10).map { ($0, .some([1])) }))
        try await Self.sync(mirror, node)
        #expect(mirror.checkpoint != nil)
        node.apply(Dictionary(uniqueKeysWithValues: keys.map { ($0, .some([2])) }))
        #expect(node.reachable().count > 40)
        do {
            try await Self.sync(mirror, node)
            Issue.record("a state past the bound was copied")
        } catch {
            guard case .tooLarge = error else { Issue.record("\(error)"); return }
        }
        #expect(mirror.checkpoint == nil && mirror.counts.pages == 0)
        #expect(mirror.answer(keys[0]) == nil)
    }

    /// The bound is on the state, not on a sync's churn: a state within it, every page of
    /// which changes between two checkpoints (the copy and the pages fetched then hold
    /// nearly twice the bound for a moment), is copied.
    @Test func aStateWithinTheBoundIsCopiedWhateverItsChurn() async throws {
        var random = SplitMix64(seed: 9)
        let keys = (0..<200).map { _ in random.bytes32() }
        let node = FakeNode()
        node.apply(Dictionary(uniqueKeysWithValues: keys.map { ($0, .some([1])) }))
        let size = node.reachable().count
        let mirror = StateMirror(pagesMax: size + 2, chunk: 16)
        try await Self.sync(mirror, node)
        Self.expectSame(mirror, node, keys: keys, "first copy")
        let before = node.reachable()
        node.apply(Dictionary(uniqueKeysWithValues: keys.map { ($0, .some([2])) }))
        #expect(node.reachable().isDisjoint(with: before), "every page changed")
        try await Self.sync(mirror, node)
        Self.expectSame(mirror, node, keys: keys, "after a checkpoint that changed every page")
    }
}
