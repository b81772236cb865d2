import CalissonCrypto
import Foundation
import Wire
#if canImport(Glibc)
import Glibc
#endif

struct SelfCheckFailure: Error, CustomStringConvertible {
    let description: String
}

/// The hot-path self-check and side-by-side measurements behind `calisson-bench hotpath`.
struct HotPath {
    private var random = SplitMix64(seed: 0xCA11_5500)

    mutating func selfCheck() throws {
        print("calisson-bench hotpath: \(OpenSSLReference.version), SHA-256 backend \(SHA256.backend)")
        func require(_ condition: Bool, _ what: String) throws {
            guard condition else { throw SelfCheckFailure(description: "self-check failed: \(what)") }
            print("  ok  \(what)")
        }
        try require(SHA256.hash(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                    "SHA-256 known answer (FIPS 180-2 'abc')")
        let pool = random.bytes(1 << 16)
        var agree = true
        for length in 0...300 {
            let input = Array(pool[length..<(2 * length)])
            for backend in SHA256.Backend.allCases where backend.isAvailable {
                agree = agree && SHA256.hash(input, backend: backend) == OpenSSLReference.sha256(input)
            }
        }
        try require(agree, "SHA-256 equals OpenSSL EVP on lengths 0...300, every available backend")

        let leaves = (0..<1_000).map { _ in random.bytes32() }
        let tree = MerkleTree(leaves: leaves)
        let roots = SHA256.Backend.allCases.filter(\.isAvailable).map { MerkleTree.root(of: leaves, backend: $0) }
        try require(roots.allSatisfy { $0 == tree.root }, "Merkle root identical on every backend")
        let proofsHold = (0..<leaves.count).allSatisfy { index in
            (try? tree.proof(at: index)?.verify(leaf: leaves[index], root: tree.root)) != nil
        }
        try require(proofsHold, "Merkle inclusion proofs verify for all 1000 leaves")

        let seed = Hex.decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")!
        let key = Ed25519PrivateKey(seed: seed)!
        try require(key.signature(for: []).description.hasPrefix("e5564300c360ac729086e2cc806e828a"),
                    "Ed25519 RFC 8032 test 1 signature")
        let checks = Self.signedChecks(64, random: &random)
        var expected = checks.map { $0.verify() }
        try require(expected.allSatisfy { $0 }, "Ed25519 signatures verify")
        var tampered = checks
        tampered[3] = SignatureCheck(publicKey: checks[4].publicKey, digest: checks[3].digest, signature: checks[3].signature)
        expected[3] = false
        try require(BatchVerifier().verify(tampered) == expected, "batch verifier agrees with single verification")
    }

    static func signedChecks(_ count: Int, random: inout SplitMix64) -> [SignatureCheck] {
        let keys = (0..<16).map { _ in Ed25519PrivateKey() }
        let domain = SigningDomain(chainId: "calisson-bench", purpose: .transaction)!
        return (0..<count).map { index in
            let payload = random.bytes(120)
            let key = keys[index % keys.count]
            return domain.check(payload, signature: domain.sign(payload, with: key), publicKey: key.publicKey)
        }
    }

    mutating func measure(rounds: Int) {
        print("\nSide-by-side timings (best of \(rounds) alternating rounds; ratios are what matter):")

        // 1. 64-byte node hashing: SHA-NI two-way kernel vs EVP_Digest, per hash.
        let nodeCount = 1 << 14
        let level = (0..<(2 * nodeCount)).map { _ in random.bytes32() }
        let blocks = level.chunks64()
        let (kernel, evp) = Self.sideBySide(rounds: rounds, work: nodeCount) {
            blackHole(MerkleTree.parentLevel(of: level))
        } b: {
            for block in blocks { blackHole(block.withUnsafeBytes { OpenSSLReference.sha256($0) }) }
        }
        report("SHA-256 of 64-byte nodes", ("\(SHA256.backend) two-way", kernel), ("OpenSSL EVP_Digest", evp), goal: 6)

        // 2. Merkle root of 2^20 leaves, one core.
        let leaves = (0..<(1 << 20)).map { _ in random.bytes32() }
        var best = Double.infinity
        for _ in 0..<max(1, rounds / 2) {
            best = min(best, Self.seconds { blackHole(MerkleTree.root(of: leaves)) })
        }
        print("  Merkle root, 2^20 leaves, 1 core:\n    " + String(format: "%.1f ms", best * 1e3) + "   (goal: at most 120 ms)")

        // 3. Ed25519 verify: libsodium vs OpenSSL EVP.
        let checks = Self.signedChecks(1_024, random: &random)
        let openssl = OpenSSLEd25519()
        let digests = checks.map { $0.digest.bytes }
        let (sodium, evpVerify) = Self.sideBySide(rounds: rounds, work: checks.count) {
            for check in checks { blackHole(check.verify()) }
        } b: {
            for (index, check) in checks.enumerated() {
                blackHole(openssl.verify(signature: check.signature, message: digests[index], publicKey: check.publicKey))
            }
        }
        report("Ed25519 verify", ("libsodium", sodium), ("OpenSSL EVP", evpVerify), goal: 2)

        // 4. Batch verify of 1024 signatures: every core vs one.
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let all = BatchVerifier(workerCount: cores), one = BatchVerifier(workerCount: 1)
        let (parallel, serial) = Self.sideBySide(rounds: rounds, work: checks.count) {
            blackHole(all.verify(checks))
        } b: {
            blackHole(one.verify(checks))
        }
        report("Batch verify 1024 signatures", ("\(cores) cores", parallel), ("1 core", serial),
               goal: cores >= 2 ? 1.7 : nil)
    }

    private func report(_ name: String, _ a: (String, Double), _ b: (String, Double), goal: Double?) {
        let ratio = b.1 / a.1
        let goalText = goal.map { String(format: "   (goal: at least %.1fx)", $0) } ?? ""
        print("  \(name):")
        print("    \(a.0.padded(28)) \(Self.format(a.1))")
        print("    \(b.0.padded(28)) \(Self.format(b.1))")
        print(String(format: "    ratio %.2fx", ratio) + goalText)
    }

    private static func format(_ secondsPerItem: Double) -> String {
        String(format: "%9.1f ns/op  %12.0f op/s", secondsPerItem * 1e9, 1 / secondsPerItem)
    }

    /// Seconds per unit of work for a and b, alternating rounds, keeping each side's best.
    private static func sideBySide(rounds: Int, work: Int, a: () -> Void, b: () -> Void) -> (Double, Double) {
        a(); b()  // warm caches and lazy initialisation
        var bestA = Double.infinity, bestB = Double.infinity
        for _ in 0..<rounds {
            bestA = min(bestA, seconds(a))
            bestB = min(bestB, seconds(b))
        }
        return (bestA / Double(work), bestB / Double(work))
    }

    private static func seconds(_ body: () -> Void) -> Double {
        var start = timespec(), end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        body()
        clock_gettime(CLOCK_MONOTONIC, &end)
        return Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    }
}

@inline(never) func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }

extension String {
    func padded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

extension Array where Element == SHA256Digest {
    /// Adjacent pairs as 64-byte arrays.
    func chunks64() -> [[UInt8]] {
        stride(from: 0, to: count - 1, by: 2).map { self[$0].bytes + self[$0 + 1].bytes }
    }
}
