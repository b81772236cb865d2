// Proves the batch verifier returns exactly the per-item result of verifying each check
// alone, on one worker or several, and that the cache stays within its capacity, evicts
// oldest first, never stores a failure, and saves re-verification of cached checks.
import CalissonTestKit
import Testing
import Wire
@testable import CalissonCrypto

@Suite(.onOwnThreads) struct VerifierTests {
    static func checks(_ count: Int, invalidEvery: Int, seed: UInt64) -> [SignatureCheck] {
        var rng = SplitMix64(seed: seed)
        let keys = (0..<8).map { _ in Ed25519PrivateKey() }
        let domain = SigningDomain(chainId: "amp-nudge-test", purpose: .transaction)!
        return (0..<count).map { index in
            let key = keys[index % keys.count]
            let payload = rng.bytes(48)
            var signature = domain.sign(payload, with: key)
            if index % invalidEvery == 0 {
                var raw = signature.rawRepresentation
                raw[Int(rng.next() % 64)] ^= 0x10
                signature = Ed25519Signature(rawRepresentation: raw)!
            }
            return domain.check(payload, signature: signature, publicKey: key.publicKey)
        }
    }

    @Test(arguments: [1, 2, 4])
    func batchResultsEqualIndividualResults(workers: Int) {
        let checks = Self.checks(300, invalidEvery: 7, seed: 51)
        let expected = checks.map { $0.verify() }
        #expect(expected.contains(false) && expected.contains(true))
        #expect(BatchVerifier(workerCount: workers).verify(checks) == expected)
        #expect(BatchVerifier(workerCount: workers).verify([]) == [])
    }

    @Test func cacheIsBoundedAndEvictsOldestFirst() {
        let checks = Self.checks(10, invalidEvery: 1_000, seed: 52)
        let cache = VerifyCache(capacity: 4)
        cache.insert(contentsOf: checks[1..<7])  // checks[0] is invalid: never inserted
        #expect(cache.count == 4)
        #expect(cache.contains(checks[3]) && cache.contains(checks[6]))
        #expect(!cache.contains(checks[1]) && !cache.contains(checks[2]))
        cache.insert(checks[6])  // already present: no eviction
        #expect(cache.statistics.evictions == 2)
        #expect(cache.count == 4)
    }

    @Test func cachedChecksAreNotVerifiedAgainAndFailuresAreNotCached() {
        let checks = Self.checks(64, invalidEvery: 4, seed: 53)
        let cache = VerifyCache(capacity: 1_000)
        let verifier = BatchVerifier(workerCount: 2, cache: cache)
        let first = verifier.verify(checks)
        let valid = first.filter { $0 }.count
        #expect(cache.count == valid)
        #expect(cache.statistics.hits == 0)

        let second = verifier.verify(checks)
        #expect(second == first)
        #expect(cache.statistics.hits == valid)
        #expect(cache.statistics.misses == 64 + (64 - valid))  // invalid ones miss every time
        #expect(cache.count == valid)
    }

    @Test func cacheKeyRequiresTheSameSignatureAndKey() {
        let checks = Self.checks(2, invalidEvery: 1_000, seed: 54)
        let cache = VerifyCache()
        cache.insert(checks[1])
        let sameDigestOtherKey = SignatureCheck(publicKey: checks[0].publicKey, digest: checks[1].digest, signature: checks[1].signature)
        let sameDigestOtherSignature = SignatureCheck(publicKey: checks[1].publicKey, digest: checks[1].digest, signature: checks[0].signature)
        #expect(cache.contains(checks[1]))
        #expect(!cache.contains(sameDigestOtherKey))
        #expect(!cache.contains(sameDigestOtherSignature))
    }
}
