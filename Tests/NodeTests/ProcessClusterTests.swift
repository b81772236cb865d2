// The main job's processes, end to end: a testnet written by `calisson-node testnet`, four
// `calisson-node run` processes on 127.0.0.1, and the `calisson` CLI as a partner back-end
// and an auditor would run it. The primary is killed (a view change elects another and
// progress resumes), restarted (it catches up by state transfer), bad transactions are
// refused with their reason and change nothing, and a lying node is caught.
import CalissonCrypto
import CalissonTestKit
import Foundation
import Glibc
import Ledger
import LightClient
import Logging
import Node
import NodeProcesses
import Spawning
import Testing
import Transport
import Wire

/// The built executables: next to the test bundle (`swift build --build-tests` builds them),
/// or where CALISSON_BIN says.
func productsDirectory() throws -> String {
    var candidates: [String] = []
    if let override = ProcessInfo.processInfo.environment["CALISSON_BIN"] { candidates.append(override) }
    candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path)
    if let bundle = Bundle.main.executableURL { candidates.append(bundle.deletingLastPathComponent().path) }
    candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug").standardized.path)
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: "\($0)/calisson-node") && FileManager.default.isExecutableFile(atPath: "\($0)/calisson") })
    else {
        throw ProcessTestError("calisson-node and calisson are not built (swift build, or set CALISSON_BIN); looked in \(candidates)")
    }
    return found
}

struct ProcessTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct Ran {
    let status: Int32
    let output: String
    let errors: String
}

/// Runs an executable to completion, with its output.
func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Double = 60) throws -> Ran {
    let process = try ChildProcess(executable, arguments, environment: environment, output: .pipe, errors: .pipe)
    // Read both pipes to the end before waiting: a full pipe would block the child.
    let collected = Locked<(Data, Data)>((Data(), Data()))
    let readers = DispatchGroup()
    for (index, pipe) in [process.output!, process.errors!].enumerated() {
        // Threads of their own: on libdispatch's pool, blocked readers wait for workers that
        // other tests hold (`OwnThreads`).
        readers.enter()
        Thread {
            let data = pipe.readDataToEndOfFile()
            collected.withLock { if index == 0 { $0.0 = data } else { $0.1 = data } }
            readers.leave()
        }.start()
    }
    if readers.wait(timeout: .now() + timeout) == .timedOut {
        process.send(SIGKILL)
        process.wait()
        throw ProcessTestError("\(executable) \(arguments) did not finish within \(timeout) s")
    }
    let status = process.wait().status
    let (out, err) = collected.withLock { $0 }
    return Ran(status: status, output: String(decoding: out, as: UTF8.self), errors: String(decoding: err, as: UTF8.self))
}

/// A testnet of validator processes on loopback (`NodeProcesses`, the benchmarks' own),
/// with what the tests ask of it.
final class ProcessCluster {
    let nodes: NodeProcesses
    let bin: String
    let directory: String
    /// The cluster's ports are the hundred from here.
    let basePort: UInt16

    /// `rules`: the ledger rules the chain starts with (the testnet's default: the newest);
    /// `prepare` may set nodes' binaries and extra arguments before they first start.
    init(validators: Int = 4, rules: UInt32? = nil, prepare: (NodeProcesses) throws -> Void = { _ in }) throws {
        bin = try productsDirectory()
        directory = Scratch.directory("processes")
        basePort = PortBlock.reserve()
        nodes = try NodeProcesses(
            starting: validators, bin: bin, directory: "\(directory)/net", basePort: basePort, testnetArguments: ["--epoch-length", "20"] + (rules.map { ["--rules", "\($0)"] } ?? []),
            logLevel: "notice", prepare: prepare)
    }

    deinit { nodes.stop() }

    var ids: [String] { nodes.ids }
    var ca: Certificate { nodes.ca }
    var net: String { nodes.directory }
    func clientPort(_ index: Int) -> UInt16 { nodes.clientPorts[index] }

    /// Nodes the test killed and has not started again.
    private(set) var killed: Set<Int> = []

    /// Whether node `index` should be running (the test did not kill it).
    func isUp(_ index: Int) -> Bool { !killed.contains(index) }

    /// Starts node `index` again from its database.
    func start(_ index: Int) throws {
        try nodes.restart(index)
        killed.remove(index)
    }

    func kill(_ index: Int) {
        nodes.kill(index)
        killed.insert(index)
    }

    /// Every node the test did not kill still runs.
    var noneDied: Bool { nodes.processes.indices.allSatisfy { !isUp($0) || nodes.processes[$0].isRunning } }

    func stopAll() { nodes.stopNodes() }

    /// `calisson` against node `index`.
    func calisson(_ arguments: [String], at index: Int = 1, port: UInt16? = nil, timeout: Double = 90) throws -> Ran {
        try run("\(bin)/calisson", arguments + ["--node", "127.0.0.1:\(port ?? clientPort(index))", "--ca", "\(net)/ca.crt", "--chain", "calisson-local"],
                timeout: timeout)
    }

    func status(_ index: Int) -> NodeStatus? { nodes.status(index) }

    func logs() -> String {
        ids.map { id in "--- \(id)\n" + ((try? String(contentsOfFile: "\(net)/\(id).log", encoding: .utf8)).map { String($0.suffix(3_000)) } ?? "") }
            .joined(separator: "\n")
    }

    /// `calisson submit` options signing as `partner` with its key, answering JSON.
    func signed(_ partner: String) -> [String] { ["--key", "\(net)/\(partner)/signing.key", "--as", partner, "--json"] }

    static func applied(_ ran: Ran) -> Bool { ran.status == 0 && (try? fields(ran)["status"]) == "applied" }

    /// Proposes (`calisson submit propose` + `proposal`, signed by `proposer`) and passes
    /// it with `voters`' yes votes.
    func pass(_ proposal: [String], by proposer: String, voters: [String]) throws {
        let proposed = try calisson(["submit", "propose"] + proposal + signed(proposer))
        #expect(Self.applied(proposed), "\(proposed.output) \(proposed.errors)")
        let number = try #require(try Self.fields(proposed)["proposal"], "\(proposed.output)")
        for voter in voters {
            let vote = try calisson(["submit", "vote", "--proposal", number, "--approve"] + signed(voter))
            #expect(Self.applied(vote), "\(vote.output) \(vote.errors)")
        }
    }

    /// The fields of a `--json` answer.
    static func fields(_ ran: Ran) throws -> [String: String] {
        guard let object = try JSONSerialization.jsonObject(with: Data(ran.output.utf8)) as? [String: String] else {
            throw ProcessTestError("not a JSON object of strings: \(ran.output)")
        }
        return object
    }
}

@Suite(.serialized, .onOwnThreads) struct ProcessClusterTests {
    @Test func theMainJobSurvivesItsPrimaryAndCatchesALiar() throws {
        let cluster = try ProcessCluster()
        defer { cluster.stopAll() }
        #expect(eventually(30) { cluster.ids.indices.allSatisfy { (cluster.status($0)?.peers.count ?? 0) == cluster.ids.count - 1 } },
                "not linked\n\(cluster.logs())")
        let citizen = Ed25519PrivateKey(seed: SHA256.hash("process test citizen").bytes)!
        let account = citizen.publicKey.bytes.hex
        let citizenKey = "\(cluster.directory)/citizen.key"
        try KeyFile.write(citizen, to: citizenKey)
        let metropole = ["--key", "\(cluster.net)/metropole/signing.key", "--as", "metropole"]
        func attribute(_ evidence: String, units: Int = 1, at node: Int = 1, _ extra: [String] = []) throws -> Ran {
            try cluster.calisson(["submit", "attribute", "--programme", "recyclage", "--account", account, "--units", "\(units)",
                                  "--evidence", evidence, "--json"] + metropole + extra, at: node)
        }

        // Submitted at a non-primary node (the primary of view 0 is the Métropole's, node 0).
        let first = try attribute("first gesture")
        #expect(first.status == 0, "\(first.output) \(first.errors)\n\(cluster.logs())")
        #expect(try ProcessCluster.fields(first)["status"] == "applied")
        let settled = { () -> Bool in
            let states = cluster.ids.indices.compactMap { cluster.isUp($0) ? cluster.status($0) : nil }
            return states.count == cluster.ids.indices.filter(cluster.isUp).count && Set(states.map { "\($0.height) \($0.stateRoot.hex)" }).count == 1
        }
        #expect(eventually(30, settled), "the nodes do not agree\n\(cluster.logs())")

        // Each bad transaction is answered with its reason and changes no balance.
        let before = try ProcessCluster.fields(try cluster.calisson(["supply", "--json"]))
        let forgedBytes: [UInt8] = {
            var bytes = Transaction(chainId: "calisson-local", signer: .citizen(citizen.publicKey), nonce: 1, expiryHeight: 100,
                                    body: .redeem(acceptor: Identifier("friche")!, amount: 1, service: SHA256.hash("x"))).signed(with: citizen).wireBytes
            bytes[bytes.count - 1] ^= 1
            return bytes
        }()
        let client = try TransportClient(host: "127.0.0.1", port: cluster.clientPort(2), ca: cluster.ca, chainId: "calisson-local")
        for (bytes, expected) in [(forgedBytes, "badSignature"), ([0x01, 0x02, 0x03], "malformed")] {
            let answer = try ClientResponse(wireBytes: try client.request(ClientRequest.submit(bytes).wireBytes))
            guard case let .refused(reason) = answer else {
                Issue.record("admitted: \(answer)")
                continue
            }
            #expect(reason.contains(expected), "\(reason)")
        }
        client.close()
        let replayNonce = ["--nonce", "77"]
        #expect(try attribute("replay one", at: 2, replayNonce).status == 0)
        let rejections: [(Ran, String)] = [
            (try attribute("replay two", at: 2, replayNonce), "nonceUsed"),
            (try attribute("greedy", units: 100_000), "capExceeded"),
            (try cluster.calisson(["submit", "redeem", "--acceptor", "friche", "--amount", "1000", "--key", citizenKey, "--json"]), "insufficientFunds"),
            (try cluster.calisson(["submit", "attribute", "--programme", "nowhere", "--account", account, "--evidence", "x", "--json"] + metropole), "unknownProgramme"),
            (try cluster.calisson(["submit", "attribute", "--programme", "recyclage", "--account", account, "--evidence", "y", "--json",
                                   "--key", "\(cluster.net)/rtm/signing.key", "--as", "rtm"]), "issuerNotAllowed"),
            (try cluster.calisson(["submit", "attribute", "--programme", "recyclage", "--account", account, "--evidence", "z", "--json",
                                   "--key", citizenKey, "--as", "rtm", "--evidence-key", "\(cluster.net)/rtm/evidence.key"]), "badSignature"),
        ]
        for (ran, reason) in rejections {
            #expect(ran.status != 0, "\(ran.output)")
            #expect(ran.output.contains(reason), "expected \(reason): \(ran.output) \(ran.errors)")
        }
        // --sign-only prints the signed bytes and submits nothing (the supply check below holds).
        let signedOnly = try attribute("signed, not sent", ["--sign-only"])
        let printed = try ProcessCluster.fields(signedOnly)
        let signedBytes = try #require(printed["signed"].flatMap { Hex.decode($0) }, "\(signedOnly.output) \(signedOnly.errors)")
        let parsed = try SignedTransaction(wireBytes: signedBytes)
        #expect(parsed.id.hex == printed["transaction"] && parsed.transaction.signer == .partner(Identifier("metropole")!), "\(signedOnly.output)")
        let after = try ProcessCluster.fields(try cluster.calisson(["supply", "--json"]))
        #expect(after["issued"].flatMap { Int($0) } == before["issued"].flatMap { Int($0) }.map { $0 + 10 }, "only the first replay-nonce attribution counts")
        #expect(after["redeemed"] == before["redeemed"])

        // The primary dies: a view change elects another validator and progress resumes.
        cluster.kill(0)
        let afterKill = try attribute("while the primary is down", at: 2)
        #expect(afterKill.status == 0, "\(afterKill.output) \(afterKill.errors)\n\(cluster.logs())")
        #expect((cluster.status(2)?.view ?? 0) >= 1, "no view change")

        // It restarts from its database and catches up by state transfer.
        try cluster.start(0)
        #expect(try attribute("after the restart", at: 3).status == 0)
        // (settled: every node up, the restarted one included, at one height and root)
        #expect(eventually(60, settled), "the restarted primary does not catch up\n\(cluster.logs())")

        // Certified answers hold through an honest relay, and a lie is caught.
        for _ in 0..<12 { _ = try attribute("towards a checkpoint \(UUID())", at: 3) }  // a stable checkpoint above the last changes
        let honest = try cluster.calisson(["balance", account, "--genesis", "\(cluster.net)/genesis.json", "--json"])
        #expect(honest.status == 0, "\(honest.errors)")
        #expect(try ProcessCluster.fields(honest)["proof"]?.contains("by a quorum of the validators in force") == true)
        for lie in [Liar.Lie.none, .value, .proof, .certificate] {
            let liar = try Liar(relayingTo: cluster.clientPort(1), net: cluster.net, lie: lie)
            defer { liar.stop() }
            let answer = try cluster.calisson(["balance", account, "--genesis", "\(cluster.net)/genesis.json"], port: liar.port)
            if lie == .none {
                #expect(answer.status == 0, "an honest relay was refused: \(answer.errors)")
            } else {
                #expect(answer.status != 0 && answer.errors.contains("cannot be trusted"), "\(lie) went unnoticed: \(answer.output) \(answer.errors)")
            }
        }
        // The citizen spends at La Friche tokens the Métropole sponsors: when the epoch
        // closes, its report counts the redemption and the Métropole owes La Friche, which
        // the treasury's settlement files pay, from certified answers.
        let redeemed = try cluster.calisson(["submit", "redeem", "--acceptor", "friche", "--amount", "5", "--key", citizenKey, "--json"])
        #expect(redeemed.status == 0, "\(redeemed.output) \(redeemed.errors)")
        let openEpoch = try #require(Int(try ProcessCluster.fields(try cluster.calisson(["supply", "--json"]))["epoch"] ?? ""))
        while try Int(ProcessCluster.fields(try cluster.calisson(["supply", "--json"]))["epoch"] ?? "") ?? 0 <= openEpoch {
            _ = try attribute("until the epoch closes \(UUID())", at: 3)
        }
        for _ in 0..<12 { _ = try attribute("towards a checkpoint past the close \(UUID())", at: 3) }
        let genesisFlag = ["--genesis", "\(cluster.net)/genesis.json", "--json"]
        var spentIn: (epoch: Int, report: [String: String])?
        for epoch in (0...openEpoch).reversed() where spentIn == nil {
            let report = try ProcessCluster.fields(try cluster.calisson(["report", "\(epoch)"] + genesisFlag))
            if report["acceptor.friche.amount"] != nil { spentIn = (epoch, report) }
        }
        let (epoch, report) = try #require(spentIn, "no report counts the redemption")
        #expect(report["acceptor.friche.amount"] == "5" && report["net.friche"] == "5" && report["net.metropole"] == "-5", "\(report)")
        #expect(report["proof"]?.contains("by a quorum of the validators in force") == true)
        let settlementDirectory = "\(cluster.directory)/settlement"
        let settlement = try cluster.calisson(
            ["settlement", "\(epoch)", "--register", "\(cluster.net)/settlement-register.json", "--out", settlementDirectory, "--execution-date", "2026-12-04"]
                + genesisFlag)
        #expect(settlement.status == 0, "\(settlement.output) \(settlement.errors)")
        let transfers = try String(contentsOfFile: "\(settlementDirectory)/epoch-\(epoch)-credit-transfers.xml", encoding: .utf8)
        #expect(transfers.contains("<InstdAmt Ccy=\"EUR\">0.05</InstdAmt>") && transfers.contains("<Nm>La Friche la Belle de Mai</Nm>"), "\(transfers)")
        // The remittance carries the hash of La Friche's certified statement, as the CLI gives it.
        let statement = try ProcessCluster.fields(try cluster.calisson(["statement", "\(epoch)", "friche"] + genesisFlag))
        let statementHash = try #require(statement["sha256"])
        #expect(transfers.contains("<Ustrd>CALISSON EPOCH \(epoch) STATEMENT \(statementHash)</Ustrd>"), "\(transfers)")
        let accounting = try String(contentsOfFile: "\(settlementDirectory)/epoch-\(epoch)-accounting.csv", encoding: .utf8)
        #expect(accounting.contains("\(epoch),friche,La Friche la Belle de Mai,5,0,5,10000,0.05,credit_transfer,C\(epoch)-"), "\(accounting)")

        // The gateway as deployed (its binary, whose tasks run on its event loops) in front
        // of the nodes: a reward it signs for rtm, answered final with its inclusion verified,
        // then the account read verified at a checkpoint past it.
        let made = try run("\(cluster.bin)/calisson-gateway", ["key", "--name", "test", "--scopes", "read,submit"])
        let key = try #require(made.output.split(separator: "\n").first { $0.hasPrefix("key") }?.split(separator: " ").last.map(String.init))
        let entry = try #require(made.output.split(separator: "\n").first { $0.hasPrefix("entry") }?.dropFirst("entry".count))
        try "{\"keys\": [\(entry)]}".write(toFile: "\(cluster.directory)/gateway-keys.json", atomically: true, encoding: .utf8)
        let gatewayPort = cluster.basePort + 90
        let gatewayLogFile = "\(cluster.directory)/gateway.log"
        let gatewayLog = open(gatewayLogFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(gatewayLog) }
        let gateway = try ChildProcess(
            "\(cluster.bin)/calisson-gateway",
            ["run", "--ca", "\(cluster.net)/ca.crt", "--genesis", "\(cluster.net)/genesis.json", "--api-keys", "\(cluster.directory)/gateway-keys.json",
             "--listen", "127.0.0.1:\(gatewayPort)", "--partner", "rtm", "--signing-key", "\(cluster.net)/rtm/signing.key",
             "--state-dir", "\(cluster.directory)/gateway"] + cluster.ids.indices.flatMap { ["--node", "127.0.0.1:\(cluster.clientPort($0))"] },
            output: .null, errors: .descriptor(gatewayLog))
        defer { if gateway.isRunning { gateway.send(SIGTERM); _ = gateway.wait() } }
        #expect(eventually(30) { (try? run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(gatewayPort)/health"]))?.status == 0 }, "the gateway did not start")
        let reward = try run("/usr/bin/curl", [
            "-sS", "-X", "POST", "-H", "Authorization: Bearer \(key)", "-H", "Content-Type: application/json", "-H", "Idempotency-Key: process-test-1",
            "-d", "{\"programme\": \"mobilite\", \"account\": \"\(account)\", \"units\": 1, \"evidence\": \"process test trip\"}",
            "http://127.0.0.1:\(gatewayPort)/v1/rewards",
        ], timeout: 60)
        let rewarded = try JSONSerialization.jsonObject(with: Data(reward.output.utf8)) as? [String: Any]
        #expect(rewarded?["status"] as? String == "final" && rewarded?["inclusionVerified"] as? Bool == true, "\(reward.output) \(reward.errors)")
        for _ in 0..<12 { _ = try attribute("towards a checkpoint past the reward \(UUID())", at: 3) }
        let read = try run("/usr/bin/curl", ["-sS", "-H", "Authorization: Bearer \(key)", "http://127.0.0.1:\(gatewayPort)/v1/accounts/\(account)"])
        let accountRead = try JSONSerialization.jsonObject(with: Data(read.output.utf8)) as? [String: Any]
        #expect(read.output.contains("mobilite") && accountRead?["verification"] != nil, "\(read.output) \(read.errors)")
        #expect(gateway.isRunning)
        // Refusals are logged, naming the client, the status and the problem: one line per
        // client and status every 10 s, however many come.
        for _ in 0..<5 {
            _ = try run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-H", "Authorization: Bearer cal_wrong", "http://127.0.0.1:\(gatewayPort)/v1/status"])
        }
        _ = try run("/usr/bin/curl", [
            "-s", "-o", "/dev/null", "-X", "POST", "-H", "Authorization: Bearer \(key)", "-H", "Content-Type: application/json", "-d", "{",
            "http://127.0.0.1:\(gatewayPort)/v1/rewards",
        ])
        let refusals = ((try? String(contentsOfFile: gatewayLogFile, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("refused ") }
        let unknownKey = refusals.filter { $0.contains("refused GET /v1/status from address 127.0.0.1: 401, unauthorized: the API key is not one this gateway knows") }
        #expect(unknownKey.count == 1 && unknownKey.allSatisfy { $0.contains(" notice ") }, "\(refusals)")
        #expect(refusals.contains { $0.contains("refused POST /v1/rewards from key test: 400, bad-request") }, "\(refusals)")
        // A graceful stop (SIGTERM): exit 0, nothing logged as trouble meanwhile (a sync of the
        // verified copy cut short by the stop was logged as a warning).
        let logged = (try? FileManager.default.attributesOfItem(atPath: gatewayLogFile)[.size] as? Int) ?? 0
        gateway.send(SIGTERM)
        #expect(gateway.wait() == .exited(0))
        let stopping = String(decoding: FileManager.default.contents(atPath: gatewayLogFile)?.dropFirst(logged) ?? Data(), as: UTF8.self)
        #expect(!stopping.contains(" warning ") && !stopping.contains(" error ") && !stopping.contains(" critical "), "\(stopping)")

        // An online backup of a running node's database opens and passes the start checks.
        let backup = try run("\(cluster.bin)/calisson-node", ["backup", "--config", "\(cluster.net)/rtm/config.json", "--out", "\(cluster.directory)/rtm-backup.db"])
        #expect(backup.status == 0 && backup.output.contains(" with root "), "\(backup.output) \(backup.errors)")
        // A block names the validators whose commit votes certify it, checked from the genesis.
        let block = try ProcessCluster.fields(try cluster.calisson(["block", "1", "--genesis", "\(cluster.net)/genesis.json", "--json"]))
        let signers = (block["signers"] ?? "").components(separatedBy: ", ")
        #expect(signers.count >= 3 && Set(signers).isSubset(of: ["metropole", "rtm", "tri-metropole", "friche"]), "\(block)")
        #expect(block["certificate"]?.contains("signatures checked") == true, "\(block)")
        // Maintenance refuses to run under the running node, naming it (its pid holds the lock).
        let config = "\(cluster.net)/rtm/config.json"
        let prune = try run("\(cluster.bin)/calisson-node", ["prune", "--config", config, "--keep-blocks", "1000"])
        #expect(prune.status != 0 && prune.errors.contains("in use by process"), "\(prune.output) \(prune.errors)")
        let tooFew = try run("\(cluster.bin)/calisson-node", ["prune", "--config", config, "--keep-blocks", "10"])
        #expect(tooFew.status != 0 && tooFew.errors.contains("--keep-blocks 10 is below 1000"), "\(tooFew.errors)")
        let restore = try run("\(cluster.bin)/calisson-node", ["restore", "--config", config, "--from", "\(cluster.directory)/rtm-backup.db"])
        #expect(restore.status != 0 && restore.errors.contains("in use by process"), "\(restore.output) \(restore.errors)")
        #expect(cluster.noneDied, "a node died\n\(cluster.logs())")
    }
}

/// The chaos driver, short (debug builds; Docs/RELIABILITY.md): validators killed and
/// restarted, a Byzantine validator going through its four modes, slow and lossy links,
/// partitions in network namespaces and full or read-only disks (root only); nothing
/// acknowledged final may be lost, the honest nodes must agree.
@Suite(.serialized, .onOwnThreads) struct ShortChaosTests {
    /// Runs `calisson-bench chaos` with `arguments` (behind `prefix`, e.g. `ip netns exec`)
    /// and returns its JSON results after the common checks.
    func chaos(_ arguments: [String], prefix: [String] = []) throws -> [String: Any] {
        let bin = try productsDirectory()
        guard FileManager.default.isExecutableFile(atPath: "\(bin)/calisson-bench") else {
            throw ProcessTestError("calisson-bench is not built in \(bin)")
        }
        let port = PortBlock.reserve()
        let json = Scratch.file("chaos.json")
        defer { try? FileManager.default.removeItem(atPath: json) }
        let command = prefix + ["\(bin)/calisson-bench", "chaos", "--base-port", "\(port)", "--json", json, "--recovery", "90"] + arguments
        let ran = try run(command[0], Array(command.dropFirst()), timeout: 300)
        #expect(ran.status == 0, "\(ran.output)\n\(ran.errors)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        var results = try #require(object?["results"] as? [String: Any])
        results["output"] = String(ran.output.suffix(6_000))  // what the run said, for a failure's message
        #expect(results["lost"] as? Int == 0)
        #expect(results["divergentHeights"] as? Int == 0)
        #expect((results["acknowledgedFinal"] as? Int ?? 0) > 0, "nothing became final")
        return results
    }

    @Test func killedValidatorsLoseNothingFinal() throws {
        let results = try chaos(["--duration", "15", "--rate", "15"])
        #expect((results["kills"] as? Int ?? 0) >= 1, "no fault was injected")
    }

    /// Garbage, equivocation, replays and withheld votes from one validator, in turn,
    /// while the others are killed and restarted: the honest nodes notice, and agree.
    /// Garbage comes first, from the cluster's start: a mode after it begins with the
    /// Byzantine node restarted and linking again, which under a loaded test run took most
    /// of a 5-second period once (no garbage reached the honest nodes).
    @Test func aByzantineValidatorChangesNothingFinal() throws {
        let modes = ["garbage", "equivocate", "replay", "withhold"].flatMap { ["--byzantine-modes", $0] }
        let results = try chaos(["--mix", "byzantine", "--duration", "24", "--mode-period", "5", "--rate", "15"] + modes)
        let output = results["output"] as? String ?? ""
        #expect((results["byzantineModeChanges"] as? Int ?? 0) >= 3, "the Byzantine node did not go through its modes: \(output)")
        let refused = results["refusedByCheckedNodes"] as? [String: Int] ?? [:]
        #expect((refused["consensus_undecodable_total"] ?? 0) + (refused["consensus_bad_signatures_total"] ?? 0) > 0,
                "no garbage reached the honest nodes: \(refused)\n\(output)")
    }

    /// Partitions (the primary isolated, halves, one node, one link) in network
    /// namespaces this test creates; root only.
    @Test(.enabled(if: getuid() == 0, "network namespaces need root"))
    func partitionsLoseNothingFinal() throws {
        let hub = "calisson-test-\(getpid())"
        _ = try run("/usr/bin/env", ["ip", "netns", "add", hub])
        defer { _ = try? run("/usr/bin/env", ["ip", "netns", "del", hub]) }
        _ = try run("/usr/bin/env", ["ip", "-n", hub, "link", "set", "lo", "up"])
        let results = try chaos(
            ["--mix", "partition", "--duration", "20", "--rate", "15", "--down", "2", "--down", "5", "--gap", "1", "--gap", "2"],
            prefix: ["/usr/bin/env", "ip", "netns", "exec", hub])
        #expect(!(results["partitions"] as? [String: Int] ?? [:]).isEmpty, "no partition was made")
    }

    /// Delayed links with jitter, latency spikes, loss bursts and every link slowed
    /// (through relays on 127.0.0.1): nothing final is lost, the nodes agree.
    @Test func slowAndLossyLinksLoseNothingFinal() throws {
        let results = try chaos(["--mix", "latency", "--duration", "20", "--rate", "15", "--down", "1", "--down", "3", "--gap", "1", "--gap", "2"])
        #expect(!(results["linkFaults"] as? [String: Int] ?? [:]).isEmpty, "no link fault was injected")
    }

    /// Disks filled and data directories read-only at start (tmpfs; root only): each node
    /// stops with its reason, restarts with room, and nothing final is lost.
    @Test(.enabled(if: getuid() == 0, "tmpfs mounts need root"))
    func fullAndReadOnlyDisksLoseNothingFinal() throws {
        let results = try chaos(["--mix", "disk", "--duration", "20", "--rate", "15", "--gap", "1", "--gap", "2", "--down", "0.5", "--down", "1"])
        #expect(!(results["diskFaults"] as? [String: Int] ?? [:]).isEmpty, "no disk fault was injected")
        #expect((results["diskProblems"] as? [String] ?? ["?"]).isEmpty)
    }
}

/// A node that relays to an honest node and lies in its certified answers: a changed
/// value, a changed proof, or a changed certificate (its TLS certificate is genuine:
/// the consortium CA signed it, as a compromised partner's would be).
final class Liar {
    /// `value`, `proof`, `certificate`: in certified state answers; `page`, `stateValue`: in
    /// the tree pages and state values a state sync or the gateway's copy asks for;
    /// `height`: a height no ledger reaches (2^64 − 1) in its status and its blocks' summaries;
    /// `result`: a transaction's result the other way round (applied said rejected for want
    /// of funds, rejected said applied), its committed bytes forged to match;
    /// `replayedResult`: this answer, recorded earlier, to every `transactionResult`;
    /// `blockResults`: every result the other way round in a block's contents (its
    /// transactions and certificate genuine), in the committed form a node of rules 7 stores;
    /// `handoversError`: this error to every request for the validator-set changes (its text
    /// the liar's choice; every read and block check starts with one), every other relayed;
    /// `omittedEvents`: a block's contents without the proposals it decided and the epoch it
    /// closed (the rest genuine); `inventedDecisions`: a block with transactions said to have
    /// decided as many proposals, named by number only (their records to be asked for).
    enum Lie: Equatable {
        case none, value, proof, certificate, page, stateValue, height, result, replayedResult(ClientResponse), blockResults, handoversError(String), omittedEvents
        case inventedDecisions
    }

    let loop = EventLoop(name: "liar")
    let transport: Transport
    /// Upstream connections not in use (a request takes one, or opens one, and gives it back),
    /// and whether the liar stopped (a connection given back then is closed).
    private let idle = Locked<(clients: [TransportClient], stopped: Bool)>(([], false))
    var port: UInt16 { transport.clientPort }

    /// A liar in front of a testnet written by `calisson-node testnet` into `net`.
    convenience init(relayingTo target: UInt16, net: String, lie: Lie) throws {
        try self.init(
            relayingTo: target, ca: try Certificate(pem: try String(contentsOfFile: "\(net)/ca.crt", encoding: .utf8)),
            caKey: try KeyFile.readPrivateKey(at: "\(net)/ca.key"), chainId: "calisson-local", lie: lie)
    }

    /// A liar in front of `node`, a node of an in-process `cluster`.
    convenience init(before node: NodeRuntime, of cluster: TestCluster, lie: Lie) throws {
        try self.init(relayingTo: node.transport.clientPort, ca: cluster.ca, caKey: cluster.caKey, chainId: TestCluster.chainId, lie: lie)
    }

    init(relayingTo target: UInt16, ca: Certificate, caKey: Ed25519PrivateKey, chainId: String, lie: Lie) throws {
        let key = Ed25519PrivateKey()
        let certificate = try CertificateAuthority.issue(commonName: "liar", subjectKey: key.publicKey, ca: ca, caKey: caKey, serial: 999)
        var configuration = TransportConfiguration(chainId: chainId, selfID: "liar", identity: TLSIdentity(certificate: certificate, key: key), ca: ca)
        configuration.clientPort = 0
        var logger = Logger(label: "liar")
        logger.logLevel = .critical
        transport = try Transport(configuration: configuration, loop: loop, logger: logger)
        // Requests relayed side by side, each on an upstream connection of its own while it
        // waits (one connection for all held every read behind a long poll of 10 s: a
        // gateway's blocks waited for as long, and its event feed with them), each on a
        // thread of its own (not libdispatch's workers, which the nodes' checks need).
        idle.withLock { $0.clients.append(contentsOf: [try? TransportClient(host: "127.0.0.1", port: target, ca: ca, chainId: chainId)].compactMap { $0 }) }
        let idle = idle
        transport.onClientRequest = { request, _, respond in
            Thread {
                if case let .handoversError(text) = lie, case .handovers? = try? ClientRequest(wireBytes: request) {
                    return respond(ClientResponse.error(text).wireBytes)
                }
                // A kept connection the node closed meanwhile (idle past its limit: under a
                // loaded test run the gateway's first requests came after it) is found closed
                // only when used: the request is sent again on a new one, as a proxy would.
                var kept = idle.withLock { $0.clients.popLast() }
                var relayed: (upstream: TransportClient, bytes: [UInt8])?
                while relayed == nil {
                    let upstream: TransportClient
                    let fresh = kept == nil
                    do { upstream = try kept ?? TransportClient(host: "127.0.0.1", port: target, ca: ca, chainId: chainId) } catch {
                        return respond(ClientResponse.error("relay failed: no upstream connection (\(error))").wireBytes)
                    }
                    kept = nil
                    do { relayed = (upstream, try upstream.request(request, timeoutMilliseconds: 30_000)) } catch {
                        upstream.close()
                        if fresh { return respond(ClientResponse.error("relay failed: \(error)").wireBytes) }
                    }
                }
                guard let (upstream, bytes) = relayed else { return }
                if idle.withLock({ state in
                    if !state.stopped { state.clients.append(upstream) }
                    return state.stopped
                }) { upstream.close() }
                let answer = try? ClientResponse(wireBytes: bytes)
                if case let .treePages(pages)? = answer, lie == .page {
                    // Each page with its last byte changed: it no longer hashes to its name.
                    return respond(ClientResponse.treePages(pages.map { $0.map { var page = $0; page[page.count - 1] ^= 1; return page } }).wireBytes)
                }
                if case let .stateValues(values)? = answer, lie == .stateValue {
                    return respond(ClientResponse.stateValues(values.map { $0.map { $0 + [0] } }).wireBytes)
                }
                if case var .status(status)? = answer, lie == .height {
                    status.height = .max
                    return respond(ClientResponse.status(status).wireBytes)
                }
                if case let .blocks(summaries)? = answer, lie == .height {
                    return respond(ClientResponse.blocks(summaries.map {
                        BlockSummary(height: .max, digest: $0.digest, certificate: $0.certificate, stateRoot: $0.stateRoot, transactionCount: $0.transactionCount)
                    }).wireBytes)
                }
                if case let .transactionResult(found?)? = answer, lie == .result {
                    return respond(ClientResponse.transactionResult(Self.forged(found)).wireBytes)
                }
                if case .transactionResult? = answer, case let .replayedResult(recorded) = lie { return respond(recorded.wireBytes) }
                if case let .blockContents(found?)? = answer, lie == .blockResults {
                    let flipped = found.results.map { result in
                        StoreAnswers.isApplied(result) ? StoreAnswers.result(.rejected(.insufficientFunds(available: 0, asked: 3)), committed: true) : [0]
                    }
                    return respond(ClientResponse.blockContents(BlockContents(
                        height: found.height, body: found.body, certificate: found.certificate, results: flipped, closedEpoch: found.closedEpoch,
                        decided: found.decided, opened: found.opened, decidedLeftOut: found.decidedLeftOut)).wireBytes)
                }
                if case let .blockContents(found?)? = answer, lie == .omittedEvents {
                    return respond(ClientResponse.blockContents(BlockContents(
                        height: found.height, body: found.body, certificate: found.certificate, results: found.results, closedEpoch: nil,
                        decided: [], opened: found.opened)).wireBytes)
                }
                if case let .blockContents(found?)? = answer, lie == .inventedDecisions, !found.results.isEmpty {
                    return respond(ClientResponse.blockContents(BlockContents(
                        height: found.height, body: found.body, certificate: found.certificate, results: found.results, closedEpoch: found.closedEpoch,
                        decided: [], opened: found.opened, decidedLeftOut: (1...UInt64(found.results.count)).map { $0 + 1_000 })).wireBytes)
                }
                guard case let .certifiedState(height, certificate, value, proof)? = answer else { return respond(bytes) }
                switch lie {
                case .none, .page, .stateValue, .height, .result, .replayedResult, .blockResults, .handoversError, .omittedEvents, .inventedDecisions:
                    respond(bytes)
                case .value:
                    // Another account's worth: the balance doubled.
                    let forged = value.flatMap { try? Account(wireBytes: $0) }.map { account -> [UInt8] in
                        var account = account
                        account.lots = account.lots.map { var lot = $0; lot.amount *= 2; return lot }
                        return account.wireBytes
                    }
                    respond(ClientResponse.certifiedState(height: height, certificate: certificate, value: forged ?? [1], proof: proof).wireBytes)
                case .proof:
                    var siblings = proof.siblings
                    if siblings.isEmpty { siblings.append(SHA256.hash("forged")) } else { siblings[0] = SHA256.hash("forged") }
                    let altered = StateProof(siblings: siblings, terminal: proof.terminal)
                    respond(ClientResponse.certifiedState(height: height, certificate: certificate, value: value, proof: altered).wireBytes)
                case .certificate:
                    var forged = certificate
                    forged[forged.count / 2] ^= 1
                    respond(ClientResponse.certifiedState(height: height, certificate: forged, value: value, proof: proof).wireBytes)
                }
            }.start()
        }
        try transport.start()
    }

    /// The answer with its result the other way round, consistently: the location and the
    /// committed bytes say the same forged result.
    static func forged(_ found: ResultProof) -> ResultProof {
        let location = found.inclusion.location
        let result: TransactionResult = location.applied ? .rejected(.insufficientFunds(available: 0, asked: 3)) : .applied
        let forged = TransactionLocation(
            height: location.height, position: location.position, applied: result == .applied, reason: result == .applied ? nil : "insufficientFunds(available: 0, asked: 3)")
        let inclusion = TransactionInclusion(
            location: forged, commandCount: found.inclusion.commandCount, proof: found.inclusion.proof, certificate: found.inclusion.certificate)
        return ResultProof(
            inclusion: inclusion, committed: CommittedResults.bytes(result), resultProof: found.resultProof, checkpointHeight: found.checkpointHeight,
            checkpointCertificate: found.checkpointCertificate, record: found.record, recordProof: found.recordProof)
    }

    func stop() {
        transport.stop()
        loop.shutdown()
        let clients = idle.withLock { state in
            state.stopped = true
            defer { state.clients = [] }
            return state.clients
        }
        for client in clients { client.close() }
    }
}

/// `calisson-bench ordering --application ledger` drives the node's core (`NodeCore`) on
/// in-memory storage over TLS: a short run finalizes what its client submits, nothing
/// refused or left unanswered (the figures are the benchmark's business, not a test's).
@Suite(.onOwnThreads) struct OrderingBenchTests {
    @Test func theLedgerModeFinalizesWhatItsClientSubmits() throws {
        let bin = try productsDirectory()
        let json = Scratch.file("ordering.json")
        let ran = try run("\(bin)/calisson-bench", [
            "ordering", "--application", "ledger", "--block-size", "50", "--outstanding", "200", "--transactions", "20000",
            "--warmup", "1", "--duration", "4", "--json", json,
        ], timeout: 120)
        #expect(ran.status == 0, "\(ran.output)\n\(ran.errors)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        #expect((object?["configuration"] as? [String: Any])?["application"] as? String == "ledger")
        let client = try #require((object?["results"] as? [String: Any])?["client"] as? [String: Int])
        #expect((client["finalTotal"] ?? 0) > 0, "nothing became final: \(ran.output)")
        #expect(client["refused"] == 0 && client["unanswered"] == 0, "\(client)")
    }

    /// `--processes`: one replica per process; they order commands, report through the
    /// first, and are all gone when the bench returns.
    @Test func theProcessModeOrdersAndLeavesNoReplicaBehind() throws {
        let bin = try productsDirectory()
        let json = Scratch.file("ordering-processes.json")
        let ran = try run("\(bin)/calisson-bench", [
            // A slower tick than the bench's 5 ms: under the whole suite's load a debug replica
            // stalled past the view-change timeout twice in a 2-second window and nothing was
            // ordered (the figures are not this test's business).
            "ordering", "--processes", "--block-size", "50", "--outstanding", "500", "--warmup", "1", "--duration", "3",
            "--tick-milliseconds", "25", "--json", json,
        ], timeout: 120)
        #expect(ran.status == 0, "\(ran.output)\n\(ran.errors)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        #expect((object?["configuration"] as? [String: Any])?["processes"] as? Int == 4)
        let results = try #require(object?["results"] as? [String: Any])
        #expect((results["commandsPerSecond"] as? Int ?? 0) > 0, "nothing was ordered: \(ran.output)")
        #expect((results["cpuSecondsPer1000Commands"] as? Double ?? 0) > 0, "the replica processes' CPU was not counted: \(ran.output)")
        let left = try run("/usr/bin/pgrep", ["-f", "calisson-bench ordering-replica --setup"], timeout: 10)
        #expect(left.output.isEmpty, "replica processes left running: \(left.output)")
        let refused = try run("\(bin)/calisson-bench", ["ordering", "--processes", "--application", "ledger"], timeout: 30)
        #expect(refused.status != 0 && refused.errors.contains("--processes runs the chain application only"), "\(refused.errors)")
    }
}
