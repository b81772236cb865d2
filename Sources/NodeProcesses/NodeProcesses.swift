import Foundation
import Glibc
import Ledger
import LightClient
import Node
import Spawning
import Transport

/// Why a testnet of node processes could not be written, started or driven.
public struct NodeProcessesError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A testnet of `calisson-node` processes, started here (by the benchmarks, the chaos
/// driver and the tests) or attached to (a cluster `Cluster/local/up.sh` started): their
/// ports, clients, status, metrics, CPU, memory and disk, and the means to kill, stop and
/// restart them.
public final class NodeProcesses {
    public let directory: String
    public let ids: [String]
    public let ca: Certificate
    public let genesis: Genesis
    public let clientPorts: [UInt16]
    public let metricsPorts: [UInt16?]
    public let dataFiles: [String]
    /// Where each node listens: 127.0.0.1, or its address in its namespace.
    public let hosts: [String]
    /// Network namespaces, for partitions (nil: all on the host's loopback).
    public let network: NamespaceNetwork?
    public private(set) var processes: [ChildProcess] = []
    /// The nodes' current process ids (a restart changes one).
    public private(set) var pids: [Int32]
    /// The directory of the `calisson-node` binary.
    public let bin: String
    public let started: Bool
    let logLevel: String
    /// Per node: another `calisson-node` binary and extra `run` arguments (a Byzantine
    /// node runs the debug build with `--byzantine MODE`). Read at each (re)start.
    public var binaries: [Int: String] = [:]
    public var extraArguments: [Int: [String]] = [:]

    /// How long a new cluster's nodes may take to answer and link to each other.
    static let linkSecondsMax = 90.0

    public var describe: String { started ? "started here, in \(directory)" : "attached to \(directory)" }

    /// A testnet of `count` validators written by `BIN/calisson-node testnet` into
    /// `directory` (a new temporary one by default) with `testnetArguments` besides the
    /// count, directory and ports, then started; returns once every node is linked to all
    /// the others. `namespaces`: each node in a network namespace of its own (root; see
    /// `NamespaceNetwork`). `prepare` may set `binaries` and `extraArguments` before the
    /// nodes start.
    public convenience init(
        starting count: Int, bin: String, directory: String? = nil, basePort: UInt16, testnetArguments: [String] = [],
        logLevel: String = "warning", namespaces: Bool = false, prepare: (NodeProcesses) throws -> Void = { _ in }
    ) throws {
        let directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("calisson-nodes-\(UUID().uuidString)").path
        guard FileManager.default.isExecutableFile(atPath: "\(bin)/calisson-node") else {
            throw NodeProcessesError("\(bin)/calisson-node is not built (swift build -c release --product calisson-node)")
        }
        // In namespaces the nodes listen at addresses the genesis cannot know yet: they find
        // each other by their configurations' peers, not by endpoints in the ledger.
        try runTool(["\(bin)/calisson-node", "testnet", "--validators", "\(count)", "--out", directory, "--base-port", "\(basePort)"] + testnetArguments
            + (namespaces ? ["--no-endpoints"] : []))
        let network = namespaces ? try NamespaceNetwork(nodes: count) : nil
        if let network {
            // Each node listens on its namespace's address, and finds its peers at theirs.
            let configs = try Self.configs(directory)
            let index = Dictionary(uniqueKeysWithValues: configs.enumerated().map { ($0.element.0, $0.offset) })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            for (position, (id, config)) in configs.enumerated() {
                var config = config
                config.host = network.addresses[position]
                config.peers = config.peers.map { .init(id: $0.id, host: index[$0.id].map { network.addresses[$0] } ?? $0.host, port: $0.port) }
                try encoder.encode(config).write(to: URL(fileURLWithPath: "\(directory)/\(id)/config.json"))
            }
        }
        try self.init(directory: directory, bin: bin, logLevel: logLevel, network: network, prepare: prepare)
    }

    /// Starts `calisson-node run` for node `index`, its output appended to DIR/ID.log.
    private func launch(_ index: Int) throws -> ChildProcess {
        let id = ids[index]
        let node = binaries[index] ?? "\(bin)/calisson-node"
        // --exit-with-parent: a tool or test that dies (a crash, SIGKILL) leaves no node running.
        let arguments = [node, "run", "--config", "\(directory)/\(id)/config.json", "--log-level", logLevel, "--exit-with-parent"]
            + (extraArguments[index] ?? [])
        let command = network?.wrap(index, arguments) ?? (executable: node, arguments: Array(arguments.dropFirst()))
        let log = "\(directory)/\(id).log"
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        return try ChildProcess(
            command.executable, command.arguments, output: .descriptor(handle.fileDescriptor), errors: .descriptor(handle.fileDescriptor))
    }

    /// SIGKILL to node `index` (a cluster started here).
    public func kill(_ index: Int) {
        processes[index].send(SIGKILL)
        processes[index].wait()
    }

    /// SIGTERM to node `index`; waits for it to stop.
    public func terminate(_ index: Int) {
        processes[index].send(SIGTERM)
        processes[index].wait()
    }

    /// Node `index`'s exit status once it exits by itself within `seconds`; nil if it still runs.
    public func waitForExit(_ index: Int, within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while processes[index].isRunning {
            guard Date() < deadline else { return nil }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return processes[index].wait().status
    }

    /// Starts node `index` again from its database.
    public func restart(_ index: Int) throws {
        processes[index] = try launch(index)
        pids[index] = processes[index].pid
    }

    public convenience init(attachingTo directory: String) throws {
        // The local cluster scripts keep the node pids next to the testnet (Cluster/local).
        let pidFile = URL(fileURLWithPath: directory).deletingLastPathComponent().appendingPathComponent("pids").path
        let pids = ((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
        try self.init(directory: directory, bin: "", logLevel: "warning", network: nil, attachedPids: pids)
    }

    private init(
        directory: String, bin: String, logLevel: String, network: NamespaceNetwork?, attachedPids: [Int32]? = nil,
        prepare: (NodeProcesses) throws -> Void = { _ in }
    ) throws {
        self.directory = directory
        self.bin = bin
        self.logLevel = logLevel
        self.network = network
        started = attachedPids == nil
        pids = attachedPids ?? []
        let configs = try Self.configs(directory)
        ids = configs.map(\.0)
        clientPorts = configs.map { $0.1.clientPort ?? 0 }
        metricsPorts = configs.map { $0.1.metricsPort }
        hosts = configs.map { $0.1.host ?? "127.0.0.1" }
        dataFiles = ids.map { "\(directory)/\($0)/data/node.db" }
        ca = try Certificate(pem: try String(contentsOfFile: "\(directory)/ca.crt", encoding: .utf8))
        genesis = try JSONFile.decode(GenesisFile.self, path: "\(directory)/genesis.json").validated()
        if started {
            do {
                try prepare(self)
                for index in ids.indices {
                    processes.append(try launch(index))
                    pids.append(processes[index].pid)
                }
            } catch {
                stop()
                throw error
            }
        }
        // Every node answers and is linked to all the others (a loaded machine, as a CI
        // runner beside builds, took over 30 s: the wait ends as soon as they are).
        let deadline = Date().addingTimeInterval(Self.linkSecondsMax)
        for index in ids.indices {
            while (status(index)?.peers.count ?? -1) < ids.count - 1 {
                guard Date() < deadline else {
                    stop(keepDirectory: true)
                    throw NodeProcessesError("\(ids[index]) is not linked to the others after \(Int(Self.linkSecondsMax)) s (logs in \(directory))")
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    public static func configs(_ directory: String) throws -> [(String, NodeConfigFile)] {
        let genesis = try JSONFile.decode(GenesisFile.self, path: "\(directory)/genesis.json")
        return try genesis.validators.map { id in
            (id, try JSONFile.decode(NodeConfigFile.self, path: "\(directory)/\(id)/config.json"))
        }
    }

    public func client(_ index: Int) throws -> TransportClient {
        try TransportClient(host: hosts[index], port: clientPorts[index], ca: ca, chainId: genesis.chainId)
    }

    public func status(_ index: Int) -> NodeStatus? {
        guard let client = try? client(index) else { return nil }
        defer { client.close() }
        guard let bytes = try? client.request(ClientRequest.status.wireBytes), case let .status(status)? = try? ClientResponse(wireBytes: bytes) else {
            return nil
        }
        return status
    }

    /// Node `index`'s /metrics (name without the calisson_ prefix → value); empty when it
    /// has no metrics port or does not answer (it listens on 127.0.0.1 of its namespace).
    public func metrics(_ index: Int) -> [String: Double] {
        guard network == nil, let port = metricsPorts[index], let response = HTTPEndpoint.get(port: port, "/metrics") else { return [:] }
        var values: [String: Double] = [:]
        for line in response.split(separator: "\n") where line.hasPrefix("calisson_") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Double(parts[1]) { values[String(parts[0].dropFirst("calisson_".count))] = value }
        }
        return values
    }

    /// utime + stime of every node, in seconds (/proc/PID/stat).
    public func cpuSeconds() -> Double { Self.cpuSeconds(of: pids) }

    /// utime + stime of these processes, in seconds (/proc/PID/stat); one that is gone counts 0.
    public static func cpuSeconds(of pids: [pid_t]) -> Double {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return pids.reduce(0) { total, pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return total }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state is field 3, utime 14, stime 15 (1-based).
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
            return total + (user + system) / ticks
        }
    }

    /// Peak resident set size of each node, in bytes (VmHWM).
    public func peakRSS() -> [Int] {
        pids.map { pid in
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1_024
        }
    }

    /// Bytes of each node's database (main file and WAL).
    public func diskBytes() -> [Int] {
        dataFiles.map { file in
            ["", "-wal"].reduce(0) { total, suffix in
                total + ((try? FileManager.default.attributesOfItem(atPath: file + suffix)[.size] as? Int) ?? 0)
            }
        }
    }

    /// The nodes started here that are not running (exited on their own), with their status.
    public func unexpectedExits() -> [String] {
        processes.enumerated().filter { !$0.element.isRunning }.map { "\(ids[$0.offset]) (\($0.element.wait()))" }
    }

    /// SIGTERM to every node started here; waits for them.
    public func stopNodes() {
        for process in processes where process.isRunning { process.send(SIGTERM) }
        for process in processes { process.wait() }
    }

    public func stop(keepDirectory: Bool = false) {
        stopNodes()
        processes = []
        network?.tearDown()
        if started && !keepDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }
}
