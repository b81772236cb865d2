import Foundation
import Synchronization

/// A TCP relay on 127.0.0.1 between two validators, for the latency mix: what it forwards
/// (both ways, in order) arrives `delay` ± `jitter` milliseconds later, and a stall holds
/// everything for a while, as a burst of loss does to TCP (the bytes arrive late, not
/// never). It stands in for `tc netem`, which this machine's kernel lacks.
final class DelayRelay: @unchecked Sendable {
    struct Shape {
        var delayMilliseconds: Double = 0
        var jitterMilliseconds: Double = 0
        var stalledUntil = Date.distantPast
    }

    let port: UInt16
    private let target: UInt16
    private let listener: Int32
    let shape = Mutex(Shape())
    private let open = Mutex<[Int32]>([])
    private let closed = Mutex(false)

    init(target: UInt16) throws {
        self.target = target
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        guard bound == 0, listen(listener, 16) == 0 else { throw RelayError("cannot listen on 127.0.0.1") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        port = UInt16(bigEndian: address.sin_port)
        self.listener = listener
        Thread { [self] in acceptLoop() }.start()
    }

    struct RelayError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    func close() {
        closed.withLock { $0 = true }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        for descriptor in open.withLock({ $0 }) { shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while !closed.withLock({ $0 }) {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: target)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                Glibc.close(client)
                Glibc.close(server)
                continue
            }
            open.withLock { $0 += [client, server] }
            let link = Link(descriptors: [client, server])
            link.onEnd = { [self] in
                for descriptor in [client, server] { shutdown(descriptor, Int32(SHUT_RDWR)) }
                open.withLock { $0.removeAll { $0 == client || $0 == server } }
            }
            for (from, to) in [(client, server), (server, client)] {
                let queue = DelayQueue()
                Thread { [self] in read(from, into: queue, link: link) }.start()
                Thread { [self] in write(to, from: queue, link: link) }.start()
            }
        }
    }

    /// Both directions of one relayed connection: the first to end ends the other.
    final class Link: @unchecked Sendable {
        let descriptors: [Int32]
        private let ended = Mutex(0)
        var onEnd: (() -> Void)?
        init(descriptors: [Int32]) { self.descriptors = descriptors }
        /// Called by each of the four threads as it stops; the sockets are closed once all have.
        func end() {
            onEnd?()
            let count = ended.withLock { value -> Int in
                value += 1
                return value
            }
            if count == 4 { for descriptor in descriptors { Glibc.close(descriptor) } }
        }
    }

    /// Chunks waiting for their time, in arrival order.
    final class DelayQueue: @unchecked Sendable {
        let condition = NSCondition()
        var chunks: [(due: Date, bytes: [UInt8])] = []
        var finished = false
        var lastDue = Date.distantPast
    }

    private func read(_ descriptor: Int32, into queue: DelayQueue, link: Link) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1_024)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            let shape = self.shape.withLock { $0 }
            let jitter = shape.jitterMilliseconds > 0 ? Double.random(in: -shape.jitterMilliseconds...shape.jitterMilliseconds) : 0
            let delay = max(0, shape.delayMilliseconds + jitter) / 1_000
            queue.condition.lock()
            // Order is kept: a chunk never overtakes the one before it.
            let due = max(queue.lastDue, Date().addingTimeInterval(delay))
            queue.lastDue = due
            queue.chunks.append((due, Array(buffer[0..<count])))
            queue.condition.signal()
            queue.condition.unlock()
        }
        queue.condition.lock()
        queue.finished = true
        queue.condition.signal()
        queue.condition.unlock()
        link.end()
    }

    private func write(_ descriptor: Int32, from queue: DelayQueue, link: Link) {
        defer { link.end() }
        while true {
            queue.condition.lock()
            while queue.chunks.isEmpty && !queue.finished { queue.condition.wait() }
            if queue.chunks.isEmpty {
                queue.condition.unlock()
                return
            }
            let chunk = queue.chunks.removeFirst()
            queue.condition.unlock()
            let stalledUntil = shape.withLock { $0.stalledUntil }
            let due = max(chunk.due, stalledUntil)
            if due > Date() { Thread.sleep(until: due) }
            var offset = 0
            while offset < chunk.bytes.count {
                let sent = chunk.bytes.withUnsafeBytes { send(descriptor, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                guard sent > 0 else { return }
                offset += sent
            }
        }
    }
}
