import NIOCore
import Synchronization

/// Connections open per client address, and in all, at most: past either a new connection
/// is closed as soon as it is accepted, before anything is read, so that one client
/// flooding the listener with connections (idle ones are closed after the idle timeout,
/// but until then each holds a socket), or a few addresses together, cannot take the file
/// descriptors every other client and the node connections need. An address is an IPv4
/// address or an IPv6 /64 (`clientKey`: one host may have 2^64 addresses). Counted by a
/// handler in each connection's pipeline.
final class ConnectionLimit: Sendable {
    let perAddressMax: Int
    let totalMax: Int
    private let open = Mutex<(byAddress: [String: Int], total: Int)>(([:], 0))
    /// Connections closed at once because their address had `perAddressMax` open, or
    /// `totalMax` were open in all.
    let refused = Atomic<Int>(0)

    init(perAddressMax: Int, totalMax: Int = .max) {
        self.perAddressMax = max(1, perAddressMax)
        self.totalMax = max(1, totalMax)
    }

    /// Takes a place for `address`; false when it has none left, or none is left in all.
    func enter(_ address: String) -> Bool {
        open.withLock { open in
            let count = open.byAddress[address, default: 0]
            guard count < perAddressMax, open.total < totalMax else { return false }
            open.byAddress[address] = count + 1
            open.total += 1
            return true
        }
    }

    func leave(_ address: String) {
        open.withLock { open in
            guard let count = open.byAddress[address] else { return }
            open.byAddress[address] = count > 1 ? count - 1 : nil
            open.total -= 1
        }
    }

    /// Connections open now, all addresses together.
    var openCount: Int { open.withLock { $0.total } }

    /// The handler to put in each new connection's pipeline.
    func handler() -> Handler { Handler(limit: self) }

    /// Counts its connection in while it is open; closes it at once when its address is over.
    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let limit: ConnectionLimit
        private var counted: String?

        init(limit: ConnectionLimit) { self.limit = limit }

        func handlerAdded(context: ChannelHandlerContext) {
            let address = context.channel.remoteAddress.clientKey
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

extension Optional where Wrapped == SocketAddress {
    /// The client a per-address limit counts: an IPv4 address (also when it reaches an IPv6
    /// listener, as ::ffff:a.b.c.d), or an IPv6 address's /64 (what one subscriber or host
    /// is given: counting each of its 2^64 addresses apart would give it as many places).
    var clientKey: String {
        guard let self else { return "unknown" }
        guard case let .v6(address) = self else { return self.ipAddress ?? "unknown" }
        let bytes = withUnsafeBytes(of: address.address.sin6_addr) { Array($0) }
        guard bytes.count == 16 else { return self.ipAddress ?? "unknown" }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return bytes[12..<16].map { "\($0)" }.joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return groups.joined(separator: ":") + "::/64"
    }
}
