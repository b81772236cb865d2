// The gateway's connection places on their own: per client (an IPv4 address, an IPv6
// /64) and in all.

import CalissonTestKit
@testable import Gateway
import NIOCore
import Testing

@Suite struct ConnectionLimitTests {
    /// A client is an IPv4 address, also as an IPv6 listener sees it, or an IPv6 /64: one
    /// host's 2^64 addresses once each had their own places.
    @Test func aClientIsAnIPv4AddressOrAnIPv6Slash64() throws {
        func key(_ address: String) throws -> String { Optional(try SocketAddress(ipAddress: address, port: 443)).clientKey }
        #expect(try key("192.0.2.7") == "192.0.2.7")
        #expect(try key("::ffff:192.0.2.7") == "192.0.2.7")
        #expect(try key("2001:db8:a:b:1:2:3:4") == "2001:db8:a:b::/64")
        #expect(try key("2001:db8:a:b:ffff:ffff:ffff:ffff") == "2001:db8:a:b::/64")
        #expect(try key("2001:db8:a:c::1") == "2001:db8:a:c::/64")
        #expect(try key("::1") == "0:0:0:0::/64")
        #expect(Optional<SocketAddress>.none.clientKey == "unknown")
    }

    /// An address past its own share is refused; past `totalMax` in all, the address
    /// holding the most connections gives its oldest up to a newcomer from elsewhere, and a
    /// newcomer from that address (or when no address holds more than the newcomer's
    /// would) is refused; one leaving frees a place.
    @Test func connectionsStopPerAddressAndTheHeaviestAddressMakesRoom() {
        let limit = ConnectionLimit(perAddressMax: 3, totalMax: 4)
        let closed = Locked<[String]>([])
        func enter(_ address: String, _ name: String) -> UInt64? { limit.enter(address) { closed.withLock { $0.append(name) } } }
        let a1 = enter("a", "a1"), a2 = enter("a", "a2"), a3 = enter("a", "a3")
        #expect(a1 != nil && a2 != nil && a3 != nil)
        #expect(enter("a", "a4") == nil)
        #expect(enter("b", "b1") != nil)
        #expect(limit.openCount == 4)
        // Full: "a" holds the most, its oldest makes room for "c".
        #expect(enter("c", "c1") != nil)
        #expect(closed.withLock { $0 } == ["a1"] && limit.openCount == 4)
        // "a" itself, or nobody holding more than two: refused.
        #expect(enter("a", "a5") == nil)
        #expect(enter("d", "d1") != nil && closed.withLock { $0 } == ["a1", "a2"])
        #expect(enter("e", "e1") == nil, "a, b, c and d hold one each")
        // The evicted connection's leave changes nothing; another's frees its place.
        limit.leave("a", a1!)
        #expect(limit.openCount == 4)
        limit.leave("a", a3!)
        #expect(limit.openCount == 3 && enter("e", "e1") != nil)
        limit.leave("never entered", 7)
        #expect(limit.openCount == 4)
    }

    /// Every place held by one network's /64s, one each: the /48 holding the most gives way
    /// (its oldest connection) to a newcomer from elsewhere; a newcomer from that /48 is
    /// refused. Before, no address held more than a newcomer would, and every newcomer was
    /// refused: a /52 took the gateway.
    @Test func oneNetworkSpreadOverItsSlash64sMakesRoom() {
        let limit = ConnectionLimit(perAddressMax: 3, totalMax: 4)
        let closed = Locked<[String]>([])
        func enter(_ address: String) -> UInt64? { limit.enter(address) { closed.withLock { $0.append(address) } } }
        for index in 0..<3 { #expect(enter("2001:db8:a:\(index)::/64") != nil) }
        #expect(enter("192.0.2.7") != nil)
        #expect(enter("2001:db8:a:9::/64") == nil, "from the /48 holding the most")
        #expect(enter("2001:db8:b:1::/64") != nil && closed.withLock { $0 } == ["2001:db8:a:0::/64"])
        #expect(enter("198.51.100.1") != nil && closed.withLock { $0 } == ["2001:db8:a:0::/64", "2001:db8:a:1::/64"])
        // Now 2001:db8:a::/48 holds one, as the others: a newcomer is refused.
        #expect(enter("203.0.113.5") == nil)
        #expect(ConnectionLimit.group(of: "2001:db8:a:b::/64") == "2001:db8:a::/48" && ConnectionLimit.group(of: "192.0.2.7") == nil)
    }

    /// The public pages' rate per address: a full table forgets only buckets unused for a
    /// second (full again, the same as none); with none such, a new address waits, rather
    /// than one in use being forgotten (rotating over more addresses than the table holds
    /// once gave a full bucket at each request).
    @Test func thePublicRateForgetsOnlyUnusedAddresses() {
        let limiter = PublicLimiter()
        let start = ContinuousClock.now
        for _ in 0..<Int(PublicLimiter.rate) { #expect(limiter.take("a", now: start, addressesMax: 3) == nil) }
        #expect(limiter.take("a", now: start, addressesMax: 3) == 1)
        #expect(limiter.take("b", now: start, addressesMax: 3) == nil && limiter.take("c", now: start, addressesMax: 3) == nil)
        // Full, every bucket in use: a new address waits, and "a" is still limited.
        #expect(limiter.take("d", now: start + .milliseconds(500), addressesMax: 3) == 1)
        #expect(limiter.take("a", now: start + .milliseconds(500), addressesMax: 3) == nil)
        #expect(limiter.take("e", now: start + .milliseconds(600), addressesMax: 3) == 1)
        // "b" and "c" unused for over a second: forgotten, "d" taken in; "a" is not.
        #expect(limiter.take("d", now: start + .milliseconds(1_200), addressesMax: 3) == nil)
        #expect(limiter.take("e", now: start + .milliseconds(1_300), addressesMax: 3) == nil)
        #expect(limiter.take("f", now: start + .milliseconds(1_400), addressesMax: 3) == 1)
    }
}
