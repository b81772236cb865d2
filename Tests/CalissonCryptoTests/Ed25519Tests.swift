// Proves Ed25519 signing and verification: RFC 8032 test vectors, rejection of tampered
// messages, keys and signatures, agreement with OpenSSL's EVP implementation, the EVP
// context-reuse pitfall, and domain separation by purpose and chain id.
import CalissonTestKit
import Testing
import Wire
@testable import CalissonCrypto

@Suite(.onOwnThreads) struct Ed25519Tests {
    /// RFC 8032 section 7.1, tests 1 to 3: (secret seed, public key, message, signature).
    static let rfc8032: [(String, String, String, String)] = [
        ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
        ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
         "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
         "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
        ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ]

    @Test func rfc8032Vectors() throws {
        for (seed, publicKey, message, signature) in Self.rfc8032 {
            let key = try #require(Ed25519PrivateKey(seed: hex(seed)))
            #expect(key.publicKey.rawRepresentation == hex(publicKey))
            let produced = key.signature(for: hex(message))
            #expect(produced.rawRepresentation == hex(signature))
            #expect(Ed25519.verify(signature: produced, message: hex(message), publicKey: key.publicKey))
        }
    }

    @Test func tamperedMessageKeyOrSignatureIsRejected() throws {
        let (seed, _, _, _) = Self.rfc8032[2]
        let key = try #require(Ed25519PrivateKey(seed: hex(seed)))
        let message = Array("redeem 5 tokens at Musée Cantini".utf8)
        let signature = key.signature(for: message)
        #expect(Ed25519.verify(signature: signature, message: message, publicKey: key.publicKey))
        for index in message.indices {
            var bad = message
            bad[index] ^= 0x01
            #expect(!Ed25519.verify(signature: signature, message: bad, publicKey: key.publicKey))
        }
        for index in 0..<64 {
            var bad = signature.rawRepresentation
            bad[index] ^= 0x80
            #expect(!Ed25519.verify(signature: Ed25519Signature(rawRepresentation: bad)!, message: message, publicKey: key.publicKey))
        }
        for index in 0..<32 {
            var bad = key.publicKey.rawRepresentation
            bad[index] ^= 0x04
            #expect(!Ed25519.verify(signature: signature, message: message, publicKey: Ed25519PublicKey(rawRepresentation: bad)!))
        }
        #expect(!Ed25519.verify(signature: signature, message: message, publicKey: Ed25519PrivateKey().publicKey))
        #expect(!Ed25519.verify(signature: signature, message: message + [0], publicKey: key.publicKey))
    }

    @Test func agreesWithOpenSSLBothWays() {
        let openssl = OpenSSLEd25519()
        var rng = SplitMix64(seed: 31)
        for _ in 0..<50 {
            let key = Ed25519PrivateKey()
            let message = rng.bytes(Int(rng.next() % 300))
            let ours = key.signature(for: message)
            #expect(openssl.verify(signature: ours, message: message, publicKey: key.publicKey))
            #expect(OpenSSLEd25519.verifyWithNewContext(signature: ours, message: message, publicKey: key.publicKey))
            let theirs = openssl.sign(message: message, seed: key.seedRepresentation)
            #expect(theirs == ours, "Ed25519 is deterministic: both libraries must give the same signature")
        }
    }

    /// OpenSSL 3.0 keeps the previous key in a reused EVP_MD_CTX for Ed25519 unless the
    /// context is reset before each init; our wrapper resets, so key B must refuse key A's
    /// signature even right after the same context verified it under key A.
    @Test func reusedOpenSSLContextDoesNotKeepThePreviousKey() {
        let openssl = OpenSSLEd25519()
        let a = Ed25519PrivateKey(), b = Ed25519PrivateKey()
        let message = Array("attribute 2 tokens".utf8)
        let signature = a.signature(for: message)
        for _ in 0..<3 {
            #expect(openssl.verify(signature: signature, message: message, publicKey: a.publicKey))
            #expect(!openssl.verify(signature: signature, message: message, publicKey: b.publicKey))
        }
    }

    @Test func signaturesAreBoundToPurposeAndChain() throws {
        let key = Ed25519PrivateKey()
        let payload = Array("block 7".utf8)
        let commit = try #require(SigningDomain(chainId: "amp-nudge-test", purpose: .commit))
        let prepare = try #require(SigningDomain(chainId: "amp-nudge-test", purpose: .prepare))
        let otherChain = try #require(SigningDomain(chainId: "amp-nudge-prod", purpose: .commit))
        let signature = commit.sign(payload, with: key)
        #expect(commit.verify(payload, signature: signature, publicKey: key.publicKey))
        #expect(!prepare.verify(payload, signature: signature, publicKey: key.publicKey))
        #expect(!otherChain.verify(payload, signature: signature, publicKey: key.publicKey))
        // The raw payload signature is not a domain signature either.
        #expect(!commit.verify(payload, signature: key.signature(for: payload), publicKey: key.publicKey))
        #expect(SigningDomain(chainId: "", purpose: .commit) == nil)
        #expect(SigningDomain(chainId: String(repeating: "x", count: SigningDomain.chainIdByteCountMax + 1), purpose: .commit) == nil)
    }

    @Test func keysAndSignaturesRoundTripThroughWire() throws {
        let key = Ed25519PrivateKey()
        let signature = key.signature(for: [1, 2, 3])
        #expect(try Ed25519PublicKey(wireBytes: key.publicKey.wireBytes) == key.publicKey)
        #expect(try Ed25519Signature(wireBytes: signature.wireBytes) == signature)
        #expect(throws: WireError.self) { try Ed25519Signature(wireBytes: Array(signature.wireBytes.dropLast())) }
        #expect(Ed25519PrivateKey(seed: [UInt8](repeating: 0, count: 31)) == nil)
    }
}
