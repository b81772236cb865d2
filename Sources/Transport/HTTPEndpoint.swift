import Foundation

/// A minimal HTTP/1.1 endpoint on the loop for operators: `GET` only, one request per
/// connection, answered by `handler(path)` and closed. Meant for a local port
/// (Prometheus scrapes, health checks); requests over `requestBytesMax` are refused.
public final class HTTPEndpoint: @unchecked Sendable {
    public static let requestBytesMax = 8 * 1024
    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
        public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    let loop: EventLoop
    private var listener: TCPListener?
    private var open: [ObjectIdentifier: TCPStream] = [:]
    public private(set) var port: UInt16 = 0

    public init(loop: EventLoop) { self.loop = loop }

    /// Listens (on the loop thread; call from a loop callback or `execute`).
    public func start(host: String, port: UInt16, handler: @escaping (String) -> Response) throws {
        let listener = TCPListener(loop: loop)
        try listener.listen(host: host, port: port) { [weak self] stream in self?.serve(stream, handler) }
        self.listener = listener
        self.port = listener.port
    }

    private func serve(_ stream: TCPStream, _ handler: @escaping (String) -> Response) {
        open[ObjectIdentifier(stream)] = stream
        var request: [UInt8] = []
        let finish = { [weak self, weak stream] (response: Response) in
            guard let self, let stream else { return }
            let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Content Too Large", 503: "Service Unavailable"][response.status] ?? "Status"
            let body = Array(response.body.utf8)
            let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            stream.stopReading()
            self.open[ObjectIdentifier(stream)] = nil
            // Close once the response is written (closing first would cancel the write).
            if !stream.write(Array(head.utf8) + body, completion: { [weak stream] in stream?.close() }) { stream.close() }
        }
        stream.startReading(onBytes: { bytes in
            request += bytes
            guard request.count <= Self.requestBytesMax else { return finish(Response(status: 413, body: "request too large\n")) }
            guard let end = String(decoding: request, as: UTF8.self).range(of: "\r\n\r\n") else { return }
            let head = String(decoding: request, as: UTF8.self)[..<end.lowerBound]
            let parts = head.split(separator: "\r\n").first?.split(separator: " ") ?? []
            guard parts.count == 3, parts[0] == "GET", parts[2].hasPrefix("HTTP/1.") else {
                return finish(Response(status: 400, body: "GET only\n"))
            }
            finish(handler(String(parts[1])))
        }, onEnd: { [weak self, weak stream] _ in
            guard let self, let stream else { return }
            stream.close()
            self.open[ObjectIdentifier(stream)] = nil
        })
    }

    public func stop() {
        listener?.close()
        for stream in open.values { stream.close() }
        open = [:]
    }
}
