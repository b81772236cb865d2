import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Transport
import Wire

/// `calisson submit …`: sign a transaction with a key file, submit it to a node, wait until
/// it is final and print its result (or the reason it was refused or rejected).
struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign a transaction with a key file, submit it to a node and wait until it is final.",
        discussion: """
            Exit status: 0 when the transaction is final and applied; 1 when the node refused \
            it at admission, the ledger rejected it (the reason is printed), or it was not final \
            before --timeout. A partner signs with its signing key and names itself with --as; \
            a citizen signs with its own key (calisson key generate) and no --as.
            """,
        subcommands: [AttributeCommand.self, RedeemCommand.self, TransferCommand.self, ProposeCommand.self, VoteCommand.self, ReportEquivocationCommand.self, SetEndpointsCommand.self])
}

struct SubmitOptions: ParsableArguments {
    @OptionGroup var connection: Connection

    @Option(help: "The signing key file (PEM): a partner's signing.key, or a citizen's key.")
    var key: String

    @Option(name: .customLong("as"), help: "Sign as this partner (its id); without it, as the citizen whose key --key holds.")
    var partner: String?

    @Option(help: "The transaction's nonce (default: from the clock, unique per signer).")
    var nonce: UInt64?

    @Option(help: "Blocks from the node's current height until the transaction expires (at most the chain's transactionLifetimeMax, 600 by default).")
    var expiresIn: UInt64 = 300

    @Option(help: "Seconds to wait for finality (0: return once admitted).")
    var timeout = 30.0

    @Option(help: "The evidence key (PEM) committing --evidence and --service text (default: evidence.key beside --key).")
    var evidenceKey: String?

    @Flag(help: "Sign, print the transaction's id and its signed bytes as hex, and submit nothing: for the gateway (POST /v1/transactions or /v1/transaction-batches) or a later submission.")
    var signOnly = false

    func validate() throws {
        if connection.db != nil { throw ValidationError("--db is read-only: submissions go to a node (--node)") }
        guard (1...LedgerLimits.blockSpanMax).contains(expiresIn) else {
            throw ValidationError("--expires-in must be from 1 to \(LedgerLimits.blockSpanMax) blocks (the chain allows at most its transactionLifetimeMax)")
        }
        try Connection.checkSeconds(timeout, "--timeout", allowZero: true)
    }

    /// Signs `body`, submits it, waits; prints the outcome and fails unless applied. With
    /// `--sign-only`, prints the signed bytes instead (the node is asked its height only, for
    /// the expiry).
    func submit(_ body: TransactionBody) throws -> (id: Bytes32, height: UInt64)? {
        let signingKey: Ed25519PrivateKey
        do { signingKey = try KeyFile.readPrivateKey(at: key) } catch { throw ValidationError("--key \(key): \(error)") }
        let signer: TransactionSigner = try partner.map { .partner(try identifier($0)) } ?? .citizen(signingKey.publicKey)
        let client = try connection.client()
        defer { client.close() }
        func ask(_ request: ClientRequest, wait: Int? = nil) throws -> ClientResponse {
            let wait = wait ?? connection.requestTimeoutMilliseconds
            return try ClientResponse(wireBytes: try client.request(request.wireBytes, timeoutMilliseconds: wait))
        }
        guard case let .status(status) = try ask(.status) else { throw ValidationError("the node did not answer its status") }
        let nonce = self.nonce ?? (UInt64(Date().timeIntervalSince1970 * 1_000_000) &* 1_000 &+ UInt64.random(in: 0..<1_000))
        let signed = Transaction(chainId: connection.chain, signer: signer, nonce: nonce, expiryHeight: status.height.saturatingAdding(expiresIn), body: body)
            .signed(with: signingKey)
        var fields: [(String, String)] = [("transaction", signed.id.hex)]
        if signOnly {
            emit(fields + [("expiry", "\(status.height.saturatingAdding(expiresIn))"), ("signed", Hex.encode(signed.wireBytes))])
            return nil
        }
        switch try ask(.submit(signed.wireBytes)) {
        case .admitted: break
        case let .refused(reason):
            emit(fields + [("status", "refused"), ("reason", reason)])
            throw ExitCode.failure
        case let .error(reason):
            emit(fields + [("status", "error"), ("reason", reason)])
            throw ExitCode.failure
        default: throw ValidationError("unexpected answer")
        }
        guard timeout > 0 else {
            emit(fields + [("status", "admitted")])
            return nil
        }
        let deadline = Date().addingTimeInterval(timeout)
        var found: TransactionLocation?
        while found == nil, deadline.timeIntervalSinceNow > 0 {
            let wait = UInt32(max(1, min(Double(ClientRequest.waitMillisecondsMax), deadline.timeIntervalSinceNow * 1_000)))
            guard case let .transaction(location) = try ask(.waitFinal(signed.id, timeoutMilliseconds: wait), wait: Int(wait) + 5_000) else {
                throw ValidationError("unexpected answer")
            }
            found = location
        }
        guard let found else {
            emit(fields + [("status", "not final after \(timeout) s (it may still become final before height \(status.height.saturatingAdding(expiresIn)))")])
            throw ExitCode.failure
        }
        // With the genesis, where it is final is checked as `tx --genesis` checks it: the block's
        // commit certificate, signed by a quorum, and the transaction's place in the block (its
        // result stays the node's word here: it is final before a checkpoint certifies the
        // block's results; `tx --genesis` proves it a few blocks later, ledger rules 7).
        var proof: String?
        if let validators = try connection.trustedValidators() {
            guard case let .transactionProof(included) = try ask(.transactionProof(signed.id)), let included,
                included.location.height == found.height, included.location.position == found.position
            else { throw ValidationError("the node said transaction \(signed.id.hex) is final in block \(found.height) but gives no proof of it: this node cannot be trusted") }
            proof = try connection.checkInclusion(included, of: signed.id, validators: validators)
        }
        fields += [("height", "\(found.height)"), ("status", found.applied ? "applied" : "rejected")]
        if let reason = found.reason { fields.append(("reason", reason)) }
        if let proof { fields.append(("proof", proof)) }
        guard found.applied else {
            emit(fields)
            throw ExitCode.failure
        }
        if case .propose = body, let number = try proposalNumber(at: found, ask: { try ask($0) }) {
            fields.append(("proposal", "\(number)"))
        }
        emit(fields)
        return (signed.id, found.height)
    }

    /// The number of the proposal the transaction at `location` opened, as its block's
    /// events record it: at once, and exactly that proposal (a certified read of the
    /// state is at the latest checkpoint, which may not hold it yet; looking for the
    /// newest proposal with the same proposer and action could find an older one).
    private func proposalNumber(at location: TransactionLocation, ask: (ClientRequest) throws -> ClientResponse) throws -> UInt64? {
        guard case let .blockContents(contents) = try ask(.blockContents(location.height)) else { throw ValidationError("unexpected answer") }
        return contents?.opened.first { $0.position == location.position }?.proposal
    }

    func emit(_ fields: [(String, String)]) { connection.emit(fields) }

    /// Refuses, naming the upgrade, what needs ledger rules `needed` above those in force
    /// at the next block: the ledger would read it as an unknown kind (as older code does).
    /// Said when the node's certified answer says so; without one (a chain with no
    /// checkpoint yet) the ledger decides.
    func checkRules(_ needed: UInt32, for what: String, height: UInt64) throws {
        guard needed > LedgerRules.initial, let (value, _, _) = try? connection.record(StateKeys.upgrades),
            let schedule = value.map({ try? UpgradeSchedule(wireBytes: $0) }) ?? UpgradeSchedule()
        else { return }
        let rules = schedule.rules(atHeight: height.saturatingAdding(1))  // the node's word: 2^64 − 1 trapped here
        guard rules < needed else { return }
        let coming = schedule.upgrades.first { $0.rules >= needed }
        throw ValidationError("\(what) needs ledger rules \(needed); rules \(rules) are in force"
            + (coming.map { " (upgrade \($0.name) brings rules \($0.rules) from height \($0.height))" } ?? " and no upgrade to them is voted"))
    }
}

func accountKey(_ raw: String) throws -> AccountID {
    guard let bytes = Bytes32(hex: raw) else { throw ValidationError("an account is 64 hexadecimal digits, got '\(raw)'") }
    return Ed25519PublicKey(bytes)
}

extension SubmitOptions {
    /// The evidence key: --evidence-key, or `evidence.key` beside the --key file (where
    /// `calisson-node keys generate` and `testnet` write it); nil when neither exists.
    func loadEvidenceKey() throws -> EvidenceKey? {
        let path = evidenceKey ?? ((key as NSString).deletingLastPathComponent as NSString).appendingPathComponent("evidence.key")
        guard evidenceKey != nil || FileManager.default.fileExists(atPath: path) else { return nil }
        do { return try EvidenceKey.read(at: path) } catch { throw CommandError("--evidence-key \(error)") }
    }

    /// A 32-byte commitment of an off-chain reference (a gesture record, a ticket number):
    /// 64 hex digits are taken as a commitment already computed; any other text is committed
    /// here as HMAC-SHA-256 under the evidence key. Plain text never goes on chain, and
    /// neither does its plain hash, which anyone could test guesses against (Docs/PRIVACY.md).
    func commitment(_ raw: String, _ purpose: EvidenceKey.Purpose, option: String) throws -> Bytes32 {
        if let given = Bytes32(hex: raw) { return given }
        guard !raw.isEmpty else { throw CommandError("\(option) is empty") }
        guard let key = try loadEvidenceKey() else {
            throw CommandError("""
                \(option) '\(raw)': a reference goes on chain only as a keyed hash (HMAC-SHA-256 under an evidence key, \
                Docs/PRIVACY.md), and no evidence key was found: give --evidence-key FILE (`calisson key evidence --out FILE` \
                makes one; `calisson-node keys generate` writes evidence.key beside signing.key), or the 64-hex commitment your back-end computed
                """)
        }
        return key.commitment(of: raw, for: purpose)
    }
}

struct AttributeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "attribute", abstract: "Reward a citizen under a programme (signed by an issuer, --as).")
    @OptionGroup var options: SubmitOptions
    @Option(help: "The programme id.") var programme: String
    @Option(help: "The citizen's account (64 hex digits).") var account: String
    @Option(help: "Units of the civic gesture (tokens = units × the programme's reward per unit).") var units: UInt32 = 1
    @Option(help: "The evidence: a 64-hex commitment, or the issuer's reference text, committed here under its evidence key (HMAC-SHA-256; once per programme).")
    var evidence: String
    func run() throws {
        guard options.partner != nil else { throw ValidationError("an attribution is signed by an issuer: --as PARTNER") }
        _ = try options.submit(.attribute(programme: try identifier(programme), account: try accountKey(account), units: units, evidence: try options.commitment(evidence, .evidence, option: "--evidence")))
    }
}

struct RedeemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "redeem", abstract: "Spend a citizen's tokens at an acceptor (signed by the citizen).")
    @OptionGroup var options: SubmitOptions
    @Option(help: "The accepting partner.") var acceptor: String
    @Option(help: "Tokens to spend.") var amount: UInt64
    @Option(help: "The service bought: a 64-hex commitment, or the acceptor's reference text, committed under --evidence-key (the acceptor's). Absent: no reference.")
    var service: String?
    func run() throws {
        guard options.partner == nil else { throw ValidationError("a redemption is signed by the citizen: no --as") }
        _ = try options.submit(.redeem(acceptor: try identifier(acceptor), amount: amount, service: try service.map { try options.commitment($0, .service, option: "--service") } ?? .zero))
    }
}

struct TransferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "transfer", abstract: "Give tokens of a transferable programme to another citizen.")
    @OptionGroup var options: SubmitOptions
    @Option(help: "The receiving account (64 hex digits).") var to: String
    @Option(help: "The programme whose tokens move.") var programme: String
    @Option(help: "Tokens to give.") var amount: UInt64
    func run() throws {
        guard options.partner == nil else { throw ValidationError("a transfer is signed by the citizen: no --as") }
        _ = try options.submit(.transfer(to: try accountKey(to), programme: try identifier(programme), amount: amount))
    }
}

struct VoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vote", abstract: "Vote on a governance proposal (signed by a partner, --as).")
    @OptionGroup var options: SubmitOptions
    @Option(help: "The proposal number.") var proposal: UInt64
    @Flag(exclusivity: .exclusive, help: "Approve or reject.") var decision: Decision
    enum Decision: EnumerableFlag { case approve, reject }
    func run() throws {
        guard options.partner != nil else { throw ValidationError("partners vote: --as PARTNER") }
        _ = try options.submit(.vote(proposal: proposal, approve: decision == .approve))
    }
}

struct ReportEquivocationCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report-equivocation",
        abstract: "Report a validator's two conflicting signed consensus statements (signed by a partner, --as; ledger rules 3).",
        discussion: """
            --evidence is the hex a node logs with `equivocation evidence` when it receives two \
            conflicting proposals or votes from one validator (Docs/OPERATIONS.md). Every node \
            checks both signatures; the ledger records it, and suspends the validator's partner \
            when governance set `set-equivocation-policy --equivocators suspend`.
            """)
    @OptionGroup var options: SubmitOptions
    @Option(help: "The evidence, hexadecimal.") var evidence: String
    func run() throws {
        guard options.partner != nil else { throw ValidationError("partners report: --as PARTNER") }
        guard let bytes = Hex.decode(evidence.lowercased()) else { throw ValidationError("--evidence must be hexadecimal") }
        let parsed: EquivocationEvidence
        do { parsed = try EquivocationEvidence(wireBytes: bytes) } catch { throw ValidationError("--evidence is not equivocation evidence: \(error)") }
        guard case let .status(status) = try options.connection.ask(.status) else { throw ValidationError("unexpected answer") }
        try options.checkRules(LedgerRules.evidence, for: "report-equivocation", height: status.height)
        _ = try options.submit(.reportEquivocation(parsed))
    }
}

struct SetEndpointsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-endpoints",
        abstract: "Say where this partner's node takes validator links (signed by the partner, --as; ledger rules 4).",
        discussion: """
            Replaces the partner's endpoints in the ledger: every node dials the endpoints the \
            ledger gives (the lower id dials), so a node that moves says so here and the others \
            follow without an edit or a restart (Docs/OPERATIONS.md, "Peers found in the ledger"). \
            --endpoint host:port, repeated (at most 4; a lowercase DNS name or an IPv4 address), \
            or --none to remove them.
            """)
    @OptionGroup var options: SubmitOptions
    @Option(help: "Where the node listens for validators, as host:port (repeat for each).") var endpoint: [String] = []
    @Flag(help: "Remove the partner's endpoints.") var none = false
    func run() throws {
        guard options.partner != nil else { throw ValidationError("a partner sets its own endpoints: --as PARTNER") }
        guard endpoint.isEmpty != !none else { throw ValidationError("set-endpoints needs --endpoint host:port (repeat for each) or --none") }
        let endpoints = try ProposeCommand.endpoints(endpoint)
        guard case let .status(status) = try options.connection.ask(.status) else { throw ValidationError("unexpected answer") }
        try options.checkRules(LedgerRules.endpoints, for: "set-endpoints", height: status.height)
        _ = try options.submit(.setEndpoints(endpoints))
    }
}

struct ProposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "propose", abstract: "Propose a governance action (signed by a partner, --as; the proposer's vote is yes).",
        discussion: """
            Actions: admit-partner (--partner-file, a JSON object in the genesis file's partner \
            form), suspend-partner, reinstate-partner and remove-partner (--target), \
            create-programme and amend-programme (--programme-file, the genesis file's programme \
            form), close-programme (--target), set-validators (--validators a,b,c), rotate-keys \
            (--target, --signing-key, and --node-key or --tls-key-hash if they change: 64 hex \
            digits or a .pub file from `calisson-node keys generate`), set-parameters (the \
            chain's current parameters, read from the node with their proof, with the ones \
            given changed: --epoch-length, --blocks-per-day, --transaction-lifetime-max, \
            --proposal-lifetime-max, --approval, --sink, --token-value-micro-euros), \
            schedule-upgrade (--name, --height, --rules: from that height on the ledger's rules \
            are at least that version, and a node too old stops before it; Docs/GOVERNANCE.md), \
            set-partner-category (--target, --category, or none without it) and \
            set-programme-acceptance (--target, --categories a,b: acceptors of those categories \
            take the programme's tokens; none without it), the last two from ledger rules 2, \
            set-equivocation-policy (--equivocators suspend or leave), from ledger rules 3, \
            set-partner-endpoints (--target, --endpoint host:port repeated, none without it: \
            where its node takes validator links) and cancel-upgrade (--name of a voted upgrade \
            not yet in force), from ledger rules 4, as is an admit-partner \
            whose partner file lists "endpoints". \
            Categories: transit, wasteSorting, event, energy, other. The proposal passes with \
            the chain's approval fraction of active partners (2/3 by default) before its \
            deadline; it is applied by the deciding vote.
            """)
    @OptionGroup var options: SubmitOptions
    @Argument(help: "The action.") var action: Action
    @Option(help: "JSON file: the partner to admit.") var partnerFile: String?
    @Option(help: "JSON file: the programme to create or amend.") var programmeFile: String?
    @Option(help: "The partner or programme the action concerns.") var target: String?
    @Option(help: "The new validator set, comma-separated partner ids, in order.") var validators: String?
    @Option(help: "Blocks from now until the vote closes.") var deadlineIn: UInt64 = 5_000
    @Option(help: "rotate-keys: the new signing key (64 hex digits, or a .pub file).") var signingKey: String?
    @Option(help: "rotate-keys: the new node key (64 hex digits, or a .pub file), if it changes (absent: the current one, read from the node).")
    var nodeKey: String?
    @Option(help: "rotate-keys: the new TLS key hash (64 hex digits, as `ca sign` prints it), if it changes (absent: the current one).")
    var tlsKeyHash: String?
    @Flag(help: "rotate-keys: the partner no longer has a node key (it runs no validator).") var noNodeKey = false
    @Flag(name: .customLong("no-tls-key-hash"), help: "rotate-keys: the partner no longer has a TLS key hash (it runs no node).") var noTLSKeyHash = false
    @OptionGroup var parameters: ParameterChanges
    @Option(help: "schedule-upgrade, cancel-upgrade: the upgrade's name (an identifier).") var name: String?
    @Option(help: "schedule-upgrade: the height from which it is in force.") var height: UInt64?
    @Option(help: "schedule-upgrade: the ledger rules version needed from that height.") var rules: UInt32?
    @Option(help: "set-partner-category: the partner's category (absent: none).") var category: String?
    @Option(help: "set-programme-acceptance: comma-separated categories of acceptors (absent: none).") var categories: String?
    @Option(help: "set-equivocation-policy: suspend (a validator reported for equivocation is suspended at once) or leave (partners decide).")
    var equivocators: String?
    @Option(help: "set-partner-endpoints: where the partner's node takes validator links, as host:port (repeat for each; absent: none).")
    var endpoint: [String] = []

    enum Action: String, ExpressibleByArgument, CaseIterable {
        case admitPartner = "admit-partner", suspendPartner = "suspend-partner", reinstatePartner = "reinstate-partner"
        case removePartner = "remove-partner", createProgramme = "create-programme", amendProgramme = "amend-programme"
        case closeProgramme = "close-programme", setValidators = "set-validators", rotateKeys = "rotate-keys"
        case setParameters = "set-parameters", scheduleUpgrade = "schedule-upgrade", setPartnerCategory = "set-partner-category"
        case setProgrammeAcceptance = "set-programme-acceptance", setEquivocationPolicy = "set-equivocation-policy"
        case setPartnerEndpoints = "set-partner-endpoints", cancelUpgrade = "cancel-upgrade"
    }

    /// `--endpoint` values, checked as the ledger checks them.
    static func endpoints(_ texts: [String]) throws -> [PeerEndpoint] {
        do { return try GenesisFile.endpoints(texts, "--endpoint") } catch { throw ValidationError("\(error.field): \(error.reason)") }
    }

    static func category(_ raw: String, _ option: String) throws -> Category {
        guard let category = Category(name: raw) else {
            throw ValidationError("\(option): '\(raw)' is not one of \(Category.allCases.map(\.name).joined(separator: ", "))")
        }
        return category
    }

    func governanceAction() throws -> GovernanceAction {
        func target() throws -> Identifier {
            guard let raw = self.target else { throw ValidationError("\(action.rawValue) needs --target") }
            return try identifier(raw)
        }
        func decode<T: Decodable>(_ type: T.Type, _ path: String?, _ option: String) throws -> T {
            guard let path else { throw ValidationError("\(action.rawValue) needs --\(option)") }
            do { return try JSONFile.decode(T.self, path: path) } catch { throw CommandError("--\(option) \(error)") }
        }
        switch action {
        case .admitPartner:
            do {
                let entry = try decode(GenesisFile.PartnerEntry.self, partnerFile, "partner-file")
                return .admitPartner(try entry.partner(), endpoints: try entry.peerEndpoints())
            } catch let error as GenesisError {
                throw ValidationError("--partner-file: \(error.field): \(error.reason)")
            }
        case .createProgramme, .amendProgramme:
            do {
                let programme = try decode(GenesisFile.ProgrammeEntry.self, programmeFile, "programme-file").programme()
                return action == .createProgramme ? .createProgramme(programme) : .amendProgramme(programme)
            } catch let error as GenesisError {
                throw ValidationError("--programme-file: \(error.field): \(error.reason)")
            }
        case .suspendPartner: return .setPartnerStatus(try target(), .suspended)
        case .reinstatePartner: return .setPartnerStatus(try target(), .active)
        case .removePartner: return .setPartnerStatus(try target(), .removed)
        case .closeProgramme: return .closeProgramme(try target())
        case .setValidators:
            guard let validators else { throw ValidationError("set-validators needs --validators") }
            return .setValidators(try validators.split(separator: ",").map { try identifier(String($0)) })
        case .rotateKeys:
            guard let signingKey else { throw ValidationError("rotate-keys needs --signing-key (the partner's, new or unchanged)") }
            guard nodeKey == nil || !noNodeKey else { throw ValidationError("--node-key and --no-node-key: one or the other") }
            guard tlsKeyHash == nil || !noTLSKeyHash else { throw ValidationError("--tls-key-hash and --no-tls-key-hash: one or the other") }
            let partner = try target(), signing = try Self.publicKey(signingKey, "--signing-key")
            var node = try nodeKey.map { try Self.publicKey($0, "--node-key") }
            var tls = try tlsKeyHash.map { raw in
                guard let bytes = Bytes32(hex: raw) else { throw ValidationError("--tls-key-hash must be 64 hexadecimal digits") }
                return bytes
            }
            // The action names every key (one not named is none): those not given keep their
            // current values, read from the node with their proof (as set-parameters does).
            // Before, a rotation of the signing key alone dropped the partner's node key and
            // TLS key hash: a validator left the consensus.
            if (nodeKey == nil && !noNodeKey) || (tlsKeyHash == nil && !noTLSKeyHash) {
                let (value, _, _) = try options.connection.record(StateKeys.partner(partner))
                guard let value, let current = try? Partner(wireBytes: value) else { throw ValidationError("the node has no readable record of partner \(partner)") }
                if nodeKey == nil && !noNodeKey { node = current.nodeKey }
                if tlsKeyHash == nil && !noTLSKeyHash { tls = current.tlsKeyHash }
                // Said before it is signed: what was kept, and how far it was checked.
                let kept = [nodeKey == nil && !noNodeKey ? "node key \(node?.bytes.hex ?? "none")" : nil,
                            tlsKeyHash == nil && !noTLSKeyHash ? "TLS key hash \(tls?.hex ?? "none")" : nil].compactMap { $0 }
                let checked = options.connection.genesis != nil
                    ? "certified by a quorum of the validators (--genesis)"
                    : "proven against the node's own state root only: add --genesis to have the validators' signatures checked"
                FileHandle.standardError.write(Data("calisson: rotate-keys: \(partner) keeps its \(kept.joined(separator: " and ")), as the node's record says (\(checked))\n".utf8))
            }
            return .rotateKeys(partner, signingKey: signing, nodeKey: node, tlsKeyHash: tls)
        case .setParameters:
            guard parameters.changesAny else { throw ValidationError("set-parameters needs at least one parameter to change (see --help)") }
            let (value, _, _) = try options.connection.record(StateKeys.parameters)
            guard let value, let current = try? Parameters(wireBytes: value) else { throw ValidationError("the node has no readable parameters record") }
            let proposed = try parameters.applied(to: current)
            // The action names every parameter: those not given are the node's record of them.
            // Said before it is signed, with how far that record was checked (a lying node
            // could otherwise slip an approval or a sink of its choosing into the vote).
            let checked = options.connection.genesis != nil
                ? "certified by a quorum of the validators (--genesis)"
                : "proven against the node's own state root only: add --genesis to have the validators' signatures checked"
            let listed = "epochLength \(proposed.epochLength), blocksPerDay \(proposed.blocksPerDay), transactionLifetimeMax \(proposed.transactionLifetimeMax), "
                + "proposalLifetimeMax \(proposed.proposalLifetimeMax), approval \(proposed.approvalNumerator)/\(proposed.approvalDenominator), "
                + "sink \(proposed.sink), tokenValueMicroEuros \(proposed.tokenValueMicroEuros)"
            FileHandle.standardError.write(Data("calisson: set-parameters proposes \(listed); those not given as the node's record says (\(checked))\n".utf8))
            return .setParameters(proposed)
        case .scheduleUpgrade:
            guard let name, let height, let rules else { throw ValidationError("schedule-upgrade needs --name, --height and --rules") }
            guard height >= 1 else { throw ValidationError("--height starts at 1") }
            guard (LedgerRules.initial...LedgerRules.newest).contains(rules) else { throw ValidationError(LedgerRules.scheduleRefusal("--rules", rules)) }
            return .scheduleUpgrade(ScheduledUpgrade(name: try identifier(name), height: height, rules: rules))
        case .setPartnerCategory:
            return .setPartnerCategory(try target(), try category.map { try Self.category($0, "--category") })
        case .setProgrammeAcceptance:
            let list = try (categories ?? "").split(separator: ",").map { try Self.category(String($0), "--categories") }
            guard Set(list).count == list.count else { throw ValidationError("--categories lists a category twice") }
            return .setProgrammeAcceptance(try target(), list.sorted { $0.rawValue < $1.rawValue })
        case .setEquivocationPolicy:
            switch equivocators {
            case "suspend": return .setEquivocationPolicy(suspend: true)
            case "leave": return .setEquivocationPolicy(suspend: false)
            default: throw ValidationError("set-equivocation-policy needs --equivocators suspend or --equivocators leave")
            }
        case .setPartnerEndpoints:
            return .setPartnerEndpoints(try target(), try Self.endpoints(endpoint))
        case .cancelUpgrade:
            guard let name else { throw ValidationError("cancel-upgrade needs --name (the upgrade's)") }
            return .cancelUpgrade(try identifier(name))
        }
    }

    /// A public key given as 64 hex digits or as a PEM file (`calisson-node keys generate` writes `*.pub`).
    static func publicKey(_ raw: String, _ option: String) throws -> Ed25519PublicKey {
        if let bytes = Bytes32(hex: raw) { return Ed25519PublicKey(bytes) }
        do { return try KeyFile.readPublicKey(at: raw) } catch { throw ValidationError("\(option): neither 64 hexadecimal digits nor a public key file: \(error)") }
    }

    func validate() throws {
        guard (1...LedgerLimits.blockSpanMax).contains(deadlineIn) else {
            throw ValidationError("--deadline-in must be from 1 to \(LedgerLimits.blockSpanMax) blocks (the chain allows at most its proposalLifetimeMax)")
        }
    }

    func run() throws {
        guard options.partner != nil else { throw ValidationError("partners propose: --as PARTNER") }
        let action = try governanceAction()
        guard case let .status(status) = try options.connection.ask(.status) else { throw ValidationError("unexpected answer") }
        try options.checkRules(action.rulesIntroduced, for: self.action.rawValue, height: status.height)
        _ = try options.submit(.propose(action, deadline: status.height.saturatingAdding(deadlineIn)))
    }
}

/// The parameters `propose set-parameters` changes; the others keep their current values.
struct ParameterChanges: ParsableArguments {
    @Option(help: "set-parameters: blocks per ledger epoch.") var epochLength: UInt64?
    @Option(help: "set-parameters: blocks per day (caps by day, week, month).") var blocksPerDay: UInt64?
    @Option(help: "set-parameters: how far ahead a transaction may expire, in blocks.") var transactionLifetimeMax: UInt64?
    @Option(help: "set-parameters: how far ahead a proposal's deadline may be, in blocks.") var proposalLifetimeMax: UInt64?
    @Option(help: "set-parameters: the fraction of active partners that passes a proposal, such as 2/3.") var approval: String?
    @Option(help: "set-parameters: the partner receiving demurrage and expired tokens.") var sink: String?
    @Option(help: "set-parameters: the euro value of a token unit, in micro-euros.") var tokenValueMicroEuros: UInt64?

    var changesAny: Bool {
        epochLength != nil || blocksPerDay != nil || transactionLifetimeMax != nil || proposalLifetimeMax != nil || approval != nil || sink != nil
            || tokenValueMicroEuros != nil
    }

    /// `current` with the given parameters changed, checked as the ledger checks them.
    func applied(to current: Parameters) throws -> Parameters {
        var changed = current
        if let epochLength { changed.epochLength = epochLength }
        if let blocksPerDay { changed.blocksPerDay = blocksPerDay }
        if let transactionLifetimeMax { changed.transactionLifetimeMax = transactionLifetimeMax }
        if let proposalLifetimeMax { changed.proposalLifetimeMax = proposalLifetimeMax }
        if let tokenValueMicroEuros { changed.tokenValueMicroEuros = tokenValueMicroEuros }
        if let sink { changed.sink = try identifier(sink) }
        if let approval {
            guard let (numerator, denominator) = GenesisFile.ParametersEntry.approvalFraction(approval) else {
                throw ValidationError("--approval must be a fraction such as 2/3")
            }
            changed.approvalNumerator = numerator
            changed.approvalDenominator = denominator
        }
        if let problem = changed.problem() { throw ValidationError("set-parameters: \(problem)") }
        guard changed != current else { throw ValidationError("set-parameters: every value given is the current one") }
        return changed
    }
}

/// `calisson key`: a citizen's key (its public key is the pseudonymous account).
struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Create or show a citizen's key, or create an evidence key.", subcommands: [Generate.self, Show.self, Evidence.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new Ed25519 key (PEM, 0600) and print its account.")
        @Option(help: "Where to write the key (must not exist).") var out: String
        func run() throws {
            let key = Ed25519PrivateKey()
            do { try KeyFile.write(key, to: out) } catch { throw ValidationError("--out \(out): \(error)") }
            print(key.publicKey.bytes.hex)
        }
    }

    struct Evidence: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new evidence key (PEM, 0600): what commits --evidence and --service text as HMAC-SHA-256 (Docs/PRIVACY.md).")
        @Option(help: "Where to write the key (must not exist).") var out: String
        func run() throws {
            do { try EvidenceKey.generate().write(to: out) } catch { throw CommandError("--out \(out): \(error)") }
            print("evidence key written to \(out): keep it with the partner's other keys; it is needed to prove a commitment to an auditor")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the account (public key) of a key file.")
        @Option(help: "The key file.") var key: String
        func run() throws {
            do { print(try KeyFile.readPrivateKey(at: key).publicKey.bytes.hex) } catch { throw ValidationError("--key \(key): \(error)") }
        }
    }
}
