import ArgumentParser
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Synchronization
import Transport
import Wire

/// What this process has learnt of the chain's newest certified checkpoint, at the first
/// certified answer of a command, kept for its other answers; and how far behind the last
/// checked answer was.
private let learnt = Mutex<(freshness: Freshness, behind: UInt64)?>(nil)

/// The client's memory of the newest certified checkpoint it has seen on each chain, keyed
/// by the genesis digest (a chain id can be reused by a new test network; a genesis cannot).
struct CheckpointMemory {
    struct Entry: Codable {
        var chain: String
        var height: UInt64
    }

    let path: String

    static func defaultPath() -> String {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state"
        return base + "/calisson/checkpoints.json"
    }

    func load() throws -> [String: Entry] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        do { return try JSONFile.decode([String: Entry].self, path: path) } catch {
            throw CommandError("--checkpoints \(error) (remove the file to forget what this client has seen)")
        }
    }

    /// Records `height` for the chain if it is newer; written whole, then renamed into place.
    func remember(_ height: UInt64, chain: String, digest: String) throws {
        var entries = try load()
        guard entries[digest].map({ $0.height < height }) ?? true else { return }
        entries[digest] = Entry(chain: chain, height: height)
        let directory = (path as NSString).deletingLastPathComponent
        do {
            // A bare file name is in the working directory (there is no "" to make).
            if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            // Durable: a memory lost in a crash would let a node serving an older state pass.
            try DurableFile.write(bytes: Array(try encoder.encode(entries)), to: path)
        } catch {
            throw CommandError("--checkpoints \(path): cannot record the checkpoint seen (\(error))")
        }
    }
}

extension Connection {
    var memory: CheckpointMemory? {
        let path = checkpoints ?? CheckpointMemory.defaultPath()
        return path == "none" ? nil : CheckpointMemory(path: path)
    }

    /// The freshness rule for an answer certified at checkpoint `height` (Docs/QUERY.md,
    /// "Freshness"): refused when more than --max-lag blocks behind the newest certified
    /// checkpoint the witnesses or this client's memory know; remembered when newer.
    func checkFreshness(_ height: UInt64) throws {
        guard let genesis = try checkedGenesis() else { return }
        let digest = genesis.digest.hex
        var freshness: Freshness
        if let known = learnt.withLock({ $0?.freshness }) { freshness = known } else { freshness = try learn(genesis, digest: digest) }
        let behind: UInt64
        do { behind = try freshness.check(height) } catch { throw CommandError("\(error)") }
        freshness.learn(height, from: "the answer")
        learnt.withLock { $0 = (freshness, behind) }
        try memory?.remember(height, chain: chain, digest: digest)
    }

    /// What the witnesses and the memory know, each witness's certificate verified here.
    private func learn(_ genesis: Genesis, digest: String) throws -> Freshness {
        var freshness = Freshness(lagMax: maxLag)
        if let memory, let entry = try memory.load()[digest] { freshness.learn(entry.height, from: "this client's memory, \(memory.path)") }
        var answered = 0
        for witness in witnesses {
            do {
                freshness.learn(try witnessCheckpoint(witness, genesis: genesis), from: "witness \(witness)")
                answered += 1
            } catch {
                FileHandle.standardError.write(Data("calisson: witness \(witness) not used: \(error)\n".utf8))
            }
        }
        if !witnesses.isEmpty, answered == 0 {
            FileHandle.standardError.write(Data("calisson: no witness answered: freshness rests on this client's memory alone\n".utf8))
        }
        return freshness
    }

    /// A witness's newest certified checkpoint, its certificate checked against the
    /// validator sets followed from the genesis through the witness's own handovers.
    private func witnessCheckpoint(_ address: String, genesis: Genesis) throws -> UInt64 {
        guard let (host, port) = Self.hostAndPort(address) else { throw ValidationError("--witness \(address): expected host:port") }
        let client = try client(host: host, port: port)
        defer { client.close() }
        func ask(_ request: ClientRequest) throws -> ClientResponse {
            let response = try ClientResponse(wireBytes: try client.request(request.wireBytes, timeoutMilliseconds: requestTimeoutMilliseconds))
            if case let .error(reason) = response { throw CommandError("it answered: \(reason)") }
            return response
        }
        let trusted = try CertifiedReader.trusted(genesis, ask: ask)
        return try CertifiedReader.record(StateKeys.meta, trusted: trusted, chainId: chain, ask: ask).height
    }

    /// How far behind the answer certified at `height` is, in words, for the proof line.
    func freshnessText(_ height: UInt64) -> String {
        guard let state = learnt.withLock({ $0 }) else { return "freshness not checked" }
        guard state.behind > 0 else { return "0 blocks behind the newest certified checkpoint known (at most \(maxLag) allowed)" }
        return "\(state.behind) blocks behind the newest certified checkpoint known (\(height + state.behind), from \(state.freshness.newestSource); at most \(maxLag) allowed)"
    }
}
