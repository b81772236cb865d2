// Test vectors for the canonical encoding, signing digest, signature and id of each
// transaction kind: Tests/Vectors/transactions.json, for clients in other languages
// (examples/python checks itself against them). This test builds every vector from its
// fields with the ledger's own code and compares it to the file, byte for byte: a change
// of the wire form or of the signing domain fails here, so it cannot happen by accident.
// `CALISSON_WRITE_VECTORS=1 swift test --filter TransactionVectorTests` rewrites the file
// (then review the diff: every client must follow).
import CalissonTestKit
import CalissonCrypto
import Foundation
import Ledger
import Testing
import Wire

struct TransactionVectors: Codable, Equatable {
    var description: String
    var vectors: [Vector]

    struct Vector: Codable, Equatable {
        var name: String
        var chainId: String
        /// The signer's Ed25519 seed (32 bytes, hex) and public key.
        var signerSeed: String
        var signerPublicKey: String
        /// `{"partner": "<id>"}` or `{"citizen": "<public key hex>"}`.
        var signer: [String: String]
        var nonce: UInt64
        var expiryHeight: UInt64
        var body: Body
        /// The transaction as signed (its canonical wire form), the digest signed
        /// (`SigningDomain(chainId, transaction)`), the Ed25519 signature of that digest,
        /// the signed transaction's wire form (what `POST /v1/transactions` takes), its id.
        var transaction: String
        var signingDigest: String
        var signature: String
        var signedTransaction: String
        var id: String
    }

    /// The body's fields, as the gateway's JSON names them.
    struct Body: Codable, Equatable {
        var kind: String
        var programme: String?
        var account: String?
        var units: UInt32?
        var evidence: String?
        var acceptor: String?
        var amount: UInt64?
        var service: String?
        var to: String?
        var proposal: UInt64?
        var approve: Bool?
        var deadline: UInt64?
        var action: Action?
        /// `setEndpoints` (ledger rules 4): "host:port", sorted and distinct.
        var endpoints: [String]?
    }

    struct Action: Codable, Equatable {
        var kind: String
        var target: String?
        var validators: [String]?
        var endpoints: [String]?
    }
}

@Suite(.onOwnThreads) struct TransactionVectorTests {
    static let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Vectors/transactions.json").path

    static func key(_ name: String) -> Ed25519PrivateKey { Ed25519PrivateKey(seed: SHA256.hash("vector \(name)").bytes)! }

    static func vector(
        _ name: String, chainId: String = "amp-nudge-vectors", partner: String?, nonce: UInt64, expiry: UInt64, _ body: TransactionBody,
        _ fields: TransactionVectors.Body
    ) -> TransactionVectors.Vector {
        let key = key(name)
        let signer: TransactionSigner = partner.map { .partner(Identifier($0)!) } ?? .citizen(key.publicKey)
        let transaction = Transaction(chainId: chainId, signer: signer, nonce: nonce, expiryHeight: expiry, body: body)
        let signed = transaction.signed(with: key)
        return .init(
            name: name, chainId: chainId, signerSeed: SHA256.hash("vector \(name)").hex, signerPublicKey: key.publicKey.bytes.hex,
            signer: partner.map { ["partner": $0] } ?? ["citizen": key.publicKey.bytes.hex], nonce: nonce, expiryHeight: expiry, body: fields,
            transaction: Hex.encode(transaction.wireBytes), signingDigest: transaction.signingDigest!.hex, signature: signed.signature.bytes64.hex,
            signedTransaction: Hex.encode(signed.wireBytes), id: signed.id.hex)
    }

    static func all() -> TransactionVectors {
        let citizen = key("a citizen").publicKey
        let evidence = SHA256.hash("evidence of a trip")
        let service = SHA256.hash("a museum ticket")
        let vectors: [TransactionVectors.Vector] = [
            vector("attribute", partner: "rtm", nonce: 1, expiry: 1_000,
                   .attribute(programme: Identifier("mobilite")!, account: citizen, units: 3, evidence: evidence),
                   .init(kind: "attribute", programme: "mobilite", account: citizen.bytes.hex, units: 3, evidence: evidence.hex)),
            vector("attribute at the bounds", partner: "a-partner-id-of-32-characters-xx", nonce: UInt64.max, expiry: UInt64.max,
                   .attribute(programme: Identifier("p")!, account: citizen, units: UInt32.max, evidence: .zero),
                   .init(kind: "attribute", programme: "p", account: citizen.bytes.hex, units: UInt32.max, evidence: Bytes32.zero.hex)),
            vector("redeem", partner: nil, nonce: 7, expiry: 2_000,
                   .redeem(acceptor: Identifier("friche")!, amount: 20, service: service),
                   .init(kind: "redeem", acceptor: "friche", amount: 20, service: service.hex)),
            vector("redeem the largest amount", chainId: "c", partner: nil, nonce: 0, expiry: 1,
                   .redeem(acceptor: Identifier("friche")!, amount: LedgerLimits.amountMax, service: service),
                   .init(kind: "redeem", acceptor: "friche", amount: LedgerLimits.amountMax, service: service.hex)),
            vector("transfer", partner: nil, nonce: 8, expiry: 2_000,
                   .transfer(to: citizen, programme: Identifier("velo")!, amount: 5),
                   .init(kind: "transfer", programme: "velo", amount: 5, to: citizen.bytes.hex)),
            vector("vote", partner: "friche", nonce: 3, expiry: 500, .vote(proposal: 4, approve: true),
                   .init(kind: "vote", proposal: 4, approve: true)),
            vector("vote no", partner: "friche", nonce: 4, expiry: 500, .vote(proposal: 1 << 40, approve: false),
                   .init(kind: "vote", proposal: 1 << 40, approve: false)),
            vector("propose closeProgramme", partner: "metropole", nonce: 9, expiry: 600,
                   .propose(.closeProgramme(Identifier("culture")!), deadline: 5_600),
                   .init(kind: "propose", deadline: 5_600, action: .init(kind: "closeProgramme", target: "culture"))),
            vector("propose suspendPartner", partner: "metropole", nonce: 10, expiry: 600,
                   .propose(.setPartnerStatus(Identifier("velo-partage")!, .suspended), deadline: 700),
                   .init(kind: "propose", deadline: 700, action: .init(kind: "suspendPartner", target: "velo-partage"))),
            vector("propose setValidators", partner: "metropole", nonce: 11, expiry: 600,
                   .propose(.setValidators(["metropole", "rtm", "friche", "enedis"].map { Identifier($0)! }), deadline: 700),
                   .init(kind: "propose", deadline: 700, action: .init(kind: "setValidators", validators: ["metropole", "rtm", "friche", "enedis"]))),
            vector("setEndpoints", partner: "rtm", nonce: 12, expiry: 800,
                   .setEndpoints([PeerEndpoint("10.0.0.2:7100")!, PeerEndpoint("node.rtm.example:7100")!]),
                   .init(kind: "setEndpoints", endpoints: ["10.0.0.2:7100", "node.rtm.example:7100"])),
            vector("propose setPartnerEndpoints", partner: "metropole", nonce: 13, expiry: 800,
                   .propose(.setPartnerEndpoints(Identifier("velo-azur")!, [PeerEndpoint("velo.example:65535")!]), deadline: 900),
                   .init(kind: "propose", deadline: 900, action: .init(kind: "setPartnerEndpoints", target: "velo-azur", endpoints: ["velo.example:65535"]))),
        ]
        return TransactionVectors(
            description: """
                Calisson transactions: for each, the fields, the canonical wire form of the transaction as signed (hex), \
                the digest signed (TaggedHash("calisson/signature/v1", purpose 1 || chainId as u32-length-prefixed UTF-8 || transaction)), \
                the Ed25519 signature of those 32 bytes by the key with signerSeed, the signed transaction's wire form, \
                and its id (TaggedHash("calisson/command/v1", signed transaction)). Docs/WIRE.md; written by \
                Tests/LedgerTests/TransactionVectorTests.swift.
                """,
            vectors: vectors)
    }

    @Test func theVectorsFileIsWhatTheLedgerEncodes() throws {
        let expected = Self.all()
        if ProcessInfo.processInfo.environment["CALISSON_WRITE_VECTORS"] == "1" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FileManager.default.createDirectory(atPath: (Self.file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try (encoder.encode(expected) + Data("\n".utf8)).write(to: URL(fileURLWithPath: Self.file))
        }
        let stored = try JSONDecoder().decode(TransactionVectors.self, from: Data(contentsOf: URL(fileURLWithPath: Self.file)))
        #expect(stored.vectors.count == expected.vectors.count)
        for (file, built) in zip(stored.vectors, expected.vectors) {
            #expect(file == built, "vector '\(built.name)' differs from what the ledger encodes")
        }
        // And each file vector stands on its own: its bytes decode to its fields, its
        // signature verifies, its id is the hash of its bytes.
        for vector in stored.vectors {
            let signed = try SignedTransaction(wireBytes: try #require(Hex.decode(vector.signedTransaction)))
            #expect(Hex.encode(signed.transaction.wireBytes) == vector.transaction)
            #expect(signed.transaction.signingDigest?.hex == vector.signingDigest)
            let publicKey = Ed25519PublicKey(try #require(Bytes32(hex: vector.signerPublicKey)))
            #expect(SignatureCheck(publicKey: publicKey, digest: signed.transaction.signingDigest!, signature: signed.signature).verify(), "\(vector.name)")
            #expect(SignedTransaction.idTag.hash(try #require(Hex.decode(vector.signedTransaction))).hex == vector.id)
        }
    }
}
