import CalissonCrypto

/// What a replica must have on disk before a message it sends can leave: its view, its
/// votes, its prepared certificates and its stable checkpoint. Restored on restart, it
/// guarantees the replica never signs two different digests for one (kind, view, seq)
/// and never goes back to an older view of its epoch. (Each epoch numbers its views from
/// 0; the heights of two epochs never overlap, so a slot's (view, seq) stays unique.)
public enum SafetyRecord: Hashable, Sendable {
    case view(UInt64, changing: Bool)
    /// A PrePrepare this replica signed as primary (with the block, so it can resend).
    case proposed(Signed<PrePrepare>)
    case voted(Vote)
    case prepared(PreparedCertificate)
    /// The stable checkpoint; `opensEpoch` when it closes an epoch, which restarts views
    /// at 0 in the next one.
    case stable(CheckpointCertificate, opensEpoch: Bool)
}

public struct VoteSlot: Hashable, Sendable {
    public enum Kind: UInt8, Sendable { case prePrepare, prepare, commit }
    public let kind: Kind
    public let view: UInt64
    public let seq: UInt64
}

/// The durable state, as the fold of every `SafetyRecord` persisted so far.
public struct SafetyLog: Equatable, Sendable {
    public private(set) var view: UInt64 = 0
    public private(set) var viewChanging = false
    public private(set) var votes: [VoteSlot: SHA256Digest] = [:]
    public private(set) var proposals: [UInt64: Signed<PrePrepare>] = [:]
    public private(set) var prepared: [UInt64: PreparedCertificate] = [:]
    public private(set) var stable: CheckpointCertificate?

    public init() {}

    public var lowWatermark: UInt64 { stable?.seq ?? 0 }

    public mutating func apply(_ record: SafetyRecord) {
        switch record {
        case let .view(view, changing):
            precondition(view >= self.view, "a replica's view never decreases")
            if view > self.view {
                // Votes of older views can never be sent again: drop them.
                votes = votes.filter { $0.key.view >= view }
                proposals = [:]
            }
            self.view = view
            viewChanging = changing
        case let .proposed(prePrepare):
            votes[VoteSlot(kind: .prePrepare, view: prePrepare.body.view, seq: prePrepare.body.seq)] =
                prePrepare.body.block.digest
            proposals[prePrepare.body.seq] = prePrepare
        case let .voted(vote):
            votes[VoteSlot(kind: vote.kind == .prepare ? .prepare : .commit, view: vote.view, seq: vote.seq)] = vote.digest
        case let .prepared(certificate):
            if let old = prepared[certificate.seq], old.view >= certificate.view { return }
            prepared[certificate.seq] = certificate
        case let .stable(certificate, opensEpoch):
            guard certificate.seq > lowWatermark else { return }
            stable = certificate
            if opensEpoch {
                view = 0
                viewChanging = false
            }
            votes = votes.filter { $0.key.seq > certificate.seq }
            proposals = proposals.filter { $0.key > certificate.seq }
            prepared = prepared.filter { $0.key > certificate.seq }
        }
    }

    /// Records whose fold is this log: what a store writes in place of the whole history
    /// after a stable checkpoint, so the log on disk stays about one checkpoint window
    /// long. Nil when some of the state cannot be written back as records (the log is
    /// then kept as it is): the fold of the result is checked to equal this log.
    public var compacted: [SafetyRecord]? {
        var records: [SafetyRecord] = []
        if let stable { records.append(.stable(stable, opensEpoch: false)) }
        records.append(.view(view, changing: viewChanging))
        for seq in proposals.keys.sorted() { records.append(.proposed(proposals[seq]!)) }
        let slots = votes.keys.filter { $0.kind != .prePrepare }.sorted { ($0.seq, $0.view, $0.kind.rawValue) < ($1.seq, $1.view, $1.kind.rawValue) }
        for slot in slots {
            records.append(.voted(Vote(kind: slot.kind == .prepare ? .prepare : .commit, view: slot.view, seq: slot.seq, digest: votes[slot]!)))
        }
        for seq in prepared.keys.sorted() { records.append(.prepared(prepared[seq]!)) }
        var folded = SafetyLog()
        for record in records { folded.apply(record) }
        return folded == self ? records : nil
    }

    /// The digest this replica already signed for a slot, if any.
    public func vote(_ kind: VoteSlot.Kind, view: UInt64, seq: UInt64) -> SHA256Digest? {
        votes[VoteSlot(kind: kind, view: view, seq: seq)]
    }
}
