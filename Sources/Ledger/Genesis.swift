import CalissonCrypto
import Wire

/// The genesis file (JSON; Docs/LEDGER.md gives the format). Decoded with any `Decoder`
/// (the node uses Foundation's JSONDecoder; this module stays free of Foundation), then
/// checked by `validated()`, which names the field of every problem.
public struct GenesisFile: Codable, Sendable, Equatable {
    public var chainId: String
    public var parameters: ParametersEntry
    public var partners: [PartnerEntry]
    /// Partner ids whose nodes validate, in consensus order.
    public var validators: [String]
    public var programmes: [ProgrammeEntry]
    /// The ledger rules the chain starts with (`LedgerRules`; absent: 1).
    public var rules: UInt32?

    public init(
        chainId: String, parameters: ParametersEntry, partners: [PartnerEntry], validators: [String], programmes: [ProgrammeEntry],
        rules: UInt32? = nil
    ) {
        self.chainId = chainId
        self.parameters = parameters
        self.partners = partners
        self.validators = validators
        self.programmes = programmes
        self.rules = rules
    }

    public struct ParametersEntry: Codable, Sendable, Equatable {
        public var epochLength: UInt64?
        public var blocksPerDay: UInt64?
        public var transactionLifetimeMax: UInt64?
        public var proposalLifetimeMax: UInt64?
        /// "2/3" by default.
        public var approval: String?
        /// The partner receiving demurrage.
        public var sink: String
        /// Micro-euros per token unit (0, the default: not set).
        public var tokenValueMicroEuros: UInt64?

        public init(
            epochLength: UInt64? = nil, blocksPerDay: UInt64? = nil, transactionLifetimeMax: UInt64? = nil,
            proposalLifetimeMax: UInt64? = nil, approval: String? = nil, sink: String, tokenValueMicroEuros: UInt64? = nil
        ) {
            self.tokenValueMicroEuros = tokenValueMicroEuros
            self.epochLength = epochLength
            self.blocksPerDay = blocksPerDay
            self.transactionLifetimeMax = transactionLifetimeMax
            self.proposalLifetimeMax = proposalLifetimeMax
            self.approval = approval
            self.sink = sink
        }
    }

    public struct PartnerEntry: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        /// Any of "issuer", "acceptor", "validator", "authority".
        public var roles: [String]
        /// Hex: Ed25519 public keys; SHA-256 of the TLS certificate's SPKI.
        public var signingKey: String
        public var nodeKey: String?
        public var tlsKeyHash: String?
        /// Where its node takes validator links, as "host:port" (rules 4).
        public var endpoints: [String]?

        public init(
            id: String, name: String, roles: [String], signingKey: String, nodeKey: String? = nil, tlsKeyHash: String? = nil,
            endpoints: [String]? = nil
        ) {
            self.id = id
            self.name = name
            self.roles = roles
            self.signingKey = signingKey
            self.nodeKey = nodeKey
            self.tlsKeyHash = tlsKeyHash
            self.endpoints = endpoints
        }
    }

    public struct ProgrammeEntry: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        /// "transit", "wasteSorting", "event", "energy" or "other".
        public var category: String
        public var rewardPerUnit: UInt64
        public var issuers: [String]
        public var sponsor: String
        public var capPerAccount: UInt64
        /// "day", "week" or "month".
        public var capPeriod: String
        public var walletCeiling: UInt64
        public var budget: UInt64
        /// Exactly one of the two.
        public var expiryEpochs: UInt32?
        public var demurrageBasisPoints: UInt16?
        public var acceptors: [String]?
        public var transferable: Bool?
        public var startHeight: UInt64?
        public var endHeight: UInt64?

        public init(
            id: String, name: String, category: String, rewardPerUnit: UInt64, issuers: [String], sponsor: String,
            capPerAccount: UInt64, capPeriod: String, walletCeiling: UInt64, budget: UInt64, expiryEpochs: UInt32? = nil,
            demurrageBasisPoints: UInt16? = nil, acceptors: [String]? = nil, transferable: Bool? = nil, startHeight: UInt64? = nil,
            endHeight: UInt64? = nil
        ) {
            self.id = id
            self.name = name
            self.category = category
            self.rewardPerUnit = rewardPerUnit
            self.issuers = issuers
            self.sponsor = sponsor
            self.capPerAccount = capPerAccount
            self.capPeriod = capPeriod
            self.walletCeiling = walletCeiling
            self.budget = budget
            self.expiryEpochs = expiryEpochs
            self.demurrageBasisPoints = demurrageBasisPoints
            self.acceptors = acceptors
            self.transferable = transferable
            self.startHeight = startHeight
            self.endHeight = endHeight
        }
    }
}

/// A genesis problem, naming the field (`partners[2].signingKey`).
public struct GenesisError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let reason: String
    public var description: String { "genesis: \(field): \(reason)" }
}

/// A checked genesis: the initial state of the ledger.
public struct Genesis: Sendable, Equatable {
    public let chainId: String
    public let parameters: Parameters
    public let partners: [Partner]
    public let validators: [Identifier]
    public let programmes: [Programme]
    /// The rules the chain starts with (`LedgerRules`).
    public var rules: UInt32 = LedgerRules.initial
    /// Partners' endpoints (rules 4), sorted and distinct.
    public var endpoints: [Identifier: [PeerEndpoint]] = [:]

    /// What the genesis sets that its own rules would refuse a vote: said at a node's
    /// start, not refused (a chain started so is fixed by a vote, and a refusal at load
    /// would leave it no release to run: its genesis cannot change).
    public var warnings: [String] {
        guard rules >= LedgerRules.governanceBounded, parameters.approvalNumerator <= parameters.approvalDenominator / 2 else { return [] }
        return ["the genesis sets an approval of \(parameters.approvalNumerator)/\(parameters.approvalDenominator), half of the active partners or less, "
            + "which its ledger rules (\(rules)) refuse a vote: one partner of two, or a minority, passes anything; vote set-parameters --approval above 1/2"]
    }
}

extension GenesisFile {
    public func validated() throws(GenesisError) -> Genesis {
        guard SigningDomain(chainId: chainId, purpose: .transaction) != nil else {
            throw GenesisError(field: "chainId", reason: "1 to \(SigningDomain.chainIdByteCountMax) bytes of printable ASCII")
        }
        guard self.partners.count <= LedgerLimits.listCountMax else { throw GenesisError(field: "partners", reason: "at most \(LedgerLimits.listCountMax)") }
        let rules = self.rules ?? LedgerRules.initial
        guard (LedgerRules.initial...LedgerRules.newest).contains(rules) else {
            throw GenesisError(field: "rules", reason: "\(rules): this release implements ledger rules \(LedgerRules.initial) to \(LedgerRules.newest)")
        }
        var partners: [Partner] = []
        var endpoints: [Identifier: [PeerEndpoint]] = [:]
        for (index, entry) in self.partners.enumerated() {
            let field = "partners[\(index)]"
            let id = try Self.identifier(entry.id, "\(field).id")
            guard !partners.contains(where: { $0.id == id }) else { throw GenesisError(field: "\(field).id", reason: "\(id) is listed twice") }
            partners.append(try entry.partner(field))
            let listed = try entry.peerEndpoints(field)
            if !listed.isEmpty {
                guard rules >= LedgerRules.endpoints else {
                    throw GenesisError(field: "\(field).endpoints", reason: "needs ledger rules \(LedgerRules.endpoints) (\"rules\": \(LedgerRules.endpoints))")
                }
                endpoints[id] = listed
            }
        }
        guard partners.contains(where: { $0.roles.contains(.authority) }) else {
            throw GenesisError(field: "partners", reason: "no partner has the authority role (the Métropole, central counterparty)")
        }
        func known(_ raw: String, _ field: String) throws(GenesisError) -> Partner {
            let id = try Self.identifier(raw, field)
            guard let partner = partners.first(where: { $0.id == id }) else { throw GenesisError(field: field, reason: "unknown partner '\(raw)'") }
            return partner
        }

        _ = try known(self.parameters.sink, "parameters.sink")
        let parameters = try self.parameters.parameters("parameters")

        var validators: [Identifier] = []
        for (index, raw) in self.validators.enumerated() {
            let field = "validators[\(index)]"
            let partner = try known(raw, field)
            guard partner.roles.contains(.validator), partner.nodeKey != nil else {
                throw GenesisError(field: field, reason: "\(raw) needs the validator role and a nodeKey")
            }
            guard !validators.contains(partner.id) else { throw GenesisError(field: field, reason: "\(raw) is listed twice") }
            if let other = validators.first(where: { id in partners.first { $0.id == id }?.nodeKey == partner.nodeKey }) {
                throw GenesisError(field: field, reason: "\(raw)'s nodeKey is \(other)'s too: each validator signs with a key of its own")
            }
            validators.append(partner.id)
        }
        guard !validators.isEmpty else { throw GenesisError(field: "validators", reason: "at least one validator") }

        guard self.programmes.count <= LedgerLimits.programmeCountMax else {
            throw GenesisError(field: "programmes", reason: "at most \(LedgerLimits.programmeCountMax)")
        }
        var programmes: [Programme] = []
        for (index, entry) in self.programmes.enumerated() {
            let field = "programmes[\(index)]"
            let id = try Self.identifier(entry.id, "\(field).id")
            guard !programmes.contains(where: { $0.id == id }) else { throw GenesisError(field: "\(field).id", reason: "\(id) is listed twice") }
            var programme = try entry.programme(field)
            var issuers: [Identifier] = []
            for (i, raw) in entry.issuers.enumerated() {
                let partner = try known(raw, "\(field).issuers[\(i)]")
                guard partner.roles.contains(.issuer) else { throw GenesisError(field: "\(field).issuers[\(i)]", reason: "\(raw) is not an issuer") }
                issuers.append(partner.id)
            }
            var acceptors: [Identifier] = []
            for (i, raw) in (entry.acceptors ?? []).enumerated() {
                let partner = try known(raw, "\(field).acceptors[\(i)]")
                guard partner.roles.contains(.acceptor) else { throw GenesisError(field: "\(field).acceptors[\(i)]", reason: "\(raw) is not an acceptor") }
                acceptors.append(partner.id)
            }
            programme.issuers = Array(Set(issuers)).sorted()
            programme.acceptors = Array(Set(acceptors)).sorted()
            programme.sponsor = try known(entry.sponsor, "\(field).sponsor").id
            programmes.append(programme)
        }
        var genesis = Genesis(chainId: chainId, parameters: parameters, partners: partners.sorted { $0.id < $1.id }, validators: validators, programmes: programmes)
        genesis.rules = rules
        genesis.endpoints = endpoints
        return genesis
    }

    static func identifier(_ raw: String, _ field: String) throws(GenesisError) -> Identifier {
        guard let id = Identifier(raw) else { throw GenesisError(field: field, reason: "'\(raw)' is not 1-32 characters of a-z, 0-9, '-'") }
        return id
    }

    static func bytes32(_ hex: String, _ field: String) throws(GenesisError) -> Bytes32 {
        guard let bytes = Bytes32(hex: hex) else { throw GenesisError(field: field, reason: "not 64 hexadecimal digits") }
        return bytes
    }

    static func key(_ hex: String, _ field: String) throws(GenesisError) -> Ed25519PublicKey {
        Ed25519PublicKey(try bytes32(hex, field))
    }
}

extension Ledger {
    /// Writes the genesis state into an empty `store` (height 0) and opens the ledger.
    public static func create(_ genesis: Genesis, in store: Store) throws(GenesisError) -> Ledger {
        var store = store
        guard store.root == .zero, store.value(StateKeys.meta) == nil else { throw GenesisError(field: "store", reason: "not empty") }
        var meta = LedgerMeta()
        meta.partners = genesis.partners.map(\.id).sorted()
        meta.programmes = genesis.programmes.map(\.id).sorted()
        meta.validators = genesis.validators
        var values: [(key: StateKey, value: [UInt8]?)] = [(StateKeys.meta, meta.wireBytes), (StateKeys.parameters, genesis.parameters.wireBytes)]
        values += genesis.partners.map { (StateKeys.partner($0.id), $0.wireBytes) }
        values += genesis.programmes.map { (StateKeys.programme($0.id), $0.wireBytes) }
        let nodeKeys = genesis.validatorKeys
        values.append((StateKeys.validatorKeys, ValidatorKeys(changedAt: 0, keys: nodeKeys).wireBytes))
        if genesis.rules > LedgerRules.initial {
            values.append((StateKeys.upgrades, UpgradeSchedule([Genesis.upgrade(genesis.rules)]).wireBytes))
        }
        values += genesis.endpoints.keys.sorted().map { (StateKeys.partnerEndpoints($0), EndpointList(genesis.endpoints[$0]!).wireBytes) }
        let tree = StateTree.update(root: .zero, changes: values.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: store)
        store.commit(StateBatch(values: values, tree: tree))
        do { return try Ledger(chainId: genesis.chainId, store: store) } catch {
            throw GenesisError(field: "store", reason: "\(error)")
        }
    }
}

extension GenesisFile.PartnerEntry {
    /// The partner this entry describes (active), each mistake naming its field under
    /// `field`. Used by the genesis and by governance proposals that admit a partner.
    public func partner(_ field: String = "partner") throws(GenesisError) -> Partner {
        let id = try GenesisFile.identifier(self.id, "\(field).id")
        guard name.utf8.count <= LedgerLimits.nameBytesMax else {
            throw GenesisError(field: "\(field).name", reason: "over \(LedgerLimits.nameBytesMax) bytes")
        }
        var roles: Roles = []
        for role in self.roles {
            switch role {
            case "issuer": roles.insert(.issuer)
            case "acceptor": roles.insert(.acceptor)
            case "validator": roles.insert(.validator)
            case "authority": roles.insert(.authority)
            default: throw GenesisError(field: "\(field).roles", reason: "unknown role '\(role)'")
            }
        }
        return Partner(
            id: id, name: name, roles: roles, signingKey: try GenesisFile.key(signingKey, "\(field).signingKey"),
            nodeKey: try nodeKey.map { (hex: String) throws(GenesisError) in try GenesisFile.key(hex, "\(field).nodeKey") },
            tlsKeyHash: try tlsKeyHash.map { (hex: String) throws(GenesisError) in try GenesisFile.bytes32(hex, "\(field).tlsKeyHash") })
    }

    /// Its endpoints, checked, sorted and made distinct (none when absent).
    public func peerEndpoints(_ field: String = "partner") throws(GenesisError) -> [PeerEndpoint] {
        try GenesisFile.endpoints(endpoints ?? [], "\(field).endpoints")
    }
}

extension GenesisFile {
    /// Endpoints written "host:port" (a genesis, a partner file, a command's options),
    /// checked, sorted and made distinct; a mistake names `field`.
    public static func endpoints(_ texts: [String], _ field: String) throws(GenesisError) -> [PeerEndpoint] {
        var parsed: [PeerEndpoint] = []
        for (index, text) in texts.enumerated() {
            guard let endpoint = PeerEndpoint(text) else {
                let problem = text.lastIndex(of: ":").flatMap { colon in
                    UInt16(text[text.index(after: colon)...]).flatMap { PeerEndpoint.problem(host: String(text[..<colon]), port: $0) }
                } ?? "expected host:port, the port 1 to 65535"
                throw GenesisError(field: "\(field)[\(index)]", reason: "'\(text.prefix(80))': \(problem)")
            }
            parsed.append(endpoint)
        }
        let endpoints = Array(Set(parsed)).sorted()
        if let problem = PeerEndpoint.problem(endpoints) { throw GenesisError(field: field, reason: problem) }
        return endpoints
    }
}

extension GenesisFile.ParametersEntry {
    /// An approval fraction as written ("2/3"), or nil; whether it is consistent is
    /// `Parameters.problem`'s to say.
    public static func approvalFraction(_ text: String) -> (UInt8, UInt8)? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let numerator = UInt8(parts[0]), let denominator = UInt8(parts[1]) else { return nil }
        return (numerator, denominator)
    }

    /// The parameters this entry describes, each mistake naming its field under `field`:
    /// absent fields take their values in `base` (a proposal's: the parameters in force),
    /// or their defaults without one (a genesis). The sink's id is checked for form here:
    /// whether it exists is the genesis check's (or, for a proposal, the ledger's) to say.
    public func parameters(_ field: String = "parameters", over base: Parameters? = nil) throws(GenesisError) -> Parameters {
        let sink = try GenesisFile.identifier(sink, "\(field).sink")
        var parameters = base ?? Parameters(sink: sink)
        parameters.sink = sink
        if let value = epochLength { parameters.epochLength = value }
        if let value = blocksPerDay { parameters.blocksPerDay = value }
        if let value = transactionLifetimeMax { parameters.transactionLifetimeMax = value }
        if let value = proposalLifetimeMax { parameters.proposalLifetimeMax = value }
        if let value = tokenValueMicroEuros { parameters.tokenValueMicroEuros = value }
        if let approval {
            guard let (numerator, denominator) = Self.approvalFraction(approval) else {
                throw GenesisError(field: "\(field).approval", reason: "a fraction such as \"2/3\"")
            }
            parameters.approvalNumerator = numerator
            parameters.approvalDenominator = denominator
        }
        if let problem = parameters.problem() { throw GenesisError(field: field, reason: problem) }
        return parameters
    }
}

extension GenesisFile.ProgrammeEntry {
    /// The programme this entry describes, each mistake naming its field under `field`.
    /// Partner ids are only checked for form here: whether they exist with the right role
    /// is the genesis check's (or, for a proposal, the ledger's) to say.
    public func programme(_ field: String = "programme") throws(GenesisError) -> Programme {
        let id = try GenesisFile.identifier(self.id, "\(field).id")
        guard name.utf8.count <= LedgerLimits.nameBytesMax else {
            throw GenesisError(field: "\(field).name", reason: "over \(LedgerLimits.nameBytesMax) bytes")
        }
        guard let category = Category(name: category) else { throw GenesisError(field: "\(field).category", reason: "unknown category '\(category)'") }
        guard let period = ["day": CapPeriod.day, "week": .week, "month": .month][capPeriod] else {
            throw GenesisError(field: "\(field).capPeriod", reason: "day, week or month")
        }
        let lifetime: Lifetime
        switch (expiryEpochs, demurrageBasisPoints) {
        case let (epochs?, nil): lifetime = .expiry(epochs: epochs)
        case let (nil, basisPoints?): lifetime = .demurrage(basisPointsPerEpoch: basisPoints)
        default: throw GenesisError(field: "\(field)", reason: "exactly one of expiryEpochs and demurrageBasisPoints")
        }
        var issuers: [Identifier] = []
        for (i, raw) in self.issuers.enumerated() { issuers.append(try GenesisFile.identifier(raw, "\(field).issuers[\(i)]")) }
        var acceptors: [Identifier] = []
        for (i, raw) in (self.acceptors ?? []).enumerated() { acceptors.append(try GenesisFile.identifier(raw, "\(field).acceptors[\(i)]")) }
        let programme = Programme(
            id: id, name: name, category: category, rewardPerUnit: rewardPerUnit, issuers: Array(Set(issuers)),
            sponsor: try GenesisFile.identifier(sponsor, "\(field).sponsor"), capPerAccount: capPerAccount, capPeriod: period,
            walletCeiling: walletCeiling, budget: budget, lifetime: lifetime, acceptors: Array(Set(acceptors)),
            transferable: transferable ?? false, startHeight: startHeight ?? 0, endHeight: endHeight ?? 0)
        for (name, amount) in [("rewardPerUnit", rewardPerUnit), ("capPerAccount", capPerAccount), ("walletCeiling", walletCeiling), ("budget", budget)]
        where amount > LedgerLimits.amountMax {
            throw GenesisError(field: "\(field).\(name)", reason: "over \(LedgerLimits.amountMax)")
        }
        guard rewardPerUnit > 0 else { throw GenesisError(field: "\(field).rewardPerUnit", reason: "must be positive") }
        if case let .demurrage(basisPoints) = lifetime, basisPoints > 10_000 {
            throw GenesisError(field: "\(field).demurrageBasisPoints", reason: "over 10000")
        }
        guard programme.endHeight == 0 || programme.endHeight >= programme.startHeight else {
            throw GenesisError(field: "\(field).endHeight", reason: "before startHeight")
        }
        return programme
    }
}

// MARK: Decoding with bounds: a number out of its field's range or a list past its limit
// is an error naming the field, raised while decoding (`Wire/BoundedDecoding.swift`).

extension GenesisFile {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        chainId = try c.decode(String.self, forKey: .chainId)
        parameters = try c.decode(ParametersEntry.self, forKey: .parameters)
        partners = try c.list(PartnerEntry.self, .partners, countMax: LedgerLimits.listCountMax)
        validators = try c.list(String.self, .validators, countMax: LedgerLimits.listCountMax)
        programmes = try c.list(ProgrammeEntry.self, .programmes, countMax: LedgerLimits.listCountMax)
        rules = try c.integerIfPresent(.rules)
    }
}

extension GenesisFile.ParametersEntry {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epochLength = try c.integerIfPresent(.epochLength)
        blocksPerDay = try c.integerIfPresent(.blocksPerDay)
        transactionLifetimeMax = try c.integerIfPresent(.transactionLifetimeMax)
        proposalLifetimeMax = try c.integerIfPresent(.proposalLifetimeMax)
        approval = try c.decodeIfPresent(String.self, forKey: .approval)
        sink = try c.decode(String.self, forKey: .sink)
        tokenValueMicroEuros = try c.integerIfPresent(.tokenValueMicroEuros)
    }
}

extension GenesisFile.PartnerEntry {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        roles = try c.list(String.self, .roles, countMax: 4)
        signingKey = try c.decode(String.self, forKey: .signingKey)
        nodeKey = try c.decodeIfPresent(String.self, forKey: .nodeKey)
        tlsKeyHash = try c.decodeIfPresent(String.self, forKey: .tlsKeyHash)
        endpoints = try c.listIfPresent(String.self, .endpoints, countMax: PeerEndpoint.countMax)
    }
}

extension GenesisFile.ProgrammeEntry {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        category = try c.decode(String.self, forKey: .category)
        rewardPerUnit = try c.integer(.rewardPerUnit)
        issuers = try c.list(String.self, .issuers, countMax: LedgerLimits.listCountMax)
        sponsor = try c.decode(String.self, forKey: .sponsor)
        capPerAccount = try c.integer(.capPerAccount)
        capPeriod = try c.decode(String.self, forKey: .capPeriod)
        walletCeiling = try c.integer(.walletCeiling)
        budget = try c.integer(.budget)
        expiryEpochs = try c.integerIfPresent(.expiryEpochs)
        demurrageBasisPoints = try c.integerIfPresent(.demurrageBasisPoints)
        acceptors = try c.listIfPresent(String.self, .acceptors, countMax: LedgerLimits.listCountMax)
        transferable = try c.decodeIfPresent(Bool.self, forKey: .transferable)
        startHeight = try c.integerIfPresent(.startHeight)
        endHeight = try c.integerIfPresent(.endHeight)
    }
}

extension Genesis {
    static let digestTag = TaggedHasher(tag: "calisson/genesis/v1")

    /// What identifies this genesis: the hash of its canonical encoding (chain id,
    /// parameters, partners, validators, programmes in their wire forms). A node records
    /// it in its database at creation and refuses to start with another.
    public var digest: SHA256Digest {
        var writer = WireWriter()
        writer.writeString(chainId)
        writer.write(parameters)
        writer.writeArray(partners)
        writer.writeArray(validators)
        writer.writeArray(programmes)
        // What later releases added to the genesis, written only when used: the digest of a
        // genesis without them is the one earlier releases computed.
        if rules != LedgerRules.initial || !endpoints.isEmpty {
            writer.write(rules)
            for id in endpoints.keys.sorted() {
                writer.write(id)
                writer.write(EndpointList(endpoints[id]!))
            }
        }
        return Self.digestTag.hash(writer.bytes)
    }
}

extension Genesis {
    /// The upgrade a genesis starting above rules 1 records: in force from height 0, so
    /// the schedule says by which rules every block was executed.
    public static func upgrade(_ rules: UInt32) -> ScheduledUpgrade {
        ScheduledUpgrade(name: Identifier("genesis")!, height: 0, rules: rules)
    }

    /// The node keys of the genesis validators, in consensus order.
    public var validatorKeys: [Ed25519PublicKey] {
        validators.compactMap { id in partners.first { $0.id == id }?.nodeKey }
    }
}
