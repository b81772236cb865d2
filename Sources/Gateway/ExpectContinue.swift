import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// `Expect: 100-continue` (RFC 9110, 10.1.1), which Hummingbird leaves to the application.
/// A client that sends it (libcurl past 1 MiB, Java's and .NET's clients when asked to, PHP
/// on older libcurl past 1 KiB) sends the request's head, then waits for `100 Continue`
/// before the body: some for a second (curl), some until the server answers. Without it
/// the gateway waited for a body that was not coming: each such request cost its client a
/// second, or ended in `408` after the body's time.
///
/// One handler in each connection's pipeline, after the HTTP decoding:
/// - the request middleware asks for the `100 Continue` (`Send`, a user outbound event)
///   just before it reads a body, once the request has passed what is decided from its
///   head alone (the access rules, the method, the announced length, a place among those
///   answered at once);
///   a request answered before that gets no `100`, so its client never sends a body the
///   gateway will not read;
/// - a final answer written while its request's body is still awaited (the client was not
///   told to go on, and sent nothing) carries `Connection: close`, and the connection is
///   closed once it is written: the client may then send the body or not, and either way
///   nothing it sends later can be read as the head of a next request.
final class ExpectContinue: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The event the middleware sends down the pipeline before it reads a body.
    struct Send: Sendable {}

    /// The requests read and not yet answered, oldest first: NIO reads ahead, so a client
    /// that pipelines has a next request read while the previous is answered. The answer
    /// being written is the first's; a body part or an end belongs to the last.
    private var unanswered: [Unanswered] = []
    struct Unanswered {
        /// It expects `100 Continue` and has neither been sent one nor sent any of its body.
        var awaiting: Bool
        /// Its final answer went out while its body was awaited: close after that answer.
        var closeAfterAnswer = false
    }

    /// Whether a request's `Expect` field asks for `100 Continue` (case-insensitive token).
    static func expectsContinue(_ request: HTTPRequest) -> Bool {
        request.headerFields[values: .expect].contains { value in
            value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "100-continue" }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(request):
            unanswered.append(Unanswered(awaiting: Self.expectsContinue(request)))
        case .body, .end:
            // The client sent its body without waiting (allowed), or it had none.
            if !unanswered.isEmpty { unanswered[unanswered.count - 1].awaiting = false }
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is Send else { return context.triggerUserOutboundEvent(event, promise: promise) }
        // Requests are answered in order: the one whose body is about to be read is the first.
        if unanswered.first?.awaiting == true {
            unanswered[0].awaiting = false
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        promise?.succeed(())
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case var .head(response) where unanswered.first?.awaiting == true && response.status.kind != .informational:
            unanswered[0].awaiting = false
            unanswered[0].closeAfterAnswer = true
            response.headerFields[.connection] = "close"
            context.write(wrapOutboundOut(.head(response)), promise: promise)
        case .end:
            let close = unanswered.first?.closeAfterAnswer == true
            if !unanswered.isEmpty { unanswered.removeFirst() }
            guard close else { return context.write(data, promise: promise) }
            // Closed once the answer is written (closing at once could cut it short).
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
            context.writeAndFlush(data, promise: written)
        default:
            context.write(data, promise: promise)
        }
    }
}

extension GatewayContext {
    /// Tells a client waiting for `100 Continue` to send its body (nothing when it did not
    /// ask, or already sent it). Awaited, so the `100` is written before the body is read.
    func continueBody() async {
        try? await channel.triggerUserOutboundEvent(ExpectContinue.Send()).get()
    }
}
