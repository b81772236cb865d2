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
    }

    /// Applies `changes` (key → new value hash, nil to delete) to the tree at `root`.
    public static func update(
        root: SHA256Digest, changes: [(key: StateKey, valueHash: SHA256Digest?)], nodes: some TreePageSource
    ) -> Update {
        let sorted = changes.sorted { $0.key < $1.key }
        guard !sorted.isEmpty else { return Update(root: root) }
        var updater = Updater(source: nodes, changes: sorted.count)
        let newRoot = updater.apply(root, depth: 0, sorted[...], page: nil).hash
        let (pages, depths) = updater.pages()
        return Update(root: newRoot, created: pages, depths: depths, replaced: updater.replacedPages)
    }

    private struct Updater<Source: TreePageSource> {
        let source: Source
        /// Nodes made by this update, with their depth.
        var created: [SHA256Digest: (node: TreeNode, depth: Int)] = [:]
        /// For each page root made at a position that held a stored page, that page: the
        /// new page keeps the old one's nodes that did not change.
        var oldPages: [SHA256Digest: TreePage] = [:]
        var replacedPages: [SHA256Digest] = []

        init(source: Source, changes: Int) {
            self.source = source
            created.reserveCapacity(8 * changes)
        }

        /// The stored page holding the node at `depth` with this hash: its own page at a
        /// page depth, else `page` (the one the walk came through).
        func page(of hash: SHA256Digest, depth: Int, _ page: TreePage?) -> TreePage? {
            guard hash != .zero else { return nil }
            guard depth % pageDepth == 0 else { return page }
            guard let own = source.treePage(hash, depth: depth), own.root == hash else { return nil }
            return own
        }

        mutating func store(_ node: TreeNode, depth: Int) -> SHA256Digest {
            let hash = node.hash
            created[hash] = (node, depth)
            return hash
        }

        /// A stored node leaves the tree: at a page depth, its page is replaced (any
        /// change below a page changes its root); inside a page, so is the page's root.
        mutating func retire(_ hash: SHA256Digest, depth: Int) {
            if depth % pageDepth == 0 { replacedPages.append(hash) }
        }

        /// A subtree after the changes: its hash, and its node when it is a single leaf
        /// (which moves up when its sibling is empty).
        typealias Subtree = (hash: SHA256Digest, leaf: TreeNode?)

        mutating func apply(
            _ hash: SHA256Digest, depth: Int, _ changes: ArraySlice<(key: StateKey, valueHash: SHA256Digest?)>, page: TreePage?
        ) -> Subtree {
            let here = self.page(of: hash, depth: depth, page)
            switch here?.node(hash) {
            case nil:
                return build(depth: depth, changes.compactMap { change in change.valueHash.map { (change.key, $0) } }[...])
            case let .leaf(key, valueHash):
                // Re-insert the existing leaf among the changes unless they change it.
                retire(hash, depth: depth)
                var entries = changes.compactMap { change in change.valueHash.map { (change.key, $0) } }
                if !changes.contains(where: { $0.key == key }) {
                    let index = entries.firstIndex { $0.0 > key } ?? entries.endIndex
                    entries.insert((key, valueHash), at: index)
                }
                return build(depth: depth, entries[...])
            case let .branch(left, right):
                retire(hash, depth: depth)
                let split = changes.firstIndex { bit($0.key, depth) } ?? changes.endIndex
                let newLeft = changes.startIndex < split
                    ? apply(left, depth: depth + 1, changes[..<split], page: here) : kept(left, depth: depth + 1, here)
                let newRight = split < changes.endIndex
                    ? apply(right, depth: depth + 1, changes[split...], page: here) : kept(right, depth: depth + 1, here)
                let joined = join(newLeft, newRight, depth: depth)
                if depth % pageDepth == 0, let here, created[joined.hash]?.depth == depth { oldPages[joined.hash] = here }
                return joined
            }
        }

        /// An unchanged subtree, with its node if it is a leaf.
        func kept(_ hash: SHA256Digest, depth: Int, _ page: TreePage?) -> Subtree {
            guard let node = self.page(of: hash, depth: depth, page)?.node(hash), case .leaf = node else { return (hash, nil) }
            return (hash, node)
        }

        /// A branch of two subtrees, collapsed when one is empty and the other a leaf (the
        /// leaf moves up: the shape depends on the keys only).
        mutating func join(_ left: Subtree, _ right: Subtree, depth: Int) -> Subtree {
            if left.hash == .zero && right.hash == .zero { return (.zero, nil) }
            if left.hash == .zero, let leaf = right.leaf { return moveUp(right.hash, leaf, to: depth) }
            if right.hash == .zero, let leaf = left.leaf { return moveUp(left.hash, leaf, to: depth) }
            return (store(.branch(left: left.hash, right: right.hash), depth: depth), nil)
        }

        /// A leaf now one level higher: its depth decides which page holds it.
        mutating func moveUp(_ hash: SHA256Digest, _ leaf: TreeNode, to depth: Int) -> Subtree {
            // A stored leaf at a page depth was its own page: it joins another.
            if created[hash] == nil && (depth + 1) % pageDepth == 0 { replacedPages.append(hash) }
            created[hash] = (leaf, depth)
            return (hash, leaf)
        }

        /// A fresh subtree of sorted, distinct entries.
        mutating func build(depth: Int, _ entries: ArraySlice<(StateKey, SHA256Digest)>) -> Subtree {
            if entries.isEmpty { return (.zero, nil) }
            if entries.count == 1, let only = entries.first {
                let leaf = TreeNode.leaf(key: only.0, valueHash: only.1)
                return (store(leaf, depth: depth), leaf)
            }
            precondition(depth < StateTree.depthMax, "two distinct keys share every bit")
            let split = entries.firstIndex { bit($0.0, depth) } ?? entries.endIndex
            let left = build(depth: depth + 1, entries[..<split])
            let right = build(depth: depth + 1, entries[split...])
            return (store(.branch(left: left.hash, right: right.hash), depth: depth), nil)
        }

        /// The pages this update made: one per node made at a page depth, with the nodes
        /// below it (made here, or kept from the page that was at its place).
        func pages() -> (pages: [SHA256Digest: TreePage], depths: [SHA256Digest: Int]) {
            var pages: [SHA256Digest: TreePage] = [:], depths: [SHA256Digest: Int] = [:]
            pages.reserveCapacity(created.count / 4)
            depths.reserveCapacity(created.count / 4)
            for (hash, made) in created where made.depth % pageDepth == 0 {
                var entries: [(hash: SHA256Digest, node: TreeNode)] = []
                collect(hash, level: 0, old: oldPages[hash], into: &entries)
                pages[hash] = TreePage(root: hash, entries: entries)
                depths[hash] = made.depth
            }
            return (pages, depths)
        }

        private func collect(_ hash: SHA256Digest, level: Int, old: TreePage?, into nodes: inout [(hash: SHA256Digest, node: TreeNode)]) {
            guard hash != .zero else { return }
            guard let node = created[hash]?.node ?? old?.node(hash) else {
                preconditionFailure("node \(hash.hex) of a new page was neither made nor kept")
            }
            nodes.append((hash, node))
            if case let .branch(left, right) = node, level + 1 < pageDepth {
                collect(left, level: level + 1, old: old, into: &nodes)
                collect(right, level: level + 1, old: old, into: &nodes)
            }
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

    public init(values: [(key: StateKey, value: [UInt8]?)], tree: StateTree.Update) {
        self.values = values
        self.tree = tree
    }
}

/// The store protocol the ledger runs on. `commit` must be atomic: after a crash the
/// store holds the state before or after the batch, never part of it.
public protocol StateStore: TreePageSource {
    var root: SHA256Digest { get }
    func value(_ key: StateKey) -> [UInt8]?
    mutating func commit(_ batch: StateBatch)
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
