// A node's client port for NodeConnectionsTests (in a file of its own: it names libuv's
// EventLoop, which the tests' file, importing SwiftNIO, could not tell from NIO's).
import CalissonCrypto
import CalissonTestKit
import Foundation
import Gateway
import LightClient
import Synchronization
import Transport
import Wire

/// A client port on loopback (a transport with no peers) answering each request from
/// another thread after `delayMilliseconds`: `.error("<n>")` to `.transactionProof`
/// of an id whose first byte is n; its second byte adds tenths of a second, or, at 255,
/// holds the answer until `releaseHeld()` (a long poll that no load can outlast).
final class NodeConnectionsEchoNode {
    static let chainId = "calisson-test"
    let loop = EventLoop()
    let transport: Transport
    let ca: Certificate
    private let counter = Counter()
    var served: Int { counter.value.load(ordering: .relaxed) }
    final class Counter: Sendable { let value = Atomic<Int>(0) }
    final class Held: Sendable { let answers = Mutex<[@Sendable () -> Void]>([]) }
    private let held = Held()
    static let holdUntilReleased: UInt8 = 255

    init(delayMilliseconds: Int, idleMilliseconds: UInt64? = nil) throws {
        let caKey = Ed25519PrivateKey(seed: SHA256.hash("ca").bytes)!
        ca = try CertificateAuthority.makeRoot(name: "Calisson test CA", key: caKey)
        let key = Ed25519PrivateKey(seed: SHA256.hash("tls 0").bytes)!
        let certificate = try CertificateAuthority.issue(commonName: "p0", subjectKey: key.publicKey, ca: ca, caKey: caKey, serial: 100)
        var configuration = TransportConfiguration(
            chainId: Self.chainId, selfID: "p0", identity: TLSIdentity(certificate: certificate, key: key), ca: ca)
        configuration.clientPort = 0
        if let idleMilliseconds {
            configuration.clientIdleMilliseconds = idleMilliseconds
            configuration.heartbeatMilliseconds = 50
        }
        transport = try Transport(configuration: configuration, loop: loop)
        transport.onClientRequest = { [counter, held] request, _, respond in
            counter.value.add(1, ordering: .relaxed)
            let answer: ClientResponse
            var longer = 0  // the id's second byte: tenths of a second more (a long poll)
            if case let .transactionProof(id) = try? ClientRequest(wireBytes: request) {
                answer = .error("\(id.bytes[0])")
                longer = Int(id.bytes[1])
            } else {
                answer = .error("not the test's request")
            }
            if longer == Int(Self.holdUntilReleased) {
                held.answers.withLock { $0.append { respond(answer.wireBytes) } }
                return
            }
            LaterThread.shared.after(milliseconds: delayMilliseconds + 100 * longer) { respond(answer.wireBytes) }
        }
        try transport.start()
    }

    /// Sends the answers held so far.
    func releaseHeld() {
        for answer in held.answers.withLock({ answers in defer { answers = [] }; return answers }) { answer() }
    }

    /// Client connections the node closed because they were idle.
    var idleClosed: Int { transport.counters.clientIdleClosed }

    var address: NodeAddress { NodeAddress(host: "127.0.0.1", port: transport.clientPort) }

    func stop() {
        transport.stop()
        loop.shutdown()
    }
}
