// The node's configuration file: a complete one loads into a node configuration (keys,
// certificates, genesis, registry, peers), and each mistake names its field.
import CalissonTestKit
import CalissonCrypto
import Foundation
import Ledger
@testable import Node
import Testing
import Transport

@Suite(.onOwnThreads) struct ConfigTests {
    /// Writes a partner's files the way `calisson-node testnet` does; returns the config.
    func write(_ cluster: TestCluster, index: Int) throws -> (URL, NodeConfigFile) {
        let directory = URL(fileURLWithPath: cluster.directory).appendingPathComponent("p\(index)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try KeyFile.write(cluster.nodeKeys[index], to: directory.appendingPathComponent("node.key").path, overwrite: true)
        try KeyFile.write(cluster.tlsKeys[index], to: directory.appendingPathComponent("tls.key").path, overwrite: true)
        try cluster.certificates[index].pem.write(to: directory.appendingPathComponent("tls.crt"), atomically: true, encoding: .utf8)
        try cluster.ca.pem.write(to: directory.appendingPathComponent("ca.crt"), atomically: true, encoding: .utf8)
        let genesis = GenesisFile(
            chainId: TestCluster.chainId, parameters: .init(sink: "p0"),
            partners: cluster.genesis.partners.map {
                .init(id: $0.id.rawValue, name: $0.name, roles: ["authority", "issuer", "acceptor", "validator"], signingKey: $0.signingKey.bytes.hex,
                      nodeKey: $0.nodeKey?.bytes.hex, tlsKeyHash: $0.tlsKeyHash?.hex)
            },
            validators: cluster.genesis.validators.map(\.rawValue), programmes: [])
        try JSONEncoder().encode(genesis).write(to: directory.appendingPathComponent("genesis.json"))
        let config = NodeConfigFile(
            partner: "p\(index)", genesis: "genesis.json", database: "data/node.db", nodeKey: "node.key", tlsKey: "tls.key",
            tlsCertificate: "tls.crt", ca: "ca.crt", peerPort: 7000, clientPort: 7001, peers: [.init(id: "p1", host: "127.0.0.1", port: 7002)])
        return (directory, config)
    }

    @Test func aCompleteFileLoadsAndMistakesNameTheirField() throws {
        let cluster = try TestCluster(count: 2)
        let (directory, config) = try write(cluster, index: 0)
        let loaded = try config.resolve(relativeTo: directory)
        #expect(loaded.transport.selfID == "p0" && loaded.transport.peers == [PeerAddress(id: "p1", host: "127.0.0.1", port: 7002)])
        #expect(loaded.transport.registry["p1"] == cluster.certificates[1].publicKeyHash)
        #expect(loaded.consensusKey.publicKey == cluster.nodeKeys[0].publicKey)
        #expect(loaded.databaseFile == directory.appendingPathComponent("data/node.db").path)

        func field(_ change: (inout NodeConfigFile) -> Void) -> String? {
            var broken = config
            change(&broken)
            do {
                _ = try broken.resolve(relativeTo: directory)
                return nil
            } catch {
                return error.field
            }
        }
        #expect(field { $0.partner = "Not An Id" } == "partner")
        // A partner admitted after the genesis is not in it: its certificate decides.
        #expect(field { $0.partner = "stranger" } == "tlsCertificate")
        #expect(field { $0.nodeKey = "missing.key" } == "nodeKey")
        #expect(field { $0.tlsCertificate = "ca.crt" } == "tlsCertificate")  // the CA's certificate, not ours
        #expect(field { $0.genesis = "nowhere.json" } == "genesis")
        #expect(field { $0.tickMilliseconds = 0 } == "tickMilliseconds")
        #expect(field { $0.blockWaitMilliseconds = 1_001 } == "blockWaitMilliseconds")
        #expect(field { $0.blockWaitMilliseconds = UInt64.max } == "blockWaitMilliseconds")
        #expect(loaded.blockWaitMilliseconds == NodeConfiguration.blockWaitMillisecondsDefault && loaded.blockWaitTicks == 3)
        #expect(field { $0.blockCommandsMax = 0 } == "blockCommandsMax")
        #expect(field { $0.blockCommandsMax = 10_001 } == "blockCommandsMax")
        #expect(loaded.blockCommandsMax == 1_000 && (try? NodeRuntime.replicaConfiguration(loaded).batchCommandsMax) == 1_000)
        #expect(try { var changed = config; changed.blockCommandsMax = 250; return try NodeRuntime.replicaConfiguration(changed.resolve(relativeTo: directory)).batchCommandsMax }() == 250)
        // The wait in ticks: rounded up, at least one.
        for (wait, tick, ticks) in [(0, 20, 1), (1, 20, 1), (20, 20, 1), (21, 20, 2), (60, 20, 3), (1_000, 1, 1_000), (1_000, 1_000, 1)] as [(UInt64, UInt64, UInt64)] {
            var changed = config
            changed.blockWaitMilliseconds = wait
            changed.tickMilliseconds = tick
            #expect(try changed.resolve(relativeTo: directory).blockWaitTicks == ticks, "wait \(wait) ms, tick \(tick) ms")
        }
        // The empty blocks that certify an idle ledger's last state: after 500 ms by default, 0 never.
        #expect(field { $0.checkpointFillMilliseconds = 600_001 } == "checkpointFillMilliseconds")
        #expect(field { $0.checkpointFillMilliseconds = UInt64.max } == "checkpointFillMilliseconds")
        #expect(loaded.checkpointFillMilliseconds == 500 && (try? NodeRuntime.replicaConfiguration(loaded).checkpointFillTicks) == 25)
        for (fill, tick, ticks) in [(0, 20, 0), (1, 20, 1), (500, 20, 25), (501, 20, 26), (600_000, 1, 600_000)] as [(UInt64, UInt64, UInt64)] {
            var changed = config
            changed.checkpointFillMilliseconds = fill
            changed.tickMilliseconds = tick
            #expect(try NodeRuntime.replicaConfiguration(changed.resolve(relativeTo: directory)).checkpointFillTicks == ticks, "fill \(fill) ms, tick \(tick) ms")
        }
        #expect(field { $0.storageMapMegabytes = -1 } == "storageMapMegabytes")
        #expect(field { $0.retainBlocks = 999 } == "retainBlocks")
        #expect(field { $0.storageWALMegabytes = 0 } == "storageWALMegabytes")
        #expect(field { $0.storageWALMegabytes = 1_025 } == "storageWALMegabytes")
        #expect(try { var changed = config; changed.storageWALMegabytes = 8; return try changed.resolve(relativeTo: directory).storage.walCheckpointPages }() == 2_048)
        #expect(loaded.storage.walCheckpointPages == 10_240)  // 40 MiB
        #expect(field { $0.stateWriteCheckpoints = 0 } == "stateWriteCheckpoints")
        #expect(field { $0.stateWriteCheckpoints = 65 } == "stateWriteCheckpoints")
        #expect(field { $0.stateWriteCheckpoints = UInt64.max } == "stateWriteCheckpoints")
        #expect(field { $0.stateWriteCheckpoints = 64 } == nil)
        #expect(loaded.stateWriteCheckpoints == NodeConfiguration.stateWriteCheckpointsDefault)
        #expect(field { $0.retainBlocks = 0 } == "retainBlocks")
        #expect(field { $0.retainBlocks = UInt64.max } == nil)  // keeps every body there is
        #expect(loaded.retainBlocks == nil)
        #expect(field { $0.storageCacheMegabytes = 0 } == "storageCacheMegabytes")
        // The ports' rates of new connections per address and the loop's time for clients.
        for name in ["clientAcceptsPerSecond", "clientAcceptsBurst", "peerAcceptsPerSecond", "peerAcceptsBurst"] {
            let path: WritableKeyPath<NodeConfigFile, Int?> = switch name {
            case "clientAcceptsPerSecond": \.clientAcceptsPerSecond
            case "clientAcceptsBurst": \.clientAcceptsBurst
            case "peerAcceptsPerSecond": \.peerAcceptsPerSecond
            default: \.peerAcceptsBurst
            }
            for bad in [0, -1, 1_000_001, Int.max, Int.min] { #expect(field { $0[keyPath: path] = bad } == name, "\(name) \(bad)") }
            #expect(field { $0[keyPath: path] = 1 } == nil && field { $0[keyPath: path] = 1_000_000 } == nil)
        }
        #expect(try { var changed = config; changed.peerAcceptsBurst = 5; return try changed.resolve(relativeTo: directory).transport.peerAcceptsBurst }() == 5)
        #expect(loaded.transport.peerAcceptsPerSecond == 8 && loaded.transport.peerAcceptsBurst == 32)
        #expect(loaded.transport.clientAcceptsPerSecond == 64 && loaded.transport.clientAcceptsBurst == 256)
        for bad in [0, 99, 1_000_001, Int.max] { #expect(field { $0.clientWorkMicrosecondsPerTurn = bad } == "clientWorkMicrosecondsPerTurn", "\(bad)") }
        #expect(try { var changed = config; changed.clientWorkMicrosecondsPerTurn = 2_500; return try changed.resolve(relativeTo: directory).transport.clientWorkMicrosecondsPerTurn }() == 2_500)
        #expect(loaded.transport.clientWorkMicrosecondsPerTurn == 10_000)
        #expect(field { $0.storageMapMegabytes = 0; $0.storageCacheMegabytes = 4_096 } == nil)
        // The address to listen on, an IPv4 address (it failed at bind, "EINVAL", unnamed).
        for host in ["999.999.1.1", "", "localhost", "1.2.3", "1.2.3.4.5", "01.2.3.4x", "010.0.0.1"] { #expect(field { $0.host = host } == "host", "\(host)") }
        #expect(field { $0.host = "0.0.0.0" } == nil)
        #expect(field { $0.peers = [.init(id: "p1", host: "", port: 1)] } == "peers[0].host")
        // Port 0 listens on a port the system picks, which no peer, client or scraper is told.
        #expect(field { $0.peerPort = 0 } == "peerPort")
        #expect(field { $0.clientPort = 0 } == "clientPort")
        #expect(field { $0.metricsPort = 0 } == "metricsPort")
        #expect(field { $0.peers = [.init(id: "p1", host: "127.0.0.1", port: 0)] } == "peers[0].port")
        #expect(field { $0.peers = [.init(id: "Ghost!", host: "127.0.0.1", port: 1)] } == "peers[0].id")
        #expect(field { $0.peers = [.init(id: "p0", host: "127.0.0.1", port: 1)] } == "peers[0].id")  // itself
        #expect(field { $0.peers = [.init(id: "p1", host: "127.0.0.1", port: 1), .init(id: "p1", host: "127.0.0.1", port: 2)] } == "peers[1].id")

        // A file missing a field says which.
        let file = directory.appendingPathComponent("partial.json")
        try Data(#"{"partner": "p0"}"#.utf8).write(to: file)
        #expect(throws: ConfigError.self) { _ = try NodeConfigFile.load(file.path) }
        do { _ = try NodeConfigFile.load(file.path) } catch { #expect(error.field == "genesis") }
    }

    /// A node whose keys are not its partner's in the ledger is told so at start: a node key
    /// that is not the validator's (it would follow without voting, once seen only in a
    /// gauge), a TLS key that is not the registered one, a partner the ledger lacks.
    @Test func aNodeWhoseKeysAreNotItsPartnersIsToldWhy() throws {
        let cluster = try TestCluster(count: 2)
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let own = cluster.nodeKeys[0].publicKey
        let problems = { (partner: String, key: Ed25519PublicKey, tls: SHA256Digest?) in
            nodes[0].read { ledger in
                NodeRuntime.keyProblems(ledger, partner: partner, nodeKey: key, tlsKeyHash: tls ?? ledger.partner(Identifier(partner)!)?.tlsKeyHash ?? SHA256.hash(""))
            } ?? ["not read"]
        }
        #expect(problems("p0", own, nil) == [])
        let other = Ed25519PrivateKey(seed: SHA256.hash("another key").bytes)!.publicKey
        let wrongKey = problems("p0", other, nil)
        #expect(wrongKey.count == 1 && wrongKey[0].hasPrefix("the node key is not validator p0's in the ledger (\(own.bytes.hex))")
                && wrongKey[0].contains(other.bytes.hex), "\(wrongKey)")
        let wrongTLS = problems("p0", own, SHA256.hash("another certificate"))
        #expect(wrongTLS.count == 1 && wrongTLS[0].hasPrefix("the TLS certificate's key hash") && wrongTLS[0].hasSuffix("every peer refuses this node's links"),
                "\(wrongTLS)")
        #expect(problems("ghost", own, SHA256.hash("")) == ["partner ghost is not in the ledger: this node follows the chain without voting, and peers refuse its links"])
    }

    /// Out-of-range numbers, files that are not files, and absurd sizes are refused with
    /// the field and the reason, never "not valid JSON" or a Cocoa error dump (issue 16,
    /// item 11); a genesis of 30,000 partners is refused while decoding, at once.
    @Test func numbersAndFilesFromOutsideAreRefusedByName() throws {
        let cluster = try TestCluster(count: 2)
        let (directory, config) = try write(cluster, index: 0)
        let encoded = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(config)) as! [String: Any]
        func load(_ change: (inout [String: Any]) -> Void) -> ConfigError? {
            var object = encoded
            change(&object)
            let file = directory.appendingPathComponent("edited.json")
            try? JSONSerialization.data(withJSONObject: object).write(to: file)
            do {
                _ = try NodeConfigFile.load(file.path)
                return nil
            } catch {
                return error
            }
        }
        #expect(load { _ in } == nil)
        #expect(load { $0["peerPort"] = 70_000 }?.field == "peerPort")
        #expect(load { $0["clientPort"] = -1 }?.field == "clientPort")
        #expect(load { $0["mempoolMax"] = 1.5 }?.field == "mempoolMax")
        #expect(load { $0["tickMilliseconds"] = "fast" }?.field == "tickMilliseconds")
        #expect(load { $0["blockWaitMilliseconds"] = -1 }?.field == "blockWaitMilliseconds")
        #expect(load { $0["checkpointFillMilliseconds"] = -1 }?.field == "checkpointFillMilliseconds")
        #expect(load { $0["checkpointFillMilliseconds"] = 18_446_744_073_709_551_616.0 }?.field == "checkpointFillMilliseconds")
        #expect(load { $0["blockCommandsMax"] = 18_446_744_073_709_551_616.0 }?.field == "blockCommandsMax")
        #expect(load { $0["retainBlocks"] = -1 }?.field == "retainBlocks")
        #expect(load { $0["retainBlocks"] = 18_446_744_073_709_551_616.0 }?.field == "retainBlocks")
        #expect(load { $0["blockWaitMilliseconds"] = 18_446_744_073_709_551_616.0 }?.field == "blockWaitMilliseconds")
        #expect(load { $0["peers"] = [["id": "p1", "host": "127.0.0.1", "port": 65_536]] }?.field == "peers[0].port")
        #expect(load { $0["peerPort"] = 70_000 }?.reason.contains("0 to 65535") == true)
        // A misspelt field is named, not ignored with its default taken.
        let misspelt = load { $0["retainBlock"] = 2_000 }
        #expect(misspelt?.field == "retainBlock" && misspelt?.reason.contains("no such field") == true, "\(String(describing: misspelt))")
        #expect(load { $0["peers"] = [["id": "p1", "host": "127.0.0.1", "port": 7_000, "prot": 1]] }?.field == "peers[0].prot")
        // Revoked certificate serials: taken by the transport; a serial out of range named.
        #expect(load { $0["revokedCertificateSerials"] = [-1] }?.field == "revokedCertificateSerials[0]")
        #expect(load { $0["revokedCertificateSerials"] = Array(repeating: 1, count: 10_001) }?.reason.contains("more than 10000") == true)
        do {
            var object = encoded
            object["revokedCertificateSerials"] = [17, 18_446_744_073_709_551_615 as UInt64]
            let file = directory.appendingPathComponent("revoked.json")
            try JSONSerialization.data(withJSONObject: object).write(to: file)
            #expect(try NodeConfigFile.load(file.path).transport.revokedSerials == [17, .max])
        }
        // A value of the wrong kind says which kind was expected: a list where an object is
        // (once said "expected a list": a dictionary is a sequence too), and the reverse.
        #expect(load { $0["peers"] = ["id": "p1"] }?.reason.hasPrefix("wrong type (expected a list)") == true)
        #expect(load { $0["peers"] = [["p1"]] }.map { "\($0.field): \($0.reason)" }?.hasPrefix("peers[0]: wrong type (expected an object)") == true)
        do {
            _ = try JSONFile.decode([String: Int].self, bytes: Array("[1]".utf8))
            Issue.record("a list was decoded as an object")
        } catch { #expect(error.reason == "wrong type (expected an object)", "\(error)") }

        // The genesis: a budget past UInt64 and a negative one name the programme's field.
        let genesisPath = directory.appendingPathComponent("genesis.json")
        let goodGenesis = try Data(contentsOf: genesisPath)
        defer { try? goodGenesis.write(to: genesisPath) }
        var genesis = try JSONSerialization.jsonObject(with: goodGenesis) as! [String: Any]
        let programme: [String: Any] = [
            "id": "tri", "name": "Tri", "category": "wasteSorting", "rewardPerUnit": 10, "issuers": ["p0"], "sponsor": "p0",
            "capPerAccount": 10, "capPeriod": "day", "walletCeiling": 10, "budget": -1, "expiryEpochs": 1,
        ]
        for budget in ["-1", "18446744073709551616"] {
            genesis["programmes"] = [programme]
            let text = String(decoding: try JSONSerialization.data(withJSONObject: genesis), as: UTF8.self)
                .replacingOccurrences(of: "\"budget\":-1", with: "\"budget\":\(budget)")
            try Data(text.utf8).write(to: genesisPath)
            do {
                _ = try config.resolve(relativeTo: directory)
                Issue.record("a budget of \(budget) was accepted")
            } catch {
                #expect(error.field == "genesis" && error.reason.contains("programmes[0].budget"), "\(error)")
            }
        }
        // Under ledger rules 6 and later, an approval of half or less, what those rules refuse
        // a vote: said at the node's start (not refused: a genesis cannot change, and a chain
        // started so would have no release left to run).
        for (rules, approval, warned) in [(6, "1/2", true), (9, "2/4", true), (5, "1/2", false), (9, "3/5", false)] {
            genesis["programmes"] = []
            genesis["rules"] = rules
            var parameters = genesis["parameters"] as! [String: Any]
            parameters["approval"] = approval
            genesis["parameters"] = parameters
            try JSONSerialization.data(withJSONObject: genesis).write(to: genesisPath)
            let warnings = try config.resolve(relativeTo: directory).genesis.warnings
            #expect(warnings.isEmpty != warned && warnings.allSatisfy { $0.contains("half of the active partners or less") }, "\(rules) \(approval): \(warnings)")
        }
        // 30,000 partners (9 MB): refused while decoding, at the 257th.
        genesis["programmes"] = []
        genesis["partners"] = Array(repeating: (genesis["partners"] as! [Any])[0], count: 30_000)
        try JSONSerialization.data(withJSONObject: genesis).write(to: genesisPath)
        do {
            _ = try config.resolve(relativeTo: directory)
            Issue.record("30,000 partners were accepted")
        } catch {
            // The list's bound, while decoding (not a check after the whole list was built).
            #expect(error.reason.contains("partners: more than 256 entries"), "\(error)")
        }
        // Not JSON at all.
        try Data("{\"chainId\": ".utf8).write(to: genesisPath)
        do { _ = try config.resolve(relativeTo: directory) } catch { #expect(error.reason.contains("not acceptable JSON at byte 12"), "\(error)") }

        try goodGenesis.write(to: genesisPath)

        // Paths that are not regular files, or not there.
        for (path, words) in [(directory.path, "is a directory"), ("/dev/urandom", "is a device"), ("/nonexistent/config.json", "cannot open")] {
            do {
                _ = try NodeConfigFile.load(path)
                Issue.record("\(path) loaded")
            } catch {
                #expect(error.reason.contains(words) && !error.description.contains("NSCocoaErrorDomain"), "\(error)")
            }
        }
        var broken = config
        broken.genesis = "/dev/urandom"
        do { _ = try broken.resolve(relativeTo: directory) } catch { #expect(error.field == "genesis" && error.reason.contains("is a device"), "\(error)") }
        broken = config
        broken.ca = directory.path
        do { _ = try broken.resolve(relativeTo: directory) } catch { #expect(error.field == "ca" && error.reason.contains("is a directory"), "\(error)") }
    }
}
