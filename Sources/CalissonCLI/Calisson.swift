import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Settlement
import Storage
import Transport
import Wire

/// The query and submit CLI, `calisson` (a library so that its argument parsing can be
/// fuzzed: `Tests/Fuzz/cli`); the executable is `Calisson.main()`.
public struct Calisson: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        commandName: "calisson",
        abstract: "Query a Calisson node (balances, accounts, transactions, blocks, partners, programmes, supply, statements, epoch reports) and submit transactions.",
        discussion: """
            Every state answer comes with a Merkle proof, checked here against the state root \
            the node reports; with --genesis, against the root of a checkpoint whose certificate \
            a quorum of validators signed, checked here too. A node whose proof or certificate \
            does not hold is reported and the command fails (Docs/QUERY.md).
            """,
        subcommands: [
            Status.self, Balance.self, AccountCommand.self, Tx.self, BlockCommand.self, PartnerCommand.self, ProgrammeCommand.self, Supply.self,
            StatementCommand.self, ReportCommand.self, SettlementCommand.self, Validators.self, Proposals.self, Follow.self, Submit.self, KeyCommand.self,
        ])
}

/// A failure the user can act on, printed as it is (no usage text: the command line was right).
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct Connection: ParsableArguments {
    @Option(help: "The node's client address, host:port.")
    var node = "127.0.0.1:7101"

    @Option(help: "The consortium CA certificate (PEM) the node's certificate must chain to (with --node).")
    var ca: String?

    @Option(help: "Read a node's SQLite database directly, read-only (the node may be running), instead of asking it.")
    var db: String?

    @Option(help: "The chain id.")
    var chain = "calisson-local"

    @Flag(help: "Print JSON for scripts.")
    var json = false

    @Option(help: "Seconds to wait for each answer of the node (0.001 to 3600).")
    var requestTimeout = 30.0

    func validate() throws {
        try Self.checkSeconds(requestTimeout, "--request-timeout", allowZero: false)
        guard maxLag <= LedgerLimits.blockSpanMax else { throw ValidationError("--max-lag must be at most \(LedgerLimits.blockSpanMax) blocks") }
        for witness in witnesses where Self.hostAndPort(witness) == nil { throw ValidationError("--witness \(witness): expected host:port") }
        if !witnesses.isEmpty, genesis == nil { throw ValidationError("--witness goes with --genesis (only certified answers can be compared)") }
    }

    static func hostAndPort(_ address: String) -> (String, UInt16)? {
        let parts = address.split(separator: ":")
        guard parts.count == 2, !parts[0].isEmpty, let port = UInt16(parts[1]) else { return nil }
        return (String(parts[0]), port)
    }

    /// A duration given in seconds on the command line: finite, within an hour (zero only
    /// where it means "do not wait"), so that converting it to milliseconds cannot trap.
    static let secondsMax = 3_600.0
    static func checkSeconds(_ seconds: Double, _ option: String, allowZero: Bool) throws {
        guard seconds.isFinite, seconds >= 0, seconds <= secondsMax, allowZero || seconds >= 0.001 else {
            throw ValidationError("\(option) must be a number of seconds from \(allowZero ? "0" : "0.001") to \(Int(secondsMax)), not \(seconds)")
        }
    }

    /// `requestTimeout` in milliseconds (checked by `validate`).
    var requestTimeoutMilliseconds: Int { Int((requestTimeout * 1_000).rounded(.up)) }

    @Option(help: "The chain's genesis file: answers are then taken at the latest stable checkpoint and its certificate checked against the validators in force there, followed from the genesis.")
    var genesis: String?

    @Option(name: .customLong("witness"), help: ArgumentHelp(
        "Another node's client address, host:port (repeatable; with --genesis): its newest certified checkpoint bounds how far behind an answer may be.",
        valueName: "host:port"))
    var witnesses: [String] = []

    @Option(help: "With --genesis: refuse an answer certified more than this many blocks behind the newest certified checkpoint known (witnesses, memory).")
    var maxLag: UInt64 = Freshness.lagMaxDefault

    @Option(help: "With --genesis: the file remembering the newest certified checkpoint seen per chain, so no node can take this client backwards (default: $XDG_STATE_HOME/calisson/checkpoints.json or ~/.local/state/calisson/checkpoints.json; 'none': no memory).")
    var checkpoints: String?

    /// The genesis file, checked, when --genesis is given.
    func checkedGenesis() throws -> Genesis? {
        guard let genesis else { return nil }
        let file: GenesisFile
        do { file = try JSONFile.decode(GenesisFile.self, path: genesis) } catch { throw CommandError("--genesis \(error)") }
        let checked: Genesis
        do { checked = try file.validated() } catch { throw CommandError("--genesis \(genesis): \(error.field): \(error.reason)") }
        guard checked.chainId == chain else { throw ValidationError("--genesis is for chain '\(checked.chainId)', not '\(chain)' (--chain)") }
        return checked
    }

    /// Checks that `included` proves transaction `id` final (its block's commit certificate
    /// signed by a quorum of the validators in force there, its place in the block); the
    /// `proof` line saying so.
    func checkInclusion(_ included: TransactionInclusion, of id: Bytes32, validators: TrustedValidators) throws -> String {
        do {
            try InclusionCheck.verify(included, transaction: id, validators: validators.keys(at: included.location.height), chainId: chain)
        } catch {
            throw ValidationError("the node's inclusion proof does not hold (\(error)): this node cannot be trusted")
        }
        return "included in block \(included.location.height), whose commit certificate a quorum of the validators in force there signed (the result is the node's word)"
    }

    /// Checks that `answer` proves transaction `id` final and its result (`ResultCheck`): the
    /// `proof` line saying how far, and the place and result to show (the reason as this
    /// code renders the committed bytes, when they are certified).
    func checkResult(_ answer: ResultProof, of id: Bytes32, validators: TrustedValidators) throws -> (String, TransactionLocation) {
        let verified: VerifiedResult
        do { verified = try ResultCheck.verify(answer, transaction: id, trusted: validators, chainId: chain) } catch {
            throw ValidationError("\(error)")
        }
        let height = verified.location.height
        if verified.isCertified, !verified.location.applied { try confirmRejection(of: id, at: height, validators: validators) }
        let included = "included in block \(height), whose commit certificate a quorum of the validators in force there signed"
        let line: String
        switch verified.certification {
        case let .certified(checkpoint, root, _):
            line = included + "; its result is the one the block committed, under state root \(root.hex.prefix(16))… certified at checkpoint "
                + "\(checkpoint) by a quorum (followed from the genesis)"
                + (CommittedResults.result(answer.committed ?? []).map(Self.hasText) == true ? " (the reason's detail is the node's word)" : "")
        case let .nonceUsedElsewhere(checkpoint):
            line = included + "; this copy was rejected, as checkpoint \(checkpoint) certifies, because its nonce was used: the transaction, "
                + "or another of its signer with that nonce, applied elsewhere, which this node did not prove"
        case let .notYetCertified(checkpoint):
            line = included + " (the result is the node's word until a checkpoint at or above block \(height) is certified: this node's latest is \(checkpoint))"
        case let .notCommitted(checkpoint):
            line = included + " (the result is the node's word: block \(height) committed no results, as checkpoint \(checkpoint) proves; "
                + "ledger rules before \(LedgerRules.resultsCommitted))"
        case let .unproven(reason):
            line = included + " (the result is the node's word: \(reason))"
        }
        return (line, verified.location)
    }

    /// A rejection does not use the nonce: the same bytes may have applied in a later block,
    /// and a node could prove the earlier, rejected copy. At most one copy applies, so a
    /// witness (--witness) that proves an applied copy shows the node hid it.
    func confirmRejection(of id: Bytes32, at height: UInt64, validators: TrustedValidators) throws {
        for witness in witnesses {
            guard let (host, port) = Self.hostAndPort(witness), let client = try? client(host: host, port: port) else { continue }
            defer { client.close() }
            guard let bytes = try? client.request(ClientRequest.transactionResult(id).wireBytes, timeoutMilliseconds: requestTimeoutMilliseconds),
                case let .transactionResult(answer?)? = try? ClientResponse(wireBytes: bytes),
                let other = try? ResultCheck.verify(answer, transaction: id, trusted: validators, chainId: chain),
                other.isCertified, other.location.applied
            else { continue }
            throw ValidationError(
                "the node proves a rejected copy of the transaction in block \(height), and witness \(witness) proves it applied in block "
                    + "\(other.location.height): the node hid the copy that applied, it cannot be trusted")
        }
    }

    static func hasText(_ result: TransactionResult) -> Bool {
        if case let .rejected(rejection) = result { return rejection.hasText }
        return false
    }

    /// The validator sets to trust, when --genesis is given: the genesis set, then every
    /// change the node proves (each handover certified by the set it replaces).
    func trustedValidators() throws -> TrustedValidators? {
        guard let checked = try checkedGenesis() else { return nil }
        do { return try CertifiedReader.trusted(checked, ask: ask) } catch let error as CertifiedReadError { throw CommandError("\(error)") }
    }

    func client() throws -> TransportClient {
        guard let (host, port) = Self.hostAndPort(node) else { throw ValidationError("--node must be host:port") }
        return try client(host: host, port: port)
    }

    func client(host: String, port: UInt16) throws -> TransportClient {
        guard let ca else { throw ValidationError("--ca is required with --node and --witness") }
        let authority: Certificate
        do { authority = try Certificate(file: ca) } catch { throw CommandError("--ca \(error)") }
        return try TransportClient(host: host, port: port, ca: authority, chainId: chain, timeoutMilliseconds: requestTimeoutMilliseconds)
    }

    func ask(_ request: ClientRequest) throws -> ClientResponse { try ask(request, waitingMilliseconds: 0) }

    /// The node's answer to `request`, within `--request-timeout` past the time the request
    /// itself asks the node to wait (`waitingMilliseconds`: a long poll). A node's error is
    /// thrown, unless `errorAnswers` (the caller has a way on without what was asked).
    func ask(_ request: ClientRequest, waitingMilliseconds: Int, errorAnswers: Bool = false) throws -> ClientResponse {
        if let db { return try DatabaseReader(file: db).answer(request) }
        let client = try client()
        defer { client.close() }
        let waiting = max(0, waitingMilliseconds)
        let timeout = min(requestTimeoutMilliseconds, Int.max - waiting) + waiting
        let response = try ClientResponse(wireBytes: try client.request(request.wireBytes, timeoutMilliseconds: timeout))
        if case let .error(reason) = response, !errorAnswers { throw ValidationError("node error: \(reason)") }
        return response
    }

    /// A state record, its proof checked against the root the node reports, or, with
    /// --genesis, against the root a quorum of validators certified at a checkpoint.
    /// `trusted`: the validator sets already followed, when a command reads several records.
    func record(_ key: StateKey, trusted: TrustedValidators? = nil) throws -> (value: [UInt8]?, height: UInt64, root: SHA256Digest) {
        if let validators = try trusted ?? trustedValidators() {
            let record: CertifiedRecord
            do { record = try CertifiedReader.record(key, trusted: validators, chainId: chain, ask: ask) } catch let error as CertifiedReadError {
                throw CommandError("\(error)")
            }
            try checkFreshness(record.height)
            return (record.value, record.height, record.root)
        }
        guard case let .state(height, root, value, proof) = try ask(.state(key)) else { throw ValidationError("unexpected answer") }
        do {
            if let value { try proof.verifyInclusion(key: key, value: value, root: root) } else { try proof.verifyAbsence(key: key, root: root) }
        } catch {
            throw ValidationError("the node's answer does not match its own state root (\(error)): this node cannot be trusted")
        }
        return (value, height, root)
    }

    func emit(_ fields: [(String, String)]) {
        if json {
            let object = Self.jsonObject(fields)
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) { print(String(decoding: data, as: UTF8.self)) }
        } else {
            let width = fields.map(\.0.count).max() ?? 0
            for (name, value) in fields { print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + Self.printable(value)) }
        }
    }

    /// `text` with its control characters written as escapes (`\n`, `\u{1B}`…): names,
    /// reasons and ids come from nodes and partners, and an escape sequence or a line break
    /// in them could clear the terminal or print a line of their making (a false `proof`).
    static func printable(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.properties.generalCategory == .control { out += scalar.escaped(asASCII: true) } else { out.unicodeScalars.append(scalar) }
        }
        return out
    }

    /// The fields as one JSON object of strings. A name may come twice (an account holds a
    /// lot of one programme per expiry epoch): its values are joined, in order, by "; ".
    static func jsonObject(_ fields: [(String, String)]) -> [String: String] {
        Dictionary(fields, uniquingKeysWith: { first, next in "\(first); \(next)" })
    }

    func proofLine(_ height: UInt64, _ root: SHA256Digest) -> (String, String) {
        genesis != nil
            ? ("proof", "verified against state root \(root.hex.prefix(16))…, certified at checkpoint \(height) by a quorum of the validators in force there (followed from the genesis); \(freshnessText(height))")
            : ("proof", "verified against state root \(root.hex.prefix(16))… at height \(height) (as reported by the node; --genesis to check its certificate)")
    }
}

func roleNames(_ roles: Roles) -> String {
    [(Roles.issuer, "issuer"), (.acceptor, "acceptor"), (.validator, "validator"), (.authority, "authority")]
        .filter { roles.contains($0.0) }.map(\.1).joined(separator: ",")
}

func resultText(_ location: TransactionLocation) -> String {
    location.applied ? "applied" : "rejected: \(location.reason ?? "(no reason recorded)")"
}

func identifier(_ raw: String) throws -> Identifier {
    guard let id = Identifier(raw) else { throw ValidationError("'\(raw)' is not a partner or programme id") }
    return id
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The node's height, state root, view and links.")
    @OptionGroup var connection: Connection
    func run() throws {
        guard case let .status(status) = try connection.ask(.status) else { throw ValidationError("unexpected answer") }
        connection.emit([
            ("partner", status.partner), ("height", "\(status.height)"), ("stateRoot", status.stateRoot.hex), ("view", "\(status.view)"),
            ("epochFrom", "\(status.epochFirstSeq)"), ("peers", status.peers.joined(separator: ",")), ("mempool", "\(status.mempool)"),
        ] + status.operatorFields)
    }
}

/// An account's tokens, with provenance and expiry, and the proof line.
func holdingFields(_ account: String, _ connection: Connection) throws -> (Bytes32, [(String, String)]) {
    guard let key = Bytes32(hex: account) else { throw ValidationError("an account is 64 hexadecimal digits") }
    let (value, height, root) = try connection.record(StateKeys.account(Ed25519PublicKey(key)))
    let holding = try value.map { try Account(wireBytes: $0) } ?? Account()
    var fields = [("account", account), ("balance", "\(holding.balance)")]
    for lot in holding.lots {
        let expiry = lot.expiresAtEpoch == Lot.noExpiry ? "demurrage" : "expires after epoch \(lot.expiresAtEpoch)"
        fields.append(("  \(lot.programme)", "\(lot.amount) (\(expiry))"))
    }
    fields.append(connection.proofLine(height, root))
    return (key, fields)
}

struct Balance: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "An account's tokens, with provenance and expiry.")
    @OptionGroup var connection: Connection
    @Argument(help: "The account's public key (64 hex digits).") var account: String
    func run() throws {
        connection.emit(try holdingFields(account, connection).1)
    }
}

struct Tx: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tx", abstract: "Where a transaction is final, and its result.")
    @OptionGroup var connection: Connection
    @Argument(help: "The transaction id (64 hex digits).") var id: String
    func run() throws {
        guard let key = Bytes32(hex: id) else { throw ValidationError("a transaction id is 64 hexadecimal digits") }
        if let validators = try connection.trustedValidators() {
            var proof: String
            let found: TransactionLocation
            switch try connection.ask(.transactionResult(key), waitingMilliseconds: 0, errorAnswers: true) {
            case let .transactionResult(answer):
                guard let answer else { return connection.emit([("transaction", id), ("status", "not final on this node")]) }
                (proof, found) = try connection.checkResult(answer, of: key, validators: validators)
            case let .error(reason):
                // A node that cannot prove the result (no stable checkpoint yet, an older
                // release): its inclusion, the result its word.
                guard case let .transactionProof(included) = try connection.ask(.transactionProof(key)) else { throw ValidationError("unexpected answer") }
                guard let included else { return connection.emit([("transaction", id), ("status", "not final on this node")]) }
                proof = try connection.checkInclusion(included, of: key, validators: validators) + "; the node gave no proof of the result: \(reason)"
                found = included.location
            default: throw ValidationError("unexpected answer")
            }
            return connection.emit([
                ("transaction", id), ("height", "\(found.height)"), ("position", "\(found.position)"),
                ("result", resultText(found)), ("proof", proof),
            ])
        }
        guard case let .transaction(found) = try connection.ask(.transaction(key)) else { throw ValidationError("unexpected answer") }
        guard let found else { return connection.emit([("transaction", id), ("status", "not final on this node")]) }
        connection.emit([("transaction", id), ("height", "\(found.height)"), ("position", "\(found.position)"), ("result", resultText(found))])
    }
}

struct BlockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block", abstract: "A final block's header and the validators whose commit votes certify it (checked with --genesis).")
    @OptionGroup var connection: Connection
    @Argument var height: UInt64
    func run() throws {
        guard case let .block(found) = try connection.ask(.block(height)) else { throw ValidationError("unexpected answer") }
        guard let found else { return connection.emit([("block", "\(height)"), ("status", "not final on this node")]) }
        guard found.height == height else {
            throw ValidationError("the node answered block \(found.height) when block \(height) was asked: this node cannot be trusted")
        }
        guard let signers = InclusionCheck.signers(ofCommit: found.certificate) else {
            throw ValidationError("the node's commit certificate for block \(height) does not decode: this node cannot be trusted")
        }
        let trusted = try connection.trustedValidators()
        if let trusted {
            do {
                try InclusionCheck.verifyCommit(
                    digest: found.digest, height: found.height, certificate: found.certificate, validators: trusted.keys(at: found.height),
                    chainId: connection.chain)
            } catch {
                throw ValidationError("the node's commit certificate for block \(height) does not hold (\(error)): this node cannot be trusted")
            }
        }
        let names = try partnersByNodeKey(trusted: trusted)
        connection.emit([
            ("block", "\(found.height)"), ("digest", found.digest.hex)] + Self.rootField(found.stateRoot, json: connection.json) + [
            ("transactions", "\(found.transactionCount)"),
            ("signers", signers.map { names[$0] ?? "key \($0.bytes.hex.prefix(16))…" }.joined(separator: ", ")),
            ("certificate", "\(signers.count) commit votes, \(found.certificate.count) bytes; "
                + (trusted != nil
                    ? "signatures checked against the validators in force at that height (followed from the genesis): they certify the digest; "
                        + "the state root and the transaction count shown are the node's word"
                    : "not checked (--genesis to check it)")),
        ])
    }

    /// The partner holding each node key among today's validators (a key rotated or a
    /// partner gone since is shown as a key).
    func partnersByNodeKey(trusted: TrustedValidators?) throws -> [Ed25519PublicKey: String] {
        let (value, _, _) = try connection.record(StateKeys.meta, trusted: trusted)
        guard let value, let meta = try? LedgerMeta(wireBytes: value) else { return [:] }
        var names: [Ed25519PublicKey: String] = [:]
        for id in meta.validators {
            let (partner, _, _) = try connection.record(StateKeys.partner(id), trusted: trusted)
            if let key = try partner.flatMap({ try Partner(wireBytes: $0).nodeKey }) { names[key] = id.rawValue }
        }
        return names
    }

    /// A block's recorded state root; where it has none (a node under load defers the
    /// tree's update to its next checkpoint height), why, or in JSON no field.
    static func rootField(_ root: SHA256Digest, json: Bool) -> [(String, String)] {
        guard root == .zero else { return [("stateRoot", root.hex)] }
        return json ? [] : [("stateRoot", "none (deferred to the next checkpoint)")]
    }
}

struct PartnerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "partner", abstract: "A partner's record.")
    @OptionGroup var connection: Connection
    @Argument var id: String
    func run() throws {
        let (value, height, root) = try connection.record(StateKeys.partner(try identifier(id)))
        guard let value else { return connection.emit([("partner", id), ("status", "unknown"), connection.proofLine(height, root)]) }
        let partner = try Partner(wireBytes: value)
        // Its endpoints are a record of their own (ledger rules 4), read with its own proof.
        let (listed, endpointsHeight, endpointsRoot) = try connection.record(StateKeys.partnerEndpoints(partner.id))
        let endpoints = try listed.map { try EndpointList(wireBytes: $0).endpoints } ?? []
        var fields = [("partner", partner.id.rawValue), ("name", partner.name), ("status", "\(partner.status)"),
                      ("roles", roleNames(partner.roles)), ("signingKey", partner.signingKey.description),
                      ("endpoints", endpoints.isEmpty ? "none" : endpoints.map(\.description).joined(separator: ",")), connection.proofLine(height, root)]
        if endpointsHeight != height { fields.append(("endpointsProof", connection.proofLine(endpointsHeight, endpointsRoot).1)) }
        connection.emit(fields)
    }
}

struct ProgrammeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "programme", abstract: "A programme's rules and totals.")
    @OptionGroup var connection: Connection
    @Argument var id: String
    func run() throws {
        let (value, height, root) = try connection.record(StateKeys.programme(try identifier(id)))
        guard let value else { return connection.emit([("programme", id), ("status", "unknown"), connection.proofLine(height, root)]) }
        let programme = try Programme(wireBytes: value)
        connection.emit([("programme", programme.id.rawValue), ("name", programme.name), ("sponsor", programme.sponsor.rawValue),
                         ("issued", "\(programme.totals.issued)"), ("redeemed", "\(programme.totals.redeemed)"),
                         ("expired", "\(programme.totals.expired)"), ("sunk", "\(programme.totals.sunk)"), ("budget", "\(programme.budget)"),
                         connection.proofLine(height, root)])
    }
}

struct Supply: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tokens issued, in circulation, redeemed, expired and sunk.")
    @OptionGroup var connection: Connection
    func run() throws {
        let (value, height, root) = try connection.record(StateKeys.meta)
        guard let value else { throw ValidationError("the node has no ledger state") }
        let meta = try LedgerMeta(wireBytes: value)
        let totals = meta.totals
        connection.emit([("height", "\(meta.height)"), ("epoch", "\(meta.epoch)"), ("issued", "\(totals.issued)"), ("live", "\(totals.live)"),
                         ("redeemed", "\(totals.redeemed)"), ("expired", "\(totals.expired)"), ("sunk", "\(totals.sunk)"),
                         ("validators", meta.validators.map(\.rawValue).joined(separator: ",")), connection.proofLine(height, root)])
    }
}

struct StatementCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "statement", abstract: "A partner's clearing statement for an epoch.")
    @OptionGroup var connection: Connection
    @Argument var epoch: UInt64
    @Argument var partner: String
    func run() throws {
        let (value, height, root) = try connection.record(StateKeys.statement(epoch, try identifier(partner)))
        guard let value else { return connection.emit([("statement", "\(epoch) \(partner)"), ("status", "none (epoch not closed)"), connection.proofLine(height, root)]) }
        let statement = try Statement(wireBytes: value)
        connection.emit([("epoch", "\(statement.epoch)"), ("partner", statement.partner.rawValue), ("grossIn", "\(statement.grossIn)"),
                         ("grossOut", "\(statement.grossOut)"), ("net", "\(statement.net)"), ("obligations", statement.obligationsHash.hex),
                         ("sha256", CertifiedClearing.statementHash(statement).hex), connection.proofLine(height, root)])
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "A closed epoch's report: per programme, category and acceptor, what happened; each partner's net.")
    @OptionGroup var connection: Connection
    @Argument var epoch: UInt64
    func run() throws {
        let (value, height, root) = try connection.record(StateKeys.epochReport(epoch))
        guard let value else { return connection.emit([("report", "\(epoch)"), ("status", "none (epoch not closed)"), connection.proofLine(height, root)]) }
        let report = try EpochReport(wireBytes: value)
        func figures(_ prefix: String, _ figures: EpochReport.Figures) -> [(String, String)] {
            [("\(prefix).attributions", "\(figures.attributions)"), ("\(prefix).units", "\(figures.units)"), ("\(prefix).issued", "\(figures.issued)"),
             ("\(prefix).redeemed", "\(figures.redeemed)"), ("\(prefix).expired", "\(figures.expired)"), ("\(prefix).sunk", "\(figures.sunk)")]
        }
        var fields = [("epoch", "\(report.epoch)"), ("heights", "\(report.firstHeight)-\(report.lastHeight)"),
                      ("tokenValueMicroEuros", "\(report.tokenValueMicroEuros)")]
        for programme in report.programmes {
            fields += figures("programme.\(programme.programme)", programme.figures)
            fields.append(("programme.\(programme.programme).budgetLeft", "\(programme.budgetLeft)"))
        }
        for category in report.categories { fields += figures("category.\(category.category)", category.figures) }
        for acceptor in report.acceptors {
            fields += [("acceptor.\(acceptor.acceptor).redemptions", "\(acceptor.redemptions)"), ("acceptor.\(acceptor.acceptor).amount", "\(acceptor.amount)")]
        }
        for net in report.nets { fields.append(("net.\(net.partner)", "\(net.net)")) }
        fields += [("supply.issued", "\(report.totals.issued)"), ("supply.redeemed", "\(report.totals.redeemed)"),
                   ("supply.expired", "\(report.totals.expired)"), ("supply.sunk", "\(report.totals.sunk)"), connection.proofLine(height, root)]
        connection.emit(fields)
    }
}

struct AccountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "account", abstract: "An account's tokens and its latest transactions.")
    @OptionGroup var connection: Connection
    @Argument(help: "The account's public key (64 hex digits).") var account: String
    @Option(help: "Transactions to list.") var limit: UInt32 = 10
    func run() throws {
        let (key, holding) = try holdingFields(account, connection)
        var fields = holding
        guard case let .accountTransactions(list) = try connection.ask(.accountTransactions(key, limit: limit)) else { throw ValidationError("unexpected answer") }
        for entry in list {
            fields.append(("  tx \(entry.id.hex.prefix(16))…", "block \(entry.location.height), \(resultText(entry.location))"))
        }
        connection.emit(fields)
    }
}

struct Validators: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The validator partners and their node keys.")
    @OptionGroup var connection: Connection
    func run() throws {
        let trusted = try connection.trustedValidators()  // followed once for all the records
        let (value, height, root) = try connection.record(StateKeys.meta, trusted: trusted)
        guard let value else { throw ValidationError("the node has no ledger state") }
        let meta = try LedgerMeta(wireBytes: value)
        var fields: [(String, String)] = []
        for id in meta.validators {
            let (partner, _, _) = try connection.record(StateKeys.partner(id), trusted: trusted)
            let key = try partner.map { try Partner(wireBytes: $0).nodeKey?.description ?? "(no node key)" } ?? "(unknown partner)"
            fields.append((id.rawValue, key))
        }
        fields.append(connection.proofLine(height, root))
        connection.emit(fields)
    }
}

struct Proposals: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The latest governance proposals and their status.")
    @OptionGroup var connection: Connection
    @Option(help: "Proposals to list.") var limit: UInt64 = 20
    func run() throws {
        let trusted = try connection.trustedValidators()  // followed once for all the records
        let (value, height, root) = try connection.record(StateKeys.meta, trusted: trusted)
        guard let value else { throw ValidationError("the node has no ledger state") }
        let meta = try LedgerMeta(wireBytes: value)
        var fields: [(String, String)] = []
        let last = meta.nextProposal
        for id in stride(from: last > 1 ? last - 1 : 0, through: max(1, last > limit ? last - limit : 1), by: -1) where id >= 1 {
            guard let bytes = try connection.record(StateKeys.proposal(id), trusted: trusted).value else { continue }
            let proposal = try Proposal(wireBytes: bytes)
            fields.append(("#\(id)", "\(proposal.status) by \(proposal.proposer), deadline \(proposal.deadline), yes \(proposal.yes.count), no \(proposal.no.count)"))
        }
        if fields.isEmpty { fields.append(("proposals", "none")) }
        fields.append(connection.proofLine(height, root))
        connection.emit(fields)
    }
}

/// `--db`: answers from a node's database opened read-only, as the node would.
struct DatabaseReader: TreePageSource {
    let store: NodeStore

    init(file: String) throws { store = try NodeStore(file: file, readOnly: true) }

    func treePage(_ root: SHA256Digest, depth: Int) -> TreePage? {
        (try? store.treePage(root)).flatMap { $0 }.flatMap { try? TreePage(decoding: $0) }.flatMap { $0.root == root ? $0 : nil }
    }

    func answer(_ request: ClientRequest) throws -> ClientResponse {
        switch request {
        // The state as stored, at its height (a node writes it at its checkpoints: the
        // blocks after it are in the file, executed again when the node starts).
        // Read in one snapshot: the node may move its stored state, or write a slice of the
        // next one, between two statements (Docs/STORAGE.md, "The state written in slices").
        case let .state(key):
            let answer = try store.reading { () -> Result<ClientResponse, StorageError> in
                let root = store.stateRoot
                return Result { () throws(StorageError) in
                    .state(height: store.stateHeight, root: root, value: try store.value(key), proof: StateTree.proof(for: key, root: root, nodes: self))
                }
            }
            return try answer.get()
        case .status:
            return .status(
                NodeStatus(partner: "(database)", height: store.stateHeight, stateRoot: store.stateRoot, view: 0, epochFirstSeq: 0, peers: [], mempool: 0))
        case let .transaction(id), let .waitFinal(id, _):
            return .transaction(try StoreAnswers(store: store).transaction(id))
        case let .accountTransactions(account, limit):
            return .accountTransactions(try StoreAnswers(store: store).accountTransactions(account, limit: limit))
        case let .block(height):
            return .block(try StoreAnswers(store: store).block(height))
        case let .blocks(from, limit, _):
            return .blocks(try StoreAnswers(store: store).blocks(from: from, limit: limit))
        case .submit:
            return .error("a database cannot take submissions")
        case .transactionProof, .transactionResult:
            return .error("proofs of inclusion and results come from a node (--node)")
        case let .blockTransactions(height):
            return .blockTransactions(try StoreAnswers(store: store).blockTransactions(height))
        case let .blockContents(height):
            return .blockContents(try StoreAnswers(store: store).blockContents(height))
        case let .handovers(after):
            return .handovers(try store.handovers(after: after, limit: ClientRequest.handoversMax).map { try Handover(wireBytes: $0.record) })
        case .certifiedState:
            return .error("certified answers come from a node (--node); --db answers from the file's latest state")
        case .treePages, .stateValues:
            return .error("snapshots are served by a running node's client port (calisson-node sync --from)")
        }
    }
}

struct Follow: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print finalized blocks from a height on, as they are finalized (until interrupted).")

    /// The height of a block a node answered when `asked` was asked, if it can be followed:
    /// the blocks come one after another, and a node that answers any other height (a gap,
    /// a repeat, 2^64 − 1, which trapped here) is refused by name. The first may come later
    /// than asked: a node joined from a snapshot holds no block below its checkpoint.
    static func taken(_ height: UInt64, asked: UInt64, first: Bool) throws -> UInt64 {
        guard height < UInt64.max, height == asked || (first && height > asked) else {
            throw CommandError("the node answered block \(height) when block \(asked) was asked: its answers cannot be followed")
        }
        return height
    }

    @OptionGroup var connection: Connection
    @Option(help: "First height.") var from: UInt64 = 1
    @Option(help: "Stop after this many blocks (0: never).") var count: UInt64 = 0
    func run() throws {
        var next = max(from, 1)  // the first block is at height 1
        var printed: UInt64 = 0
        let wait = 30_000
        while count == 0 || printed < count {
            // The node answers when a block comes or the wait is over: the request's time runs
            // past the wait (on an idle chain it ran out with the wait, and follow quit).
            guard case let .blocks(list) = try connection.ask(.blocks(from: next, limit: 64, waitMilliseconds: UInt32(clamping: wait)), waitingMilliseconds: wait) else {
                throw ValidationError("unexpected answer")
            }
            for block in list where count == 0 || printed < count {
                let taken = try Self.taken(block.height, asked: next, first: printed == 0)
                if taken != next {
                    FileHandle.standardError.write(Data("calisson: the node holds blocks from \(taken) on (\(next) was asked)\n".utf8))
                    next = taken
                }
                connection.emit([("block", "\(block.height)"), ("digest", block.digest.hex)] + BlockCommand.rootField(block.stateRoot, json: connection.json)
                    + [("transactions", "\(block.transactionCount)")])
                next += 1
                printed += 1
            }
            if connection.db != nil && list.isEmpty { return }  // a database does not grow while we wait
        }
    }
}
