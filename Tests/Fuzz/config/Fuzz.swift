// Fuzz target: the files an operator writes. An input is read as a node configuration
// (JSON, then resolved against a directory holding a valid genesis, keys and
// certificates, as `calisson-node run` does) and as a genesis file (JSON, then
// validated). Each must yield a configuration or a `ConfigError` / `GenesisError`, never
// a crash; a configuration that resolves must name a tick, mempool bound and peers
// within their limits.
import CalissonCrypto
import Foundation
import FuzzSupport
import Ledger
import Node
import Transport

enum Fixture {
    /// A directory with what a valid configuration points to.
    static let directory: URL = {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("calisson-fuzz-config-\(getpid())")
        try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let caKey = Metropole.key("ca"), tlsKey = Metropole.key("tls rtm")
        let ca = try! CertificateAuthority.makeRoot(name: "Calisson CA", key: caKey)
        let certificate = try! CertificateAuthority.issue(commonName: "rtm", subjectKey: tlsKey.publicKey, ca: ca, caKey: caKey, serial: 2)
        try! JSONEncoder().encode(Metropole.genesisFile).write(to: directory.appendingPathComponent("genesis.json"))
        try! KeyFile.write(Metropole.key("node rtm"), to: directory.appendingPathComponent("node.key").path, overwrite: true)
        try! KeyFile.write(tlsKey, to: directory.appendingPathComponent("tls.key").path, overwrite: true)
        try! certificate.pem.write(to: directory.appendingPathComponent("tls.crt"), atomically: true, encoding: .utf8)
        try! ca.pem.write(to: directory.appendingPathComponent("ca.crt"), atomically: true, encoding: .utf8)
        return directory
    }()

    static func seeds() -> [[UInt8]] {
        let config = NodeConfigFile(
            partner: "rtm", genesis: "genesis.json", database: "node.db", nodeKey: "node.key", tlsKey: "tls.key", tlsCertificate: "tls.crt",
            ca: "ca.crt", peerPort: 7001, clientPort: 8001,
            peers: [.init(id: "metropole", host: "127.0.0.1", port: 7000), .init(id: "tri", host: "127.0.0.1", port: 7002)],
            tickMilliseconds: 20, mempoolMax: 1000, metricsPort: 9001)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return [Array(try! encoder.encode(config)), Array(try! encoder.encode(Metropole.genesisFile))]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Fixture.seeds)
    _ = Fixture.directory
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Data(bytes: data, count: size)
    if let file = try? JSONDecoder().decode(NodeConfigFile.self, from: input),
        let configuration = try? file.resolve(relativeTo: Fixture.directory)
    {
        guard (1...1_000).contains(configuration.tickMilliseconds), (1...10_000_000).contains(configuration.mempoolCountMax),
            !configuration.transport.peers.contains(where: { $0.id == file.partner })
        else { fatalError("a configuration out of its limits resolved") }
    }
    if let genesis = try? JSONDecoder().decode(GenesisFile.self, from: input) {
        _ = try? genesis.validated()
    }
    return 0
}
