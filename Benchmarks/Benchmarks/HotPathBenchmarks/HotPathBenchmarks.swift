// Micro-benchmarks of the signature/Merkle hot path, each beside its OpenSSL baseline so
// that ratios come from one run on one machine. Goals (Docs/BENCHMARKS.md):
//   SHA-NI 64-byte node hashing >= 6x OpenSSL EVP_Digest per hash;
//   Merkle root of 2^20 leaves <= 120 ms on one core;
//   libsodium Ed25519 verify >= 2x OpenSSL EVP verify;
//   batch verify on 2 cores >= 1.7x one core.
import Benchmark
import CalissonCrypto
import Wire
#if canImport(Glibc)
import Glibc
#endif

/// Deterministic inputs: every run measures the same bytes.
struct Inputs {
    var random = SplitMix64(seed: 0xCA11_5500)
    mutating func digest() -> SHA256Digest { random.bytes32() }

    mutating func signedChecks(_ count: Int) -> [SignatureCheck] {
        let keys = (0..<16).map { _ in Ed25519PrivateKey(seed: random.bytes(32))! }
        let domain = SigningDomain(chainId: "calisson-bench", purpose: .transaction)!
        return (0..<count).map { index in
            let payload = random.bytes(120)
            let key = keys[index % keys.count]
            return domain.check(payload, signature: domain.sign(payload, with: key), publicKey: key.publicKey)
        }
    }
}

let nodesPerIteration = 1_024
let merkleLeafCount = 1 << 20
let verifiesPerIteration = 256
let batchCount = 1_024

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal],
        warmupIterations: 3,
        maxDuration: .seconds(3),
        maxIterations: 10_000,
        // Allocations are deterministic, so they are the thresholds checked in CI-like use
        // (`benchmark thresholds check`, Thresholds/); times are compared as ratios.
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 2])]
    )

    // 1. SHA-256 over 64-byte inputs, 1024 per iteration.
    var inputs = Inputs()
    let level = (0..<(2 * nodesPerIteration)).map { _ in inputs.digest() }
    let blocks = stride(from: 0, to: level.count, by: 2).map { level[$0].bytes + level[$0 + 1].bytes }

    Benchmark("SHA256_node_x1024_two-way_kernel") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(MerkleTree.parentLevel(of: level)) }
    }
    Benchmark("SHA256_64B_x1024_single_calls") { benchmark in
        for _ in benchmark.scaledIterations {
            for block in blocks { blackHole(SHA256.hash(block)) }
        }
    }
    Benchmark("SHA256_64B_x1024_OpenSSL_EVP_Digest") { benchmark in
        for _ in benchmark.scaledIterations {
            for block in blocks { blackHole(OpenSSLReference.sha256(block)) }
        }
    }

    // 2. Merkle root of 2^20 leaves, on the calling thread.
    let leaves = (0..<merkleLeafCount).map { _ in inputs.digest() }
    Benchmark("Merkle_root_1048576_leaves_one_core", configuration: .init(maxIterations: 50)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(MerkleTree.root(of: leaves)) }
    }

    // 3. Ed25519 verification, 256 per iteration.
    let checks = inputs.signedChecks(batchCount)
    let some = Array(checks.prefix(verifiesPerIteration))
    let digests = some.map { $0.digest.bytes }
    Benchmark("Ed25519_verify_x256_libsodium") { benchmark in
        for _ in benchmark.scaledIterations {
            for check in some { blackHole(check.verify()) }
        }
    }
    Benchmark("Ed25519_verify_x256_OpenSSL_EVP", configuration: .init(thresholds: [:])) { benchmark in
        let openssl = OpenSSLEd25519()
        for _ in benchmark.scaledIterations {
            for (index, check) in some.enumerated() {
                blackHole(openssl.verify(signature: check.signature, message: digests[index], publicKey: check.publicKey))
            }
        }
    }

    Benchmark("Ed25519_verify_x256_OpenSSL_EVP_new_context", configuration: .init(thresholds: [:])) { benchmark in
        for _ in benchmark.scaledIterations {
            for (index, check) in some.enumerated() {
                blackHole(OpenSSLEd25519.verifyWithNewContext(signature: check.signature, message: digests[index],
                                                              publicKey: check.publicKey))
            }
        }
    }

    // 4. Batch verification of 1024 signatures, one worker vs every core.
    let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    let one = BatchVerifier(workerCount: 1), all = BatchVerifier(workerCount: cores)
    Benchmark("Batch_verify_1024_one_core") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(one.verify(checks)) }
    }
    Benchmark("Batch_verify_1024_all_cores", configuration: .init(metrics: [.wallClock, .throughput, .cpuTotal], thresholds: [:])) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(all.verify(checks)) }
    }
}
