// The command-line tools refuse extreme and absurd flag values with a sentence naming
// the flag, and never trap with a backtrace (issue 16, item 4): durations that are
// infinite or astronomically large, block counts at UInt64.max; the bench's counts and the
// gateway's flags likewise. Reference text goes on
// chain only as a keyed hash (item 13). The cluster scripts honour the caller's BASE_PORT
// and a Byzantine test node logs the seed it runs with (item 12).
@testable import CalissonCLI
import CalissonCrypto
import CalissonTestKit
import Foundation
import Ledger
import Node
import Spawning
import Testing
import Wire

@Suite(.onOwnThreads) struct CommandLineTests {
    @Test func extremeFlagValuesAreRefusedByName() throws {
        let calisson = try productsDirectory() + "/calisson"
        let key = Scratch.file("cli.key")
        defer { try? FileManager.default.removeItem(atPath: key) }
        _ = try run(calisson, ["key", "generate", "--out", key])
        let max = "18446744073709551615"
        let cases: [([String], String)] = [
            (["status", "--request-timeout", "inf"], "--request-timeout"),
            (["status", "--request-timeout", "1e300"], "--request-timeout"),
            (["status", "--request-timeout", "nan"], "--request-timeout"),
            (["status", "--request-timeout", "-1"], "--request-timeout"),
            (["submit", "redeem", "--key", key, "--acceptor", "p0", "--amount", "1", "--expires-in", max], "--expires-in"),
            (["submit", "redeem", "--key", key, "--acceptor", "p0", "--amount", "1", "--timeout", "1e300"], "--timeout"),
            (["submit", "propose", "close-programme", "--target", "t", "--key", key, "--as", "p0", "--deadline-in", max], "--deadline-in"),
            (["block", "18446744073709551616"], "height"),
            // Payment files are written from certified answers only.
            (["settlement", "0", "--register", "register.json", "--out", "out"], "--genesis is required"),
        ]
        try Self.expectRefusedByName(calisson, cases)
    }

    /// Runs `tool` with each case's arguments: refused as a usage error (exit 64) naming the
    /// flag, without a trap.
    static func expectRefusedByName(_ tool: String, _ cases: [([String], String)]) throws {
        for (arguments, flag) in cases {
            let ran = try run(tool, arguments, timeout: 30)
            #expect(ran.status == 64, "\(arguments): exit \(ran.status)")
            #expect(ran.errors.contains(flag), "\(arguments): \(ran.errors)")
            #expect(!ran.errors.contains("Fatal error") && !ran.errors.contains("Backtrace") && !ran.errors.contains("Crash"), "\(arguments): \(ran.errors.suffix(500))")
        }
    }

    /// The bench's counts are bounded too: a storage run of 0 blocks, a sweep of 2^64 − 1
    /// validators, a ceiling of 2^32 signatures a round, a cluster of Int.max transactions
    /// each trapped (a range over nothing, a conversion, an allocation of 2^64 bytes).
    /// An account holds a lot per programme and expiry epoch, so `balance --json` names a
    /// programme once per lot: its values are joined, where the output crashed the tool.
    @Test func aFieldNamedTwiceIsJoinedInJSON() {
        let object = Connection.jsonObject([("balance", "30"), ("  recyclage", "10 (expires after epoch 3)"), ("  recyclage", "20 (expires after epoch 4)")])
        #expect(object == ["balance": "30", "  recyclage": "10 (expires after epoch 3); 20 (expires after epoch 4)"])
    }

    @Test func theBenchRefusesAbsurdCountsByName() throws {
        let bench = try productsDirectory() + "/calisson-bench"
        let cases: [([String], String)] = [
            (["storage", "--blocks", "0"], "--blocks"),
            (["storage", "--accounts", "0"], "--accounts"),
            (["sweep", "--validators", "18446744073709551615"], "--validators"),
            (["sweep", "--block-sizes", "100,1e309"], "--block-sizes"),
            (["sweep", "--loads", "nan"], "--loads"),
            (["sweep", "--duration", "inf"], "--duration"),
            (["ceiling", "--signatures", "4294967296"], "--signatures"),
            (["cluster", "--transactions", "9223372036854775807"], "--transactions"),
            (["cluster", "--citizens", "9223372036854775807"], "--citizens"),
            (["cluster", "--state-write-checkpoints", "18446744073709551615"], "--state-write-checkpoints"),
            (["cluster", "--state-write-checkpoints", "0"], "--state-write-checkpoints"),
            (["gateway", "--connections", "9223372036854775807"], "--connections"),
            (["gateway", "--rounds", "9223372036854775807"], "--rounds"),
            (["ledger", "--blocks", "-1"], "--blocks"),
            (["transport", "--window", "0"], "--window"),
            (["hotpath", "--rounds", "9223372036854775807"], "--rounds"),
        ]
        try Self.expectRefusedByName(bench, cases)
    }

    /// `calisson-gateway run` refuses, by name and before it starts, what it cannot use: a
    /// bound crossed, a number that is none, and a flag that would be ignored (an evidence key
    /// or a state directory without the partner's signer).
    @Test func theGatewayRefusesAbsurdFlagsByName() throws {
        let gateway = try productsDirectory() + "/calisson-gateway"
        let base = ["run", "--node", "127.0.0.1:7101", "--ca", "ca.crt", "--genesis", "genesis.json", "--api-keys", "keys.json"]
        let cases: [([String], String)] = [
            (["--idle-timeout", "0"], "--idle-timeout"),
            (["--body-seconds", "9223372036854775807"], "--body-seconds"),
            (["--request-timeout", "nan"], "--request-timeout"),
            (["--request-timeout", "1e309"], "--request-timeout"),
            (["--connections-per-address", "0"], "--connections-per-address"),
            (["--max-lag", "18446744073709551615"], "--max-lag"),
            (["--mirror-pages-max", "-1"], "--mirror-pages-max"),
            (["--listen", "127.0.0.1"], "--listen"),
            (["--node", "127.0.0.1:65536"], "--node"),
            (["--node", "127.0.0.1:0"], "--node"),
            (["--listen", "127.0.0.1:0"], "--listen"),
            (["--partner", "Not An Id", "--signing-key", "k", "--state-dir", "d"], "--partner"),
            (["--evidence-key", "evidence.key"], "--evidence-key"),
            (["--state-dir", "state"], "--state-dir"),
            (["--client-ca", "ca.crt"], "--client-ca"),
        ]
        try Self.expectRefusedByName(gateway, cases.map { (base + $0.0, $0.1) })
    }

    /// `calisson-node testnet` refuses each node setting it would write out of range, by name,
    /// before it writes anything.
    @Test func theTestnetRefusesSettingsOutOfRangeByName() throws {
        let node = try productsDirectory() + "/calisson-node"
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("testnet-\(UUID().uuidString)").path
        let cases: [([String], String)] = [
            (["--state-write-checkpoints", "0"], "--state-write-checkpoints"),
            (["--state-write-checkpoints", "65"], "--state-write-checkpoints"),
            (["--state-write-checkpoints", "18446744073709551615"], "--state-write-checkpoints"),
            (["--block-commands-max", "10001"], "--block-commands-max"),
            (["--block-wait-ms", "18446744073709551615"], "--block-wait-ms"),
        ]
        try Self.expectRefusedByName(node, cases.map { (["testnet", "--validators", "1", "--out", out] + $0.0, $0.1) })
        #expect(!FileManager.default.fileExists(atPath: out), "nothing written")
        // The CA's validity: days × 86,400 seconds trapped past Int's range.
        let ca: [([String], String)] = [
            (["ca", "init", "--out", out, "--days", "106751991167301"], "--days"),
            (["ca", "init", "--out", out, "--days", "-106751991167301"], "--days"),
            (["ca", "init", "--out", out, "--days", "0"], "--days"),
            (["ca", "sign", "--ca", out, "--request", "\(out)/tls.csr", "--out", "\(out)/tls.crt", "--serial", "2", "--days", "9223372036854775807"], "--days"),
        ]
        try Self.expectRefusedByName(node, ca)
        #expect(!FileManager.default.fileExists(atPath: out), "nothing written")
    }

    /// A node that says heights no ledger reaches (2^64 − 1, in its status and its blocks'
    /// summaries) makes no tool trap: `follow` refuses its blocks by name, and `submit`'s
    /// check of the rules in force at the next block does not add to its height.
    @Test func aNodeSayingAnImpossibleHeightTrapsNoTool() throws {
        let bin = try productsDirectory()
        let cluster = try TestCluster()
        let nodes = try cluster.startSettled()
        defer { for node in nodes { node.stop() } }
        let liar = try Liar(before: nodes[0], of: cluster, lie: .height)
        defer { liar.stop() }
        let (caFile, keyFile, _) = try cluster.clientFiles(signer: 0)
        let node = ["--node", "127.0.0.1:\(liar.port)", "--ca", caFile, "--chain", TestCluster.chainId]
        func untrapped(_ ran: Ran) -> Bool { !ran.errors.contains("Fatal error") && !ran.errors.contains("Backtrace") && ran.status < 128 }

        let follow = try run("\(bin)/calisson", ["follow", "--count", "1"] + node, timeout: 60)
        #expect(untrapped(follow) && follow.status != 0, "exit \(follow.status): \(follow.errors.suffix(800))")
        #expect(follow.errors.contains("answered block 18446744073709551615 when block 1 was asked"), "\(follow.errors.suffix(800))")

        let endpoints = try run("\(bin)/calisson", ["submit", "set-endpoints", "--as", "p0", "--endpoint", "127.0.0.1:9", "--key", keyFile] + node, timeout: 60)
        #expect(untrapped(endpoints), "exit \(endpoints.status): \(endpoints.errors.suffix(800))")
        // The schedule is read certified (the liar relays it untouched): the rules in force at
        // any height are those of the genesis, as an honest node's answer would have it.
        #expect(endpoints.status != 0 && endpoints.errors.contains("set-endpoints needs ledger rules"), "\(endpoints.errors.suffix(800))")
    }

    /// `propose rotate-keys` takes the new keys as hex or as the .pub files `calisson-node
    /// keys generate` writes; `propose set-parameters` changes only the parameters given,
    /// checked as the ledger checks them (issue 20, item 7: neither could be proposed).
    /// `follow` waits for the next block however long the chain is idle: `--request-timeout`
    /// bounds the node's answer past its wait for a block, not the wait (with the default
    /// timeout, 30 s, as long as the wait, follow quit with "no answer in time" on an idle
    /// chain).
    @Test func followWaitsForTheNextBlockPastItsRequestTimeout() async throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startNodes()
        defer { for node in nodes { node.stop() } }
        let caFile = Scratch.directory("follow") + "-ca.crt"
        try cluster.ca.pem.write(toFile: caFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        #expect(nodes[0].submit(cluster.attribute(by: 0, to: 1, nonce: 1)) == nil)
        #expect(eventually(30) { (nodes[0].read { $0.meta.totals.issued } ?? 0) > 0 })
        // Then idle, the interval completed: no block until the next transaction.
        #expect(TestCluster.settle(nodes, atLeast: nodes[0].height), "\(nodes.map(\.height))")
        let next = nodes[0].height + 1
        let follow = try Follow.parse([
            "--node", "127.0.0.1:\(nodes[0].transport.clientPort)", "--ca", caFile, "--chain", TestCluster.chainId,
            "--from", "\(next)", "--count", "1", "--request-timeout", "1",
        ])
        let following = Task { try await onOwnThread { try follow.run() } }
        // Idle for over twice the request's timeout, then a block.
        try await Task.sleep(for: .milliseconds(2_500))
        #expect(nodes[0].submit(cluster.attribute(by: 0, to: 1, nonce: 2)) == nil)
        await #expect(throws: Never.self) { try await following.value }
    }

    @Test func keyRotationsAndParameterChangesCanBeProposed() throws {
        let directory = Scratch.directory("propose")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let signing = Ed25519PrivateKey(), node = Ed25519PrivateKey()
        try KeyFile.write(node.publicKey, to: "\(directory)/node.pub")
        let hash = SHA256.hash("tls key")
        let common = ["--key", "\(directory)/signing.key", "--as", "rtm"]
        let rotation = try ProposeCommand.parse(
            ["rotate-keys", "--target", "rtm", "--signing-key", signing.publicKey.bytes.hex, "--node-key", "\(directory)/node.pub", "--tls-key-hash", hash.hex] + common)
        #expect(try rotation.governanceAction() == .rotateKeys(Identifier("rtm")!, signingKey: signing.publicKey, nodeKey: node.publicKey, tlsKeyHash: hash))
        // Keys dropped only when said (a key not named keeps its value: read from a node,
        // `aKeyRotationKeepsTheKeysItDoesNotName`).
        let signingOnly = try ProposeCommand.parse(
            ["rotate-keys", "--target", "rtm", "--signing-key", signing.publicKey.bytes.hex, "--no-node-key", "--no-tls-key-hash"] + common)
        #expect(try signingOnly.governanceAction() == .rotateKeys(Identifier("rtm")!, signingKey: signing.publicKey, nodeKey: nil, tlsKeyHash: nil))
        for (arguments, message) in [
            (["rotate-keys", "--target", "rtm"], "--signing-key"),
            (["rotate-keys", "--target", "rtm", "--signing-key", signing.publicKey.bytes.hex, "--node-key", "\(directory)/node.pub", "--no-node-key"], "--no-node-key"),
            (["rotate-keys", "--target", "rtm", "--signing-key", signing.publicKey.bytes.hex, "--tls-key-hash", hash.hex, "--no-tls-key-hash"], "--no-tls-key-hash"),
            (["rotate-keys", "--target", "rtm", "--signing-key", "\(directory)/missing.pub"], "--signing-key"),
            (["rotate-keys", "--target", "rtm", "--signing-key", signing.publicKey.bytes.hex, "--tls-key-hash", "zz"], "--tls-key-hash"),
            (["rotate-keys", "--signing-key", signing.publicKey.bytes.hex], "--target"),
        ] {
            #expect { _ = try ProposeCommand.parse(arguments + common).governanceAction() } throws: { "\($0)".contains(message) }
        }

        let current = Parameters(sink: Identifier("metropole")!)
        let changes = try ParameterChanges.parse(["--approval", "3/4", "--epoch-length", "500"])
        var expected = current
        expected.approvalNumerator = 3
        expected.approvalDenominator = 4
        expected.epochLength = 500
        #expect(try changes.applied(to: current) == expected)
        #expect(try ParameterChanges.parse([]).changesAny == false)
        for (arguments, message) in [
            (["--approval", "3/0"], "set-parameters"), (["--approval", "most"], "--approval"), (["--epoch-length", "0"], "set-parameters"),
            (["--transaction-lifetime-max", "18446744073709551615"], "set-parameters"), (["--epoch-length", "1000"], "current one"),
            (["--sink", "Not An Id"], "Not An Id"),
        ] {
            #expect { _ = try ParameterChanges.parse(arguments).applied(to: current) } throws: { "\($0)".contains(message) }
        }
    }

    /// `propose rotate-keys` names every key in its action (one not named is none): the keys
    /// not given keep the values the node proves (a rotation of the signing key alone
    /// dropped the partner's node key and TLS key hash, and a validator left the consensus).
    @Test func aKeyRotationKeepsTheKeysItDoesNotName() throws {
        let cluster = try TestCluster()
        let nodes = try cluster.startSettled()
        defer { for node in nodes { node.stop() } }
        let (caFile, keyFile, _) = try cluster.clientFiles(signer: 1)
        let fresh = Ed25519PrivateKey().publicKey
        let node = ["--node", "127.0.0.1:\(nodes[0].transport.clientPort)", "--ca", caFile, "--chain", TestCluster.chainId, "--key", keyFile, "--as", "p1"]
        let kept = try ProposeCommand.parse(["rotate-keys", "--target", "p1", "--signing-key", fresh.bytes.hex] + node).governanceAction()
        #expect(kept == .rotateKeys(Identifier("p1")!, signingKey: fresh, nodeKey: cluster.nodeKeys[1].publicKey, tlsKeyHash: cluster.certificates[1].publicKeyHash))
        let other = Ed25519PrivateKey().publicKey
        let nodeOnly = try ProposeCommand.parse(["rotate-keys", "--target", "p1", "--signing-key", fresh.bytes.hex, "--node-key", other.bytes.hex] + node).governanceAction()
        #expect(nodeOnly == .rotateKeys(Identifier("p1")!, signingKey: fresh, nodeKey: other, tlsKeyHash: cluster.certificates[1].publicKeyHash))
        // `set-parameters` names every parameter too: the whole set is said before it is
        // signed, with how far the node's record of those not given was checked.
        let ran = try run(try productsDirectory() + "/calisson", ["submit", "propose", "set-parameters", "--epoch-length", "500"] + node, timeout: 60)
        #expect(ran.errors.contains("calisson: set-parameters proposes epochLength 500, blocksPerDay ")
                && ran.errors.contains(", approval 2/3, sink ") && ran.errors.contains("proven against the node's own state root only: add --genesis"),
                "\(ran.status) \(ran.output) \(ran.errors)")
    }

    /// With the genesis, `submit` checks where its transaction is final (the block's commit
    /// certificate and the transaction's place in it), as `tx --genesis` does; before, the
    /// node's word alone decided what it printed and its exit status.
    @Test func aSubmissionWithTheGenesisChecksWhereItIsFinal() throws {
        let bin = try productsDirectory()
        let cluster = try TestCluster()
        let nodes = try cluster.startSettled()
        defer { for node in nodes { node.stop() } }
        let (caFile, keyFile, genesis) = try cluster.clientFiles(signer: 0)
        let ran = try run("\(bin)/calisson", [
            "submit", "attribute", "--programme", "tri", "--account", Ed25519PrivateKey().publicKey.bytes.hex, "--evidence", SHA256.hash("a checked gesture").hex,
            "--key", keyFile, "--as", "p0", "--json", "--node", "127.0.0.1:\(nodes[1].transport.clientPort)", "--ca", caFile, "--chain", TestCluster.chainId,
            "--genesis", genesis,
        ], timeout: 60)
        #expect(ran.status == 0 && ran.output.contains("\"status\":\"applied\"") && ran.output.contains("whose commit certificate a quorum of the validators"),
                "\(ran.output) \(ran.errors)")
    }

    /// What a node or a partner wrote is printed with its control characters escaped: a
    /// line break or an escape sequence in a partner's name, a reason or a status field
    /// could clear the terminal or print a line of its making (a false `proof` line).
    @Test func textFromOutsideIsPrintedWithItsControlCharactersEscaped() {
        #expect(Connection.printable("La Friche") == "La Friche")
        #expect(Connection.printable("été ✓") == "été ✓")
        #expect(Connection.printable("x\nproof  certified by a quorum") == #"x\nproof  certified by a quorum"#)
        #expect(Connection.printable("\u{1B}[2Jcleared\r\t") == #"\u{1B}[2Jcleared\r\t"#)
    }

    /// `follow` takes blocks one after another; the first may come later than asked (a node
    /// joined from a snapshot holds none below its checkpoint), no other.
    @Test func followTakesBlocksInOrderFromTheFirstTheNodeHolds() throws {
        #expect(try Follow.taken(1, asked: 1, first: true) == 1)
        #expect(try Follow.taken(640, asked: 1, first: true) == 640)
        #expect(try Follow.taken(7, asked: 7, first: false) == 7)
        for (height, asked, first) in [(UInt64(9), UInt64(7), false), (6, 7, false), (6, 7, true), (.max, 1, true), (.max, .max, false)] {
            #expect(throws: CommandError.self, "\(height) for \(asked)") { _ = try Follow.taken(height, asked: asked, first: first) }
        }
    }

    /// `ca sign` issues a serial once (revocation names certificates by serial) and never
    /// replaces a register it cannot read; `init` checks everything before writing, leaves
    /// nothing behind when it refuses (a peer no partner of the genesis has, a key file
    /// missing: issue 20, item 7), and never replaces a node's files.
    @Test func theCASignsASerialOnceAndInitWritesNothingItRefuses() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("init")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let net = "\(directory)/net"
        let written = try run("\(bin)/calisson-node", ["testnet", "--validators", "1", "--out", net, "--base-port", "\(PortBlock.reserve())"])
        #expect(written.status == 0, "\(written.errors)")
        let keys = "\(directory)/keys"
        #expect(try run("\(bin)/calisson-node", ["keys", "generate", "--partner", "metropole", "--out", keys]).status == 0)
        let sign = ["ca", "sign", "--ca", net, "--request", "\(keys)/tls.csr", "--out", "\(keys)/tls.crt", "--serial"]
        let first = try run("\(bin)/calisson-node", sign + ["41"])
        #expect(first.status == 0 && first.output.contains("serial 41"), "\(first.errors)")
        let again = try run("\(bin)/calisson-node", sign + ["41"])
        #expect(again.status != 0 && again.errors.contains("serial 41 was already issued by this CA"), "\(again.errors)")
        let zero = try run("\(bin)/calisson-node", sign + ["0"])
        #expect(zero.status != 0 && zero.errors.contains("--serial must be positive"), "\(zero.errors)")
        // A register it cannot read (here a byte that is no UTF-8) is never replaced by one line.
        let register = "\(net)/issued.tsv"
        let registered = try Data(contentsOf: URL(fileURLWithPath: register)) + Data([0xFF, 0x0A])
        try registered.write(to: URL(fileURLWithPath: register))
        let unreadable = try run("\(bin)/calisson-node", sign + ["42"])
        #expect(unreadable.status != 0 && unreadable.errors.contains("cannot read the register of issued serials"), "\(unreadable.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: register)) == registered)

        let out = "\(directory)/node"
        let initialize = ["init", "--genesis", "\(net)/genesis.json", "--partner", "metropole", "--ca", "\(net)/ca.crt", "--out", out, "--peer-port", "7100"]
        for (extra, message) in [
            (["--keys", keys, "--peer", "nobody@127.0.0.1:7200"], "--peer nobody is no partner of the genesis"),
            (["--keys", keys, "--peer", "metropole@127.0.0.1"], "expected id@host:port"),
            (["--keys", "\(directory)/none"], "has no node.key"),
        ] {
            let refused = try run("\(bin)/calisson-node", initialize + extra)
            #expect(refused.status != 0 && refused.errors.contains(message), "\(extra): \(refused.errors)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(extra): \(out) was left behind")
        }
        let other = try run("\(bin)/calisson-node", initialize + ["--keys", keys, "--partner", "Not An Id"])
        #expect(other.status != 0 && other.errors.contains("--partner Not An Id"), "\(other.errors)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let made = try run("\(bin)/calisson-node", initialize + ["--keys", keys, "--admitted-peer", "cycles-azur@127.0.0.1:7200"])
        #expect(made.status == 0 && made.output.contains("ready in"), "\(made.errors)")
        let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        #expect(files == ["ca.crt", "config.json", "data", "genesis.json"], "\(files)")
        // It made the node's database, empty: `run` never makes one, so a node whose
        // database is not there (a volume not mounted) is refused, not started afresh.
        let database = "\(out)/data/node.db"
        #expect(FileManager.default.fileExists(atPath: database))
        try FileManager.default.moveItem(atPath: database, toPath: database + ".aside")
        let missing = try run("\(bin)/calisson-node", ["run", "--config", "\(out)/config.json"], timeout: 30)
        #expect(missing.status != 0 && missing.errors.contains("no database at \(database)") && missing.errors.contains("forgotten the votes"),
                "\(missing.errors)")
        #expect(!FileManager.default.fileExists(atPath: database))
        // A file cut to zero bytes is no new database either: SQLite reads it as an empty one.
        try Data().write(to: URL(fileURLWithPath: database))
        let emptied = try run("\(bin)/calisson-node", ["run", "--config", "\(out)/config.json"], timeout: 30)
        #expect(emptied.status != 0 && emptied.errors.contains("it is empty, 0 bytes"), "\(emptied.errors)")
        #expect(try FileManager.default.attributesOfItem(atPath: database)[.size] as? Int == 0)
        try FileManager.default.removeItem(atPath: database)
        try FileManager.default.moveItem(atPath: database + ".aside", toPath: database)
        // A node's directory is made once: a second init replaces nothing in it.
        let config = try Data(contentsOf: URL(fileURLWithPath: "\(out)/config.json"))
        let remade = try run("\(bin)/calisson-node", initialize + ["--keys", keys])
        #expect(remade.status != 0 && remade.errors.contains("already holds config.json"), "\(remade.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(out)/config.json")) == config)
    }

    /// Writes a one-validator testnet into `directory`; returns its node's configuration file.
    func oneValidatorTestnet(_ bin: String, in directory: String) throws -> String {
        let written = try run("\(bin)/calisson-node", ["testnet", "--validators", "1", "--out", directory, "--base-port", "\(PortBlock.reserve())"])
        #expect(written.status == 0, "\(written.errors)")
        return "\(directory)/metropole/config.json"
    }

    /// A pipe (a FIFO) given where a file is read: refused, named, at once. SQLite, NIOSSL
    /// and Foundation opened one and waited for a writer for ever (found by an audit).
    @Test func aPipeGivenAsAFileIsRefusedNotWaitedOn() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("pipes")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try oneValidatorTestnet(bin, in: directory)
        let pipe = "\(directory)/pipe"
        #expect(mkfifo(pipe, 0o600) == 0)
        let net = directory, node = "\(directory)/metropole"
        let keys = "\(directory)/keys.json"
        try #"{"keys": [{"name": "a", "sha256": "\#(String(repeating: "ab", count: 32))", "scopes": ["read"]}]}"#.write(toFile: keys, atomically: true, encoding: .utf8)
        for (tool, arguments, said) in [
            ("calisson", ["status", "--db", pipe], "is a pipe"),
            ("calisson-node", ["restore", "--config", config, "--from", pipe], "is a pipe"),
            ("calisson-node", ["init", "--genesis", "\(net)/genesis.json", "--partner", "metropole", "--keys", node, "--ca", pipe, "--out", "\(directory)/new",
                               "--peer-port", "1", "--client-port", "2"], "--ca \(pipe): is a pipe"),
            ("calisson-node", ["ca", "sign", "--ca", net, "--request", pipe, "--serial", "9", "--out", "\(directory)/x.crt"], "--request \(pipe): is a pipe"),
            ("calisson-gateway", ["key", "--name", "a", "--certificate", pipe], "is a pipe"),
            ("calisson-gateway", ["run", "--node", "127.0.0.1:1", "--ca", "\(net)/ca.crt", "--genesis", "\(net)/genesis.json", "--api-keys", pipe], "pipe"),
            ("calisson-gateway", ["run", "--node", "127.0.0.1:1", "--ca", "\(net)/ca.crt", "--genesis", "\(net)/genesis.json", "--api-keys", keys,
                                  "--tls-certificate", pipe, "--tls-key", "\(node)/tls.key"], "--tls-certificate \(pipe): is a pipe"),
            ("calisson-gateway", ["run", "--node", "127.0.0.1:1", "--ca", "\(net)/ca.crt", "--genesis", "\(net)/genesis.json", "--api-keys", keys,
                                  "--settlement-register", pipe], "is a pipe"),
        ] {
            let ran = try run("\(bin)/\(tool)", arguments, timeout: 30)
            #expect(ran.status != 0 && ran.errors.contains(said), "\(tool) \(arguments): \(ran.status) \(ran.errors)")
        }
    }

    /// Flags the tools once trapped on or took silently (found by an audit): each refused,
    /// named, with a non-zero exit.
    @Test func flagsOnceTrappedOnOrTakenAreRefusedByName() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("flags")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try oneValidatorTestnet(bin, in: directory)  // a genesis, a CA and keys to name
        for (tool, arguments, said) in [
            ("calisson-sim", ["--validators", "0"], "--validators must be from 4 to 100"),
            ("calisson-sim", ["--safety-ticks", "9223372036854775807"], "--safety-ticks must be from 1 to"),
            ("calisson-sim", ["--faults", "bogus"], "--faults must be all or none"),
            ("calisson-node", ["testnet", "--out", "\(directory)/other", "--chain-id", "café"], "--chain-id must be 1 to"),
            ("calisson-gateway", ["key", "--name", "a", "--scopes", ""], "--scopes must name at least one"),
            ("calisson-gateway", ["key", "--name", ""], "--name must be 1 to 64 bytes"),
            ("calisson-node", ["init", "--genesis", "\(directory)/genesis.json", "--partner", "metropole", "--keys", "\(directory)/metropole",
                               "--ca", "\(directory)/ca.crt", "--out", "\(directory)/new", "--peer-port", "1", "--client-port", "2",
                               "--peer", "rtm@127.0.0.1:0"], "the port 1 to 65535"),
            ("calisson-bench", ["dashboard", "--port", "70000"], "--port must be 1...65535"),
        ] {
            let ran = try run("\(bin)/\(tool)", arguments, timeout: 30)
            #expect(ran.status != 0 && ran.status < 128 && ran.errors.contains(said), "\(tool) \(arguments): \(ran.status) \(ran.errors)")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/new") && !FileManager.default.fileExists(atPath: "\(directory)/other"))
    }

    /// `backup`, `prune` and `restore` from the command line, on the testnet's node once it
    /// ran and stopped: each says what it did; a second node on the same configuration is
    /// refused while the first runs.
    @Test func maintenanceCommandsWorkOnAStoppedNode() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("maintenance")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try oneValidatorTestnet(bin, in: directory), database = "\(directory)/metropole/data/node.db"
        let node = try ChildProcess("\(bin)/calisson-node", ["run", "--config", config, "--exit-with-parent"], output: .null, errors: .null)
        #expect(eventually(20) { FileManager.default.fileExists(atPath: database + ".lock") && (try? run("\(bin)/calisson-node", ["status", "--config", config]).status) == 0 })
        let second = try run("\(bin)/calisson-node", ["run", "--config", config], timeout: 30)
        #expect(second.status != 0 && second.errors.contains("in use by process \(node.pid)"), "\(second.errors)")
        node.send(SIGTERM)
        #expect(node.wait().status == 0)

        let backup = try run("\(bin)/calisson-node", ["backup", "--config", config, "--out", "\(directory)/copy.db"])
        // Idle, the validator certified its genesis state with the empty blocks to the first
        // checkpoint, or stopped before it did.
        #expect(backup.status == 0 && (backup.output.contains("height 0") || backup.output.contains("height 8")), "\(backup.output) \(backup.errors)")
        // Written under another name, then put in place: nothing of it is left beside.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("copy.db") } == ["copy.db"])
        let again = try run("\(bin)/calisson-node", ["backup", "--config", config, "--out", "\(directory)/copy.db"])
        #expect(again.status != 0 && again.errors.contains("copy.db exists"), "\(again.errors)")
        let prune = try run("\(bin)/calisson-node", ["prune", "--config", config, "--keep-blocks", "1000", "--vacuum"])
        #expect(prune.status == 0 && prune.output.contains("bodies dropped for 0 blocks this run, kept from height 1"), "\(prune.output) \(prune.errors)")
        let restore = try run("\(bin)/calisson-node", ["restore", "--config", config, "--from", "\(directory)/copy.db"])
        #expect(restore.status == 0 && restore.output.contains("restored") && restore.output.contains("moved aside: \(database).replaced-")
                    && restore.output.contains("the votes recorded by the database replaced are kept"),
                "\(restore.output) \(restore.errors)")
        let missing = try run("\(bin)/calisson-node", ["restore", "--config", config, "--from", "\(directory)/none.db"])
        #expect(missing.status != 0 && missing.errors.contains("none.db: no such backup"), "\(missing.errors)")
    }

    /// `run --exit-with-parent` (what the tools and tests that start nodes pass): the
    /// node stops when the process that started it ends, as a crashed test would.
    @Test func aNodeStartedWithExitWithParentStopsWhenItsParentEnds() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("orphan")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try oneValidatorTestnet(bin, in: directory)
        // A shell starts the node in the background, says its pid, waits until it runs,
        // then ends: the node is an orphan.
        let script = """
            "$0" run --config "$1" --exit-with-parent > /dev/null 2> "$2" & echo $!
            i=0; while [ $i -lt 300 ] && ! "$0" status --config "$1" > /dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
            """
        let shell = try run("/bin/sh", ["-c", script, "\(bin)/calisson-node", config, "\(directory)/node.log"], timeout: 60)
        let pid = try #require(Int32(shell.output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(shell.output) \(shell.errors)")
        // Gone, or a zombie nobody reaps (a container's first process may not).
        func ended() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
            return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
        }
        let stopped = eventually(30) { ended() }
        if !stopped { kill(pid, SIGKILL) }
        let log = (try? String(contentsOfFile: "\(directory)/node.log", encoding: .utf8)) ?? ""
        #expect(stopped, "the orphaned node still runs: \(log)")
        #expect(log.contains("the process that started the node ended: stopping"), "\(log)")
    }

    /// Evidence and service text is refused without an evidence key (it would go on chain
    /// as a plain hash anyone can test guesses against); with one, it is committed under it.
    @Test func referenceTextNeedsAnEvidenceKey() throws {
        let calisson = try productsDirectory() + "/calisson"
        let directory = Scratch.directory("evidence")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try run(calisson, ["key", "generate", "--out", "\(directory)/signing.key"])
        let account = String(repeating: "ab", count: 32)
        let attribute = ["submit", "attribute", "--key", "\(directory)/signing.key", "--as", "p0", "--programme", "tri", "--account", account,
                         "--evidence", "trip log #A-0412", "--node", "127.0.0.1:1", "--ca", "\(directory)/none.crt"]
        let refused = try run(calisson, attribute)
        #expect(refused.status == 1 && refused.errors.contains("keyed hash") && refused.errors.contains("--evidence-key"), "\(refused.errors)")
        #expect(!refused.errors.contains("Usage:"), "\(refused.errors)")  // the command line was right
        let redeem = try run(calisson, ["submit", "redeem", "--key", "\(directory)/signing.key", "--acceptor", "p0", "--amount", "1",
                                        "--service", "ticket 12", "--node", "127.0.0.1:1", "--ca", "\(directory)/none.crt"])
        #expect(redeem.status == 1 && redeem.errors.contains("--service"), "\(redeem.errors)")
        // With evidence.key beside the signing key, the commitment is made and the command goes on
        // (to fail later, at the missing CA: no node is needed to show the key was taken).
        let made = try run(calisson, ["key", "evidence", "--out", "\(directory)/evidence.key"])
        #expect(made.status == 0, "\(made.errors)")
        let keyed = try run(calisson, attribute)
        #expect(!keyed.errors.contains("keyed hash") && keyed.errors.contains("none.crt"), "\(keyed.errors)")
    }

    /// `Cluster/local/up.sh` takes the BASE_PORT it is given, not the one a previous
    /// cluster left in $CALISSON_HOME/env (item 12). A stand-in calisson-node records the
    /// arguments `testnet` gets, and fails so that the script stops there.
    @Test func upHonoursTheCallersBasePort() throws {
        let directory = Scratch.directory("up")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: "\(directory)/home", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(directory)/bin", withIntermediateDirectories: true)
        try "BASE_PORT=7100\n".write(toFile: "\(directory)/home/env", atomically: true, encoding: .utf8)
        try "#!/bin/sh\necho \"$@\" > \(directory)/arguments\nexit 3\n".write(toFile: "\(directory)/bin/calisson-node", atomically: true, encoding: .utf8)
        chmod("\(directory)/bin/calisson-node", 0o755)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Cluster/local/up.sh").standardized.path
        let environment = ProcessInfo.processInfo.environment.merging(
            ["BASE_PORT": "17300", "CALISSON_HOME": "\(directory)/home", "BIN": "\(directory)/bin", "SKIP_BUILD": "1"]) { $1 }
        try ChildProcess("/bin/bash", [script, "1"], environment: environment, output: .null, errors: .null).wait()
        let arguments = (try? String(contentsOfFile: "\(directory)/arguments", encoding: .utf8)) ?? ""
        #expect(arguments.contains("--base-port 17300"), "testnet got: \(arguments)")
    }

    /// A Byzantine test node logs the seed of its choices, and takes one to replay a run (item 12).
    @Test func aByzantineNodeLogsItsSeed() throws {
        let bin = try productsDirectory()
        let directory = Scratch.directory("seed")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let basePort = PortBlock.reserve()
        let written = try run("\(bin)/calisson-node", ["testnet", "--validators", "1", "--out", directory, "--base-port", "\(basePort)"])
        #expect(written.status == 0, "\(written.errors)")
        let genesis = try JSONDecoder().decode(GenesisProbe.self, from: Data(contentsOf: URL(fileURLWithPath: "\(directory)/genesis.json")))
        let process = try ChildProcess(
            "\(bin)/calisson-node",
            ["run", "--config", "\(directory)/\(genesis.validators[0])/config.json", "--byzantine", "garbage", "--byzantine-seed", "4242", "--exit-with-parent"],
            output: .null, errors: .pipe)
        defer {
            process.send(SIGTERM)
            process.wait()
        }
        let errors = process.errors!
        let logged = Locked<String>("")
        let reader = Thread {
            while true {
                let chunk = errors.availableData
                if chunk.isEmpty { return }
                logged.withLock { $0 += String(decoding: chunk, as: UTF8.self) }
            }
        }
        reader.start()
        #expect(eventually(20) { logged.withLock { $0 }.contains("seed=4242") }, "\(logged.withLock { $0 })")
    }
}

private struct GenesisProbe: Decodable { let validators: [String] }
