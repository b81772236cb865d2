import CalissonCrypto
import Wire

/// A key of the authenticated state: a tagged hash of the record's namespace and id, so
/// keys spread evenly over the tree and a record's position reveals nothing about it.
public typealias StateKey = Bytes32

/// A node of the sparse Merkle tree, stored by its hash.
public enum TreeNode: Hashable, Sendable {
    /// Two children; an empty child has the hash `.zero`.
    case branch(left: SHA256Digest, right: SHA256Digest)
    /// The only key below this point, with its value's hash.
    case leaf(key: StateKey, valueHash: SHA256Digest)
}

/// The tree's unit of storage: a node at a depth that is a multiple of
/// `StateTree.pageDepth` (the page's root) with its descendants less than `pageDepth`
/// levels below it. The children at the next such depth are other pages, named by hash
/// in this one. A store reads and writes whole pages: an update of k keys in a tree of
/// n keys touches about k · log2(n) / 4 pages instead of k · log2(n) nodes, and the
/// root and proofs are those of the binary tree, whatever the layout.
public struct TreePage: Sendable, Equatable {
    /// The hash of the page's root node (a leaf, or a branch).
    public let root: SHA256Digest
    /// The page's nodes with their hashes (at most 31: a few dozen comparisons find one,
    /// cheaper than a dictionary per page).
    public let entries: [(hash: SHA256Digest, node: TreeNode)]

    public init(root: SHA256Digest, entries: [(hash: SHA256Digest, node: TreeNode)]) {
        self.root = root
        self.entries = entries
    }

    public init(root: SHA256Digest, nodes: [SHA256Digest: TreeNode]) {
        self.init(root: root, entries: nodes.map { ($0.key, $0.value) })
    }

    /// The node of this page with this hash.
    public func node(_ hash: SHA256Digest) -> TreeNode? {
        entries.first { $0.hash == hash }?.node
    }

    /// The page's nodes by hash.
    public var nodes: [SHA256Digest: TreeNode] { Dictionary(entries, uniquingKeysWith: { first, _ in first }) }

    public static func == (lhs: TreePage, rhs: TreePage) -> Bool { lhs.root == rhs.root && lhs.nodes == rhs.nodes }

    /// The page's bytes: its nodes in preorder, a tag each (0 an empty child, 1 a branch,
    /// 2 a leaf with its key and value hash); the branches of the last level name their
    /// children (pages) by hash. No hash of a node inside the page is stored: reading it
    /// back recomputes them, so a page cannot name a root it does not hash to.
    public func encoded() -> [UInt8] {
        var writer = WireWriter(reservingCapacity: 64 * entries.count)
        encode(root, level: 0, into: &writer)
        return writer.bytes
    }

    private func encode(_ hash: SHA256Digest, level: Int, into writer: inout WireWriter) {
        guard hash != .zero, let node = node(hash) else {
            precondition(hash == .zero, "a page's node \(hash.hex) is missing from it")
            writer.write(UInt8(0))
            return
        }
        switch node {
        case .leaf:
            node.encode(to: &writer)  // a leaf is written as on its own: tag 2, key, value hash
        case let .branch(left, right):
            writer.write(UInt8(1))
            if level + 1 < StateTree.pageDepth {
                encode(left, level: level + 1, into: &writer)
                encode(right, level: level + 1, into: &writer)
            } else {
                writer.write(left)
                writer.write(right)
            }
        }
    }

    /// Decodes a page and hashes its nodes. The caller compares `root` with the hash it
    /// asked for.
    public init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = WireReader(bytes)
        var entries: [(hash: SHA256Digest, node: TreeNode)] = []
        let root = try Self.decode(&reader, level: 0, into: &entries)
        try reader.expectEnd()
        guard root != .zero else { throw .invalidValue(field: "treePage.root", offset: 0, reason: "an empty page") }
        self.init(root: root, entries: entries)
    }

    private static func decode(_ reader: inout WireReader, level: Int, into nodes: inout [(hash: SHA256Digest, node: TreeNode)]) throws(WireError) -> SHA256Digest {
        let offset = reader.offset
        let node: TreeNode
        switch try reader.readUInt8("treePage.node") {
        case 0 where level > 0:
            return .zero
        case 1:
            let left: SHA256Digest, right: SHA256Digest
            if level + 1 < StateTree.pageDepth {
                left = try decode(&reader, level: level + 1, into: &nodes)
                right = try decode(&reader, level: level + 1, into: &nodes)
            } else {
                left = try SHA256Digest(from: &reader)
                right = try SHA256Digest(from: &reader)
            }
            guard left != .zero || right != .zero else { throw .invalidValue(field: "treePage.node", offset: offset, reason: "a branch with no child") }
            node = .branch(left: left, right: right)
        case 2:
            let key = try StateKey(from: &reader)
            node = .leaf(key: key, valueHash: try SHA256Digest(from: &reader))
        case let raw:
            throw .unknownKind(field: "treePage.node", offset: offset, raw: UInt64(raw))
        }
        let hash = node.hash
        nodes.append((hash, node))
        return hash
    }
}

/// Where the tree's pages live: in memory here, in SQLite for a node (Storage).
public protocol TreePageSource {
    /// The page whose root node has this hash, at `depth` in the tree (a multiple of
    /// `StateTree.pageDepth`: a store may cache the upper pages), nil if there is none.
    func treePage(_ root: SHA256Digest, depth: Int) -> TreePage?
}

extension TreeNode {
    /// The node's hash: its address in the tree.
    public var hash: SHA256Digest {
        switch self {
        case let .branch(left, right): StateTree.branchHash(left, right)
        case let .leaf(key, valueHash): StateTree.leafHash(key: key, valueHash: valueHash)
        }
    }
}

/// The authenticated state: a compact binary sparse Merkle tree over 256-bit keys.
///
/// A key's path is its bits, most significant first. A subtree holding one key is that
/// key's leaf, wherever the paths part; an empty subtree hashes to zero. So a tree of n
/// random keys is about log2(n) deep, an update touches only the paths of the keys it
/// changes (cost O(k log n) for k keys), and the shape is a function of the key set
/// alone: the same state gives the same root whatever the order of updates.
///
///     leaf   = H("calisson/state/leaf/v1" tag, key || SHA-256-tagged(value))
///     branch = MerkleTree.nodeHash(left, right)   (the Merkle node kernel)
///
/// Leaves and branches use different tags, so no leaf can pass for a branch. Proofs
/// (`StateProof`) show inclusion or absence in O(log n) hashes. Stores keep the tree in
/// pages of four levels (`TreePage`).
public enum StateTree {
    static let leafTag = TaggedHasher(tag: "calisson/state/leaf/v1")
    static let valueTag = TaggedHasher(tag: "calisson/state/value/v1")
    public static let depthMax = 256
    /// The levels of one page: a page is a 16-ary node of the tree.
    public static let pageDepth = 4

    public static func valueHash(_ value: [UInt8]) -> SHA256Digest { valueTag.hash(value) }

    public static func leafHash(key: StateKey, valueHash: SHA256Digest) -> SHA256Digest {
        var hasher = leafTag.hasher()
        hasher.update(key)
        hasher.update(valueHash)
        return hasher.finalize()
    }

    static func branchHash(_ left: SHA256Digest, _ right: SHA256Digest) -> SHA256Digest {
        MerkleTree.nodeHash(left, right)
    }

    static func bit(_ key: StateKey, _ depth: Int) -> Bool {
        key.withUnsafeBytes { ($0[depth >> 3] >> (7 - UInt8(depth & 7))) & 1 == 1 }
    }

    /// The result of applying a batch: the new root, the pages created, and the roots of
    /// the pages that are no longer reachable (a store keeping only the latest state
    /// deletes them).
    public struct Update: Sendable {
        public var root: SHA256Digest
        public var created: [SHA256Digest: TreePage] = [:]
        /// The depth of each page created.
        public var depths: [SHA256Digest: Int] = [:]
        public var replaced: [SHA256Digest] = []

        init(root: SHA256Digest, created: [SHA256Digest: TreePage] = [:], depths: [SHA256Digest: Int] = [:], replaced: [SHA256Digest] = []) {
            self.root = root
            self.created = created
            self.depths = depths
            self.replaced = replaced
        }

        /// The tree at `root` as it is: no page made or replaced.
        public static func unchanged(_ root: SHA256Digest) -> Update { Update(root: root) }
    }

    /// Applies `changes` (key → new value hash, nil to delete) to the tree at `root`.
    public static func update(
        root: SHA256Digest, changes: [(key: StateKey, valueHash: SHA256Digest?)], nodes: some TreePageSource
    ) -> Update {
        let sorted = changes.sorted { $0.key < $1.key }
        guard !sorted.isEmpty else { return Update(root: root) }
        var updater = Updater(source: nodes, changes: sorted.count)
        let newRoot = updater.update(root, sorted[...])
        return Update(root: newRoot, created: updater.pages, depths: updater.depths, replaced: updater.replacedPages)
    }

    /// A subtree after an update's changes (outside the generic updater, whose nested
    /// types would be generic too and their metadata looked up at run time).
    struct UpdatedSubtree {
        typealias Entries = [(hash: SHA256Digest, node: TreeNode)]
        var hash: SHA256Digest
        /// Its node when it is a single leaf (which moves up when its sibling is empty);
        /// nil too for a stored page kept unread (`Updater.kept`).
        var leaf: TreeNode?
        /// Made by this update, not a stored subtree kept as it was.
        var made: Bool
        /// For a subtree made at a page depth: its page's nodes. The parent writes the
        /// page, unless the subtree is a leaf that moves up into the parent's page.
        var page: Entries?

        static var empty: UpdatedSubtree { UpdatedSubtree(hash: .zero, leaf: nil, made: true, page: nil) }
    }

    /// Walks the tree down the changes' paths and back up, hashing the nodes made. Each
    /// page is assembled on the way up, from the nodes made in it and those of the old
    /// page kept beside them: no map of the nodes made, so no hashing of 32-byte keys per
    /// node (the update was a sixth of a node's CPU with one; Docs/BENCHMARKS.md).
    private struct Updater<Source: TreePageSource> {
        typealias Entries = UpdatedSubtree.Entries
        typealias Changes = ArraySlice<(key: StateKey, valueHash: SHA256Digest?)>
        typealias Subtree = UpdatedSubtree

        let source: Source
        var pages: [SHA256Digest: TreePage] = [:]
        var depths: [SHA256Digest: Int] = [:]
        var replacedPages: [SHA256Digest] = []

        init(source: Source, changes: Int) {
            self.source = source
            pages.reserveCapacity(2 * changes)
            depths.reserveCapacity(2 * changes)
        }

        /// The stored page holding the node at `depth` with this hash: its own page at a
        /// page depth, else `page` (the one the walk came through).
        func page(of hash: SHA256Digest, depth: Int, _ page: TreePage?) -> TreePage? {
            guard hash != .zero else { return nil }
            guard depth % pageDepth == 0 else { return page }
            guard let own = source.treePage(hash, depth: depth), own.root == hash else { return nil }
            return own
        }

        /// Runs `body` with the nodes of the page that holds `depth`: a new list at a page
        /// depth (kept in the subtree for its parent), else the caller's.
        mutating func inPage(
            _ depth: Int, _ entries: inout Entries, _ body: (inout Self, inout Entries) -> Subtree
        ) -> Subtree {
            guard depth % pageDepth == 0 else { return body(&self, &entries) }
            var own: Entries = []
            var subtree = body(&self, &own)
            if subtree.hash != .zero { subtree.page = own }
            return subtree
        }

        /// The whole update: the new root, its page written.
        mutating func update(_ root: SHA256Digest, _ changes: Changes) -> SHA256Digest {
            var none: Entries = []
            let subtree = apply(root, depth: 0, changes, page: nil, into: &none)
            write(subtree, depth: 0)
            return subtree.hash
        }

        mutating func apply(_ hash: SHA256Digest, depth: Int, _ changes: Changes, page: TreePage?, into entries: inout Entries) -> Subtree {
            inPage(depth, &entries) { updater, entries in
                updater.applyHere(hash, depth: depth, changes, page: page, into: &entries)
            }
        }

        private mutating func applyHere(
            _ hash: SHA256Digest, depth: Int, _ changes: Changes, page: TreePage?, into entries: inout Entries
        ) -> Subtree {
            let here = self.page(of: hash, depth: depth, page)
            switch here?.node(hash) {
            case nil:
                return buildHere(depth: depth, changes.compactMap { change in change.valueHash.map { (change.key, $0) } }[...], into: &entries)
            case let .leaf(key, valueHash):
                // Re-insert the existing leaf among the changes unless they change it.
                retire(hash, depth: depth)
                var inserted = changes.compactMap { change in change.valueHash.map { (change.key, $0) } }
                if !changes.contains(where: { $0.key == key }) {
                    let index = inserted.firstIndex { $0.0 > key } ?? inserted.endIndex
                    inserted.insert((key, valueHash), at: index)
                }
                return buildHere(depth: depth, inserted[...], into: &entries)
            case let .branch(left, right):
                retire(hash, depth: depth)
                let split = changes.firstIndex { bit($0.key, depth) } ?? changes.endIndex
                let newLeft = changes.startIndex < split
                    ? apply(left, depth: depth + 1, changes[..<split], page: here, into: &entries)
                    : kept(left, depth: depth + 1, here, into: &entries)
                let newRight = split < changes.endIndex
                    ? apply(right, depth: depth + 1, changes[split...], page: here, into: &entries)
                    : kept(right, depth: depth + 1, here, into: &entries)
                return join(newLeft, newRight, depth: depth, into: &entries)
            }
        }

        /// A stored node leaves the tree: at a page depth, its page is replaced (any
        /// change below a page changes its root); inside a page, so is the page's root.
        mutating func retire(_ hash: SHA256Digest, depth: Int) {
            if depth % pageDepth == 0 { replacedPages.append(hash) }
        }

        /// An unchanged subtree, with its node if it is a leaf. Inside a page, its nodes
        /// are copied from the old page into the new one; at a page depth it stays the
        /// stored page it is, not read: whether it is a single leaf matters only if its
        /// sibling becomes empty (`join` reads it then). Reading every kept sibling page
        /// was half the pages an update read, and past 65,536 keys most of them came from
        /// the database.
        func kept(_ hash: SHA256Digest, depth: Int, _ page: TreePage?, into entries: inout Entries) -> Subtree {
            guard hash != .zero else { return .empty }
            if depth % pageDepth == 0 { return Subtree(hash: hash, leaf: nil, made: false, page: nil) }
            guard let page, let node = page.node(hash) else {
                preconditionFailure("node \(hash.hex) of a kept subtree is missing from its page")
            }
            copy(hash, node, depth: depth, from: page, into: &entries)
            if case .leaf = node { return Subtree(hash: hash, leaf: node, made: false, page: nil) }
            return Subtree(hash: hash, leaf: nil, made: false, page: nil)
        }

        /// A kept node and its descendants in the same page.
        private func copy(_ hash: SHA256Digest, _ node: TreeNode, depth: Int, from page: TreePage, into entries: inout Entries) {
            entries.append((hash, node))
            guard case let .branch(left, right) = node, (depth + 1) % pageDepth != 0 else { return }
            copyChild(left, depth: depth + 1, from: page, into: &entries)
            copyChild(right, depth: depth + 1, from: page, into: &entries)
        }

        private func copyChild(_ hash: SHA256Digest, depth: Int, from page: TreePage, into entries: inout Entries) {
            guard hash != .zero else { return }
            guard let node = page.node(hash) else { preconditionFailure("node \(hash.hex) is missing from its page") }
            copy(hash, node, depth: depth, from: page, into: &entries)
        }

        /// A branch of two subtrees, collapsed when one is empty and the other a leaf (the
        /// leaf moves up: the shape depends on the keys only).
        mutating func join(_ left: Subtree, _ right: Subtree, depth: Int, into entries: inout Entries) -> Subtree {
            if left.hash == .zero && right.hash == .zero { return .empty }
            if left.hash == .zero, let leaf = leaf(of: right, depth: depth + 1) { return moveUp(right, leaf, to: depth, into: &entries) }
            if right.hash == .zero, let leaf = leaf(of: left, depth: depth + 1) { return moveUp(left, leaf, to: depth, into: &entries) }
            return branch(left, right, depth: depth, into: &entries)
        }

        /// The subtree's node if it is a single leaf; for a stored page kept unread
        /// (`kept`), read from its page.
        func leaf(of subtree: Subtree, depth: Int) -> TreeNode? {
            if let leaf = subtree.leaf { return leaf }
            guard !subtree.made, depth % pageDepth == 0, let node = page(of: subtree.hash, depth: depth, nil)?.node(subtree.hash),
                case .leaf = node
            else { return nil }
            return node
        }

        /// A new branch: the pages made below it are written, and it joins its page.
        mutating func branch(_ left: Subtree, _ right: Subtree, depth: Int, into entries: inout Entries) -> Subtree {
            write(left, depth: depth + 1)
            write(right, depth: depth + 1)
            let node = TreeNode.branch(left: left.hash, right: right.hash)
            let hash = node.hash
            entries.append((hash, node))
            return Subtree(hash: hash, leaf: nil, made: true, page: nil)
        }

        /// A leaf now one level higher: its depth decides which page holds it.
        mutating func moveUp(_ subtree: Subtree, _ leaf: TreeNode, to depth: Int, into entries: inout Entries) -> Subtree {
            if (depth + 1) % pageDepth == 0 {
                // It was a page of its own (made here and not written, or stored and now
                // replaced); it joins this page. Inside a page it is in it already.
                if !subtree.made { replacedPages.append(subtree.hash) }
                entries.append((subtree.hash, leaf))
            }
            return Subtree(hash: subtree.hash, leaf: leaf, made: true, page: nil)
        }

        /// A fresh subtree of sorted, distinct entries.
        mutating func build(depth: Int, _ inserted: ArraySlice<(StateKey, SHA256Digest)>, into entries: inout Entries) -> Subtree {
            inPage(depth, &entries) { updater, entries in updater.buildHere(depth: depth, inserted, into: &entries) }
        }

        private mutating func buildHere(depth: Int, _ inserted: ArraySlice<(StateKey, SHA256Digest)>, into entries: inout Entries) -> Subtree {
            if inserted.isEmpty { return .empty }
            if inserted.count == 1, let only = inserted.first {
                let leaf = TreeNode.leaf(key: only.0, valueHash: only.1)
                let hash = leaf.hash
                entries.append((hash, leaf))
                return Subtree(hash: hash, leaf: leaf, made: true, page: nil)
            }
            precondition(depth < StateTree.depthMax, "two distinct keys share every bit")
            let split = inserted.firstIndex { bit($0.0, depth) } ?? inserted.endIndex
            let left = build(depth: depth + 1, inserted[..<split], into: &entries)
            let right = build(depth: depth + 1, inserted[split...], into: &entries)
            return branch(left, right, depth: depth, into: &entries)
        }

        /// Writes the page of a subtree made at a page depth.
        mutating func write(_ subtree: Subtree, depth: Int) {
            guard let nodes = subtree.page, subtree.made, subtree.hash != .zero else { return }
            pages[subtree.hash] = TreePage(root: subtree.hash, entries: nodes)
            depths[subtree.hash] = depth
        }
    }

    /// The proof for `key` in the tree at `root`: inclusion if it holds a value, else absence.
    public static func proof(for key: StateKey, root: SHA256Digest, nodes: some TreePageSource) -> StateProof {
        var siblings: [SHA256Digest] = []
        var hash = root
        var depth = 0
        var page: TreePage?
        while true {
            if depth % pageDepth == 0 { page = hash == .zero ? nil : nodes.treePage(hash, depth: depth) }
            guard hash != .zero, let node = page?.node(hash) else { return StateProof(siblings: siblings, terminal: nil) }
            switch node {
            case let .leaf(leafKey, valueHash):
                return StateProof(siblings: siblings, terminal: .init(key: leafKey, valueHash: valueHash))
            case let .branch(left, right):
                let right_ = bit(key, depth)
                siblings.append(right_ ? left : right)
                hash = right_ ? right : left
                depth += 1
            }
        }
    }
}

/// Why a state proof does not prove what was asked.
public enum StateProofError: Error, Equatable, Sendable {
    case tooDeep(Int)
    case rootMismatch
    /// Inclusion was asked but the proof ends elsewhere (or the reverse).
    case wrongTerminal(String)
}

/// A path from the root to where `key` is or would be: the siblings top-down, and the
/// leaf found there (nil: an empty subtree). Verified from the root alone.
public struct StateProof: Hashable, Sendable, WireCodable {
    public struct Leaf: Hashable, Sendable {
        public let key: StateKey
        public let valueHash: SHA256Digest
        public init(key: StateKey, valueHash: SHA256Digest) {
            self.key = key
            self.valueHash = valueHash
        }
    }

    public let siblings: [SHA256Digest]
    public let terminal: Leaf?

    public init(siblings: [SHA256Digest], terminal: Leaf?) {
        self.siblings = siblings
        self.terminal = terminal
    }

    func root(for key: StateKey) throws(StateProofError) -> SHA256Digest {
        guard siblings.count <= StateTree.depthMax else { throw .tooDeep(siblings.count) }
        var hash = terminal.map { StateTree.leafHash(key: $0.key, valueHash: $0.valueHash) } ?? .zero
        if let terminal, terminal.key != key {
            // Absence shown by another key's leaf: it must sit on our path.
            for depth in 0..<siblings.count where StateTree.bit(terminal.key, depth) != StateTree.bit(key, depth) {
                throw .wrongTerminal("the leaf found is not on the key's path")
            }
        }
        for depth in stride(from: siblings.count - 1, through: 0, by: -1) {
            hash = StateTree.bit(key, depth) ? StateTree.branchHash(siblings[depth], hash) : StateTree.branchHash(hash, siblings[depth])
        }
        return hash
    }

    /// Proves that `key` holds `value` in the state whose root is `root`.
    public func verifyInclusion(key: StateKey, value: [UInt8], root: SHA256Digest) throws(StateProofError) {
        guard let terminal, terminal.key == key else { throw .wrongTerminal("no leaf for this key") }
        guard terminal.valueHash == StateTree.valueHash(value) else { throw .rootMismatch }
        guard try self.root(for: key) == root else { throw .rootMismatch }
    }

    /// Proves that `key` holds nothing in the state whose root is `root`.
    public func verifyAbsence(key: StateKey, root: SHA256Digest) throws(StateProofError) {
        if let terminal, terminal.key == key { throw .wrongTerminal("the key is present") }
        guard try self.root(for: key) == root else { throw .rootMismatch }
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeArray(siblings)
        writer.write(terminal != nil)
        if let terminal {
            writer.write(terminal.key)
            writer.write(terminal.valueHash)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        siblings = try reader.readArray("proof.siblings", maximum: StateTree.depthMax, of: SHA256Digest.self)
        if try reader.readBool("proof.terminal") {
            let key = try StateKey(from: &reader)
            terminal = Leaf(key: key, valueHash: try SHA256Digest(from: &reader))
        } else {
            terminal = nil
        }
    }
}

/// The state in memory: values by key, and the tree's pages by root hash (only the
/// latest tree: replaced pages are dropped). The Storage module provides the SQLite one.
public struct MemoryStateStore: StateStore, TreePageSource, Sendable {
    public private(set) var root: SHA256Digest = .zero
    var values: [StateKey: [UInt8]] = [:]
    var pages: [SHA256Digest: TreePage] = [:]

    public init() {}

    public func value(_ key: StateKey) -> [UInt8]? { values[key] }
    public func treePage(_ root: SHA256Digest) -> TreePage? { pages[root] }
    public func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? { pages[root] }
    public var valueCount: Int { values.count }
    public var pageCount: Int { pages.count }

    public mutating func commit(_ batch: StateBatch) {
        for (key, value) in batch.values { values[key] = value }
        for hash in batch.tree.replaced { pages[hash] = nil }
        for (hash, page) in batch.tree.created { pages[hash] = page }
        root = batch.tree.root
    }
}

/// One block's writes: the values (nil deletes) and the tree update they make.
public struct StateBatch: Sendable {
    public let values: [(key: StateKey, value: [UInt8]?)]
    public let tree: StateTree.Update
    /// Whether the tree was updated at this block (`StateStore.updatesTree`): if not,
    /// `tree` is the previous root with no page made or replaced.
    public let rootComputed: Bool

    public init(values: [(key: StateKey, value: [UInt8]?)], tree: StateTree.Update, rootComputed: Bool = true) {
        self.values = values
        self.tree = tree
        self.rootComputed = rootComputed
    }
}

/// The store protocol the ledger runs on. `commit` must be atomic: after a crash the
/// store holds the state before or after the batch, never part of it.
public protocol StateStore: TreePageSource {
    var root: SHA256Digest { get }
    func value(_ key: StateKey) -> [UInt8]?
    mutating func commit(_ batch: StateBatch)
    /// Whether the ledger updates the state tree at the block of `height` that has
    /// `transactions` transactions, with every value written since it last did (the
    /// default: at every block). At other blocks the values change and the tree, hence
    /// `root`, stays as it was. A node defers the update to its checkpoint heights, the
    /// only ones whose root the consensus signs, when its blocks are large (under load),
    /// and updates at every block otherwise (Docs/STORAGE.md, "The root at checkpoints").
    func updatesTree(atHeight height: UInt64, transactions: Int) -> Bool
}

extension StateStore {
    public func updatesTree(atHeight height: UInt64, transactions: Int) -> Bool { true }

    /// The rule of a store that writes its state at the multiples of `stateInterval`: the
    /// tree is updated there (the state written is always one whose root was computed)
    /// and at blocks of fewer than `everyBlockBelow` transactions.
    public static func updatesTree(atHeight height: UInt64, transactions: Int, stateInterval: UInt64, everyBlockBelow: Int) -> Bool {
        height % max(1, stateInterval) == 0 || transactions < everyBlockBelow
    }
}

extension TreeNode: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .branch(left, right):
            writer.write(UInt8(1))
            writer.write(left)
            writer.write(right)
        case let .leaf(key, valueHash):
            writer.write(UInt8(2))
            writer.write(key)
            writer.write(valueHash)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("treeNode.kind") {
        case 1:
            let left = try SHA256Digest(from: &reader)
            self = .branch(left: left, right: try SHA256Digest(from: &reader))
        case 2:
            let key = try StateKey(from: &reader)
            self = .leaf(key: key, valueHash: try SHA256Digest(from: &reader))
        case let raw: throw .unknownKind(field: "treeNode.kind", offset: offset, raw: UInt64(raw))
        }
    }
}
