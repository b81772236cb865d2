import NIOCore
import Synchronization

/// Connections open per client address, at most: past it a new connection is closed as
/// soon as it is accepted, before anything is read, so that one client flooding the
/// listener with connections (idle ones are closed after the idle timeout, but until then
/// each holds a socket) cannot take the file descriptors every other client needs.
/// Counted per address by a handler in each connection's pipeline.
final class ConnectionLimit: Sendable {
    let perAddressMax: Int
    private let open = Mutex<[String: Int]>([:])
    /// Connections closed at once because their address had `perAddressMax` open.
    let refused = Atomic<Int>(0)

    init(perAddressMax: Int) { self.perAddressMax = max(1, perAddressMax) }

    /// Takes a place for `address`; false when it has none left.
    func enter(_ address: String) -> Bool {
        open.withLock { open in
            let count = open[address, default: 0]
            guard count < perAddressMax else { return false }
            open[address] = count + 1
            return true
        }
    }

    func leave(_ address: String) {
        open.withLock { open in
            let count = open[address, default: 0]
            open[address] = count > 1 ? count - 1 : nil
        }
    }

    /// Connections open now, all addresses together.
    var openCount: Int { open.withLock { $0.values.reduce(0, +) } }

    /// The handler to put in each new connection's pipeline.
    func handler() -> Handler { Handler(limit: self) }

    /// Counts its connection in while it is open; closes it at once when its address is over.
    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let limit: ConnectionLimit
        private var counted: String?

        init(limit: ConnectionLimit) { self.limit = limit }

        func handlerAdded(context: ChannelHandlerContext) {
            let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
            guard limit.enter(address) else {
                limit.refused.add(1, ordering: .relaxed)
                context.close(promise: nil)
                return
            }
            counted = address
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if let address = counted { limit.leave(address) }
            counted = nil
        }
    }
}
