// Proves the Merkle tree: leaf and node hashes match their tagged-hash definition on
// every backend, roots match a naive recursive reference for every size up to 70,
// every proof verifies, and any flipped bit, wrong index or count, missing or extra
// sibling, or a node passed off as a leaf is rejected.
import CalissonTestKit
import Testing
import Wire
@testable import CalissonCrypto

@Suite(.onOwnThreads) struct MerkleTests {
    static var backends: [SHA256.Backend] { SHA256.Backend.allCases.filter(\.isAvailable) }

    static func leaves(_ count: Int, seed: UInt64 = 21) -> [SHA256Digest] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.bytes32() }
    }

    /// The definition, computed with plain SHA-256 from OpenSSL.
    static func referenceLeaf(_ d: SHA256Digest) -> SHA256Digest {
        let tag = OpenSSLReference.sha256(Array("calisson/merkle/leaf/v1".utf8)).bytes
        return OpenSSLReference.sha256(tag + tag + d.bytes)
    }

    static func referenceNode(_ l: SHA256Digest, _ r: SHA256Digest) -> SHA256Digest {
        let tag = OpenSSLReference.sha256(Array("calisson/merkle/node/v1".utf8)).bytes
        return OpenSSLReference.sha256(tag + tag + l.bytes + r.bytes)
    }

    static func referenceRoot(_ leaves: [SHA256Digest]) -> SHA256Digest {
        guard !leaves.isEmpty else { return MerkleTree.emptyRoot }
        var level = leaves.map(referenceLeaf)
        while level.count > 1 {
            var next: [SHA256Digest] = []
            var index = 0
            while index + 1 < level.count {
                next.append(referenceNode(level[index], level[index + 1]))
                index += 2
            }
            if index < level.count { next.append(level[index]) }
            level = next
        }
        return level[0]
    }

    @Test func leafAndNodeHashesMatchDefinition() {
        let values = Self.leaves(2)
        for backend in Self.backends {
            #expect(MerkleTree.leafHash(values[0], backend: backend) == Self.referenceLeaf(values[0]))
            #expect(MerkleTree.nodeHash(values[0], values[1], backend: backend) == Self.referenceNode(values[0], values[1]))
        }
    }

    @Test func rootsMatchReferenceForEverySizeUpTo70() {
        for count in 0...70 {
            let leaves = Self.leaves(count, seed: UInt64(count))
            let expected = Self.referenceRoot(leaves)
            for backend in Self.backends {
                #expect(MerkleTree.root(of: leaves, backend: backend) == expected, "count \(count) \(backend)")
                #expect(MerkleTree(leaves: leaves, backend: backend).root == expected, "count \(count) \(backend)")
            }
        }
    }

    @Test func largeTreeAgreesAcrossBackends() {
        let leaves = Self.leaves(10_001)
        let roots = Set(Self.backends.map { MerkleTree.root(of: leaves, backend: $0) })
        #expect(roots.count == 1)
        #expect(roots.first == MerkleTree(leaves: leaves).root)
    }

    /// chp_merkle_root reduces in chunks; the root must equal the level-by-level tree's
    /// on both sides of every chunk boundary.
    @Test(arguments: [2047, 2048, 2049, 4095, 4096, 4097, 6144 + 3])
    func chunkedRootEqualsLevelByLevelRoot(count: Int) {
        let leaves = Self.leaves(count, seed: UInt64(count))
        for backend in Self.backends {
            #expect(MerkleTree.root(of: leaves, backend: backend) == MerkleTree(leaves: leaves, backend: backend).root)
        }
    }

    @Test func everyProofVerifies() throws {
        for count in 1...40 {
            let leaves = Self.leaves(count)
            let tree = MerkleTree(leaves: leaves)
            for index in 0..<count {
                let proof = try #require(tree.proof(at: index))
                try proof.verify(leaf: leaves[index], root: tree.root)
                #expect(proof.siblings.count == MerkleProof.expectedSiblingCount(UInt64(index), UInt64(count)))
            }
            #expect(tree.proof(at: count) == nil)
            #expect(tree.proof(at: -1) == nil)
        }
    }

    @Test func anyFlippedBitIsRejected() throws {
        let leaves = Self.leaves(13)
        let tree = MerkleTree(leaves: leaves)
        let proof = try #require(tree.proof(at: 6))
        for sibling in proof.siblings.indices {
            for bit in stride(from: 0, to: 256, by: 37) {
                var bad = proof
                var bytes = bad.siblings[sibling].bytes
                bytes[bit / 8] ^= UInt8(1 << (bit % 8))
                bad.siblings[sibling] = Bytes32(bytes)!
                #expect(throws: MerkleError.rootMismatch) { try bad.verify(leaf: leaves[6], root: tree.root) }
            }
        }
        var leafBytes = leaves[6].bytes
        leafBytes[0] ^= 1
        #expect(throws: MerkleError.rootMismatch) { try proof.verify(leaf: Bytes32(leafBytes)!, root: tree.root) }
    }

    @Test func wrongIndexOrCountIsRejected() throws {
        let leaves = Self.leaves(16)
        let tree = MerkleTree(leaves: leaves)
        let proof = try #require(tree.proof(at: 5))
        var moved = proof
        moved.leafIndex = 4
        #expect(throws: MerkleError.self) { try moved.verify(leaf: leaves[5], root: tree.root) }
        var outside = proof
        outside.leafIndex = 16
        #expect(throws: MerkleError.indexOutOfRange(index: 16, leafCount: 16)) { try outside.verify(leaf: leaves[5], root: tree.root) }
        var shorter = proof
        shorter.siblings.removeLast()
        #expect(throws: MerkleError.wrongSiblingCount(expected: 4, actual: 3)) { try shorter.verify(leaf: leaves[5], root: tree.root) }
        var longer = proof
        longer.siblings.append(leaves[0])
        #expect(throws: MerkleError.wrongSiblingCount(expected: 4, actual: 5)) { try longer.verify(leaf: leaves[5], root: tree.root) }
    }

    /// The classic second-preimage attempt: present an inner node as a leaf of a shorter
    /// tree. Domain separation makes its hash differ, so the root does not match.
    @Test func innerNodeCannotPassAsLeaf() throws {
        let leaves = Self.leaves(8)
        let tree = MerkleTree(leaves: leaves)
        let inner = tree.levels[1]  // hashes of leaf pairs
        let forged = MerkleTree(leaves: inner)  // would equal `tree` without domain separation
        #expect(forged.root != tree.root)
        let proof = try #require(forged.proof(at: 0))
        #expect(throws: MerkleError.rootMismatch) { try proof.verify(leaf: inner[0], root: tree.root) }
        // Likewise a leaf hash cannot stand in for a node.
        #expect(MerkleTree.leafHash(leaves[0]) != MerkleTree.nodeHash(leaves[0], leaves[0]))
    }

    /// Leaf counts come from untrusted proofs: the largest must be rejected, not overflow.
    @Test func hugeLeafCountIsRejectedWithoutTrapping() {
        let leaf = Self.leaves(1)[0]
        let index = UInt64.max - 1, count = UInt64.max
        let expected = MerkleProof.expectedSiblingCount(index, count)
        #expect(expected == 63)  // the path's first level is unpaired, then 63 levels of pairs
        let empty = MerkleProof(leafIndex: index, leafCount: count, siblings: [])
        #expect(throws: MerkleError.wrongSiblingCount(expected: expected, actual: 0)) {
            try empty.verify(leaf: leaf, root: MerkleTree.emptyRoot)
        }
        let full = MerkleProof(leafIndex: index, leafCount: count, siblings: Array(repeating: leaf, count: expected))
        #expect(throws: MerkleError.rootMismatch) { try full.verify(leaf: leaf, root: MerkleTree.emptyRoot) }
    }

    @Test func proofCodecRoundTripsAndBoundsSiblings() throws {
        let tree = MerkleTree(leaves: Self.leaves(100))
        let proof = try #require(tree.proof(at: 77))
        #expect(try MerkleProof(wireBytes: proof.wireBytes) == proof)
        var writer = WireWriter()
        writer.write(UInt64(0))
        writer.write(UInt64(1))
        writer.write(UInt32(MerkleTree.proofSiblingCountMax + 1))
        #expect(throws: WireError.self) { try MerkleProof(wireBytes: writer.bytes) }
    }
}
