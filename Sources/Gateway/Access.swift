import CalissonCrypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix
import OpenAPIRuntime
import Synchronization
import Transport
import Wire

/// What an API key may do.
public enum Scope: String, Codable, Sendable, CaseIterable {
    case read, submit, govern
}

/// One client as the gateway's key file lists it: a name for the logs and metrics, how it
/// proves who it is (the SHA-256 of its API key, which is never stored itself, or the
/// SHA-256 of the TLS client certificate it presents: exactly one of the two), its scopes
/// and its rate.
public struct APIKey: Codable, Sendable, Equatable {
    public var name: String
    public var sha256: String?
    /// SHA-256 of the DER of a client certificate that the gateway's --client-ca issued.
    public var certificateSha256: String?
    public var scopes: [Scope]
    /// Requests per second, in bursts of at most as many (default 50, 1...100000).
    public var requestsPerSecond: Int?

    /// A key's name: 1 to this many bytes (the key file's rule, and `calisson-gateway key`'s).
    public static let nameBytesMax = 64
    public static func isValidName(_ name: String) -> Bool { !name.isEmpty && name.utf8.count <= nameBytesMax }

    public init(name: String, sha256: String? = nil, certificateSha256: String? = nil, scopes: [Scope], requestsPerSecond: Int? = nil) {
        self.name = name
        self.sha256 = sha256
        self.certificateSha256 = certificateSha256
        self.scopes = scopes
        self.requestsPerSecond = requestsPerSecond
    }

    public static let requestsPerSecondDefault = 50

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        sha256 = try c.decodeIfPresent(String.self, forKey: .sha256)
        certificateSha256 = try c.decodeIfPresent(String.self, forKey: .certificateSha256)
        scopes = try c.list(Scope.self, .scopes, countMax: Scope.allCases.count)
        requestsPerSecond = try c.integerIfPresent(.requestsPerSecond)
    }

    /// A new key: the secret to give the client once, and its entry for the key file.
    public static func generate(name: String, scopes: [Scope]) -> (secret: String, entry: APIKey) {
        let secret = "cal_" + Hex.encode(Ed25519PrivateKey().seedRepresentation)
        return (secret, APIKey(name: name, sha256: SHA256.hash(secret).hex, scopes: scopes))
    }
}

/// The gateway's key file (JSON): `{"keys": [{"name", "sha256" or "certificateSha256", "scopes", "requestsPerSecond"}]}`.
public struct APIKeyFile: Codable, Sendable, Equatable {
    public var keys: [APIKey]
    public init(keys: [APIKey]) { self.keys = keys }

    public static let keyCountMax = 10_000

    public init(from decoder: any Decoder) throws {
        keys = try decoder.container(keyedBy: CodingKeys.self).list(APIKey.self, .keys, countMax: Self.keyCountMax)
    }

    /// Reads and checks a key file; each mistake names its key and field.
    public static func load(_ path: String) throws(JSONFileError) -> [APIKey] {
        let file = try JSONFile.decode(APIKeyFile.self, path: path)
        var seen = Set<String>()
        for (index, key) in file.keys.enumerated() {
            func problem(_ field: String, _ reason: String) -> JSONFileError { JSONFileError(path: path, field: "keys[\(index)].\(field)", reason: reason) }
            guard APIKey.isValidName(key.name) else { throw problem("name", "1 to \(APIKey.nameBytesMax) bytes") }
            guard seen.insert(key.name).inserted else { throw problem("name", "'\(key.name)' is listed twice") }
            switch (key.sha256, key.certificateSha256) {
            case let (hash?, nil), let (nil, hash?):
                let field = key.sha256 != nil ? "sha256" : "certificateSha256"
                guard Bytes32(hex: hash) != nil, hash == hash.lowercased() else { throw problem(field, "64 lowercase hexadecimal digits") }
            default: throw problem("sha256", "exactly one of sha256 (an API key's hash) and certificateSha256 (a client certificate's)")
            }
            guard !key.scopes.isEmpty else { throw problem("scopes", "at least one of read, submit, govern") }
            if let rate = key.requestsPerSecond, !(1...100_000).contains(rate) { throw problem("requestsPerSecond", "\(rate) is outside 1...100000") }
        }
        return file.keys
    }
}

/// Authentication and rate limits, before any operation (the public pages and open data
/// excepted: no key, a rate per client address): `Authorization: Bearer <key>`
/// with a listed key (401 otherwise), the scope the operation needs (403: GET needs `read`,
/// proposing, voting and the settlement files `govern`, other POSTs `submit`),
/// within the key's rate (429 with Retry-After). `/health` and `/metrics` are open. Every refusal is a
/// problem document and is counted.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let keys: [String: APIKey]  // by SHA-256 of the key
    let certificates: [String: APIKey]  // by SHA-256 of the client certificate
    let state: AccessState
    /// The operations that need the `govern` scope; every other POST needs `submit`.
    static var governed: [String] { ["/v1/proposals", "/v1/votes"] }

    /// Whether /metrics needs no key: on the plain listener (loopback only), not over HTTPS.
    let metricsOpen: Bool
    /// The public side (dashboard, open data, proofs): no key, a rate per client address.
    let publicLimiter: PublicLimiter?

    /// A refused POST's body is read for at most this long (the request shape's bound).
    let bodySeconds: Int64

    init(keys: [APIKey], state: AccessState, metricsOpen: Bool = true, publicLimiter: PublicLimiter? = nil, bodySeconds: Int64 = 10) {
        self.metricsOpen = metricsOpen
        self.bodySeconds = bodySeconds
        self.publicLimiter = publicLimiter
        self.keys = Dictionary(keys.compactMap { key in key.sha256.map { ($0, key) } }, uniquingKeysWith: { first, _ in first })
        certificates = Dictionary(keys.compactMap { key in key.certificateSha256.map { ($0, key) } }, uniquingKeysWith: { first, _ in first })
        self.state = state
    }

    /// What the access rules say of a request, before it takes a place or has its body read.
    enum Decision {
        /// Needs no key: /health, /metrics where open, the public side within its rate.
        case open
        case admitted(APIKey)
        case refused(Response)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch await decide(request, context: context) {
        case .open:
            return try await next(request, context)
        case let .admitted(key):
            RefusalLog.note?.client.withLock { $0 = key.name }
            let charge = Charge(rate: rate(key)) { [self] count in take(key, count: count) }
            return try await Self.$client.withValue(key.name) { try await Self.$charge.withValue(charge) { try await next(request, context) } }
        case var .refused(response):
            // Refused before it takes a place among those answered at once, so that clients
            // without a listed key (or over their rate) cannot fill them. A POST's body is
            // still read first, within its limits, as for every answer of this gateway (a
            // refusal answered before the body, keep-alive, once hung a client in a CI run),
            // unless its client waits for `100 Continue`: it is answered at once and the
            // connection closed (ContinueOrClose), its body never sent.
            guard request.method == .post, !ContinueOrClose.expectsContinue(request.head) else { return response }
            // Read and dropped as it comes: a refused request holds no memory for its body.
            if await !RequestShapeMiddleware.discardBody(of: request, context: context, seconds: bodySeconds) { response.headers[.connection] = "close" }
            return response
        }
    }

    func decide(_ request: Request, context: Context) async -> Decision {
        let path = Routes.canonical(request.uri.path)
        if path == "/health" || (metricsOpen && path == "/metrics") { return .open }
        if let publicLimiter, Dashboard.isPublic(path) {
            let address = context.channel.remoteAddress.clientKey
            if let wait = publicLimiter.take(address) {
                return .refused(refuse(429, "rate-limited", "Too many requests", "this address is over \(Int(PublicLimiter.rate)) requests per second on the public pages",
                                       headers: [.retryAfter: "\(wait)"]))
            }
            return .open
        }
        let key: APIKey
        if let header = request.headers[.authorization] {
            // The scheme's name is case-insensitive (RFC 9110, 11.1).
            guard header.prefix(7).lowercased() == "bearer ", let found = keys[SHA256.hash(String(header.dropFirst(7))).hex] else {
                return .refused(refuse(401, "unauthorized", "Unauthorized", "the API key is not one this gateway knows", headers: [.wwwAuthenticate: "Bearer"]))
            }
            key = found
        } else if let certificate = await context.clientCertificateHash() {
            guard let found = certificates[certificate] else {
                return .refused(refuse(401, "unauthorized", "Unauthorized", "the client certificate (SHA-256 \(certificate)) is not in this gateway's key file",
                                       headers: [.wwwAuthenticate: "Bearer"]))
            }
            key = found
        } else {
            return .refused(refuse(401, "unauthorized", "Unauthorized", "an API key is needed: Authorization: Bearer <key> (or a listed client certificate)",
                                   headers: [.wwwAuthenticate: "Bearer"]))
        }
        RefusalLog.note?.client.withLock { $0 = key.name }  // named in the log, refused or not
        let needed: Scope = path.hasPrefix("/v1/settlements/") || Self.governed.contains(path) ? .govern
            : request.method == .get || request.method == .head ? .read : .submit
        guard key.scopes.contains(needed) else {
            return .refused(refuse(403, "forbidden", "Forbidden", "the key '\(key.name)' does not have the '\(needed.rawValue)' scope"))
        }
        if let wait = take(key) {
            return .refused(refuse(429, "rate-limited", "Too many requests", "the key '\(key.name)' is over its \(rate(key)) requests per second",
                                   headers: [.retryAfter: "\(wait)"]))
        }
        return .admitted(key)
    }

    /// The name of the key (or certificate entry) the request came with, for the operations
    /// that count per client (the event feed).
    @TaskLocal static var client: String?

    /// More of the key's rate, for an operation that counts as several requests (a batch
    /// counts its transactions): `take(n)` takes n tokens, nil when taken, else the whole
    /// seconds to wait (none taken). `rate` is the bucket's size: more is never granted.
    struct Charge: Sendable {
        let rate: Int
        let take: @Sendable (Int) -> Int?
    }
    @TaskLocal static var charge: Charge?

    func rate(_ key: APIKey) -> Int { key.requestsPerSecond ?? APIKey.requestsPerSecondDefault }

    /// `count` tokens from the key's bucket (one second of requests at most); nil when
    /// taken, else the whole seconds to wait (none taken).
    func take(_ key: APIKey, count: Int = 1) -> Int? {
        let rate = Double(rate(key)), now = ContinuousClock.now, count = Double(count)
        return state.buckets.withLock { buckets in
            var bucket = buckets[key.name] ?? (rate, now)
            let elapsed = bucket.at.duration(to: now)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket = (min(rate, bucket.tokens + seconds * rate), now)
            defer { buckets[key.name] = bucket }
            guard bucket.tokens >= count else { return max(1, Int(((count - bucket.tokens) / rate).rounded(.up))) }
            bucket.tokens -= count
            return nil
        }
    }

    func refuse(_ status: Int, _ type: String, _ title: String, _ detail: String, headers: HTTPFields = [:]) -> Response {
        state.refused.withLock { $0[status, default: 0] += 1 }
        return ProblemResponse.make(status: status, type: type, title: title, detail: detail, headers: headers)
    }
}

/// The rate buckets of the keys, and the refusals by status (for the logs and /metrics).
final class AccessState: Sendable {
    /// Per key name: tokens left and when they were counted. At most one entry per listed key.
    let buckets = Mutex<[String: (tokens: Double, at: ContinuousClock.Instant)]>([:])
    let refused = Mutex<[Int: Int]>([:])
    /// Requests being answered now (`RequestShapeMiddleware.inFlightMax`), and those of
    /// the public side apart (`publicInFlightMax`): a crowd on the dashboard never takes
    /// the places of the partners' back-ends.
    let places = Places(maximum: RequestShapeMiddleware.inFlightMax, queuedMax: RequestShapeMiddleware.queuedMax)
    let publicPlaces = Places(maximum: RequestShapeMiddleware.publicInFlightMax, queuedMax: RequestShapeMiddleware.publicQueuedMax)
    /// Bytes of request bodies being received per client (key name), each counted at its
    /// announced length or the largest body of its path (`RequestShapeMiddleware.postBytesPerClientMax`),
    /// and by all clients together (`postBytesTotalMax`).
    let bodyBytes = Mutex<(perClient: [String: Int], total: Int)>(([:], 0))

    /// Why a body may not be read now.
    enum BodyBound { case client, total }

    /// Counts `bytes` of a body of `client` about to be read; the bound it would pass
    /// instead (its client's, or all clients'), nil when it is counted.
    func takeBody(_ client: String, bytes: Int) -> BodyBound? {
        bodyBytes.withLock { counts in
            let held = counts.perClient[client, default: 0]
            guard held <= RequestShapeMiddleware.postBytesPerClientMax - bytes else { return .client }
            guard counts.total <= RequestShapeMiddleware.postBytesTotalMax - bytes else { return .total }
            counts.perClient[client] = held + bytes
            counts.total += bytes
            return nil
        }
    }

    func endBody(_ client: String, bytes: Int) {
        bodyBytes.withLock { counts in
            let left = counts.perClient[client, default: bytes] - bytes
            counts.perClient[client] = left > 0 ? left : nil
            counts.total = max(0, counts.total - bytes)
        }
    }
}

/// The place the request being answered holds (the task's), given back by the middleware
/// when it is answered, or earlier by a request that goes on waiting without asking a node
/// (a submission waiting for its block: `FinalityWatch`), which takes one again before it
/// asks a node more.
final class HeldPlace: Sendable {
    @TaskLocal static var current: HeldPlace?
    let places: Places
    private let held = Atomic<Bool>(true)

    init(_ places: Places) { self.places = places }

    /// Gives the place back, if held.
    func release() {
        if held.exchange(false, ordering: .acquiringAndReleasing) { places.leave() }
    }

    /// Takes a place again (waiting in line as a new request would); false when none came.
    func retake() async -> Bool {
        guard !held.load(ordering: .acquiring) else { return true }
        guard await places.enter() else { return false }
        held.store(true, ordering: .releasing)
        return true
    }
}

/// Places for the requests answered at once, and a short line before them. A request
/// that finds every place taken waits its turn (first come, first served) for at most
/// `waitMilliseconds`, with at most `queuedMax` others; past either it is told to retry
/// (503). A back-end whose workers send a burst of a few hundred requests is then served
/// in turn rather than refused, while the work in hand stays bounded (a place may hold
/// node connections): a request waiting holds only its HTTP connection.
final class Places: Sendable {
    static let waitMillisecondsDefault = 1_000
    let maximum: Int
    let queuedMax: Int
    let waitMilliseconds: Int
    /// Requests that waited in line, and those of them that got no place in time.
    let queued = Atomic<Int>(0), timedOut = Atomic<Int>(0)
    private struct Waiting {
        let id: UInt64
        let continuation: CheckedContinuation<Bool, Never>
        var timer: Task<Void, Never>?
    }
    private struct State {
        var taken = 0
        var line: [Waiting] = []
    }
    private let state = Mutex(State())
    private let nextID = Atomic<UInt64>(0)

    init(maximum: Int, queuedMax: Int, waitMilliseconds: Int = Places.waitMillisecondsDefault) {
        self.maximum = max(1, maximum)
        self.queuedMax = max(0, queuedMax)
        self.waitMilliseconds = max(0, waitMilliseconds)
    }

    /// Places taken now, and requests waiting for one.
    var counts: (taken: Int, waiting: Int) { state.withLock { ($0.taken, $0.line.count) } }

    /// Takes a place, waiting in line for one if need be; false when none came in time, the
    /// line was full, or the task was cancelled.
    func enter() async -> Bool {
        let taken = state.withLock { state in
            guard state.taken < maximum else { return false }
            state.taken += 1
            return true
        }
        if taken { return true }
        let id = nextID.add(1, ordering: .relaxed).newValue
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                // Decided under the lock: a place freed since the first look is taken here,
                // and a cancellation before this (its handler found no one) is seen.
                let now: Bool? = state.withLock { state in
                    if Task.isCancelled { return false }
                    if state.taken < maximum {
                        state.taken += 1
                        return true
                    }
                    guard state.line.count < queuedMax else { return false }
                    state.line.append(Waiting(id: id, continuation: continuation))
                    return nil
                }
                if let now { return continuation.resume(returning: now) }
                queued.add(1, ordering: .relaxed)
                let timer = Task { [self] in
                    try? await Task.sleep(for: .milliseconds(waitMilliseconds))
                    if !Task.isCancelled { _ = giveUp(id, timedOut: true) }
                }
                let served = state.withLock { state in
                    guard let index = state.line.firstIndex(where: { $0.id == id }) else { return true }
                    state.line[index].timer = timer
                    return false
                }
                if served { timer.cancel() }
            }
        } onCancel: {
            _ = giveUp(id, timedOut: false)
        }
    }

    /// Gives a place back: to the first request waiting, if any.
    func leave() {
        let next = state.withLock { state -> Waiting? in
            guard !state.line.isEmpty else {
                state.taken = max(0, state.taken - 1)
                return nil
            }
            return state.line.removeFirst()  // the place passes to it: as many taken
        }
        guard let next else { return }
        next.timer?.cancel()
        next.continuation.resume(returning: true)
    }

    /// Takes request `id` out of the line, answered "no place" (counted in `timedOut` first
    /// when its time was up); false when it is not in it.
    private func giveUp(_ id: UInt64, timedOut wasTimedOut: Bool) -> Bool {
        let found = state.withLock { state -> Waiting? in
            guard let index = state.line.firstIndex(where: { $0.id == id }) else { return nil }
            return state.line.remove(at: index)
        }
        guard let found else { return false }
        if wasTimedOut { timedOut.add(1, ordering: .relaxed) }
        found.timer?.cancel()
        found.continuation.resume(returning: false)
        return true
    }
}

enum ProblemResponse {
    static func make(status: Int, type: String, title: String, detail: String, headers: HTTPFields = [:]) -> Response {
        RefusalLog.problem(type, detail)
        var fields = headers
        fields[.contentType] = "application/problem+json"
        return Response(status: .init(code: status), headers: fields, body: ResponseBody(byteBuffer: body(status: status, type: type, title: title, detail: detail)))
    }

    /// The problem document's JSON (paths in a detail left as they are written: `/v1/...`).
    static func body(status: Int, type: String, title: String, detail: String) -> ByteBuffer {
        let problem = Components.Schemas.Problem(_type: "urn:calisson:problem:\(type)", title: title, status: Int32(clamping: status), detail: detail)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        return ByteBuffer(bytes: (try? encoder.encode(problem)) ?? Data())
    }
}

/// What the generated code cannot answer by itself: a method the document does not list
/// for any path (405 with `Allow`), and a request whose path or headers do not decode as
/// the operation's (a proposal number past Int64, say: 400, where the runtime would answer
/// 500). A failure after decoding stays a 500, as a problem document.
struct RequestShapeMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    /// Requests answered at once, at most; past it a request waits in line for a place
    /// (`Places`), and past the line gets 503 with Retry-After.
    /// Each has at most a few requests waiting on a node connection at a time (a batch's
    /// chunks wait their turn: `NodePool.batchChunksInFlightMax`), so the gateway stays
    /// below a node's cap of requests per connection and connections per address.
    static var inFlightMax: Int { 48 }
    /// Requests waiting for one of the `inFlightMax` places, at most.
    static var queuedMax: Int { 256 }
    /// The public side's requests (dashboard, open data, proofs) answered at once, at most:
    /// counted apart, so that they never take the API's places.
    static var publicInFlightMax: Int { 16 }
    static var publicQueuedMax: Int { 64 }
    /// Bytes of request bodies one client (API key) may be sending at once, each body counted
    /// at its announced length (at most its path's largest body; that largest for a chunked
    /// one) while it is received: a body is read before its request takes a place, so that a
    /// client sending bodies slowly holds its own connections only, never the places of
    /// others (one key held all 48 for 10 s at a time with 48 bodies announced and not sent);
    /// this bounds the memory one key's bodies being received take (32 batches of 1 MiB, or
    /// thousands of usual submissions).
    static var postBytesPerClientMax: Int { 32 << 20 }
    /// The same for all clients together: however many keys the gateway lists, the bodies
    /// being received take at most this much memory.
    static var postBytesTotalMax: Int { 128 << 20 }
    let state: AccessState
    /// The operations' paths and methods (registered from openapi.yaml by the generated code).
    let routes: Routes
    /// The whole body must arrive within this (a slow sender holds its connection meanwhile).
    var bodySeconds: Int64 = 10

    /// The methods `path` has: those of its operations or pages (HEAD with GET); nil when
    /// it is no operation's or page's.
    func allowed(_ path: String) -> [HTTPRequest.Method]? { routes.methods(of: path) }

    /// The path parameters of openapi.yaml that are integers (GatewaySchemaTests checks the
    /// list against the document).
    static let integerPathParameters: Set<String> = ["epoch", "height", "proposal"]

    /// Decimal digits, no sign, no leading zero (but `0` itself).
    static func isCanonicalNumber(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } && (text.count == 1 || text.first != "0")
    }

    /// What the generated code found wrong in a request, in words: the field and what it
    /// expected (`DecodingError.fieldAndReason`, as for the files people write).
    /// `numbers`: those of the body that are not whole Int64 numbers, which Foundation's
    /// decoder, reading one where an integer is expected, reports as "not valid JSON".
    static func describe(_ error: any Error, numbers: [String] = []) -> String {
        guard let decoding = error as? DecodingError else { return "\(error)" }
        if let explained = StrictJSON.explain(decoding, numbers: numbers) { return explained }
        let (field, reason) = decoding.fieldAndReason
        guard field.isEmpty else { return "\(field): \(reason)" }
        // A parameter's decoder names no field (the generated code decodes each alone), nor
        // does a body's at its top, which is an object or a list in every operation: a
        // single value expected there is a parameter's.
        if case let .typeMismatch(type, _) = decoding,
            type is Bool.Type || type is String.Type || type is any FixedWidthInteger.Type || type is any BinaryFloatingPoint.Type
        {
            return "a parameter (in the path or the query): \(reason)"
        }
        // A parameter of enumerated values given another: the generated decoder says
        // "Cannot initialize Wait from invalid String value proven".
        if case let .dataCorrupted(context) = decoding, context.codingPath.isEmpty,
            let named = context.debugDescription.wholeMatch(of: /Cannot initialize (\w+) from invalid String value (.*)/.dotMatchesNewlines())
        {
            let value = String(named.2).prefix(64)
            guard let (parameter, values) = enumeratedParameters[String(named.1)] else { return "a parameter (in the path or the query): '\(value)' is not one of its values" }
            return "the parameter \(parameter): '\(value)' is not one of \(values.joined(separator: ", "))"
        }
        return "the body: \(reason)"
    }

    /// The parameters of openapi.yaml whose values are enumerated, by their generated
    /// type's name: their name and values (GatewaySchemaTests checks the list against the
    /// document).
    static let enumeratedParameters: [String: (name: String, values: [String])] = [
        "Wait": ("wait", Components.Parameters.Wait.allCases.map(\.rawValue)),
        "filePayload": ("file", Operations.getSettlementFile.Input.Path.filePayload.allCases.map(\.rawValue)),
    ]

    /// The largest request body read (the generated code would collect any size): a batch,
    /// 256 signed transactions at usual sizes, in 1 MiB; any other request (one signed
    /// transaction is at most 16 KiB, 32 KiB of hex; a governance action) in 128 KiB, so
    /// that the many requests held while they wait for finality hold little memory.
    static func bodyByteCountMax(_ path: String) -> Int { path == "/v1/transaction-batches" ? 1 << 20 : 128 << 10 }

    /// What `work`, reading a request's body, gives if the body arrives whole within
    /// `seconds`, else nil (the work is then cancelled, and what it gave is dropped).
    ///
    /// Whether the body arrived in time is judged on the connection's loop by ContinueOrClose,
    /// from what the connection received (the body's end read or not), never from when the
    /// task reading it gets a thread, and counting only the time the application asked for
    /// bytes: a body that arrived in time is never answered 408, however busy the threads
    /// (the tests' process held tasks for seconds). A body whose end
    /// was read already (the usual case: a small body comes with its head) is read at once,
    /// with no deadline and no task; otherwise the work runs as a child task, which the
    /// deadline cancels (a child, so that it runs where the request's task prefers: an
    /// unstructured task ran on Swift's shared threads, and in the tests' process, whose
    /// nodes' signature checks keep those busy, a work waited over 30 s to start), beside a
    /// child that waits for the deadline, suspended. `context` nil, or no ContinueOrClose in the pipeline (a test's
    /// router): the deadline is a task scheduled on a SwiftNIO loop, its expiry queued as a
    /// task behind what the body's arrival queued, and the work says it ended from its own
    /// task. (Each request with a body once ran its read beside a sleeping child task: a
    /// second child task, a timer of libdispatch and its thread's wake-ups. Docs/
    /// BENCHMARKS.md, "The body's deadline on the loop after all".)
    static func within<T: Sendable>(
        seconds: Int64, context: GatewayContext? = nil, continues: Bool = true, _ work: @escaping @Sendable () async throws -> T
    ) async throws -> T? {
        let arrival = await context?.prepareBody(continues: continues) ?? .unknown
        if arrival == .ended {
            let value = try await work()
            // Cancelled from outside (the connection closed): what the work gave may be cut short.
            try Task.checkCancellation()
            return value
        }
        let deadline = Deadline()
        let (expiry, expiring) = AsyncStream<Void>.makeStream()
        let expired: @Sendable () -> Void = { if deadline.expire() { expiring.finish() } }
        var timer: Scheduled<Void>?
        let outcome = await withTaskGroup(of: Result<T?, any Error>?.self) { group -> Result<T?, any Error> in
            group.addTask {
                do {
                    let value = try await work()
                    return .success(deadline.end() ? value : nil)
                } catch {
                    return deadline.end() ? .failure(error) : .success(nil)
                }
            }
            // Ends when the deadline comes (or the request is cancelled): nil.
            group.addTask {
                for await _ in expiry {}
                return nil
            }
            var armed = ContinueOrClose.BodyArrival.State.unknown
            if arrival != .unknown, let context { armed = await context.prepareBody(continues: continues, deadline: (seconds, expired)) }
            if armed == .unknown {
                let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? NIOSingletons.posixEventLoopGroup.any()
                timer = loop.scheduleTask(in: .seconds(seconds)) { Task { expired() } }
            }
            // The work's outcome: first, or once the deadline cancelled it (then nil).
            while let next = await group.next() {
                group.cancelAll()
                if let outcome = next { return outcome }
            }
            return .success(nil)
        }
        expiring.finish()
        timer?.cancel()
        try Task.checkCancellation()
        return try outcome.get()
    }

    /// Whether the work of one `within` or its deadline came first: the first to say so wins.
    private final class Deadline: Sendable {
        /// 0: neither yet; 1: the work ended; 2: the deadline came.
        private let state = Atomic<Int>(0)
        /// The deadline came, the work still running: cancel it.
        func expire() -> Bool { state.compareExchange(expected: 0, desired: 2, ordering: .acquiringAndReleasing).exchanged }
        /// The work ended: whether it came first.
        func end() -> Bool { state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged }
    }

    /// Reads a refused request's body and drops it as it comes, within the same limits as
    /// `readBody` (its size, its time): whether it was read whole within them.
    static func discardBody(of request: Request, context: GatewayContext?, seconds: Int64) async -> Bool {
        let bodyMax = bodyByteCountMax(Routes.canonical(request.uri.path))
        if announcesMore(than: bodyMax, request) { return false }
        let body = request.body
        let whole = try? await within(seconds: seconds, context: context, continues: false) { () -> Bool in
            var count = 0
            for try await part in body {
                count += part.readableBytes
                if count > bodyMax { return false }
            }
            return true
        }
        return whole == true
    }

    /// Whether the request's `Content-Length` is over `bodyMax`: digits past what an `Int`
    /// holds are (up to 2^64 − 1, the HTTP parser lets them through).
    static func announcesMore(than bodyMax: Int, _ request: Request) -> Bool {
        guard let announced = request.headers[.contentLength] else { return false }
        guard let length = Int(announced) else { return !announced.isEmpty && announced.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } }
        return length > bodyMax
    }

    /// A body that could not be read whole: over its size (413) or its time (408).
    struct BodyRefusal: Error {
        let response: Response
    }

    /// A POST's body, read whole into the request (the generated code's decoding then
    /// reads it from memory): refused before it is read when its announced length is over
    /// `bodyByteCountMax`, else as soon as it passes it, or when it has not arrived whole
    /// within `seconds`. A client waiting for `100 Continue` is told first (ContinueOrClose).
    /// With the request, the numbers of its body that are not whole Int64 numbers (`StrictJSON`).
    static func readBody(of request: Request, context: GatewayContext, seconds: Int64) async throws -> Result<(request: Request, numbers: [String]), BodyRefusal> {
        let bodyMax = bodyByteCountMax(Routes.canonical(request.uri.path))
        // Made only when it is the answer (a problem document is JSON to encode).
        func tooLarge() -> BodyRefusal {
            BodyRefusal(response: ProblemResponse.make(
                status: 413, type: "content-too-large", title: "Content too large",
                detail: "the request's body is over \(bodyMax) bytes", headers: [.connection: "close"]))
        }
        if announcesMore(than: bodyMax, request) { return .failure(tooLarge()) }
        let body = request.body
        let collected: ByteBuffer?
        do {
            // The client told to send its body if it waits for `100 Continue`, first.
            collected = try await within(seconds: seconds, context: context) { try await body.collect(upTo: bodyMax) }
        } catch is NIOTooManyBytesError {
            return .failure(tooLarge())
        } catch let error as HTTPParserError {
            // A body that is not HTTP/1.1's framing (a chunk's size that is not a length): the
            // connection cannot be read on.
            return .failure(BodyRefusal(response: ProblemResponse.make(
                status: 400, type: "bad-request", title: "Bad request",
                detail: ContinueOrClose.describe(error).detail, headers: [.connection: "close"])))
        }
        guard let collected else {
            return .failure(BodyRefusal(response: ProblemResponse.make(
                status: 408, type: "request-timeout", title: "Request timeout",
                detail: "the request's body did not arrive within \(seconds) s", headers: [.connection: "close"])))
        }
        // Every body of the API is JSON: checked here, so that a fault is named (StrictJSON),
        // whatever its Content-Type says (the generated code reads `*/*` and `application/*`
        // as JSON too).
        let report = StrictJSON.check(collected.readableBytesView)
        if let problem = report.problem {
            return .failure(BodyRefusal(response: ProblemResponse.make(status: 400, type: "bad-request", title: "Bad request", detail: "the body is \(problem)")))
        }
        var read = request
        read.body = .init(buffer: collected)
        return .success((read, report.numbers))
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let allowed = allowed(request.uri.path) else {
            // No operation or page has this path, whatever the method: nothing of the request is read.
            if Dashboard.isPublic(Routes.canonical(request.uri.path)) { return Dashboard.noSuchPage() }
            return Self.notFound(request.uri.path)
        }
        guard allowed.contains(request.method) else {
            return ProblemResponse.make(
                status: 405, type: "method-not-allowed", title: "Method not allowed", detail: "\(request.method) is not an operation of \(request.uri.path)",
                headers: [.allow: allowed.map(\.rawValue).joined(separator: ", ")])
        }
        // A number in a path in one form only (the generated code reads `+1`, `007` and
        // `%31` as 1 and 7): one resource, one address.
        for (name, value) in routes.parameters(of: request.uri.path) where Self.integerPathParameters.contains(String(name)) {
            guard Self.isCanonicalNumber(value) else {
                return ProblemResponse.make(
                    status: 400, type: "bad-request", title: "Bad request",
                    detail: "\(name) must be written in decimal digits, with no sign and no leading zero (\(RefusalLog.oneLine(value.prefix(40))))")
            }
        }
        var request = request
        var numbers: [String] = []
        // A body is read before a place is taken (its client's connection waits for it, no
        // one else), within its size and time, and the bytes of a client's bodies being
        // received at once are bounded.
        if request.method == .post {
            let poster = AccessMiddleware.client ?? context.channel.remoteAddress.clientKey
            let bodyMax = Self.bodyByteCountMax(Routes.canonical(request.uri.path))
            let bytes = min(bodyMax, request.headers[.contentLength].flatMap { Int($0) }.map { max(0, $0) } ?? bodyMax)
            switch state.takeBody(poster, bytes: bytes) {
            case nil: break
            case .client?:
                return ProblemResponse.make(
                    status: 503, type: "busy", title: "Busy",
                    detail: "\(poster) is sending \(Self.postBytesPerClientMax >> 20) MiB of request bodies at once, the most one client may: retry once one has arrived",
                    headers: [.retryAfter: "1"])
            case .total?:
                return ProblemResponse.make(
                    status: 503, type: "busy", title: "Busy",
                    detail: "the gateway is receiving \(Self.postBytesTotalMax >> 20) MiB of request bodies at once from all its clients, the most it takes: retry shortly",
                    headers: [.retryAfter: "1"])
            }
            let read: Result<(request: Request, numbers: [String]), BodyRefusal>
            do {
                defer { state.endBody(poster, bytes: bytes) }
                read = try await Self.readBody(of: request, context: context, seconds: bodySeconds)
            }
            switch read {
            case let .success(body): (request, numbers) = body
            case let .failure(refusal): return refusal.response
            }
        }
        // /health and /metrics ask no node: they are never turned away.
        let path = Routes.canonical(request.uri.path)
        let counted = !["/health", "/metrics"].contains(path)
        let isPublic = Dashboard.isPublic(path)
        let place = counted ? HeldPlace(isPublic ? state.publicPlaces : state.places) : nil
        let entered = await place?.places.enter() ?? true
        guard entered else {
            let maximum = isPublic ? Self.publicInFlightMax : Self.inFlightMax
            return ProblemResponse.make(
                status: 503, type: "busy", title: "Busy",
                detail: "\(maximum) requests\(isPublic ? " of the public pages" : "") are being answered, and no place came free in time for this one (or too many wait): retry shortly",
                headers: [.retryAfter: "1"])
        }
        defer { place?.release() }
        // An error is a problem document whatever Accept says (RFC 9457): an EventSource
        // asks for text/event-stream only, and the generated code would refuse to answer
        // its 400 or 401 in another type.
        if let accept = request.headers[.accept], !accept.contains("problem+json") {
            var head = request.head
            head.headerFields[.accept] = accept + ", application/problem+json;q=0.1"
            request = Request(head: head, body: request.body)
        }
        do {
            var response = try await HeldPlace.$current.withValue(place) { try await next(request, context) }
            // The generated code percent-encodes header values ("/" as "%2F"); a Location is a path.
            if let location = response.headers[.location], location.utf8.contains(UInt8(ascii: "%")), let decoded = location.removingPercentEncoding {
                response.headers[.location] = decoded
            }
            return response
        } catch let error as ServerError where error.operationInput == nil {
            return ProblemResponse.make(
                status: 400, type: "bad-request", title: "Bad request",
                detail: "the request does not fit operation \(error.operationID): \(Self.describe(error.underlyingError, numbers: numbers))")
        } catch let error as ServerError {
            return ProblemResponse.make(status: 500, type: "internal", title: "Internal error", detail: "operation \(error.operationID): \(error.causeDescription)")
        } catch let error as HTTPError where error.status == .notFound {
            // No route: the router's bare 404, made a problem document like every other
            // error of the API, a line of text on the public side (pages, open data).
            if isPublic { return Dashboard.noSuchPage() }
            return Self.notFound(request.uri.path)
        }
    }

    static func notFound(_ path: String) -> Response {
        ProblemResponse.make(
            status: 404, type: "not-found", title: "Not found",
            detail: "\(path) is not an operation of this gateway: its operations are in its OpenAPI document (Sources/Gateway/openapi.yaml, Docs/API.md)")
    }
}
