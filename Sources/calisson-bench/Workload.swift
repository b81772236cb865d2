import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Node
import Transport
import Wire

/// Submits signed attributions and redemptions to a running local cluster (written by
/// `calisson-node testnet`) through the nodes' client ports, and waits for them to be final.
struct WorkloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workload",
        abstract: "Submit Attribute and Redeem transactions to a local testnet and wait until they are final.")

    @Option(help: "The testnet directory (calisson-node testnet --out).")
    var testnet: String

    @Option(help: "Attributions to submit (one redemption follows every fourth).")
    var transactions = 1_000

    @Option(help: "Citizen accounts.")
    var citizens = 100

    @Option(help: "Seconds to wait for finality.")
    var timeout = 60.0

    static func citizen(_ index: Int) -> Ed25519PrivateKey { Ed25519PrivateKey(seed: SHA256.hash("testnet citizen \(index)").bytes)! }

    func validate() throws {
        try checkCounts([(transactions, "--transactions", 1...10_000_000), (citizens, "--citizens", 1...1_000_000)])
        try checkFinite([(timeout, "--timeout")])
        for file in ["genesis.json", "ca.crt"] where !FileManager.default.fileExists(atPath: "\(testnet)/\(file)") {
            throw ValidationError("no \(file) in \(testnet): --testnet is the directory that calisson-node testnet --out wrote (make run's is .cluster/net)")
        }
    }

    func run() throws {
        let genesisFile = try JSONFile.decode(GenesisFile.self, path: "\(testnet)/genesis.json")
        let genesis = try genesisFile.validated()
        let ca = try Certificate(pem: try String(contentsOfFile: "\(testnet)/ca.crt", encoding: .utf8))
        let configs = try genesis.validators.map { id in
            try JSONFile.decode(NodeConfigFile.self, path: "\(testnet)/\(id.rawValue)/config.json")
        }
        // The nodes that answer (a stopped one is skipped: the others take the load).
        let clients = configs.compactMap { config in
            try? TransportClient(host: config.host ?? "127.0.0.1", port: config.clientPort ?? 0, ca: ca, chainId: genesis.chainId)
        }
        defer { for client in clients { client.close() } }
        guard !clients.isEmpty else { throw ValidationError("no node of the testnet answers") }
        guard let programme = genesis.programmes.first(where: { $0.id.rawValue == "recyclage" }) ?? genesis.programmes.first else {
            throw ValidationError("the genesis has no programme")
        }
        let issuers = programme.issuers
        let keys = try Dictionary(uniqueKeysWithValues: issuers.map { ($0, try KeyFile.readPrivateKey(at: "\(testnet)/\($0.rawValue)/signing.key")) })
        guard let acceptor = genesis.partners.first(where: { $0.roles.contains(.acceptor) })?.id else { throw ValidationError("no acceptor partner") }

        // Expiry: well within the chain's transaction lifetime from the current height.
        guard case let .status(status) = try ClientResponse(wireBytes: try clients[0].request(ClientRequest.status.wireBytes)) else {
            throw ValidationError("the node did not answer its status")
        }
        let lifetime = genesis.parameters.transactionLifetimeMax * 3 / 4
        var expiry = status.height.saturatingAdding(lifetime)
        let clock = ContinuousClock()
        let start = clock.now
        var reasons: [String: Int] = [:]
        var ids: [Bytes32] = []
        var refused = 0
        var nonce = UInt64(Date().timeIntervalSince1970 * 1_000) * 1_000
        for index in 0..<transactions {
            if index % 100 == 99, case let .status(now) = try ClientResponse(wireBytes: try clients[0].request(ClientRequest.status.wireBytes)) {
                expiry = now.height.saturatingAdding(lifetime)  // blocks keep coming while we submit
            }
            nonce += 1
            let issuer = issuers[index % issuers.count]
            let citizen = Self.citizen(index % citizens).publicKey
            var batch = [Transaction(chainId: genesis.chainId, signer: .partner(issuer), nonce: nonce, expiryHeight: expiry,
                                     body: .attribute(programme: programme.id, account: citizen, units: 1, evidence: SHA256.hash("workload \(nonce)")))
                .signed(with: keys[issuer]!)]
            if index % 4 == 3 {
                nonce += 1
                let spender = Self.citizen((index - 3) % citizens)
                batch.append(Transaction(chainId: genesis.chainId, signer: .citizen(spender.publicKey), nonce: nonce, expiryHeight: expiry,
                                         body: .redeem(acceptor: acceptor, amount: 5, service: SHA256.hash("ticket \(nonce)"))).signed(with: spender))
            }
            for signed in batch {
                let client = clients[ids.count % clients.count]
                switch try ClientResponse(wireBytes: try client.request(ClientRequest.submit(signed.wireBytes).wireBytes)) {
                case let .admitted(id): ids.append(id)
                case let .refused(reason):
                    refused += 1
                    reasons[reason, default: 0] += 1
                default: refused += 1
                }
            }
        }
        print("workload: \(ids.count) transactions submitted to \(clients.count) nodes (\(refused) refused at admission\(reasons.isEmpty ? "" : ": \(reasons)"))")
        // Each answer comes when the transaction is final on node 0 (or at the deadline).
        var pending: [Bytes32] = []
        var applied = 0, rejected = 0
        let deadline = Date().addingTimeInterval(timeout)
        for id in ids {
            let left = UInt32(max(0, min(Double(ClientRequest.waitMillisecondsMax), deadline.timeIntervalSinceNow * 1_000)))
            let request = ClientRequest.waitFinal(id, timeoutMilliseconds: left).wireBytes
            guard case let .transaction(found) = try ClientResponse(wireBytes: try clients[0].request(request, timeoutMilliseconds: Int(left) + 5_000)),
                let found
            else {
                pending.append(id)
                continue
            }
            if found.applied { applied += 1 } else { rejected += 1 }
        }
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(String(format: "workload: %d final in %.1f s (%d applied, %d rejected by the ledger), %d not final",
                     ids.count - pending.count, seconds, applied, rejected, pending.count))
        print("workload: citizen 0's account is \(Self.citizen(0).publicKey.bytes.hex)")
        if let first = ids.first { print("workload: the first transaction is \(first.hex)") }
        if !pending.isEmpty { throw ExitCode.failure }
    }
}
