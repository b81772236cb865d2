// Fuzz target: the transaction decoder and the ledger's validation. An input is one or
// more signed transactions (`Pieces`); each must decode canonically or be refused, and
// the block they form is executed on a small Métropole's ledger, under the first ledger
// rules and past an upgrade to the newest (where acceptance by category and equivocation
// evidence execute), with every signature taken as valid (a signer can sign anything: what matters is that the rules
// refuse what they must without crashing). Checks after the block: one result per
// command, and each programme's live total equals what the citizens' lots add up to.
import CalissonCrypto
import FuzzSupport
import Ledger
import Wire

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Metropole.transactionSeeds)
    _ = Metropole.ledger
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    // The whole input as one transaction (the decoder alone), then as a block of several.
    decodeCanonical(SignedTransaction.self, input)
    let commands = Array(Pieces(input).prefix(16))
    for command in commands { decodeCanonical(SignedTransaction.self, command) }
    // Under the first rules, and past an upgrade to the newest (where the later kinds execute).
    for start in [Metropole.ledger, Metropole.upgradedLedger] { check(commands, on: start) }
    return 0
}

func check(_ commands: [[UInt8]], on start: Ledger<MemoryStateStore>) {
    var ledger = start
    var accounts: Set<AccountID> = []
    let outcome = ledger.execute(commands, verify: { _ in true })
    guard outcome.results.count == commands.count else { fatalError("\(commands.count) commands, \(outcome.results.count) results") }
    for concerned in outcome.accounts { accounts.formUnion(concerned) }
    // Conservation: what each programme says citizens hold is what their lots add up to.
    var held: [Identifier: Amount] = [:]
    for account in accounts {
        for lot in ledger.account(account).lots { held[lot.programme, default: 0] += lot.amount }
    }
    for programme in Set(held.keys).union(Metropole.genesisFile.programmes.map { Metropole.id($0.id) }) {
        let live = ledger.programme(programme)?.totals.live ?? 0
        guard live == held[programme] ?? 0 else { fatalError("\(programme): totals say \(live) held, lots add up to \(held[programme] ?? 0)") }
    }
}
