import Hummingbird
import Logging
import Prometheus
import Synchronization

/// The gateway's `/metrics`, in the Prometheus text format (swift-prometheus): requests by
/// method and status with their durations, refusals by the access rules, the nodes'
/// failures and heights. One registry per server (no process-wide state).
final class GatewayMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let durations: DurationHistogram

    /// `calisson_gateway_<name>_<unit>`.
    static func name(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "calisson", subsystem: "gateway", metricName: name, unitName: unit, helpText: help)
    }

    init() {
        durations = registry.makeDurationHistogram(
            descriptor: Self.name("request_duration", "seconds", "Time to answer a request, verification included."),
            buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100),
                      .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5)])
    }

    func answered(method: String, status: Int, after duration: Duration) {
        registry.makeCounter(descriptor: Self.name("requests", "total", "Requests answered."), labels: [("method", method), ("status", "\(status)")])
            .increment()
        durations.record(duration)
    }

    /// The text, with the pool's and the access rules' state as of now.
    func text(pool: NodePool, access: AccessState, feed: EventFeed, watch: FinalityWatch, connections: ConnectionLimit) -> String {
        registry.makeGauge(descriptor: Self.name("connections", "open", "HTTP connections open now.")).set(to: Double(connections.openCount))
        registry.makeGauge(descriptor: Self.name("requests", "in_flight", "Requests being answered now, the API's and the public pages' (each side has its places)."))
            .set(to: Double(access.places.counts.taken + access.publicPlaces.counts.taken))
        registry.makeGauge(descriptor: Self.name("requests", "waiting", "Requests waiting in line for a place now."))
            .set(to: Double(access.places.counts.waiting + access.publicPlaces.counts.waiting))
        registry.makeGauge(descriptor: Self.name("finality_waits", "waiting", "Submissions waiting for their transaction's finality now."))
            .set(to: Double(watch.waiting))
        registry.makeGauge(descriptor: Self.name("feeds", "open", "Event feeds (GET /v1/events) open now.")).set(to: Double(feed.consumers))
        registry.makeGauge(descriptor: Self.name("feed_head", "height", "The newest final height the event feed knows of (a node's word)."))
            .set(to: Double(feed.head))
        for (name, help, value) in [
            ("feed_events_sent", "Events written to feeds.", feed.sentEvents.load(ordering: .relaxed)),
            ("feed_slow_closed", "Feeds ended because their consumer took no event for 10 s with 1,024 waiting.", feed.slowConsumersClosed.load(ordering: .relaxed)),
            ("connections_refused", "Connections closed when accepted: their address had connectionsPerAddressMax open, or connectionsMax were open and theirs held the most.",
             connections.refused.load(ordering: .relaxed)),
            ("connections_evicted", "Connections closed to make room for a newcomer: connectionsMax were open, theirs was the oldest of the address holding the most.",
             connections.evicted.load(ordering: .relaxed)),
            ("connections_stalled_readers_closed", "Connections closed because their client took nothing of an answer for stalledReaderSeconds (its socket full).",
             connections.stalledReaders.load(ordering: .relaxed)),
            ("finality_waits_found", "Submissions waiting for finality answered from a checked final block.", watch.found.load(ordering: .relaxed)),
            ("finality_waits_timed_out", "Submissions waiting for finality not seen in a block within the wait (their proof then asked).",
             watch.timedOut.load(ordering: .relaxed)),
            ("requests_queued", "Requests that found every place taken and waited in line for one.",
             access.places.queued.load(ordering: .relaxed) + access.publicPlaces.queued.load(ordering: .relaxed)),
            ("requests_queue_timed_out", "Requests that waited in line and got no place in time (answered 503).",
             access.places.timedOut.load(ordering: .relaxed) + access.publicPlaces.timedOut.load(ordering: .relaxed)),
            ("node_requests", "Requests sent to the nodes' client ports.", pool.nodeTraffic.requests),
            ("node_writes", "Writes that carried them: the requests asked during one turn of an event loop leave in one.", pool.nodeTraffic.writes),
            ("node_connections_cut", "Node connections closed for holding the most bytes of answers not yet whole while their event loop held over its share.",
             pool.nodeTraffic.cut),
        ] {
            let counter = registry.makeCounter(descriptor: Self.name(name, "total", help))
            counter.reset()
            counter.increment(by: Int64(clamping: value))
        }
        registry.makeGauge(descriptor: Self.name("newest_certified", "height", "The newest certified checkpoint known."))
            .set(to: Double(pool.newestCertifiedHeight))
        for node in pool.nodeStates {
            let labels = [("node", node.address.description)]
            registry.makeGauge(descriptor: Self.name("node_certified", "height", "A node's last verified checkpoint height."), labels: labels)
                .set(to: Double(node.certifiedHeight ?? 0))
            registry.makeGauge(descriptor: Self.name("node", "up", "1 when the node's last answer was verified."), labels: labels)
                .set(to: node.error == nil && node.certifiedHeight != nil ? 1 : 0)
        }
        if let mirror = pool.mirror {
            let counts = mirror.counts
            registry.makeGauge(descriptor: Self.name("mirror_checkpoint", "height", "The checkpoint the verified copy of the state is at (0: none)."))
                .set(to: Double(mirror.checkpoint?.height ?? 0))
            registry.makeGauge(descriptor: Self.name("mirror", "pages", "Tree pages in the verified copy of the state.")).set(to: Double(counts.pages))
            registry.makeGauge(descriptor: Self.name("mirror", "values", "State values in the verified copy.")).set(to: Double(counts.values))
            for (name, help, value) in [
                ("mirror_syncs", "Syncs of the verified copy to a newer checkpoint.", counts.syncs),
                ("mirror_pages_fetched", "Tree pages fetched from the nodes for the copy, each checked.", counts.pagesFetched),
                ("mirror_values_fetched", "State values fetched from the nodes for the copy, each checked.", counts.valuesFetched),
                ("mirror_sync_failures", "Syncs of the copy that failed (logged; the reads went to the nodes).", counts.failures),
                ("mirror_reads", "Verified reads answered from the copy (the others asked a node).", pool.mirrorReads),
                ("mirror_refused", "Reads from the copy refused by the checks (none expected).", pool.mirrorRefusals),
            ] {
                let counter = registry.makeCounter(descriptor: Self.name(name, "total", help))
                counter.reset()
                counter.increment(by: Int64(clamping: value))
            }
        }
        for (node, count) in pool.failureCounts {
            let counter = registry.makeCounter(
                descriptor: Self.name("node_failures", "total", "Answers of a node not used (unreachable, error, failed check, stale)."),
                labels: [("node", node)])
            counter.reset()
            counter.increment(by: Int64(clamping: count))
        }
        for (status, count) in access.refused.withLock({ $0 }) {
            let counter = registry.makeCounter(
                descriptor: Self.name("refused", "total", "Requests refused by the access rules."), labels: [("status", "\(status)")])
            counter.reset()
            counter.increment(by: Int64(clamping: count))
        }
        return registry.emitToString()
    }
}

/// Counts every request (whatever answered it) and times it.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let metrics: GatewayMetrics
    let refusals: RefusalLog

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let note = RefusalLog.Note()
        do {
            let response = try await RefusalLog.$note.withValue(note) { try await next(request, context) }
            metrics.answered(method: request.method.rawValue, status: response.status.code, after: started.duration(to: .now))
            refusals.log(request, status: response.status.code, note: note, context: context)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.answered(method: request.method.rawValue, status: status, after: started.duration(to: .now))
            note.problem.withLock { if $0 == nil { $0 = String("\(error)".prefix(300)) } }
            refusals.log(request, status: status, note: note, context: context)
            throw error
        }
    }
}

/// What the gateway refused, in its log (`calisson-gateway`'s standard error): every answer
/// of status 400 and above but 404 (a record proven absent is an answer, not a fault), at
/// `notice` (4xx) or `warning` (5xx), naming the client (its key, or its address), the
/// method and path, the status and the problem's type and detail. At most one line per
/// client and status every `intervalSeconds`, with the count of those left out since: a
/// client flooding the gateway with bad requests does not flood its log.
final class RefusalLog: Sendable {
    /// The request's problem and client, as the handlers and the access rules know them.
    @TaskLocal static var note: Note?
    final class Note: Sendable {
        let problem = Mutex<String?>(nil)
        let client = Mutex<String?>(nil)
    }

    static let intervalSeconds: Int64 = 10
    /// Clients and statuses remembered, at most (all forgotten past it).
    static let keysMax = 4_096
    private let last = Mutex<[String: (at: ContinuousClock.Instant, leftOut: Int)]>([:])

    /// Records a problem for the request being answered (the last one made is logged).
    static func problem(_ type: String, _ detail: String) {
        note?.problem.withLock { $0 = "\(type): \(detail.prefix(300))" }
    }

    /// `text` for one log line: control characters (a line break a client put in a path or
    /// a field, which a detail quotes) escaped, so that no client can write a line of its own.
    static func oneLine(_ text: some StringProtocol) -> String {
        var line = ""
        for scalar in text.unicodeScalars {
            switch scalar.value {
            // Controls, line and paragraph separators, and the bidirectional controls, which
            // can make a line read differently from what it holds (U+202E reverses the rest).
            case 0x00..<0x20, 0x7F..<0xA0, 0x2028, 0x2029, 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069:
                line += "\\u{\(String(scalar.value, radix: 16))}"
            default: line.unicodeScalars.append(scalar)
            }
        }
        return line
    }

    /// Whether a refusal of `key` (a client and a status) is logged `now`, with the number
    /// left out since the last one logged; nil: left out.
    func take(_ key: String, now: ContinuousClock.Instant = .now) -> Int? {
        last.withLock { last -> Int? in
            if let entry = last[key], entry.at.duration(to: now) < .seconds(Self.intervalSeconds) {
                last[key]?.leftOut += 1
                return nil
            }
            let leftOut = last[key]?.leftOut ?? 0
            if last.count >= Self.keysMax { last.removeAll() }
            last[key] = (now, 0)
            return leftOut
        }
    }

    /// A refusal of bytes that did not decode as a request (`ContinueOrClose`): no path, no key.
    func logUndecoded(from address: String, status: Int, problem: String, logger: Logger) {
        let client = "address \(address)"
        guard let leftOut = take("\(client) \(status)") else { return }
        let more = leftOut > 0 ? " (and \(leftOut) more of this status from this client since the last line)" : ""
        logger.notice("refused bytes that are not an HTTP/1.1 request from \(Self.oneLine(client)): \(status), \(Self.oneLine(problem))\(more)")
    }

    func log(_ request: Request, status: Int, note: Note, context: GatewayContext) {
        guard status >= 400, status != 404 else { return }
        // An address as the per-address limits count it (an IPv6 /64: one host's 2^64
        // addresses would each get their line).
        let client = note.client.withLock { $0 }.map { "key \($0)" } ?? "address \(context.channel.remoteAddress.clientKey)"
        guard let leftOut = take("\(client) \(status)") else { return }
        let problem = note.problem.withLock { $0 } ?? "no problem document"
        let more = leftOut > 0 ? " (and \(leftOut) more of this status from this client since the last line)" : ""
        context.logger.log(
            level: status >= 500 ? .warning : .notice,
            "refused \(request.method) \(Self.oneLine(request.uri.path.prefix(160))) from \(Self.oneLine(client)): \(status), \(Self.oneLine(problem))\(more)")
    }
}
