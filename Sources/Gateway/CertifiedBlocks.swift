import Ledger
import LightClient
import Wire

/// A final block's contents that the certified state confirms: its results (ledger rules 7
/// on), the proposals it says it decided and opened, and the epoch it says it closed, each
/// checked against a record read certified at a checkpoint at or above the block; from
/// rules 8, that they are exactly those the block committed (`BlockEvents`).
public struct CertifiedBlockContents: Sendable {
    public let found: VerifiedBlockContents
    /// The checkpoint they were confirmed at: the oldest among those of the records read
    /// (each at or above the block); for a block that needed no read (no transactions, no
    /// decision, no epoch close), the newest certified checkpoint known.
    public let checkpoint: UInt64
    /// The results as shown, in the block's order (nil: applied), each the checker's
    /// rendering of what the block committed (`ResultCheck.verifyBlock`); nil when the block
    /// committed no results (executed under rules before 7): then they are the node's word.
    public let reasons: [String?]?
    /// The nodes whose contents of the block the certified state refuted before these.
    public let refuted: [String]
}

/// Why a block's contents are not confirmed yet: no checkpoint at or above it was read.
public struct NotYetCertified: Error, Sendable, CustomStringConvertible {
    public let height: UInt64
    public let checkpoint: UInt64
    public var description: String { "block \(height) is above the newest certified checkpoint read (\(checkpoint))" }
}

extension NodePool {
    /// Block `height`'s contents with what the certified state confirms of them
    /// (`CertifiedBlockContents`); nil when no node has the block final. Throws
    /// `NotYetCertified` while no checkpoint at or above the block is known, and
    /// `NoVerifiedAnswer` when no node gives contents the state confirms: a node whose
    /// contents it refutes is counted as failed and its contents forgotten, and the next
    /// node is asked.
    public func certifiedBlockContents(_ height: UInt64) async throws -> CertifiedBlockContents? {
        let newest = newestCertifiedHeight
        guard newest >= height else { throw NotYetCertified(height: height, checkpoint: newest) }
        var failures: [(String, String)] = []
        var refuted: Set<Int> = []
        for _ in nodes.indices {
            guard let found = try await blockContents(height, excluding: refuted) else { return nil }
            do {
                return try await confirmed(found, refuted: failures.map(\.0))
            } catch let error as CertifiedReadError {
                // The certified state says otherwise: the contents are forgotten, their node
                // not asked again here and passed over for a while (`readOrder`), another asked.
                checkedBlocks.withLock { $0.remove(height) }
                if let index = nodes.firstIndex(where: { $0.description == found.source }) {
                    failed(index, error)
                    refuted.insert(index)
                }
                failures.append((found.source, "\(error)"))
            }
        }
        throw NoVerifiedAnswer(failures: failures)
    }

    /// `found`'s results, decisions, openings and epoch close against the certified state;
    /// `CertifiedReadError.proof` when a record refutes them.
    private func confirmed(_ found: VerifiedBlockContents, refuted: [String]) async throws -> CertifiedBlockContents {
        let height = found.contents.height
        var checkpoint: UInt64 = .max
        /// A record certified at or above the block.
        func certified(_ key: StateKey) async throws -> CertifiedRecord {
            let record = try await read(key).record
            guard record.height >= height else { throw NotYetCertified(height: height, checkpoint: record.height) }
            checkpoint = min(checkpoint, record.height)
            return record
        }
        // A block without transactions has no results to confirm (and commits no record).
        var reasons: [String?]? = []
        if !found.contents.results.isEmpty {
            switch try ResultCheck.verifyBlock(found.contents.results, height: height, record: try await certified(StateKeys.blockResults(height))) {
            case let .certified(_, shown): reasons = shown
            case .notCommitted: reasons = nil
            case let .notYetCertified(at): throw NotYetCertified(height: height, checkpoint: at)
            }
        }
        for bytes in found.contents.decided {
            let said = try Proposal(wireBytes: bytes)  // decoded when the contents were checked
            let record = try await certified(StateKeys.proposal(said.id))
            guard let value = record.value, let stands = try? Proposal(wireBytes: value), stands == said else {
                throw CertifiedReadError.proof("block \(height): proposal \(said.id)'s record is not the one the node says the block decided")
            }
        }
        // Each opening named once, by position and by number; in a block that committed its
        // results, each applied proposal named (the ledger opened one for it).
        guard Set(found.contents.opened.map(\.position)).count == found.contents.opened.count,
            Set(found.contents.opened.map(\.proposal)).count == found.contents.opened.count
        else {
            throw CertifiedReadError.proof("block \(height): a proposal opened is named twice")
        }
        if let reasons, !reasons.isEmpty {
            let named = Set(found.contents.opened.map(\.position))
            for (position, command) in found.block.commands.enumerated() where StoreAnswers.isApplied(found.contents.results[position]) {
                guard let signed = try? SignedTransaction(wireBytes: command), case .propose = signed.transaction.body else { continue }
                guard named.contains(UInt64(clamping: position)) else {
                    throw CertifiedReadError.proof("block \(height): the proposal opened at position \(position) is not named")
                }
            }
        }
        for entry in found.contents.opened {
            // Positions were checked against the block's transactions with its contents.
            let position = Int(clamping: entry.position)
            guard StoreAnswers.isApplied(found.contents.results[position]),
                let signed = try? SignedTransaction(wireBytes: found.block.commands[position]),
                case let .propose(action, deadline) = signed.transaction.body, case let .partner(proposer) = signed.transaction.signer
            else {
                throw CertifiedReadError.proof("block \(height): no proposal was opened at position \(position)")
            }
            // Its record, as it stood after the block: open, or decided at or after it (an
            // older proposal of the same fields was decided before it).
            let record = try await certified(StateKeys.proposal(entry.proposal))
            guard let value = record.value, let stands = try? Proposal(wireBytes: value),
                stands.proposer == proposer, stands.action == action, stands.deadline == deadline, stands.status.decidedAt.map({ $0 >= height }) ?? true
            else {
                throw CertifiedReadError.proof("block \(height): proposal \(entry.proposal) is not the one opened at position \(position)")
            }
        }
        // From rules 8 the block committed its decisions, epoch close and openings: none
        // left out, none added, each opening under the number it got.
        if try await rules(ofBlock: height) >= LedgerRules.eventsCommitted {
            let record = try await certified(StateKeys.blockEvents(height))
            let committed: BlockEvents
            do { committed = try record.value.map { try BlockEvents(wireBytes: $0) } ?? BlockEvents(decided: [], closedEpoch: nil, opened: []) } catch {
                throw CertifiedReadError.proof("block \(height)'s decisions record does not decode: \(error)")
            }
            let said = try found.contents.decided.map { try Proposal(wireBytes: $0).id }
            guard said.sorted() == committed.decided.sorted() else {
                throw CertifiedReadError.proof("block \(height) decided proposals \(committed.decided), the node says \(said)")
            }
            guard committed.closedEpoch == found.contents.closedEpoch else {
                throw CertifiedReadError.proof(
                    "block \(height) closed \(committed.closedEpoch.map { "epoch \($0)" } ?? "no epoch"), the node says \(found.contents.closedEpoch.map { "epoch \($0)" } ?? "none")")
            }
            // Each opening's number too: two proposals of the same fields cannot be swapped.
            func listed(_ opened: [OpenedProposal]) -> [String] { opened.sorted { $0.position < $1.position }.map { "\($0.proposal) at \($0.position)" } }
            guard listed(committed.opened) == listed(found.contents.opened) else {
                throw CertifiedReadError.proof("block \(height) opened proposals \(listed(committed.opened)), the node says \(listed(found.contents.opened))")
            }
        }
        if let epoch = found.contents.closedEpoch {
            let record = try await certified(StateKeys.epochReport(epoch))
            guard let value = record.value, let report = try? EpochReport(wireBytes: value), report.lastHeight == height else {
                throw CertifiedReadError.proof("block \(height) did not close epoch \(epoch), as the certified state has it")
            }
        }
        // Nothing read (an empty block): the newest certified checkpoint known is above it.
        return CertifiedBlockContents(found: found, checkpoint: checkpoint == .max ? newestCertifiedHeight : checkpoint, reasons: reasons, refuted: refuted)
    }

    /// The ledger rules block `height` was executed under: the upgrade schedule read
    /// certified at a checkpoint at or above it, kept for later blocks up to that
    /// checkpoint (an upgrade is voted for a height to come, and withdrawn only before it:
    /// the rules up to a certified checkpoint are final). Throws `NotYetCertified` while
    /// the newest read is below the block.
    func rules(ofBlock height: UInt64) async throws -> UInt32 {
        if let known = scheduleCertified.withLock({ $0 }), known.checkpoint >= height { return known.schedule.rules(atHeight: height) }
        let record = try await read(StateKeys.upgrades).record
        guard record.height >= height else { throw NotYetCertified(height: height, checkpoint: record.height) }
        let schedule: UpgradeSchedule
        do { schedule = try record.value.map { try UpgradeSchedule(wireBytes: $0) } ?? UpgradeSchedule() } catch {
            throw CertifiedReadError.proof("the upgrade schedule certified at \(record.height) does not decode: \(error)")
        }
        scheduleCertified.withLock { known in
            if known.map({ $0.checkpoint < record.height }) ?? true { known = (schedule, record.height) }
        }
        return schedule.rules(atHeight: height)
    }
}
