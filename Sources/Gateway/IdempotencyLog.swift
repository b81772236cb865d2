import CalissonCrypto
import Foundation
import Synchronization
import Transport
import Wire

/// What the gateway signed for each `Idempotency-Key`, so that a retried request is
/// answered with the same transaction, across restarts: an append-only file of one JSON
/// line per key (the key, the SHA-256 of the request it came with, the signed bytes),
/// written and synced before the transaction is sent. A key seen with another request is
/// refused. Even without the file, a retry within the transaction's lifetime could not
/// have a second effect: the nonce is derived from the key (`nonce(partner:key:)`), and
/// the ledger applies a signer's nonce once while it is recorded (until the expiry).
public final class IdempotencyLog: Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public let key: String
        public let request: String
        public let transaction: String
    }

    /// Entries kept in memory, at most; past it the oldest are forgotten (their nonces
    /// still protect them; the file keeps them until it is rotated).
    public static let entryCountMax = 1_000_000
    /// An Idempotency-Key is 1 to this many visible ASCII characters.
    public static let keyLengthMax = 128

    let path: String
    private let entries: Mutex<(byKey: [String: Entry], order: [String])>

    /// Opens (or creates) the log; a damaged line is an error naming its line.
    public init(path: String) throws {
        self.path = path
        var loaded: [String: Entry] = [:]
        if FileManager.default.fileExists(atPath: path) {
            let text = String(decoding: try InputFile.read(path, byteCountMax: 1 << 30), as: UTF8.self)
            for (number, line) in text.split(separator: "\n").enumerated() {
                do { let entry = try JSONFile.decode(Entry.self, bytes: Array(line.utf8), path: path); loaded[entry.key] = entry } catch {
                    throw GatewayError("\(path), line \(number + 1): \(error)")
                }
            }
        } else {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw GatewayError("\(path): cannot create") }
        }
        entries = Mutex((loaded, Array(loaded.keys)))
    }

    public func entry(_ key: String) -> Entry? { entries.withLock { $0.byKey[key] } }

    /// Records an entry, synced to disk before it returns.
    public func append(_ entry: Entry) throws {
        let line = try JSONEncoder().encode(entry) + Data("\n".utf8)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        try handle.synchronize()
        entries.withLock { entries in
            if entries.byKey.count >= Self.entryCountMax, !entries.order.isEmpty { entries.byKey[entries.order.removeFirst()] = nil }
            entries.byKey[entry.key] = entry
            entries.order.append(entry.key)
        }
    }

    static let nonceTag = TaggedHasher(tag: "calisson/gateway/idempotency/v1")

    /// The nonce of the transaction signed for `key`: the same key, the same nonce.
    public static func nonce(partner: String, key: String) -> UInt64 {
        nonceTag.hash(Array(partner.utf8) + [0] + Array(key.utf8)).bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
