import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization

/// What a client's request body may do on its connection, which Hummingbird leaves to the
/// application: be asked for (`Expect: 100-continue`), or be left unread by an answer that
/// ends the connection (`Connection: close`). One handler in each connection's pipeline,
/// after the HTTP decoding.
///
/// `Expect: 100-continue` (RFC 9110, 10.1.1). A client that sends it (libcurl past 1 MiB,
/// Java's and .NET's clients when asked to, PHP on older libcurl past 1 KiB) sends the
/// request's head, then waits for `100 Continue` before the body: some for a second (curl),
/// some until the server answers. Without it the gateway waited for a body that was not
/// coming: each such request cost its client a second, or ended in `408` after the body's
/// time. The request middleware asks for the `100 Continue` (`Send`, a user outbound event)
/// just before it reads a body, once the request has passed what is decided from its head
/// alone (the access rules, the method, the announced length, its key's bodies at once). A
/// request answered before that gets no `100`, so its client never sends a body the gateway
/// will not read.
///
/// An answer written before its request's body has been read to its end (a refusal from the
/// head: `401`, `405`, `413` by the announced length..., or `408`, the body late; a GET
/// whose client announced a body) says `Connection: close` and ends the connection (RFC
/// 9112, 9.6). Hummingbird only honours a request's `Connection: close`; after any other
/// answer it reads the rest of the body, however long it is announced and however slowly
/// it comes, and keeps the connection for the next request: a client announcing a
/// terabyte, or sending a byte every few seconds, held its connection (one of the few an
/// address may have) for as long as it liked. Here, once such an answer is written:
/// - the gateway's side of the connection is shut (`close(mode: .output)`: the client reads
///   the answer, then the end of the stream);
/// - what the client still sends is dropped, never handed on (no next request is read);
///   past `lingerByteCountMax` bytes of body, no more is read at all;
/// - after `lingerSeconds` the connection is closed. Closing at once instead could reset
///   the connection while the client is still sending, and a reset may destroy the answer
///   before the client reads it: the lingering close of RFC 9112, 9.6, as web servers do it.
///
/// A next request pipelined behind one not answered yet (NIO reads ahead, and Hummingbird
/// keeps no request back) is held here, not handed on, and nothing more is read meanwhile:
/// once the answer before it is written, it is handed on if that answer keeps the
/// connection, and dropped, never handled, if it ends it. Without this, a request sent
/// behind one whose answer closes was handled (a submission admitted, say) and its answer
/// lost with the connection. NIO's own pipelining assistance does the same, but
/// Hummingbird turns it off.
///
/// An HTTP/1.0 request's `Expect: 100-continue` is ignored, as RFC 9110 asks, and its
/// connection ends with its answer unless it asked for keep-alive (`HTTP10Requests`, put
/// before the conversion to HTTP types, which drops the version).
///
/// Bytes that do not decode as a request (an unknown method, a malformed header, a head
/// over the decoder's bounds) are answered here, in turn, with a problem document naming
/// the fault (`431` for a head too large, else `400`), logged as a refusal, and the
/// connection ends as after any answer that closes. Hummingbird answered them with a bare
/// `400` and logged nothing. A fault inside a request's body (a malformed chunk) is the
/// reading of that body's to answer (`RequestShapeMiddleware.readBody`).
final class ContinueOrClose: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The event the middleware sends down the pipeline before it reads a body (or drops it
    /// unread, `continues` false: no `100 Continue` then). The handler says in `arrival`
    /// whether the body's end has been read already; if not, and with a `deadline`, it calls
    /// its `expired` on the connection's loop if the end is still not read after its
    /// seconds. The body's time is thus judged by what the connection received, however
    /// long the task that reads it waits for a thread.
    struct Send: Sendable {
        var continues = true
        var deadline: (seconds: Int64, expired: @Sendable () -> Void)?
        let arrival = BodyArrival()
    }

    /// What the handler found of a body, set on the loop before `Send`'s promise succeeds.
    final class BodyArrival: Sendable {
        enum State: Int { case unknown, ended, pending }
        private let state = Atomic<Int>(State.unknown.rawValue)
        var value: State { State(rawValue: state.load(ordering: .acquiring)) ?? .unknown }
        func set(_ value: State) { state.store(value.rawValue, ordering: .releasing) }
    }

    /// How long the connection is kept after an answer that closes it, at most.
    static let lingerSeconds: Int64 = 2
    /// The body bytes read and dropped meanwhile, at most; past them nothing more is read.
    static let lingerByteCountMax = 1 << 20
    /// Parts of requests held behind one not answered yet, at most: past it the connection is
    /// closed. NIO decodes a whole read ahead (up to 256 KiB): thousands of tiny pipelined
    /// requests held as decoded heads, megabytes a connection, for a client that never reads.
    static let heldPartsMax = 256

    /// The requests read and not yet answered, oldest first: NIO reads ahead, so a client
    /// that pipelines has a next request read while the previous is answered. The answer
    /// being written is the first's; a body part or an end belongs to the last.
    private var unanswered: [Unanswered] = []
    struct Unanswered {
        /// Its place among the connection's requests (a body's deadline names the request it is for).
        let number: UInt64
        /// It expects `100 Continue` and has neither been sent one nor sent any of its body.
        var awaiting: Bool
        /// Its end (the last of its body) has not been read.
        var bodyPending = true
        /// Its final answer says `Connection: close`: end the connection after it.
        var closeAfterAnswer = false
        /// The deadline of its body's end (`Send.deadline`), until the end is read.
        var deadline: Scheduled<Void>?
    }
    /// Requests read on the connection so far.
    private var requestsRead: UInt64 = 0
    /// A read the application asked for is out (passed on, its bytes not read yet).
    private var readOut = false
    /// The body deadline's clock: the time counted so far, and since when the read now out
    /// is. Only time with a read out counts: while the application reads nothing (its
    /// buffer of body parts full, its task waiting for a thread), the body's bytes wait in
    /// the socket, which is not the client's delay.
    private var bodyClock: (counted: TimeAmount, since: NIODeadline?) = (.zero, nil)

    /// Once an answer that closes is written: the body bytes dropped since (nil before).
    private var lingering: Int?
    /// The close at the end of the lingering.
    private var closing: Scheduled<Void>?

    /// What was read of the requests behind the one being answered, and the decoding errors
    /// of their bytes, in order: handed on once it is answered (`handOnHeld`), dropped if its
    /// answer ends the connection.
    private var held: [Held] = []
    enum Held {
        case part(HTTPRequestPart)
        case error(any Error)
        /// An inbound event behind them (the client's half-close: its end of input, which
        /// handed on before them would end the server's reading and lose them).
        case event(Any)
    }
    /// Whether a read was asked for while requests were held (made once they are handed on).
    private var readAsked = false

    /// Where the requests that do not decode are logged (nil: they are not).
    private let refusals: RefusalLog?
    private let logger: Logger?

    init(refusals: RefusalLog? = nil, logger: Logger? = nil) {
        self.refusals = refusals
        self.logger = logger
    }

    /// Whether a request's `Expect` field asks for `100 Continue` (case-insensitive token).
    static func expectsContinue(_ request: HTTPRequest) -> Bool {
        request.headerFields[values: .expect].contains { value in
            value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "100-continue" }
        }
    }

    /// Whether an answer's `Connection` field has the `close` option.
    static func closes(_ response: HTTPResponse) -> Bool { closes(response.headerFields) }

    /// Whether a `Connection` field has the `close` option.
    static func closes(_ fields: HTTPFields) -> Bool {
        fields[values: .connection].contains { value in
            value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "close" }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Before the conversion to HTTP types, which drops the request's version.
        guard let codec = try? context.pipeline.syncOperations.context(handlerType: HTTP1ToHTTPServerCodec.self) else { return }
        try? context.pipeline.syncOperations.addHandler(HTTP10Requests(), position: .before(codec.handler))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let dropped = lingering {
            // After an answer that closes: nothing more is a request.
            if case let .body(buffer) = part { lingering = dropped + buffer.readableBytes }
            return
        }
        // A request behind one not answered yet waits for that answer.
        if !held.isEmpty || (!unanswered.isEmpty && isHead(part)) {
            guard held.count < Self.heldPartsMax else {
                held.removeAll()
                if let refusals, let logger {
                    refusals.logUndecoded(
                        from: context.channel.remoteAddress.clientKey, status: 400,
                        problem: "over \(Self.heldPartsMax) request parts pipelined ahead of their answers: the connection is closed", logger: logger)
                }
                return context.close(promise: nil)
            }
            held.append(.part(part))
            return
        }
        handOn(part, context: context)
    }

    private func isHead(_ part: HTTPRequestPart) -> Bool {
        if case .head = part { return true }
        return false
    }

    private func handOn(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch part {
        case let .head(request):
            // A request that says `Connection: close` ends the connection after its answer,
            // as one whose answer says it (Hummingbird stops reading after it: a request held
            // behind it and handed on would be read by no one, and hold the connection).
            requestsRead += 1
            unanswered.append(Unanswered(
                number: requestsRead, awaiting: Self.expectsContinue(request), closeAfterAnswer: Self.closes(request.headerFields)))
        case .body:
            // The client sent its body without waiting (allowed).
            if !unanswered.isEmpty { unanswered[unanswered.count - 1].awaiting = false }
        case .end:
            if !unanswered.isEmpty {
                unanswered[unanswered.count - 1].awaiting = false
                unanswered[unanswered.count - 1].bodyPending = false
                unanswered[unanswered.count - 1].deadline?.cancel()
                unanswered[unanswered.count - 1].deadline = nil
            }
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// Hands on what was held, up to the head of a request that must wait in turn (the one
    /// just handed on is not answered yet), and reads on once nothing is held.
    private func handOnHeld(context: ChannelHandlerContext) {
        guard lingering == nil else { return held.removeAll() }
        var handed = false
        while let first = held.first {
            // A next request, or the bytes that did not decode as one, waits for the answer
            // to the one just handed on (an error handed on now would be the application's).
            if !unanswered.isEmpty {
                if case .part(.head) = first { break }
                if case .error = first { break }
            }
            held.removeFirst()
            handed = true
            switch first {
            case let .part(part): handOn(part, context: context)
            case let .error(error): passOn(error, context: context)
            case let .event(event): context.fireUserInboundEventTriggered(event)
            }
            // An error answered here ends the connection: nothing after it is handed on.
            if lingering != nil { held.removeAll() }
        }
        if handed { context.fireChannelReadComplete() }
        if held.isEmpty, readAsked {
            readAsked = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        // Past the bound, nothing more is read: the client's sends stop at its window, and
        // the lingering's end closes the connection.
        if let dropped = lingering, dropped > Self.lingerByteCountMax { return }
        // Nothing more while a request waits: what a client pipelines stays in its socket.
        if !held.isEmpty {
            readAsked = true
            return
        }
        if !readOut {
            readOut = true
            if bodyClock.since == nil { bodyClock.since = context.eventLoop.now }
        }
        context.read()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readOut = false
        if let since = bodyClock.since {
            bodyClock = (bodyClock.counted + (context.eventLoop.now - since), nil)
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // What the client sends after bytes that did not decode comes as this error (the
        // decoder reads no more requests): never a request, nothing to answer. It counts as
        // bytes read while lingering, whose bound stops the reading.
        if case let ByteToMessageDecoderError.dataReceivedInErrorState(_, data) = error {
            if let dropped = lingering { lingering = dropped + data.readableBytes }
            return
        }
        // Bytes after an answer that closes that do not decode as HTTP: nothing is answered
        // (the lingering's end closes the connection).
        guard lingering == nil else { return }
        // Bytes after a request read to its end are the next request's: their decoding
        // error waits too (an error of the connection itself does not).
        if error is HTTPParserError, !held.isEmpty || unanswered.last?.bodyPending == false {
            held.append(.error(error))
            return
        }
        passOn(error, context: context)
    }

    /// An error in turn: one decoding a next request is answered here; any other goes on.
    private func passOn(_ error: any Error, context: ChannelHandlerContext) {
        guard let parse = error as? HTTPParserError, unanswered.isEmpty, lingering == nil else {
            return context.fireErrorCaught(error)
        }
        let (status, title, detail) = Self.describe(parse)
        if let refusals, let logger {
            refusals.logUndecoded(from: context.channel.remoteAddress.clientKey, status: status, problem: "bad-request: \(detail)", logger: logger)
        }
        let body = ProblemResponse.body(status: status, type: "bad-request", title: title, detail: detail)
        let head = HTTPResponse(status: .init(code: status), headerFields: [
            .contentType: "application/problem+json", .contentLength: String(body.readableBytes), .connection: "close",
        ])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        closeAfter(end: wrapOutboundOut(.end(nil)), context: context, promise: nil)
    }

    /// The status, title and detail of the answer to bytes that do not decode as a request.
    static func describe(_ error: HTTPParserError) -> (status: Int, title: String, detail: String) {
        let fault: String
        switch error {
        case .headerOverflow:
            return (431, "Request header fields too large", "the request's head is over the gateway's bounds (its fields, their size or their number)")
        case .invalidMethod: fault = "its method is not an HTTP method"
        case .invalidVersion: fault = "its version is not HTTP/1.x"
        case .invalidURL, .invalidPath, .invalidQueryString, .invalidFragment, .invalidHost, .invalidPort: fault = "its target is not a valid URL path"
        case .invalidHeaderToken, .invalidCharactersUsed: fault = "a header field's name or value has a character HTTP does not allow"
        case .invalidContentLength, .unexpectedContentLength: fault = "its Content-Length is not a single length, or it comes with Transfer-Encoding"
        case .invalidChunkSize: fault = "a chunk's size is not a hexadecimal length"
        case .lfExpected, .invalidConstant, .strictModeAssertion: fault = "its line endings or framing are not HTTP/1.1's"
        default: fault = "it does not parse (\(error))"
        }
        return (400, "Bad request", "the bytes sent are not an HTTP/1.1 request: \(fault) (RFC 9112)")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Behind a held request (a client that sent its requests, then shut its side): after it.
        if !held.isEmpty, lingering == nil {
            held.append(.event(event))
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        for request in unanswered { request.deadline?.cancel() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing?.cancel()
        closing = nil
        held.removeAll()
        for request in unanswered { request.deadline?.cancel() }
        bodyClock = (.zero, nil)
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let send = event as? Send else { return context.triggerUserOutboundEvent(event, promise: promise) }
        // Requests are answered in order: the one whose body is about to be read is the first.
        if send.continues, unanswered.first?.awaiting == true {
            unanswered[0].awaiting = false
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        if let first = unanswered.first {
            send.arrival.set(first.bodyPending ? .pending : .ended)
            if first.bodyPending, let deadline = send.deadline {
                bodyClock = (.zero, readOut ? context.eventLoop.now : nil)
                armBodyDeadline(number: first.number, in: .seconds(deadline.seconds), total: .seconds(deadline.seconds), deadline.expired, context: context)
            }
        }
        promise?.succeed(())
    }

    /// Request `number`'s body deadline, looked at again `in` from now: `expired` once the
    /// clock counted `total` with its end still not read (`bodyClock`).
    private func armBodyDeadline(
        number: UInt64, in delay: TimeAmount, total: TimeAmount, _ expired: @escaping @Sendable () -> Void, context: ChannelHandlerContext
    ) {
        let handler = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        unanswered[0].deadline?.cancel()
        unanswered[0].deadline = context.eventLoop.scheduleTask(in: delay) {
            let (this, context) = handler.value
            // Its end read meanwhile, or it answered (another request first now): nothing to cut.
            guard let first = this.unanswered.first, first.number == number, first.bodyPending else { return }
            let counted = this.bodyClock.counted + (this.bodyClock.since.map { context.eventLoop.now - $0 } ?? .zero)
            guard counted >= total else {
                // The application read nothing for part of the time: the rest is still to come.
                return this.armBodyDeadline(number: number, in: total - counted, total: total, expired, context: context)
            }
            expired()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case var .head(response) where response.status.kind != .informational && !unanswered.isEmpty:
            unanswered[0].awaiting = false
            if unanswered[0].bodyPending { response.headerFields[.connection] = "close" }
            unanswered[0].closeAfterAnswer = unanswered[0].closeAfterAnswer || Self.closes(response)
            context.write(wrapOutboundOut(.head(response)), promise: promise)
        case .end:
            let close = unanswered.first?.closeAfterAnswer == true
            if !unanswered.isEmpty { unanswered.removeFirst().deadline?.cancel() }
            guard close, lingering == nil else {
                context.write(data, promise: promise)
                // The next request, held, is handed on (after this write, not within it).
                if !held.isEmpty {
                    let handler = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    context.eventLoop.execute { handler.value.0.handOnHeld(context: handler.value.1) }
                }
                return
            }
            closeAfter(end: data, context: context, promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }

    /// Writes an answer's end, then ends the connection: its output shut once the answer is
    /// written, what the client still sends read and dropped, closed after `lingerSeconds`.
    private func closeAfter(end data: NIOAny, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        lingering = 0
        // What a client sent behind this request is never handled; what it still sends
        // is read (and dropped) until the lingering's end.
        held.removeAll()
        if readAsked {
            readAsked = false
            context.read()
        }
        // Once the answer is written (shutting the output at once could cut it short).
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.cascade(to: promise)
        let channel = context.channel
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        written.futureResult.whenComplete { _ in
            let shut = channel.eventLoop.makePromise(of: Void.self)
            channel.close(mode: .output, promise: shut)
            // A channel that cannot shut its output alone is closed whole.
            shut.futureResult.whenFailure { _ in channel.close(promise: nil) }
            guard channel.isActive else { return }
            handler.value.closing = channel.eventLoop.scheduleTask(in: .seconds(Self.lingerSeconds)) { channel.close(promise: nil) }
        }
        context.writeAndFlush(data, promise: written)
    }
}

extension GatewayContext {
    /// Tells a client waiting for `100 Continue` to send its body (nothing when it did not
    /// ask, or already sent it; nor when `continues` is false, the body to be dropped).
    /// Awaited, so the `100` is written before the body is read. Says whether the body's end
    /// has been read from the connection already, and, when it has not and a deadline is
    /// given, arms it (`ContinueOrClose.Send`); `.unknown` without ContinueOrClose in the
    /// pipeline.
    @discardableResult
    func prepareBody(continues: Bool = true, deadline: (seconds: Int64, expired: @Sendable () -> Void)? = nil) async -> ContinueOrClose.BodyArrival.State {
        let send = ContinueOrClose.Send(continues: continues, deadline: deadline)
        try? await channel.triggerUserOutboundEvent(send).get()
        return send.arrival.value
    }
}

/// An HTTP/1.0 request, before the conversion to HTTP types, which drops the version:
/// its `Expect` ignored (RFC 9110, 10.1.1: a server MUST ignore a 100-continue expectation
/// in an HTTP/1.0 request; such a client sends its body without waiting, or not at all),
/// and, unless it asks for `Connection: keep-alive`, `Connection: close` added, so that the
/// connection ends with the answer, as HTTP/1.0 has it (it was kept until the idle
/// timeout, 60 s, by default).
final class HTTP10Requests: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case var .head(head) = unwrapInboundIn(data), head.version.major < 1 || (head.version.major == 1 && head.version.minor == 0) else {
            return context.fireChannelRead(data)
        }
        head.headers.remove(name: "expect")
        let keepAlive = head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "keep-alive" }
        if !keepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
