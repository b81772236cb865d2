import CalissonCrypto
import Wire

/// A range of heights ordered by one validator set, from `firstSeq` until the next
/// epoch's first height.
public struct Epoch: Hashable, Sendable {
    public let firstSeq: UInt64
    public let validators: ValidatorSet

    public init(firstSeq: UInt64, validators: ValidatorSet) {
        self.firstSeq = firstSeq
        self.validators = validators
    }
}

/// Which validator set orders which heights: the genesis set from height 1, then every
/// set that executing a block returned, each from its epoch boundary on.
///
/// A set returned by executing block s governs the heights above
/// B(s) = (the checkpoint height at or after s) + window. Two facts make this work:
/// - A replica that has executed through height e knows the set of every height up to
///   `horizon(executedThrough: e)`: any change it has not executed yet comes from a block
///   above e, so its boundary lies at or beyond that horizon. Replicas only handle
///   heights within their horizon, so they never judge a height by a set they do not know.
/// - B(s) is a checkpoint height, so an epoch ends at a checkpoint. Replicas never let
///   their window cross an epoch boundary: each epoch is ordered as its own PBFT instance
///   (views restart at 0), whose starting point is the stable checkpoint that closes the
///   previous epoch, certified by the previous set.
///
/// Deterministic: every honest replica, and the application that persists it, computes
/// the same schedule from the same chain.
public struct EpochSchedule: Hashable, Sendable {
    public let checkpointInterval: UInt64
    public let window: UInt64
    /// Sorted by first height; the first starts at 1.
    public private(set) var epochs: [Epoch]

    public init(genesis: ValidatorSet, checkpointInterval: UInt64, window: UInt64) {
        precondition(checkpointInterval > 0 && window % checkpointInterval == 0, "epoch boundaries must be checkpoints")
        self.checkpointInterval = checkpointInterval
        self.window = window
        epochs = [Epoch(firstSeq: 1, validators: genesis)]
    }

    /// The epoch `seq` belongs to (height 0, the genesis state, belongs to the first).
    public func epoch(at seq: UInt64) -> Epoch {
        // Few epochs, and the current one is last: search from the end.
        epochs.last { $0.firstSeq <= seq } ?? epochs[0]
    }

    public func validators(at seq: UInt64) -> ValidatorSet { epoch(at: seq).validators }

    /// The last height of the epoch holding `seq`, if a later epoch is scheduled.
    public func lastSeq(ofEpochAt seq: UInt64) -> UInt64? {
        epochs.first { $0.firstSeq > seq }.map { $0.firstSeq - 1 }
    }

    /// The last height of the epoch opened by a set returned when executing `seq`.
    public func boundary(executedAt seq: UInt64) -> UInt64 {
        let interval = checkpointInterval
        return (seq + interval - 1) / interval * interval + window
    }

    /// The highest height whose validator set is certain once blocks up to `executed`
    /// have been executed.
    public func horizon(executedThrough executed: UInt64) -> UInt64 {
        executed / checkpointInterval * checkpointInterval + checkpointInterval + window
    }

    /// Records the set returned by executing block `seq`. Returns the epoch it opens, or
    /// nil if the set is the one already in force from that boundary.
    @discardableResult
    public mutating func schedule(_ validators: ValidatorSet, executedAt seq: UInt64) -> Epoch? {
        let firstSeq = boundary(executedAt: seq) + 1
        precondition(firstSeq >= epochs[epochs.count - 1].firstSeq, "changes must be scheduled in execution order")
        if epochs[epochs.count - 1].firstSeq == firstSeq {
            // Two changes executed between the same checkpoints: the later one wins.
            epochs.removeLast()
        }
        guard epochs[epochs.count - 1].validators != validators else { return nil }
        let epoch = Epoch(firstSeq: firstSeq, validators: validators)
        epochs.append(epoch)
        return epoch
    }

    /// Whether `id` is a validator of any epoch known: the loose check for messages
    /// about heights beyond the horizon, which are kept only as hints.
    public func isValidatorOfSomeEpoch(_ id: ValidatorID) -> Bool {
        epochs.contains { $0.validators.contains(id) }
    }
}

extension EpochSchedule: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(checkpointInterval)
        writer.write(window)
        writer.write(UInt32(epochs.count))
        for epoch in epochs {
            writer.write(epoch.firstSeq)
            writer.write(epoch.validators)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let interval = try reader.readUInt64("epochs.checkpointInterval")
        let window = try reader.readUInt64("epochs.window")
        guard interval > 0, window % interval == 0 else {
            throw .invalidValue(field: "epochs.window", offset: reader.offset, reason: "not a multiple of the checkpoint interval")
        }
        // Read only from the node's own store, never from a peer, and each epoch is a passed
        // change: no cap but the bytes present (the list grows as they are read), or a chain
        // whose governance changed its validators often enough could not restart.
        let count = try reader.readCount("epochs", maximum: .max)
        var epochs: [Epoch] = []
        for _ in 0..<count {
            let firstSeq = try reader.readUInt64("epoch.firstSeq")
            let validators = try ValidatorSet(from: &reader)
            guard firstSeq > (epochs.last?.firstSeq ?? 0), epochs.isEmpty == (firstSeq == 1) else {
                throw .invalidValue(field: "epoch.firstSeq", offset: reader.offset, reason: "epochs out of order")
            }
            epochs.append(Epoch(firstSeq: firstSeq, validators: validators))
        }
        guard !epochs.isEmpty else { throw .invalidValue(field: "epochs", offset: reader.offset, reason: "no genesis epoch") }
        checkpointInterval = interval
        self.window = window
        self.epochs = epochs
    }
}
