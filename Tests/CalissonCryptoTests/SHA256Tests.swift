// Proves the SHA-256 kernels are bit-exact: known-answer vectors on every backend, every
// length 0...300 and a million random inputs against OpenSSL's EVP_Digest, streaming
// equal to one-shot, and tagged hashes equal to their definition.
import CalissonTestKit
import CHotPath
import Testing
import Wire
@testable import CalissonCrypto

@Suite(.onOwnThreads) struct SHA256Tests {
    static let vectors: [(String, String)] = [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ]

    static var backends: [SHA256.Backend] { SHA256.Backend.allCases.filter(\.isAvailable) }

    @Test func knownAnswers() {
        for backend in Self.backends {
            for (message, digest) in Self.vectors {
                #expect(SHA256.hash(Array(message.utf8), backend: backend).hex == digest, "\(backend) \(message)")
            }
            let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
            #expect(SHA256.hash(million, backend: backend).hex
                    == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        }
    }

    @Test func sameAsOpenSSLForEveryLengthUpTo300() {
        var rng = SplitMix64(seed: 11)
        let data = rng.bytes(300)
        for length in 0...300 {
            let input = Array(data[0..<length])
            let expected = OpenSSLReference.sha256(input)
            for backend in Self.backends {
                #expect(SHA256.hash(input, backend: backend) == expected, "\(backend) length \(length)")
            }
        }
    }

    /// A million random inputs (random offsets and lengths 0...256 into a random pool).
    @Test func sameAsOpenSSLOnAMillionRandomInputs() {
        var rng = SplitMix64(seed: 12)
        let pool = rng.bytes(1 << 20)
        let backend = SHA256.Backend.shaNI.effective
        var mismatches = 0
        pool.withUnsafeBytes { raw in
            for _ in 0..<1_000_000 {
                let length = Int(rng.next() % 257)
                let offset = Int(rng.next() % UInt64(pool.count - length))
                let slice = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)])
                if SHA256.hash(slice, backend: backend) != OpenSSLReference.sha256(slice) { mismatches += 1 }
            }
        }
        #expect(mismatches == 0, "backend \(backend)")
    }

    @Test func streamingEqualsOneShot() {
        var rng = SplitMix64(seed: 13)
        for backend in Self.backends {
            for _ in 0..<500 {
                let data = rng.bytes(Int(rng.next() % 600))
                var hasher = SHA256.Hasher(backend: backend)
                var position = 0
                while position < data.count {
                    let step = min(data.count - position, Int(rng.next() % 130))
                    hasher.update(Array(data[position..<(position + step)]))
                    position += step
                }
                #expect(hasher.finalize() == OpenSSLReference.sha256(data))
            }
        }
    }

    @Test func taggedHashMatchesDefinition() {
        var rng = SplitMix64(seed: 14)
        for backend in Self.backends {
            let tagged = TaggedHasher(tag: "calisson/test", backend: backend)
            let tagDigest = OpenSSLReference.sha256(Array("calisson/test".utf8)).bytes
            for length in [0, 1, 31, 32, 55, 56, 63, 64, 65, 200] {
                let data = rng.bytes(length)
                #expect(tagged.hash(data) == OpenSSLReference.sha256(tagDigest + tagDigest + data))
            }
        }
    }

    @Test func differentTagsNeverAgree() {
        let data = Array("same data".utf8)
        #expect(TaggedHasher(tag: "a").hash(data) != TaggedHasher(tag: "b").hash(data))
    }

    @Test func backendChoiceIsSafe() {
        // SHA-NI is reported available exactly when the CPU has it; asking for it elsewhere
        // falls back to OpenSSL rather than executing an unsupported instruction.
        #expect(SHA256.Backend.shaNI.isAvailable == (chp_cpu_has_sha_ni() == 1))
        #expect(SHA256.Backend.openSSL.isAvailable)
    }
}
