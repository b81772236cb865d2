// Fuzz target: what a governance decision or a genesis can set, executed through blocks.
// An input is `Pieces`: the first is a genesis file (JSON; when it does not validate, the
// small Métropole's genesis is used and the error must name a field); each next piece is
// a step: a governance action, parameters or a programme amendment from their wire form,
// proposed by the authority and voted through by every active partner (what the ledger
// accepts is enacted, at any value its checks let pass); a block of attributions,
// redemptions and transfers with amounts and units from the input; or empty blocks across
// epoch closes. After every block: one result per command, and each programme's books
// balance (issued = live + redeemed + expired + sunk, and live is what citizens' lots add
// up to). Nothing may trap: a vote that passes must never stop the chain.
import CalissonCrypto
import Foundation
import FuzzSupport
import Ledger
import Transport
import Wire

enum Steps {
    static let citizens = (0..<4).map { Metropole.key("governance citizen \($0)").publicKey }

    static func seeds() -> [[UInt8]] {
        let genesis = Array(try! JSONEncoder().encode(Metropole.genesisFile))
        var parameters = Metropole.ledger.parameters
        parameters.transactionLifetimeMax = LedgerLimits.blockSpanMax
        parameters.epochLength = 1
        let programme = Metropole.ledger.programme(Metropole.id("culture"))!
        var amended = programme
        amended.rewardPerUnit = LedgerLimits.amountMax
        amended.budget = LedgerLimits.amountMax
        amended.endHeight = UInt64.max
        // A chain that starts at rules 4, its partners' endpoints in the genesis.
        var newest = Metropole.genesisFile
        newest.rules = LedgerRules.endpoints
        newest.partners[0].endpoints = ["127.0.0.1:7100", "node.example:65535"]
        let rules4 = Array(try! JSONEncoder().encode(newest))
        let endpoints = [PeerEndpoint("a.example:1")!, PeerEndpoint("b.example:2")!]
        let upgrade = ScheduledUpgrade(name: Metropole.id("later"), height: 40, rules: LedgerRules.newest + 1)
        return [
            Pieces.join([rules4, [0] + GovernanceAction.setPartnerEndpoints(Metropole.id("rtm"), endpoints).wireBytes, [3, 1, 2], [4, 3]]),
            Pieces.join([rules4, [0] + GovernanceAction.scheduleUpgrade(upgrade).wireBytes, [0] + GovernanceAction.cancelUpgrade(upgrade.name).wireBytes, [4, 50]]),
            Pieces.join([rules4, [0] + GovernanceAction.admitPartner(
                Partner(id: Metropole.id("velo"), name: "Vélo", roles: [.issuer, .acceptor], signingKey: Metropole.key("velo").publicKey),
                endpoints: endpoints).wireBytes, [3, 9, 9]]),
            Pieces.join([genesis, [3, 1, 2, 3, 4, 5, 6], [4, 9]]),
            Pieces.join([genesis, [1] + parameters.wireBytes, [3, 200, 17, 99, 3, 1, 8], [4, 30]]),
            Pieces.join([genesis, [2] + amended.wireBytes, [3, 255, 255, 255, 255, 255, 255, 255], [4, 12]]),
            Pieces.join([genesis, [0] + GovernanceAction.setValidators([Metropole.id("rtm")]).wireBytes, [3, 5, 5, 5]]),
            Pieces.join([[UInt8]("{\"chainId\":\"x\"}".utf8), [3, 1]]),
        ]
    }
}

/// Reads numbers from a step's bytes (zeros when they run out).
struct Bytes {
    var rest: ArraySlice<UInt8>
    mutating func byte() -> UInt8 { rest.popFirst() ?? 0 }
    mutating func uint64() -> UInt64 { (0..<8).reduce(UInt64(0)) { value, _ in value << 8 | UInt64(byte()) } }
}

struct Run {
    var ledger: Ledger<MemoryStateStore>
    let authority: Identifier
    let partners: [Identifier]
    var nonce: UInt64 = 0

    mutating func transaction(_ signer: TransactionSigner, _ body: TransactionBody) -> [UInt8] {
        nonce += 1
        let expiry = ledger.height.saturatingAdding(min(ledger.parameters.transactionLifetimeMax, 10))
        return SignedTransaction(transaction: Transaction(chainId: ledger.chainId, signer: signer, nonce: nonce, expiryHeight: expiry, body: body),
                                 signature: Ed25519Signature(.zero)).wireBytes
    }

    mutating func block(_ commands: [[UInt8]]) {
        let outcome = ledger.execute(commands, verify: { _ in true })
        guard outcome.results.count == commands.count else { fatalError("\(commands.count) commands, \(outcome.results.count) results") }
        checkBooks()
    }

    /// Proposed by the authority, then a yes from every other partner, one block each.
    mutating func govern(_ action: GovernanceAction) {
        let proposal = ledger.meta.nextProposal
        let deadline = ledger.height.saturatingAdding(min(ledger.parameters.proposalLifetimeMax, 50))
        block([transaction(.partner(authority), .propose(action, deadline: deadline))])
        for voter in partners where voter != authority && ledger.proposal(proposal)?.status == .open {
            block([transaction(.partner(voter), .vote(proposal: proposal, approve: true))])
        }
    }

    mutating func activity(_ bytes: inout Bytes) {
        var commands: [[UInt8]] = []
        let programmes = ledger.meta.programmes
        guard !programmes.isEmpty else { return block([]) }
        for _ in 0..<Int(bytes.byte() % 8 + 1) {
            let programme = programmes[Int(bytes.byte()) % programmes.count]
            let citizen = Steps.citizens[Int(bytes.byte()) % Steps.citizens.count]
            let partner = partners[Int(bytes.byte()) % partners.count]
            switch bytes.byte() % 3 {
            case 0:
                commands.append(transaction(.partner(partner), .attribute(
                    programme: programme, account: citizen, units: UInt32(truncatingIfNeeded: bytes.uint64()), evidence: SHA256.hash("e \(nonce)"))))
            case 1:
                commands.append(transaction(.citizen(citizen), .redeem(acceptor: partner, amount: bytes.uint64(), service: .zero)))
            default:
                let other = Steps.citizens[Int(bytes.byte()) % Steps.citizens.count]
                commands.append(transaction(.citizen(citizen), .transfer(to: other, programme: programme, amount: bytes.uint64())))
            }
        }
        block(commands)
    }

    /// Each programme's books: what left circulation never exceeds what was issued, and
    /// what is live is what the citizens' lots hold.
    func checkBooks() {
        var held: [Identifier: Amount] = [:]
        for citizen in Steps.citizens {
            for lot in ledger.account(citizen).lots { held[lot.programme, default: 0] += lot.amount }
        }
        for id in ledger.meta.programmes {
            guard let totals = ledger.programme(id)?.totals else { fatalError("programme \(id) listed but not stored") }
            let out = totals.redeemed.addingReportingOverflow(totals.expired).partialValue.addingReportingOverflow(totals.sunk)
            guard !out.overflow, out.partialValue <= totals.issued else { fatalError("\(id): more left circulation than was issued: \(totals)") }
            guard totals.live == held[id] ?? 0 else { fatalError("\(id): totals say \(totals.live) live, lots add up to \(held[id] ?? 0)") }
        }
    }
}

enum Defaults {
    static let genesis = try! Metropole.genesisFile.validated()
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Steps.seeds)
    _ = Metropole.ledger
    _ = Defaults.genesis
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var pieces = Array(Pieces(fuzzInput(data, size)).prefix(12))
    guard !pieces.isEmpty else { return 0 }
    let genesisBytes = pieces.removeFirst()
    // The small Métropole's ledger is built once: most inputs' first piece is no genesis.
    var genesis = Defaults.genesis, ledger = Metropole.ledger
    do {
        genesis = try JSONFile.decode(GenesisFile.self, bytes: genesisBytes).validated()
        guard let created = try? Ledger.create(genesis, in: MemoryStateStore()) else { return 0 }
        ledger = created
    } catch let error as GenesisError {
        guard !error.field.isEmpty else { fatalError("a genesis error without a field: \(error)") }
    } catch {
        guard "\(error)".count > 0 else { fatalError("an empty error") }
    }
    guard let authority = genesis.partners.first(where: { $0.roles.contains(.authority) })?.id else { return 0 }
    var run = Run(ledger: ledger, authority: authority, partners: genesis.partners.map(\.id))
    for piece in pieces {
        var bytes = Bytes(rest: piece[...])
        switch bytes.byte() % 5 {
        case 0: if let action = try? GovernanceAction(wireBytes: Array(bytes.rest)) { run.govern(action) }
        case 1: if let parameters = try? Parameters(wireBytes: Array(bytes.rest)) { run.govern(.setParameters(parameters)) }
        case 2: if let programme = try? Programme(wireBytes: Array(bytes.rest)) { run.govern(.amendProgramme(programme)) }
        case 3: run.activity(&bytes)
        default: for _ in 0..<Int(bytes.byte() % 32) { run.block([]) }
        }
    }
    return 0
}
