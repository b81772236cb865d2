import CalissonCrypto
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOCore
import NIOPosix
import Settlement
import OpenAPIHummingbird
import ServiceLifecycle
import Synchronization
import UnixSignals

extension GatewayServer {
    /// Makes the event loops that serve HTTP the executor of every task of this process
    /// (SwiftNIO's singleton group as Swift concurrency's global executor): a request is then
    /// read, handled and answered on one thread, where on Linux it otherwise crosses to
    /// libdispatch's threads and back (measured in Docs/BENCHMARKS.md, "The gateway").
    /// Call it once, first thing on the main thread, before any task starts; false when it
    /// could not be installed (the gateway then runs on the default executor). Anything
    /// that blocks (a node's answer, an fsync) must then run on `NodePool.blocking`'s
    /// threads, never in a task.
    @discardableResult
    public static func runTasksOnEventLoops() -> Bool {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}

/// What a gateway serves, from whom, on which address.
public struct GatewayConfiguration: Sendable {
    public var pool: NodePool
    public var keys: [APIKey]
    /// Without `tls`, plain HTTP: loopback only. With it, any address.
    public var host = "127.0.0.1"
    /// 0 picks a free port (`GatewayServer.port` says which).
    public var port = 8080
    /// How often every node is asked for its newest certified checkpoint.
    public var refreshMilliseconds: UInt64 = 2_000
    /// The partner this gateway signs for (rewards, proposals, votes); nil: it signs nothing.
    public var signer: PartnerSigner?
    /// HTTPS, with optional client certificates; nil: plain HTTP on loopback.
    public var tls: GatewayTLS?
    /// The treasury's register, for the settlement files (govern scope); nil: not served.
    public var settlementRegister: SettlementRegister?
    /// A connection with no request for this long (or a request whose head has not arrived
    /// within it) is closed: idle clients cannot hold the gateway's sockets. An answer being
    /// written (an event feed) is never cut.
    public var idleTimeoutSeconds: Int64 = 60
    /// A connection whose client stopped reading an answer (its socket takes nothing more)
    /// for this long is closed (`StalledReaderTimeout`): the idle timeout does not run
    /// while an answer is being written.
    public var stalledReaderSeconds: Int64 = 30
    /// A request's body must arrive whole within this many seconds (408 otherwise): a slow
    /// sender holds one of the places of the requests answered at once.
    public var bodySeconds: Int64 = 10
    /// Connections open at once from one client address, at most (past it a new one is
    /// closed as soon as it is accepted).
    public var connectionsPerAddressMax = 256
    /// Connections open at once in all, at most (past it a new one is closed as soon as
    /// it is accepted): a few addresses together cannot take every file descriptor.
    public var connectionsMax = 4_096

    public init(pool: NodePool, keys: [APIKey]) {
        self.pool = pool
        self.keys = keys
    }
}

/// The partner a gateway signs for: its id, its signing key, its evidence key (to commit
/// evidence text), and the log of what was signed per Idempotency-Key.
public struct PartnerSigner: Sendable {
    public let partner: Identifier
    public let key: Ed25519PrivateKey
    public let evidence: EvidenceKey?
    public let log: IdempotencyLog

    public init(partner: Identifier, key: Ed25519PrivateKey, evidence: EvidenceKey?, log: IdempotencyLog) {
        self.partner = partner
        self.key = key
        self.evidence = evidence
        self.log = log
    }
}

/// Why a gateway does not start.
public struct GatewayError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The HTTP server: access control, then the operations generated from openapi.yaml.
public final class GatewayServer: Sendable {
    public let configuration: GatewayConfiguration
    private let boundPort = Mutex<Int?>(nil)
    let access = AccessState()
    /// Refusals in the log (`RefusalLog`): one server's own.
    let refusals = RefusalLog()
    let connections: ConnectionLimit
    let tlsConfiguration: TLSConfiguration?

    public init(configuration: GatewayConfiguration) throws {
        guard configuration.tls != nil || ["127.0.0.1", "localhost", "::1"].contains(configuration.host) else {
            throw GatewayError("plain HTTP listens on loopback only (127.0.0.1, ::1): give --tls-certificate and --tls-key to listen on \(configuration.host)")
        }
        self.configuration = configuration
        connections = ConnectionLimit(perAddressMax: configuration.connectionsPerAddressMax, totalMax: configuration.connectionsMax)
        tlsConfiguration = try configuration.tls?.configuration()
    }

    /// The port it listens on, once running.
    public var port: Int? { boundPort.withLock { $0 } }

    /// Serves until the task is cancelled (or the process is asked to stop).
    public func run(logger: Logger = Logger(label: "calisson.gateway")) async throws {
        // HEAD answered by GET's route without the body (a monitor's `HEAD /health` was a 404);
        // the event feed's stream, dropped unread, ends its producer and gives its place back.
        let router = Router(context: GatewayContext.self, options: .autoGenerateHeadEndpoints)
        let metrics = GatewayMetrics(), pool = configuration.pool, access = access, limit = connections, refusals = refusals
        let feed = EventFeed(pool: pool)
        let watch = FinalityWatch(feed: feed)
        let dashboard = Dashboard(pool: pool)
        router.add(middleware: MetricsMiddleware(metrics: metrics, refusals: refusals))
        router.add(middleware: ReuseCORSMiddleware())
        // The access rules first: a request they refuse takes no place among those answered
        // at once (the request shape's), so that unknown clients cannot fill them.
        router.add(middleware: AccessMiddleware(
            keys: configuration.keys, state: access, metricsOpen: tlsConfiguration == nil, publicLimiter: dashboard.limiter,
            bodySeconds: max(1, configuration.bodySeconds)))
        let routes = Routes()
        router.add(middleware: RequestShapeMiddleware(state: access, routes: routes, bodySeconds: max(1, configuration.bodySeconds)))
        // Prometheus text; open on the plain listener (loopback only), a key's over HTTPS.
        routes.add(method: .get, template: "/metrics")
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.text(pool: pool, access: access, feed: feed, watch: watch, connections: limit))))
        }
        try GatewayAPI(pool: configuration.pool, signer: configuration.signer, feed: feed, watch: watch, settlementRegister: configuration.settlementRegister)
            .registerHandlers(on: RecordingTransport(transport: router, routes: routes))
        dashboard.register(on: router, routes: routes)
        let stalledReader = TimeAmount.seconds(max(1, configuration.stalledReaderSeconds))
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [
                limit.handler(), StalledReaderTimeout(timeout: stalledReader, limit: limit),
                ContinueOrClose(refusals: refusals, logger: logger),
            ], idleTimeout: .seconds(max(1, configuration.idleTimeoutSeconds)))
        let server: HTTPServerBuilder = try tlsConfiguration.map { try .tls(.http1(configuration: http1), tlsConfiguration: $0) } ?? .http1(configuration: http1)
        let app = Application(
            router: router, server: server, configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "calisson-gateway"),
            onServerRunning: { [self] channel in boundPort.withLock { $0 = channel.localAddress?.port } }, logger: logger)
        let period = configuration.refreshMilliseconds
        let refresher = Task {
            while !Task.isCancelled {
                await pool.refresh()
                try? await Task.sleep(for: .milliseconds(period))
            }
        }
        let follower = Task { await feed.follow() }
        let copier = Task {
            await pool.followMirror { message, trouble in
                if trouble { logger.warning("\(message)") } else { logger.info("\(message)") }
            }
        }
        defer {
            copier.cancel()
            follower.cancel()
            refresher.cancel()
            pool.close()
        }
        // SIGTERM or SIGINT: services stop in the reverse order of this list, so the event
        // feeds end first, then the server finishes the requests in flight and stops.
        let group = ServiceGroup(configuration: .init(
            services: [app, FeedCloser(feed: feed)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Ends the event feeds when the gateway shuts down gracefully (`EventFeed.closeAll`).
struct FeedCloser: Service {
    let feed: EventFeed

    func run() async throws {
        try? await gracefulShutdown()  // until the shutdown reaches this service, or cancellation
        feed.closeAll()
    }
}
