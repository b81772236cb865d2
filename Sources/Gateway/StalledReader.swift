import NIOCore

/// Closes a connection whose client stopped reading what it asked for. While an answer is
/// being written, the HTTP server's idle timeout does not run (an event feed is long), and
/// nothing bounds how long a write may wait: a client that asks and never reads held its
/// connection, its task and the answer's buffered bytes for ever (an event feed's place
/// was given back after its 10 s, the rest was not). Once the socket takes no more (the
/// channel unwritable: over NIO's high-water mark), the client has `timeout` to take
/// enough for the channel to be writable again (below NIO's low-water mark, 32 KiB) before
/// the connection is closed. A slow reader that reads keeps it (large answers are written
/// in parts of 32 KiB: `Dashboard.body`); one that stopped does not.
final class StalledReaderTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let timeout: TimeAmount
    /// Counts the connections closed so (`stalledReaders`).
    private let limit: ConnectionLimit
    private var scheduled: Scheduled<Void>?

    init(timeout: TimeAmount, limit: ConnectionLimit) {
        self.timeout = timeout
        self.limit = limit
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            scheduled?.cancel()
            scheduled = nil
        } else if scheduled == nil {
            let channel = context.channel, limit = limit
            scheduled = context.eventLoop.scheduleTask(in: timeout) {
                guard !channel.isWritable else { return }
                limit.stalledReaders.add(1, ordering: .relaxed)
                channel.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
    }
}
