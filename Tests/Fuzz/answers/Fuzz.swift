// Fuzz target: a node's answers to its clients, on a real database. At start a one-
// validator node (the production NodeRuntime, TLS and SQLite) runs a few dozen blocks of
// attributions, redemptions and a governance vote, past several stable checkpoints, and
// stops; its database is then opened as the node opens it. Each input is a client
// request, decoded from the bytes as a node reads it, or built from them (any kind, at
// heights and limits anywhere from 0 to UInt64.max, with ids, accounts and state keys that
// exist or not), and answered by `ClientAnswers`, the node's own request handling. An
// answer must encode within the frame limit and decode back to itself; nothing may trap.
import Consensus
import CalissonCrypto
import Foundation
import FuzzSupport
import Ledger
import LightClient
import Node
import Storage
import Transport
import Wire

enum Fixture {
    static let chainId = "calisson-fuzz-answers"
    static let signing = Metropole.key("answers sign"), node = Metropole.key("answers node"), tls = Metropole.key("answers tls")
    static let citizens = (0..<8).map { Metropole.key("answers citizen \($0)") }

    /// The populated database: what the answers are read from, and what exists in it.
    struct Database {
        let answers: ClientAnswers
        let height: UInt64
        let transactions: [Bytes32]
        let accounts: [Bytes32]
        let keys: [StateKey]
        /// The state's root page, and the keys holding a value with that value's hash.
        let root: SHA256Digest
        let values: [StateValueReference]
    }

    nonisolated(unsafe) static let database: Database = build()

    static func build() -> Database {
        let directory = NSTemporaryDirectory() + "calisson-fuzz-answers-\(getpid())"
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let caKey = Metropole.key("answers ca")
        let ca = try! CertificateAuthority.makeRoot(name: "answers CA", key: caKey)
        let certificate = try! CertificateAuthority.issue(commonName: "metropole", subjectKey: tls.publicKey, ca: ca, caKey: caKey, serial: 2)
        let genesis = try! GenesisFile(
            chainId: chainId, parameters: .init(epochLength: 10, sink: "metropole"),
            partners: [.init(id: "metropole", name: "Métropole", roles: ["authority", "issuer", "acceptor", "validator"],
                             signingKey: signing.publicKey.bytes.hex, nodeKey: node.publicKey.bytes.hex, tlsKeyHash: certificate.publicKeyHash.hex)],
            validators: ["metropole"],
            programmes: [.init(id: "tri", name: "Tri", category: "wasteSorting", rewardPerUnit: 10, issuers: ["metropole"], sponsor: "metropole",
                               capPerAccount: 1_000_000, capPeriod: "month", walletCeiling: 1_000_000, budget: 1 << 40, expiryEpochs: 3)]
        ).validated()
        var transport = TransportConfiguration(chainId: chainId, selfID: "metropole", identity: TLSIdentity(certificate: certificate, key: tls), ca: ca)
        transport.registry = ["metropole": certificate.publicKeyHash]
        var configuration = NodeConfiguration(genesis: genesis, databaseFile: "\(directory)/node.db", consensusKey: node, transport: transport)
        configuration.tickMilliseconds = 5
        let runtime = try! NodeRuntime(configuration: configuration)
        try! runtime.start()
        var transactions: [Bytes32] = []
        var nonce: UInt64 = 0
        func submit(_ signer: TransactionSigner, _ key: Ed25519PrivateKey, _ body: TransactionBody) {
            nonce += 1
            let bytes = Transaction(chainId: chainId, signer: signer, nonce: nonce, expiryHeight: runtime.height + 100, body: body).signed(with: key).wireBytes
            if runtime.submit(bytes) == nil { transactions.append(SignedTransaction.idTag.hash(bytes)) }
        }
        let deadline = Date().addingTimeInterval(60)
        while runtime.height < 40, Date() < deadline {
            let before = runtime.height
            for (index, citizen) in citizens.enumerated() {
                submit(.partner(Identifier("metropole")!), signing, .attribute(
                    programme: Identifier("tri")!, account: citizen.publicKey, units: UInt32(index + 1), evidence: SHA256.hash("slip \(nonce)")))
            }
            submit(.citizen(citizens[0].publicKey), citizens[0], .redeem(acceptor: Identifier("metropole")!, amount: 5, service: .zero))
            if nonce < 20 { submit(.partner(Identifier("metropole")!), signing, .propose(.closeProgramme(Identifier("tri")!), deadline: 1_000)) }
            while runtime.height == before, Date() < deadline { usleep(2_000) }
        }
        runtime.stop()
        guard runtime.height >= 40 else { fatalError("the fixture node reached only height \(runtime.height)") }
        let store = try! NodeStore(file: "\(directory)/node.db", readOnly: true)
        let ledger = try! Ledger(chainId: chainId, store: StoredState(store: store))
        let accounts = citizens.map { $0.publicKey.bytes } + [SHA256.hash("nobody")]
        let keys = [StateKeys.meta, StateKeys.parameters, StateKeys.validatorKeys, StateKeys.partner(Identifier("metropole")!),
                    StateKeys.programme(Identifier("tri")!), StateKeys.proposal(1), StateKeys.statement(0, Identifier("metropole")!)]
            + citizens.map { StateKeys.account($0.publicKey) } + [SHA256.hash("no such key")]
        let values = keys.compactMap { key in (try? store.value(key)).flatMap { $0 }.map { StateValueReference(key: key, valueHash: StateTree.valueHash($0)) } }
        return Database(answers: ClientAnswers(store: store, ledger: ledger), height: store.height, transactions: transactions + [SHA256.hash("unknown")],
                        accounts: accounts, keys: keys, root: store.stateRoot, values: values)
    }

    static func seeds() -> [[UInt8]] {
        let db = database
        let requests: [ClientRequest] = [
            .status, .transaction(db.transactions[0]), .state(db.keys[4]), .certifiedState(db.keys[7]), .block(1), .block(UInt64.max),
            .blockTransactions(1 << 63), .blockContents(1), .blockContents(UInt64.max), .handovers(after: UInt64.max), .blocks(from: 1, limit: 1_000, waitMilliseconds: 0),
            .blocks(from: UInt64.max, limit: UInt32.max, waitMilliseconds: 10), .accountTransactions(db.accounts[0], limit: UInt32.max),
            .transactionProof(db.transactions[3]), .waitFinal(db.transactions[1], timeoutMilliseconds: 5), .submit([1, 2, 3]),
            .treePages([db.root, SHA256.hash("no such page")]), .treePages(Array(repeating: db.root, count: ClientRequest.snapshotItemsMax)),
            .stateValues(db.keys.map { StateValueReference(key: $0, valueHash: SHA256.hash("no such value")) } + db.values),
        ]
        return requests.map { [0] + $0.wireBytes } + (0..<24).map { [1, UInt8($0), UInt8($0 * 11 % 256)] + [UInt8](repeating: 0xff, count: 8) }
    }
}

/// A request built from the input: a kind, then existing or random ids and heights.
struct Built {
    var bytes: ArraySlice<UInt8>
    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func uint64() -> UInt64 { (0..<8).reduce(UInt64(0)) { value, _ in value << 8 | UInt64(byte()) } }
    mutating func uint32() -> UInt32 { UInt32(truncatingIfNeeded: uint64() >> 32) }
    /// A height: near the chain's (below, at, just past) or any 64-bit value.
    mutating func height(_ top: UInt64) -> UInt64 {
        let choice = byte()
        return choice < 128 ? UInt64(choice) % (top + 4) : uint64()
    }
    mutating func pick<T>(_ list: [T]) -> T { list[Int(byte()) % list.count] }

    mutating func request(_ db: Fixture.Database) -> ClientRequest {
        switch byte() % 16 {
        case 0: return .status
        case 1: return .transaction(pick(db.transactions))
        case 2: return .state(pick(db.keys))
        case 3: return .block(height(db.height))
        case 4: return .waitFinal(pick(db.transactions), timeoutMilliseconds: uint32())
        case 5: return .accountTransactions(pick(db.accounts), limit: uint32())
        case 6: return .blocks(from: height(db.height), limit: uint32(), waitMilliseconds: uint32() & 1)
        case 7: return .certifiedState(pick(db.keys))
        case 8: return .transactionProof(pick(db.transactions))
        case 9: return .handovers(after: height(db.height))
        case 10: return .blockTransactions(height(db.height))
        case 11: return .submit(Array(bytes))
        case 12: return .blockContents(height(db.height))
        case 13: return .treePages((0..<Int(byte() % 8)).map { _ in byte() < 128 ? db.root : SHA256.hash(Array(bytes)) })
        case 14:
            return .stateValues((0..<Int(byte() % 8)).map { _ in
                byte() < 128 ? pick(db.values) : StateValueReference(key: pick(db.keys), valueHash: SHA256.hash(Array(bytes)))
            })
        default: return .state(SHA256.hash(Array(bytes)))
        }
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    _ = Fixture.database
    writeSeedsIfAsked(Fixture.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let mode = input.first else { return 0 }
    let db = Fixture.database
    let request: ClientRequest
    if mode == 0 {
        guard let decoded = decodeCanonical(ClientRequest.self, Array(input.dropFirst())) else { return 0 }
        request = decoded
    } else {
        var built = Built(bytes: input.dropFirst())
        request = built.request(db)
    }
    let status = NodeStatus(partner: "metropole", height: db.height, stateRoot: .zero, view: 0, epochFirstSeq: 0, peers: [], mempool: 0)
    guard case let .answer(response) = db.answers.outcome(of: request.bounded, status: { status }) else { return 0 }
    let bytes = response.wireBytes
    guard bytes.count <= WireLimits.envelopePayloadSizeMax else { fatalError("an answer of \(bytes.count) bytes to \(request): over the frame limit") }
    requireCanonical(response, from: bytes)
    return 0
}
