import ArgumentParser
import Consensus
import CalissonCrypto
import Foundation
import Logging
import Node
import NodeProcesses
import Spawning
import Synchronization
import Transport
import Wire

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
func monotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

/// What the replicas of a `chain` run share: the CA, each replica's consensus and TLS keys
/// and certificate. Written to a file for `--processes`, so that each replica process
/// builds the same set (the seeds are throwaway keys of a benchmark, never a node's).
struct OrderingSetup: Codable {
    static let chainId = "calisson-ordering"
    var caPEM: String
    var consensusSeeds: [String]
    var tlsSeeds: [String]
    var certificatePEMs: [String]

    init(count: Int) throws {
        let caKey = Ed25519PrivateKey()
        let ca = try CertificateAuthority.makeRoot(name: "ordering bench CA", key: caKey)
        let consensus = (0..<count).map { _ in Ed25519PrivateKey() }
        let tls = (0..<count).map { _ in Ed25519PrivateKey() }
        caPEM = ca.pem
        consensusSeeds = consensus.map { Hex.encode($0.seedRepresentation) }
        tlsSeeds = tls.map { Hex.encode($0.seedRepresentation) }
        certificatePEMs = try (0..<count).map { index in
            try CertificateAuthority.issue(commonName: "r\(index)", subjectKey: tls[index].publicKey, ca: ca, caKey: caKey, serial: UInt64(index + 1)).pem
        }
    }

    var count: Int { consensusSeeds.count }

    static func key(_ seed: String) throws -> Ed25519PrivateKey {
        guard let bytes = Hex.decode(seed), bytes.count == 32, let key = Ed25519PrivateKey(seed: bytes) else { throw ValidationError("a key seed of the setup is not 32 bytes in hex") }
        return key
    }

    /// The keys and certificates decoded, once for all the replicas built from them.
    func decoded() throws -> Decoded {
        let keys = try consensusSeeds.map(Self.key)
        let certificates = try certificatePEMs.map { try Certificate(pem: $0) }
        guard let set = ValidatorSet(keys.map(\.publicKey)) else { throw ValidationError("bad validator set") }
        return Decoded(
            ca: try Certificate(pem: caPEM), keys: keys, tlsKeys: try tlsSeeds.map(Self.key), certificates: certificates, set: set,
            registry: Dictionary(uniqueKeysWithValues: certificates.map { ($0.commonName, $0.publicKeyHash) }),
            peers: Dictionary(uniqueKeysWithValues: keys.enumerated().map { ("r\($0.offset)", $0.element.publicKey) }))
    }

    struct Decoded {
        let ca: Certificate
        let keys: [Ed25519PrivateKey]
        let tlsKeys: [Ed25519PrivateKey]
        let certificates: [Certificate]
        let set: ValidatorSet
        let registry: [String: SHA256Digest]
        let peers: [String: ValidatorID]

        /// Replica `index`, its transport not started.
        func replica(_ index: Int, blockSize: Int, payloadSize: Int, outstanding: Int, tickMilliseconds: UInt64, origin: Int64) throws -> OrderingReplica {
            var configuration = ReplicaConfiguration(chainId: OrderingSetup.chainId, validators: set)
            configuration.batchCommandsMax = blockSize
            // The node's view-change timeout is 40 ticks of 20 ms: keep it at 800 ms whatever the tick.
            configuration.viewChangeTimeoutTicks = max(40, 800 / tickMilliseconds)
            configuration.viewChangeTimeoutTicksMax = configuration.viewChangeTimeoutTicks * 8
            var transport = TransportConfiguration(
                chainId: OrderingSetup.chainId, selfID: "r\(index)", identity: TLSIdentity(certificate: certificates[index], key: tlsKeys[index]), ca: ca)
            transport.registry = registry
            return try OrderingReplica(index: index, key: keys[index], configuration: configuration, transport: transport, peers: peers,
                                       payloadSize: payloadSize, outstanding: outstanding, tickMilliseconds: tickMilliseconds, origin: origin)
        }
    }
}

/// `ordering --processes`: each replica in its own process (`calisson-bench
/// ordering-replica`), linked over mutual TLS on loopback, as libhotstuff and other BFT
/// implementations are measured. The parent only starts them, tells each the others'
/// ports, and asks the first for its counts (a line protocol on their standard input and
/// output); the CPU is the replica processes' own (/proc).
final class ProcessOrderingGroup: OrderingRun, @unchecked Sendable {
    struct Child {
        let process: ChildProcess
        let input: FileHandle
        let output: LineReader
    }

    let directory: URL
    var children: [Child] = []
    let count: Int

    init(count: Int, blockSize: Int, payloadSize: Int, outstanding: Int, tickMilliseconds: UInt64) throws {
        self.count = count
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("calisson-ordering-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let setupFile = directory.appendingPathComponent("setup.json")
        try JSONEncoder().encode(try OrderingSetup(count: count)).write(to: setupFile)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: setupFile.path)
        let origin = monotonicNanoseconds()
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for index in 0..<count {
            let process = try ChildProcess(executable.path, [
                "ordering-replica", "--setup", setupFile.path, "--index", "\(index)", "--origin", "\(origin)", "--block-size", "\(blockSize)",
                "--payload-size", "\(payloadSize)", "--outstanding", "\(outstanding)", "--tick-milliseconds", "\(tickMilliseconds)",
            ], input: .pipe, output: .pipe)
            children.append(Child(process: process, input: process.input!, output: LineReader(process.output!)))
        }
    }

    /// Sends `command` to replica `index` and reads its one-line answer (its words).
    func ask(_ index: Int, _ command: String) throws -> [Substring] {
        try children[index].input.write(contentsOf: Data((command + "\n").utf8))
        guard let line = children[index].output.line() else {
            throw ValidationError("replica process \(index) stopped (\(children[index].process.exit.map { "\($0)" } ?? "still running"))")
        }
        return line.split(separator: " ")
    }

    func start() throws {
        var ports: [String] = []
        for (index, child) in children.enumerated() {
            guard let line = child.output.line(), line.hasPrefix("port "), let port = UInt16(line.dropFirst(5)) else {
                throw ValidationError("replica process \(index) did not start")
            }
            ports.append("\(port)")
        }
        for index in 0..<count { _ = try ask(index, "peers " + ports.joined(separator: " ")) }
    }

    func stop() {
        for child in children { try? child.input.close() }
        let deadline = Date().addingTimeInterval(5)
        for child in children {
            while child.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            if child.process.isRunning {
                child.process.send(SIGKILL)
                child.process.wait()
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    var failure: String? {
        for index in 0..<count {
            guard let words = try? ask(index, "failure") else { return "replica process \(index) stopped" }
            if words.count > 1 { return words.dropFirst().joined(separator: " ") }
        }
        return nil
    }

    func snapshot(reset: Bool) -> (UInt64, Int64) {
        guard let words = try? ask(0, reset ? "snapshot reset" : "snapshot"), words.count == 3, let executed = UInt64(words[1]), let time = Int64(words[2])
        else { return (0, 0) }
        return (executed, time)
    }

    func measureFrom() -> (UInt64, Int64) { snapshot(reset: true) }

    func measureTo() -> (UInt64, Int64, LatencySummary) {
        let (count, time) = snapshot(reset: false)
        let values = ((try? ask(0, "latency")) ?? []).dropFirst().compactMap { Double($0) }
        guard values.count == 4 else { return (count, time, LatencySummary(p50: 0, p90: 0, p99: 0, max: 0)) }
        return (count, time, LatencySummary(p50: values[0], p90: values[1], p99: values[2], max: values[3]))
    }

    func view() -> Int { (0..<count).compactMap { (try? ask($0, "views"))?.last.flatMap { Int($0) } }.max() ?? 0 }

    func cpuSeconds() -> Double { NodeProcesses.cpuSeconds(of: children.map(\.process.pid)) }

    var processCount: Int { count }
}

/// Lines from a pipe, read as they come (blocking).
final class LineReader: @unchecked Sendable {
    private let handle: FileHandle
    private var buffer: [UInt8] = []

    init(_ handle: FileHandle) { self.handle = handle }

    /// The next line without its newline; nil at the end of the stream.
    func line() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let data = handle.availableData
            if data.isEmpty { return nil }
            buffer += data
        }
    }
}

/// One replica of `ordering --processes`, run by the parent bench: it starts, prints its
/// peer port, then answers one line per command on its standard input (`peers P0 P1 …`,
/// `snapshot [reset]`, `latency`, `views`, `failure`) until the input closes.
struct OrderingReplicaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ordering-replica", abstract: "One replica of `ordering --processes` (started by it).", shouldDisplay: false)

    @Option var setup: String
    @Option var index: Int
    @Option var origin: Int64
    @Option var blockSize: Int
    @Option var payloadSize: Int
    @Option var outstanding: Int
    @Option var tickMilliseconds: UInt64

    func run() throws {
        let data = try InputFile.read(setup, byteCountMax: 1 << 22)
        let shared = try JSONFile.decode(OrderingSetup.self, bytes: data, path: setup)
        guard (0..<shared.count).contains(index), blockSize > 0, payloadSize >= 8, outstanding > 0, tickMilliseconds > 0 else {
            throw ValidationError("index 0..<\(shared.count), block size > 0, payload ≥ 8 bytes, outstanding > 0, tick > 0")
        }
        let replica = try shared.decoded().replica(
            index, blockSize: blockSize, payloadSize: payloadSize, outstanding: outstanding, tickMilliseconds: tickMilliseconds, origin: origin)
        try replica.start()
        defer { replica.stop() }
        func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
        say("port \(replica.transport.peerPort)")
        while let line = readLine() {
            let words = line.split(separator: " ")
            switch words.first {
            case "peers":
                let ports = words.dropFirst().compactMap { UInt16($0) }
                let addresses = ports.enumerated().filter { $0.offset != index }.map { PeerAddress(id: "r\($0.offset)", host: "127.0.0.1", port: $0.element) }
                replica.transport.update(peers: addresses, registry: replica.transport.configuration.registry, revokedSerials: [])
                say("ok")
            case "snapshot":
                let (executed, time) = replica.snapshot(reset: words.count > 1)
                say("snapshot \(executed) \(time)")
            case "latency":
                let latency = LatencySummary(replica.histogram.withLock { $0 })
                say("latency \(latency.p50) \(latency.p90) \(latency.p99) \(latency.max)")
            case "views": say("views \(replica.views.withLock { $0 })")
            case "failure": say("failure" + (replica.failure.map { " " + $0 } ?? ""))
            default: say("unknown command")
            }
        }
    }
}
