import CalissonCrypto
import Ledger
import Wire

/// The consortia and transactions that the tests, the simulator, the benchmarks and the
/// storage crash writer build: written once here, so that a change of the genesis format
/// or of a transaction is made in one place. Each builder returns a `GenesisFile` that its
/// caller may adjust (an epoch length, a reward) before `validated()`. No binary a partner
/// runs (the node, the gateway, the CLI) links this module.
public enum Fixture {
    /// A key derived from `label`: the same in every run and every process.
    public static func key(_ label: String) -> Ed25519PrivateKey {
        guard let key = Ed25519PrivateKey(seed: SHA256.hash(label).bytes) else { preconditionFailure("a SHA-256 digest is a 32-byte seed") }
        return key
    }

    /// A programme whose limits no test or benchmark reaches (caps and ceiling 2^40,
    /// budget 2^55), issued by `issuers`, expiring after `expiryEpochs`.
    public static func openProgramme(
        _ id: String, issuers: [String], sponsor: String, rewardPerUnit: UInt64 = 1, expiryEpochs: UInt32 = 1_000
    ) -> GenesisFile.ProgrammeEntry {
        .init(id: id, name: id, category: "other", rewardPerUnit: rewardPerUnit, issuers: issuers, sponsor: sponsor, capPerAccount: 1 << 40,
              capPeriod: "month", walletCeiling: 1 << 40, budget: 1 << 55, expiryEpochs: expiryEpochs)
    }

    /// One partner, `metropole`, with every role, signing and validating with `key` (or
    /// `nodeKey`), the sink; one open programme `programme` it issues.
    public static func solo(
        chainId: String, key: Ed25519PublicKey, nodeKey: Ed25519PublicKey? = nil, tlsKeyHash: SHA256Digest? = nil, programme: String = "tri"
    ) -> GenesisFile {
        GenesisFile(
            chainId: chainId, parameters: .init(sink: "metropole"),
            partners: [.init(id: "metropole", name: "Métropole", roles: ["authority", "issuer", "acceptor", "validator"], signingKey: key.bytes.hex,
                             nodeKey: (nodeKey ?? key).bytes.hex, tlsKeyHash: tlsKeyHash?.hex)],
            validators: ["metropole"],
            programmes: [openProgramme(programme, issuers: ["metropole"], sponsor: "metropole")])
    }

    /// Partners `p0`…`p(n−1)`, one per node key, in consensus order: each an issuer, an
    /// acceptor and a validator, `p0` also the authority and the sink; one open programme
    /// `programme` they all issue.
    public static func validators(
        chainId: String, nodeKeys: [Ed25519PublicKey], signingKeys: [Ed25519PublicKey], tlsKeyHashes: [SHA256Digest]? = nil,
        programme: String = "tri"
    ) -> GenesisFile {
        precondition(signingKeys.count == nodeKeys.count && (tlsKeyHashes?.count ?? nodeKeys.count) == nodeKeys.count,
                     "one signing key (and TLS key hash) per node key")
        let ids = nodeKeys.indices.map { "p\($0)" }
        return GenesisFile(
            chainId: chainId, parameters: .init(sink: "p0"),
            partners: nodeKeys.indices.map { index in
                .init(id: ids[index], name: "partner \(index)", roles: (index == 0 ? ["authority"] : []) + ["issuer", "acceptor", "validator"],
                      signingKey: signingKeys[index].bytes.hex, nodeKey: nodeKeys[index].bytes.hex, tlsKeyHash: tlsKeyHashes?[index].hex)
            },
            validators: ids,
            programmes: [openProgramme(programme, issuers: ids, sponsor: "p0")])
    }

    /// A small Métropole: five partners (the Métropole, the transit operator, the waste
    /// service, a cultural venue, four of them validators; a common fund that only
    /// accepts and is the sink), keys `key("sign <id>")` and `key("node <id>")`; three
    /// programmes: expiring waste-sorting rewards, a culture pass with demurrage that can
    /// be given away and spent at two acceptors, a transit bonus spent only on the network.
    public static func smallMetropole(chainId: String) -> GenesisFile {
        func partner(_ id: String, _ name: String, _ roles: [String], validator: Bool) -> GenesisFile.PartnerEntry {
            .init(id: id, name: name, roles: roles, signingKey: key("sign \(id)").publicKey.bytes.hex,
                  nodeKey: validator ? key("node \(id)").publicKey.bytes.hex : nil, tlsKeyHash: nil)
        }
        return GenesisFile(
            chainId: chainId,
            parameters: .init(epochLength: 10, blocksPerDay: 100, transactionLifetimeMax: 50, proposalLifetimeMax: 1_000, approval: "2/3", sink: "fonds"),
            partners: [
                partner("metropole", "Métropole Aix-Marseille-Provence", ["authority", "issuer", "acceptor", "validator"], validator: true),
                partner("rtm", "Régie des transports", ["issuer", "acceptor", "validator"], validator: true),
                partner("tri", "Service déchets", ["issuer", "validator"], validator: true),
                partner("friche", "La Friche", ["acceptor", "issuer", "validator"], validator: true),
                partner("fonds", "Fonds commun", ["acceptor"], validator: false),
            ],
            validators: ["metropole", "rtm", "tri", "friche"],
            programmes: [
                .init(id: "recyclage", name: "Tri sélectif", category: "wasteSorting", rewardPerUnit: 10, issuers: ["tri"], sponsor: "metropole",
                      capPerAccount: 300, capPeriod: "month", walletCeiling: 500, budget: 100_000, expiryEpochs: 1, transferable: false),
                .init(id: "culture", name: "Pass culture", category: "event", rewardPerUnit: 100, issuers: ["friche", "metropole"], sponsor: "friche",
                      capPerAccount: 1_000, capPeriod: "week", walletCeiling: 2_000, budget: 50_000, demurrageBasisPoints: 200,
                      acceptors: ["friche", "rtm"], transferable: true),
                .init(id: "mobilite", name: "Bonus mobilité", category: "transit", rewardPerUnit: 5, issuers: ["rtm"], sponsor: "rtm",
                      capPerAccount: 200, capPeriod: "day", walletCeiling: 400, budget: 20_000, expiryEpochs: 3, acceptors: ["rtm"], transferable: false),
            ])
    }

    /// The validated genesis of a fixture: a failure is a bug in the caller's fixture, not input.
    public static func validated(_ file: GenesisFile) -> Genesis {
        do { return try file.validated() } catch { preconditionFailure("a fixture's genesis does not validate: \(error)") }
    }
}

extension Transaction {
    /// An attribution by partner `issuer`: `units` of `programme` to `account`, for the
    /// gesture whose evidence commitment is `evidence`; unsigned (`signed(with:)` next).
    public static func attribution(
        chainId: String, by issuer: String, nonce: UInt64, expiry: UInt64, programme: String = "tri", to account: AccountID, units: UInt32 = 1,
        evidence: Bytes32
    ) -> Transaction {
        guard let issuerID = Identifier(issuer), let programmeID = Identifier(programme) else {
            preconditionFailure("fixture identifiers are valid: \(issuer), \(programme)")
        }
        return Transaction(chainId: chainId, signer: .partner(issuerID), nonce: nonce, expiryHeight: expiry,
                           body: .attribute(programme: programmeID, account: account, units: units, evidence: evidence))
    }
}
