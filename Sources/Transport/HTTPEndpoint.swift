import Foundation

/// A minimal HTTP/1.1 endpoint on the loop for operators: `GET` (and `HEAD`, the same
/// head without the body), one request per connection, answered by `handler(path)` and
/// closed. Meant for a local port (Prometheus scrapes, health checks). Bounded against a
/// client that misbehaves (a scraper leaking connections, a local process probing): a
/// request over `requestBytesMax` is refused (413), a connection whose request and answer
/// are not through within `requestMilliseconds` is closed, and past `connectionsMax` open a
/// new connection is closed as soon as it is accepted, so that such a client never holds
/// more than that many of the node's file descriptors, which its peers and its database need.
public final class HTTPEndpoint: @unchecked Sendable {
    public static let requestBytesMax = 8 * 1024
    public static let connectionsMax = 64
    public static let requestMilliseconds: UInt64 = 5_000
    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
        public var headers: [(String, String)]
        public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String, headers: [(String, String)] = []) {
            self.status = status
            self.contentType = contentType
            self.body = body
            self.headers = headers
        }
    }

    let loop: EventLoop
    private var listener: TCPListener?
    private var open: [ObjectIdentifier: (stream: TCPStream, deadline: LoopTimer)] = [:]
    public private(set) var port: UInt16 = 0
    /// Connections closed at once because `connectionsMax` were open.
    public private(set) var refusedCount = 0

    public init(loop: EventLoop) { self.loop = loop }

    /// Listens (on the loop thread; call from a loop callback or `execute`).
    public func start(host: String, port: UInt16, handler: @escaping (String) -> Response) throws {
        assert(loop.isOnLoop, "HTTPEndpoint.start off its loop")
        let listener = TCPListener(loop: loop)
        try listener.listen(host: host, port: port) { [weak self] stream in self?.serve(stream, handler) }
        self.listener = listener
        self.port = listener.port
    }

    private func serve(_ stream: TCPStream, _ handler: @escaping (String) -> Response) {
        assert(loop.isOnLoop, "HTTPEndpoint.serve off its loop")
        guard open.count < Self.connectionsMax else {
            refusedCount += 1
            stream.close()
            return
        }
        let id = ObjectIdentifier(stream)
        let deadline = LoopTimer(loop: loop)
        open[id] = (stream, deadline)
        let forget = { [weak self] in
            guard let self, let entry = self.open.removeValue(forKey: id) else { return }
            entry.deadline.close()
        }
        deadline.start(after: Self.requestMilliseconds) { [weak stream] in
            forget()
            stream?.close()
        }
        var request: [UInt8] = []
        let finish = { [weak stream] (response: Response, withBody: Bool) in
            guard let stream else { return }
            let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large", 503: "Service Unavailable"][response.status] ?? "Status"
            let body = Array(response.body.utf8)
            let extra = response.headers.map { "\($0.0): \($0.1)\r\n" }.joined()
            let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(body.count)\r\n\(extra)Connection: close\r\n\r\n"
            stream.stopReading()
            // Close once the response is written (closing first would cancel the write); a
            // client that does not read it is closed at the deadline, still counted until then.
            let written = stream.write(Array(head.utf8) + (withBody ? body : []), completion: { [weak stream] in
                forget()
                stream?.close()
            })
            if !written {
                forget()
                stream.close()
            }
        }
        stream.startReading(onBytes: { bytes in
            request += bytes
            guard request.count <= Self.requestBytesMax else { return finish(Response(status: 413, body: "request too large\n"), true) }
            guard let end = String(decoding: request, as: UTF8.self).range(of: "\r\n\r\n") else { return }
            let head = String(decoding: request, as: UTF8.self)[..<end.lowerBound]
            let parts = head.split(separator: "\r\n").first?.split(separator: " ") ?? []
            guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return finish(Response(status: 400, body: "not an HTTP/1.1 request line\n"), true) }
            guard parts[0] == "GET" || parts[0] == "HEAD" else {
                return finish(Response(status: 405, body: "GET or HEAD only\n", headers: [("Allow", "GET, HEAD")]), true)
            }
            finish(handler(String(parts[1])), parts[0] == "GET")
        }, onEnd: { [weak stream] _ in
            forget()
            stream?.close()
        })
    }

    public func stop() {
        assert(loop.isOnLoop, "HTTPEndpoint.stop off its loop")
        listener?.close()
        for entry in open.values {
            entry.deadline.close()
            entry.stream.close()
        }
        open = [:]
    }
}

extension HTTPEndpoint {
    /// Fetches `path` from an endpoint on 127.0.0.1 (blocking; for tools and tests): the
    /// whole response, status line and headers included; nil if nothing answers within
    /// `timeoutSeconds` a read.
    public static func get(port: UInt16, _ path: String, timeoutSeconds: Int = 2) -> String? {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(descriptor, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 8_192)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        return String(decoding: response, as: UTF8.self)
    }
}
