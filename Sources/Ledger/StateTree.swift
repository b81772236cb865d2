import Crypto
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

/// Where tree nodes live: in memory here, in SQLite for a node (Storage).
public protocol TreeNodeSource {
    func treeNode(_ hash: SHA256Digest) -> TreeNode?
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
/// (`StateProof`) show inclusion or absence in O(log n) hashes.
public enum StateTree {
    static let leafTag = TaggedHasher(tag: "calisson/state/leaf/v1")
    static let valueTag = TaggedHasher(tag: "calisson/state/value/v1")
    public static let depthMax = 256

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

    /// The result of applying a batch: the new root, the nodes created, and the nodes
    /// that are no longer reachable (a store keeping only the latest state deletes them).
    public struct Update: Sendable {
        public var root: SHA256Digest
        public var created: [SHA256Digest: TreeNode] = [:]
        public var replaced: [SHA256Digest] = []
    }

    /// Applies `changes` (key → new value hash, nil to delete) to the tree at `root`.
    public static func update(
        root: SHA256Digest, changes: [(key: StateKey, valueHash: SHA256Digest?)], nodes: some TreeNodeSource
    ) -> Update {
        let sorted = changes.sorted { $0.key < $1.key }
        var update = Update(root: root)
        var updater = Updater(nodes: nodes, update: update)
        update.root = sorted.isEmpty ? root : updater.apply(root, depth: 0, sorted[...]).hash
        update.created = updater.update.created
        update.replaced = updater.update.replaced
        return update
    }

    private struct Updater<Source: TreeNodeSource> {
        let nodes: Source
        var update: Update

        func node(_ hash: SHA256Digest) -> TreeNode? {
            hash == .zero ? nil : (update.created[hash] ?? nodes.treeNode(hash))
        }

        mutating func store(_ node: TreeNode) -> SHA256Digest {
            let hash: SHA256Digest
            switch node {
            case let .branch(left, right): hash = branchHash(left, right)
            case let .leaf(key, valueHash): hash = leafHash(key: key, valueHash: valueHash)
            }
            update.created[hash] = node
            return hash
        }

        mutating func retire(_ hash: SHA256Digest) {
            guard hash != .zero else { return }
            if update.created.removeValue(forKey: hash) == nil { update.replaced.append(hash) }
        }

        /// A subtree after the changes: its hash, and whether it is a single leaf (which
        /// moves up when its sibling is empty).
        typealias Subtree = (hash: SHA256Digest, isLeaf: Bool)

        mutating func apply(_ hash: SHA256Digest, depth: Int, _ changes: ArraySlice<(key: StateKey, valueHash: SHA256Digest?)>) -> Subtree {
            switch node(hash) {
            case nil:
                return build(depth: depth, changes.compactMap { change in change.valueHash.map { (change.key, $0) } }[...])
            case let .leaf(key, valueHash):
                guard !changes.isEmpty else { return (hash, true) }
                // Re-insert the existing leaf among the changes unless they change it.
                retire(hash)
                var entries = changes.compactMap { change in change.valueHash.map { (change.key, $0) } }
                if !changes.contains(where: { $0.key == key }) {
                    let index = entries.firstIndex { $0.0 > key } ?? entries.endIndex
                    entries.insert((key, valueHash), at: index)
                }
                return build(depth: depth, entries[...])
            case let .branch(left, right):
                guard !changes.isEmpty else { return (hash, false) }
                retire(hash)
                let split = changes.firstIndex { bit($0.key, depth) } ?? changes.endIndex
                let newLeft = changes.startIndex < split ? apply(left, depth: depth + 1, changes[..<split]) : (left, isLeaf(left))
                let newRight = split < changes.endIndex ? apply(right, depth: depth + 1, changes[split...]) : (right, isLeaf(right))
                return join(newLeft, newRight)
            }
        }

        func isLeaf(_ hash: SHA256Digest) -> Bool {
            if case .leaf = node(hash) { return true }
            return false
        }

        /// A branch of two subtrees, collapsed when one is empty and the other a leaf (the
        /// leaf moves up: the shape depends on the keys only).
        mutating func join(_ left: Subtree, _ right: Subtree) -> Subtree {
            if left.hash == .zero && right.hash == .zero { return (.zero, false) }
            if left.hash == .zero && right.isLeaf { return right }
            if right.hash == .zero && left.isLeaf { return left }
            return (store(.branch(left: left.hash, right: right.hash)), false)
        }

        /// A fresh subtree of sorted, distinct entries.
        mutating func build(depth: Int, _ entries: ArraySlice<(StateKey, SHA256Digest)>) -> Subtree {
            if entries.isEmpty { return (.zero, false) }
            if entries.count == 1, let only = entries.first { return (store(.leaf(key: only.0, valueHash: only.1)), true) }
            precondition(depth < StateTree.depthMax, "two distinct keys share every bit")
            let split = entries.firstIndex { bit($0.0, depth) } ?? entries.endIndex
            let left = build(depth: depth + 1, entries[..<split])
            let right = build(depth: depth + 1, entries[split...])
            return (store(.branch(left: left.hash, right: right.hash)), false)
        }
    }

    /// The proof for `key` in the tree at `root`: inclusion if it holds a value, else absence.
    public static func proof(for key: StateKey, root: SHA256Digest, nodes: some TreeNodeSource) -> StateProof {
        var siblings: [SHA256Digest] = []
        var hash = root
        var depth = 0
        while true {
            guard hash != .zero, let node = nodes.treeNode(hash) else { return StateProof(siblings: siblings, terminal: nil) }
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

/// The state in memory: values by key, and the tree's nodes by hash (only the latest
/// tree: replaced nodes are dropped). The Storage module provides the SQLite one.
public struct MemoryStateStore: StateStore, TreeNodeSource, Sendable {
    public private(set) var root: SHA256Digest = .zero
    var values: [StateKey: [UInt8]] = [:]
    var nodes: [SHA256Digest: TreeNode] = [:]

    public init() {}

    public func value(_ key: StateKey) -> [UInt8]? { values[key] }
    public func treeNode(_ hash: SHA256Digest) -> TreeNode? { nodes[hash] }
    public var valueCount: Int { values.count }
    public var nodeCount: Int { nodes.count }

    public mutating func commit(_ batch: StateBatch) {
        for (key, value) in batch.values { values[key] = value }
        for hash in batch.tree.replaced { nodes[hash] = nil }
        for (hash, node) in batch.tree.created { nodes[hash] = node }
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
public protocol StateStore: TreeNodeSource {
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
