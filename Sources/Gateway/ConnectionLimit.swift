import NIOCore
import Synchronization

/// Connections open per client address, and in all, at most. Past its address's share a
/// new connection is closed as soon as it is accepted, before anything is read, so that one
/// client flooding the listener with connections (idle ones are closed after the idle
/// timeout, but until then each holds a socket) cannot take the file descriptors every
/// other client and the node connections need. Past the total, the address holding the
/// most connections gives its oldest up to the newcomer (unless the newcomer's is that
/// address), or failing that the IPv6 /48 holding the most (`givingWay`): a few addresses
/// holding every place (16 at 256 each, the default), or one network's /64s, are thus the
/// ones that make room, not the partners' back-ends. An address is an IPv4 address or
/// an IPv6 /64 (`clientKey`: one host may have 2^64 addresses). Counted by a handler in
/// each connection's pipeline.
final class ConnectionLimit: Sendable {
    let perAddressMax: Int
    let totalMax: Int
    private struct Open {
        /// Per address, its connections in the order they came: a number, and how to close it.
        var byAddress: [String: [(number: UInt64, close: @Sendable () -> Void)]] = [:]
        var total = 0
        var numbered: UInt64 = 0
    }
    private let open = Mutex(Open())
    /// Connections closed at once because their address had `perAddressMax` open, or
    /// `totalMax` were open in all and theirs held the most; and connections closed to make
    /// room for a newcomer.
    let refused = Atomic<Int>(0)
    let evicted = Atomic<Int>(0)
    /// Connections closed because their client stopped reading an answer (`StalledReaderTimeout`).
    let stalledReaders = Atomic<Int>(0)

    init(perAddressMax: Int, totalMax: Int = .max) {
        self.perAddressMax = max(1, perAddressMax)
        self.totalMax = max(1, totalMax)
    }

    /// Takes a place for `address`: its number (for `leave`), or nil when it has none left.
    /// At the total, the address with the most connections closes its oldest (`close`).
    func enter(_ address: String, close: @escaping @Sendable () -> Void = {}) -> UInt64? {
        let (number, evicting) = open.withLock { open -> (UInt64?, (@Sendable () -> Void)?) in
            let count = open.byAddress[address]?.count ?? 0
            guard count < perAddressMax else { return (nil, nil) }
            var evicting: (@Sendable () -> Void)?
            if open.total >= totalMax {
                guard let giving = Self.givingWay(open.byAddress, to: address, holding: count), let held = open.byAddress[giving] else { return (nil, nil) }
                evicting = held[0].close
                open.byAddress[giving] = held.count > 1 ? Array(held.dropFirst()) : nil
                open.total -= 1
            }
            open.numbered += 1
            open.byAddress[address, default: []].append((open.numbered, close))
            open.total += 1
            return (open.numbered, evicting)
        }
        if let evicting {
            evicted.add(1, ordering: .relaxed)
            evicting()
        }
        return number
    }

    /// The address whose oldest connection gives way to a newcomer from `address` (holding
    /// `count`) when every place is taken, or nil (the newcomer is refused): the address
    /// holding the most, if it holds more than the newcomer would; failing that, within the
    /// IPv6 /48 holding the most, if it holds more than the newcomer's would, its address
    /// with the oldest connection. One network spreading its connections over 4,096 of its
    /// 65,536 /64s held every place, each /64 holding one, and no newcomer got in.
    static func givingWay(_ byAddress: [String: [(number: UInt64, close: @Sendable () -> Void)]], to address: String, holding count: Int) -> String? {
        if let (heaviest, held) = byAddress.max(by: { $0.value.count < $1.value.count }), held.count > count + 1, heaviest != address {
            return heaviest
        }
        var groups: [String: Int] = [:]
        for (key, held) in byAddress { if let group = group(of: key) { groups[group, default: 0] += held.count } }
        let newcomers = group(of: address)
        guard let (heaviest, held) = groups.max(by: { $0.value < $1.value }), heaviest != newcomers,
            held > (newcomers.flatMap { groups[$0] } ?? 0) + 1
        else { return nil }
        return byAddress.filter { group(of: $0.key) == heaviest }.min { ($0.value.first?.number ?? .max) < ($1.value.first?.number ?? .max) }?.key
    }

    /// An IPv6 client's /48 (from its /64's key, `clientKey`); nil for an IPv4 address.
    static func group(of key: String) -> String? {
        guard key.hasSuffix("::/64") else { return nil }
        let groups = key.dropLast(5).split(separator: ":", omittingEmptySubsequences: false)
        guard groups.count == 4 else { return nil }
        return groups.prefix(3).joined(separator: ":") + "::/48"
    }

    /// Gives the place of connection `number` of `address` back (nothing if it was given
    /// up to a newcomer already).
    func leave(_ address: String, _ number: UInt64) {
        open.withLock { open in
            guard var held = open.byAddress[address], let index = held.firstIndex(where: { $0.number == number }) else { return }
            held.remove(at: index)
            open.byAddress[address] = held.isEmpty ? nil : held
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
        private var counted: (address: String, number: UInt64)?

        init(limit: ConnectionLimit) { self.limit = limit }

        func handlerAdded(context: ChannelHandlerContext) {
            let address = context.channel.remoteAddress.clientKey
            let channel = context.channel
            guard let number = limit.enter(address, close: { channel.close(promise: nil) }) else {
                limit.refused.add(1, ordering: .relaxed)
                context.close(promise: nil)
                return
            }
            counted = (address, number)
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if let counted { limit.leave(counted.address, counted.number) }
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
