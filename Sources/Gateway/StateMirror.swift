import CalissonCrypto
import Ledger
import LightClient
import Synchronization
import Wire

/// Why a mirror's sync stopped. The mirror keeps the state it had and the reads go to the
/// nodes until a later sync succeeds.
public enum MirrorSyncError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A node's page or value does not hash to the name the certified tree gives it.
    case untrusted(source: String, String)
    /// The node no longer holds part of the checkpoint's state (it serves a newer one).
    case moved(source: String, height: UInt64)
    /// The node answered something other than what was asked, or nothing for too long.
    case unavailable(source: String, String)
    /// The certified state has more pages than the mirror may hold.
    case tooLarge(pages: Int, max: Int)

    public var description: String {
        switch self {
        case let .untrusted(source, reason): return "\(source) cannot be trusted: \(reason)"
        case let .moved(source, height): return "\(source) no longer holds checkpoint \(height)'s state (it serves a newer one)"
        case let .unavailable(source, reason): return "\(source): \(reason)"
        case let .tooLarge(pages, max): return "the certified state has more than \(max) tree pages (\(pages) reached): the gateway reads from the nodes"
        }
    }
}

/// The state at the newest certified checkpoint, copied into the gateway and checked as it
/// is copied, so that a verified read is answered here, without a round trip to a node
/// whose loop may be executing or writing a block (Docs/API.md, "The verified copy").
///
/// The copy follows the checkpoints a node certifies: at each newer one, it walks the
/// certified tree from its root, asking the node only for the pages it does not hold (a page
/// is named by its hash and fixes everything below it, so a page held means its whole
/// subtree is), each page decoded and hashed to the name asked for, each new leaf's value
/// hashed to the leaf's value hash; then, in one step, the pages of the previous tree not
/// in the new one and the values of keys no longer in it are dropped. A read builds the
/// record's Merkle proof from these pages and the answer a node would give
/// (`ClientResponse.certifiedState`), which the pool then checks as it checks a node's
/// (`CertifiedReader`: the certificate, a quorum of the validators in force; the proof
/// against its root). A node that lies yields a failed sync, named and logged, never a
/// page or a value in the copy.
///
/// Bounded: past `pagesMax` tree pages, the copy is dropped and the reads go to the nodes.
public final class StateMirror: Sendable {
    /// The checkpoint the copy is at, and what checked it.
    public struct Checkpoint: Sendable {
        public let height: UInt64
        public let root: SHA256Digest
        public let certificate: [UInt8]
        /// The validators that verified the certificate (the node's, followed from the genesis).
        public let trusted: TrustedValidators
        /// The node the state was copied from.
        public let source: String

        public init(height: UInt64, root: SHA256Digest, certificate: [UInt8], trusted: TrustedValidators, source: String) {
            self.height = height
            self.root = root
            self.certificate = certificate
            self.trusted = trusted
            self.source = source
        }
    }

    /// What reads see: the copy at its checkpoint. Published whole once a sync completes,
    /// sharing its storage with the sync's own copy (copy on write), so that a read takes
    /// the lock only to take it, and a sync's work never holds a read up. Pages are kept as
    /// the node sent them (checked when fetched) and decoded when a read or a sync walks
    /// them: a decoded page holds each node's hash beside it, about three times the bytes.
    private struct Published: Sendable {
        var pages: [SHA256Digest: [UInt8]] = [:]
        var values: [StateKey: [UInt8]] = [:]
        var checkpoint: Checkpoint?
    }
    private let published = Mutex(Published())

    /// The sync's side (one sync at a time: `followMirror`'s task).
    private struct Work {
        var copy = Published()
        /// Pages fetched by a sync that did not finish, as sent (checked): reused by the next
        /// one (a page's bytes never change), dropped once a sync completes.
        var staged: [SHA256Digest: [UInt8]] = [:]
        /// Values fetched by a sync that did not finish, by their hash (checked): reused in
        /// the same way. Without them a copy far behind under load never caught up: each
        /// sync fetched the new checkpoint's pages, then the values, tens of thousands, and
        /// the node moved on before the last (45 syncs failed in a row, measured).
        var stagedValues: [SHA256Digest: [UInt8]] = [:]
        var syncs = 0
        var pagesFetched = 0
        var valuesFetched = 0
        var failures = 0
        var lastError: String?
    }
    private let work = Mutex(Work())
    /// Tree pages the copy may hold, at most (0: no copy).
    public let pagesMax: Int
    /// `calisson-gateway run --mirror-pages-max`'s default and largest value.
    public static let pagesMaxDefault = 100_000
    public static let pagesMaxLimit = 1 << 24
    /// Items asked per request (a node answers at most `ClientRequest.snapshotItemsMax`).
    let chunk: Int
    /// Requests sent together (pipelined on one connection, answered in one turn of the
    /// node's loop): a sync under load waits for fewer turns of a busy node.
    let pipelined: Int
    /// Empty answers in a row (the node's snapshot budget spent on others) before a sync gives up.
    let emptyAnswersMax: Int

    public init(pagesMax: Int, chunk: Int = 256, pipelined: Int = 4, emptyAnswersMax: Int = 100) {
        self.pagesMax = max(0, pagesMax)
        self.chunk = min(max(1, chunk), ClientRequest.snapshotItemsMax)
        self.pipelined = min(max(1, pipelined), 16)
        self.emptyAnswersMax = max(1, emptyAnswersMax)
    }

    /// The checkpoint the copy is at (nil: none yet, or dropped).
    public var checkpoint: Checkpoint? { published.withLock { $0.checkpoint } }

    /// For /metrics: the copy's size and its syncs.
    public var counts: (pages: Int, values: Int, syncs: Int, pagesFetched: Int, valuesFetched: Int, failures: Int) {
        let (pages, values) = published.withLock { ($0.pages.count, $0.values.count) }
        return work.withLock { (pages, values, $0.syncs, $0.pagesFetched, $0.valuesFetched, $0.failures) }
    }

    /// The last sync's failure, if the last sync failed.
    public var lastError: String? { work.withLock { $0.lastError } }

    /// The answer a node serving the copy's checkpoint would give to a certified read of
    /// `key`, with that checkpoint; nil when there is no copy. The caller checks it.
    public func answer(_ key: StateKey) -> (ClientResponse, Checkpoint)? {
        let copy = published.withLock { $0 }
        guard let checkpoint = copy.checkpoint else { return nil }
        let proof = StateTree.proof(for: key, root: checkpoint.root, nodes: Pages(pages: copy.pages))
        var value: [UInt8]?
        if let leaf = proof.terminal, leaf.key == key {
            guard let held = copy.values[key], StateTree.valueHash(held) == leaf.valueHash else { return nil }  // not expected: the nodes answer
            value = held
        }
        return (.certifiedState(height: checkpoint.height, certificate: checkpoint.certificate, value: value, proof: proof), checkpoint)
    }

    private struct Pages: TreePageSource {
        let pages: [SHA256Digest: [UInt8]]
        func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? { pages[root].flatMap { try? TreePage(decoding: $0) } }
    }

    /// A page fetched and checked: decoded for the walk, its bytes for the copy.
    private struct Fetched: Sendable {
        let page: TreePage
        let bytes: [UInt8]
    }

    /// Runs CPU work of a sync (checking a chunk of pages, the last step): `offLoop` runs
    /// it where it holds up no request (the gateway: its pool's own threads).
    public typealias OffLoop = @Sendable (@escaping @Sendable () throws -> Void) async throws -> Void

    /// Brings the copy to `checkpoint` (certified: the caller checked its certificate and
    /// root), asking `ask` (one node, requests pipelined) for what it lacks. On a failure
    /// the copy stays as it was; the pages fetched are kept for the next sync.
    public func sync(
        to checkpoint: Checkpoint, offLoop: OffLoop = { try $0() }, ask: ([ClientRequest]) async throws -> [ClientResponse]
    ) async throws(MirrorSyncError) {
        guard pagesMax > 0 else { return }
        do {
            try await walk(to: checkpoint, offLoop: offLoop, ask: ask)
        } catch {
            let failure = error as? MirrorSyncError ?? .unavailable(source: checkpoint.source, "\(error)")
            let dropped = work.withLock { work -> Bool in
                work.failures += 1
                work.lastError = failure.description
                if work.staged.count > pagesMax { work.staged = [:] }
                if work.stagedValues.count > 2 * pagesMax { work.stagedValues = [:] }
                guard case .tooLarge = failure else { return false }
                work.copy = Published()
                work.staged = [:]
                work.stagedValues = [:]
                return true
            }
            if dropped { published.withLock { $0 = Published() } }
            throw failure
        }
    }

    /// What a walk found: the pages it fetched or reused from `staged`, the held pages the
    /// new tree hangs from (their subtrees are the same in both trees), its leaves.
    private struct Walk: Sendable {
        var fetched: [SHA256Digest: [UInt8]] = [:]
        var shared = Set<SHA256Digest>()
        var leaves: [StateKey: SHA256Digest] = [:]
        var wanted: [StateValueReference] = []
    }

    private func walk(to checkpoint: Checkpoint, offLoop: OffLoop, ask: ([ClientRequest]) async throws -> [ClientResponse]) async throws {
        let source = checkpoint.source
        let root = checkpoint.root
        let (current, rootHeld) = work.withLock { ($0.copy.checkpoint?.height, $0.copy.pages[root] != nil) }
        if let current, current >= checkpoint.height { return }
        let found = Box(Walk())
        var stack: [SHA256Digest] = []
        if root != .zero { if rootHeld { _ = found.value.shared.insert(root) } else { stack.append(root) } }
        var empty = 0
        while !stack.isEmpty {
            let hashes = Array(stack.suffix(chunk * pipelined))
            stack.removeLast(hashes.count)
            var reused: [(SHA256Digest, [UInt8])] = []
            var missing: [SHA256Digest] = []
            work.withLock { work in
                for hash in hashes {
                    if let bytes = work.staged[hash] { reused.append((hash, bytes)) } else { missing.append(hash) }
                }
            }
            var asked: [SHA256Digest] = [], answered: [[UInt8]?] = []
            if !missing.isEmpty {
                // Requests of `chunk` pages, pipelined: the node answers them in one turn.
                let parts = stride(from: 0, to: missing.count, by: chunk).map { Array(missing[$0..<min($0 + chunk, missing.count)]) }
                let responses = try await ask(parts.map { .treePages($0) })
                guard responses.count == parts.count else { throw MirrorSyncError.unavailable(source: source, "not an answer of pages") }
                for (part, response) in zip(parts, responses) {
                    guard case let .treePages(pages) = response, pages.count <= part.count else {
                        throw MirrorSyncError.unavailable(source: source, "not an answer of pages")
                    }
                    stack += part[pages.count...]  // past the answer's size: asked again
                    asked += part.prefix(pages.count)
                    answered += pages
                }
                try await pause(ifEmpty: answered.isEmpty, count: &empty, source: source)
            }
            // Checked and sorted off the loop: each page hashed to its name, then what it
            // names (its leaves' values, the pages below it).
            let requested = asked, replies = answered, earlier = reused
            let below = Box<[SHA256Digest]>([])
            try await offLoop { [self] in
                var pages: [Fetched] = []
                for (hash, bytes) in earlier {
                    // Checked when fetched: it decodes to its name, as then.
                    guard let page = try? TreePage(decoding: bytes), page.root == hash else {
                        throw MirrorSyncError.unavailable(source: source, "a tree page kept from an earlier sync no longer decodes")
                    }
                    pages.append(Fetched(page: page, bytes: bytes))
                }
                var checked: [Fetched] = []
                for (hash, bytes) in zip(requested, replies) {
                    guard let bytes else { throw MirrorSyncError.moved(source: source, height: checkpoint.height) }
                    let page: TreePage
                    do { page = try TreePage(decoding: bytes) } catch {
                        throw MirrorSyncError.untrusted(source: source, "tree page \(hash.hex) does not decode: \(error)")
                    }
                    guard page.root == hash else {
                        throw MirrorSyncError.untrusted(source: source, "the tree page asked as \(hash.hex) hashes to \(page.root.hex)")
                    }
                    checked.append(Fetched(page: page, bytes: bytes))
                    pages.append(checked[checked.count - 1])
                }
                var next: [SHA256Digest] = []
                work.withLock { work in
                    for fetched in checked { work.staged[fetched.page.root] = fetched.bytes }
                    work.pagesFetched += checked.count
                    for fetched in pages {
                        let page = fetched.page
                        found.value.fetched[page.root] = fetched.bytes
                        for entry in page.entries {
                            switch entry.node {
                            case let .leaf(key, valueHash):
                                found.value.leaves[key] = valueHash
                                if work.copy.values[key].map(StateTree.valueHash) != valueHash {
                                    found.value.wanted.append(StateValueReference(key: key, valueHash: valueHash))
                                }
                            case let .branch(left, right):
                                for child in [left, right] where child != .zero && page.node(child) == nil {
                                    if work.copy.pages[child] != nil { found.value.shared.insert(child) } else { next.append(child) }
                                }
                            }
                        }
                    }
                }
                below.value = next
            }
            stack += below.value
            // Every page fetched is in the new tree: past the bound, it cannot fit. (Whether
            // the pages kept and fetched fit is known at the last step; meanwhile the copy
            // and the pages fetched take at most twice the bound.)
            let fetched = found.value.fetched.count
            if fetched > pagesMax { throw MirrorSyncError.tooLarge(pages: fetched, max: pagesMax) }
        }

        // The values kept from a sync that did not finish are not asked again.
        let (kept, wanted) = work.withLock { work -> ([StateKey: [UInt8]], [StateValueReference]) in
            var kept: [StateKey: [UInt8]] = [:], wanted: [StateValueReference] = []
            for reference in found.value.wanted {
                if let value = work.stagedValues[reference.valueHash] { kept[reference.key] = value } else { wanted.append(reference) }
            }
            return (kept, wanted)
        }
        let values = Box<[StateKey: [UInt8]]>(kept)
        var left = wanted[...]
        while !left.isEmpty {
            let taking = left.prefix(chunk * pipelined)
            left = left.dropFirst(taking.count)
            let parts = stride(from: taking.startIndex, to: taking.endIndex, by: chunk).map { Array(taking[$0..<min($0 + chunk, taking.endIndex)]) }
            let responses = try await ask(parts.map { .stateValues($0) })
            guard responses.count == parts.count else { throw MirrorSyncError.unavailable(source: source, "not an answer of values") }
            var asked: [StateValueReference] = [], answered: [[UInt8]?] = [], again: [StateValueReference] = []
            for (part, response) in zip(parts, responses) {
                guard case let .stateValues(found) = response, found.count <= part.count else {
                    throw MirrorSyncError.unavailable(source: source, "not an answer of values")
                }
                asked += part.prefix(found.count)
                answered += found
                again += part[found.count...]  // past the answer's size: asked again
            }
            if !again.isEmpty { left = again[...] + left }
            try await pause(ifEmpty: answered.isEmpty, count: &empty, source: source)
            try await offLoop { [self, asked, answered] in
                var checked: [(StateValueReference, [UInt8])] = []
                var moved = false
                for (reference, value) in zip(asked, answered) {
                    guard let value else {
                        moved = true
                        break
                    }
                    guard StateTree.valueHash(value) == reference.valueHash else {
                        throw MirrorSyncError.untrusted(
                            source: source, "the value of state key \(reference.key.hex) does not hash to its leaf's value hash")
                    }
                    checked.append((reference, value))
                }
                // Kept for the next sync if this one does not finish, those checked before a
                // value the node no longer holds included.
                work.withLock { work in
                    for (reference, value) in checked { work.stagedValues[reference.valueHash] = value }
                }
                if moved { throw MirrorSyncError.moved(source: source, height: checkpoint.height) }
                for (reference, value) in checked { values.value[reference.key] = value }
            }
        }

        // The last step, off the loop: the old tree's pages not in the new one out, the new
        // ones in, then published for the reads.
        let walked = found.value
        let fetchedValues = values.value
        try await offLoop { [self] in
            let copy = try work.withLock { work throws(MirrorSyncError) -> Published in
                // The old tree's pages the new one does not share, and the keys of their leaves.
                var removed: [SHA256Digest] = []
                var dropped: [StateKey] = []
                if let old = work.copy.checkpoint?.root, old != root {
                    var pending = [old]
                    while let hash = pending.popLast() {
                        // Each page was checked when fetched: it decodes.
                        guard !walked.shared.contains(hash), let bytes = work.copy.pages[hash], let page = try? TreePage(decoding: bytes) else { continue }
                        removed.append(hash)
                        for entry in page.entries {
                            switch entry.node {
                            case let .leaf(key, _): dropped.append(key)
                            case let .branch(left, right):
                                for child in [left, right] where child != .zero && page.node(child) == nil { pending.append(child) }
                            }
                        }
                    }
                }
                let size = work.copy.pages.count - removed.count + walked.fetched.count
                guard size <= pagesMax else { throw MirrorSyncError.tooLarge(pages: size, max: pagesMax) }
                for hash in removed { work.copy.pages[hash] = nil }
                // A key whose leaf left with a dropped page is either in a new page or gone.
                for key in dropped where walked.leaves[key] == nil { work.copy.values[key] = nil }
                for (hash, page) in walked.fetched { work.copy.pages[hash] = page }
                for (key, value) in fetchedValues { work.copy.values[key] = value }
                work.copy.checkpoint = checkpoint
                work.staged = [:]
                work.stagedValues = [:]
                work.syncs += 1
                work.valuesFetched += fetchedValues.count
                work.lastError = nil
                return work.copy
            }
            published.withLock { $0 = copy }
        }
    }

    /// A sync's working state between its steps, each of which may run on another thread
    /// (`offLoop`) but never two at once: each is awaited before the next.
    private final class Box<Value>: @unchecked Sendable {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    /// After an answer with no item (the node spends its snapshot budget on others): a short
    /// pause, at most `emptyAnswersMax` in a row.
    private func pause(ifEmpty isEmpty: Bool, count: inout Int, source: String) async throws {
        guard isEmpty else { return count = 0 }
        count += 1
        guard count <= emptyAnswersMax else {
            throw MirrorSyncError.unavailable(source: source, "it answered no page or value \(emptyAnswersMax) times in a row (busy serving others)")
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}
