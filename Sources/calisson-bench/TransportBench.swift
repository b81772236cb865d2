import ArgumentParser
import CalissonCrypto
import Foundation
import Transport
import Wire

struct TransportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "Frames per second and MB/s between two nodes over mutual TLS 1.3 on loopback.",
        discussion: """
            Two transports in this process, each on its own event loop, linked on 127.0.0.1. \
            The sender keeps at most --window frames in flight (sent, not yet received), as \
            the consensus does with its own window, so the send queue never overflows.
            """)

    @Option(help: "Frames per size.")
    var frames = 20_000

    @Option(help: "Frames in flight.")
    var window = 512

    func validate() throws {
        try checkCounts([(frames, "--frames", 1...10_000_000), (window, "--window", 1...1_000_000)])
    }

    func run() throws {
        print("calisson-bench transport: \(openSSLVersion)")
        let caKey = Ed25519PrivateKey(seed: SHA256.hash("bench ca").bytes)!
        let ca = try CertificateAuthority.makeRoot(name: "bench CA", key: caKey)
        let keys = (0..<2).map { Ed25519PrivateKey(seed: SHA256.hash("bench tls \($0)").bytes)! }
        let certificates = try (0..<2).map {
            try CertificateAuthority.issue(commonName: "p\($0)", subjectKey: keys[$0].publicKey, ca: ca, caKey: caKey, serial: UInt64($0 + 1))
        }
        let registry = Dictionary(uniqueKeysWithValues: certificates.map { ($0.commonName, $0.publicKeyHash) })
        let received = Counter()
        var loops: [EventLoop] = []
        var transports: [Transport] = []
        for index in 0..<2 {
            var configuration = TransportConfiguration(
                chainId: "calisson-bench", selfID: "p\(index)", identity: TLSIdentity(certificate: certificates[index], key: keys[index]), ca: ca)
            configuration.registry = registry
            configuration.sendQueueBytesMax = 64 * 1024 * 1024
            let loop = EventLoop(name: "bench-\(index)")
            let transport = try Transport(configuration: configuration, loop: loop)
            transport.onMessage = { _, _, payload in received.add(payload.count) }
            try transport.start()
            loops.append(loop)
            transports.append(transport)
        }
        transports[0].update(peers: [PeerAddress(id: "p1", host: "127.0.0.1", port: transports[1].peerPort)], registry: registry, revokedSerials: [])
        let deadline = Date().addingTimeInterval(10)
        while transports[0].linkedPeers() != ["p1"] && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        guard transports[0].linkedPeers() == ["p1"] else { throw ValidationError("the two transports did not link") }

        for size in [256, 64 * 1024] {
            let payload = [UInt8](repeating: 0xA5, count: size)
            let count = size >= 65_536 ? max(1, frames / 10) : frames
            received.reset()
            let clock = ContinuousClock()
            let start = clock.now
            var sent = 0
            while sent < count {
                while sent - received.frames >= window { usleep(50) }
                transports[0].send(payload, to: "p1")
                sent += 1
            }
            while received.frames < count { usleep(50) }
            let elapsed = clock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let rate = Double(count) / seconds
            print(String(format: "  %6d-byte frames: %8.0f frames/s, %7.1f MB/s (%d frames in %.2f s)",
                         size, rate, rate * Double(size) / 1e6, count, seconds))
        }
        for transport in transports { transport.stop() }
        for loop in loops { loop.shutdown() }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var bytes = 0
    func add(_ size: Int) { lock.withLock { count += 1; bytes += size } }
    func reset() { lock.withLock { count = 0; bytes = 0 } }
    var frames: Int { lock.withLock { count } }
}
