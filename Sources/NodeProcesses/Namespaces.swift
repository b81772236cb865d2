import Foundation
import Spawning

/// Network namespaces for a chaos run's partitions: one per node, each joined by a veth
/// pair to a bridge in the namespace the driver runs in, with an address in 10.77.0.0/24
/// that exists only inside these namespaces. The driver refuses to build this in the
/// host's initial namespace (`Cluster/chaos/partition.sh` runs it in one of its own), so
/// nothing outside the namespaces it creates is touched. Root only.
///
/// A partition is silent, as a real one: in each node's namespace, packets coming from
/// the far side are dropped on input by a policy rule (`ip rule … from ADDRESS
/// blackhole`, placed before the local table), so connections time out rather than fail
/// at once. Healing deletes the rules.
public final class NamespaceNetwork {
    public let namespaces: [String]
    public let addresses: [String]
    private let bridge = "calisson-br"

    public static func hostAddress(_ index: Int) -> String { "10.77.0.\(index + 1)" }

    /// True when this process shares the network namespace of process 1 (the host's).
    static var inInitialNamespace: Bool {
        let mine = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        let first = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/1/ns/net")
        return mine == nil || mine == first
    }

    public init(nodes: Int) throws {
        guard getuid() == 0 else { throw NodeProcessesError("partitions need root (network namespaces)") }
        guard !Self.inInitialNamespace else {
            throw NodeProcessesError("partitions build a bridge in the driver's network namespace: run the driver in one of its own (Cluster/chaos/partition.sh)")
        }
        let tag = "\(getpid())"
        namespaces = (0..<nodes).map { "calisson-\(tag)-\($0)" }
        addresses = (0..<nodes).map(Self.hostAddress)
        do {
            try Self.ip(["link", "set", "lo", "up"])
            try Self.ip(["link", "add", bridge, "type", "bridge"])
            try Self.ip(["addr", "add", "10.77.0.254/24", "dev", bridge])
            try Self.ip(["link", "set", bridge, "up"])
            for (index, namespace) in namespaces.enumerated() {
                let veth = "calisson-v\(index)"
                try Self.ip(["netns", "add", namespace])
                try Self.ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace])
                try Self.ip(["link", "set", veth, "master", bridge])
                try Self.ip(["link", "set", veth, "up"])
                try Self.ip(["-n", namespace, "addr", "add", "\(addresses[index])/24", "dev", "eth0"])
                try Self.ip(["-n", namespace, "link", "set", "eth0", "up"])
                try Self.ip(["-n", namespace, "link", "set", "lo", "up"])
                // The local table after the partition rules (pref 10), so that they also
                // drop what is addressed to this node.
                try Self.ip(["-n", namespace, "rule", "add", "pref", "100", "lookup", "local"])
                try Self.ip(["-n", namespace, "rule", "del", "pref", "0"])
            }
        } catch {
            tearDown()
            throw error
        }
    }

    /// The command that runs `arguments` inside node `index`'s namespace.
    public func wrap(_ index: Int, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        ("/usr/bin/env", ["ip", "netns", "exec", namespaces[index]] + arguments)
    }

    /// Cuts every link between nodes of different groups (silently, both ways); the
    /// nodes not named in any group stay linked to all.
    public func partition(_ groups: [[Int]]) throws {
        try heal()
        for (a, first) in groups.enumerated() {
            for second in groups[(a + 1)...] {
                for i in first {
                    for j in second {
                        try Self.ip(["-n", namespaces[i], "rule", "add", "pref", "10", "from", addresses[j], "blackhole"])
                        try Self.ip(["-n", namespaces[j], "rule", "add", "pref", "10", "from", addresses[i], "blackhole"])
                    }
                }
            }
        }
    }

    public func heal() throws {
        for namespace in namespaces {
            while (try? Self.ip(["-n", namespace, "rule", "del", "pref", "10"])) != nil {}
        }
    }

    public func tearDown() {
        for namespace in namespaces { _ = try? Self.ip(["netns", "del", namespace]) }
        _ = try? Self.ip(["link", "del", bridge])
    }

    static func ip(_ arguments: [String]) throws { try runTool(["ip"] + arguments) }
}

/// Runs a system tool (`ip`, `mount`) through `env`; its error output, if it fails, is the error.
public func runTool(_ arguments: [String]) throws {
    let child = try ChildProcess("/usr/bin/env", arguments, output: .null, errors: .pipe)
    let problem = String(decoding: child.errors?.readDataToEndOfFile() ?? Data(), as: UTF8.self)
    guard child.wait() == .exited(0) else {
        throw NodeProcessesError("\(arguments.joined(separator: " ")): \(problem.trimmingCharacters(in: .whitespacesAndNewlines))")
    }
}
