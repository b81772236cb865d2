import CalissonCrypto
import Foundation
import Synchronization
import Wire

/// Why a client call failed.
public enum ClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case connect(String)
    case tls(String)
    case closed(String)
    case timeout
    case refused(String)

    public var description: String {
        switch self {
        case let .connect(reason): return "cannot connect: \(reason)"
        case let .tls(reason): return "TLS: \(reason)"
        case let .closed(reason): return "connection closed: \(reason)"
        case .timeout: return "no answer in time"
        case let .refused(reason): return "refused: \(reason)"
        }
    }
}

/// A client of a node's client port (partner back-ends, the query CLI): server-
/// authenticated TLS 1.3 (the node's certificate must chain to the consortium CA), then
/// requests answered in order. Blocking calls; safe from any thread but not concurrently.
public final class TransportClient: @unchecked Sendable {
    private let loop = EventLoop(name: "calisson-client")
    /// Touched on the client's loop thread only.
    private var link: ClientSession?
    private var stream: TCPStream?
    private let responses = Mutex<[Result<[UInt8], ClientError>]>([])
    private let arrived = DispatchSemaphore(value: 0)
    /// The TLS version and cipher negotiated.
    public private(set) var negotiated = ""

    public init(host: String, port: UInt16, ca: Certificate, chainId: String, timeoutMilliseconds: Int = 5_000) throws(ClientError) {
        let context: TLSContext
        do { context = try TLSContext(role: .client, identity: nil, trustedCA: ca, mutual: false) } catch {
            loop.shutdown()
            throw .tls("\(error)")
        }
        let ready = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<String, ClientError>?>(nil)
        // A new loop with an empty queue: it cannot refuse this first item.
        try? loop.execute { [self] in
            let stream = TCPStream(loop: loop)
            stream.connect(host: host, port: port) { [self] error in
                if let error {
                    stream.close()
                    outcome.withLock { $0 = .failure(.connect("\(error)")) }
                    ready.signal()
                    return
                }
                do {
                    let link = try ClientSession(context: context, chainId: chainId, write: { bytes in _ = stream.write(bytes) }, closeStream: {
                        stream.stopReading()
                        stream.close()
                    }, onReady: { negotiated in
                        outcome.withLock { $0 = $0 ?? .success(negotiated) }
                        ready.signal()
                    }, onResponse: { [self] result in
                        responses.withLock { $0.append(result) }
                        arrived.signal()
                    }, onClose: { reason in
                        outcome.withLock { $0 = $0 ?? .failure(.closed(reason)) }
                        ready.signal()
                    })
                    self.link = link
                    self.stream = stream
                    stream.startReading(onBytes: { [weak link] bytes in link?.receive(bytes) }, onEnd: { [weak link] error in
                        link?.close(reason: error.map { "\($0)" } ?? "closed by the node")
                    })
                    link.start()
                } catch {
                    stream.close()
                    outcome.withLock { $0 = .failure(error as? ClientError ?? .tls("\(error)")) }
                    ready.signal()
                }
            }
        }
        guard ready.wait(timeout: .now() + .milliseconds(timeoutMilliseconds)) == .success,
            let result = outcome.withLock({ $0 })
        else {
            close()
            throw .timeout
        }
        switch result {
        case let .success(negotiated): self.negotiated = negotiated
        case let .failure(error):
            close()
            throw error
        }
    }

    /// Sends one request and waits for its response.
    public func request(_ payload: [UInt8], timeoutMilliseconds: Int = 10_000) throws(ClientError) -> [UInt8] {
        guard payload.count <= WireLimits.envelopePayloadSizeMax else {
            throw .refused("request of \(payload.count) bytes over the limit of \(WireLimits.envelopePayloadSizeMax)")
        }
        return try exchange(FrameDecoder.frame(.request, payload), timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Sends `payloads` at once, pipelined on this one connection, and collects as many
    /// responses, in the order the node sends them (requests answered at once come back
    /// in order; a wait such as `waitFinal` may be overtaken). A node serves at most
    /// `clientRequestsInFlightMax` requests at a time per connection and closes one that
    /// sends more: from the close on, the results are failures.
    public func pipeline(_ payloads: [[UInt8]], timeoutMilliseconds: Int = 10_000) -> [Result<[UInt8], ClientError>] {
        let frames = payloads.map { FrameDecoder.frame(.request, $0) }
        do { try loop.execute { [self] in for frame in frames { link?.sendFrame(frame) } } } catch {
            return payloads.map { _ in .failure(.closed("client stopped")) }
        }
        let deadline = DispatchTime.now() + .milliseconds(timeoutMilliseconds)
        var results: [Result<[UInt8], ClientError>] = []
        while results.count < payloads.count {
            guard arrived.wait(timeout: deadline) == .success else {
                results += Array(repeating: .failure(.timeout), count: payloads.count - results.count)
                break
            }
            let result = responses.withLock { $0.removeFirst() }
            results.append(result)
            if case .failure = result {
                results += Array(repeating: result, count: payloads.count - results.count)
                break
            }
        }
        return results
    }

    /// Stops reading what the node sends (tests use it: a client that asks and never reads
    /// its answers).
    func stopReading() {
        try? loop.execute { [self] in stream?.stopReading() }
    }

    /// Sends requests and waits for nothing (tests use it, with `stopReading`).
    func send(requests payloads: [[UInt8]]) {
        try? loop.execute { [self] in for payload in payloads { link?.sendFrame(FrameDecoder.frame(.request, payload)) } }
    }

    /// Sends an empty heartbeat and waits for nothing (tests use it: a client that only
    /// keeps its connection open).
    func sendHeartbeat() {
        try? loop.execute { [self] in link?.sendFrame(FrameDecoder.frame(.heartbeat, [])) }
    }

    /// Sends raw frame bytes (tests use it to send what a well-behaved client never would).
    func exchange(_ frame: [UInt8], timeoutMilliseconds: Int) throws(ClientError) -> [UInt8] {
        do { try loop.execute { [self] in link?.sendFrame(frame) } } catch { throw .closed("client stopped") }
        guard arrived.wait(timeout: .now() + .milliseconds(timeoutMilliseconds)) == .success else { throw .timeout }
        let result = responses.withLock { $0.removeFirst() }
        return try result.get()
    }

    public func close() {
        try? loop.execute { [self] in link?.close(reason: "client closed") }  // refused: already stopping
        loop.shutdown()
    }
}

/// The client side of a client-port link over any byte stream: TLS (the node's certificate
/// must chain to `context`'s CA), the hellos, then request frames out and response frames
/// in, answered in order. The owner reads its stream and passes each chunk to `receive`;
/// what is to be written goes to `write`. Not thread-safe: every call on the stream's
/// thread (a libuv loop for `TransportClient`, a SwiftNIO event loop for the gateway).
public final class ClientSession {
    private let tls: TLSSession
    private let chainId: String
    private var decoder = FrameDecoder()
    private var helloSent = false
    private var established = false
    public private(set) var isClosed = false
    /// Bytes received and not yet answers: a frame still arriving (up to a frame's maximum).
    public var bufferedBytes: Int { decoder.buffered }
    private let write: ([UInt8]) -> Void
    private let closeStream: () -> Void
    private let onReady: (String) -> Void
    private let onResponse: (Result<[UInt8], ClientError>) -> Void
    private let onClose: (String) -> Void

    /// `onReady` once the node's hello arrived (with the TLS version and cipher);
    /// `onResponse` for each response in order, and a failure for each request sent after
    /// the close; `onClose` once, with why.
    public init(
        context: TLSContext, chainId: String, write: @escaping ([UInt8]) -> Void, closeStream: @escaping () -> Void,
        onReady: @escaping (String) -> Void, onResponse: @escaping (Result<[UInt8], ClientError>) -> Void, onClose: @escaping (String) -> Void
    ) throws(ClientError) {
        do { tls = try TLSSession(context: context, role: .client) } catch { throw .tls("\(error)") }
        self.chainId = chainId
        self.write = write
        self.closeStream = closeStream
        self.onReady = onReady
        self.onResponse = onResponse
        self.onClose = onClose
    }

    /// Starts the TLS handshake (the stream is connected).
    public func start() {
        do { try tls.start() } catch { return close(reason: "\(error)") }
        flush()
    }

    /// Bytes read from the stream.
    public func receive(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosed else { return }
        do {
            let plaintext = try tls.receive(bytes)
            if tls.isHandshakeDone && !helloSent {
                helloSent = true
                try tls.send(FrameDecoder.frame(.hello, Hello(versions: TransportLimits.protocolVersions, chainId: chainId, partnerID: "client").wireBytes))
            }
            decoder.append(plaintext)
            // An answer's handler may close the session: nothing after it is read.
            while !isClosed, let envelope = try decoder.next() {
                switch envelope.kind {
                case .hello where !established:
                    established = true
                    onReady(tls.negotiated)
                case .response:
                    onResponse(.success(envelope.payload))
                case .refusal:
                    flush()
                    return close(reason: "refused by the node: \(String(decoding: envelope.payload.prefix(TransportLimits.refusalBytesMax), as: UTF8.self))")
                default:
                    throw FrameError.unexpected(envelope.kind)
                }
            }
            guard !isClosed else { return }
            flush()
            if tls.peerClosed { close(reason: "closed by the node") }
        } catch {
            flush()
            close(reason: "\(error)")
        }
    }

    /// Sends one request's payload (a `ClientRequest`'s wire bytes).
    public func send(request payload: [UInt8]) { sendFrame(FrameDecoder.frame(.request, payload)) }

    /// Sends requests' payloads together: their frames in one TLS record (or as few as
    /// their size allows) and one write.
    public func send(requests payloads: [[UInt8]]) {
        guard payloads.count > 1 else { return payloads.first.map { send(request: $0) } ?? () }
        var frames: [UInt8] = []
        frames.reserveCapacity(payloads.reduce(0) { $0 + $1.count + 16 })  // each frame's prefix and envelope
        for payload in payloads { frames += FrameDecoder.frame(.request, payload) }
        sendFrame(frames)
    }

    func sendFrame(_ frame: [UInt8]) {
        guard !isClosed else { return onResponse(.failure(.closed("link closed"))) }
        do {
            try tls.send(frame)
            flush()
        } catch {
            close(reason: "\(error)")
        }
    }

    private func flush() {
        let bytes = tls.takeOutgoing()
        if !bytes.isEmpty { write(bytes) }
    }

    /// Closes the link and its stream; requests still unanswered then fail.
    public func close(reason: String) {
        guard !isClosed else { return }
        isClosed = true
        closeStream()
        onClose(reason)
        onResponse(.failure(.closed(reason)))
    }
}
