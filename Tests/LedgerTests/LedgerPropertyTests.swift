// Properties over random histories: thousands of valid and invalid transactions across
// several epochs, with the invariants checked after every block (value is conserved,
// net positions sum to zero, caps and budgets hold), replay from genesis giving the same
// roots, and state proofs that verify against the root and fail for altered values.
// Also the sparse Merkle tree on its own: order independence, deletions, proofs.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct StateTreeTests {
    struct Nodes: TreePageSource {
        var store = MemoryStateStore()
        func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? { store.treePage(root) }
    }

    func apply(_ store: inout MemoryStateStore, _ changes: [(StateKey, [UInt8]?)]) {
        let values = changes.map { (key: $0.0, value: $0.1) }
        let tree = StateTree.update(root: store.root, changes: values.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: store)
        store.commit(StateBatch(values: values, tree: tree))
    }

    /// The pages reachable from `root`: a branch's child outside its page is a page.
    func reachable(_ store: MemoryStateStore, from root: SHA256Digest) -> Int {
        guard root != .zero, let page = store.treePage(root) else { return 0 }
        var count = 1
        for case let .branch(left, right) in page.nodes.values {
            for child in [left, right] where child != .zero && page.nodes[child] == nil { count += reachable(store, from: child) }
        }
        return count
    }

    @Test func rootDependsOnTheContentNotTheOrderOfUpdates() {
        var random = SplitMix64(seed: 3)
        let entries = (0..<500).map { i in (random.bytes32(), Array("value \(i)".utf8)) }
        var once = MemoryStateStore()
        apply(&once, entries.map { ($0.0, $0.1) })
        var piecewise = MemoryStateStore()
        for chunk in stride(from: 0, to: entries.count, by: 37) {
            apply(&piecewise, entries[chunk..<min(chunk + 37, entries.count)].reversed().map { ($0.0, $0.1) })
        }
        #expect(once.root == piecewise.root && once.root != .zero)
        // Deleting half, then re-adding it, comes back to the same root; no node leaks.
        apply(&piecewise, entries.prefix(250).map { ($0.0, nil) })
        #expect(piecewise.root != once.root)
        #expect(reachable(piecewise, from: piecewise.root) == piecewise.pageCount)
        apply(&piecewise, entries.prefix(250).map { ($0.0, $0.1) })
        #expect(piecewise.root == once.root)
        apply(&piecewise, entries.map { ($0.0, nil) })
        #expect(piecewise.root == .zero && piecewise.pageCount == 0)
    }

    @Test func proofsOfInclusionAndAbsenceVerifyAndAlteredOnesFail() throws {
        var random = SplitMix64(seed: 4)
        var store = MemoryStateStore()
        let entries = (0..<300).map { i in (random.bytes32(), Array("value \(i)".utf8)) }
        apply(&store, entries.map { ($0.0, $0.1) })
        for (key, value) in entries.prefix(50) {
            let proof = StateTree.proof(for: key, root: store.root, nodes: store)
            try proof.verifyInclusion(key: key, value: value, root: store.root)
            #expect(throws: StateProofError.self) { try proof.verifyInclusion(key: key, value: value + [0], root: store.root) }
            #expect(throws: StateProofError.self) { try proof.verifyAbsence(key: key, root: store.root) }
            #expect(throws: StateProofError.self) { try proof.verifyInclusion(key: key, value: value, root: SHA256.hash("other root")) }
            #expect(try StateProof(wireBytes: proof.wireBytes) == proof)
        }
        for _ in 0..<50 {
            let absent = random.bytes32()
            let proof = StateTree.proof(for: absent, root: store.root, nodes: store)
            try proof.verifyAbsence(key: absent, root: store.root)
            // An absence proof for one key does not prove another key absent.
            #expect(throws: StateProofError.self) { try proof.verifyAbsence(key: entries[0].0, root: store.root) }
        }
    }

    /// Random batches of inserts, changes and deletions over keys that share long
    /// prefixes (so leaves move up and down across page boundaries): after each, the root
    /// is the one computed from scratch, the pages stored are exactly those reachable and
    /// those of the tree made at once, each page's bytes decode to it, and every key is
    /// provable.
    @Test func pagesFollowLeavesAcrossPageBoundaries() throws {
        var random = SplitMix64(seed: 11)
        // 64 keys: 16 prefixes of 12 random bits, each followed by random bits.
        let prefixes = (0..<16).map { _ in random.bytes32() }
        let keys = (0..<64).map { index -> StateKey in
            var key = random.bytes32()
            key.withUnsafeMutableBytes { bytes in
                prefixes[index % 16].withUnsafeBytes { prefix in
                    bytes[0] = prefix[0]
                    bytes[1] = (prefix[1] & 0xF0) | (bytes[1] & 0x0F)
                }
            }
            return key
        }
        var store = MemoryStateStore()
        var values: [StateKey: [UInt8]] = [:]
        for round in 0..<200 {
            var changes: [StateKey: [UInt8]?] = [:]
            for _ in 0..<(1 + Int(random.next() % 6)) {
                let key = keys[Int(random.next() % 64)]
                changes[key] = random.next() % 3 == 0 ? .some(nil) : Array("v\(round)".utf8)
            }
            apply(&store, changes.map { ($0.key, $0.value) })
            for (key, value) in changes { values[key] = value }
            var scratch = MemoryStateStore()
            apply(&scratch, values.map { ($0.key, $0.value) })
            #expect(store.root == scratch.root, "round \(round)")
            #expect(reachable(store, from: store.root) == store.pageCount, "round \(round)")
            #expect(store.pageCount == scratch.pageCount, "round \(round)")
            // The pages are a function of the keys: the same as the tree made at once.
            #expect(store.pages == scratch.pages, "round \(round)")
            for page in store.pages.values { #expect(try TreePage(decoding: page.encoded()) == page) }
            for key in keys {
                let proof = StateTree.proof(for: key, root: store.root, nodes: store)
                if let value = values[key] {
                    try proof.verifyInclusion(key: key, value: value, root: store.root)
                } else {
                    try proof.verifyAbsence(key: key, root: store.root)
                }
            }
        }
    }

    /// The pages an update reads, counted.
    final class CountingPages: TreePageSource, @unchecked Sendable {
        let store: MemoryStateStore
        var reads: [SHA256Digest] = []
        init(_ store: MemoryStateStore) { self.store = store }
        func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? {
            reads.append(root)
            return store.treePage(root)
        }
    }

    /// The pages from the root to a key's leaf (or to where it would be).
    func pagesOnPath(_ store: MemoryStateStore, _ key: StateKey) -> Set<SHA256Digest> {
        var pages: Set<SHA256Digest> = []
        var hash = store.root, depth = 0
        while hash != .zero {
            if depth % StateTree.pageDepth == 0 { pages.insert(hash) }
            var page: TreePage?
            for root in pages { if let found = store.treePage(root), found.node(hash) != nil { page = found } }
            guard case let .branch(left, right) = page?.node(hash) else { break }
            hash = StateTree.bit(key, depth) ? right : left
            depth += 1
        }
        return pages
    }

    /// Changing or adding a key reads only the pages on its path, each once: the unchanged
    /// sibling pages beside the path are kept by hash, not read (they were half the reads,
    /// from the database once the tree outgrows the node's page cache). Deleting a key
    /// reads its sibling's page only where the branch above collapses.
    @Test func anUpdateReadsOnlyThePagesOnItsPath() {
        var random = SplitMix64(seed: 21)
        var store = MemoryStateStore()
        let keys = (0..<3_000).map { _ in random.bytes32() }
        apply(&store, keys.map { ($0, Array("first".utf8)) })
        for round in 0..<40 {
            let key = round % 2 == 0 ? keys[Int(random.next() % 3_000)] : random.bytes32()
            let counting = CountingPages(store)
            let tree = StateTree.update(root: store.root, changes: [(key, StateTree.valueHash(Array("round \(round)".utf8)))], nodes: counting)
            let path = pagesOnPath(store, key)
            #expect(path.count >= 3, "the key's leaf is two pages below the root")
            #expect(counting.reads.count == path.count && Set(counting.reads) == path, "round \(round)")
            var scratch = store
            scratch.commit(StateBatch(values: [], tree: tree))
            #expect(scratch.root != store.root)
        }
        // Deleting every key but two still gives the tree made from those two alone.
        apply(&store, keys.dropFirst(2).map { ($0, nil) })
        var two = MemoryStateStore()
        apply(&two, keys.prefix(2).map { ($0, Array("first".utf8)) })
        #expect(store.root == two.root && store.pages == two.pages)
    }

    /// A page read back from bytes is rebuilt and hashed, never trusted: truncated,
    /// extended or unknown bytes are refused.
    @Test func malformedPagesAreRefused() throws {
        var store = MemoryStateStore()
        var random = SplitMix64(seed: 12)
        apply(&store, (0..<40).map { i in (random.bytes32(), Array("value \(i)".utf8)) })
        let bytes = try #require(store.treePage(store.root)).encoded()
        #expect(throws: WireError.self) { _ = try TreePage(decoding: Array(bytes.dropLast())) }
        #expect(throws: WireError.self) { _ = try TreePage(decoding: bytes + [0]) }
        #expect(throws: WireError.self) { _ = try TreePage(decoding: [7] + bytes.dropFirst()) }
        #expect(throws: WireError.self) { _ = try TreePage(decoding: [0]) }
        #expect(throws: WireError.self) { _ = try TreePage(decoding: []) }
    }
}

@Suite(.onOwnThreads) struct LedgerPropertyTests {
    /// Random traffic from a seed: mostly plausible transactions, some invalid on purpose.
    struct Traffic {
        var random: SplitMix64
        var evidence = 0
        let citizens = 40

        mutating func pick<T>(_ items: [T]) -> T { items[Int(random.next() % UInt64(items.count))] }

        mutating func block(_ f: inout LedgerFixture) -> [[UInt8]] {
            var commands: [[UInt8]] = []
            for _ in 0..<(20 + Int(random.next() % 60)) {
                let citizen = Int(random.next() % UInt64(citizens))
                switch random.next() % 10 {
                case 0, 1, 2, 3:
                    let (programme, issuer) = pick([("recyclage", "tri"), ("culture", "friche"), ("mobilite", "rtm"), ("mobilite", "tri")])
                    evidence += random.next() % 20 == 0 ? 0 : 1  // sometimes reuse evidence
                    commands.append(f.attribute(issuer, programme, to: citizen, units: UInt32(random.next() % 12), evidence: evidence))
                case 4, 5, 6:
                    commands.append(f.redeem(citizen, at: pick(["rtm", "friche", "metropole", "fonds", "tri"]), random.next() % 400))
                case 7:
                    let to = LedgerFixture.citizen(Int(random.next() % UInt64(citizens))).publicKey
                    commands.append(f.citizenTx(citizen, .transfer(to: to, programme: id(pick(["culture", "mobilite"])), amount: random.next() % 300)))
                case 8:
                    // Garbage, forgeries and replays.
                    if random.next() % 2 == 0 {
                        commands.append(random.bytes(Int(random.next() % 200)))
                    } else if let previous = commands.last {
                        commands.append(previous)
                    }
                default:
                    let tx = f.partnerTx("tri", .attribute(programme: id("recyclage"), account: LedgerFixture.citizen(citizen).publicKey, units: 1, evidence: .zero),
                                         key: LedgerFixture.key("thief"))
                    commands.append(tx)
                }
            }
            return commands
        }
    }

    func checkInvariants(_ f: LedgerFixture, citizens: Int) {
        let ledger = f.ledger
        var live: Amount = 0
        var liveByProgramme: [Identifier: Amount] = [:]
        for citizen in 0..<citizens {
            for lot in ledger.account(LedgerFixture.citizen(citizen).publicKey).lots {
                live += lot.amount
                liveByProgramme[lot.programme, default: 0] += lot.amount
                #expect(lot.amount > 0)
            }
        }
        let totals = ledger.meta.totals
        #expect(totals.issued == live + totals.redeemed + totals.expired + totals.sunk, "conservation at height \(ledger.height)")
        for programmeID in ledger.meta.programmes {
            guard let programme = ledger.programme(programmeID) else { continue }
            #expect(programme.totals.live == liveByProgramme[programmeID] ?? 0, "\(programmeID) at height \(ledger.height)")
            #expect(programme.totals.issued <= programme.budget)
            for citizen in 0..<citizens {
                let account = LedgerFixture.citizen(citizen).publicKey
                if let usage = ledger.usage(account, programmeID) { #expect(usage.amount <= programme.capPerAccount) }
                #expect(ledger.account(account).balance(in: programmeID) <= programme.walletCeiling)
            }
        }
        for epoch in 0..<ledger.meta.epoch {
            let nets = ledger.partnerIDs.compactMap { ledger.statement(epoch: epoch, partner: $0)?.net }
            #expect(nets.reduce(0, +) == 0, "net positions of epoch \(epoch)")
            let settled = ledger.settlements(epoch: epoch).reduce(Int64(0)) { $0 + Int64($1.amount) }
            #expect(settled >= 0)
        }
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func randomHistoriesKeepEveryInvariantAndReplayIdentically(seed: UInt64) throws {
        var f = LedgerFixture(epochLength: 7)
        let genesisRoot = f.ledger.stateRoot
        var traffic = Traffic(random: SplitMix64(seed: seed))
        var blocks: [[[UInt8]]] = []
        var roots: [SHA256Digest] = []
        var applied = 0, rejected = 0
        for _ in 0..<40 {
            let block = traffic.block(&f)
            let outcome = f.ledger.execute(block)
            for result in outcome.results { if result == .applied { applied += 1 } else { rejected += 1 } }
            blocks.append(block)
            roots.append(outcome.stateRoot)
            checkInvariants(f, citizens: traffic.citizens)
            checkReports(f.ledger)
        }
        #expect(f.ledger.meta.epoch >= 5)
        #expect(applied > 500 && rejected > 300, "applied \(applied), rejected \(rejected)")

        // The same blocks from genesis give the same roots.
        var replay = LedgerFixture(epochLength: 7)
        for (index, block) in blocks.enumerated() {
            #expect(replay.ledger.execute(block).stateRoot == roots[index])
        }

        // A store whose tree is updated every 5 blocks and at blocks of fewer than 40
        // transactions (as a node's: at its checkpoints, and at every small block) gives
        // the same roots there, and keeps the last one in between, deletions, epoch closes
        // and keys written again in several blocks included.
        var sparse = try Ledger.create(try LedgerFixture.genesisFile(epochLength: 7).validated(), in: EveryFewBlocks(interval: 5, below: 40))
        var rooted = 0, deferred = 0
        for (index, block) in blocks.enumerated() {
            let outcome = sparse.execute(block)
            let height = index + 1
            let computed = height % 5 == 0 || block.count < 40
            if computed { rooted = height } else { deferred += 1 }
            #expect(outcome.rootComputed == computed && sparse.rootHeight == UInt64(rooted))
            #expect(outcome.stateRoot == (rooted == 0 ? genesisRoot : roots[rooted - 1]), "height \(height)")
            #expect(outcome.recordedStateRoot == (computed ? roots[index] : .zero))
        }
        #expect(deferred >= 10, "\(deferred) blocks deferred their update")
        #expect(sparse.store.memory.valueCount == f.ledger.store.valueCount && sparse.store.memory.pageCount == f.ledger.store.pageCount)

        // Proofs for random accounts, present or not, against the final root.
        let root = f.ledger.stateRoot
        for citizen in 0..<traffic.citizens + 5 {
            let key = StateKeys.account(LedgerFixture.citizen(citizen).publicKey)
            let (value, proof) = f.ledger.proof(key)
            if let value {
                try proof.verifyInclusion(key: key, value: value, root: root)
                var altered = value
                altered[altered.count - 1] ^= 1
                #expect(throws: StateProofError.self) { try proof.verifyInclusion(key: key, value: altered, root: root) }
            } else {
                try proof.verifyAbsence(key: key, root: root)
            }
        }
    }
}

/// A store in memory whose tree the ledger updates every `interval` blocks and at blocks
/// of fewer than `below` transactions.
struct EveryFewBlocks: StateStore {
    var memory = MemoryStateStore()
    let interval: UInt64, below: Int
    func updatesTree(atHeight height: UInt64, transactions: Int) -> Bool { height % interval == 0 || transactions < below }
    var root: SHA256Digest { memory.root }
    func value(_ key: StateKey) -> [UInt8]? { memory.value(key) }
    func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? { memory.treePage(root, depth: depth) }
    mutating func commit(_ batch: StateBatch) { memory.commit(batch) }
}
