import Foundation

/// A loopback port held by the test while it runs, on which no server ever answers:
/// bound and not listening, a connection there is refused at once; listening (with a
/// backlog, never accepting), a connection opens (the kernel completes it) and then
/// nothing is ever said.
public final class LoopbackPort: @unchecked Sendable {
    public let socket: Int32
    public let port: UInt16

    public init(listening: Bool) {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
        if listening { _ = listen(socket, 64) }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        self.socket = socket
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { Foundation.close(socket) }
}
