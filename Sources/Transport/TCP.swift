import CLibUV
import Foundation

/// Why a socket operation failed: the libuv error name and message.
public struct SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public var description: String { "\(String(cString: uv_err_name(code))): \(String(cString: uv_strerror(code)))" }
}

func socketAddress(_ host: String, _ port: UInt16) -> sockaddr_in? {
    var address = sockaddr_in()
    guard uv_ip4_addr(host, Int32(port), &address) == 0 else { return nil }
    return address
}

/// A TCP connection: reads are delivered as they come; writes are queued by libuv and
/// counted (`queuedBytes`) so the owner can apply its back-pressure rule.
final class TCPStream: HandleOwner {
    static let readBufferSize = 64 * 1024

    private let readBuffer = UnsafeMutableRawPointer.allocate(byteCount: TCPStream.readBufferSize, alignment: 16)
    private var onBytes: ((UnsafeRawBufferPointer) -> Void)?
    private var onEnd: ((SocketError?) -> Void)?
    private(set) var queuedBytes = 0

    init(loop: EventLoop) {
        let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, tcp)
        super.init(loop: loop, handle: UnsafeMutableRawPointer(tcp).assumingMemoryBound(to: uv_handle_t.self))
        uv_tcp_nodelay(tcp, 1)
    }

    deinit { readBuffer.deallocate() }

    var tcp: UnsafeMutablePointer<uv_tcp_t> { UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_tcp_t.self) }
    var stream: UnsafeMutablePointer<uv_stream_t> { UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self) }

    private final class ConnectRequest {
        let completion: (SocketError?) -> Void
        init(_ completion: @escaping (SocketError?) -> Void) { self.completion = completion }
    }

    private final class ResolveRequest {
        let completion: (Result<sockaddr_in, SocketError>) -> Void
        init(_ completion: @escaping (Result<sockaddr_in, SocketError>) -> Void) { self.completion = completion }
    }

    /// Connects to an IPv4 address, or to a DNS name's first IPv4 address (resolved on
    /// libuv's thread pool; the loop never waits for it).
    func connect(host: String, port: UInt16, _ completion: @escaping (SocketError?) -> Void) {
        if let address = socketAddress(host, port) { return connect(to: address, completion) }
        Self.resolve(host, port, on: loop) { [self] result in
            // The dial's deadline may have closed the stream while the name resolved.
            guard !isClosed else { return completion(SocketError(code: UV_ECANCELED.rawValue)) }
            switch result {
            case let .success(address): connect(to: address, completion)
            case let .failure(error): completion(error)
            }
        }
    }

    private static func resolve(_ host: String, _ port: UInt16, on loop: EventLoop, _ completion: @escaping (Result<sockaddr_in, SocketError>) -> Void) {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        let request = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(ResolveRequest(completion)).toOpaque()
        let status = uv_getaddrinfo(loop.loop, request, { request, status, found in
            guard let request else { return }
            let box = Unmanaged<ResolveRequest>.fromOpaque(request.pointee.data).takeRetainedValue()
            request.deallocate()
            defer { uv_freeaddrinfo(found) }
            var entry = found
            while let current = entry, current.pointee.ai_family != AF_INET { entry = current.pointee.ai_next }
            guard status == 0, let address = entry?.pointee.ai_addr else {
                return box.completion(.failure(SocketError(code: status < 0 ? status : UV_EAI_NONAME.rawValue)))
            }
            box.completion(.success(UnsafeRawPointer(address).load(as: sockaddr_in.self)))
        }, host, "\(port)", &hints)
        if status < 0 {
            Unmanaged<ResolveRequest>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            completion(.failure(SocketError(code: status)))
        }
    }

    private func connect(to address: sockaddr_in, _ completion: @escaping (SocketError?) -> Void) {
        var address = address
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(ConnectRequest(completion)).toOpaque()
        let status = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                uv_tcp_connect(request, tcp, address) { request, status in
                    guard let request else { return }
                    let box = Unmanaged<ConnectRequest>.fromOpaque(request.pointee.data).takeRetainedValue()
                    request.deallocate()
                    box.completion(status < 0 ? SocketError(code: status) : nil)
                }
            }
        }
        if status < 0 {
            Unmanaged<ConnectRequest>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            completion(SocketError(code: status))
        }
    }

    func startReading(onBytes: @escaping (UnsafeRawBufferPointer) -> Void, onEnd: @escaping (SocketError?) -> Void) {
        self.onBytes = onBytes
        self.onEnd = onEnd
        resumeReading()
    }

    /// Reads again after `stopReading`, with the callbacks `startReading` gave.
    func resumeReading() {
        guard !isClosed else { return }
        uv_read_start(stream, { handle, _, buffer in
            guard let handle, let data = handle.pointee.data, let buffer else { return }
            let stream = Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue()
            buffer.pointee = uv_buf_init(stream.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(TCPStream.readBufferSize))
        }, { stream, count, buffer in
            guard let stream, let data = stream.pointee.data else { return }
            let owner = Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue()
            if count > 0 {
                owner.onBytes?(UnsafeRawBufferPointer(start: owner.readBuffer, count: count))
            } else if count < 0 {
                let end = owner.onEnd
                owner.onEnd = nil
                end?(count == Int(UV_EOF.rawValue) ? nil : SocketError(code: Int32(count)))
            }
        })
    }

    func stopReading() {
        guard !isClosed else { return }
        uv_read_stop(stream)
    }

    private final class WriteRequest {
        let bytes: UnsafeMutableRawBufferPointer
        weak var stream: TCPStream?
        let completion: (() -> Void)?
        init(_ bytes: UnsafeMutableRawBufferPointer, _ stream: TCPStream, _ completion: (() -> Void)?) {
            self.bytes = bytes
            self.stream = stream
            self.completion = completion
        }
    }

    /// Queues `bytes` for sending. False if the stream is closed or the write failed.
    /// `completion` runs once libuv is done with the write (sent, failed or cancelled).
    @discardableResult
    func write(_ bytes: [UInt8], completion: (() -> Void)? = nil) -> Bool {
        write(count: bytes.count, completion: completion) { buffer in
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return bytes.count
        }
    }

    /// Queues up to `count` bytes that `fill` writes into the buffer libuv will send from
    /// (it returns how many it wrote): one copy, where `write(_:)` makes two.
    @discardableResult
    func write(count: Int, completion: (() -> Void)? = nil, fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard !isClosed, count > 0 else { return !isClosed }
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
        let filled = min(count, max(0, fill(whole)))
        guard filled > 0 else {
            whole.deallocate()
            completion?()
            return true
        }
        let copy = UnsafeMutableRawBufferPointer(rebasing: whole[0..<filled])
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(WriteRequest(copy, self, completion)).toOpaque()
        var buffer = uv_buf_init(copy.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(filled))
        queuedBytes += filled
        let status = uv_write(request, stream, &buffer, 1) { request, _ in
            guard let request else { return }
            let box = Unmanaged<WriteRequest>.fromOpaque(request.pointee.data).takeRetainedValue()
            box.stream?.queuedBytes -= box.bytes.count
            box.bytes.deallocate()
            request.deallocate()
            box.completion?()
        }
        if status < 0 {
            let box = Unmanaged<WriteRequest>.fromOpaque(request.pointee.data).takeRetainedValue()
            queuedBytes -= box.bytes.count
            box.bytes.deallocate()
            request.deallocate()
            return false
        }
        return true
    }

    override func willClose() {
        onBytes = nil
        onEnd = nil
    }

    /// The peer's IP address without the port (the unit of the per-address client limit).
    var peerHost: String {
        let address = peerAddress
        guard let colon = address.lastIndex(of: ":") else { return address }
        return String(address[..<colon])
    }

    var peerAddress: String {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getpeername(tcp, $0, &length) }
        }
        guard status == 0 else { return "?" }
        return withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                var name = [CChar](repeating: 0, count: 64)
                var inAddress = address.pointee
                uv_ip4_name(&inAddress, &name, name.count)
                let text = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                return "\(text):\(UInt16(bigEndian: address.pointee.sin_port))"
            }
        }
    }
}

/// A listening TCP socket; each accepted connection is handed to `onConnection`.
final class TCPListener: HandleOwner {
    static let backlog: Int32 = 128
    private var onConnection: ((TCPStream) -> Void)?

    init(loop: EventLoop) {
        let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.loop, tcp)
        super.init(loop: loop, handle: UnsafeMutableRawPointer(tcp).assumingMemoryBound(to: uv_handle_t.self))
    }

    private var tcp: UnsafeMutablePointer<uv_tcp_t> { UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_tcp_t.self) }

    /// Binds and listens; port 0 picks a free port (see `port`).
    func listen(host: String, port: UInt16, _ onConnection: @escaping (TCPStream) -> Void) throws(SocketError) {
        guard var address = socketAddress(host, port) else { throw SocketError(code: UV_EINVAL.rawValue) }
        self.onConnection = onConnection
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(tcp, $0, 0) }
        }
        guard bound == 0 else { throw SocketError(code: bound) }
        let status = uv_listen(UnsafeMutableRawPointer(tcp).assumingMemoryBound(to: uv_stream_t.self), Self.backlog) { server, status in
            guard let server, let data = server.pointee.data, status >= 0 else { return }
            let listener = Unmanaged<TCPListener>.fromOpaque(data).takeUnretainedValue()
            let client = TCPStream(loop: listener.loop)
            guard uv_accept(server, client.stream) == 0 else { return client.close() }
            listener.onConnection?(client)
        }
        guard status == 0 else { throw SocketError(code: status) }
    }

    var port: UInt16 {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getsockname(tcp, $0, &length) }
        }
        return withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    override func willClose() { onConnection = nil }
}
