import ArgumentParser
import CalissonCrypto
import Foundation
import Gateway
import Glibc
import Histogram
import Ledger
import LightClient
import NodeProcesses
import Synchronization
import Transport
import Wire

/// The gateway's cost, measured against the native client protocol in the same run.
struct GatewayBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Submissions through calisson-gateway against the native client protocol, side by side; verified reads' latency under load.",
        discussion: """
            Starts an n-validator cluster on loopback (release binaries next to this one) and a \
            gateway in this process in front of every node. Pre-signs the workload (not timed). \
            Then, in alternating rounds (the first side of a round second in the next), submits --transactions signed attributions closed-loop \
            (at most --outstanding submitted and not yet final) through the native client \
            protocol (TLS, one connection per thread to the nodes in turn) and the same number \
            through the gateway (POST /v1/transactions?wait=false over HTTP/1.1 keep-alive, one \
            connection per thread; with --batch N, N transactions per request: a batch through \
            the gateway, N requests pipelined natively; with --wait, each waits for finality: ?wait=true, natively \
            waitFinal), and reports finalized transactions per second of each and \
            their ratio (medians over the rounds; finality read from the first node's \
            finalized blocks). Then, with the cluster under --load of the native rate (open \
            loop, native), reads an account's certified state through the gateway at \
            --read-rate per second for --read-seconds and reports the latency percentiles \
            (from each read's scheduled time, so a slow read delays none unmeasured), and \
            the share of the nodes' consensus ticks late by over 20 and 50 ms meanwhile \
            (their loops' stalls, which a read landing in one waits for).
            """)

    @Option(help: "Validators.") var validators = 4
    @Option(help: "Transactions per phase and round.") var transactions = 4_000
    @Option(help: "Rounds of each side, alternated.") var rounds = 2
    @Option(help: "Closed loop: transactions submitted but not yet final.") var outstanding = 800
    @Option(help: "Submitting threads (connections) per side.") var connections = 8
    @Option(help: "Transactions per request: a batch through the gateway (POST /v1/transaction-batches), pipelined natively (1: one at a time, at most 256).")
    var batch = 1
    @Flag(help: "Each submission waits for its transaction's finality before the next (POST ?wait=true through the gateway; natively a submission then waitFinal on the same connection). One transaction per request only.")
    var wait = false
    @Option(help: "Verified reads per second through the gateway.") var readRate = 200.0
    @Option(help: "Seconds of reads.") var readSeconds = 20.0
    @Option(help: "Cluster load during the reads, as a fraction of the native rate measured.") var load = 0.5
    @Flag(help: "Submit the load during the reads through the gateway (POST /v1/transactions?wait=false), beside the reads, rather than natively.")
    var loadThroughGateway = false
    @Option(help: "Reading connections (each reads in turn at its scheduled times: enough that a slow read delays few others).")
    var readConnections = 32
    @Option(help: "The nodes' blockWaitMilliseconds (absent: the node's default).") var blockWaitMs: UInt64?
    @Option(help: "The gateway's verified copy of the state, in tree pages at most (0: every read asks a node), as calisson-gateway run's option.")
    var mirrorPagesMax = StateMirror.pagesMaxDefault
    @Option(help: "First port of the cluster.") var basePort: UInt16 = 7400
    @Option(help: "Write the figures as JSON to this file.") var json: String?

    func validate() throws {
        try checkCounts([
            (validators, "--validators", 1...100), (transactions, "--transactions", 1...10_000_000), (rounds, "--rounds", 1...1_000),
            (outstanding, "--outstanding", 1...10_000_000), (connections, "--connections", 1...1_024), (readConnections, "--read-connections", 1...1_024),
            (Int(clamping: blockWaitMs ?? 0), "--block-wait-ms", 0...1_000),
        ])
        guard (1...256).contains(batch) else { throw ValidationError("--batch is from 1 to 256") }
        guard !wait || batch == 1 else { throw ValidationError("--wait submits one transaction per request: --batch 1") }
        try checkFinite([(readRate, "--read-rate"), (readSeconds, "--read-seconds"), (load, "--load")])
        guard readRate >= 1, load <= 1 else { throw ValidationError("--read-rate is at least 1, --load at most 1") }
        guard (0...StateMirror.pagesMaxLimit).contains(mirrorPagesMax) else { throw ValidationError("--mirror-pages-max is from 0 to \(StateMirror.pagesMaxLimit)") }
    }

    func run() throws {
        // As calisson-gateway runs (the gateway is measured as it is deployed).
        guard GatewayServer.runTasksOnEventLoops() else { throw ValidationError("the gateway's event loops could not become the tasks' executor") }
        let machine = Machine.describe()
        let cluster = try NodeProcesses.bench(starting: validators, basePort: basePort, blockWaitMilliseconds: blockWaitMs)
        defer { cluster.stop() }
        // Signed for the reads and the load's 2 s head start, at up to `loadNativeRateMax`: a
        // load that ran out would leave the last reads unloaded (`readsUnderLoad` says so).
        let loadCount = Int(min(1_000_000, Self.loadNativeRateMax * load * (readSeconds + 4)))
        let workload = try Workload(cluster: cluster, count: 200 + 2 * rounds * transactions + loadCount, citizens: 2_000, redeemEvery: 0)
        print("gateway bench: \(cluster.ids.count) validators, \(workload.signed.count) transactions pre-signed")

        let key = APIKey.generate(name: "bench", scopes: [.read, .submit])
        let pool = NodePool(
            nodes: cluster.clientPorts.indices.map { NodeAddress(host: cluster.hosts[$0], port: cluster.clientPorts[$0]) }, ca: cluster.ca,
            genesis: cluster.genesis, lagMax: 64, mirrorPagesMax: mirrorPagesMax)
        var configuration = GatewayConfiguration(
            pool: pool,
            keys: [{ var entry = key.entry; entry.requestsPerSecond = 1_000_000; return entry }()])
        configuration.port = 0
        let server = try GatewayServer(configuration: configuration)
        let serving = Task { try await server.run() }
        defer { serving.cancel() }
        let started = Date()
        while server.port == nil, Date().timeIntervalSince(started) < 60 { Thread.sleep(forTimeInterval: 0.05) }
        guard let port = server.port else { throw ValidationError("the gateway did not start") }

        // Unloaded latencies, one request at a time: the HTTP stack alone, then a submission.
        let probe = try HTTPConnection(port: port)
        var offset = 0
        for (label, path, count) in [("GET /health (no node asked)", "/health", 200), ("POST /v1/transactions?wait=false", "/v1/transactions?wait=false", 200)] {
            let began = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<count {
                if path == "/health" {
                    _ = try probe.request("GET", path, key: key.secret)
                } else {
                    _ = try probe.request("POST", path, key: key.secret, body: Array("{\"transaction\":\"\(Hex.encode(workload.signed[offset]))\"}".utf8))
                    offset += 1
                }
            }
            print(String(format: "unloaded, one at a time: %@ %.2f ms", label, Double(DispatchTime.now().uptimeNanoseconds - began) / Double(count) / 1e6))
        }
        var native: [Double] = [], gateway: [Double] = []
        for round in 1...rounds {
            // ABBA: the cluster's state grows with every phase, and each costs a little more
            // than the one before; the side that went first goes second the next round.
            for side in round % 2 == 1 ? ["native", "gateway"] : ["gateway", "native"] {
                let slice = offset..<(offset + transactions)
                offset += transactions
                let trafficBefore = pool.nodeTraffic
                let rate = try closedLoop(cluster: cluster, workload: workload, slice: slice, port: side == "gateway" ? port : nil, secret: key.secret)
                if side == "gateway" {
                    let requests = pool.nodeTraffic.requests - trafficBefore.requests, writes = pool.nodeTraffic.writes - trafficBefore.writes
                    print(String(format: "  the gateway's requests to the nodes: %d in %d writes (%.2f a write)", requests, writes, Double(requests) / Double(max(1, writes))))
                }
                print(String(format: "round %d, %@: %.0f finalized tx/s", round, side, rate))
                if side == "native" { native.append(rate) } else { gateway.append(rate) }
            }
        }
        let nativeRate = Self.median(native), gatewayRate = Self.median(gateway)
        print(String(format: "submissions: gateway %.0f tx/s, native %.0f tx/s: ratio %.2f (goal: at least 0.8)", gatewayRate, nativeRate, gatewayRate / nativeRate))

        let mirroredBefore = pool.mirrorReads
        var reads = try readsUnderLoad(
            cluster: cluster, workload: workload, loadSlice: offset..<workload.signed.count, loadRate: load * nativeRate, port: port, secret: key.secret)
        reads.mirrored = pool.mirrorReads - mirroredBefore
        print(String(format: "verified reads at %.0f/s with the cluster at %.0f tx/s (%.0f%% of native%@): p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d reads, %d failed (goal: p99 under 20 ms)",
                     readRate, reads.loadRate, load * 100, loadThroughGateway ? ", through the gateway" : "", reads.p50, reads.p99, reads.max, reads.count, reads.failed))
        if let ranOut = reads.loadRanOutAfter {
            print(String(format: "  warning: the load's %d transactions ran out %.1f s into the %.1f s of reads: the reads after it were not under load",
                         workload.signed.count - offset, ranOut, readSeconds))
        }
        print(String(format: "  cores used meanwhile: nodes %.2f, this process %.2f; largest mempool at the end %.0f", reads.nodeCores, reads.processCores, reads.mempool))
        print(String(format: "  answers behind the newest certified checkpoint known: %.1f blocks on average", reads.behindBlocks))
        if let mirror = pool.mirror {
            let counts = mirror.counts
            print("  answered from the gateway's verified copy: \(reads.mirrored) of \(reads.count) reads (copy: \(counts.pages) pages, \(counts.values) values, "
                  + "\(counts.syncs) syncs, \(counts.pagesFetched) pages and \(counts.valuesFetched) values fetched, \(counts.failures) failed syncs)")
        } else {
            print("  every read asked a node (--mirror-pages-max 0)")
        }
        print(String(format: "  the nodes' loops meanwhile: %.1f%% of their ticks late by over 20 ms, %.1f%% by over 50 ms (of %.0f)",
                     reads.lateOver20 * 100, reads.lateOver50 * 100, reads.ticks))
        if let json {
            let report: [String: Any] = [
                "machine": ["cpu": machine.cpu, "commit": machine.commit, "date": machine.date],
                "configuration": ["validators": validators, "transactions": transactions, "rounds": rounds, "outstanding": outstanding,
                                  "connections": connections, "batch": batch, "readRate": readRate, "readSeconds": readSeconds, "load": load,
                                  "loadThroughGateway": loadThroughGateway],
                "native": native, "gateway": gateway, "ratio": gatewayRate / nativeRate,
                "reads": ["p50Milliseconds": reads.p50, "p99Milliseconds": reads.p99, "maxMilliseconds": reads.max, "count": reads.count,
                          "failed": reads.failed, "loadTransactionsPerSecond": reads.loadRate, "loadRanOutAfterSeconds": reads.loadRanOutAfter ?? -1,
                          "nodeCores": reads.nodeCores,
                          "processCores": reads.processCores, "mempoolAtEnd": reads.mempool, "nodeTicks": reads.ticks,
                          "nodeTicksLateOver20Milliseconds": reads.lateOver20, "nodeTicksLateOver50Milliseconds": reads.lateOver50,
                          "answeredFromCopy": reads.mirrored, "mirrorPagesMax": mirrorPagesMax, "behindBlocksAverage": reads.behindBlocks],
            ]
            try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        }
    }

    /// user + system CPU of this process (the gateway, the submitting and reading clients).
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted(), middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// Finalized transactions per second for `slice`, submitted closed-loop natively
    /// (`port` nil) or through the gateway.
    func closedLoop(cluster: NodeProcesses, workload: Workload, slice: Range<Int>, port: Int?, secret: String) throws -> Double {
        let tracker = try FinalityTracker(cluster: cluster, ids: Set(slice.map { workload.ids[$0] }))
        defer { tracker.stop() }
        let next = Atomic<Int>(slice.lowerBound), submitted = Atomic<Int>(0), failures = Atomic<Int>(0), busy = Atomic<Int>(0), retried = Atomic<Int>(0)
        let firstFailure = Mutex<String?>(nil)
        let clients = port == nil ? try (0..<connections).map { try cluster.client($0 % cluster.ids.count) } : []
        defer { for client in clients { client.close() } }
        let start = Date()
        let cpuBefore = (own: Self.processCPUSeconds(), nodes: cluster.cpuSeconds())
        func counters() -> (blocks: Double, admitted: Double, refused: Double) {
            let all = cluster.ids.indices.map { cluster.metrics($0) }
            return (all[0]["blocks_executed_total"] ?? 0, all.reduce(0) { $0 + ($1["admitted_total"] ?? 0) },
                    all.reduce(0) { $0 + ($1["admission_refused_total"] ?? 0) })
        }
        let countersBefore = counters()
        let threads = (0..<connections).map { thread in
            Thread {
                // Submits signed transactions (one request, or a batch): how many were not taken.
                let submit: ([[UInt8]]) -> Int
                if let port {
                    guard let http = try? HTTPConnection(port: port) else { failures.add(1, ordering: .relaxed); return }
                    submit = { [batch] items in
                        // Told the gateway is busy (503), a client tries again (Retry-After is a
                        // second; a closed loop keeps it short): counted, not failed.
                        func send(_ path: String, _ body: [UInt8]) -> (status: Int, body: [UInt8])? {
                            while true {
                                guard let answer = try? http.request("POST", path, key: secret, body: body) else { return nil }
                                // (Not past the measure's end: a gateway busy for good ends it.)
                                guard answer.status == 503, next.load(ordering: .relaxed) < Int.max / 2 else { return answer }
                                retried.add(1, ordering: .relaxed)
                                usleep(10_000)
                            }
                        }
                        guard batch > 1 else {
                            let body = Array("{\"transaction\":\"\(Hex.encode(items[0]))\"}".utf8)
                            let answer = send("/v1/transactions?wait=\(wait)", body)
                            let status = answer?.status ?? 0
                            guard status == 200 || (!wait && status == 202) else {
                                firstFailure.withLock { $0 = $0 ?? "HTTP \(status): \(String(decoding: answer?.body.prefix(300) ?? [], as: UTF8.self))" }
                                return 1
                            }
                            return 0
                        }
                        let body = Array("{\"transactions\":[\(items.map { "\"\(Hex.encode($0))\"" }.joined(separator: ","))]}".utf8)
                        guard let answer = send("/v1/transaction-batches", body), answer.status == 200 else {
                            firstFailure.withLock { $0 = $0 ?? "a batch not taken" }
                            return items.count
                        }
                        let states = (try? JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])?["transactions"] as? [[String: Any]] ?? []
                        return items.count - states.count { $0["status"] as? String == "pending" || $0["status"] as? String == "final" }
                    }
                } else {
                    let client = clients[thread]
                    submit = { [wait] items in
                        if wait {
                            let id = SignedTransaction.idTag.hash(items[0])
                            guard let admitted = try? client.request(ClientRequest.submit(items[0]).wireBytes),
                                case .admitted = try? ClientResponse(wireBytes: admitted),
                                let answer = try? client.request(ClientRequest.waitFinal(id, timeoutMilliseconds: 30_000).wireBytes, timeoutMilliseconds: 35_000),
                                case .transaction(_?) = try? ClientResponse(wireBytes: answer)
                            else {
                                firstFailure.withLock { $0 = $0 ?? "natively: not admitted, or not final within 30 s" }
                                return 1
                            }
                            return 0
                        }
                        // Pipelined on the connection, in chunks under the node's cap of requests in flight.
                        return stride(from: 0, to: items.count, by: 32).reduce(0) { failed, start in
                            let chunk = items[start..<min(start + 32, items.count)]
                            return failed + client.pipeline(chunk.map { ClientRequest.submit($0).wireBytes }).count { result in
                                guard let answer = try? result.get(), case .admitted = try? ClientResponse(wireBytes: answer) else {
                                    firstFailure.withLock { $0 = $0 ?? "natively: \((try? result.get()).flatMap { try? ClientResponse(wireBytes: $0) }.map { "\($0)" } ?? "no answer")" }
                                    return true
                                }
                                return false
                            }
                        }
                    }
                }
                while true {
                    let first = next.add(batch, ordering: .relaxed).oldValue
                    guard first < slice.upperBound else { return }
                    let items = Array(workload.signed[first..<min(first + batch, slice.upperBound)])
                    while submitted.load(ordering: .relaxed) - tracker.finalCount >= outstanding, next.load(ordering: .relaxed) < Int.max / 2 { usleep(200) }
                    let sent = DispatchTime.now().uptimeNanoseconds
                    let failed = submit(items)
                    failures.add(failed, ordering: .relaxed)
                    busy.add(Int(clamping: DispatchTime.now().uptimeNanoseconds - sent), ordering: .relaxed)
                    // A transaction not taken never becomes final: it does not count as outstanding.
                    submitted.add(items.count - failed, ordering: .relaxed)
                }
            }
        }
        for thread in threads { thread.start() }
        // A submission not taken (neither admitted nor busy) ends the measure: the rate
        // would count fewer transactions than it says.
        var waited = 0
        while !tracker.waitAll(seconds: 1) {
            waited += 1
            let failed = failures.load(ordering: .relaxed)
            guard failed == 0, waited < 300 else {
                next.store(Int.max / 2, ordering: .relaxed)  // the threads stop
                for thread in threads { while !thread.isFinished { usleep(10_000) } }
                throw ValidationError("\(tracker.finalCount) of \(slice.count) final after \(waited) s; \(failures.load(ordering: .relaxed)) submissions not taken"
                                      + (firstFailure.withLock { $0 }.map { ", the first: \($0)" } ?? ""))
            }
        }
        let seconds = tracker.lastFinal.timeIntervalSince(start)
        let own = Self.processCPUSeconds() - cpuBefore.own, nodes = cluster.cpuSeconds() - cpuBefore.nodes
        let after = counters()
        print(String(format: "  blocks %.0f (%.1f transactions each), admitted %.0f, refused at admission %.0f", after.blocks - countersBefore.blocks,
                     Double(slice.count) / max(1, after.blocks - countersBefore.blocks), after.admitted - countersBefore.admitted,
                     after.refused - countersBefore.refused))
        print(String(format: "  %@: %.2f ms per request of %d on average, %d failed, %d answered busy and sent again; CPU per 1,000 transactions: nodes %.2f s, this process %.2f s",
                     port == nil ? "native" : "gateway", Double(busy.load(ordering: .relaxed)) / Double(slice.count) * Double(batch) / 1e6, batch,
                     failures.load(ordering: .relaxed), retried.load(ordering: .relaxed), nodes * 1_000 / Double(slice.count), own * 1_000 / Double(slice.count)))
        return Double(slice.count) / seconds
    }

    /// The native rate the load's transactions are signed for: twice and a half the fastest
    /// measured on this machine class (3,150 tx/s). Before, 3,000 a second: at half of a
    /// native rate above it, the load ran out before the reads ended, and the last seconds
    /// of reads, counted as under load, were not.
    static let loadNativeRateMax = 8_000.0

    struct Reads {
        var p50 = 0.0, p99 = 0.0, max = 0.0
        var count = 0, failed = 0
        var loadRate = 0.0
        /// Seconds after the reads began when the load's transactions ran out, if they did
        /// before the reads ended (the reads after it were not under load).
        var loadRanOutAfter: Double?
        /// CPU cores used during the reads: the nodes, this process (gateway and clients).
        var nodeCores = 0.0, processCores = 0.0
        /// The largest mempool of a node at the end (a load past what the cluster orders grows it).
        var mempool = 0.0
        /// The nodes' consensus ticks during the reads, and the shares of them late by over
        /// 20 and 50 ms (`loop_lag_seconds`: each a stretch when a node's loop, which also
        /// answers the client port, answered nothing).
        var ticks = 0.0, lateOver20 = 0.0, lateOver50 = 0.0
        /// Reads the gateway answered from its verified copy of the state.
        var mirrored = 0
        /// Blocks behind the newest certified checkpoint the gateway knew, per answer on average.
        var behindBlocks = 0.0
    }

    /// The nodes' ticks so far: all of them, and those at most 20 and 50 ms late.
    static func ticks(_ cluster: NodeProcesses) -> (all: Double, within20: Double, within50: Double) {
        var all = 0.0, within20 = 0.0, within50 = 0.0
        for index in cluster.ids.indices {
            let metrics = cluster.metrics(index)
            all += metrics["loop_lag_seconds_count"] ?? 0
            within20 += metrics["loop_lag_seconds_bucket{le=\"0.02\"}"] ?? 0
            within50 += metrics["loop_lag_seconds_bucket{le=\"0.05\"}"] ?? 0
        }
        return (all, within20, within50)
    }

    func readsUnderLoad(cluster: NodeProcesses, workload: Workload, loadSlice: Range<Int>, loadRate: Double, port: Int, secret: String) throws -> Reads {
        let stop = Atomic<Bool>(false)
        let loaded = Atomic<Int>(0)
        let ranOut = Mutex<Date?>(nil)
        // Load: open loop at loadRate, one thread per node (a submission waits for its
        // admission: one thread alone could not keep the rate), natively or through the
        // gateway (then on the gateway's node connections, beside the reads).
        let clients = cluster.ids.indices.compactMap { try? cluster.client($0) }
        defer { for client in clients { client.close() } }
        let loadStart = Date()
        for thread in clients.indices where loadRate > 0 {
            Thread { [loadThroughGateway] in
                let submit: ([UInt8]) -> Void
                if loadThroughGateway {
                    guard let http = try? HTTPConnection(port: port) else { return }
                    submit = { transaction in
                        let body = Array("{\"transaction\":\"\(Hex.encode(transaction))\"}".utf8)
                        _ = try? http.request("POST", "/v1/transactions?wait=false", key: secret, body: body)
                    }
                } else {
                    submit = { transaction in _ = try? clients[thread].request(ClientRequest.submit(transaction).wireBytes) }
                }
                for n in stride(from: thread, to: loadSlice.count, by: clients.count) {
                    if stop.load(ordering: .relaxed) { return }
                    let due = loadStart.addingTimeInterval(Double(n) / loadRate)
                    let wait = due.timeIntervalSinceNow
                    if wait > 0 { usleep(useconds_t(min(wait, 1) * 1_000_000)) }
                    submit(workload.signed[loadSlice.lowerBound + n])
                    loaded.add(1, ordering: .relaxed)
                }
                if !stop.load(ordering: .relaxed) { ranOut.withLock { $0 = $0 ?? Date() } }
            }.start()
        }
        Thread.sleep(forTimeInterval: 2)  // the load is running

        let readers = readConnections
        let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
        let failed = Atomic<Int>(0), count = Atomic<Int>(0), behindTotal = Atomic<Int>(0)
        let accounts = workload.accounts.prefix(200).map { $0.bytes.hex }
        let start = Date().addingTimeInterval(0.2)
        let cpuBefore = (own: Self.processCPUSeconds(), nodes: cluster.cpuSeconds())
        let ticksBefore = Self.ticks(cluster)
        let total = Int(readRate * readSeconds)
        let group = DispatchGroup()
        for reader in 0..<readers {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let http = try? HTTPConnection(port: port) else { return }
                for n in stride(from: reader, to: total, by: readers) {
                    let due = start.addingTimeInterval(Double(n) / readRate)
                    let wait = due.timeIntervalSinceNow
                    if wait > 0 { usleep(useconds_t(wait * 1_000_000)) }
                    let answer = try? http.request("GET", "/v1/accounts/\(accounts[n % accounts.count])", key: secret)
                    let micros = UInt64(clamping: Int64(Date().timeIntervalSince(due) * 1_000_000))
                    if answer?.status == 200 { _ = histogram.withLock { $0.record(micros) } } else { failed.add(1, ordering: .relaxed) }
                    // How far behind the newest certified checkpoint known each answer was.
                    if let body = answer?.body, let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                        let behind = (object["verification"] as? [String: Any])?["behindBlocks"] as? Int
                    {
                        behindTotal.add(behind, ordering: .relaxed)
                    }
                    count.add(1, ordering: .relaxed)
                }
            }.start()
        }
        group.wait()
        stop.store(true, ordering: .relaxed)
        let seconds = Date().timeIntervalSince(start)
        var reads = histogram.withLock { histogram in
            Reads(
                p50: Double(histogram.valueAtPercentile(50)) / 1_000, p99: Double(histogram.valueAtPercentile(99)) / 1_000,
                max: Double(histogram.max) / 1_000, count: count.load(ordering: .relaxed), failed: failed.load(ordering: .relaxed),
                loadRate: Double(loaded.load(ordering: .relaxed)) / Date().timeIntervalSince(loadStart))
        }
        reads.loadRanOutAfter = ranOut.withLock { $0 }.map { max(0, $0.timeIntervalSince(start)) }
        reads.behindBlocks = Double(behindTotal.load(ordering: .relaxed)) / Double(max(1, count.load(ordering: .relaxed)))
        reads.nodeCores = (cluster.cpuSeconds() - cpuBefore.nodes) / seconds
        reads.processCores = (Self.processCPUSeconds() - cpuBefore.own) / seconds
        reads.mempool = cluster.ids.indices.map { cluster.metrics($0)["mempool_transactions"] ?? 0 }.max() ?? 0
        let ticksAfter = Self.ticks(cluster)
        reads.ticks = ticksAfter.all - ticksBefore.all
        if reads.ticks > 0 {
            reads.lateOver20 = (reads.ticks - (ticksAfter.within20 - ticksBefore.within20)) / reads.ticks
            reads.lateOver50 = (reads.ticks - (ticksAfter.within50 - ticksBefore.within50)) / reads.ticks
        }
        return reads
    }
}

/// Follows the first node's finalized blocks and counts the transactions of `ids` found final.
final class FinalityTracker: @unchecked Sendable {
    private let ids: Set<Bytes32>
    private let state = Mutex<(count: Int, last: Date)>((0, Date()))
    private let stopped = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)

    init(cluster: NodeProcesses, ids: Set<Bytes32>) throws {
        self.ids = ids
        let client = try cluster.client(0)
        guard let status = cluster.status(0) else { throw ValidationError("the first node does not answer") }
        let ids = ids
        Thread { [self] in
            defer { client.close() }
            var height = status.height.saturatingAdding(1)
            var found = 0
            while !stopped.load(ordering: .relaxed) {
                guard let bytes = try? client.request(ClientRequest.blocks(from: height, limit: 256, waitMilliseconds: 500).wireBytes, timeoutMilliseconds: 5_000),
                    case let .blocks(blocks)? = try? ClientResponse(wireBytes: bytes)
                else { continue }
                for block in blocks {
                    guard let answer = try? client.request(ClientRequest.blockTransactions(block.height).wireBytes),
                        case let .blockTransactions(list?)? = try? ClientResponse(wireBytes: answer)
                    else { continue }
                    found += list.filter(ids.contains).count
                    state.withLock { $0 = (found, Date()) }
                    height = block.height.saturatingAdding(1)
                }
                if found >= ids.count {
                    done.signal()
                    return
                }
            }
        }.start()
    }

    var finalCount: Int { state.withLock { $0.count } }
    var lastFinal: Date { state.withLock { $0.last } }

    func waitAll(seconds: Double) -> Bool { done.wait(timeout: .now() + seconds) == .success }
    func stop() { stopped.store(true, ordering: .relaxed) }
}

/// One HTTP/1.1 keep-alive connection to the gateway on loopback: a request, then its
/// answer (`Content-Length` bodies, which the gateway's JSON answers have).
final class HTTPConnection {
    private let socket: Int32
    private var buffer: [UInt8] = []

    init(port: Int) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw ValidationError("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(socket)
            throw ValidationError("connect to the gateway: errno \(errno)")
        }
        var one: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        // A gateway that never answers fails the request (past its 30 s wait for finality).
        var wait = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(socket) }

    func request(_ method: String, _ path: String, key: String, body: [UInt8] = []) throws -> (status: Int, body: [UInt8]) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\n"
        if !body.isEmpty { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let message = Array((head + "\r\n").utf8) + body
        var sent = 0
        while sent < message.count {
            let count = message[sent...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ValidationError("send: errno \(errno)") }
            sent += count
        }
        let separator: [UInt8] = [13, 10, 13, 10]
        var end: Int?
        while end == nil {
            end = buffer.count >= 4 ? (0...(buffer.count - 4)).first { buffer[$0..<$0 + 4].elementsEqual(separator) } : nil
            if end == nil { try fill() }
        }
        let header = String(decoding: buffer[0..<end!], as: UTF8.self)
        buffer.removeFirst(end! + 4)
        let lines = header.split(separator: "\r\n")
        let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        let length = lines.dropFirst().first { $0.lowercased().hasPrefix("content-length:") }.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
        guard let length else { throw ValidationError("an answer without Content-Length: \(header)") }
        while buffer.count < length { try fill() }
        let answer = Array(buffer[0..<length])
        buffer.removeFirst(length)
        return (status, answer)
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = recv(socket, &chunk, chunk.count, 0)
        guard count > 0 else { throw ValidationError("the gateway closed the connection") }
        buffer += chunk[0..<count]
    }
}
