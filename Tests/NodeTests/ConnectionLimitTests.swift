// The gateway's connection places on their own: per client (an IPv4 address, an IPv6
// /64) and in all.

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

    /// Past `totalMax` connections in all, a new one is refused whatever its address;
    /// one leaving frees a place; an address past its own share is refused first.
    @Test func connectionsStopAtTheTotalAndPerAddress() {
        let limit = ConnectionLimit(perAddressMax: 2, totalMax: 3)
        #expect(limit.enter("a") && limit.enter("a"))
        #expect(!limit.enter("a"))
        #expect(limit.enter("b"))
        #expect(!limit.enter("c"))
        #expect(limit.openCount == 3)
        limit.leave("a")
        #expect(limit.enter("c"))
        limit.leave("never entered")
        #expect(limit.openCount == 3)
    }
}
