import CalissonCrypto
import Wire

/// Who signs a transaction: a citizen's key, or a partner (with the signing key the
/// state lists for it, so that key rotation takes effect at once).
public enum TransactionSigner: Hashable, Sendable {
    case citizen(AccountID)
    case partner(Identifier)
}

/// What governance can do once a proposal passes.
public enum GovernanceAction: Hashable, Sendable {
    /// A new partner, with where its node takes validator links (rules 4; none: the
    /// action of rules 1).
    case admitPartner(Partner, endpoints: [PeerEndpoint] = [])
    case setPartnerStatus(Identifier, PartnerStatus)
    case rotateKeys(Identifier, signingKey: Ed25519PublicKey, nodeKey: Ed25519PublicKey?, tlsKeyHash: SHA256Digest?)
    case createProgramme(Programme)
    /// Replaces a programme's rules; its running totals are kept.
    case amendProgramme(Programme)
    case closeProgramme(Identifier)
    /// The partners whose nodes validate, in order (effective at the consensus epoch
    /// boundary, Docs/PROTOCOL.md).
    case setValidators([Identifier])
    case setParameters(Parameters)
    /// From `upgrade.height` on, the ledger's rules are at least `upgrade.rules`
    /// (`LedgerRules`); an upgrade of the same name not yet reached is moved.
    case scheduleUpgrade(ScheduledUpgrade)
    /// A partner's category, or none (rules 2: acceptance by category).
    case setPartnerCategory(Identifier, Category?)
    /// The categories of acceptors where a programme's tokens may also be spent; empty:
    /// only its listed acceptors, or anywhere when it lists none (rules 2).
    case setProgrammeAcceptance(Identifier, [Category])
    /// Whether a validator reported for equivocation is suspended at once (rules 3).
    case setEquivocationPolicy(suspend: Bool)
    /// Replaces a partner's endpoints (empty: none) (rules 4).
    case setPartnerEndpoints(Identifier, [PeerEndpoint])
    /// Withdraws a voted upgrade not yet in force (rules 4).
    case cancelUpgrade(Identifier)

    /// The first ledger rules version that knows this action.
    public var rulesIntroduced: UInt32 {
        switch self {
        case .setPartnerCategory, .setProgrammeAcceptance: return LedgerRules.acceptanceByCategory
        case .setEquivocationPolicy: return LedgerRules.evidence
        case let .admitPartner(_, endpoints): return endpoints.isEmpty ? LedgerRules.initial : LedgerRules.endpoints
        case .setPartnerEndpoints, .cancelUpgrade: return LedgerRules.endpoints
        default: return LedgerRules.initial
        }
    }
}

public enum TransactionBody: Hashable, Sendable {
    /// An issuer rewards `account` for `units` gesture units; `evidence` is a keyed hash
    /// the issuer keeps off chain (it proves the gesture without revealing it).
    case attribute(programme: Identifier, account: AccountID, units: UInt32, evidence: Bytes32)
    /// A citizen spends `amount` at `acceptor`; `service` is the acceptor's reference
    /// (a hash: no personal data).
    case redeem(acceptor: Identifier, amount: Amount, service: Bytes32)
    /// A citizen gives tokens of a transferable programme to another account.
    case transfer(to: AccountID, programme: Identifier, amount: Amount)
    case propose(GovernanceAction, deadline: UInt64)
    case vote(proposal: UInt64, approve: Bool)
    /// A partner reports a validator's two conflicting signed consensus statements (rules 3).
    case reportEquivocation(EquivocationEvidence)
    /// A partner replaces its own endpoints (empty: none) (rules 4).
    case setEndpoints([PeerEndpoint])

    /// The first ledger rules version that knows this transaction.
    public var rulesIntroduced: UInt32 {
        switch self {
        case let .propose(action, _): return action.rulesIntroduced
        case .reportEquivocation: return LedgerRules.evidence
        case .setEndpoints: return LedgerRules.endpoints
        default: return LedgerRules.initial
        }
    }
}

/// A transaction as signed: chain id, signer, nonce, expiry height, body.
public struct Transaction: Hashable, Sendable {
    public var chainId: String
    public var signer: TransactionSigner
    /// Any number, once per signer among unexpired transactions: with the expiry height
    /// it makes each transaction unique, so none can be replayed.
    public var nonce: UInt64
    /// Valid only in blocks at or below this height.
    public var expiryHeight: UInt64
    public var body: TransactionBody

    public init(chainId: String, signer: TransactionSigner, nonce: UInt64, expiryHeight: UInt64, body: TransactionBody) {
        self.chainId = chainId
        self.signer = signer
        self.nonce = nonce
        self.expiryHeight = expiryHeight
        self.body = body
    }

    /// The citizen accounts this transaction concerns: its citizen signer, an attribution's
    /// beneficiary, a transfer's receiver.
    public var accounts: [AccountID] {
        var accounts: [AccountID] = []
        if case let .citizen(key) = signer { accounts.append(key) }
        switch body {
        case let .attribute(_, account, _, _): accounts.append(account)
        case let .transfer(to, _, _): accounts.append(to)
        case .redeem, .propose, .vote, .reportEquivocation, .setEndpoints: break
        }
        return accounts
    }

    /// Why the ledger rejects a body signed by a partner that a citizen must sign, or the
    /// other way round.
    public static let partnerOnly = "this transaction must be signed by a partner"
    public static let citizenOnly = "this transaction must be signed by a citizen"

    /// Why this signer can never have this body applied (`partnerOnly`, `citizenOnly`), or
    /// nil: the ledger rejects it at any state, so a node refuses it at admission.
    public var signerMismatch: String? {
        switch (body, signer) {
        case (.attribute, .citizen), (.propose, .citizen), (.vote, .citizen), (.reportEquivocation, .citizen), (.setEndpoints, .citizen):
            return Self.partnerOnly
        case (.redeem, .partner), (.transfer, .partner):
            return Self.citizenOnly
        case (.attribute, .partner), (.propose, .partner), (.vote, .partner), (.reportEquivocation, .partner), (.setEndpoints, .partner),
            (.redeem, .citizen), (.transfer, .citizen):
            return nil
        }
    }

    /// The digest the signer signs: `SigningDomain(chainId, .transaction)`, so a signature
    /// made for one chain never verifies on another.
    public var signingDigest: SHA256Digest? {
        SigningDomain(chainId: chainId, purpose: .transaction)?.digest(for: wireBytes)
    }

    public func signed(with key: Ed25519PrivateKey) -> SignedTransaction {
        SignedTransaction(transaction: self, signature: key.signature(for: (signingDigest ?? .zero).bytes))
    }
}

public struct SignedTransaction: Hashable, Sendable {
    public static let byteCountMax = 16 * 1024
    public let transaction: Transaction
    public let signature: Ed25519Signature

    public init(transaction: Transaction, signature: Ed25519Signature) {
        self.transaction = transaction
        self.signature = signature
    }

    /// The transaction id: the consensus command id of its bytes (`Block.commandIDs`).
    public static let idTag = TaggedHasher(tag: "calisson/command/v1")
    public var id: SHA256Digest { Self.idTag.hash(wireBytes) }
}

// MARK: Wire forms

extension GovernanceAction: CustomStringConvertible {
    /// For people (the gateway's proposals and events, logs): the action's kind and what it
    /// names, as `admitPartner(velo)` or `setPartnerStatus(rtm, suspended)`; its wording
    /// may change (the wire encoding is the action).
    public var description: String {
        func list(_ items: [some CustomStringConvertible]) -> String { items.map(\.description).joined(separator: ", ") }
        switch self {
        case let .admitPartner(partner, endpoints):
            return "admitPartner(\(partner.id)\(endpoints.isEmpty ? "" : ", \(endpoints.count) endpoint\(endpoints.count == 1 ? "" : "s")"))"
        case let .setPartnerStatus(id, status): return "setPartnerStatus(\(id), \(status))"
        case let .rotateKeys(id, _, nodeKey, tlsKeyHash):
            return "rotateKeys(\(id), signing key\(nodeKey == nil ? "" : ", node key")\(tlsKeyHash == nil ? "" : ", TLS key"))"
        case let .createProgramme(programme): return "createProgramme(\(programme.id))"
        case let .amendProgramme(programme): return "amendProgramme(\(programme.id))"
        case let .closeProgramme(id): return "closeProgramme(\(id))"
        case let .setValidators(ids): return "setValidators(\(list(ids)))"
        case .setParameters: return "setParameters"
        case let .scheduleUpgrade(upgrade): return "scheduleUpgrade(\(upgrade.name), rules \(upgrade.rules) from height \(upgrade.height))"
        case let .setPartnerCategory(id, category): return "setPartnerCategory(\(id), \(category.map { "\($0)" } ?? "none"))"
        case let .setProgrammeAcceptance(id, categories): return "setProgrammeAcceptance(\(id)\(categories.isEmpty ? "" : ", \(list(categories.map { "\($0)" }))"))"
        case let .setEquivocationPolicy(suspend): return "setEquivocationPolicy(\(suspend ? "suspend" : "report only"))"
        case let .setPartnerEndpoints(id, endpoints): return "setPartnerEndpoints(\(id), \(endpoints.count) endpoint\(endpoints.count == 1 ? "" : "s"))"
        case let .cancelUpgrade(name): return "cancelUpgrade(\(name))"
        }
    }
}

extension GovernanceAction: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .admitPartner(partner, endpoints) where endpoints.isEmpty: writer.write(UInt8(1)); writer.write(partner)
        case let .admitPartner(partner, endpoints): writer.write(UInt8(13)); writer.write(partner); writer.write(EndpointList(endpoints))
        case let .setPartnerStatus(id, status): writer.write(UInt8(2)); writer.write(id); writer.write(status.rawValue)
        case let .rotateKeys(id, signingKey, nodeKey, tlsKeyHash):
            writer.write(UInt8(3))
            writer.write(id)
            writer.write(signingKey)
            writer.writeOptional(nodeKey)
            writer.writeOptional(tlsKeyHash)
        case let .createProgramme(programme): writer.write(UInt8(4)); writer.write(programme)
        case let .amendProgramme(programme): writer.write(UInt8(5)); writer.write(programme)
        case let .closeProgramme(id): writer.write(UInt8(6)); writer.write(id)
        case let .setValidators(ids): writer.write(UInt8(7)); writer.writeArray(ids)
        case let .setParameters(parameters): writer.write(UInt8(8)); writer.write(parameters)
        case let .scheduleUpgrade(upgrade): writer.write(UInt8(9)); writer.write(upgrade)
        case let .setPartnerCategory(id, category): writer.write(UInt8(10)); writer.write(id); writer.writeOptional(category)
        case let .setProgrammeAcceptance(id, categories): writer.write(UInt8(11)); writer.write(id); writer.write(CategoryList(categories))
        case let .setEquivocationPolicy(suspend): writer.write(UInt8(12)); writer.write(suspend)
        case let .setPartnerEndpoints(id, endpoints): writer.write(UInt8(14)); writer.write(id); writer.write(EndpointList(endpoints))
        case let .cancelUpgrade(name): writer.write(UInt8(15)); writer.write(name)
        }
    }

    /// The kinds each rules version added after the first (`WireReader.formatVersion`):
    /// below its version a kind is unknown, as it was to the code written before it.
    static func kindKnown(_ kind: UInt8, formatVersion: UInt32) -> Bool {
        switch kind {
        case 10, 11: return formatVersion >= LedgerRules.acceptanceByCategory
        case 12: return formatVersion >= LedgerRules.evidence
        case 13, 14, 15: return formatVersion >= LedgerRules.endpoints
        default: return true
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let kind = try reader.readUInt8("action.kind")
        guard Self.kindKnown(kind, formatVersion: reader.formatVersion) else {
            throw .unknownKind(field: "action.kind", offset: offset, raw: UInt64(kind))
        }
        switch kind {
        case 1: self = .admitPartner(try Partner(from: &reader))
        case 2:
            let id = try Identifier(from: &reader)
            self = .setPartnerStatus(id, try reader.readEnum("action.status"))
        case 3:
            let id = try Identifier(from: &reader)
            let signingKey = try Ed25519PublicKey(from: &reader)
            let nodeKey = try reader.readOptional("action.nodeKey", of: Ed25519PublicKey.self)
            let tls = try reader.readOptional("action.tlsKeyHash", of: SHA256Digest.self)
            self = .rotateKeys(id, signingKey: signingKey, nodeKey: nodeKey, tlsKeyHash: tls)
        case 4: self = .createProgramme(try Programme(from: &reader))
        case 5: self = .amendProgramme(try Programme(from: &reader))
        case 6: self = .closeProgramme(try Identifier(from: &reader))
        case 7: self = .setValidators(try reader.readArray("action.validators", maximum: LedgerLimits.listCountMax, of: Identifier.self))
        case 8: self = .setParameters(try Parameters(from: &reader))
        case 9: self = .scheduleUpgrade(try ScheduledUpgrade(from: &reader))
        case 10:
            let id = try Identifier(from: &reader)
            self = .setPartnerCategory(id, try reader.readOptional("action.category", of: Category.self))
        case 11:
            let id = try Identifier(from: &reader)
            self = .setProgrammeAcceptance(id, try CategoryList(from: &reader).categories)
        case 12: self = .setEquivocationPolicy(suspend: try reader.readBool("action.suspend"))
        case 13:
            let partner = try Partner(from: &reader)
            let endpoints = try EndpointList(from: &reader).endpoints
            // An admission without endpoints is kind 1: one action, one encoding.
            guard !endpoints.isEmpty else { throw .invalidValue(field: "action.endpoints", offset: reader.offset, reason: "empty (kind 1 admits without)") }
            self = .admitPartner(partner, endpoints: endpoints)
        case 14:
            let id = try Identifier(from: &reader)
            self = .setPartnerEndpoints(id, try EndpointList(from: &reader).endpoints)
        case 15: self = .cancelUpgrade(try Identifier(from: &reader))
        case let raw: throw .unknownKind(field: "action.kind", offset: offset, raw: UInt64(raw))
        }
    }
}

extension TransactionBody: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .attribute(programme, account, units, evidence):
            writer.write(UInt8(1)); writer.write(programme); writer.write(account); writer.write(units); writer.write(evidence)
        case let .redeem(acceptor, amount, service):
            writer.write(UInt8(2)); writer.write(acceptor); writer.write(amount); writer.write(service)
        case let .transfer(to, programme, amount):
            writer.write(UInt8(3)); writer.write(to); writer.write(programme); writer.write(amount)
        case let .propose(action, deadline):
            writer.write(UInt8(4)); writer.write(action); writer.write(deadline)
        case let .vote(proposal, approve):
            writer.write(UInt8(5)); writer.write(proposal); writer.write(approve)
        case let .reportEquivocation(evidence):
            writer.write(UInt8(6)); writer.write(evidence)
        case let .setEndpoints(endpoints):
            writer.write(UInt8(7)); writer.write(EndpointList(endpoints))
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let kind = try reader.readUInt8("body.kind")
        // Kinds a later rules version added are unknown below it, as to the code before them.
        let introduced = kind == 6 ? LedgerRules.evidence : kind == 7 ? LedgerRules.endpoints : LedgerRules.initial
        guard reader.formatVersion >= introduced else {
            throw .unknownKind(field: "body.kind", offset: offset, raw: UInt64(kind))
        }
        switch kind {
        case 1:
            let programme = try Identifier(from: &reader)
            let account = try AccountID(from: &reader)
            let units = try reader.readUInt32("attribute.units")
            self = .attribute(programme: programme, account: account, units: units, evidence: try Bytes32(from: &reader))
        case 2:
            let acceptor = try Identifier(from: &reader)
            let amount = try reader.readUInt64("redeem.amount")
            self = .redeem(acceptor: acceptor, amount: amount, service: try Bytes32(from: &reader))
        case 3:
            let to = try AccountID(from: &reader)
            let programme = try Identifier(from: &reader)
            self = .transfer(to: to, programme: programme, amount: try reader.readUInt64("transfer.amount"))
        case 4:
            let action = try GovernanceAction(from: &reader)
            self = .propose(action, deadline: try reader.readUInt64("propose.deadline"))
        case 5:
            let proposal = try reader.readUInt64("vote.proposal")
            self = .vote(proposal: proposal, approve: try reader.readBool("vote.approve"))
        case 6: self = .reportEquivocation(try EquivocationEvidence(from: &reader))
        case 7: self = .setEndpoints(try EndpointList(from: &reader).endpoints)
        case let raw: throw .unknownKind(field: "body.kind", offset: offset, raw: UInt64(raw))
        }
    }
}

extension TransactionSigner: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .citizen(key): writer.write(UInt8(1)); writer.write(key)
        case let .partner(id): writer.write(UInt8(2)); writer.write(id)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("signer.kind") {
        case 1: self = .citizen(try AccountID(from: &reader))
        case 2: self = .partner(try Identifier(from: &reader))
        case let raw: throw .unknownKind(field: "signer.kind", offset: offset, raw: UInt64(raw))
        }
    }
}

extension Transaction: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.writeString(chainId)
        writer.write(signer)
        writer.write(nonce)
        writer.write(expiryHeight)
        writer.write(body)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        chainId = try reader.readString("transaction.chainId", maximumBytes: SigningDomain.chainIdByteCountMax)
        signer = try TransactionSigner(from: &reader)
        nonce = try reader.readUInt64("transaction.nonce")
        expiryHeight = try reader.readUInt64("transaction.expiryHeight")
        body = try TransactionBody(from: &reader)
    }
}

extension SignedTransaction: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(transaction)
        writer.write(signature)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        transaction = try Transaction(from: &reader)
        signature = try Ed25519Signature(from: &reader)
    }
}
