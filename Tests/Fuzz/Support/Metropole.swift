import CalissonCrypto
import Ledger
import Wire

/// A small Métropole: five partners, four of them validators, two programmes.
public enum Metropole {
    public static let chainId = "calisson-fuzz"

    public static func key(_ label: String) -> Ed25519PrivateKey { Ed25519PrivateKey(seed: SHA256.hash(label).bytes)! }

    public static let genesisFile: GenesisFile = {
        func partner(_ id: String, _ roles: [String], validator: Bool) -> GenesisFile.PartnerEntry {
            GenesisFile.PartnerEntry(
                id: id, name: id, roles: roles, signingKey: key("sign \(id)").publicKey.bytes.hex,
                nodeKey: validator ? key("node \(id)").publicKey.bytes.hex : nil, tlsKeyHash: nil)
        }
        return GenesisFile(
            chainId: chainId,
            parameters: .init(epochLength: 4, blocksPerDay: 10, transactionLifetimeMax: 50, proposalLifetimeMax: 100, approval: "2/3", sink: "fonds"),
            partners: [
                partner("metropole", ["authority", "issuer", "acceptor", "validator"], validator: true),
                partner("rtm", ["issuer", "acceptor", "validator"], validator: true),
                partner("tri", ["issuer", "validator"], validator: true),
                partner("friche", ["acceptor", "issuer", "validator"], validator: true),
                partner("fonds", ["acceptor"], validator: false),
            ],
            validators: ["metropole", "rtm", "tri", "friche"],
            programmes: [
                .init(id: "recyclage", name: "Tri", category: "wasteSorting", rewardPerUnit: 10, issuers: ["tri"], sponsor: "metropole",
                      capPerAccount: 300, capPeriod: "month", walletCeiling: 500, budget: 100_000, expiryEpochs: 1, demurrageBasisPoints: nil,
                      acceptors: nil, transferable: false, startHeight: nil, endHeight: nil),
                .init(id: "culture", name: "Culture", category: "event", rewardPerUnit: 100, issuers: ["friche", "metropole"], sponsor: "friche",
                      capPerAccount: 1_000, capPeriod: "week", walletCeiling: 2_000, budget: 50_000, expiryEpochs: nil, demurrageBasisPoints: 200,
                      acceptors: ["friche", "rtm"], transferable: true, startHeight: nil, endHeight: nil),
            ])
    }()

    nonisolated(unsafe) public static let ledger: Ledger<MemoryStateStore> = {
        try! Ledger.create(try! genesisFile.validated(), in: MemoryStateStore())
    }()

    /// The same ledger past an upgrade to the newest rules (voted by every partner at
    /// height 1, in force from height 3): the rules-2 and rules-3 kinds execute there.
    nonisolated(unsafe) public static let upgradedLedger: Ledger<MemoryStateStore> = {
        var ledger = try! Ledger.create(try! genesisFile.validated(), in: MemoryStateStore())
        func signed(_ partner: String, _ nonce: UInt64, _ body: TransactionBody) -> [UInt8] {
            Transaction(chainId: chainId, signer: .partner(id(partner)), nonce: nonce, expiryHeight: 40, body: body)
                .signed(with: key("sign \(partner)")).wireBytes
        }
        let upgrade = GovernanceAction.scheduleUpgrade(ScheduledUpgrade(name: id("newest"), height: 3, rules: LedgerRules.newest))
        _ = ledger.execute([signed("metropole", 1_000_001, .propose(upgrade, deadline: 30))] + ["rtm", "tri", "friche"].map {
            signed($0, 1_000_001, .vote(proposal: 1, approve: true))
        })
        while ledger.rules(atHeight: ledger.height + 1) < LedgerRules.newest { _ = ledger.execute([]) }
        return ledger
    }()

    public static func id(_ raw: String) -> Identifier { Identifier(raw)! }

    /// Valid transactions of every kind: the corpus the fuzzer starts from.
    public static func transactionSeeds() -> [[UInt8]] {
        let citizen = key("citizen 1"), other = key("citizen 2")
        var nonce: UInt64 = 0
        func partnerTx(_ partner: String, _ body: TransactionBody) -> [UInt8] {
            nonce += 1
            return Transaction(chainId: chainId, signer: .partner(id(partner)), nonce: nonce, expiryHeight: 20, body: body)
                .signed(with: key("sign \(partner)")).wireBytes
        }
        func citizenTx(_ signer: Ed25519PrivateKey, _ body: TransactionBody) -> [UInt8] {
            nonce += 1
            return Transaction(chainId: chainId, signer: .citizen(signer.publicKey), nonce: nonce, expiryHeight: 20, body: body)
                .signed(with: signer).wireBytes
        }
        let reward = partnerTx("tri", .attribute(programme: id("recyclage"), account: citizen.publicKey, units: 3, evidence: SHA256.hash("slip 1")))
        let pass = partnerTx("friche", .attribute(programme: id("culture"), account: citizen.publicKey, units: 2, evidence: SHA256.hash("pass 1")))
        let spend = citizenTx(citizen, .redeem(acceptor: id("friche"), amount: 50, service: SHA256.hash("ticket")))
        let give = citizenTx(citizen, .transfer(to: other.publicKey, programme: id("culture"), amount: 20))
        let suspend = partnerTx("metropole", .propose(.setPartnerStatus(id("fonds"), .suspended), deadline: 30))
        let vote = partnerTx("rtm", .vote(proposal: 1, approve: true))
        let validators = partnerTx("metropole", .propose(.setValidators([id("metropole"), id("rtm"), id("tri")]), deadline: 30))
        let close = partnerTx("metropole", .propose(.closeProgramme(id("recyclage")), deadline: 30))
        // The kinds of later rules: an upgrade, acceptance by category, equivocation evidence.
        let upgrade = partnerTx("metropole", .propose(.scheduleUpgrade(ScheduledUpgrade(name: id("later"), height: 25, rules: 4)), deadline: 30))
        let category = partnerTx("metropole", .propose(.setPartnerCategory(id("friche"), .event), deadline: 30))
        let acceptance = partnerTx("metropole", .propose(.setProgrammeAcceptance(id("recyclage"), [.transit, .event]), deadline: 30))
        let policy = partnerTx("metropole", .propose(.setEquivocationPolicy(suspend: true), deadline: 30))
        let node = key("node tri")
        let blank = Ed25519Signature(Bytes64.zero)
        let draft = EquivocationEvidence(
            nodeKey: node.publicKey, kind: .proposal, view: 1, seq: 2, .init(hash: SHA256.hash("a"), commandCount: 1, signature: blank),
            .init(hash: SHA256.hash("b"), commandCount: 2, signature: blank))!
        let sign = { (statement: EquivocationEvidence.Statement) in
            EquivocationEvidence.Statement(
                hash: statement.hash, commandCount: statement.commandCount,
                signature: node.signature(for: draft.signedDigest(statement, chainId: chainId)!.bytes))
        }
        let evidence = EquivocationEvidence(nodeKey: node.publicKey, kind: .proposal, view: 1, seq: 2, sign(draft.first), sign(draft.second))!
        let report = partnerTx("rtm", .reportEquivocation(evidence))
        // Rules 4: endpoints set by a partner and by governance, an admission with them, an upgrade cancelled.
        let endpoints = [PeerEndpoint("10.0.0.1:7100")!, PeerEndpoint("node.rtm.example:7100")!]
        let ownEndpoints = partnerTx("rtm", .setEndpoints(endpoints))
        let theirEndpoints = partnerTx("metropole", .propose(.setPartnerEndpoints(id("friche"), endpoints), deadline: 30))
        let admission = partnerTx("metropole", .propose(.admitPartner(
            Partner(id: id("velo"), name: "Vélo", roles: [.acceptor], signingKey: key("velo").publicKey), endpoints: endpoints), deadline: 30))
        let cancel = partnerTx("metropole", .propose(.cancelUpgrade(id("later")), deadline: 30))
        return [
            Pieces.join([ownEndpoints]), Pieces.join([theirEndpoints, admission]), Pieces.join([upgrade, cancel]),
            Pieces.join([upgrade]), Pieces.join([category, acceptance]), Pieces.join([policy, report]), Pieces.join([report]),
            Pieces.join([reward]), Pieces.join([pass]), Pieces.join([spend]), Pieces.join([give]), Pieces.join([suspend]),
            Pieces.join([vote]), Pieces.join([validators]), Pieces.join([close]),
            Pieces.join([reward, pass, spend, give]),
            Pieces.join([suspend, vote, partnerTx("tri", .vote(proposal: 1, approve: true)), partnerTx("friche", .vote(proposal: 1, approve: false))]),
        ]
    }
}


extension Metropole {
    public static let validatorNames = ["metropole", "rtm", "tri", "friche"]
    public static var nodeKeys: [Ed25519PublicKey] { validatorNames.map { key("node \($0)").publicKey } }

    /// A checkpoint certificate (the light client's wire form) for `root` at `height`,
    /// signed by the first `signers` validators.
    public static func checkpointCertificate(height: UInt64, root: SHA256Digest, signers: Int = 3) -> [UInt8] {
        var body = WireWriter()
        body.write(height)
        body.write(root)
        let digest = SigningDomain(chainId: chainId, purpose: .checkpoint)!.digest(for: body.bytes)
        var writer = WireWriter()
        writer.write(UInt32(signers))
        for name in validatorNames.prefix(signers) {
            let node = key("node \(name)")
            writer.write(height)
            writer.write(root)
            writer.write(node.publicKey)
            writer.write(node.signature(for: digest.bytes))
        }
        return writer.bytes
    }
}
