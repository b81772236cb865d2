import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Node
import NodeProcesses
import Storage
import Synchronization
import Transport
import Wire

/// Faults on real processes under a steady signed workload, then the checks that nothing
/// acknowledged as final was lost. Mixes: validators killed with SIGKILL at random moments
/// (so also in the middle of a block's SQLite commit) and restarted; network partitions
/// (nodes in network namespaces); a Byzantine validator (a debug build's test-only modes).
struct ChaosCommand: ParsableCommand {
    enum Mix: String, ExpressibleByArgument, CaseIterable {
        case kill, partition, byzantine, disk, latency
    }

    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Inject faults (kills, partitions, a Byzantine validator) under a signed workload; check that nothing final is lost and the nodes agree.",
        discussion: """
            Starts an n-validator cluster on loopback, submits pre-signed Attribute transactions \
            open-loop to the nodes that are up, and follows the finalized blocks (from any node \
            that answers): a transaction is acknowledged final when a node reports it in a final \
            block. Meanwhile it kills at most f = ⌊(n−1)/3⌋ validators at a time with SIGKILL, \
            at random moments, and restarts each after a random delay (--mix kill, the default). \
            After the last fault it \
            measures the time until a new transaction is final, waits until the nodes are at rest \
            (same height and state root, empty mempools, twice in a row), stops the nodes, and opens every database read-only: \
            every acknowledged transaction must be in every node's chain, the state roots must be \
            equal at every height, the citizens' balances must add up to the tokens in \
            circulation, and no node may have stopped but those killed. Exit status 1 otherwise; \
            the cluster's directory (logs, databases) is then kept.

            --mix partition: each node runs in a network namespace of its own (root; run the \
            driver in a namespace of its own: Cluster/chaos/partition.sh); the faults are \
            partitions, held for --down seconds then healed: the primary isolated, one node \
            isolated, the validators split in two halves (no quorum on either side), one link \
            cut. No process is killed.

            --mix byzantine: the first validator (the primary of view 0) runs the debug build of \
            calisson-node (--byzantine-binary) with --byzantine MODE, the modes taken in turn \
            every --mode-period seconds (the node restarted with the next); the other validators \
            are killed and restarted as in the kill mix, one at a time. The checks cover the \
            honest nodes; the load goes to them only.

            --mix disk (root): each node's data directory is a tmpfs of its own (1 GiB). \
            The faults, one node at a time: its disk filled (the tmpfs shrunk to what it uses \
            plus 512 KiB): it must stop by itself with exit status 1 and "the disk is full" in \
            its log, then it is given room and restarted; or its directory read-only at start \
            (the node stopped, the tmpfs remounted read-only, the node started): it must refuse \
            with exit status 1 and "not writable", then the directory is made writable and the \
            node restarted.

            --mix latency: every validator link goes through a relay on 127.0.0.1 that delays \
            what it forwards by --delay ± --jitter milliseconds each way (tc netem is not \
            available here). The faults, held for --down seconds: a latency spike of 200-600 ms \
            on one link, a loss burst (one link holds everything, as TCP does while it \
            retransmits), or every link five times slower.
            """)

    @Option(help: "Validators.") var validators = 4
    @Option(help: "Seconds of faults.") var duration = 60.0
    @Option(help: "Transactions offered per second.") var rate = 40.0
    @Option(help: "Seconds between a restart and the next kill: from, to.") var gap: [Double] = [1, 5]
    @Option(help: "Seconds a killed node stays down: from, to.") var down: [Double] = [0.5, 4]
    @Option(help: "Seconds allowed, after the last fault ends (restart, heal), to finalize again and to converge.") var recovery = 60.0
    @Option(help: "Random seed (default: from the clock; printed).") var seed: UInt64?
    @Option(help: "First port.") var basePort: UInt16 = 7500
    @Option(help: "Write the result as JSON to this file.") var json: String?
    @Option(help: "The faults: kill, partition, byzantine, disk or latency.") var mix: Mix = .kill
    @Option(help: "Latency mix: milliseconds each link delays each way.") var delay = 25.0
    @Option(help: "Latency mix: ± milliseconds of jitter.") var jitter = 10.0
    @Option(help: "Byzantine mix: the calisson-node built with the test-only modes (default: the debug build next to the release one).")
    var byzantineBinary: String?
    @Option(help: "Byzantine mix: the modes, taken in turn.") var byzantineModes: [String] = ["equivocate", "garbage", "replay", "withhold"]
    @Option(help: "Byzantine mix: seconds in each mode.") var modePeriod = 60.0

    func validate() throws {
        guard (4...100).contains(validators) else { throw ValidationError("--validators must be from 4 (f ≥ 1) to 100, not \(validators)") }
        guard gap.count == 2, down.count == 2, gap[0] <= gap[1], down[0] <= down[1], gap[0] >= 0, down[0] >= 0 else {
            throw ValidationError("--gap and --down take two values each, from ≤ to, e.g. --gap 1 --gap 5")
        }
        try checkFinite([(duration, "--duration"), (rate, "--rate"), (recovery, "--recovery"), (modePeriod, "--mode-period"), (delay, "--delay"),
                         (jitter, "--jitter")] + (gap + down).map { ($0, "--gap and --down") })
        guard duration > 0, rate > 0, recovery > 0, modePeriod > 0 else { throw ValidationError("durations and rate must be positive") }
        guard !byzantineModes.isEmpty else { throw ValidationError("--byzantine-modes: at least one") }
    }

    /// The debug calisson-node (the only build with `--byzantine`).
    func faultyNode() throws -> String {
        let bin = Bundle.main.executableURL?.deletingLastPathComponent() ?? URL(fileURLWithPath: ".build/release")
        let path = byzantineBinary ?? (bin.lastPathComponent == "debug" ? bin : bin.deletingLastPathComponent().appendingPathComponent("debug"))
            .appendingPathComponent("calisson-node").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ValidationError("\(path) is not built (swift build --product calisson-node: a debug build has the Byzantine modes)")
        }
        return path
    }

    func run() throws {
        let machine = Machine.describe()
        let seed = self.seed ?? UInt64(Date().timeIntervalSince1970 * 1_000)
        var random = SplitMix64(seed: seed)
        func uniform(_ range: [Double]) -> Double { range[0] + (range[1] - range[0]) * Double(random.next() % 1_000_000) / 1_000_000 }
        // The Byzantine mix's faulty node: the primary of view 0, so that it proposes first.
        let byzantine: Int? = mix == .byzantine ? 0 : nil
        let faulty = mix == .byzantine ? try faultyNode() : nil
        if mix == .disk, getuid() != 0 { throw ValidationError("the disk mix needs root (tmpfs mounts)") }
        var disks: [Disk] = []
        // Latency mix: relays[i][j] carries node i's dial to node j.
        var relays: [[Int: DelayRelay]] = []
        defer { for relay in relays.flatMap(\.values) { relay.close() } }
        let cluster: NodeProcesses
        do {
            cluster = try NodeProcesses.bench(starting: validators, basePort: basePort, namespaces: mix == .partition, configuredPeers: mix == .latency) { cluster in
                if mix == .latency {
                    let configs = try NodeProcesses.configs(cluster.directory)
                    let position = Dictionary(uniqueKeysWithValues: configs.enumerated().map { ($0.element.0, $0.offset) })
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    for (id, config) in configs {
                        var config = config
                        var mine: [Int: DelayRelay] = [:]
                        config.peers = try config.peers.map { peer in
                            guard let j = position[peer.id] else { return peer }
                            let relay = try DelayRelay(target: configs[j].1.peerPort)
                            relay.shape.withLock { $0.delayMilliseconds = delay; $0.jitterMilliseconds = jitter }
                            mine[j] = relay
                            return .init(id: peer.id, host: "127.0.0.1", port: relay.port)
                        }
                        relays.append(mine)
                        try encoder.encode(config).write(to: URL(fileURLWithPath: "\(cluster.directory)/\(id)/config.json"))
                    }
                }
                if let byzantine, let faulty {
                    cluster.binaries[byzantine] = faulty
                    cluster.extraArguments[byzantine] = ["--byzantine", byzantineModes[0], "--byzantine-seed", "\(seed)"]
                }
                if mix == .disk {
                    for file in cluster.dataFiles {
                        let disk = Disk(directory: URL(fileURLWithPath: file).deletingLastPathComponent().path)
                        try disk.mount()
                        disks.append(disk)
                        // The mount hides the database testnet made: a new one on it (a node never makes its own).
                        try NodeMaintenance.createDatabase(file)
                    }
                }
            }
        } catch {
            for disk in disks { disk.unmount() }
            throw error
        }
        var keep = false
        defer {
            cluster.stopNodes()
            // A failed run keeps its tmpfs mounts (the databases are on them).
            if !keep { for disk in disks { disk.unmount() } }
            cluster.stop(keepDirectory: keep)
        }
        let f = (validators - 1) / 3
        let count = Int(rate * (duration + recovery + 10))
        let workload = try Workload(cluster: cluster, count: count, citizens: 500, redeemEvery: 0)
        print("chaos: \(mix) mix, \(validators) validators (f = \(f)), seed \(seed), \(Int(duration)) s of faults, \(Int(rate)) tx/s offered, in \(cluster.directory)")
        let honest = (0..<validators).filter { $0 != byzantine }
        let run = ChaosRun(cluster: cluster, workload: workload, rate: rate, honest: honest)
        run.start()
        func say(_ text: String) {
            print("  \(String(format: "%6.1f", run.elapsed())) s  \(text)")
            fflush(nil)  // one line at a time in a log file too
        }

        var kills = 0, partitions: [String: Int] = [:], modeChanges = 0, diskFaults: [String: Int] = [:]
        var diskProblems: [String] = []
        var noticed = Noticed()
        var lastFault = Date()
        let end = Date().addingTimeInterval(duration)
        var mode = 0, modeSince = Date()
        // Sleeps, switching the Byzantine node to its next mode when one is due (it is
        // stopped and restarted with it), so that modes change on time whatever else runs.
        func pause(_ seconds: Double) throws {
            let until = Date().addingTimeInterval(seconds)
            while Date() < until {
                Thread.sleep(forTimeInterval: min(0.1, max(0, until.timeIntervalSinceNow)))
                guard let byzantine, byzantineModes.count > 1, Date().timeIntervalSince(modeSince) >= modePeriod, Date() < end else { continue }
                mode = (mode + 1) % byzantineModes.count
                cluster.terminate(byzantine)
                cluster.extraArguments[byzantine] = ["--byzantine", byzantineModes[mode], "--byzantine-seed", "\(seed &+ UInt64(mode))"]
                try cluster.restart(byzantine)
                modeSince = Date()
                modeChanges += 1
                lastFault = Date()
                say("\(cluster.ids[byzantine]) Byzantine: \(byzantineModes[mode])")
            }
        }
        while Date() < end {
            try pause(uniform(gap))
            guard Date() < end else { break }
            switch mix {
            case .kill, .byzantine:
                // Kill, stay down, restart; never more than f down at once (one at a time
                // beside a Byzantine node).
                let victims = honest.filter { !run.isDown($0) }
                for _ in 0..<(byzantine == nil ? f : max(1, f - 1)) {
                    let victim = victims[Int(random.next() % UInt64(victims.count))]
                    guard !run.isDown(victim) else { continue }
                    run.setDown(victim, true)
                    noticed.add(cluster.metrics(victim))
                    cluster.kill(victim)
                    kills += 1
                    say("SIGKILL \(cluster.ids[victim])")
                }
                try pause(uniform(down))
                for index in 0..<validators where run.isDown(index) {
                    try cluster.restart(index)
                    run.setDown(index, false)
                    lastFault = Date()
                    say("restarted \(cluster.ids[index])")
                }
            case .disk:
                let victim = Int(random.next() % UInt64(validators))
                let id = cluster.ids[victim], disk = disks[victim]
                let log = "\(cluster.directory)/\(id).log"
                let logBefore = (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0
                func logSince() -> String {
                    guard let handle = FileHandle(forReadingAtPath: log) else { return "" }
                    defer { try? handle.close() }
                    try? handle.seek(toOffset: UInt64(logBefore))
                    return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
                }
                run.setDown(victim, true)
                noticed.add(cluster.metrics(victim))
                if random.next() % 2 == 0 {
                    try disk.resize(bytes: disk.usedBytes() + 512 * 1_024)
                    say("\(id): disk nearly full (\(disk.usedBytes() / 1_024) KiB used, 512 KiB free)")
                    if let status = cluster.waitForExit(victim, within: 120) {
                        diskFaults["disk full", default: 0] += 1
                        let said = logSince()
                        say("\(id) stopped, exit status \(status)")
                        if status != 1 || !said.contains("the disk is full") {
                            diskProblems.append("\(id) on a full disk: exit status \(status), log: \(said.suffix(300))")
                        }
                    } else {
                        diskFaults["disk full, node still running after 120 s", default: 0] += 1
                        diskProblems.append("\(id) still runs 120 s after its disk was filled")
                        cluster.terminate(victim)
                    }
                    try disk.resize(bytes: Disk.sizeBytes)
                } else {
                    cluster.terminate(victim)
                    try disk.remount(readOnly: true)
                    try cluster.restart(victim)
                    if let status = cluster.waitForExit(victim, within: 30) {
                        diskFaults["read-only at start", default: 0] += 1
                        let said = logSince()
                        say("\(id) refused a read-only directory, exit status \(status)")
                        if status != 1 || !said.contains("not writable") {
                            diskProblems.append("\(id) on a read-only directory: exit status \(status), log: \(said.suffix(300))")
                        }
                    } else {
                        diskProblems.append("\(id) runs on a read-only directory")
                        cluster.terminate(victim)
                    }
                    try disk.remount(readOnly: false)
                }
                try pause(uniform(down))
                try cluster.restart(victim)
                run.setDown(victim, false)
                lastFault = Date()
                say("restarted \(id)")
            case .latency:
                var pair = Array(0..<validators)
                for index in stride(from: pair.count - 1, to: 0, by: -1) { pair.swapAt(index, Int(random.next() % UInt64(index + 1))) }
                let link = [relays[pair[0]][pair[1]], relays[pair[1]][pair[0]]].compactMap { $0 }
                let kind: String
                let hold = uniform(down)
                switch random.next() % 3 {
                case 0:
                    let spike = 200 + Double(random.next() % 400)
                    kind = "latency spike"
                    for relay in link { relay.shape.withLock { $0.delayMilliseconds = spike } }
                    say("\(kind): \(Int(spike)) ms on \(cluster.ids[pair[0]]) – \(cluster.ids[pair[1]])")
                case 1:
                    kind = "loss burst"
                    for relay in link { relay.shape.withLock { $0.stalledUntil = Date().addingTimeInterval(hold) } }
                    say("\(kind): \(String(format: "%.1f", hold)) s on \(cluster.ids[pair[0]]) – \(cluster.ids[pair[1]])")
                default:
                    kind = "all links slow"
                    for relay in relays.flatMap(\.values) { relay.shape.withLock { $0.delayMilliseconds = delay * 5 } }
                    say("\(kind): \(Int(delay * 5)) ms each way")
                }
                partitions[kind, default: 0] += 1
                try pause(hold)
                for relay in relays.flatMap(\.values) {
                    relay.shape.withLock { $0.delayMilliseconds = delay; $0.stalledUntil = .distantPast }
                }
                lastFault = Date()
                say("links back to \(Int(delay)) ± \(Int(jitter)) ms")
            case .partition:
                guard let network = cluster.network else { break }
                var shuffled = Array(0..<validators)
                for index in stride(from: shuffled.count - 1, to: 0, by: -1) {
                    shuffled.swapAt(index, Int(random.next() % UInt64(index + 1)))
                }
                let kind: String, groups: [[Int]]
                switch random.next() % 4 {
                case 0:
                    kind = "primary isolated"
                    let primary = run.primary() ?? shuffled[0]
                    groups = [[primary], (0..<validators).filter { $0 != primary }]
                case 1:
                    kind = "one node isolated"
                    groups = [[shuffled[0]], Array(shuffled.dropFirst())]
                case 2:
                    kind = "halves"
                    groups = [Array(shuffled.prefix(validators / 2)), Array(shuffled.dropFirst(validators / 2))]
                default:
                    kind = "one link cut"
                    groups = [[shuffled[0]], [shuffled[1]]]
                }
                try network.partition(groups)
                partitions[kind, default: 0] += 1
                say("partition (\(kind)): \(groups.map { $0.map { cluster.ids[$0] }.joined(separator: ",") }.joined(separator: " | "))")
                try pause(uniform(down))
                try network.heal()
                lastFault = Date()
                say("healed")
            }
        }

        // Recovery: a new transaction final after the last fault, then every node at the same state.
        let recovered = run.finalizesAgain(after: lastFault, within: recovery)
        run.stopSubmitting()
        let convergeStart = Date()
        let converged = run.converge(within: recovery)
        let convergeSeconds = Date().timeIntervalSince(convergeStart)
        run.stop()
        let crashed = cluster.unexpectedExits()
        for index in honest { noticed.add(cluster.metrics(index)) }
        cluster.stopNodes()

        // The checks, on the databases.
        let acknowledged = run.acknowledgedIDs()
        var lost = 0
        var stores: [NodeStore] = []
        for index in honest { stores.append(try NodeStore(file: cluster.dataFiles[index], readOnly: true)) }
        for id in acknowledged where stores.contains(where: { (try? $0.transaction(id)) == nil }) {
            lost += 1
        }
        let heights = stores.map(\.height)
        let common = heights.min() ?? 0
        var divergent = 0
        if common > 0 {
            for height in 1...common {
                let roots = Set(stores.compactMap { try? $0.block(at: height)?.stateRoot })
                if roots.count != 1 { divergent += 1 }
            }
        }
        // Each node's stored state (at a checkpoint of its own: Docs/STORAGE.md) is the one
        // every node recorded at that height.
        for store in stores where store.stateHeight > 0 {
            if Set(stores.compactMap { try? $0.block(at: store.stateHeight)?.stateRoot }) != [store.stateRoot] { divergent += 1 }
        }
        var conservation: [String] = []
        for (index, store) in stores.enumerated() {
            guard let metaBytes = try store.value(StateKeys.meta), let meta = try? LedgerMeta(wireBytes: metaBytes) else {
                conservation.append("\(cluster.ids[honest[index]]): no ledger meta")
                continue
            }
            let held = try workload.accounts.reduce(Amount(0)) { total, account in
                total + ((try store.value(StateKeys.account(account))).flatMap { try? Account(wireBytes: $0) }?.balance ?? 0)
            }
            if held != meta.totals.live { conservation.append("\(cluster.ids[honest[index]]): accounts hold \(held), \(meta.totals.live) in circulation") }
            var issued: Amount = 0
            for id in meta.programmes {
                issued += (try store.value(StateKeys.programme(id))).flatMap { try? Programme(wireBytes: $0) }?.totals.issued ?? 0
            }
            if issued != meta.totals.issued { conservation.append("\(cluster.ids[honest[index]]): programmes issued \(issued), ledger \(meta.totals.issued)") }
        }
        let stats = run.statistics()
        if !partitions.isEmpty {
            print("chaos: \(mix == .latency ? "link faults" : "partitions"): " + partitions.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", "))
        }
        if cluster.network == nil {
            print("chaos: what the checked nodes refused from peers: " + noticed.counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if let byzantine {
            print("chaos: \(cluster.ids[byzantine]) was Byzantine (\(modeChanges + 1) periods, modes in turn: \(byzantineModes.joined(separator: ", "))); the checks cover the \(honest.count) others")
        }
        if !diskFaults.isEmpty {
            print("chaos: disk faults: " + diskFaults.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
                  + "; " + (diskProblems.isEmpty ? "every node stopped with its reason" : "PROBLEMS: " + diskProblems.joined(separator: "; ")))
        }
        let failed = !diskProblems.isEmpty || lost > 0 || divergent > 0 || !conservation.isEmpty || !crashed.isEmpty || recovered == nil || !converged
        print(String(format: "chaos: %d kills; %d submitted, %d admitted, %d acknowledged final; lost %d; divergent heights %d; heights %@",
                     kills, stats.submitted, stats.admitted, acknowledged.count, lost, divergent, heights.map(String.init).joined(separator: "/")))
        print("  longest time without a final block while submitting: \(String(format: "%.1f s", stats.longestStall)); "
              + "finalizing \(recovered.map { String(format: "%.1f s", $0) } ?? "NOT within \(recovery) s") after the last fault ended; "
              + "converged: \(converged ? String(format: "yes, %.1f s after the load stopped", convergeSeconds) : "NO"); conservation: \(conservation.isEmpty ? "holds" : conservation.joined(separator: "; ")); "
              + "unexpected exits: \(crashed.isEmpty ? "none" : crashed.joined(separator: ", "))")
        if let json {
            let object: [String: Any] = [
                "mode": "chaos", "date": machine.date, "commit": machine.commit, "cpu": machine.cpu, "seed": seed,
                "configuration": [
                    "mix": mix.rawValue, "validators": validators, "durationSeconds": duration, "rate": rate, "gap": gap, "down": down,
                    "byzantineModes": byzantine == nil ? [] : byzantineModes, "modePeriodSeconds": modePeriod,
                    "delayMilliseconds": mix == .latency ? delay : 0, "jitterMilliseconds": mix == .latency ? jitter : 0,
                ] as [String: Any],
                "results": [
                    "kills": kills, mix == .latency ? "linkFaults" : "partitions": partitions, "diskFaults": diskFaults, "diskProblems": diskProblems,
                    "byzantineModeChanges": modeChanges, "refusedByCheckedNodes": noticed.counts,
                    "submitted": stats.submitted, "admitted": stats.admitted, "acknowledgedFinal": acknowledged.count,
                    "lost": lost, "divergentHeights": divergent, "heights": heights.map { Int($0) },
                    "secondsToFinalizeAfterLastFault": recovered ?? -1, "converged": converged,
                    "longestSecondsWithoutFinalBlock": stats.longestStall, "secondsToConverge": convergeSeconds,
                    "conservationViolations": conservation, "unexpectedExits": crashed,
                ] as [String: Any],
            ]
            try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]).write(to: URL(fileURLWithPath: json))
        }
        if failed {
            keep = true
            print("chaos: FAILED; logs and databases kept in \(cluster.directory)")
            throw ExitCode.failure
        }
        print("chaos: passed")
    }
}

/// A node's data directory on a tmpfs of its own (the disk mix), resized or remounted.
struct Disk {
    static let sizeBytes = 1_024 * 1_024 * 1_024
    let directory: String

    func mount() throws { try runTool(["mount", "-t", "tmpfs", "-o", "size=\(Self.sizeBytes)", "tmpfs", directory]) }
    func resize(bytes: Int) throws { try runTool(["mount", "-o", "remount,size=\(bytes)", directory]) }
    func remount(readOnly: Bool) throws { try runTool(["mount", "-o", readOnly ? "remount,ro" : "remount,rw", directory]) }
    func unmount() { try? runTool(["umount", "-l", directory]) }

    func usedBytes() -> Int {
        var stats = statvfs()
        guard statvfs(directory, &stats) == 0 else { return 0 }
        return Int(stats.f_blocks - stats.f_bfree) * Int(stats.f_frsize)
    }
}

/// What the checked nodes refused from their peers, summed over their lives (each
/// node's counters are read before it is killed and at the end).
struct Noticed {
    static let names = [
        "consensus_undecodable_total", "consensus_bad_signatures_total", "consensus_rejected_total", "equivocations_total",
        "transport_malformed_frames_total", "transport_refused_total",
    ]
    var counts: [String: Int] = Dictionary(uniqueKeysWithValues: names.map { ($0, 0) })

    mutating func add(_ metrics: [String: Double]) {
        for name in Self.names { counts[name, default: 0] += Int(metrics[name] ?? 0) }
    }
}

/// The workload and the finality follower of a chaos run.
final class ChaosRun: @unchecked Sendable {
    let cluster: NodeProcesses
    let workload: Workload
    let rate: Double
    let started = Date()
    private let state = Mutex(State())
    private let group = DispatchGroup()

    struct State {
        var down: Set<Int> = []
        var submitting = true
        var running = true
        var submitted = 0
        var admitted = 0
        var admittedIDs: Set<Bytes32> = []
        var final: Set<Bytes32> = []
        var lastFinal = Date.distantPast
        /// The longest time between two blocks with our transactions while submitting.
        var longestStall: TimeInterval = 0
        var nextToSubmit = 0
    }

    /// The nodes submitted to, followed and checked (all but a Byzantine one).
    let honest: [Int]

    init(cluster: NodeProcesses, workload: Workload, rate: Double, honest: [Int]) {
        self.cluster = cluster
        self.workload = workload
        self.rate = rate
        self.honest = honest
    }

    /// The primary's index, from the highest view an honest node reports (validators in
    /// genesis order: the consensus order while the set is unchanged).
    func primary() -> Int? {
        let views = honest.compactMap { cluster.status($0)?.view }
        return views.max().map { Int($0 % UInt64(cluster.ids.count)) }
    }

    func elapsed() -> Double { Date().timeIntervalSince(started) }
    func isDown(_ index: Int) -> Bool { state.withLock { $0.down.contains(index) } }
    func setDown(_ index: Int, _ down: Bool) { state.withLock { if down { $0.down.insert(index) } else { $0.down.remove(index) } } }
    func stopSubmitting() { state.withLock { $0.submitting = false } }
    func acknowledgedIDs() -> Set<Bytes32> { state.withLock { $0.final } }
    func statistics() -> (submitted: Int, admitted: Int, longestStall: TimeInterval) {
        state.withLock { ($0.submitted, $0.admitted, $0.longestStall) }
    }

    func start() {
        group.enter()
        Thread { [self] in
            defer { group.leave() }
            submit()
        }.start()
        group.enter()
        Thread { [self] in
            defer { group.leave() }
            follow()
        }.start()
    }

    func stop() {
        state.withLock { $0.running = false; $0.submitting = false }
        group.wait()
    }

    /// Open loop over the nodes that are up, one connection per node, reopened after a kill.
    private func submit() {
        var clients: [Int: TransportClient] = [:]
        var turn = 0
        while state.withLock({ $0.submitting && $0.running }) {
            let item = state.withLock { shared -> Int? in
                guard shared.nextToSubmit < workload.signed.count else { return nil }
                shared.nextToSubmit += 1
                return shared.nextToSubmit - 1
            }
            guard let item else { break }
            let due = started.addingTimeInterval(Double(item) / rate)
            if due > Date() { Thread.sleep(until: due) }
            let up = honest.filter { !isDown($0) }
            guard !up.isEmpty else { continue }
            let node = up[turn % up.count]
            turn += 1
            state.withLock { $0.submitted += 1 }
            if clients[node] == nil { clients[node] = try? cluster.client(node) }
            guard let client = clients[node],
                let reply = try? client.request(ClientRequest.submit(workload.signed[item]).wireBytes, timeoutMilliseconds: 2_000),
                case .admitted? = try? ClientResponse(wireBytes: reply)
            else {
                clients[node]?.close()
                clients[node] = nil
                continue
            }
            state.withLock { $0.admitted += 1; $0.admittedIDs.insert(workload.ids[item]) }
        }
        for client in clients.values { client.close() }
    }

    /// Finalized blocks from any node that answers; every id seen there is acknowledged.
    private func follow() {
        var next: UInt64 = 1
        var turn = 0, node = 0
        var client: TransportClient?
        let ours = Set(workload.ids)
        while state.withLock({ $0.running }) {
            if client == nil {
                turn += 1
                node = honest[turn % honest.count]
                if isDown(node) { continue }
                client = try? cluster.client(node)
                if client == nil { Thread.sleep(forTimeInterval: 0.1); continue }
            }
            guard let bytes = try? client!.request(ClientRequest.blocks(from: next, limit: 64, waitMilliseconds: 500).wireBytes, timeoutMilliseconds: 3_000),
                case let .blocks(blocks)? = try? ClientResponse(wireBytes: bytes)
            else {
                client?.close()
                client = nil
                continue
            }
            for block in blocks {
                guard let reply = try? client!.request(ClientRequest.blockTransactions(block.height).wireBytes, timeoutMilliseconds: 3_000),
                    case let .blockTransactions(ids?)? = try? ClientResponse(wireBytes: reply)
                else {
                    client?.close()
                    client = nil
                    break
                }
                state.withLock { shared in
                    for id in ids where ours.contains(id) { shared.final.insert(id) }
                    guard !ids.isEmpty else { return }
                    let now = Date()
                    if shared.submitting, shared.lastFinal != .distantPast {
                        shared.longestStall = max(shared.longestStall, now.timeIntervalSince(shared.lastFinal))
                    }
                    shared.lastFinal = now
                }
                next = block.height.saturatingAdding(1)
            }
        }
        client?.close()
    }

    /// Seconds from `moment` until a block with our transactions is final, if within the bound.
    func finalizesAgain(after moment: Date, within seconds: Double) -> Double? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let last = state.withLock { $0.lastFinal }
            if last > moment { return last.timeIntervalSince(moment) }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return nil
    }

    /// Waits until the nodes are at rest: every node at the same height and state root
    /// with an empty mempool (a transaction leaves it when its block is executed), twice
    /// in a row half a second apart. Equal heights alone can be a moment between a block's
    /// commit at one node and at the others: stopped then, the others would lack a
    /// block that the follower saw final.
    func converge(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var previous: [String]?
        while Date() < deadline {
            let states = honest.map { index in
                cluster.status(index).map { $0.mempool == 0 ? "\($0.height) \($0.stateRoot.hex)" : "busy" } ?? "?"
            }
            let atRest = Set(states).count == 1 && !states.contains("?") && !states.contains("busy")
            if atRest, states == previous { return true }
            previous = atRest ? states : nil
            Thread.sleep(forTimeInterval: atRest ? 0.5 : 0.2)
        }
        return false
    }
}
