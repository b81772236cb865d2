import CalissonCrypto
import Foundation
import Synchronization
import Transport
import Wire

/// What the gateway signed for each `Idempotency-Key`, so that a retried request is
/// answered with the same transaction, across restarts: an append-only file of one JSON
/// line per key (the key, the SHA-256 of the request it came with, the signed bytes),
/// written and synced before the transaction is sent. A key seen with another request is
/// refused; a key whose first request is still being signed makes a concurrent one wait
/// for nothing: it is told to retry (`inFlight`). Even without the file, a retry within the
/// transaction's lifetime could not have a second effect: the nonce is derived from the
/// key (`nonce(partner:key:)`), and the ledger applies a signer's nonce once while it is
/// recorded (until the expiry).
///
/// The keys are the partner's, whichever API key sent them (a receipt number is the same
/// receipt from any of the partner's back-ends); the log's room is shared once it runs
/// short: past three quarters of its keys or bytes, a client that may sign (`sharers`: the
/// API keys and certificate entries with the submit or govern scope) and holds its equal
/// share or more is refused new keys, so that one client filling the log does not stop the
/// others, while a log with room left takes any client's keys.
public final class IdempotencyLog: Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public let key: String
        public let request: String
        public let transaction: String
        /// The API key or certificate entry that sent it (absent from lines written before
        /// the shares: counted in the log's totals only).
        public let client: String?
        /// Why its transaction is never sent again (`markRefused`): a later line for the
        /// key, the signer's nonce found held by another transaction.
        public let refused: String?

        public init(key: String, request: String, transaction: String, client: String? = nil, refused: String? = nil) {
            self.key = key
            self.request = request
            self.transaction = transaction
            self.client = client
            self.refused = refused
        }
    }

    /// Keys the log holds at most; past it new keys are refused (rotate the log: its keys
    /// older than the transaction lifetime are protected by nothing else, so an operator
    /// decides). Kept in memory whole: about 300 bytes a key.
    public static let entryCountMax = 1_000_000
    /// An Idempotency-Key is 1 to this many characters of A-Z, a-z, 0-9, `.`, `_`, `:`, `~`,
    /// `-` (what a receipt number or a UUID needs; none that HTTP or URI decoding alters).
    public static let keyLengthMax = 128

    public static func isValid(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.count <= keyLengthMax && key.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
            default: return [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "~"), UInt8(ascii: "-")].contains(byte)
            }
        }
    }
    /// The log file's size at most (what the entries take, with room): checked at each
    /// record too, so that the log a gateway wrote is one it can open again.
    public static let fileByteCountMax = 1 << 30

    /// A record refused: the file would pass `fileByteCountMax` (a log of large entries,
    /// such as proposals, reaches it before `entryCountMax` keys).
    public struct Full: Error, CustomStringConvertible {
        let byteCountMax: Int
        public var description: String { "the idempotency log would pass \(byteCountMax) bytes: its operator must rotate it" }
    }

    /// What a request with a key may do.
    public enum Reservation: Equatable, Sendable {
        /// The key is new: sign, then `record` (or `release` on failure).
        case reserved
        /// The key was signed for, with this request.
        case existing(Entry)
        /// The key was used with another request.
        case conflict
        /// A request with this key is being signed now: retry shortly.
        case inFlight
        /// The log holds `entryCountMax` keys.
        case full
        /// The client holds its share of the keys or of the bytes.
        case share(Share)
    }

    /// A client's share of the log, and what it holds (thrown by `record` when the line
    /// would take the client past its share of the bytes).
    public struct Share: Error, Equatable, Sendable, CustomStringConvertible {
        public let client: String
        public let entries: Int, entriesMax: Int
        public let bytes: Int, bytesMax: Int
        public var description: String {
            "'\(client)' holds \(entries) keys in \(bytes) bytes of the idempotency log, which is past three quarters full, its share being \(entriesMax) keys and \(bytesMax) bytes: its operator must rotate the log"
        }
    }

    let path: String
    /// `fileByteCountMax` and `entryCountMax`, or less in tests.
    let byteCountMax: Int, keysMax: Int
    /// The clients that share the log; each holds its `1/sharers` of its keys and bytes
    /// once the log runs short.
    let sharers: Int
    private struct State {
        var entries: [String: Entry]
        /// Keys reserved and not recorded yet, with the client that reserved each.
        var pending: [String: String] = [:]
        /// Per client: its keys recorded or reserved, and the bytes of its lines.
        var held: [String: (entries: Int, bytes: Int)] = [:]
        /// The file's bytes (its complete lines).
        var bytes = 0
    }
    private let state: Mutex<State>
    /// The file, held by one writer at a time across its write and sync: apart from the
    /// keys' state, so that a reservation (made on an event loop) never waits for a sync.
    private struct Writer {
        let file: FileHandle
        /// The file's size: its complete lines at opening, then each line appended.
        var byteCount: Int
        /// A failed write's bytes could not be cut off: nothing more is written.
        var damaged = false
    }
    private let writer: Mutex<Writer>

    /// Opens (or creates) the log. A damaged line is an error naming its line, except a
    /// last line cut short by a crash during its write, which is left out (its transaction
    /// never left: the write is synced before sending) and cut from the file, so that the
    /// next line is not written onto it.
    public init(path: String, byteCountMax: Int = IdempotencyLog.fileByteCountMax, keysMax: Int = IdempotencyLog.entryCountMax, sharers: Int = 1) throws {
        self.path = path
        self.byteCountMax = byteCountMax
        self.keysMax = keysMax
        self.sharers = max(1, sharers)
        // Appending whatever the offset: a second writer on the file (a gateway that was
        // not stopped) cannot write over lines already there.
        // O_NONBLOCK: a pipe there (with no reader) would make the open wait for ever; it is
        // refused below, as anything but a regular file (writes to one ignore the flag).
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o600)
        guard descriptor >= 0 else {
            let code = errno
            throw GatewayError("\(path): cannot open: \(code == ENXIO ? "a pipe, not a regular file" : String(cString: strerror(code)))")
        }
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(descriptor)
            throw GatewayError("\(path): not a regular file: the idempotency log is one")
        }
        let file = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        // A log just made: its name made durable before any line is, or a crash could take
        // the file, and the keys its synced lines record, away.
        DurableFile.syncDirectory(of: path)
        let bytes = try InputFile.read(path, byteCountMax: byteCountMax)
        // The complete lines end with a newline; what follows the last was cut short.
        let complete = bytes.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
        var loaded: [String: Entry] = [:]
        var held: [String: (entries: Int, bytes: Int)] = [:]
        for (number, line) in bytes[..<complete].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
        where !line.isEmpty {
            do {
                let entry = try JSONFile.decode(Entry.self, bytes: Array(line), path: path)
                if loaded.updateValue(entry, forKey: entry.key) == nil, let client = entry.client {
                    held[client, default: (0, 0)].entries += 1
                }
                if let client = entry.client { held[client, default: (0, 0)].bytes += line.count + 1 }
            } catch {
                throw GatewayError("\(path), line \(number + 1): \(error)")
            }
        }
        if complete < bytes.count {
            try file.truncate(atOffset: UInt64(complete))
            try file.synchronize()
        }
        state = Mutex(State(entries: loaded, held: held, bytes: complete))
        writer = Mutex(Writer(file: file, byteCount: complete))
    }

    /// The keys a client may hold, and the bytes.
    var share: (entries: Int, bytes: Int) { (keysMax / sharers, byteCountMax / sharers) }
    /// Past these, the log runs short and the shares apply: three quarters of its room.
    var shortAt: (entries: Int, bytes: Int) { (keysMax - keysMax / 4, byteCountMax - byteCountMax / 4) }

    /// Atomically: what the key has, or the key reserved for this request from `client`.
    public func reserve(_ key: String, request: String, client: String = "") -> Reservation {
        state.withLock { state in
            if let entry = state.entries[key] { return entry.request == request ? .existing(entry) : .conflict }
            if state.pending[key] != nil { return .inFlight }
            if state.entries.count + state.pending.count >= keysMax { return .full }
            let held = state.held[client, default: (0, 0)], share = share, shortAt = shortAt
            let short = state.entries.count + state.pending.count >= shortAt.entries || state.bytes >= shortAt.bytes
            if sharers > 1, short, held.entries >= share.entries || held.bytes >= share.bytes {
                return .share(Share(client: client, entries: held.entries, entriesMax: share.entries, bytes: held.bytes, bytesMax: share.bytes))
            }
            state.pending[key] = client
            state.held[client, default: (0, 0)].entries += 1
            return .reserved
        }
    }

    /// Gives a reserved key up (its transaction was not signed or not recorded).
    public func release(_ key: String) {
        state.withLock { state in
            guard let client = state.pending.removeValue(forKey: key) else { return }
            state.held[client]?.entries -= 1
        }
    }

    /// Records that a key's transaction is never to be sent again, and why: its line
    /// again with `refused`, appended and synced before it returns (the later line is the
    /// key's at the next start). Its nonce was found held by another transaction (the key
    /// signed before the log was lost, say): once that one's record expired, these bytes
    /// would apply, a second effect of one request.
    public func markRefused(_ key: String, reason: String) throws {
        guard let entry = state.withLock({ $0.entries[key] }), entry.refused == nil else { return }
        let marked = Entry(key: key, request: entry.request, transaction: entry.transaction, client: entry.client, refused: reason)
        let line = try JSONEncoder().encode(marked) + Data("\n".utf8)
        try writer.withLock { writer in
            guard !writer.damaged else { throw GatewayError("\(path): a write failed and its bytes could not be cut off: restart the gateway") }
            guard writer.byteCount <= byteCountMax - line.count else { throw Full(byteCountMax: byteCountMax) }
            try append(line, to: &writer)
            state.withLock { state in
                if let client = entry.client { state.held[client]?.bytes += line.count }
                state.bytes = writer.byteCount
                state.entries[key] = marked
            }
        }
    }

    /// Writes and syncs `line`; a failed write is cut off (the writer marked damaged if
    /// that fails too) and thrown.
    private func append(_ line: Data, to writer: inout Writer) throws {
        do {
            try writer.file.write(contentsOf: line)
            try writer.file.synchronize()
        } catch {
            // Not recorded: what the write left is cut off, or the next line would be glued
            // to it (a line the next start could not read). If that fails too, no more lines
            // are written: the fragment stays last, cut at the next start.
            do {
                try writer.file.truncate(atOffset: UInt64(writer.byteCount))
                try writer.file.synchronize()
            } catch {
                writer.damaged = true
            }
            throw error
        }
        writer.byteCount += line.count
    }

    /// Records a reserved key's entry, appended and synced before it returns (one writer
    /// at a time: the writer's lock is held across the write, the keys' only to update
    /// them). Throws `Full` when the line would take the file past `byteCountMax`, and
    /// `Share` when it would take a log running short past three quarters of its bytes with
    /// the client past its share of them.
    public func record(_ entry: Entry) throws {
        guard let client = state.withLock({ $0.pending[entry.key] }) else { throw GatewayError("the idempotency key '\(entry.key)' was not reserved") }
        let entry = Entry(key: entry.key, request: entry.request, transaction: entry.transaction, client: client.isEmpty ? nil : client)
        let line = try JSONEncoder().encode(entry) + Data("\n".utf8)
        do {
            try writer.withLock { writer in
                guard !writer.damaged else { throw GatewayError("\(path): a write failed and its bytes could not be cut off: restart the gateway") }
                guard writer.byteCount <= byteCountMax - line.count else { throw Full(byteCountMax: byteCountMax) }
                let clientBytes = state.withLock { $0.held[client]?.bytes ?? 0 }, share = share
                if sharers > 1, writer.byteCount + line.count > shortAt.bytes, clientBytes + line.count > share.bytes {
                    let entries = state.withLock { $0.held[client]?.entries ?? 0 }
                    throw Share(client: client, entries: entries, entriesMax: share.entries, bytes: clientBytes, bytesMax: share.bytes)
                }
                try append(line, to: &writer)  // not recorded, so not sent, if it throws
                // Counted before the writer's lock is let go: the next line's check sees it.
                state.withLock { state in
                    state.held[client]?.bytes += line.count
                    state.bytes = writer.byteCount
                }
            }
        } catch {
            release(entry.key)
            throw error
        }
        // The entry and the end of its reservation at once: a reservation made meanwhile
        // finds the one or the other, never neither.
        state.withLock { state in
            state.entries[entry.key] = entry
            state.pending[entry.key] = nil
        }
    }

    static let nonceTag = TaggedHasher(tag: "calisson/gateway/idempotency/v1")

    /// The nonce of the transaction signed for `key`: the same key, the same nonce.
    public static func nonce(partner: String, key: String) -> UInt64 {
        nonceTag.hash(Array(partner.utf8) + [0] + Array(key.utf8)).bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
