import CHotPath
import Wire

/// Errors from Merkle proof checking. A proof from a peer or a node that fails any of
/// these is simply not a proof; callers log the reason and drop the answer.
public enum MerkleError: Error, Equatable, Sendable {
    case indexOutOfRange(index: UInt64, leafCount: UInt64)
    case wrongSiblingCount(expected: Int, actual: Int)
    case rootMismatch
}

/// A binary Merkle tree over 32-byte leaf digests (transaction ids, in blocks).
///
/// Shape: leaves are paired left to right at every level; an unpaired last node moves up
/// to the next level unchanged. Hashing is domain separated (see CHotPath.h): a leaf is
/// tagged with `CHP_MERKLE_LEAF_TAG`, an inner node with `CHP_MERKLE_NODE_TAG`, so no
/// inner node can be passed off as a leaf or the reverse. The root of zero leaves is
/// the tagged hash of nothing under `MerkleTree.emptyTag`.
///
/// The leaf count is not hashed into the root; whoever checks a proof must know it from
/// an authenticated source (a block header carries its transaction count). Equal roots
/// still imply equal leaf lists: with two hash domains, a root determines the whole tree.
public struct MerkleTree: Sendable {
    public static let emptyTag = "calisson/merkle/empty/v1"
    /// A proof for up to 2^64 leaves has at most this many siblings.
    public static let proofSiblingCountMax = 64

    public static let emptyRoot: SHA256Digest = TaggedHasher(tag: emptyTag).hash([])

    /// levels[0] holds the leaf hashes, the last level the root alone.
    public let levels: [[SHA256Digest]]
    public let leafCount: Int

    public var root: SHA256Digest { levels.last?.first ?? Self.emptyRoot }

    public init(leaves: [SHA256Digest], backend: SHA256.Backend = SHA256.backend) {
        leafCount = leaves.count
        guard !leaves.isEmpty else {
            levels = []
            return
        }
        var levels: [[SHA256Digest]] = [Self.hashLeaves(leaves, backend: backend)]
        while let level = levels.last, level.count > 1 {
            levels.append(Self.parentLevel(of: level, backend: backend))
        }
        self.levels = levels
    }

    /// The root alone, without keeping the levels: leaves are reduced in cache-sized
    /// chunks (see chp_merkle_root), so the scratch is ~64 KiB plus 1/64 of the leaves.
    public static func root(of leaves: [SHA256Digest], backend: SHA256.Backend = SHA256.backend) -> SHA256Digest {
        guard !leaves.isEmpty else { return emptyRoot }
        var scratch = [SHA256Digest](repeating: .zero, count: chp_merkle_root_scratch_bytes(leaves.count) / 32)
        return SHA256Digest.filling { out in
            leaves.withUnsafeBytes { input in
                scratch.withUnsafeMutableBytes { work in
                    _ = chp_merkle_root(
                        backend.rawValue, input.baseAddress!.assumingMemoryBound(to: UInt8.self), leaves.count,
                        work.baseAddress!.assumingMemoryBound(to: UInt8.self),
                        out.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
    }

    public static func leafHash(_ leaf: SHA256Digest, backend: SHA256.Backend = SHA256.backend) -> SHA256Digest {
        SHA256Digest.filling { out in
            leaf.withUnsafeBytes { input in
                chp_merkle_leaf(backend.rawValue, input.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
    }

    public static func nodeHash(
        _ left: SHA256Digest, _ right: SHA256Digest, backend: SHA256.Backend = SHA256.backend
    ) -> SHA256Digest {
        SHA256Digest.filling { out in
            left.withUnsafeBytes { l in
                right.withUnsafeBytes { r in
                    chp_merkle_node(backend.rawValue, l.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                    r.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                    out.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
    }

    private static func hashLeaves(_ leaves: [SHA256Digest], backend: SHA256.Backend) -> [SHA256Digest] {
        var out = [SHA256Digest](repeating: .zero, count: leaves.count)
        leaves.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { output in
                chp_merkle_leaves(backend.rawValue, input.baseAddress!.assumingMemoryBound(to: UInt8.self), leaves.count,
                                  output.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return out
    }

    /// The level above `level`: nodes of adjacent pairs, two at a time on the SHA-NI
    /// kernel, with an unpaired last node moved up unchanged.
    public static func parentLevel(of level: [SHA256Digest], backend: SHA256.Backend = SHA256.backend) -> [SHA256Digest] {
        let pairs = level.count / 2
        var out = [SHA256Digest](repeating: .zero, count: pairs + level.count % 2)
        level.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { output in
                chp_merkle_pairs(backend.rawValue, input.baseAddress!.assumingMemoryBound(to: UInt8.self), pairs,
                                 output.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        if level.count % 2 == 1, let last = level.last { out[pairs] = last }
        return out
    }

    /// The inclusion proof of the leaf at `index`, or nil when out of range.
    public func proof(at index: Int) -> MerkleProof? {
        guard index >= 0, index < leafCount else { return nil }
        var siblings: [SHA256Digest] = []
        var position = index
        for level in levels.dropLast() {
            let sibling = position ^ 1
            if sibling < level.count { siblings.append(level[sibling]) }
            position /= 2
        }
        return MerkleProof(leafIndex: UInt64(index), leafCount: UInt64(leafCount), siblings: siblings)
    }
}

/// An inclusion proof: the sibling hashes from the leaf's level up to the root. Levels
/// where the path node is unpaired (it moves up unchanged) contribute no sibling.
public struct MerkleProof: Hashable, Sendable, WireCodable {
    public var leafIndex: UInt64
    public var leafCount: UInt64
    public var siblings: [SHA256Digest]

    public init(leafIndex: UInt64, leafCount: UInt64, siblings: [SHA256Digest]) {
        self.leafIndex = leafIndex
        self.leafCount = leafCount
        self.siblings = siblings
    }

    /// The root this proof gives for `leaf`, after checking its shape against the
    /// index and leaf count (every sibling used, none missing).
    public func computeRoot(leaf: SHA256Digest, backend: SHA256.Backend = SHA256.backend) throws(MerkleError) -> SHA256Digest {
        guard leafIndex < leafCount else { throw .indexOutOfRange(index: leafIndex, leafCount: leafCount) }
        let expected = Self.expectedSiblingCount(leafIndex, leafCount)
        guard siblings.count == expected else { throw .wrongSiblingCount(expected: expected, actual: siblings.count) }
        var node = MerkleTree.leafHash(leaf, backend: backend)
        var position = leafIndex
        var width = leafCount
        var used = 0
        while width > 1 {
            if position ^ 1 < width {
                node = position & 1 == 0
                    ? MerkleTree.nodeHash(node, siblings[used], backend: backend)
                    : MerkleTree.nodeHash(siblings[used], node, backend: backend)
                used += 1
            }
            position /= 2
            width = width / 2 + width % 2  // not (width + 1) / 2: leafCount may be UInt64.max
        }
        return node
    }

    /// Checks that `leaf` is at `leafIndex` among `leafCount` leaves under `root`.
    public func verify(leaf: SHA256Digest, root: SHA256Digest, backend: SHA256.Backend = SHA256.backend) throws(MerkleError) {
        guard try computeRoot(leaf: leaf, backend: backend) == root else { throw .rootMismatch }
    }

    static func expectedSiblingCount(_ index: UInt64, _ count: UInt64) -> Int {
        var position = index, width = count, siblings = 0
        while width > 1 {
            if position ^ 1 < width { siblings += 1 }
            position /= 2
            width = width / 2 + width % 2  // not (width + 1) / 2: leafCount may be UInt64.max
        }
        return siblings
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(leafIndex)
        writer.write(leafCount)
        writer.writeArray(siblings)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        leafIndex = try reader.readUInt64("merkleProof.leafIndex")
        leafCount = try reader.readUInt64("merkleProof.leafCount")
        siblings = try reader.readArray("merkleProof.siblings", maximum: MerkleTree.proofSiblingCountMax)
    }
}
